// WanEncoderSet (see encoder_set.h).
#include "core/encoder_set.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "core/kit_names.h"
#include "st/error.h"
#include "st/kit/tokenizer.h"
#include "st/kit/umt5_prompts.h"
#include "st/kit/vae_config.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;

WanEncoderSet::WanEncoderSet() = default;
WanEncoderSet::~WanEncoderSet() = default;
WanEncoderSet::WanEncoderSet(WanEncoderSet&&) noexcept = default;
WanEncoderSet& WanEncoderSet::operator=(WanEncoderSet&&) noexcept = default;

void WanEncoderSet::configure(WanModelPaths paths, at::ScalarType text_dtype, at::Device device,
                              int64_t text_dim) {
    paths_ = std::move(paths);
    text_dtype_ = text_dtype;
    device_ = device;
    text_dim_ = text_dim;
    vae_.reset();
    text_encoder_ = UMT5Encoder(nullptr);
    tokenizer_.reset();
    image_encoder_.reset();
}

WanVAE& WanEncoderSet::vae() {
    if (!vae_) {
        vae_.emplace(load_wan_vae(require_vae_path(paths_), paths_.component));
        vae_->to(device_, at::kFloat);  // the Wan VAE stays fp32 in every reference pipeline
        vae_->module()->eval();
    }
    return *vae_;
}

UMT5Encoder& WanEncoderSet::text_encoder() {
    if (!text_encoder_) {
        text_encoder_ = load_umt5_encoder(require_text_encoder_path(paths_), text_dtype_);
        text_encoder_->to(device_);
        text_encoder_->eval();
        if (text_encoder_->config().d_model != text_dim_)
            fail(paths_.component, "load",
                 "text encoder {} has d_model {} but the transformer expects text_dim {}",
                 paths_.text_encoder.string(), text_encoder_->config().d_model, text_dim_);
    }
    return text_encoder_;
}

UMT5Tokenizer& WanEncoderSet::tokenizer() {
    if (!tokenizer_)
        tokenizer_ = std::make_unique<UMT5Tokenizer>(UMT5Tokenizer::load(require_tokenizer_path(paths_)));
    return *tokenizer_;
}

ClipImageEncoder& WanEncoderSet::image_encoder() {
    if (!image_encoder_) {
        if (paths_.image_encoder.empty())
            fail(paths_.component, "load",
                 "the transformer of '{}' takes CLIP image embeddings (Wan 2.1 I2V) but the model has no "
                 "image_encoder/ folder (CLIPVisionModelWithProjection: config.json + model.safetensors)",
                 paths_.root.string());
        // CLIP runs in fp32 like the VAE; its output is cast by the transformer's predict.
        image_encoder_ = std::make_unique<ClipImageEncoder>(
            ClipImageEncoder::load(paths_.image_encoder, at::kFloat, device_));
    }
    return *image_encoder_;
}

at::Tensor WanEncoderSet::encode_image(const at::Tensor& images) {
    // images [B, 3, H, W] in [-1, 1] -> [B, N + 1, hidden] (CPU)
    if (images.dim() != 4 || images.size(1) != 3)
        fail(paths_.component, "encode_image", "images must be [B, 3, H, W], got {}",
             c10::str(images.sizes()));
    return image_encoder().encode(images.to(at::kFloat)).to(at::kCPU);
}

at::Tensor WanEncoderSet::encode_video(const at::Tensor& pixels) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> latents [B, z, 1 + (F-1)/4, H/s, W/s], normalised
    if (pixels.dim() != 5 || pixels.size(1) != 3)
        fail(paths_.component, "encode_video", "pixels must be [B, 3, F, H, W], got {}",
             c10::str(pixels.sizes()));
    WanVAE& v = vae();
    torch::NoGradGuard no_grad;
    return v.encode_normalized(pixels.to(at::TensorOptions().dtype(at::kFloat).device(device_))).to(at::kCPU);
}

at::Tensor WanEncoderSet::encode_text(const std::vector<std::string>& captions) {
    // captions -> prompt_embeds [B, text_len (512), text_dim]: the first seq_len rows, zeros after
    return encode_umt5_prompts(text_encoder(), tokenizer(), captions, device_, paths_.component);
}

at::Tensor WanEncoderSet::decode(const at::Tensor& latents) {
    // latents [B, z, F', H', W'] (normalised) -> pixels [B, 3, 1 + 4 (F' - 1), s H', s W'] in [-1, 1]
    if (latents.dim() != 5)
        fail(paths_.component, "decode_latents", "latents must be [B, C, F, H, W], got {}",
             c10::str(latents.sizes()));
    WanVAE& v = vae();
    if (latents.size(1) != v.config().z_dim)
        fail(paths_.component, "decode_latents", "latents have {} channels but the VAE expects {}",
             latents.size(1), v.config().z_dim);
    torch::NoGradGuard no_grad;
    return v.decode_normalized(latents.to(at::TensorOptions().dtype(at::kFloat).device(device_)))
        .to(at::kCPU);
}

int64_t WanEncoderSet::vae_spatial_stride() const {
    if (vae_) return vae_->config().spatial_compression();
    if (!paths_.vae.empty() && fs::is_directory(paths_.vae) && fs::exists(paths_.vae / "config.json"))
        return WanVAEConfig::from_file(paths_.vae / "config.json").spatial_compression();
    return 8;
}

std::string WanEncoderSet::fingerprint() const {
    std::string f = "vae:" + component_fingerprint(paths_.vae) +
                    "|text_encoder:" + component_fingerprint(paths_.text_encoder) +
                    "|tokenizer:" + component_fingerprint(paths_.tokenizer);
    if (!paths_.image_encoder.empty()) f += "|image_encoder:" + component_fingerprint(paths_.image_encoder);
    return f;
}

bool WanEncoderSet::release_text() {
    const bool held = text_encoder_ || tokenizer_;
    text_encoder_ = UMT5Encoder(nullptr);
    tokenizer_.reset();
    return held;
}

}  // namespace st::plugins::wan
