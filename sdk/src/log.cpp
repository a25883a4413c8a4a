#include "st/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include "st/error.h"

namespace st::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::mutex g_mutex;
std::FILE* g_file = nullptr;
int g_force_tty = -1;  // -1: detect
bool g_progress_line_open = false;

std::string timestamp() {
    using namespace std::chrono;
    auto now = system_clock::now();
    auto t = system_clock::to_time_t(now);
    auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return fmt::format("{}.{:03d}", buf, static_cast<int>(ms));
}

}  // namespace

Level parse_level(std::string_view name) {
    std::string n(name);
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
    if (n == "trace") return Level::trace;
    if (n == "debug") return Level::debug;
    if (n == "info") return Level::info;
    if (n == "warn" || n == "warning") return Level::warn;
    if (n == "error") return Level::error;
    if (n == "off" || n == "none") return Level::off;
    throw Error("host.log", "parse",
                fmt::format("unknown log level '{}': expected trace, debug, info, warning, "
                            "error or off",
                            name));
}

const char* level_name(Level level) {
    switch (level) {
        case Level::trace:
            return "TRACE";
        case Level::debug:
            return "DEBUG";
        case Level::info:
            return "INFO ";
        case Level::warn:
            return "WARN ";
        case Level::error:
            return "ERROR";
        case Level::off:
            return "OFF  ";
    }
    return "?";
}

void set_level(Level level) {
    g_level = static_cast<int>(level);
}
Level level() {
    return static_cast<Level>(g_level.load());
}
bool enabled(Level l) {
    return static_cast<int>(l) >= g_level.load() && l != Level::off;
}

void set_file(const std::string& path) {
    std::lock_guard lock(g_mutex);
    if (g_file) std::fclose(g_file);
    g_file = nullptr;
    if (!path.empty()) {
        g_file = std::fopen(path.c_str(), "a");
        if (!g_file)
            throw Error("host.log", "open", fmt::format("cannot open log file '{}' for appending", path));
    }
}

// In a data-parallel run (WORLD_SIZE > 1, set by torchrun or st-host --nproc_per_node) every line
// says which rank wrote it.
static const std::string& rank_prefix() {
    static const std::string prefix = [] {
        const char* world = std::getenv("WORLD_SIZE");
        const char* rank = std::getenv("RANK");
        if (!world || !rank || std::string(world) == "1" || std::string(world) == "0") return std::string();
        return fmt::format("[rank {}] ", rank);
    }();
    return prefix;
}

void write(Level lvl, std::string_view component, std::string_view message) {
    std::string line =
        fmt::format("{} {} {}[{}] {}\n", timestamp(), level_name(lvl), rank_prefix(), component, message);
    std::lock_guard lock(g_mutex);
    if (g_progress_line_open) {
        std::fputs("\r\033[K", stderr);  // clear a live progress line before printing over it
        g_progress_line_open = false;
    }
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    if (g_file) {
        std::fputs(line.c_str(), g_file);
        std::fflush(g_file);
    }
}

bool stderr_is_terminal() {
    if (g_force_tty >= 0) return g_force_tty == 1;
    return ::isatty(STDERR_FILENO) == 1;
}
void force_terminal(bool is_terminal) {
    g_force_tty = is_terminal ? 1 : 0;
}

std::string format_duration(double s) {
    if (s < 0) return "?";
    if (s < 60) return fmt::format("{:.1f}s", s);
    auto total = static_cast<int64_t>(s + 0.5);
    if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, static_cast<int>(total % 60));
    return fmt::format("{}h{:02d}m", total / 3600, static_cast<int>((total % 3600) / 60));
}

double Progress::plain_interval_s = 10.0;

Progress::Progress(std::string component, std::string label, int64_t total, std::string unit)
    : component_(std::move(component)),
      label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      tty_(stderr_is_terminal()),
      start_(std::chrono::steady_clock::now()),
      last_render_(start_) {}

Progress::~Progress() {
    finish();
}

void Progress::advance(int64_t n) {
    done_ += n;
    maybe_render(false);
}
void Progress::set(int64_t done) {
    done_ = done;
    maybe_render(false);
}
void Progress::set_note(std::string note) {
    note_ = std::move(note);
}

double Progress::rate() const {
    double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return el > 0 ? static_cast<double>(done_) / el : 0.0;
}

double Progress::eta_seconds() const {
    if (total_ <= 0 || done_ <= 0) return -1.0;
    double r = rate();
    if (r <= 0) return -1.0;
    return static_cast<double>(std::max<int64_t>(0, total_ - done_)) / r;
}

std::string Progress::line() const {
    std::string count = total_ > 0 ? fmt::format("{}/{}", done_, total_) : fmt::format("{}", done_);
    std::string pct = total_ > 0 ? fmt::format(" {:3.0f}%", 100.0 * done_ / total_) : "";
    double r = rate();
    std::string rate_s = r >= 1.0 || r == 0.0 ? fmt::format("{:.1f} {}/s", r, unit_)
                                              : fmt::format("{:.2f} s/{}", 1.0 / r, unit_);
    std::string s = fmt::format("{}: {}{} | {}", label_, count, pct, rate_s);
    if (total_ > 0) s += " | ETA " + format_duration(eta_seconds());
    if (!note_.empty()) s += " | " + note_;
    return s;
}

void Progress::maybe_render(bool force) {
    if (finished_ || !enabled(Level::info)) return;
    auto now = std::chrono::steady_clock::now();
    double since = std::chrono::duration<double>(now - last_render_).count();
    if (tty_) {
        if (!force && since < 0.2) return;
        last_render_ = now;
        std::lock_guard lock(g_mutex);
        std::fprintf(stderr, "\r\033[K[%s] %s", component_.c_str(), line().c_str());
        std::fflush(stderr);
        g_progress_line_open = true;
    } else {
        if (!force && since < plain_interval_s) return;
        last_render_ = now;
        write(Level::info, component_, line());
    }
}

void Progress::finish() {
    if (finished_) return;
    if (tty_) {
        maybe_render(true);
        std::lock_guard lock(g_mutex);
        if (g_progress_line_open) {
            std::fputs("\n", stderr);
            g_progress_line_open = false;
        }
    } else {
        maybe_render(true);
    }
    finished_ = true;
}

}  // namespace st::log
