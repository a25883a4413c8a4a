#include "dist/launcher.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include "st/error.h"
#include "st/log.h"

extern char** environ;

namespace st::host::dist {

namespace {
constexpr const char* kLog = "host.dist";
constexpr int kMaxChildren = 1024;

pid_t g_children[kMaxChildren];
std::atomic<int> g_child_count{0};
std::atomic<int> g_signals{0};

void forward(int sig) {
    g_signals.fetch_add(1);
    const int n = g_child_count.load();
    for (int i = 0; i < n; ++i)
        if (g_children[i] > 0) kill(g_children[i], sig);
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return "stopped";
}

int exit_code_of(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}
}  // namespace

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail(kLog, "launch", "cannot open a socket to find a free port: {}", std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        const int err = errno;
        ::close(fd);
        fail(kLog, "launch", "cannot find a free port on 127.0.0.1: {}", std::strerror(err));
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

int run_self(const std::vector<std::string>& args) {
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) fail(kLog, "launch", "cannot start {}: {}", exe, std::strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(exe.c_str(), argv.data());
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return exit_code_of(status);
}

int launch_ranks(const LaunchConfig& c, const std::vector<std::string>& argv, int grace_s) {
    const int n = c.nproc_per_node;
    if (n < 1 || n > kMaxChildren)
        fail(kLog, "launch", "nproc_per_node {} is outside 1..{}", n, kMaxChildren);
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
    const int port = c.master_port > 0 ? c.master_port : free_port();
    const int world = c.world_size();

    // Everything exec needs is built before fork (the child may only make async-signal-safe calls).
    std::vector<std::string> base_env;
    for (char** e = environ; *e; ++e) {
        const std::string kv = *e;
        const std::string key = kv.substr(0, kv.find('='));
        if (key == "RANK" || key == "WORLD_SIZE" || key == "LOCAL_RANK" || key == "LOCAL_WORLD_SIZE" ||
            key == "GROUP_RANK" || key == "MASTER_ADDR" || key == "MASTER_PORT" ||
            key.rfind("TORCHELASTIC_", 0) == 0)
            continue;
        base_env.push_back(kv);
    }
    std::vector<std::vector<std::string>> envs(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        auto& e = envs[static_cast<size_t>(i)];
        e = base_env;
        e.push_back(fmt::format("RANK={}", c.machine_rank * n + i));
        e.push_back(fmt::format("WORLD_SIZE={}", world));
        e.push_back(fmt::format("LOCAL_RANK={}", i));
        e.push_back(fmt::format("LOCAL_WORLD_SIZE={}", n));
        e.push_back(fmt::format("GROUP_RANK={}", c.machine_rank));
        e.push_back(fmt::format("MASTER_ADDR={}", c.master_addr));
        e.push_back(fmt::format("MASTER_PORT={}", port));
    }
    std::vector<char*> args;
    args.push_back(const_cast<char*>(exe.c_str()));
    for (size_t i = 1; i < argv.size(); ++i) args.push_back(const_cast<char*>(argv[i].c_str()));
    args.push_back(nullptr);

    log::info(
        kLog,
        "starting {} rank(s) on this machine ({} of {} machine(s), {} ranks in all; {}), meeting at {}:{}", n,
        c.machine_rank, c.num_machines, world, c.source.empty() ? "nproc_per_node" : c.source, c.master_addr,
        port);
    struct sigaction sa {
    }, old_int{}, old_term{};
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    const pid_t launcher = getpid();
    g_child_count = 0;
    for (int i = 0; i < n; ++i) {
        std::vector<char*> envp;
        for (auto& kv : envs[static_cast<size_t>(i)]) envp.push_back(kv.data());
        envp.push_back(nullptr);
        const pid_t pid = fork();
        if (pid < 0) {
            log::error(kLog, "cannot start rank {}: {}", i, std::strerror(errno));
            forward(SIGKILL);
            break;
        }
        if (pid == 0) {
            setpgid(0, 0);  // Ctrl-C reaches the launcher only; it passes each signal on exactly once
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != launcher) _exit(1);
            execve(exe.c_str(), args.data(), envp.data());
            _exit(127);
        }
        g_children[i] = pid;
        g_child_count = i + 1;
        log::info(kLog, "rank {} is pid {}", c.machine_rank * n + i, pid);
    }

    int code = 0;
    int first_failed = -1;
    int alive = g_child_count.load();
    std::chrono::steady_clock::time_point kill_at{};
    bool terminating = false;
    while (alive > 0) {
        int status = 0;
        const pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            int idx = -1;
            for (int i = 0; i < g_child_count.load(); ++i)
                if (g_children[i] == pid) idx = i;
            if (idx < 0) continue;
            g_children[idx] = -1;
            --alive;
            const int rank = c.machine_rank * n + idx;
            const int rc = exit_code_of(status);
            if (rc != 0 && first_failed < 0) {
                first_failed = rank;
                code = rc;
                if (alive > 0) {
                    log::error(
                        kLog,
                        "rank {} (pid {}) {}: stopping the other {} rank(s) (SIGTERM, SIGKILL after {} s)",
                        rank, pid, describe_status(status), alive, grace_s);
                    forward(SIGTERM);
                    terminating = true;
                    kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(grace_s);
                } else {
                    log::error(kLog, "rank {} (pid {}) {}", rank, pid, describe_status(status));
                }
            } else if (rc != 0) {
                log::warn(kLog, "rank {} (pid {}) {}", rank, pid, describe_status(status));
            }
            continue;
        }
        if (pid < 0 && errno != EINTR) break;
        if (terminating && std::chrono::steady_clock::now() >= kill_at) {
            log::error(kLog, "{} rank(s) did not stop within {} s of SIGTERM: SIGKILL", alive, grace_s);
            forward(SIGKILL);
            terminating = false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    g_child_count = 0;
    if (first_failed >= 0)
        log::error(kLog, "the run failed: rank {} stopped first (exit code {}); see its log lines above",
                   first_failed, code);
    else
        log::info(kLog, "all {} rank(s) finished", n);
    return code;
}

}  // namespace st::host::dist
