#include "st/kit/cuda_dit.h"

#include <ATen/ATen.h>

#include "st/error.h"

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include "st/kernels.h"
#endif

namespace st::kit {

#if defined(ST_WITH_CUDA) && ST_WITH_CUDA
namespace {

constexpr const char* kComponent = "kit.cuda_dit";

st_k_dtype kdtype(const at::Tensor& t) {
    return t.scalar_type() == at::kBFloat16 ? ST_K_BF16 : ST_K_F32;
}

void* stream_of(const at::Tensor& t) {
    return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

void check(st_k_status s, const char* op) {
    if (s != ST_K_OK)
        throw Error(kComponent, op, std::string(st_k_status_name(s)) + ": " + st_k_cuda_last_error());
}

// Modulation rows of a [B, 1 | L, C] tensor: (batch stride, token stride) in rows.
std::pair<int64_t, int64_t> mod_strides(const at::Tensor& m, int64_t tokens) {
    TORCH_CHECK(m.dim() == 3 && (m.size(1) == 1 || m.size(1) == tokens),
                "modulation must be [B, 1|L, C], got ", m.sizes());
    return m.size(1) == 1 ? std::pair<int64_t, int64_t>{1, 0} : std::pair<int64_t, int64_t>{tokens, 1};
}

at::Tensor rope_run(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor xc = x.contiguous();
    at::Tensor out = at::empty_like(xc);
    st_k_rope_args a{xc.size(0),
                     xc.size(1),
                     xc.size(2),
                     xc.size(3),
                     xc.data_ptr(),
                     kdtype(xc),
                     cos.data_ptr<float>(),
                     sin.data_ptr<float>(),
                     cos.size(0) == 1 ? 0 : cos.size(1) * cos.size(2),
                     inverse ? 1 : 0,
                     out.data_ptr(),
                     kdtype(out)};
    check(st_k_rope_cuda(&a, stream_of(xc)), "rope");
    return out;
}

struct RopeFunction : public torch::autograd::Function<RopeFunction> {
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                              const at::Tensor& cos, const at::Tensor& sin) {
        ctx->saved_data["cos"] = cos;
        ctx->saved_data["sin"] = sin;
        return rope_run(x, cos, sin, false);
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        at::Tensor g =
            rope_run(grads[0], ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), true);
        return {g, at::Tensor(), at::Tensor()};
    }
};

}  // namespace

bool cuda_dit_available(const at::Tensor& x) {
    return x.defined() && x.is_cuda() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
}

at::Tensor rope3d_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    // x [B, L, H, D]; cos/sin [1|B, L, D]
    TORCH_CHECK(x.dim() == 4 && cos.dim() == 3 && cos.sizes() == sin.sizes() && cos.size(1) == x.size(1) &&
                    cos.size(2) == x.size(3),
                "rope3d_cuda: x ", x.sizes(), " vs tables ", cos.sizes());
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(x.device());
    return RopeFunction::apply(x, cos.to(opts).contiguous(), sin.to(opts).contiguous());
}

at::Tensor modulated_layer_norm_cuda(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                                     double eps, at::ScalarType out_dtype) {
    // x [B, L, C] -> [B, L, C]
    TORCH_CHECK(x.dim() == 3, "modulated_layer_norm_cuda: x must be [B, L, C], got ", x.sizes());
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
    at::Tensor xc = x.contiguous();
    at::Tensor sh = shift.to(at::kFloat).contiguous(), sc = scale.to(at::kFloat).contiguous();
    const auto [bs, ts] = mod_strides(sh, L);
    TORCH_CHECK(sc.sizes() == sh.sizes(), "shift ", sh.sizes(), " vs scale ", sc.sizes());
    at::Tensor y = at::empty({B, L, C}, xc.options().dtype(out_dtype));
    const st_k_modnorm_args a{B * L,
                              L,
                              C,
                              ST_K_LAYER_NORM,
                              static_cast<float>(eps),
                              xc.data_ptr(),
                              kdtype(xc),
                              nullptr,
                              nullptr,
                              sh.data_ptr<float>(),
                              sc.data_ptr<float>(),
                              bs,
                              ts,
                              y.data_ptr(),
                              kdtype(y)};
    check(st_k_modnorm_cuda(&a, stream_of(xc)), "modnorm");
    return y;
}

at::Tensor gated_residual_cuda(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gate) {
    // x, f [B, L, C]; gate [B, 1|L, C] -> [B, L, C] in x's dtype
    TORCH_CHECK(x.dim() == 3 && f.sizes() == x.sizes(), "gated_residual_cuda: x ", x.sizes(), " f ",
                f.sizes());
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor xc = x.contiguous(), fc = f.contiguous(), g = gate.to(at::kFloat).contiguous();
    const auto [bs, ts] = mod_strides(g, x.size(1));
    at::Tensor out = at::empty_like(xc);
    const st_k_gated_residual_args a{
        x.size(0) * x.size(1), x.size(1), x.size(2), xc.data_ptr(),  kdtype(xc), fc.data_ptr(), kdtype(fc),
        g.data_ptr<float>(),   bs,        ts,        out.data_ptr(), kdtype(out)};
    check(st_k_gated_residual_cuda(&a, stream_of(xc)), "gated_residual");
    return out;
}

#else

bool cuda_dit_available(const at::Tensor&) {
    return false;
}

namespace {
[[noreturn]] void no_cuda(const char* op) {
    throw Error("kit.cuda_dit", op, "this st is built without CUDA (ST_CUDA=OFF)");
}
}  // namespace

at::Tensor rope3d_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
    no_cuda("rope");
}
at::Tensor modulated_layer_norm_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                     at::ScalarType) {
    no_cuda("modnorm");
}
at::Tensor gated_residual_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
    no_cuda("gated_residual");
}

#endif

}  // namespace st::kit
