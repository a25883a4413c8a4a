// MiniDiTFamily (see family.h).
#include "family.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/kit/diffusers_model.h"
#include "st/kit/umt5_prompts.h"
#include "st/kit/vae_weights.h"
#include "st/log.h"

namespace example::minidit {

namespace fs = std::filesystem;
using st::sdk::TensorMap;

namespace {

st::kit::ModelQuery transformer_query() {
    st::kit::ModelQuery q;
    q.component = kComponentId;
    q.what = "MiniDiT transformer";
    q.config_class = "MiniDiTTransformer3DModel";
    q.pipeline_prefix = "MiniDiT";
    return q;
}

// The pipeline root of `path` (a pipeline folder, or a transformer folder inside one).
fs::path pipeline_root(const fs::path& path) {
    if (fs::exists(path / "model_index.json")) return path;
    if (fs::exists(path.parent_path() / "model_index.json")) return path.parent_path();
    st::fail(kComponentId, "load", "'{}' is not a MiniDiT pipeline folder (no model_index.json)",
             path.string());
}

}  // namespace

MiniDiT load_minidit(const fs::path& path) {
    const st::kit::ModelLocation loc = st::kit::locate_model(path, transformer_query());
    if (!loc.config_json)
        st::fail(kComponentId, "load", "{}: a MiniDiT transformer needs its config.json",
                 loc.weights.string());
    const MiniDiTConfig config =
        MiniDiTConfig::fields().from_json(st::sdk::read_json_file(*loc.config_json, kComponentId),
                                          loc.config_json->string(), [](MiniDiTConfig& c) { c.validate(); });
    auto source = st::kit::open_model_weights(loc, "MiniDiT transformer");
    st::kit::CheckpointFacts facts;
    facts.count(*source);
    facts.variant = fmt::format("minidit (dim {}, {} layers)", config.inner_dim(), config.num_layers);
    MiniDiT model(config);
    st::kit::load_weights(*model, *source, facts, st::kit::KeyMapTable(), kComponentId,
                          "MiniDiT transformer");
    st::log::info("model.minidit", "transformer {}", facts.summary(source->describe()));
    return model;
}

st::sdk::Capability* MiniDiTFamily::capability(std::string_view id) {
    if (id == st::sdk::ModelTools::kId) return static_cast<st::sdk::ModelTools*>(this);
    return nullptr;
}

void MiniDiTFamily::require_loaded(const char* what) const {
    if (!loaded_) st::fail(kComponentId, what, "the model is not loaded (load() first)");
}

void MiniDiTFamily::load(const st::sdk::ModelLoadRequest& request) {
    root_ = pipeline_root(request.path);
    dtype_ = request.dtype;
    device_ = request.device;
    model_ = load_minidit(root_);
    model_->to(device_, dtype_);
    model_->train(request.training);
    vae_.reset();
    text_encoder_ = st::kit::UMT5Encoder(nullptr);
    tokenizer_.reset();
    loaded_ = true;
}

torch::nn::Module& MiniDiTFamily::trainable() {
    require_loaded("trainable");
    return *model_;
}

void MiniDiTFamily::save_trainable(const fs::path& dir) {
    require_loaded("save_trainable");
    st::kit::save_model(*model_, dir, MiniDiTConfig::fields().to_json(model_->config()), dtype_, {},
                        kComponentId);
}

st::sdk::PredictOutput MiniDiTFamily::predict(const st::sdk::PredictInputs& in) {
    require_loaded("predict");
    auto it = in.conditioning.find("prompt_embeds");
    if (it == in.conditioning.end())
        st::fail(kComponentId, "predict", "conditioning 'prompt_embeds' [B, L, {}] is missing",
                 model_->config().text_dim);
    if (!in.skip_layers.empty())
        st::fail(kComponentId, "predict", "MiniDiT cannot skip blocks (skip-layer guidance)");
    const auto opts = at::TensorOptions().dtype(dtype_).device(device_);
    st::sdk::PredictOutput out;
    out.velocity = model_->forward(in.noisy.to(opts), in.timesteps.to(device_), it->second.to(opts));
    return out;
}

std::vector<int64_t> MiniDiTFamily::latent_shape(int64_t frames, int64_t height, int64_t width) const {
    require_loaded("latent_shape");
    const int64_t s = spatial_multiple() / model_->config().patch_size[1];
    return {model_->config().in_channels, 1 + (frames - 1) / 4, height / s, width / s};
}

st::kit::WanVAE& MiniDiTFamily::vae() {
    if (!vae_) {
        vae_.emplace(st::kit::load_wan_vae(root_ / "vae", kComponentId));
        vae_->to(device_, at::kFloat);  // the Wan VAE runs in fp32
        vae_->module()->eval();
    }
    return *vae_;
}

st::kit::UMT5Encoder& MiniDiTFamily::text_encoder() {
    if (!text_encoder_) {
        text_encoder_ = st::kit::load_umt5_encoder(root_ / "text_encoder", dtype_);
        text_encoder_->to(device_);
        text_encoder_->eval();
    }
    return text_encoder_;
}

st::kit::UMT5Tokenizer& MiniDiTFamily::tokenizer() {
    if (!tokenizer_)
        tokenizer_ =
            std::make_unique<st::kit::UMT5Tokenizer>(st::kit::UMT5Tokenizer::load(root_ / "tokenizer"));
    return *tokenizer_;
}

std::string MiniDiTFamily::cache_identity() const {
    require_loaded("cache_identity");
    return fmt::format("minidit|vae:{}|text:{}|tok:{}|{}", st::kit::component_fingerprint(root_ / "vae"),
                       st::kit::component_fingerprint(root_ / "text_encoder"),
                       st::kit::component_fingerprint(root_ / "tokenizer"), c10::toString(dtype_));
}

int MiniDiTFamily::spatial_multiple() const {
    // VAE stride 8 (Wan 2.1 VAE) x the patch size
    return static_cast<int>(8 * (loaded_ ? model_->config().patch_size[1] : 2));
}

TensorMap MiniDiTFamily::encode_video(const at::Tensor& pixels) {
    // pixels [B, 3, F, H, W] in [-1, 1] -> latents [B, z, 1 + (F - 1) / 4, H / 8, W / 8], normalised
    require_loaded("encode_video");
    torch::NoGradGuard no_grad;
    return {{"latents", vae().encode_normalized(pixels.to(at::kFloat).to(device_)).to(at::kCPU)}};
}

TensorMap MiniDiTFamily::encode_text(const std::vector<std::string>& captions) {
    require_loaded("encode_text");
    at::Tensor embeds =
        st::kit::encode_umt5_prompts(text_encoder(), tokenizer(), captions, device_, kComponentId);
    if (embeds.size(2) != model_->config().text_dim)
        st::fail(kComponentId, "encode_text",
                 "the text encoder gives width {} but the transformer expects text_dim {}", embeds.size(2),
                 model_->config().text_dim);
    return {{"prompt_embeds", embeds}};
}

at::Tensor MiniDiTFamily::decode_latents(const at::Tensor& latents) {
    require_loaded("decode_latents");
    torch::NoGradGuard no_grad;
    return vae().decode_normalized(latents.to(at::kFloat).to(device_)).to(at::kCPU);
}

void MiniDiTFamily::release_encoders() {
    text_encoder_ = st::kit::UMT5Encoder(nullptr);
    tokenizer_.reset();
}

st::sdk::ProbeResult MiniDiTFamily::probe(const fs::path& path) const {
    try {
        const auto loc = st::kit::locate_model(path, transformer_query());
        return {true, "minidit (" + loc.weights.filename().string() + ")", ""};
    } catch (const std::exception& e) {
        return {false, "", e.what()};
    }
}

void MiniDiTFamily::make_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    if (preset != "tiny") st::fail(kComponentId, "make_model", "unknown preset '{}' (tiny)", preset);
    fs::create_directories(out);
    // Tokenizer first: the text encoder's vocabulary must cover its ids.
    const fs::path spm = st::kit::train_tiny_tokenizer(out / "tokenizer", 200, static_cast<uint32_t>(seed));
    st::kit::UMT5Config te = st::kit::UMT5Config::tiny();
    te.vocab_size = (st::kit::UMT5Tokenizer::load(spm).vocab_size() + 63) / 64 * 64;
    st::kit::write_random_umt5(out / "text_encoder", te, seed + 1);
    const st::kit::WanVAEConfig vae = st::kit::WanVAEConfig::tiny();
    st::kit::write_random_wan_vae(out / "vae", vae, seed + 2);
    MiniDiTConfig config;
    config.in_channels = config.out_channels = vae.z_dim;
    config.text_dim = te.d_model;
    MiniDiT model(config);
    st::kit::randomize_parameters(*model, seed);
    st::kit::save_model(*model, out / "transformer", MiniDiTConfig::fields().to_json(config), at::kFloat, {},
                        kComponentId);
    st::sdk::write_file_atomic(out / "model_index.json",
                               nlohmann::json{{"_class_name", "MiniDiTPipeline"},
                                              {"transformer", {"st-example", "MiniDiTTransformer3DModel"}},
                                              {"vae", {"diffusers", "AutoencoderKLWan"}},
                                              {"text_encoder", {"transformers", "UMT5EncoderModel"}},
                                              {"tokenizer", {"transformers", "T5Tokenizer"}}}
                                   .dump(2));
    st::log::info("model.minidit", "make-model tiny: wrote {}", out.string());
}

TensorMap MiniDiTFamily::forward_component(const fs::path& model, const std::string& component,
                                           const TensorMap& inputs, const st::sdk::ConfigView&) {
    // transformer: hidden_states [B, C, F, H, W], timestep [B], encoder_hidden_states [B, L, text_dim] -> out
    if (component != "transformer")
        st::fail(kComponentId, "forward", "unknown component '{}' (transformer)", component);
    auto need = [&](const char* name) -> const at::Tensor& {
        auto it = inputs.find(name);
        if (it == inputs.end()) st::fail(kComponentId, "forward", "input tensor '{}' is missing", name);
        return it->second;
    };
    MiniDiT net = load_minidit(model);
    net->eval();
    torch::NoGradGuard no_grad;
    return {{"out", net->forward(need("hidden_states"), need("timestep"), need("encoder_hidden_states"))}};
}

}  // namespace example::minidit
