// Stored (frozen) base weights: precision parsing, int8 per-channel quantisation (optimum-quanto's
// qint8 weights: symmetric, absmax per output channel), and the matmul that rebuilds the dense weight
// in forward and backward instead of keeping it.
#include "st/base_weights.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fnmatch.h>
#include <torch/csrc/autograd/custom_function.h>

#include "st/error.h"

namespace st::sdk {
namespace {

constexpr const char* kComponent = "sdk.base_weights";
thread_local bool t_deferred = false;

at::Tensor dense(const at::Tensor& w, const at::Tensor& scale, at::ScalarType dtype) {
    if (w.scalar_type() == at::kChar) return dequantize_int8(w, scale, dtype);
    return w.scalar_type() == dtype ? w : w.to(dtype);
}

// y = x @ dense(w)^T + b; saves w (stored form) and scale, not the dense copy.
struct StoredLinearFn : public torch::autograd::Function<StoredLinearFn> {
    // Undefined tensors cannot pass through a custom function: scale and bias come as empty tensors
    // (numel 0) when absent.
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                              const at::Tensor& scale, const at::Tensor& bias) {
        ctx->save_for_backward({w, scale});
        const bool has_bias = bias.numel() > 0;
        ctx->saved_data["bias_grad"] = has_bias && bias.requires_grad();
        ctx->saved_data["x_grad"] = x.requires_grad();
        const at::Tensor b = has_bias ? bias.to(x.scalar_type()) : at::Tensor();
        return at::linear(x, dense(w, scale, x.scalar_type()), b);
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor& g = grads[0];
        at::Tensor gx, gb;
        if (ctx->saved_data["x_grad"].toBool())
            gx = at::matmul(g, dense(saved[0], saved[1], g.scalar_type()));
        if (ctx->saved_data["bias_grad"].toBool()) gb = g.reshape({-1, g.size(-1)}).sum(0);
        return {gx, at::Tensor(), at::Tensor(), gb};
    }
};

}  // namespace

const char* base_precision_name(BasePrecision p) {
    switch (p) {
        case BasePrecision::compute:
            return "compute";
        case BasePrecision::keep:
            return "keep";
        case BasePrecision::bf16:
            return "bf16";
        case BasePrecision::int8:
            return "int8";
        case BasePrecision::fp32:
            return "fp32";
    }
    return "?";
}

BasePrecision parse_base_precision(const std::string& value, const std::string& key) {
    if (value == "no_change" || value.empty()) return BasePrecision::keep;
    if (value == "bf16") return BasePrecision::bf16;
    if (value == "fp32") return BasePrecision::fp32;
    if (value == "int8-quanto" || value == "int8-torchao") return BasePrecision::int8;
    fail(kComponent, "config",
         "{} = '{}': st stores frozen base weights as no_change (the file's dtype), bf16, fp32, int8-quanto "
         "or "
         "int8-torchao (both int8 with a per-channel scale); fp8, int4, int2, nf4 and the other "
         "SimpleTuner levels are not supported",
         key, value);
}

BasePrecision base_precision_for(const BaseWeightPlan& plan, const std::string& module_path, int64_t in,
                                 int64_t out) {
    if (plan.precision != BasePrecision::int8) return plan.precision;
    for (const auto& pattern : plan.int8_exclude)
        if (::fnmatch(pattern.c_str(), module_path.c_str(), 0) == 0) return BasePrecision::keep;
    if (plan.int8_multiple > 1 && (in % plan.int8_multiple != 0 || out % plan.int8_multiple != 0))
        return BasePrecision::keep;
    return BasePrecision::int8;
}

DeferredInit::DeferredInit() : previous_(t_deferred) {
    t_deferred = true;
}
DeferredInit::~DeferredInit() {
    t_deferred = previous_;
}
bool DeferredInit::active() {
    return t_deferred;
}

Int8Weight quantize_int8(const at::Tensor& w) {
    if (w.dim() != 2)
        fail(kComponent, "quantize", "int8 quantisation needs a [out, in] weight, got {} dims", w.dim());
    at::NoGradGuard no_grad;
    const at::Tensor wf = w.to(at::kFloat);
    at::Tensor scale = wf.abs().amax(1) / 127.0;
    scale = at::where(scale > 0, scale, at::ones_like(scale));
    at::Tensor q = at::round(wf / scale.unsqueeze(1)).clamp_(-127, 127).to(at::kChar);
    return {q.contiguous(), scale.contiguous()};
}

at::Tensor dequantize_int8(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype) {
    return (q.to(at::kFloat) * scale.to(q.device()).unsqueeze(1)).to(dtype);
}

at::Tensor stored_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale,
                         const at::Tensor& bias) {
    if (w.scalar_type() == at::kChar && !scale.defined())
        fail(kComponent, "forward", "an int8 weight needs its scale");
    const at::Tensor none = at::empty({0}, x.options().dtype(at::kFloat));
    return StoredLinearFn::apply(x, w, scale.defined() ? scale : none, bias.defined() ? bias : none);
}

}  // namespace st::sdk
