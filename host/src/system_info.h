// What the host logs about the machine at start: BLAS library, thread counts, LibTorch build.
#pragma once

#include <string>

namespace st::host {

struct SystemInfo {
    std::string blas;       ///< resolved path of the BLAS library mapped into the process
    std::string blas_kind;  ///< "OpenBLAS (pthread)", "reference BLAS", ...
    int torch_threads = 0;  ///< at::get_num_threads() (ATen intra-op pool)
    int blas_threads = 0;   ///< BLAS pool size (openblas_get_num_threads), 0 if unknown
    int cores = 0;
    std::string torch_version;
    std::string attention;  ///< st::sdk::attention_backend()
};

/// Sizes the thread pools (num_threads: 0 = all cores) and returns what the process runs with.
/// The BLAS pool gets num_threads; ATen's intra-op pool stays at 1 thread, because on CPU builds
/// ATen parallel regions that call into a multi-threaded BLAS oversubscribe the cores: measured
/// with `st-host bench --plugin wan` (small preset), ATen 2 + BLAS 2 threads ran the forward 6.5x
/// slower than ATen 1 + BLAS 2 (docs/performance.md). GEMMs dominate every model here.
SystemInfo configure_threads_and_probe(int num_threads);
void log_system_info(const SystemInfo& info);

/// Resident memory of this process in MiB from /proc/self/status: now (VmRSS) and the peak since
/// start or the last reset (VmHWM); -1 where unknown.
double rss_now_mib();
double rss_peak_mib();
/// Starts a new peak (writes 5 to /proc/self/clear_refs); false where the kernel does not allow it.
bool reset_rss_peak();

}  // namespace st::host
