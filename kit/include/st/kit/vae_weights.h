// Wan VAE weights: the two on-disk key layouts (diffusers `AutoencoderKLWan` and the original
// Wan-Video `Wan2.1_VAE.pth` names, also used by ComfyUI repackages), the conversion table between
// them, and a writer for randomly initialised VAEs in the diffusers folder layout.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "st/kit/vae_config.h"
#include "st/safetensors.h"

namespace torch::nn {
class Module;
}

namespace st::kit {

enum class WanVAELayout {
    diffusers,  ///< encoder.conv_in, encoder.down_blocks.N, decoder.up_blocks.I.resnets.J, ...
    original,   ///< encoder.conv1, encoder.downsamples.N.residual.K, decoder.upsamples.N, conv1/conv2
};

const char* to_string(WanVAELayout layout);

/// The layout of a checkpoint, from its tensor names (`encoder.conv_in.weight` vs
/// `encoder.conv1.weight`). Throws st::Error naming the source when neither is present.
WanVAELayout detect_wan_vae_layout(const st::sdk::TensorSource& source);

/// Original name of a diffusers key (the table of diffusers' scripts/convert_wan_to_diffusers.py
/// convert_vae() / convert_vae_22() (config.is_residual), inverted). Throws st::Error for a name
/// that is not a Wan VAE parameter.
std::string wan_vae_diffusers_to_original(const std::string& diffusers_key, const WanVAEConfig& config);

/// original name -> diffusers name for every parameter of `module` (an AutoencoderKLWan built
/// from `config`; its names are the diffusers keys).
std::map<std::string, std::string> wan_vae_original_key_map(const torch::nn::Module& module,
                                                            const WanVAEConfig& config);

/// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors` (fp32) of a VAE with
/// random weights drawn from a generator seeded with `seed` (convs: normal, std 1/sqrt(fan_in);
/// biases: std 0.1; norm gammas: 1 + std 0.1 — so every branch contributes). Creates `dir`.
/// Used by `st-host make-model` and tests.
void write_random_wan_vae(const std::filesystem::path& dir, const WanVAEConfig& config, uint64_t seed);

}  // namespace st::kit
