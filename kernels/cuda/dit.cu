// CUDA DiT block kernels (st/kernels.h): modulated LayerNorm/RMSNorm, gated residual, 3-D RoPE.
// Same arguments and formulas as kernels/cpu/dit.cpp (the reference); statistics are float32 with a
// tree reduction, so they agree with the CPU's double-accumulated ones to float rounding.
#include "cuda_common.h"

namespace st::kernels {
namespace {

constexpr int kNormThreads = 256;

__global__ void modnorm_kernel(st_k_modnorm_args a) {
    const int64_t r = blockIdx.x;
    const int64_t c = a.channels;
    const int64_t base = r * c;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) sum += load(a.x, a.x_dtype, base + i);
    const float mean = a.norm == ST_K_LAYER_NORM ? block_reduce(sum, false) / static_cast<float>(c) : 0.0f;
    float sq = 0.0f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
        const float d = load(a.x, a.x_dtype, base + i) - mean;
        sq += d * d;
    }
    const float rstd = rsqrtf(block_reduce(sq, false) / static_cast<float>(c) + a.eps);
    const int64_t b = r / a.tokens, t = r % a.tokens;
    const int64_t mrow = (b * a.mod_batch_stride + t * a.mod_token_stride) * c;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
        float n = (load(a.x, a.x_dtype, base + i) - mean) * rstd;
        if (a.weight != nullptr) n = n * a.weight[i];
        if (a.bias != nullptr) n = n + a.bias[i];
        const float sc = a.scale != nullptr ? a.scale[mrow + i] : 0.0f;
        const float sh = a.shift != nullptr ? a.shift[mrow + i] : 0.0f;
        store(a.y, a.y_dtype, base + i, n * (1.0f + sc) + sh);
    }
}

__global__ void gated_residual_kernel(st_k_gated_residual_args a, int64_t n) {
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = k / a.channels, i = k % a.channels;
        const int64_t b = r / a.tokens, t = r % a.tokens;
        const float g = a.gate[(b * a.mod_batch_stride + t * a.mod_token_stride) * a.channels + i];
        store(a.out, a.out_dtype, k, load(a.x, a.x_dtype, k) + load(a.f, a.f_dtype, k) * g);
    }
}

__global__ void rope_kernel(st_k_rope_args a, int64_t pairs) {
    const float sign = a.inverse ? -1.0f : 1.0f;
    const int64_t half = a.head_dim / 2;
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < pairs;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t j = (k % half) * 2;
        const int64_t row = k / half;  // (b * tokens + t) * heads + h
        const int64_t bt = row / a.heads;
        const int64_t b = bt / a.tokens, t = bt % a.tokens;
        const float* cs = a.cos + b * a.table_batch_stride + t * a.head_dim;
        const float* sn = a.sin + b * a.table_batch_stride + t * a.head_dim;
        const int64_t x0 = row * a.head_dim + j;
        float o0, o1;
        rope_pair(load(a.x, a.x_dtype, x0), load(a.x, a.x_dtype, x0 + 1), cs[j], sign * sn[j], cs[j + 1],
                  sign * sn[j + 1], o0, o1);
        store(a.out, a.out_dtype, x0, o0);
        store(a.out, a.out_dtype, x0 + 1, o1);
    }
}


}  // namespace
}  // namespace st::kernels

using namespace st::kernels;

extern "C" st_k_status st_k_modnorm_cuda(const st_k_modnorm_args* a, void* stream) {
    // One thread block per row: the grid's x limit bounds the rows.
    if (!modnorm_args_ok(a) || a->rows > 0x7fffffff) return ST_K_BAD_ARGUMENT;
    if (a->rows == 0) return ST_K_OK;
    modnorm_kernel<<<static_cast<unsigned>(a->rows), kNormThreads, 0, as_stream(stream)>>>(*a);
    return launch_status("st_k_modnorm_cuda");
}

extern "C" st_k_status st_k_gated_residual_cuda(const st_k_gated_residual_args* a, void* stream) {
    if (!gated_residual_args_ok(a)) return ST_K_BAD_ARGUMENT;
    const int64_t n = a->rows * a->channels;
    if (n == 0) return ST_K_OK;
    gated_residual_kernel<<<grid_for(n, 256), 256, 0, as_stream(stream)>>>(*a, n);
    return launch_status("st_k_gated_residual_cuda");
}

extern "C" st_k_status st_k_rope_cuda(const st_k_rope_args* a, void* stream) {
    if (!rope_args_ok(a)) return ST_K_BAD_ARGUMENT;
    const int64_t pairs = a->batch * a->tokens * a->heads * (a->head_dim / 2);
    if (pairs == 0) return ST_K_OK;
    if (a->x == nullptr || a->out == nullptr || a->cos == nullptr || a->sin == nullptr) return ST_K_BAD_ARGUMENT;
    rope_kernel<<<grid_for(pairs, 256), 256, 0, as_stream(stream)>>>(*a, pairs);
    return launch_status("st_k_rope_cuda");
}
