// model.wan_s2v@1: WanS2VFamily — load / predict for the trainer, the Encoders for the data
// backend's caches, probe. The training batch follows the reference trainer (SimpleTuner
// models/wan_s2v/model.py, inventory §5.2) with the upstream audio alignment (models.md §5.5):
// reference image = first clean latent frame, no motion (motion_frames [17, 5], dropped), zero pose,
// 4 video-rate audio frames per latent frame.
#include "s2v_family.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "core/ff_chunking.h"
#include "st/error.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/text.h"

namespace st::plugins::wan_s2v {

using st::sdk::shape_str;

namespace fs = std::filesystem;
using st::sdk::TensorMap;

namespace {

constexpr const char* kLog = "model.wan_s2v";

}  // namespace

int64_t audio_frames_for(int64_t frames) {
    return 4 * (1 + (frames - 1) / 4);
}

WanS2VFamily::WanS2VFamily() = default;
WanS2VFamily::~WanS2VFamily() = default;

void WanS2VFamily::require_loaded(const char* what) const {
    if (!loaded_) fail(kS2VComponentId, what, "{} called before load()", what);
}

const S2VCheckpointInfo& WanS2VFamily::checkpoint_info() const {
    require_loaded("checkpoint_info");
    return transformer_.info;
}

// ---- tools ---------------------------------------------------------------------------------------

st::sdk::ProbeResult WanS2VFamily::probe(const fs::path& path) const {
    st::sdk::ProbeResult r;
    try {
        const S2VTransformerLocation loc = locate_s2v_transformer(path, "transformer");
        const auto source = st::sdk::open_tensor_source(loc.weights);
        std::optional<std::vector<int64_t>> hint;  // injector positions are not in the weights
        if (loc.config_json) hint = WanS2VConfig::from_file(*loc.config_json).audio_inject_layers;
        const S2VCheckpointInfo info = inspect_s2v_transformer(*source, hint);
        r.loadable = true;
        r.variant = fmt::format("{} [{}]", info.summary(),
                                fs::exists(path / "model_index.json") ? "diffusers pipeline"
                                : fs::is_regular_file(path)           ? "single file"
                                                                      : "transformer folder");
    } catch (const std::exception& e) {
        r.loadable = false;
        r.reason = e.what();
    }
    return r;
}

void WanS2VFamily::make_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    write_s2v_model(preset, out, seed);
}

// ---- training ------------------------------------------------------------------------------------

void WanS2VFamily::load(const st::sdk::ModelLoadRequest& request) {
    const auto& config = request.config;
    paths_ = resolve_s2v_paths(request.path, config);
    if (config.has("model_flavour") && config.get_string("model_flavour") != kS2VFlavour)
        fail(kS2VComponentId, "config", "model_flavour '{}' is not a wan_s2v flavour (the only one is {})",
             config.get_string("model_flavour"), kS2VFlavour);
    dtype_ = request.dtype;
    device_ = request.device;

    S2VLoadOptions lo;
    lo.subfolder = paths_.pipeline.transformer_subfolder;
    lo.dtype = dtype_;
    lo.device = device_;
    lo.base = base_;
    transformer_ = load_s2v_transformer(paths_.pipeline.transformer, lo);
    auto& model = transformer_.model;
    const bool checkpointing = request.gradient_checkpointing && request.training;
    model->set_gradient_checkpointing(checkpointing, request.gradient_checkpointing_interval);
    model->set_feed_forward_chunking(
        st::plugins::wan::resolve_feed_forward_chunking(config, kS2VComponentId));
    model->train(request.training);
    encoders_.configure(paths_.pipeline, dtype_, device_, transformer_.info.config.text_dim);
    audio_encoder_.reset();
    loaded_ = true;
    st::log::info(kLog, "loaded {} ({}, {}, gradient_checkpointing {}); audio encoder {}",
                  transformer_.info.summary(), c10::toString(dtype_), device_.str(),
                  checkpointing ? fmt::format("every {} block(s)", request.gradient_checkpointing_interval)
                                : std::string("off"),
                  paths_.audio_encoder.empty() ? std::string("not found") : paths_.audio_encoder.string());
}

torch::nn::Module& WanS2VFamily::trainable() {
    require_loaded("trainable");
    return *transformer_.model;
}

st::sdk::Capability* WanS2VFamily::capability(std::string_view id) {
    if (id == st::sdk::ModelTools::kId) return static_cast<st::sdk::ModelTools*>(this);
    if (id == st::sdk::ImageConditioning::kId) return static_cast<st::sdk::ImageConditioning*>(this);
    if (id == st::sdk::AudioConditioning::kId) return static_cast<st::sdk::AudioConditioning*>(this);
    if (id == st::sdk::TapProvider::kId) return static_cast<st::sdk::TapProvider*>(this);
    if (id == st::sdk::GuidancePolicy::kId) return static_cast<st::sdk::GuidancePolicy*>(this);
    if (id == st::sdk::TokenRouting::kId) return static_cast<st::sdk::TokenRouting*>(this);
    if (id == st::sdk::BucketAlignment::kId) return static_cast<st::sdk::BucketAlignment*>(this);
    if (id == st::sdk::BaseWeights::kId) return static_cast<st::sdk::BaseWeights*>(this);
    return nullptr;
}

