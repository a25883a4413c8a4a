// model.wan@1: WanFamily — load / predict / taps for the trainer, the Encoders for the data
// backend, probe. The pipeline semantics follow diffusers WanPipeline / WanImageToVideoPipeline
// (src/diffusers/pipelines/wan/pipeline_wan*.py @ 58eb52c080) and SimpleTuner's
// models/wan/model.py (prepare_batch conditioning, expert flavours).
#include "wan_family.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>

#include "core/detect.h"
#include "core/ff_chunking.h"
#include "core/kit_names.h"
#include "st/error.h"
#include "st/files.h"
#include "st/kit/tokenizer.h"
#include "st/log.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::TensorMap;

namespace {

constexpr const char* kLog = "model.wan";

}  // namespace

WanFamily::WanFamily() = default;
WanFamily::~WanFamily() = default;

void WanFamily::require_loaded(const char* what) const {
    if (!loaded_) fail(kWanComponentId, what, "{} called before load()", what);
}

const WanCheckpointInfo& WanFamily::checkpoint_info() const {
    require_loaded("checkpoint_info");
    return transformer_.info;
}

// ---- tools ---------------------------------------------------------------------------------------

st::sdk::ProbeResult WanFamily::probe(const fs::path& path) const {
    st::sdk::ProbeResult r;
    try {
        const TransformerLocation loc = locate_transformer(path, "transformer");
        auto source = open_transformer_weights(loc);
        const WanCheckpointInfo info = inspect_transformer(*source);
        std::string where = loc.model_index             ? "diffusers pipeline"
                            : fs::is_regular_file(path) ? "single file"
                                                        : "transformer folder";
        if (loc.model_index && fs::is_directory(path / "transformer_2"))
            where += " with transformer_2 expert";
        r.loadable = true;
        r.variant = fmt::format("{} [{}]", info.summary(), where);
    } catch (const std::exception& e) {
        r.loadable = false;
        r.reason = e.what();
    }
    return r;
}

void WanFamily::make_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    write_wan_model(preset, out, seed);
}

TensorMap WanFamily::forward_component(const fs::path& model, const std::string& component,
                                       const TensorMap& inputs, const st::sdk::ConfigView& config) {
    return run_forward_component(model, component, inputs, config);
}

// ---- training ------------------------------------------------------------------------------------

void WanFamily::set_base_weights(const st::sdk::BaseWeightPlan& plan) {
    base_ = plan;  // load_transformer adds the Wan int8 rules
}

void WanFamily::load(const st::sdk::ModelLoadRequest& request) {
    const auto& config = request.config;
    paths_ = resolve_model_paths(request.path, config);
    flavour_ = config.has("model_flavour") ? config.get_string("model_flavour") : "t2v-480p-1.3b-2.1";
    const WanFlavour& flavour = find_flavour(flavour_);
    dtype_ = request.dtype;
    device_ = request.device;

    TransformerLoadOptions lo;
    lo.subfolder = paths_.transformer_subfolder;
    lo.dtype = dtype_;
    lo.device = device_;
    lo.base = base_;
    transformer_ = load_transformer(paths_.transformer, lo);
    auto& model = transformer_.model;
    const bool checkpointing = request.gradient_checkpointing && request.training;
    model->set_gradient_checkpointing(checkpointing, request.gradient_checkpointing_interval);
    model->set_feed_forward_chunking(resolve_feed_forward_chunking(config, kWanComponentId));
    const bool force21 =
        config.has("wan_force_2_1_time_embedding") && config.get_bool("wan_force_2_1_time_embedding");
    model->set_force_2_1_time_embedding(force21);
    model->train(request.training);
    if (transformer_.info.kind != flavour.kind)
        st::log::warn(kLog,
                      "model_flavour {} expects a {} transformer but the weights are {}; the weights decide",
                      flavour.name, variant_kind_name(flavour.kind), transformer_.info.variant);

    boundary_ratio_ = flavour.boundary_ratio;
    if (paths_.model_index) {
        if (auto b = read_boundary_ratio(*paths_.model_index)) boundary_ratio_ = b;
    }
    peer_.reset();
    const bool other =
        config.has("wan_validation_load_other_stage") && config.get_bool("wan_validation_load_other_stage");
    if (other) {
        if (paths_.peer_subfolder.empty() || !boundary_ratio_) {
            st::log::warn(kLog,
                          "wan_validation_load_other_stage is set but flavour {} / {} has no peer expert",
                          flavour.name, paths_.transformer.string());
        } else {
            TransformerLoadOptions po = lo;
            po.subfolder = paths_.peer_subfolder;
            peer_ = load_transformer(paths_.transformer, po);
            peer_->model->eval();
            for (auto& p : peer_->model->parameters()) p.set_requires_grad(false);
        }
    }
    encoders_.configure(paths_, dtype_, device_, transformer_.info.config.text_dim);
    loaded_ = true;
    st::log::info(
        kLog, "loaded {} flavour {} ({}, {}, gradient_checkpointing {}{}{})", transformer_.info.variant,
        flavour_, c10::toString(dtype_), device_.str(),
        checkpointing ? fmt::format("every {} block(s)", request.gradient_checkpointing_interval) : "off",
        force21 ? ", forced 2.1 time embedding" : "",
        peer_ ? fmt::format(", peer expert {} for t {} {}", paths_.peer_subfolder,
                            paths_.peer_subfolder == "transformer" ? ">=" : "<", *boundary_ratio_ * 1000.0)
              : std::string());
}

