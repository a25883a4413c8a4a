// The one logger of st, shared by host and plugins (it lives in libst_sdk, so there is one instance
// per process). Lines look like:
//   2026-11-21 10:00:01.123 INFO  [model.wan] loaded 825 tensors (bf16 -> fp32)
// Libraries never write to std::cout; everything goes through here (stderr, plus an optional file).
//
// Progress: long operations create a `Progress`; on a terminal it redraws one line (count, rate,
// ETA); otherwise it prints a plain line at most every `plain_interval_s` seconds and at the end.
#pragma once

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace st::log {

enum class Level { trace = 0, debug = 1, info = 2, warn = 3, error = 4, off = 5 };

/// Parses "trace|debug|info|warning|warn|error|off" (case-insensitive); throws st::Error otherwise.
Level parse_level(std::string_view name);
const char* level_name(Level level);

void set_level(Level level);
Level level();
bool enabled(Level level);

/// Also append every line to this file (opened in append mode). Empty path closes the file sink.
void set_file(const std::string& path);

/// Writes one line. Thread-safe. `component` is the prefix shown in brackets.
void write(Level level, std::string_view component, std::string_view message);

template <typename... Args>
void trace(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    if (enabled(Level::trace)) write(Level::trace, c, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void debug(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    if (enabled(Level::debug)) write(Level::debug, c, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void info(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    if (enabled(Level::info)) write(Level::info, c, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void warn(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    if (enabled(Level::warn)) write(Level::warn, c, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void error(std::string_view c, fmt::format_string<Args...> f, Args&&... a) {
    if (enabled(Level::error)) write(Level::error, c, fmt::format(f, std::forward<Args>(a)...));
}

/// Whether stderr is a terminal (decides the progress style). Overridable for tests.
bool stderr_is_terminal();
void force_terminal(bool is_terminal);

class Progress {
  public:
    /// total <= 0 means unknown (no ETA). `unit` is shown after the rate ("frames/s").
    Progress(std::string component, std::string label, int64_t total, std::string unit = "it");
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    void advance(int64_t n = 1);
    void set(int64_t done);
    /// Extra text appended to the line ("loss 0.123").
    void set_note(std::string note);
    /// Prints the final line (also done by the destructor).
    void finish();

    int64_t done() const { return done_; }
    double rate() const;
    /// Seconds left, or negative when unknown.
    double eta_seconds() const;
    /// The text of the current line, without terminal control characters.
    std::string line() const;

    static double plain_interval_s;

  private:
    void maybe_render(bool force);
    std::string component_;
    std::string label_;
    std::string unit_;
    std::string note_;
    int64_t total_;
    int64_t done_ = 0;
    bool finished_ = false;
    bool tty_;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_render_;
};

/// "1h02m", "3m05s", "12.3s"
std::string format_duration(double seconds);

}  // namespace st::log
