#include "train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace st::host::train {

namespace {

std::atomic<int> g_signal{0};
struct sigaction g_old_int, g_old_term;

void on_signal(int sig) {
    if (g_signal.exchange(sig) != 0) {
        // Second signal: the user insists. Only async-signal-safe calls here.
        const char msg[] = "\nst-host: second interrupt, exiting without a checkpoint\n";
        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
        _exit(130);
    }
    const char msg[] =
        "\nst-host: interrupt received; finishing this step, then saving a checkpoint "
        "(interrupt again to quit at once)\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
}

}  // namespace

StopSignal::StopSignal() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignal::~StopSignal() {
    sigaction(SIGINT, &g_old_int, nullptr);
    sigaction(SIGTERM, &g_old_term, nullptr);
}

bool StopSignal::requested(const char** name) {
    const int s = g_signal.load();
    if (name) *name = s == SIGTERM ? "SIGTERM" : "SIGINT";
    return s != 0;
}

}  // namespace st::host::train