torch::nn::Module& WanFamily::trainable() {
    require_loaded("trainable");
    return *transformer_.model;
}

st::sdk::Capability* WanFamily::capability(std::string_view id) {
    if (id == st::sdk::ModelTools::kId) return static_cast<st::sdk::ModelTools*>(this);
    if (id == st::sdk::ImageConditioning::kId) return static_cast<st::sdk::ImageConditioning*>(this);
    if (id == st::sdk::ExpertSchedule::kId) return static_cast<st::sdk::ExpertSchedule*>(this);
    if (id == st::sdk::TapProvider::kId) return static_cast<st::sdk::TapProvider*>(this);
    if (id == st::sdk::TokenRouting::kId) return static_cast<st::sdk::TokenRouting*>(this);
    if (id == st::sdk::BucketAlignment::kId) return static_cast<st::sdk::BucketAlignment*>(this);
    if (id == st::sdk::BaseWeights::kId) return static_cast<st::sdk::BaseWeights*>(this);
    return nullptr;
}

st::sdk::TapGeometry WanFamily::tap_geometry(const std::string& tap,
                                             const std::vector<int64_t>& latent_shape) const {
    // latents [C, F', H', W'] -> tokens (F' / p_t, H' / p_h, W' / p_w), every token a video token
    require_loaded("tap_geometry");
    const auto known = taps();
    if (std::find(known.begin(), known.end(), tap) == known.end())
        fail(kWanComponentId, "tap_geometry", "unknown tap '{}'", tap);
    if (tap == "text_embedder_out")
        fail(kWanComponentId, "tap_geometry", "tap '{}' holds text tokens: it has no video grid", tap);
    if (latent_shape.size() != 4)
        fail(kWanComponentId, "tap_geometry", "latent shape must be [C, F', H', W'], got {} dims",
             latent_shape.size());
    const WanTransformerConfig& cfg = transformer_.info.config;
    st::sdk::TapGeometry g;
    g.hidden_size = cfg.inner_dim();
    for (size_t i = 0; i < 3; ++i) g.grid[i] = latent_shape[i + 1] / cfg.patch_size[i];
    return g;
}

std::vector<std::string> WanFamily::taps() const {
    const int64_t layers = loaded_ ? transformer_.info.config.num_layers : WanTransformerConfig().num_layers;
    std::vector<std::string> t{"patch_embed_out", "text_embedder_out"};
    for (int64_t i = 0; i < layers; ++i) t.push_back(fmt::format("blocks.{}.out", i));
    return t;
}

int64_t WanFamily::routable_blocks() const {
    require_loaded("routable_blocks");
    return transformer_.info.config.num_layers;
}

