// The bidirectional multi-head self-attention of Hugging Face transformers encoders (CLIPAttention,
// Wav2Vec2Attention): q/k/v/out projections with biases, scale head_dim^-0.5, an optional key mask
// (Wav2Vec2 on padded batches). Registered
// under the HF names (q_proj, k_proj, v_proj, out_proj) so checkpoints load by name. Shared by the
// CLIP image encoder (Wan 2.1 I2V) and Wav2Vec2 (S2V).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace st::kit {

class HfSelfAttentionImpl : public torch::nn::Module {
  public:
    /// `hidden` must be a multiple of `num_heads`.
    HfSelfAttentionImpl(int64_t hidden, int64_t num_heads);
    /// [B, T, C] -> [B, T, C]; key_mask [B, T] (true = attend; HF's additive finfo.min mask) or undefined.
    at::Tensor forward(const at::Tensor& x, const at::Tensor& key_mask = {});
    torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

  private:
    int64_t num_heads_;
};
TORCH_MODULE(HfSelfAttention);

}  // namespace st::kit
