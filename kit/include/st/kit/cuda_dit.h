// st's CUDA kernels (kernels/, st/kernels.h) for the DiT blocks that families share, as ATen calls.
// Builds with ST_CUDA run them on CUDA tensors; every other build (and every CPU tensor) keeps the
// ATen formulas, so callers test cuda_dit_available(x) and fall back. Shapes as in the kernels' header.
#pragma once

#include <ATen/core/Tensor.h>

namespace st::kit {

/// True when x is a CUDA tensor of float32 or bfloat16 and this build has st's CUDA kernels.
bool cuda_dit_available(const at::Tensor& x);

/// 3-D RoPE of x [B, L, H, D] with interleaved-pair tables cos/sin [1|B, L, D] (float32), returned in
/// x's dtype. Differentiable: the backward rotates the gradient by the negative angle (same kernel).
at::Tensor rope3d_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

/// Inference (no autograd) modulated non-affine LayerNorm: norm(x) * (1 + scale) + shift with float32
/// statistics, x [B, L, C], shift/scale [B, 1 | L, C] (float32), returned in `out_dtype`.
at::Tensor modulated_layer_norm_cuda(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                                     double eps, at::ScalarType out_dtype);

/// Inference gated residual x + f * gate (float32 math) in x's dtype; gate [B, 1 | L, C] float32.
at::Tensor gated_residual_cuda(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gate);

}  // namespace st::kit
