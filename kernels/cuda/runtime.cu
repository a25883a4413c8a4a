// CUDA runtime helpers of st/kernels.h: device count (0 without driver/device) and the last error.
#include <cuda_runtime.h>

#include <string>

#include "cuda_common.h"

namespace st::kernels {

thread_local std::string g_last_error;

st_k_status launch_status(const char* what) {
    const cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return ST_K_OK;
    g_last_error = std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return ST_K_CUDA_ERROR;
}

}  // namespace st::kernels

extern "C" int st_k_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky "no driver / no device" error
        return 0;
    }
    return n;
}

extern "C" const char* st_k_cuda_last_error(void) { return st::kernels::g_last_error.c_str(); }
