#include "run/run_device.h"

#include <ATen/Context.h>

#include <charconv>

#include "st/error.h"
#include "st/log.h"

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace st::host {
namespace {

constexpr const char* kLog = "host.device";

int cuda_device_count() {
    if (!at::hasCUDA()) return 0;
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    return static_cast<int>(c10::cuda::device_count());
#else
    return 1;  // a CUDA LibTorch without ST_CUDA: device 0 only
#endif
}

int parse_index(const std::string& requested) {
    const std::string digits = requested.substr(5);
    int index = -1;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc() || end != digits.data() + digits.size() || index < 0)
        fail(kLog, "config", "device '{}': expected auto, cpu, cuda or cuda:N (N a device index)", requested);
    return index;
}

}  // namespace

RunDevice pick_run_device(const std::string& requested, int local_rank) {
    const int count = cuda_device_count();
    const bool cuda_build = at::hasCUDA();
    if (requested == "cpu") return {c10::Device(c10::kCPU), "device cpu (asked for)"};
    if (requested == "auto" && count == 0) {
        return {c10::Device(c10::kCPU),
                cuda_build ? "device cpu (auto: this LibTorch has CUDA but no device is visible)"
                           : "device cpu (auto: this st is built with a CPU-only LibTorch)"};
    }
    if (requested != "auto" && requested != "cuda" && requested.rfind("cuda:", 0) != 0)
        fail(kLog, "config", "device '{}': expected auto, cpu, cuda or cuda:N", requested);
    const bool explicit_index = requested.rfind("cuda:", 0) == 0;
    const int index = explicit_index ? parse_index(requested) : local_rank;
    if (count == 0)
        fail(kLog, "config", "device '{}': {}", requested,
             cuda_build ? "no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver)"
                        : "this st is built with a CPU-only LibTorch (build with -DST_CUDA=ON against a CUDA "
                          "LibTorch)");
    if (index >= count)
        fail(kLog, "config", "device '{}': CUDA device {} does not exist ({} visible{})", requested, index,
             count, explicit_index ? "" : "; the index is this process's LOCAL_RANK");
    return {c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)),
            fmt::format("device cuda:{} ({}; {} CUDA device{} visible)", index,
                        requested == "auto" ? "auto" : "asked for", count, count == 1 ? "" : "s")};
}

void configure_run_device(const RunDevice& run) {
    if (run.device.is_cuda()) {
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
        c10::cuda::set_device(run.device.index());
#endif
        at::globalContext().setAllowTF32CuBLAS(true);
        at::globalContext().setAllowTF32CuDNN(true);
        log::info(kLog, "{}; TF32 matrix products and convolutions allowed", run.why);
        return;
    }
    log::info(kLog, "{}", run.why);
}

}  // namespace st::host
