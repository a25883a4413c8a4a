// The audio path of Wan 2.2 S2V: the causal audio encoder (wav2vec2 hidden-state stack -> per latent
// frame audio tokens + a global audio vector) and the audio injector (AdaLN + cross-attention after
// selected blocks). Submodules carry the diffusers PR #12258 names
// (`condition_embedder.causal_audio_encoder.*`, `audio_injector.*`); facts in models.md §5.4 steps 3, 9.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <map>

#include "core/s2v_config.h"
#include "core/transformer.h"

namespace st::plugins::wan_s2v {

/// Conv1d with replicate padding of kernel-1 frames on the left only (time-causal), registered as
/// `conv` (diffusers/original CausalConv1d). [B, C_in, T] -> [B, C_out, ceil(T / stride)] for k = 3.
class CausalConv1dImpl : public torch::nn::Module {
  public:
    CausalConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride);
    at::Tensor forward(const at::Tensor& x);
    torch::nn::Conv1d conv{nullptr};

  private:
    int64_t kernel_size_;
};
TORCH_MODULE(CausalConv1d);

/// The encoder of CausalAudioEncoder (original auxi_blocks.py MotionEncoder_tc with need_global):
/// conv1_local -> 4 audio tokens per step, shared conv2/conv3 (stride 2 each), LayerNorm(no affine,
/// 1e-6) + SiLU after each conv, a learned padding token appended; the global branch conv1_global ->
/// conv2 -> conv3 -> final_linear. In diffusers conv2/conv3 are nested one level deeper
/// (`conv2.conv.conv.weight`) than conv1_* (`conv1_local.conv.weight`).
class S2VMotionEncoderImpl : public torch::nn::Module {
  public:
    S2VMotionEncoderImpl(int64_t in_dim, int64_t hidden_dim, int64_t num_tokens);
    /// x [B, T, in_dim] -> local [B, T', num_tokens + 1, hidden], global [B, T', 1, hidden] with
    /// T' = ceil(ceil(T / 2) / 2).
    std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x);

    CausalConv1d conv1_local{nullptr}, conv1_global{nullptr};
    CausalConv1d conv2{nullptr}, conv3{nullptr};  ///< the inner modules of `conv2.conv` / `conv3.conv`
    torch::nn::Linear final_linear{nullptr};
    at::Tensor padding_tokens;  ///< [1, 1, 1, hidden]

  private:
    at::Tensor trunk(const at::Tensor& x);  ///< [N, C, T] after conv1 -> [N, T', hidden]
    int64_t hidden_dim_;
    int64_t num_tokens_;
};
TORCH_MODULE(S2VMotionEncoder);

/// diffusers CausalAudioEncoder: SiLU-weighted average over the stacked wav2vec2 hidden states
/// (`weighted_avg.weights` [1, L, 1, 1]) followed by the motion encoder. Kept in float32.
class S2VCausalAudioEncoderImpl : public torch::nn::Module {
  public:
    S2VCausalAudioEncoderImpl(int64_t audio_dim, int64_t num_layers, int64_t out_dim, int64_t num_tokens);
    /// features [B, L, audio_dim, T] -> {local tokens [B, T', 5, D], global [B, T', 1, D]} (float32).
    std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& features);
    at::Tensor weights;  ///< weighted_avg.weights [1, L, 1, 1]
    S2VMotionEncoder encoder{nullptr};
};
TORCH_MODULE(S2VCausalAudioEncoder);

/// diffusers AdaLayerNorm of the injector: shift, scale = chunk(linear(SiLU(g)), 2) (shift first);
/// LayerNorm(D, eps 1e-5, no affine) * (1 + scale) + shift. Note eps 1e-5, not the model's 1e-6.
class S2VAdaLayerNormImpl : public torch::nn::Module {
  public:
    explicit S2VAdaLayerNormImpl(int64_t dim);
    /// x [N, S, D], g [N, D] -> [N, S, D] in x's dtype (norm and modulation in float32).
    at::Tensor forward(const at::Tensor& x, const at::Tensor& g);
    torch::nn::Linear linear{nullptr};  ///< [2D, D]
};
TORCH_MODULE(S2VAdaLayerNorm);

/// diffusers AudioInjector: one WanAttention (`injector.K`, LoRA-capable to_q/to_k/to_v/to_out.0)
/// and one AdaLayerNorm (`injector_adain_layers.K`) per injected block.
class S2VAudioInjectorImpl : public torch::nn::Module {
  public:
    explicit S2VAudioInjectorImpl(const WanS2VConfig& config);
    /// Whether block `block` is followed by an injector; its index K.
    bool has(int64_t block) const { return index_.count(block) > 0; }
    int64_t index_of(int64_t block) const { return index_.at(block); }
    /// x [B, N, D] (the first `noisy_tokens` = F * S are the noisy tokens), audio [B*F, A, D],
    /// global [B*F, D] -> x with the injector's cross-attention output added to the noisy tokens.
    at::Tensor forward(int64_t k, const at::Tensor& x, int64_t noisy_tokens, const at::Tensor& audio,
                       const at::Tensor& global);
    /// The same injection when TREAD routing dropped noisy tokens: x [B, N, D] holds the `kept`
    /// [B, K] noisy tokens (their original positions, S per latent frame) in front. Each kept token
    /// attends to its own frame's A audio tokens with its frame's global modulation, exactly as in
    /// forward(); the other tokens are unchanged.
    at::Tensor forward_routed(int64_t k, const at::Tensor& x, const at::Tensor& kept,
                              int64_t tokens_per_frame, const at::Tensor& audio, const at::Tensor& global);

    torch::nn::ModuleList injector{nullptr};
    torch::nn::ModuleList injector_adain_layers{nullptr};

  private:
    std::map<int64_t, int64_t> index_;  ///< block -> injector index
};
TORCH_MODULE(S2VAudioInjector);

}  // namespace st::plugins::wan_s2v
