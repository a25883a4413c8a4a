// MiniDiT: the example family's own small diffusion transformer over Wan VAE latents, conditioned on
// UMT5 prompt embeddings (both from st's family kit). Modules are registered under the checkpoint's
// names, so named_parameters() equals the file keys: patch_embedding, time_linear_1/2, time_proj,
// text_linear_1/2, blocks.N.{scale_shift_table, attn1.to_q/k/v/out, norm2, attn2.*, fc1, fc2},
// scale_shift_table, proj_out. Each block: adaLN-modulated self-attention, cross-attention to the
// text, adaLN-modulated MLP, as in DiT (Peebles & Xie, arXiv 2212.09748) with Wan's shared time
// projection; fixed 3-D sinusoidal positions are added to the patch tokens.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>

#include "st/kit/fields.h"
#include "st/lora.h"

namespace example::minidit {

/// transformer/config.json of a MiniDiT (`_class_name` MiniDiTTransformer3DModel).
struct MiniDiTConfig {
    int64_t in_channels = 4;  ///< the VAE's z_dim
    int64_t out_channels = 4;
    std::array<int64_t, 3> patch_size{1, 2, 2};
    int64_t num_attention_heads = 2;
    int64_t attention_head_dim = 16;
    int64_t num_layers = 2;
    int64_t text_dim = 16;  ///< the text encoder's width (UMT5 d_model)
    int64_t freq_dim = 64;  ///< sinusoidal timestep features
    double eps = 1e-6;

    int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
    /// st::Error naming the first bad field.
    void validate() const;
    /// The config.json declaration (reader, writer, unknown-key errors).
    static const st::kit::FieldTable<MiniDiTConfig>& fields();
};

class MiniDiTAttentionImpl : public torch::nn::Module {
  public:
    explicit MiniDiTAttentionImpl(const MiniDiTConfig& config);
    /// x [B, L, D], context [B, Lc, D] -> [B, L, D]
    at::Tensor forward(const at::Tensor& x, const at::Tensor& context);
    st::sdk::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};

  private:
    int64_t heads_;
};
TORCH_MODULE(MiniDiTAttention);

class MiniDiTBlockImpl : public torch::nn::Module {
  public:
    explicit MiniDiTBlockImpl(const MiniDiTConfig& config);
    /// x [B, L, D], mod [B, 6, D] (shared time projection), text [B, Lt, D] -> [B, L, D]
    at::Tensor forward(const at::Tensor& x, const at::Tensor& mod, const at::Tensor& text);
    at::Tensor scale_shift_table;  ///< [1, 6, D]
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
    MiniDiTAttention attn1{nullptr}, attn2{nullptr};
    st::sdk::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(MiniDiTBlock);

class MiniDiTImpl : public torch::nn::Module {
  public:
    explicit MiniDiTImpl(const MiniDiTConfig& config);
    /// latents [B, C, F, H, W], timesteps [B] (sigma * 1000), text [B, Lt, text_dim] -> velocity
    /// [B, C_out, F, H, W]. F, H, W multiples of the patch size.
    at::Tensor forward(const at::Tensor& latents, const at::Tensor& timesteps, const at::Tensor& text);
    const MiniDiTConfig& config() const { return config_; }

    torch::nn::Conv3d patch_embedding{nullptr};
    st::sdk::Linear time_linear_1{nullptr}, time_linear_2{nullptr}, time_proj{nullptr};
    st::sdk::Linear text_linear_1{nullptr}, text_linear_2{nullptr};
    torch::nn::ModuleList blocks{nullptr};
    at::Tensor scale_shift_table;  ///< [1, 2, D]
    torch::nn::LayerNorm norm_out{nullptr};
    st::sdk::Linear proj_out{nullptr};

  private:
    MiniDiTConfig config_;
};
TORCH_MODULE(MiniDiT);

}  // namespace example::minidit
