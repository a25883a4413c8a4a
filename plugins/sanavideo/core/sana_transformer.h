// The Sana Video DiT (diffusers SanaVideoTransformer3DModel, src/diffusers/models/transformers/
// transformer_sana_video.py @ 58eb52c080) as LibTorch modules registered under the diffusers names, so
// named_parameters() equals the keys of a diffusers `diffusion_pytorch_model.safetensors`
// (models.md §6.2-6.3).
//
// Block: modulated LayerNorm -> linear self-attention (ReLU kernel; RoPE on q and k in the numerator
// only; fp32 numerator and denominator) -> cross-attention to the caption tokens with the text mask
// (no norm before it, no gate) -> modulated LayerNorm -> GLUMBTempConv (1x1 conv, SiLU, depthwise 3x3,
// GLU, 1x1 conv, temporal (3,1) conv residual over latent frames). Timesteps are per sample [B] or per
// token [B, L] (image-to-video: t = 0 on the first latent frame). LayerNorms, modulation and the gated
// residual adds are computed in fp32 and cast back; every parameter takes the compute dtype (diffusers
// keeps no Sana Video module in fp32).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/sana_config.h"
#include "st/kit/rope3d.h"
#include "st/lora.h"
#include "st/routing.h"
#include "st/tensors.h"

namespace st::plugins::sanavideo {

/// RMSNorm over the last dim with a weight (diffusers RMSNorm, elementwise_affine): variance in fp32.
class SanaRMSNormImpl : public torch::nn::Module {
  public:
    SanaRMSNormImpl(int64_t dim, double eps);
    at::Tensor forward(const at::Tensor& x);
    at::Tensor weight;

  private:
    double eps_;
};
TORCH_MODULE(SanaRMSNorm);

/// attn1: linear attention (diffusers SanaLinearAttnProcessor3_0).
class SanaLinearAttentionImpl : public torch::nn::Module {
  public:
    SanaLinearAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias);
    /// x [B, n, D], rope tables [n, head_dim] (or [B, n, head_dim] once routed) -> [B, n, D].
    at::Tensor forward(const at::Tensor& x, const st::kit::RopeTables& rope);
    st::sdk::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};  ///< LoRA-capable
    torch::nn::ModuleList to_out{nullptr};                        ///< to_out.0 (st::sdk::Linear)
    SanaRMSNorm norm_q{nullptr}, norm_k{nullptr};

  private:
    int64_t heads_;
};
TORCH_MODULE(SanaLinearAttention);

/// attn2: softmax cross-attention to the caption tokens (diffusers SanaAttnProcessor2_0).
class SanaCrossAttentionImpl : public torch::nn::Module {
  public:
    SanaCrossAttentionImpl(int64_t dim, int64_t context_dim, int64_t heads);
    /// x [B, n, D], context [B, Lt, D], key_mask [B, Lt] (1 = attend) or undefined -> [B, n, D].
    at::Tensor forward(const at::Tensor& x, const at::Tensor& context, const at::Tensor& key_mask);
    st::sdk::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
    torch::nn::ModuleList to_out{nullptr};
    SanaRMSNorm norm_q{nullptr}, norm_k{nullptr};

  private:
    int64_t heads_;
};
TORCH_MODULE(SanaCrossAttention);

/// diffusers GLUMBTempConv (norm_type None, no residual), the block's feed-forward.
class SanaGLUMBTempConvImpl : public torch::nn::Module {
  public:
    SanaGLUMBTempConvImpl(int64_t dim, int64_t hidden);
    /// x [B, F, H, W, D] -> [B, F, H, W, D].
    at::Tensor forward(const at::Tensor& x);
    torch::nn::Conv2d conv_inverted{nullptr}, conv_depth{nullptr}, conv_point{nullptr}, conv_temp{nullptr};
};
TORCH_MODULE(SanaGLUMBTempConv);

