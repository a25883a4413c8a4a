#include "core/crepa.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>

#include "st/error.h"
#include "st/log.h"

namespace st::plugins::crepa {

namespace fs = std::filesystem;
namespace sdk = st::sdk;

namespace {

constexpr const char* kComponent = "reg.crepa@1";
constexpr int kFeatureFormat = 1;

std::string block_tap(int64_t block) {
    return fmt::format("blocks.{}.out", block);
}

int64_t count_blocks(const std::map<std::string, int64_t>& tap_dims) {
    int64_t n = 0;
    while (tap_dims.count(block_tap(n))) ++n;
    return n;
}

}  // namespace

// ---- cached teacher features ----------------------------------------------------------------------

CrepaFeatures::CrepaFeatures(fs::path encoder, int64_t image_size, int64_t frames_batch)
    : path_(std::move(encoder)), image_size_(image_size), frames_batch_(frames_batch) {}

const DinoConfig& CrepaFeatures::teacher() {
    if (!model_) model_ = load_dinov2(path_);
    return model_->config();
}

std::string CrepaFeatures::identity() const {
    // The teacher file (path, size, modification time), the image size and the frame selection.
    std::error_code ec;
    fs::path file = path_;
    if (fs::is_directory(path_)) file = path_ / ".";
    const auto size = fs::is_regular_file(path_, ec) ? fs::file_size(path_, ec) : 0;
    const auto time = fs::last_write_time(path_, ec).time_since_epoch().count();
    return fmt::format("crepa-features/{}|{}|{}|{}|size={}|frames=latent-linspace", kFeatureFormat,
                       fs::absolute(path_).lexically_normal().string(), size, time, image_size_);
}

sdk::TensorMap CrepaFeatures::encode(const at::Tensor& pixels, const sdk::TensorMap& encoded) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> features [B, T, N, D] of the frames at linspace(0, F-1, F')
    torch::NoGradGuard no_grad;
    const DinoConfig& c = teacher();
    if (image_size_ % c.patch_size != 0)
        fail(kComponent, "cache",
             "crepa_encoder_image_size {} is not a multiple of the teacher's patch size {}", image_size_,
             c.patch_size);
    auto it = encoded.find("latents");
    if (it == encoded.end()) fail(kComponent, "cache", "the model's encode_video() gave no 'latents'");
    const int64_t b = pixels.size(0), frames = pixels.size(2);
    const int64_t t = std::min(frames, it->second.size(2));
    const at::Tensor idx = at::linspace(0, static_cast<double>(frames - 1), t, at::kFloat).to(at::kLong);
    at::Tensor x = pixels.index_select(2, idx)
                       .permute({0, 2, 1, 3, 4})
                       .reshape({b * t, 3, pixels.size(3), pixels.size(4)});
    x = ((x.to(at::kFloat) + 1.0) * 0.5).clamp(0.0, 1.0);
    x = at::upsample_bilinear2d(x, {image_size_, image_size_}, false);
    const at::Tensor mean = at::tensor({0.485, 0.456, 0.406}, at::kFloat).view({1, 3, 1, 1});
    const at::Tensor std = at::tensor({0.229, 0.224, 0.225}, at::kFloat).view({1, 3, 1, 1});
    x = (x - mean) / std;
    const int64_t chunk = frames_batch_ > 0 ? frames_batch_ : b * t;
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < b * t; i += chunk)
        out.push_back(model_->forward_features(x.slice(0, i, std::min(i + chunk, b * t))).patch);
    const at::Tensor tokens = at::cat(out, 0);
    return {{kFeatures, tokens.reshape({b, t, tokens.size(1), tokens.size(2)}).to(at::kHalf).contiguous()}};
}

// ---- the regularizer -------------------------------------------------------------------------------

