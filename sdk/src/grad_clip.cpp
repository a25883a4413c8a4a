// Gradient clipping as torch.nn.utils.clip_grad_norm_ / clip_grad_value_ (torch 1.13,
// torch/nn/utils/clip_grad.py), used by the trainer between backward and optimizer step.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "st/error.h"
#include "st/grad_clip.h"

namespace st::sdk {
namespace {

std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& params) {
    std::vector<at::Tensor> grads;
    for (const auto& p : params) {
        if (p.defined() && p.grad().defined()) grads.push_back(p.grad().detach());
    }
    return grads;
}

at::Tensor total_norm_tensor(const std::vector<at::Tensor>& grads) {
    std::vector<at::Tensor> norms;
    norms.reserve(grads.size());
    for (const auto& g : grads) norms.push_back(at::linalg_vector_norm(g, 2.0).to(at::kFloat).to(at::kCPU));
    return at::linalg_vector_norm(at::stack(norms), 2.0);
}

}  // namespace

double grad_norm(const std::vector<at::Tensor>& params) {
    at::NoGradGuard no_grad;
    auto grads = defined_grads(params);
    if (grads.empty()) return 0.0;
    return total_norm_tensor(grads).item<double>();
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
    at::NoGradGuard no_grad;
    auto grads = defined_grads(params);
    if (grads.empty()) return 0.0;
    at::Tensor total = total_norm_tensor(grads);
    if (max_norm > 0.0) {
        // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, always multiplied.
        at::Tensor coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
        for (auto& g : grads) g.mul_(coef.to(g.device()));
    }
    return total.item<double>();
}

double clip_grad_value(const std::vector<at::Tensor>& params, double clip) {
    at::NoGradGuard no_grad;
    auto grads = defined_grads(params);
    double max_abs = 0.0;
    for (const auto& g : grads) {
        if (g.numel() > 0) max_abs = std::max(max_abs, g.abs().max().item<double>());
    }
    if (clip > 0.0) {
        for (auto& g : grads) g.clamp_(-clip, clip);
    }
    return max_abs;
}

double clip_gradients(const std::vector<at::Tensor>& params, const std::string& method,
                      double max_grad_norm) {
    if (method == "norm") return clip_grad_norm(params, max_grad_norm);
    if (method == "value") return clip_grad_value(params, max_grad_norm);
    fail("grad_clip", "clip", "grad_clip_method '{}' is not known: expected norm or value", method);
}

}  // namespace st::sdk
