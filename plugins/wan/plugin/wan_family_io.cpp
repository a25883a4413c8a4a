// WanFamily's ABI 1.1 methods: LoRA native names, saving a full fine-tune, decoding latents for
// validation, image conditioning for I2V, and freeing the caching encoders.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "core/key_map.h"
#include "core/tokenizer.h"
#include "st/error.h"
#include "st/log.h"
#include "wan_family.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::TensorMap;

st::sdk::LoraNameMap WanFamily::lora_name_map() const {
    return [](const std::string& module) { return lora_module_to_native(module).value_or(std::string()); };
}

void WanFamily::save_trainable(const fs::path& dir) {
    require_loaded("save_trainable");
    save_transformer(*transformer_.model, dir, dtype_);
}

std::vector<int64_t> WanFamily::latent_shape(int64_t frames, int64_t height, int64_t width) const {
    require_loaded("latent_shape");
    const int64_t stride = spatial_multiple() / transformer_.info.config.patch_size[1];
    if (frames < 1 || (frames - 1) % 4 != 0 || height % stride != 0 || width % stride != 0)
        fail(kWanComponentId, "latent_shape",
             "a Wan video needs 4k+1 frames and sides that are multiples of {}, got {} frames of {}x{}",
             stride, frames, width, height);
    return {transformer_.info.config.out_channels, 1 + (frames - 1) / 4, height / stride, width / stride};
}

at::Tensor WanFamily::decode_latents(const at::Tensor& latents) {
    // latents [B, z, F', H', W'] (normalised) -> pixels [B, 3, 1 + 4 (F' - 1), 8 H', 8 W'] in [-1, 1]
    require_loaded("decode_latents");
    return encoders_.decode(latents);
}

TensorMap WanFamily::encode_conditioning_image(const at::Tensor& image, int64_t frames) {
    // image [B, 3, H, W] in [-1, 1] -> conditioning_latents [B, z, 1 + (frames - 1) / 4, H / 8, W / 8]
    // (+ image_embeds [B, 257, 1280] for Wan 2.1 I2V)
    require_loaded("encode_conditioning_image");
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (cfg.in_channels != 2 * cfg.out_channels + 4)
        fail(kWanComponentId, "encode_conditioning_image",
             "{} is not an image-to-video transformer ({} input channels); it takes no conditioning image",
             transformer_.info.variant, cfg.in_channels);
    if (image.dim() != 4 || image.size(1) != 3)
        fail(kWanComponentId, "encode_conditioning_image", "image must be [B, 3, H, W], got {}",
             c10::str(image.sizes()));
    // diffusers WanImageToVideoPipeline.prepare_latents: the image as frame 0, zeros after it.
    const at::Tensor first = image.to(at::kFloat).unsqueeze(2);
    at::Tensor video = at::cat(
        {first, at::zeros({image.size(0), 3, frames - 1, image.size(2), image.size(3)}, first.options())}, 2);
    TensorMap out{{"conditioning_latents", encoders_.encode_video(video)}};
    // Wan 2.1 I2V: the CLIP penultimate hidden states of the image (WanImageToVideoPipeline.encode_image).
    if (cfg.has_image_branch()) out["image_embeds"] = encoders_.encode_image(image);
    return out;
}

std::vector<std::string> WanFamily::sampling_inputs() const {
    if (!loaded_) return {};
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (cfg.in_channels == 2 * cfg.out_channels + 4) return {"image"};
    return {};
}

std::optional<double> WanFamily::expert_boundary() const {
    if (!loaded_ || !peer_ || !boundary_ratio_) return std::nullopt;
    return *boundary_ratio_ * 1000.0;
}

void WanFamily::release_encoders() {
    if (encoders_.release_text())
        st::log::info("model.wan", "text encoder released (caches are complete; reloaded on demand)");
}

}  // namespace st::plugins::wan
