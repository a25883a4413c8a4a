// CUDA fused optimizer steps (st/kernels.h). Same per-element code as kernels/cpu/optim.cpp
// (src/elementwise.h); built with --fmad=false, so results equal the CPU reference bit for bit.
// 8-bit steps: one thread block per 256-element quantisation block, one thread per element; the
// nearest code is a binary search over the midpoints held in shared memory, which returns exactly
// what the CPU's table lookup returns (the number of midpoints <= x).
#include <cmath>

#include "../cpu/q8_codes.h"
#include "cuda_common.h"

namespace st::kernels {
namespace {

constexpr int kThreads = 256;
static_assert(ST_K_Q8_BLOCK == kThreads, "one thread per element of a quantisation block");

struct Q8Map {
    float values[256];
    float mids[255];
};

Q8Map device_map(bool is_signed) {
    const Q8Codes& c = q8_codes(is_signed);
    Q8Map m{};
    for (int i = 0; i < 256; ++i) m.values[i] = c.values[i];
    for (int i = 0; i < 255; ++i) m.mids[i] = c.mids[i];
    return m;
}

__device__ inline uint8_t nearest_code(const float* mids, float x) {
    if (x != x) return 255;
    int lo = 0, hi = 255;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (mids[mid] <= x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return static_cast<uint8_t>(lo);
}

__device__ inline void copy_map(const Q8Map& from, float* values, float* mids) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) values[i] = from.values[i];
    for (int i = threadIdx.x; i < 255; i += blockDim.x) mids[i] = from.mids[i];
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, st_k_adam_scalars s) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        float mi = m[i], vi = v[i];
        p[i] = adam_element(p[i], g[i], mi, vi, s);
        m[i] = mi;
        v[i] = vi;
    }
}

__global__ void lion_kernel(float* p, const float* g, float* m, int64_t n, st_k_lion_scalars s) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        float mi = m[i];
        p[i] = lion_element(p[i], g[i], mi, s);
        m[i] = mi;
    }
}

__global__ void adamw8bit_kernel(float* p, const float* g, st_k_q8_state m8, st_k_q8_state v8, int64_t n,
                                 st_k_adam_scalars s, Q8Map smap, Q8Map umap) {
    __shared__ float sv[256], smid[255], uv[256], umid[255];
    copy_map(smap, sv, smid);
    copy_map(umap, uv, umid);
    __syncthreads();
    const int64_t b = blockIdx.x;
    const int64_t i = b * kThreads + threadIdx.x;
    const bool valid = i < n;
    float mi = 0.0f, vi = 0.0f;
    if (valid) {
        mi = sv[m8.codes[i]] * m8.absmax[b];
        vi = uv[v8.codes[i]] * v8.absmax[b];
        p[i] = adam_element(p[i], g[i], mi, vi, s);
    }
    const float am = block_reduce(valid ? fabsf(mi) : 0.0f, true);
    const float av = block_reduce(valid ? vi : 0.0f, true);  // also orders the absmax reads above
    if (threadIdx.x == 0) {
        m8.absmax[b] = am;
        v8.absmax[b] = av;
    }
    if (valid) {
        m8.codes[i] = nearest_code(smid, mi * (am > 0.0f ? 1.0f / am : 0.0f));
        v8.codes[i] = nearest_code(umid, vi * (av > 0.0f ? 1.0f / av : 0.0f));
    }
}

__global__ void lion8bit_kernel(float* p, const float* g, st_k_q8_state m8, int64_t n, st_k_lion_scalars s,
                                 Q8Map smap) {
    __shared__ float sv[256], smid[255];
    copy_map(smap, sv, smid);
    __syncthreads();
    const int64_t b = blockIdx.x;
    const int64_t i = b * kThreads + threadIdx.x;
    const bool valid = i < n;
    float mi = 0.0f;
    if (valid) {
        mi = sv[m8.codes[i]] * m8.absmax[b];
        p[i] = lion_element(p[i], g[i], mi, s);
    }
    const float am = block_reduce(valid ? fabsf(mi) : 0.0f, true);
    if (threadIdx.x == 0) m8.absmax[b] = am;
    if (valid) m8.codes[i] = nearest_code(smid, mi * (am > 0.0f ? 1.0f / am : 0.0f));
}

bool bad(const void* p, int64_t n) { return n < 0 || (n > 0 && p == nullptr); }

unsigned q8_blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace
}  // namespace st::kernels

using namespace st::kernels;

extern "C" st_k_status st_k_adamw_cuda(float* p, const float* g, float* m, float* v, int64_t n,
                                       const st_k_adam_scalars* s, void* stream) {
    if (bad(p, n) || bad(g, n) || bad(m, n) || bad(v, n) || s == nullptr) return ST_K_BAD_ARGUMENT;
    if (n == 0) return ST_K_OK;
    adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(p, g, m, v, n, *s);
    return launch_status("st_k_adamw_cuda");
}

extern "C" st_k_status st_k_lion_cuda(float* p, const float* g, float* m, int64_t n, const st_k_lion_scalars* s,
                                      void* stream) {
    if (bad(p, n) || bad(g, n) || bad(m, n) || s == nullptr) return ST_K_BAD_ARGUMENT;
    if (n == 0) return ST_K_OK;
    lion_kernel<<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(p, g, m, n, *s);
    return launch_status("st_k_lion_cuda");
}

extern "C" st_k_status st_k_adamw8bit_cuda(float* p, const float* g, st_k_q8_state m8, st_k_q8_state v8, int64_t n,
                                           const st_k_adam_scalars* s, void* stream) {
    if (bad(p, n) || bad(g, n) || bad(m8.codes, n) || bad(v8.codes, n) || bad(m8.absmax, n) ||
        bad(v8.absmax, n) || s == nullptr) {
        return ST_K_BAD_ARGUMENT;
    }
    if (n == 0) return ST_K_OK;
    static const Q8Map smap = device_map(true);
    static const Q8Map umap = device_map(false);
    adamw8bit_kernel<<<q8_blocks(n), kThreads, 0, as_stream(stream)>>>(p, g, m8, v8, n, *s, smap, umap);
    return launch_status("st_k_adamw8bit_cuda");
}

extern "C" st_k_status st_k_lion8bit_cuda(float* p, const float* g, st_k_q8_state m8, int64_t n,
                                          const st_k_lion_scalars* s, void* stream) {
    if (bad(p, n) || bad(g, n) || bad(m8.codes, n) || bad(m8.absmax, n) || s == nullptr) return ST_K_BAD_ARGUMENT;
    if (n == 0) return ST_K_OK;
    static const Q8Map smap = device_map(true);
    lion8bit_kernel<<<q8_blocks(n), kThreads, 0, as_stream(stream)>>>(p, g, m8, n, *s, smap);
    return launch_status("st_k_lion8bit_cuda");
}
