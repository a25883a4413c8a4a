#include "system_info.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/version.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "st/attention.h"
#include "st/log.h"

namespace st::host {

namespace {

std::string mapped_blas_library() {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        auto slash = line.find('/');
        if (slash == std::string::npos) continue;
        std::string path = line.substr(slash);
        auto file = std::filesystem::path(path).filename().string();
        if (file.rfind("libblas", 0) == 0 || file.rfind("libopenblas", 0) == 0 ||
            file.rfind("libmkl_rt", 0) == 0 || file.rfind("libblis", 0) == 0) {
            std::error_code ec;
            auto real = std::filesystem::canonical(path, ec);
            return ec ? path : real.string();
        }
    }
    return {};
}

}  // namespace

SystemInfo configure_threads_and_probe(int num_threads) {
    SystemInfo s;
    s.cores = static_cast<int>(std::thread::hardware_concurrency());
    int want = num_threads > 0 ? num_threads : std::max(1, s.cores);
    at::set_num_threads(1);
    // OpenBLAS keeps its own pool (a no-op when another BLAS is in use).
    using SetThreads = void (*)(int);
    using GetThreads = int (*)();
    if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(want);
    if (auto g = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads")))
        s.blas_threads = g();
    s.torch_threads = at::get_num_threads();
    s.blas = mapped_blas_library();
    if (s.blas.find("openblas-pthread") != std::string::npos)
        s.blas_kind = "OpenBLAS (pthread)";
    else if (s.blas.find("openblas-openmp") != std::string::npos)
        s.blas_kind = "OpenBLAS (OpenMP)";
    else if (s.blas.find("openblas") != std::string::npos)
        s.blas_kind = "OpenBLAS";
    else if (s.blas.find("blas/libblas") != std::string::npos)
        s.blas_kind = "reference BLAS (slow: install libopenblas0-pthread)";
    else if (s.blas.find("mkl") != std::string::npos)
        s.blas_kind = "Intel MKL";
    else if (s.blas.find("blis") != std::string::npos)
        s.blas_kind = "BLIS";
    else
        s.blas_kind = s.blas.empty() ? "none mapped" : "unknown";
    s.torch_version = TORCH_VERSION;
    s.attention = sdk::attention_backend();
    return s;
}

void log_system_info(const SystemInfo& s) {
    log::info("host",
              "LibTorch {} | {} cores | BLAS: {} ({}) with {} threads | ATen intra-op threads: {} | "
              "attention: {}",
              s.torch_version, s.cores, s.blas_kind, s.blas.empty() ? "-" : s.blas,
              s.blas_threads > 0 ? std::to_string(s.blas_threads) : std::string("?"), s.torch_threads,
              s.attention);
    if (s.blas_kind.rfind("reference", 0) == 0)
        log::warn("host",
                  "the reference BLAS runs fp32 matmuls ~15x slower than OpenBLAS; "
                  "run scripts/setup-deps.sh (installs libopenblas0-pthread)");
}

namespace {
double status_field_mib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string key = std::string(field) + ":";
    while (std::getline(in, line))
        if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) / 1024.0;  // "  1234 kB"
    return -1;
}
}  // namespace

double rss_now_mib() {
    return status_field_mib("VmRSS");
}

double rss_peak_mib() {
    return status_field_mib("VmHWM");
}

bool reset_rss_peak() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return static_cast<bool>(out);
}

}  // namespace st::host
