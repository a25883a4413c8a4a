// reg.crepa@1: CREPA as a st regularizer. The teacher (DINOv2) sees each training clip once, when the
// data backend caches it (CrepaFeatures: the frames matching the latent frames, resized to
// crepa_encoder_image_size, ImageNet-normalised -> x_norm_patchtokens, stored in float16); every step
// projects the tapped hidden state (LayerNorm -> Linear, fp32, trained in its own parameter group) and
// aligns it with those features (crepa_math.h). crepa_feature_source backbone takes the model's own
// block crepa_teacher_block_index (detached) as the teacher instead, with no cache.
#pragma once

#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <string>
#include <vector>

#include "core/crepa_config.h"
#include "core/crepa_math.h"
#include "core/dinov2.h"
#include "st/regularizer.h"

namespace st::plugins::crepa {

/// The cached teacher features ("crepa.features" [B, T, N, D_enc] float16 on a square N = g*g grid).
class CrepaFeatures final : public st::sdk::SampleFeatureEncoder {
  public:
    CrepaFeatures(std::filesystem::path encoder, int64_t image_size, int64_t frames_batch);
    std::string name() const override { return "crepa"; }
    std::string identity() const override;
    st::sdk::TensorMap encode(const at::Tensor& pixels, const st::sdk::TensorMap& encoded) override;
    /// Loads the teacher now (the first encode() would): its config, for the projector's width.
    const DinoConfig& teacher();

  private:
    std::filesystem::path path_;
    int64_t image_size_, frames_batch_;
    DinoV2 model_{nullptr};
};

/// The batch tensor holding the cached features.
inline constexpr const char* kFeatures = "crepa.features";

class CrepaRegularizer final : public st::sdk::Regularizer {
  public:
    explicit CrepaRegularizer(const st::sdk::RegularizerInit& init);
    std::vector<std::string> taps() const override;
    std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> modules() override;
    std::shared_ptr<st::sdk::SampleFeatureEncoder> sample_features() override { return features_; }
    st::sdk::RegularizerOutput compute(const st::sdk::RegularizerInputs& inputs) override;
    nlohmann::json state() const override { return schedule_.state(); }
    void restore(const nlohmann::json& state) override { schedule_.restore(state); }

  private:
    /// tap [B, L, D] -> its video tokens [B, F', H'*W', D].
    static at::Tensor video_tokens(const at::Tensor& tap, const st::sdk::TapGeometry& g);

    CrepaSettings s_;
    std::string tap_, teacher_tap_;
    std::shared_ptr<CrepaFeatures> features_;
    std::shared_ptr<torch::nn::SequentialImpl> projector_;
    CrepaSchedule schedule_;
};

}  // namespace st::plugins::crepa
