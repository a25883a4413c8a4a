// The optimizers' fused steps on whichever device the tensors live: CPU tensors run kernels/cpu
// (st/kernels.h) in parallel chunks; CUDA tensors run kernels/cuda on the current stream in builds
// with ST_CUDA. All tensors fp32 (codes uint8), contiguous, on one device; the caller checks that
// with fused_ok().
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>

#include "st/kernels.h"

namespace st::plugins::optim {

/// True when every tensor is contiguous, of its expected dtype, on the first one's device, and that
/// device has fused kernels in this build (CPU always; CUDA with ST_CUDA).
bool fused_ok(std::initializer_list<const at::Tensor*> fp32,
              std::initializer_list<const at::Tensor*> bytes = {});

void fused_adamw(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v,
                 const st_k_adam_scalars& s);
void fused_lion(at::Tensor& p, const at::Tensor& g, at::Tensor& m, const st_k_lion_scalars& s);

struct Q8Tensors {
    at::Tensor codes;   ///< uint8 [n]
    at::Tensor absmax;  ///< float [ceil(n / ST_K_Q8_BLOCK)]
};
void fused_adamw8bit(at::Tensor& p, const at::Tensor& g, Q8Tensors& m, Q8Tensors& v,
                     const st_k_adam_scalars& s);
void fused_lion8bit(at::Tensor& p, const at::Tensor& g, Q8Tensors& m, const st_k_lion_scalars& s);

}  // namespace st::plugins::optim
