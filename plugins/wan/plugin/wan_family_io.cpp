// WanFamily's ABI 1.1 methods: LoRA native names, saving a full fine-tune, decoding latents for
// validation, image conditioning for I2V, and freeing the caching encoders.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "core/key_map.h"
#include "core/kit_names.h"
#include "st/error.h"
#include "st/kit/tokenizer.h"
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
    // (+ image_embeds [B, 257, 1280] for Wan 2.1 I2V, [B, 514, 1280] for FLF2V)
    require_loaded("encode_conditioning_image");
    if (image.dim() != 4 || image.size(1) != 3)
        fail(kWanComponentId, "encode_conditioning_image", "image must be [B, 3, H, W], got {}",
             c10::str(image.sizes()));
    if (transformer_.info.config.pos_embed_seq_len)
        st::log::info(
            "model.wan",
            "FLF2V: the conditioning image is used as both the first and the last frame (SimpleTuner's "
            "validation does the same with one image)");
    return encode_first_last(image, image, frames, "encode_conditioning_image");
}

TensorMap WanFamily::encode_first_last(const at::Tensor& first_image, const at::Tensor& last_image,
                                       int64_t frames, const char* what) {
    // first/last [B, 3, H, W] in [-1, 1] -> conditioning_latents [B, z, 1 + (frames - 1) / 4, H / 8, W / 8]
    // (+ image_embeds [B, 257 (x2 for FLF2V), image_dim])
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (cfg.in_channels != 2 * cfg.out_channels + 4)
        fail(kWanComponentId, what,
             "{} is not an image-to-video transformer ({} input channels); it takes no conditioning image",
             transformer_.info.variant, cfg.in_channels);
    const bool flf2v = cfg.pos_embed_seq_len.has_value();
    if (flf2v && frames < 2)
        fail(kWanComponentId, what,
             "FLF2V conditions on a first and a last frame: it needs 2 or more frames, got {}", frames);
    // diffusers WanImageToVideoPipeline.prepare_latents: the image as frame 0, zeros after it; with a
    // last image (FLF2V) that image as the final frame.
    const at::Tensor first = first_image.to(at::kFloat).unsqueeze(2);
    const int64_t blank = frames - 1 - (flf2v ? 1 : 0);
    std::vector<at::Tensor> parts{
        first, at::zeros({first.size(0), 3, blank, first.size(3), first.size(4)}, first.options())};
    if (flf2v) parts.push_back(last_image.to(at::kFloat).unsqueeze(2));
    TensorMap out{{"conditioning_latents", encoders_.encode_video(at::cat(parts, 2))}};
    // Wan 2.1 I2V: the CLIP penultimate hidden states of the image (WanImageToVideoPipeline.encode_image);
    // FLF2V: of both images, as one [B, 2 x 257, D] sequence (first | last).
    if (cfg.has_image_branch()) {
        at::Tensor embeds = encoders_.encode_image(first_image);
        if (flf2v) embeds = at::cat({embeds, encoders_.encode_image(last_image)}, 1);
        out[st::sdk::kConditioningImageEmbeds] = embeds;
    }
    return out;
}

std::vector<st::sdk::SamplingInput> WanFamily::sampling_inputs() const {
    if (!loaded_) return {};
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (cfg.in_channels != 2 * cfg.out_channels + 4) return {};
    return {{cfg.pos_embed_seq_len ? "first and last frame image" : "first-frame image",
             st::sdk::MediaKind::image}};
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