CrepaRegularizer::CrepaRegularizer(const sdk::RegularizerInit& init)
    : s_(read_crepa_settings(init.config)), schedule_(s_) {
    // The teacher first (a missing file is the likelier mistake), then the blocks.
    if (s_.source == FeatureSource::encoder) {
        features_ = std::make_shared<CrepaFeatures>(locate_crepa_encoder(s_.encoder), s_.encoder_image_size,
                                                    s_.encoder_frames_batch_size);
        const int64_t patch = features_->teacher().patch_size;
        if (s_.encoder_image_size % patch != 0)
            fail(kComponent, "setup",
                 "crepa_encoder_image_size {} is not a multiple of the teacher's patch size {}",
                 s_.encoder_image_size, patch);
    }
    const int64_t blocks = count_blocks(init.tap_dims);
    if (blocks == 0)
        fail(kComponent, "setup",
             "the model offers no block taps (blocks.N.out): CREPA cannot align anything");
    if (s_.block_index < 0 || s_.block_index >= blocks)
        fail(kComponent, "setup", "crepa_block_index {} is outside the model's blocks 0..{}", s_.block_index,
             blocks - 1);
    tap_ = block_tap(s_.block_index);
    const int64_t hidden = init.tap_dims.at(tap_);
    int64_t target = 0;
    std::string teacher;
    if (s_.source == FeatureSource::backbone) {
        const int64_t tb = s_.teacher_block_index.value_or(blocks - 1);
        if (tb < 0 || tb >= blocks)
            fail(kComponent, "setup", "crepa_teacher_block_index {} is outside the model's blocks 0..{}", tb,
                 blocks - 1);
        teacher_tap_ = block_tap(tb);
        target = init.tap_dims.at(teacher_tap_);
        teacher = fmt::format("the model's own block {} (detached)", tb);
    } else {
        const DinoConfig& c = features_->teacher();
        target = c.embed_dim;
        teacher = c.description + fmt::format(" at {}x{}, features cached per clip", s_.encoder_image_size,
                                              s_.encoder_image_size);
    }
    // Projector LayerNorm(D) -> Linear(D, D_teacher) in fp32, Linear initialised as nn.Linear
    // (uniform +-1/sqrt(D) for weight and bias) from the run's seed.
    projector_ = std::make_shared<torch::nn::SequentialImpl>();
    projector_->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden})));
    torch::nn::Linear linear(hidden, target);
    {
        torch::NoGradGuard no_grad;
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(init.seed ^ 0x43524550415ULL);
        const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
        linear->weight.uniform_(-bound, bound, gen);
        linear->bias.uniform_(-bound, bound, gen);
    }
    projector_->push_back(linear);
    projector_->to(init.device, at::kFloat);
    st::log::info(kComponent,
                  "CREPA on {} (hidden {} -> {}), teacher {}; weight {} ({} schedule, warmup {}), neighbours "
                  "d={} tau={}{}",
                  tap_, hidden, target, teacher, s_.lambda,
                  s_.schedule == LambdaSchedule::constant ? "constant" : "decaying", s_.warmup_steps,
                  s_.adjacent_distance, s_.adjacent_tau, s_.cumulative_neighbors ? " (cumulative)" : "");
}

std::vector<std::string> CrepaRegularizer::taps() const {
    if (teacher_tap_.empty() || teacher_tap_ == tap_) return {tap_};
    return {tap_, teacher_tap_};
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> CrepaRegularizer::modules() {
    return {{"projector", projector_}};
}

at::Tensor CrepaRegularizer::video_tokens(const at::Tensor& tap, const sdk::TapGeometry& g) {
    const int64_t n = g.grid[0] * g.grid[1] * g.grid[2];
    if (tap.dim() != 3 || tap.size(1) < g.video_offset + n)
        fail(kComponent, "step", "tap of shape {} cannot hold {} video tokens from offset {}",
             c10::str(tap.sizes()), n, g.video_offset);
    return tap.slice(1, g.video_offset, g.video_offset + n)
        .reshape({tap.size(0), g.grid[0], g.grid[1] * g.grid[2], tap.size(2)});
}

sdk::RegularizerOutput CrepaRegularizer::compute(const sdk::RegularizerInputs& in) {
    if (s_.lambda == 0.0) return {};  // SimpleTuner returns before anything, its EMA included
    auto tap = in.taps.find(tap_);
    auto geo = in.geometry.find(tap_);
    if (tap == in.taps.end() || geo == in.geometry.end())
        fail(kComponent, "step", "the model returned no '{}' activations (or no geometry for them)", tap_);
    const sdk::TapGeometry& g = geo->second;
    const Grid pgrid{g.grid[1], g.grid[2]};
    const at::Tensor projected = projector_->forward(video_tokens(tap->second, g).to(at::kFloat));
    at::Tensor teacher;
    Grid fgrid{};
    if (features_) {
        auto f = in.batch.find(kFeatures);
        if (f == in.batch.end())
            fail(kComponent, "step",
                 "the batch carries no cached CREPA features ('{}'): the data backend did not "
                 "cache them",
                 kFeatures);
        teacher = f->second.to(projected.device()).to(at::kFloat);
        const int64_t side =
            static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(teacher.size(2)))));
        fgrid = {side, side};
    } else {
        auto t = in.taps.find(teacher_tap_);
        if (t == in.taps.end())
            fail(kComponent, "step", "the model returned no '{}' activations", teacher_tap_);
        teacher = video_tokens(t->second, in.geometry.at(teacher_tap_)).detach().to(at::kFloat);
        fgrid = pgrid;
    }
    const Alignment a = crepa_alignment(projected, pgrid, teacher, fgrid, s_);
    const double weight = schedule_.weight(in.step, in.total_steps, a.alignment);
    sdk::RegularizerOutput out;
    out.metrics["crepa_alignment_score"] = a.alignment;
    out.metrics["crepa_similarity_self"] = a.self_similarity;
    out.metrics["crepa_weight"] = weight;
    out.metrics["crepa_cutoff"] = weight == 0.0 ? 1.0 : 0.0;
    if (auto ema = schedule_.similarity_ema()) out.metrics["crepa_alignment_score_ema"] = *ema;
    if (weight != 0.0 && s_.lambda != 0.0) out.terms["crepa_loss"] = -a.score * weight;
    return out;
}

}  // namespace st::plugins::crepa
