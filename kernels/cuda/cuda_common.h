// Shared by the .cu files of kernels/cuda.
#pragma once

#include <cuda_runtime.h>

#include "../src/elementwise.h"

namespace st::kernels {

/// cudaGetLastError after a launch -> ST_K_OK or ST_K_CUDA_ERROR with st_k_cuda_last_error() set.
st_k_status launch_status(const char* what);

inline cudaStream_t as_stream(void* stream) {
    return static_cast<cudaStream_t>(stream);
}

inline unsigned grid_for(int64_t n, int threads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

/// Block-wide sum / max of one float per thread (blockDim.x a multiple of 32, <= 1024).
__device__ inline float block_reduce(float v, bool max_op) {
    __shared__ float warp_partial[32];
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = max_op ? fmaxf(v, other) : v + other;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // warp_partial may still be read by a previous call
    if (lane == 0) warp_partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    v = lane < warps ? warp_partial[lane] : (max_op ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = max_op ? fmaxf(v, other) : v + other;
    }
    return v;  // every thread holds the result
}

}  // namespace st::kernels
