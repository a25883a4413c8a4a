// The Wan VAE (diffusers `AutoencoderKLWan`, original Wan-Video `WanVAE_` in wan/modules/vae2_1.py
// and vae2_2.py): loading in both key layouts, chunked causal encode/decode with the feature cache,
// posterior mean/log-variance and the latents mean/std normalisation. The config picks 2.1 (default)
// or 2.2 (is_residual + patch_size 2, WanVAEConfig::wan22(); blocks in vae22.h).
//
// Who calls: the wan plugin (latent caching in the trainer, validation decode, `st-host forward
// --component vae_encode|vae_decode`), Sana-Video (same VAE), CREPA (decode with grads off).
// Everything here may throw st::Error; tensors are kept in the module's dtype (fp32 by default,
// which is what every reference pipeline uses for this VAE).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <optional>

#include "st/kit/vae_config.h"
#include "st/kit/vae_decoder.h"
#include "st/kit/vae_encoder.h"
#include "st/kit/vae_weights.h"
#include "st/safetensors.h"

namespace st::kit {

/// The module tree of `AutoencoderKLWan`: encoder, quant_conv (1x1x1, 2z->2z),
/// post_quant_conv (1x1x1, z->z), decoder. named_parameters() == the diffusers file keys.
class AutoencoderKLWanImpl : public torch::nn::Module {
  public:
    explicit AutoencoderKLWanImpl(const WanVAEConfig& config);

    vae::WanEncoder3d encoder{nullptr};
    vae::WanCausalConv3d quant_conv{nullptr};
    vae::WanCausalConv3d post_quant_conv{nullptr};
    vae::WanDecoder3d decoder{nullptr};
};
TORCH_MODULE(AutoencoderKLWan);

/// Posterior of encode(): a diagonal Gaussian.
struct EncodeResult {
    at::Tensor mean;    ///< [B, z, F, h, w]
    at::Tensor logvar;  ///< [B, z, F, h, w], clamped to [-30, 20] as upstream
    /// The distribution's mode (= mean), what pipelines use for conditioning images.
    const at::Tensor& mode() const { return mean; }
    /// mean + exp(logvar / 2) * eps with eps drawn from `generator` (undefined = global generator).
    at::Tensor sample(const at::Generator& generator = {}) const;
};

class WanVAE {
  public:
    /// Builds a randomly initialised VAE (validates the config; throws st::Error).
    explicit WanVAE(WanVAEConfig config = WanVAEConfig::wan21());

    /// Reads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (or its sharded
    /// `.safetensors.index.json`), the diffusers `vae/` folder layout.
    static WanVAE from_directory(const std::filesystem::path& dir);
    /// A single checkpoint file in either layout (detected from the names), e.g. ComfyUI's
    /// `wan_2.1_vae.safetensors`; the config is not stored in such files, so it is passed in.
    static WanVAE from_file(const std::filesystem::path& file,
                            const WanVAEConfig& config = WanVAEConfig::wan21());

    /// Strict load (every parameter present with the right shape, nothing left over; any on-disk
    /// float dtype converted to the module's). Logs one line. Throws st::Error listing offenders.
    void load(const st::sdk::TensorSource& source, WanVAELayout layout = WanVAELayout::diffusers);

    /// video [B, 3, T, H, W] in [-1, 1], T = 1 + 4k, H and W multiples of s = spatial_compression()
    /// (8; 16 for 2.2) -> posterior over latents [B, z, 1 + (T-1)/4, H/s, W/s]. Chunked: frame 0 alone, then
    /// 4 frames at a time, with the causal feature cache. Differentiable.
    EncodeResult encode(const at::Tensor& video);
    /// (posterior mean - latents_mean) / latents_std: what the trainer caches.
    at::Tensor encode_normalized(const at::Tensor& video);

    /// latents [B, z, F, h, w] (raw, un-normalised) -> video [B, 3, 1 + 4(F-1), s*h, s*w]
    /// clamped to [-1, 1]. Decodes one latent frame at a time with the feature cache, so memory
    /// does not grow with clip length (under a no-grad guard). Differentiable.
    at::Tensor decode(const at::Tensor& latents);
    /// decode(latents * latents_std + latents_mean).
    at::Tensor decode_normalized(const at::Tensor& latents);

    /// (z - latents_mean) / latents_std and its inverse, per channel (dim 1).
    at::Tensor normalize_latents(const at::Tensor& latents) const;
    at::Tensor denormalize_latents(const at::Tensor& latents) const;

    const WanVAEConfig& config() const { return config_; }
    AutoencoderKLWan& module() { return module_; }
    const AutoencoderKLWan& module() const { return module_; }
    /// Moves/casts the parameters (the VAE is meant to stay fp32).
    void to(c10::Device device, c10::ScalarType dtype = c10::kFloat);
    c10::Device device() const;
    c10::ScalarType dtype() const;

  private:
    at::Tensor stats_like(const std::vector<double>& values, const at::Tensor& like) const;

    WanVAEConfig config_;
    AutoencoderKLWan module_{nullptr};
    size_t encoder_slots_ = 0;
    size_t decoder_slots_ = 0;
};

/// A Wan VAE from a diffusers `vae/` folder (config.json + weights; another _class_name than
/// AutoencoderKLWan is refused) or a single file (either layout; the Wan 2.1 config is assumed, as such
/// files carry none, and that is logged). Errors are st::Error(component, "load", ...).
WanVAE load_wan_vae(const std::filesystem::path& path, const std::string& component = "kit.vae");

}  // namespace st::kit
