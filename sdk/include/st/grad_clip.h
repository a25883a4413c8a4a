// Gradient clipping for the trainer (torch.nn.utils semantics), selected by SimpleTuner's
// `grad_clip_method` (norm | value) and `max_grad_norm` (<= 0 disables). Parameters whose grad is
// undefined are skipped.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace st::sdk {

/// Global L2 norm over all grads (the norm of the per-tensor norms).
double grad_norm(const std::vector<at::Tensor>& params);
/// torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), grads scaled by
/// min(coef, 1). Returns the total norm before clipping. max_norm <= 0 disables clipping and
/// returns the norm anyway (for logging).
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);
/// torch.nn.utils.clip_grad_value_: every grad element clamped to [-clip, clip]. Returns the
/// largest |grad| element before clipping. clip <= 0 disables clipping (still returns the max).
double clip_grad_value(const std::vector<at::Tensor>& params, double clip);
/// grad_clip_method "norm" or "value" (SimpleTuner's names); returns the metric SimpleTuner logs
/// (total norm, or max |grad|). Throws st::Error for another method name.
double clip_gradients(const std::vector<at::Tensor>& params, const std::string& method, double max_grad_norm);

}  // namespace st::sdk