WanTransformer3DModel& WanFamily::expert_for(const at::Tensor& timesteps) {
    // The peer is only used without gradients (validation): training always runs the flavour's expert.
    if (!peer_ || at::GradMode::is_enabled()) return transformer_.model;
    const double limit = *boundary_ratio_ * 1000.0;
    const bool all_high = timesteps.ge(limit).all().item<bool>();
    const bool all_low = timesteps.lt(limit).all().item<bool>();
    if (!all_high && !all_low)
        fail(kWanComponentId, "predict", "timesteps straddle the expert boundary {} (min {}, max {})", limit,
             timesteps.min().item<double>(), timesteps.max().item<double>());
    const bool main_is_high = paths_.transformer_subfolder == "transformer";
    return (all_high == main_is_high) ? transformer_.model : peer_->model;
}

st::sdk::PredictOutput WanFamily::predict(const st::sdk::PredictInputs& in) {
    // noisy [B, C, F, H, W], timesteps [B] or [B, L] (sigma*1000), prompt_embeds [B, Lt, text_dim]
    // -> velocity [B, C_out, F, H, W]
    require_loaded("predict");
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (!in.noisy.defined() || in.noisy.dim() != 5)
        fail(kWanComponentId, "predict", "noisy must be [B, C, F, H, W], got {}",
             in.noisy.defined() ? c10::str(in.noisy.sizes()) : std::string("undefined"));
    auto cond = [&](const char* name) -> at::Tensor {
        auto it = in.conditioning.find(name);
        return it == in.conditioning.end() ? at::Tensor() : it->second;
    };
    const at::Tensor text = cond("prompt_embeds");
    if (!text.defined())
        fail(kWanComponentId, "predict", "conditioning 'prompt_embeds' [B, L, {}] is missing", cfg.text_dim);

    const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
    at::Tensor x = in.noisy.to(opts);
    const int64_t c = x.size(1);
    if (cfg.in_channels != c) {
        // I2V channel concat (SimpleTuner prepare_batch / diffusers WanImageToVideoPipeline):
        // [noisy (C) | mask (4) | conditioning latents (C)].
        const at::Tensor latents = cond("conditioning_latents");
        if (cfg.in_channels != 2 * c + 4 || !latents.defined())
            fail(kWanComponentId, "predict",
                 "transformer {} takes {} input channels but noisy has {}; I2V models need conditioning "
                 "'conditioning_latents' [B, {}, F, H, W] (and optionally 'conditioning_mask' [B, 4, F, H, "
                 "W])",
                 transformer_.info.variant, cfg.in_channels, c, c);
        at::Tensor mask = cond("conditioning_mask");
        if (!mask.defined()) {
            // First-frame conditioning: 1 on latent frame 0, 0 elsewhere. FLF2V also marks the last pixel
            // frame, which is the 4th of the 4 mask channels of the last latent frame (diffusers'
            // prepare_latents folds the per-pixel-frame mask into [B, 4, F', H, W]).
            mask = at::zeros({x.size(0), 4, x.size(2), x.size(3), x.size(4)}, opts);
            mask.select(2, 0).fill_(1.0);
            if (cfg.pos_embed_seq_len && x.size(2) > 1) mask.select(2, x.size(2) - 1).select(1, 3).fill_(1.0);
        }
        x = at::cat({x, mask.to(opts), latents.to(opts)}, 1);
    }
    WanTransformerInputs wi;
    wi.hidden_states = x;
    wi.timestep = in.timesteps.to(at::TensorOptions().dtype(at::kFloat).device(device_));
    wi.encoder_hidden_states = text.to(opts);
    if (cfg.has_image_branch()) {
        const at::Tensor image = cond("image_embeds");
        if (!image.defined())
            fail(kWanComponentId, "predict",
                 "Wan 2.1 {} transformer needs conditioning 'image_embeds' [B, {}, {}]",
                 cfg.pos_embed_seq_len ? "FLF2V" : "I2V", cfg.pos_embed_seq_len.value_or(257),
                 cfg.image_dim.value_or(0));
        if (cfg.pos_embed_seq_len) {
            // FLF2V: [B, 2L, D] (first | last frame tokens) or diffusers' [2B, L, D] first/last pairs. A
            // [B, L, D] batch of single images must not be folded into pairs of different samples.
            const int64_t len = *cfg.pos_embed_seq_len, batch = x.size(0);
            const bool joined = image.dim() == 3 && image.size(0) == batch && image.size(1) == len;
            const bool pairs = image.dim() == 3 && image.size(0) == 2 * batch && 2 * image.size(1) == len;
            if (!joined && !pairs)
                fail(kWanComponentId, "predict",
                     "FLF2V 'image_embeds' must be [{}, {}, D] (first | last frame tokens) or [{}, {}, D] "
                     "(first/last pairs), got {}",
                     batch, len, 2 * batch, len / 2, c10::str(image.sizes()));
        }
        wi.encoder_hidden_states_image = image.to(opts);
    }
    wi.skip_blocks = in.skip_layers;
    wi.routes = in.routes;
    wi.generator = in.generator;
    // TI2V per-token timesteps: tokens at t = 0 are the conditioned (clean) first frame; TREAD keeps them
    // (SimpleTuner force-keeps the conditioned first-frame tokens).
    if (!in.routes.empty() && wi.timestep.dim() == 2) wi.force_keep = wi.timestep.eq(0.0);
    const auto known = taps();
    for (const auto& t : in.taps)
        if (std::find(known.begin(), known.end(), t) == known.end())
            fail(kWanComponentId, "predict",
                 "unknown tap '{}' (known: patch_embed_out, text_embedder_out, "
                 "blocks.0.out .. blocks.{}.out)",
                 t, cfg.num_layers - 1);
    TensorMap intermediates;
    st::sdk::PredictOutput out;
    out.velocity = expert_for(wi.timestep)->forward(wi, in.taps.empty() ? nullptr : &intermediates);
    for (const auto& t : in.taps) out.taps[t] = intermediates.at(t);
    return out;
}

