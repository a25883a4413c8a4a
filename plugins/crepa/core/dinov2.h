// DINOv2 (facebookresearch/dinov2 DinoVisionTransformer, the CREPA teacher): patch embedding,
// class token, optional register tokens, learned positions resized to the image's patch grid
// (interpolate_pos_encoding: bicubic with scale factors (n + offset) / M, or to the grid size with
// antialiasing for the register variants), pre-norm blocks (attention + LayerScale, an MLP with exact
// GELU or a fused SwiGLU FFN), final LayerNorm. forward_features() returns x_norm_clstoken [B, D]
// and x_norm_patchtokens [B, (H/p)(W/p), D] as upstream. Module names are the torch-hub checkpoint's.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace st::plugins::crepa {

struct DinoConfig {
    int64_t img_size = 518;  ///< the positional table covers (img_size / patch_size)^2 patches
    int64_t patch_size = 14;
    int64_t embed_dim = 1536;
    int64_t depth = 40;
    int64_t num_heads = 24;
    int64_t ffn_hidden = 4096;  ///< MLP hidden width (SwiGLU: the width of one half of w12)
    bool swiglu = true;         ///< ffn_layer "swiglufused" (ViT-g) instead of "mlp"
    bool layer_scale = true;    ///< init_values > 0: ls1/ls2 gammas exist
    int64_t num_register_tokens = 0;
    bool interpolate_antialias = false;
    double interpolate_offset = 0.1;
    double layer_norm_eps = 1e-6;
    /// "dinov2_vitg14 (torch hub .pth)": what was loaded, for logs and cache identities.
    std::string description;
};

/// The positions for an image of h x w pixels: pos_embed [1, 1 + M*M, D] -> [1, 1 + (h/p)(w/p), D]
/// exactly as upstream's interpolate_pos_encoding (which calls dim 2 of the image "w").
at::Tensor interpolate_pos_encoding(const at::Tensor& pos_embed, int64_t h, int64_t w, const DinoConfig& c);

class DinoBlockImpl : public torch::nn::Module {
  public:
    explicit DinoBlockImpl(const DinoConfig& c);
    at::Tensor forward(const at::Tensor& x);

  private:
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    torch::nn::Linear qkv{nullptr}, proj{nullptr};
    torch::nn::Linear fc1{nullptr}, fc2{nullptr};  ///< mlp
    torch::nn::Linear w12{nullptr}, w3{nullptr};   ///< SwiGLU
    at::Tensor ls1, ls2;                           ///< LayerScale gammas [D] (undefined without)
    int64_t heads_;
    bool swiglu_;
};
TORCH_MODULE(DinoBlock);

class DinoV2Impl : public torch::nn::Module {
  public:
    explicit DinoV2Impl(DinoConfig c);
    struct Features {
        at::Tensor cls;    ///< x_norm_clstoken [B, D]
        at::Tensor patch;  ///< x_norm_patchtokens [B, (H/p)(W/p), D]
        at::Tensor pos;    ///< the positions used [1, 1 + (H/p)(W/p), D]
    };
    /// images [B, 3, H, W] (ImageNet-normalised; H, W multiples of patch_size).
    Features forward_features(const at::Tensor& images);
    const DinoConfig& config() const { return config_; }

  private:
    DinoConfig config_;
    torch::nn::Conv2d patch_embed{nullptr};
    at::Tensor cls_token, pos_embed, register_tokens, mask_token;
    torch::nn::ModuleList blocks;
    torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(DinoV2);

/// Loads a DINOv2 teacher from `path`: a torch-hub `.pth` (dinov2_*_pretrain.pth, a plain state dict
/// written by torch.save), a `.safetensors` with the hub's tensor names, or a folder holding either
/// (config.json with the constructor arguments, when present, decides what the weights cannot tell:
/// heads, interpolation). Without config.json the architecture is read from the tensor shapes (heads =
/// embed_dim / 64 as in every hub model; register variants interpolate with antialiasing as the hub
/// builds them). Strict: st::Error naming the file and the missing, unexpected or mis-shaped tensors.
DinoV2 load_dinov2(const std::filesystem::path& path);

/// The architecture of a torch-hub model ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14",
/// "dinov2_vitg14", optionally "_reg"), or "tiny" (2 blocks of width 16, patch 2): st::Error otherwise.
DinoConfig dinov2_preset(const std::string& name);
/// Writes a randomly initialised DINOv2 of `config` as `dir`/model.safetensors (hub names) +
/// config.json (the constructor arguments): a teacher with real shapes for benchmarks and tests.
void save_random_dinov2(const std::filesystem::path& dir, const DinoConfig& config, uint64_t seed);

/// SimpleTuner's crepa_encoder names and aliases ("dinov2_vitg14", "dinov2_g", "dino_v2_s", ...) ->
/// the torch-hub model name; other values are returned unchanged.
std::string resolve_dinov2_name(const std::string& name);
/// The torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints, else
/// $XDG_CACHE_HOME/torch/hub/checkpoints, else ~/.cache/torch/hub/checkpoints.
std::filesystem::path torch_hub_checkpoints();
/// A crepa_encoder value -> the file or folder to load: an existing path as given, else a hub name
/// (after resolve_dinov2_name) found as <hub checkpoints>/<name>_pretrain.pth (registers:
/// dinov2_vitX14_reg -> dinov2_vitX14_reg4_pretrain.pth). st::Error saying where to put the file when
/// it is missing (st downloads nothing), and for encoders st does not have (Qwen-VL).
std::filesystem::path locate_crepa_encoder(const std::string& value);

}  // namespace st::plugins::crepa
