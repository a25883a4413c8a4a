#include "fused.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "st/error.h"

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace st::plugins::optim {
namespace {

constexpr const char* kComponent = "optim.fused";
// Elements per parallel chunk on CPU: a multiple of the 8-bit block so chunks never split one.
constexpr int64_t kChunk = 1 << 15;
static_assert(kChunk % ST_K_Q8_BLOCK == 0);

void check(st_k_status status, const char* op) {
    if (status == ST_K_OK) return;
    std::string why = st_k_status_name(status);
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (status == ST_K_CUDA_ERROR) why += std::string(": ") + st_k_cuda_last_error();
#endif
    throw Error(kComponent, "step", fmt::format("{} failed: {}", op, why));
}

float* f32(const at::Tensor& t) {
    return t.data_ptr<float>();
}

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
void* stream_of(const at::Tensor& t) {
    return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
#endif

// Runs fn(begin, end) over [0, n) in block-aligned chunks on the ATen thread pool.
template <typename Fn>
void chunked(int64_t n, Fn&& fn) {
    at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk));
    });
}

}  // namespace

bool fused_ok(std::initializer_list<const at::Tensor*> fp32, std::initializer_list<const at::Tensor*> bytes) {
    const at::Device device = (*fp32.begin())->device();
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (!device.is_cpu() && !device.is_cuda()) return false;
#else
    if (!device.is_cpu()) return false;
#endif
    for (const at::Tensor* t : fp32) {
        if (t->scalar_type() != at::kFloat || !t->is_contiguous() || t->device() != device) return false;
    }
    for (const at::Tensor* t : bytes) {
        if (t->scalar_type() != at::kByte || !t->is_contiguous() || t->device() != device) return false;
    }
    return true;
}

void fused_adamw(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v,
                 const st_k_adam_scalars& s) {
    const int64_t n = p.numel();
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (p.is_cuda())
        return check(st_k_adamw_cuda(f32(p), f32(g), f32(m), f32(v), n, &s, stream_of(p)), "adamw");
#endif
    float *pp = f32(p), *gp = f32(g), *mp = f32(m), *vp = f32(v);
    chunked(n, [&](int64_t b, int64_t e) {
        check(st_k_adamw_cpu(pp + b, gp + b, mp + b, vp + b, e - b, &s), "adamw");
    });
}

void fused_lion(at::Tensor& p, const at::Tensor& g, at::Tensor& m, const st_k_lion_scalars& s) {
    const int64_t n = p.numel();
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (p.is_cuda()) return check(st_k_lion_cuda(f32(p), f32(g), f32(m), n, &s, stream_of(p)), "lion");
#endif
    float *pp = f32(p), *gp = f32(g), *mp = f32(m);
    chunked(n,
            [&](int64_t b, int64_t e) { check(st_k_lion_cpu(pp + b, gp + b, mp + b, e - b, &s), "lion"); });
}

namespace {
st_k_q8_state q8_at(Q8Tensors& t, int64_t begin) {
    return {t.codes.data_ptr<uint8_t>() + begin, t.absmax.data_ptr<float>() + begin / ST_K_Q8_BLOCK};
}
}  // namespace

void fused_adamw8bit(at::Tensor& p, const at::Tensor& g, Q8Tensors& m, Q8Tensors& v,
                     const st_k_adam_scalars& s) {
    const int64_t n = p.numel();
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (p.is_cuda()) {
        return check(st_k_adamw8bit_cuda(f32(p), f32(g), q8_at(m, 0), q8_at(v, 0), n, &s, stream_of(p)),
                     "adamw8bit");
    }
#endif
    float *pp = f32(p), *gp = f32(g);
    chunked(n, [&](int64_t b, int64_t e) {
        check(st_k_adamw8bit_cpu(pp + b, gp + b, q8_at(m, b), q8_at(v, b), e - b, &s), "adamw8bit");
    });
}

void fused_lion8bit(at::Tensor& p, const at::Tensor& g, Q8Tensors& m, const st_k_lion_scalars& s) {
    const int64_t n = p.numel();
#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
    if (p.is_cuda())
        return check(st_k_lion8bit_cuda(f32(p), f32(g), q8_at(m, 0), n, &s, stream_of(p)), "lion8bit");
#endif
    float *pp = f32(p), *gp = f32(g);
    chunked(n, [&](int64_t b, int64_t e) {
        check(st_k_lion8bit_cpu(pp + b, gp + b, q8_at(m, b), e - b, &s), "lion8bit");
    });
}

}  // namespace st::plugins::optim
