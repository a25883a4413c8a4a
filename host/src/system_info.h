// What the host logs about the machine at start: BLAS library, thread counts, LibTorch build.
#pragma once

#include <string>

namespace st::host {

struct SystemInfo {
    std::string blas;       ///< resolved path of the BLAS library mapped into the process
    std::string blas_kind;  ///< "OpenBLAS (pthread)", "reference BLAS", ...
    int torch_threads = 0;  ///< at::get_num_threads()
    int cores = 0;
    std::string torch_version;
    std::string attention;  ///< st::sdk::attention_backend()
};

/// Sets LibTorch's intra-op threads (0 = all cores) and returns what the process runs with.
SystemInfo configure_threads_and_probe(int num_threads);
void log_system_info(const SystemInfo& info);

}  // namespace st::host
