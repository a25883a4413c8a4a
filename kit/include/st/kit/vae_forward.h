// The Wan VAE as `st-host forward` components, for every family that uses it (Wan, S2V, Sana Video).
// Tensor names follow shared/golden/MANIFEST.md (cases wan_vae, wan_vae22), so a golden
// inputs.safetensors run through a component gives names matching the golden outputs:
//   vae_encode: video<S> [B, 3, T, H, W] -> posterior_mean<S>, posterior_logvar<S>, latents_normalized<S>
//   vae_decode: latents<S> [B, z, F, h, w] (raw) -> decoded<S>
#pragma once

#include <string>

#include "st/kit/vae.h"
#include "st/tensors.h"

namespace st::kit {

/// Whether `component` is one of the two VAE components.
bool is_vae_component(const std::string& component);
/// Runs `component` ("vae_encode" / "vae_decode") on every input named video* / latents*. st::Error
/// (prefixed `owner`) naming the expected inputs when there are none.
sdk::TensorMap run_vae_component(WanVAE& vae, const std::string& component, const sdk::TensorMap& inputs,
                                 const std::string& owner);

}  // namespace st::kit
