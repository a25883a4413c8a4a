// What every family's `st-host bench` needs: wall-clock seconds and the process's peak resident set.
#pragma once

#include <string>
#include <vector>

namespace st::kit {

/// Monotonic seconds.
double now_s();
/// Peak resident set size of this process in MiB (VmHWM), -1 when unknown.
double peak_rss_mib();
/// Resets VmHWM to the current RSS (Linux >= 4.0: /proc/self/clear_refs "5").
void reset_peak_rss();
/// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& s, char sep);

}  // namespace st::kit
