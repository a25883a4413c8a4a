// The encoders of a Wan-family pipeline (Wan VAE, UMT5 text encoder + tokenizer), loaded on first
// use: a training run with warm caches never reads them. Shared by model.wan@1 and
// model.wan_s2v@1 (the Encoders half of st::sdk::ModelFamily).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clip_vision.h"
#include "core/kit_names.h"
#include "core/model_paths.h"
#include "st/kit/umt5.h"
#include "st/kit/vae.h"

namespace st::kit {
class UMT5Tokenizer;
}  // namespace st::kit

namespace st::plugins::wan {

class WanEncoderSet {
  public:
    WanEncoderSet();
    ~WanEncoderSet();
    WanEncoderSet(WanEncoderSet&&) noexcept;
    WanEncoderSet& operator=(WanEncoderSet&&) noexcept;

    /// Forgets loaded networks. `text_dtype`: the UMT5 compute dtype (the VAE always runs fp32);
    /// `text_dim`: what the transformer expects (a mismatching encoder is an st::Error).
    void configure(WanModelPaths paths, at::ScalarType text_dtype, at::Device device, int64_t text_dim);
    const WanModelPaths& paths() const { return paths_; }

    WanVAE& vae();
    UMT5Encoder& text_encoder();
    UMT5Tokenizer& tokenizer();
    /// The CLIP image encoder of a Wan 2.1 I2V pipeline (image_encoder/); st::Error when absent.
    ClipImageEncoder& image_encoder();

    /// pixels [B, 3, F, H, W] in [-1, 1] -> normalised posterior mean [B, z, F', H/s, W/s] (CPU)
    at::Tensor encode_video(const at::Tensor& pixels);
    /// captions -> prompt_embeds [B, text_len, text_dim] (zero rows after each prompt), CPU
    at::Tensor encode_text(const std::vector<std::string>& captions);
    /// images [B, 3, H, W] in [-1, 1] -> CLIP penultimate hidden states [B, 257, 1280] (CPU, the
    /// transformer's `image_embeds`), as diffusers WanImageToVideoPipeline.encode_image.
    at::Tensor encode_image(const at::Tensor& images);
    /// normalised latents [B, z, F', H', W'] -> pixels [B, 3, F, H, W] in [-1, 1], float32 CPU
    at::Tensor decode(const at::Tensor& latents);

    /// The VAE's spatial compression (8 for the 2.1 VAE, 16 for 2.2), read from its config without
    /// loading weights when possible.
    int64_t vae_spatial_stride() const;
    /// "vae:<hash>|text_encoder:<hash>|tokenizer:<hash>" (see component_fingerprint), plus
    /// "|image_encoder:<hash>" for pipelines with a CLIP image encoder
    std::string fingerprint() const;
    /// Frees the text encoder and tokenizer (reloaded on demand). Returns whether anything was held.
    bool release_text();

  private:
    WanModelPaths paths_;
    at::ScalarType text_dtype_ = at::kFloat;
    at::Device device_ = at::kCPU;
    int64_t text_dim_ = 0;
    std::optional<WanVAE> vae_;
    UMT5Encoder text_encoder_{nullptr};
    std::unique_ptr<UMT5Tokenizer> tokenizer_;
    std::unique_ptr<ClipImageEncoder> image_encoder_;
};

}  // namespace st::plugins::wan