/// diffusers SanaVideoTransformerBlock.
class SanaVideoTransformerBlockImpl : public torch::nn::Module {
  public:
    explicit SanaVideoTransformerBlockImpl(const SanaVideoTransformerConfig& config);
    /// x [B, L, D] over the full (F, H, W) grid (the feed-forward convolves it); tproj [B, 6, D] or per
    /// token [B, L, 6, D]; context [B, Lt, D]; key_mask [B, Lt] or undefined; rope [L, head_dim].
    at::Tensor forward(const at::Tensor& x, const at::Tensor& tproj, const at::Tensor& context,
                       const at::Tensor& key_mask, const st::kit::RopeTables& rope,
                       const std::array<int64_t, 3>& grid);
    SanaLinearAttention attn1{nullptr};
    SanaCrossAttention attn2{nullptr};
    SanaGLUMBTempConv ff{nullptr};
    at::Tensor scale_shift_table;  ///< [6, D]

  private:
    double eps_;
};
TORCH_MODULE(SanaVideoTransformerBlock);

/// diffusers TimestepEmbedding / PixArtAlphaTextProjection: linear_1 -> act -> linear_2.
class SanaMLPImpl : public torch::nn::Module {
  public:
    SanaMLPImpl(int64_t in_dim, int64_t dim, bool gelu_tanh);
    at::Tensor forward(const at::Tensor& x);
    torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};

  private:
    bool gelu_tanh_;
};
TORCH_MODULE(SanaMLP);

/// diffusers AdaLayerNormSingle: `emb.timestep_embedder` (sinusoid 256 -> D -> D) and `linear` (-> 6D).
class SanaTimeEmbedImpl : public torch::nn::Module {
  public:
    explicit SanaTimeEmbedImpl(int64_t dim);
    std::shared_ptr<torch::nn::Module> emb;
    SanaMLP timestep_embedder{nullptr};  ///< registered as emb.timestep_embedder
    torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(SanaTimeEmbed);

/// Sinusoidal features, cos first (diffusers Timesteps(256, flip_sin_to_cos=True, shift 0)), fp32.
at::Tensor sana_timestep_sinusoid(const at::Tensor& t, int64_t dim);

struct SanaTransformerInputs {
    at::Tensor hidden_states;  ///< [B, C_in, F, H, W]
    /// [B] sigma*1000, or per token [B, L] / [B, 1, F', H', W'] (token order f, h, w).
    at::Tensor timestep;
    at::Tensor encoder_hidden_states;         ///< [B, Lt, caption_channels] (Gemma-2 features)
    at::Tensor encoder_attention_mask;        ///< [B, Lt] 1 = keep, 0 = pad; undefined: every row attended
    std::vector<int64_t> skip_blocks;         ///< skip-layer guidance
    std::vector<st::sdk::TokenRoute> routes;  ///< TREAD (train mode with grad only)
    std::optional<at::Generator> generator;
    at::Tensor force_keep;  ///< [B, L] bool tokens a route must keep; optional
};

class SanaVideoTransformer3DModelImpl : public torch::nn::Module {
  public:
    explicit SanaVideoTransformer3DModelImpl(SanaVideoTransformerConfig config);

    /// -> [B, C_out, F, H, W] in the compute dtype. `intermediates` (optional) receives
    /// patch_embed_out, time_embed_6D, embedded_timestep, caption_tokens, rope_cos/rope_sin and
    /// blocks.N.out [B, L, D].
    at::Tensor forward(const SanaTransformerInputs& inputs, st::sdk::TensorMap* intermediates = nullptr);

    const SanaVideoTransformerConfig& config() const { return config_; }
    /// Casts every parameter to `dtype`.
    void set_compute_dtype(at::ScalarType dtype);
    at::ScalarType compute_dtype() const;
    /// Always false: diffusers keeps no Sana Video parameter in fp32 (the save_model policy hook).
    static bool keeps_fp32(const std::string& parameter_name);
    void set_gradient_checkpointing(bool enabled, int64_t interval = 1) {
        gradient_checkpointing_ = enabled;
        checkpoint_interval_ = interval;
    }

    torch::nn::Conv3d patch_embedding{nullptr};
    SanaTimeEmbed time_embed{nullptr};
    SanaMLP caption_projection{nullptr};
    SanaRMSNorm caption_norm{nullptr};
    torch::nn::ModuleList transformer_blocks{nullptr};
    at::Tensor scale_shift_table;  ///< [2, D]
    torch::nn::Linear proj_out{nullptr};

  private:
    SanaVideoTransformerConfig config_;
    bool gradient_checkpointing_ = false;
    int64_t checkpoint_interval_ = 1;
};
TORCH_MODULE(SanaVideoTransformer3DModel);

}  // namespace st::plugins::sanavideo