// ---- encoders ------------------------------------------------------------------------------------

std::string WanFamily::cache_identity() const {
    require_loaded("cache_identity");
    return fmt::format("wan|{}|{}|{}", transformer_.info.variant, encoders_.fingerprint(),
                       c10::toString(dtype_));
}

int WanFamily::bucket_alignment() const {
    std::string flavour = flavour_;
    for (auto& c : flavour) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return std::max(spatial_multiple(), flavour.find("5b") != std::string::npos ? 64 : 32);
}

int WanFamily::spatial_multiple() const {
    // VAE stride (8 for the 2.1 VAE, 16 for 2.2) x the transformer's spatial patch (2).
    if (!loaded_) return 16;
    const int64_t patch = transformer_.info.config.patch_size[1];
    const int64_t stride = encoders_.vae_spatial_stride();
    return static_cast<int>(stride * patch);
}

TensorMap WanFamily::encode_video(const at::Tensor& pixels) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> latents [B, z, 1 + (F-1)/4, H/8, W/8], normalised; I2V
    // transformers (2C + 4 input channels) also get their first-frame conditioning, cached with the
    // latents: conditioning_latents, and for Wan 2.1 I2V the CLIP image_embeds of that frame
    require_loaded("encode_video");
    TensorMap out{{"latents", encoders_.encode_video(pixels)}};
    const WanTransformerConfig& cfg = transformer_.info.config;
    if (cfg.in_channels == 2 * cfg.out_channels + 4 && pixels.dim() == 5) {
        // SimpleTuner / diffusers WanImageToVideoPipeline: VAE(first pixel frame + black frames); FLF2V
        // (WanImageToVideoPipeline with last_image): VAE(first + black frames + the clip's last frame).
        for (auto& [name, t] : encode_first_last(pixels.select(2, 0), pixels.select(2, pixels.size(2) - 1),
                                                 pixels.size(2), "encode_video"))
            out[name] = std::move(t);
    }
    return out;
}

TensorMap WanFamily::encode_text(const std::vector<std::string>& captions) {
    // captions -> prompt_embeds [B, text_len (512), text_dim]: the first seq_len rows, zeros after
    require_loaded("encode_text");
    return {{"prompt_embeds", encoders_.encode_text(captions)}};
}

}  // namespace st::plugins::wan