int64_t WanS2VFamily::routable_blocks() const {
    require_loaded("routable_blocks");
    return transformer_.info.config.num_layers;
}

TensorMap WanS2VFamily::unconditional(const TensorMap& conditional, const TensorMap& negative_text) const {
    // Upstream Wan S2V (wan/speech2video.py generate): the unconditional pass gets audio_input * 0 and
    // the negative prompt; the reference image latents stay.
    TensorMap m = st::sdk::default_unconditional(conditional, negative_text);
    if (auto it = m.find("audio_embeds"); it != m.end()) it->second = at::zeros_like(it->second);
    return m;
}

st::sdk::TapGeometry WanS2VFamily::tap_geometry(const std::string& tap,
                                                const std::vector<int64_t>& latent_shape) const {
    // latents [C, F', H', W'] -> the noisy video's tokens (F', H' / 2, W' / 2); predict() cuts the
    // reference and motion tokens off block taps
    require_loaded("tap_geometry");
    const auto known = taps();
    if (std::find(known.begin(), known.end(), tap) == known.end())
        fail(kS2VComponentId, "tap_geometry", "unknown tap '{}'", tap);
    if (tap == "text_embedder_out")
        fail(kS2VComponentId, "tap_geometry", "tap '{}' holds text tokens: it has no video grid", tap);
    if (latent_shape.size() != 4)
        fail(kS2VComponentId, "tap_geometry", "latent shape must be [C, F', H', W'], got {} dims",
             latent_shape.size());
    const WanS2VConfig& cfg = transformer_.info.config;
    st::sdk::TapGeometry g;
    g.hidden_size = cfg.inner_dim();
    for (size_t i = 0; i < 3; ++i) g.grid[i] = latent_shape[i + 1] / cfg.patch_size[i];
    return g;
}

std::vector<std::string> WanS2VFamily::taps() const {
    const int64_t layers = loaded_ ? transformer_.info.config.num_layers : WanS2VConfig().num_layers;
    std::vector<std::string> t{"patch_embed_out", "text_embedder_out"};
    for (int64_t i = 0; i < layers; ++i) t.push_back(fmt::format("blocks.{}.out", i));
    return t;
}

st::sdk::PredictOutput WanS2VFamily::predict(const st::sdk::PredictInputs& in) {
    // noisy [B, 16, T, h, w], timesteps [B] (sigma*1000), prompt_embeds [B, Lt, text_dim],
    // audio_embeds [B, L, audio_dim, 4T], image_latents [B, 16, 1, h, w] -> velocity [B, 16, T, h, w]
    require_loaded("predict");
    const WanS2VConfig& cfg = transformer_.info.config;
    if (!in.noisy.defined() || in.noisy.dim() != 5)
        fail(kS2VComponentId, "predict", "noisy must be [B, C, F, H, W], got {}", shape_str(in.noisy));
    auto cond = [&](const char* name) -> at::Tensor {
        auto it = in.conditioning.find(name);
        return it == in.conditioning.end() ? at::Tensor() : it->second;
    };
    const int64_t b = in.noisy.size(0), t = in.noisy.size(2);
    const at::Tensor text = cond("prompt_embeds");
    if (!text.defined())
        fail(kS2VComponentId, "predict", "conditioning 'prompt_embeds' [B, L, {}] is missing", cfg.text_dim);
    const at::Tensor audio = cond("audio_embeds");
    if (!audio.defined() || audio.dim() != 4 || audio.size(0) != b ||
        audio.size(1) != cfg.num_weighted_avg_layers || audio.size(2) != cfg.audio_dim ||
        audio.size(3) != 4 * t)
        fail(kS2VComponentId, "predict",
             "conditioning 'audio_embeds' must be [{}, {}, {}, {}] (wav2vec2 hidden states at the video "
             "rate, 4 "
             "per latent frame), got {}; S2V trains on clips with audio (allow_zero_audio for silent ones)",
             b, cfg.num_weighted_avg_layers, cfg.audio_dim, 4 * t, shape_str(audio));
    const at::Tensor reference = cond("image_latents");
    if (!reference.defined() || reference.dim() != 5 || reference.size(2) != 1 || reference.size(0) != b)
        fail(kS2VComponentId, "predict",
             "conditioning 'image_latents' (the reference image latent [B, 16, 1, h, w]) is missing or has "
             "shape "
             "{}; the data backend caches it with the video latents",
             shape_str(reference));

    const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
    WanS2VInputs wi;
    wi.hidden_states = in.noisy.to(opts);
    wi.timestep = in.timesteps.to(at::TensorOptions().dtype(at::kFloat).device(device_));
    wi.encoder_hidden_states = text.to(opts);
    wi.image_latents = reference.to(opts);
    wi.audio_embeds = audio.to(opts);
    if (const at::Tensor pose = cond("pose_latents"); pose.defined()) wi.pose_latents = pose.to(opts);
    const at::Tensor motion = cond("motion_latents");
    if (motion.defined() && motion.size(2) > 0) {
        // A motion context (continuing a video): the reference pipeline's framing.
        wi.motion_latents = motion.to(opts);
        wi.motion_frames = {73, 19};
        wi.drop_motion_frames = false;
    } else {
        // Training / the first chunk: no motion tokens, audio framed by [17, 5].
        wi.motion_frames = {17, 5};
        wi.drop_motion_frames = true;
    }
    wi.skip_blocks = in.skip_layers;
    wi.routes = in.routes;
    wi.generator = in.generator;
    const auto known = taps();
    for (const auto& name : in.taps)
        if (std::find(known.begin(), known.end(), name) == known.end())
            fail(kS2VComponentId, "predict",
                 "unknown tap '{}' (known: patch_embed_out, text_embedder_out, "
                 "blocks.0.out .. blocks.{}.out)",
                 name, cfg.num_layers - 1);
    TensorMap intermediates;
    st::sdk::PredictOutput out;
    out.velocity = transformer_.model->forward(wi, in.taps.empty() ? nullptr : &intermediates);
    const int64_t video_tokens =
        t * (in.noisy.size(3) / cfg.patch_size[1]) * (in.noisy.size(4) / cfg.patch_size[2]);
    for (const auto& name : in.taps) {
        // Block outputs hold noisy | reference | motion tokens; a tap returns the video tokens.
        at::Tensor tap = intermediates.at(name);
        if (name.rfind("blocks.", 0) == 0) tap = tap.narrow(1, 0, video_tokens);
        out.taps[name] = tap;
    }
    return out;
}

// ---- encoders ------------------------------------------------------------------------------------

Wav2Vec2AudioEncoder& WanS2VFamily::audio_encoder() {
    require_loaded("encode_audio");
    if (!audio_encoder_) {
        if (paths_.audio_encoder.empty())
            fail(kS2VComponentId, "encode_audio",
                 "no Wav2Vec2 audio encoder found for '{}': expected audio_encoder/ (config.json + "
                 "model.safetensors) or wav2vec2-large-xlsr-53-english/ in the model folder, or "
                 "pretrained_audio_encoder_model_name_or_path",
                 paths_.pipeline.root.string());
        audio_encoder_.emplace(Wav2Vec2AudioEncoder::load(paths_.audio_encoder));
        audio_encoder_->model()->to(device_);
        const Wav2Vec2Config& wc = audio_encoder_->config();
        const WanS2VConfig& cfg = transformer_.info.config;
        if (wc.hidden_size != cfg.audio_dim || wc.num_hidden_layers + 1 != cfg.num_weighted_avg_layers)
            fail(kS2VComponentId, "load",
                 "audio encoder {} gives {} hidden states of width {}, but the transformer averages {} "
                 "states of "
                 "width {} (audio_dim)",
                 paths_.audio_encoder.string(), wc.num_hidden_layers + 1, wc.hidden_size,
                 cfg.num_weighted_avg_layers, cfg.audio_dim);
    }
    return *audio_encoder_;
}

std::string WanS2VFamily::cache_identity() const {
    require_loaded("cache_identity");
    return fmt::format("wan_s2v|{}|{}|audio_encoder:{}|{}", transformer_.info.summary(),
                       encoders_.fingerprint(), st::plugins::wan::component_fingerprint(paths_.audio_encoder),
                       c10::toString(dtype_));
}

int WanS2VFamily::spatial_multiple() const {
    // VAE stride (8) x the transformer's spatial patch (2).
    if (!loaded_) return 16;
    return static_cast<int>(encoders_.vae_spatial_stride() * transformer_.info.config.patch_size[1]);
}

TensorMap WanS2VFamily::encode_video(const at::Tensor& pixels) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> latents [B, 16, 1 + (F-1)/4, H/8, W/8] + the reference frame
    require_loaded("encode_video");
    at::Tensor latents = encoders_.encode_video(pixels);
    at::Tensor reference = latents.narrow(2, 0, 1).clone();
    return {{"latents", latents}, {"image_latents", reference}};
}

TensorMap WanS2VFamily::encode_text(const std::vector<std::string>& captions) {
    require_loaded("encode_text");
    return {{"prompt_embeds", encoders_.encode_text(captions)}};
}

TensorMap WanS2VFamily::encode_audio(const at::Tensor& waveform, double fps, int64_t frames) {
    // waveform [B, N] 16 kHz mono -> audio_embeds [B, L, C, 4 * T_latent] (float32, CPU)
    if (waveform.dim() != 2)
        fail(kS2VComponentId, "encode_audio", "waveform must be [B, samples], got {}", shape_str(waveform));
    if (frames < 1 || (frames - 1) % 4 != 0)
        fail(kS2VComponentId, "encode_audio", "a Wan video has 4k+1 frames, got {}", frames);
    Wav2Vec2AudioEncoder& enc = audio_encoder();
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < waveform.size(0); ++i)
        out.push_back(
            enc.encode(waveform[i].to(at::kFloat), fps, frames, audio_frames_for(frames)).to(at::kCPU));
    return {{"audio_embeds", at::stack(out, 0)}};
}

}  // namespace st::plugins::wan_s2v
