// model.wan@1: the option table, where the sub-networks of a model live (pipeline folder,
// component folders, pretrained_* overrides), the feed-forward chunking decision, VAE loading.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "core/umt5_config.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "wan_family.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::ConfigView;

namespace {

constexpr const char* kLog = "model.wan";

std::string cfg_string(const ConfigView& config, const std::string& key, const std::string& def) {
    return config.has(key) ? config.get_string(key) : def;
}

bool is_pipeline(const fs::path& dir) {
    return fs::is_directory(dir) && fs::exists(dir / "model_index.json");
}

// An override path that does not exist is an error (never a download); a hub-looking id gets the
// download hint.
void require_exists(const fs::path& p, const char* key) {
    if (fs::exists(p)) return;
    const std::string s = p.string();
    const bool hub =
        !s.empty() && s.front() != '/' && s.front() != '.' && std::count(s.begin(), s.end(), '/') == 1;
    if (hub)
        fail(kWanComponentId, "config",
             "{} '{}' looks like a Hugging Face hub id, but st does not download models: download it "
             "(e.g. `huggingface-cli download {} --local-dir DIR`) and pass DIR",
             key, s, s);
    fail(kWanComponentId, "config", "{} '{}' does not exist", key, s);
}

// A sub-network of a pipeline: `path/sub` when path is a pipeline (or simply has that folder),
// otherwise `path` itself (a component folder or file).
fs::path component_in(const fs::path& path, const std::string& sub) {
    if (fs::is_directory(path / sub)) return path / sub;
    if (is_pipeline(path)) return {};  // a pipeline without that part: reported by require_*
    return path;
}

}  // namespace

std::vector<st::sdk::OptionSpec> wan_option_specs() {
    using namespace st::sdk;
    std::vector<OptionSpec> specs;
    specs.push_back(
        opt_string("model_flavour", std::string("t2v-480p-1.3b-2.1"),
                   "Wan flavour (SimpleTuner names); picks the transformer subfolder of Wan 2.2 expert "
                   "flavours and their boundary. The weights themselves decide the architecture.",
                   wan_flavour_names()));
    specs.push_back(
        opt_string("pretrained_transformer_model_name_or_path", std::nullopt,
                   "Alternate transformer weights: a pipeline folder, a transformer folder or a single "
                   "original/ComfyUI .safetensors file (local paths only)."));
    specs.push_back(
        opt_string("pretrained_transformer_subfolder", std::string("transformer"),
                   "Subfolder of the transformer inside the (transformer) model path; 'none' when the "
                   "path is the transformer itself."));
    specs.push_back(
        opt_string("pretrained_vae_model_name_or_path", std::nullopt,
                   "VAE override: a pipeline folder (its vae/ is used), a vae folder or a single Wan VAE "
                   ".safetensors file. Unset: the model's vae/."));
    specs.push_back(
        opt_string("pretrained_t5_model_name_or_path", std::nullopt,
                   "UMT5 text encoder override: a pipeline folder (text_encoder/ + tokenizer/), a "
                   "text_encoder folder or a .safetensors file. Unset: the model's text_encoder/."));
    specs.push_back(
        opt_bool("wan_force_2_1_time_embedding", false,
                 "Use the per-sample (token 0) timestep instead of per-token timesteps (Wan 2.1 path)."));
    specs.push_back(
        opt_bool("wan_validation_load_other_stage", false,
                 "Wan 2.2 expert flavours: also load the peer expert for validation and switch at the "
                 "boundary (the peer is frozen and only used without gradients)."));
    specs.push_back(opt_bool("enable_chunked_feed_forward", false,
                             "Run each block's FFN in chunks to save activation memory (output unchanged)."));
    specs.push_back(
        opt_int("feed_forward_chunk_size", std::nullopt,
                "FFN chunk size in tokens; unset: env WAN_FEED_FORWARD_CHUNK_SIZE, else automatic "
                "(batch in 2 when B >= 2, else the sequence in 4)."));
    specs.push_back(
        opt_bool("gradient_checkpointing", true,
                 "Recompute each transformer block in backward instead of storing its activations."));
    for (auto& s : specs) s.group = "model";
    return specs;
}

std::string wan_component_summary() {
    return "Wan 2.1/2.2 video DiT + Wan VAE + UMT5 (make-model presets on disk: tiny ~0.7 MB, small ~0.2 GB, "
           "1.3b ~3.2 GB = real bf16 transformer + real VAE + a narrow 2-layer UMT5, not the 22 GB umt5-xxl)";
}

WanModelPaths resolve_model_paths(const fs::path& model, const ConfigView& config) {
    WanModelPaths p;
    p.root = model;
    const std::string flavour_name = cfg_string(config, "model_flavour", "t2v-480p-1.3b-2.1");
    const WanFlavour& flavour = find_flavour(flavour_name);

    // Transformer: the override path or the model; SimpleTuner's default subfolder "transformer" is
    // replaced by the flavour's (Wan 2.2 experts) when the path is a pipeline.
    const std::string tr_override = cfg_string(config, "pretrained_transformer_model_name_or_path", "");
    if (!tr_override.empty()) require_exists(tr_override, "pretrained_transformer_model_name_or_path");
    p.transformer = tr_override.empty() ? model : fs::path(tr_override);
    std::string sub = cfg_string(config, "pretrained_transformer_subfolder", "transformer");
    if (sub == "none") sub = "";
    if (sub == "transformer" && flavour.subfolder != "transformer" && is_pipeline(p.transformer)) {
        st::log::info(kLog, "model_flavour {}: transformer subfolder '{}' (peer '{}')", flavour.name,
                      flavour.subfolder, flavour.peer_subfolder);
        sub = flavour.subfolder;
    }
    p.transformer_subfolder = sub;
    if (!flavour.peer_subfolder.empty() && is_pipeline(p.transformer))
        p.peer_subfolder = flavour.peer_subfolder;
    if (!tr_override.empty())
        st::log::info(kLog, "transformer from pretrained_transformer_model_name_or_path {} (subfolder '{}')",
                      p.transformer.string(), sub.empty() ? "none" : sub);
    if (is_pipeline(model)) p.model_index = model / "model_index.json";

    // VAE.
    const std::string vae_override = cfg_string(config, "pretrained_vae_model_name_or_path", "");
    if (!vae_override.empty()) {
        require_exists(vae_override, "pretrained_vae_model_name_or_path");
        p.vae = component_in(vae_override, "vae");
        st::log::info(kLog, "VAE from pretrained_vae_model_name_or_path {}", p.vae.string());
    } else if (fs::is_directory(model / "vae")) {
        p.vae = model / "vae";
    } else if (fs::is_directory(model) && fs::exists(model / "config.json")) {
        p.vae = model;  // a vae folder given directly (checked when loaded)
    }

    // Text encoder and tokenizer (the T5 override may be a pipeline holding both).
    const std::string t5_override = cfg_string(config, "pretrained_t5_model_name_or_path", "");
    fs::path te_root = model;
    if (!t5_override.empty()) {
        require_exists(t5_override, "pretrained_t5_model_name_or_path");
        te_root = t5_override;
        st::log::info(kLog, "text encoder from pretrained_t5_model_name_or_path {}", te_root.string());
    }
    if (fs::is_directory(te_root / "text_encoder")) {
        p.text_encoder = te_root / "text_encoder";
    } else if (fs::is_regular_file(te_root) ||
               (fs::is_directory(te_root) && !is_pipeline(te_root) && fs::exists(te_root / "config.json"))) {
        p.text_encoder = te_root;
    }
    // Tokenizer: <root>/tokenizer, a spiece.model beside the encoder, or the model root's tokenizer/.
    for (const fs::path& cand : {te_root / "tokenizer", te_root.parent_path() / "tokenizer",
                                 model / "tokenizer", te_root / "spiece.model"}) {
        if (fs::exists(cand)) {
            p.tokenizer = cand;
            break;
        }
    }
    return p;
}

const fs::path& require_vae_path(const WanModelPaths& paths) {
    if (paths.vae.empty())
        fail(kWanComponentId, "load",
             "no Wan VAE found for '{}': expected a diffusers pipeline folder with vae/ (config.json + "
             "diffusion_pytorch_model.safetensors), a vae folder, or pretrained_vae_model_name_or_path",
             paths.root.string());
    return paths.vae;
}

const fs::path& require_text_encoder_path(const WanModelPaths& paths) {
    if (paths.text_encoder.empty())
        fail(kWanComponentId, "load",
             "no UMT5 text encoder found for '{}': expected a pipeline folder with text_encoder/ "
             "(config.json + "
             "model.safetensors), a text_encoder folder, or pretrained_t5_model_name_or_path",
             paths.root.string());
    return paths.text_encoder;
}

const fs::path& require_tokenizer_path(const WanModelPaths& paths) {
    if (paths.tokenizer.empty())
        fail(kWanComponentId, "load",
             "no UMT5 tokenizer found for '{}': expected tokenizer/spiece.model in the pipeline folder (or "
             "next to "
             "pretrained_t5_model_name_or_path)",
             paths.root.string());
    return paths.tokenizer;
}

WanVAE load_vae(const fs::path& path) {
    if (fs::is_regular_file(path)) {
        st::log::info(kLog, "VAE single file {}: Wan 2.1 VAE config assumed (files carry no config)",
                      path.string());
        return WanVAE::from_file(path, WanVAEConfig::wan21());
    }
    if (!fs::exists(path / "config.json"))
        fail(kWanComponentId, "load",
             "VAE folder '{}' has no config.json (expected the diffusers vae/ layout)", path.string());
    const auto cfg = nlohmann::json::parse(st::sdk::read_file(path / "config.json"), nullptr, false);
    const std::string cls = cfg.is_object() ? cfg.value("_class_name", "AutoencoderKLWan") : "";
    if (cls != "AutoencoderKLWan")
        fail(kWanComponentId, "load",
             "'{}' is not a Wan VAE folder: config.json _class_name is '{}' (expected "
             "AutoencoderKLWan)",
             path.string(), cls);
    return WanVAE::from_directory(path);
}

FeedForwardChunking resolve_feed_forward_chunking(const ConfigView& config) {
    FeedForwardChunking c;
    c.enabled = config.has("enable_chunked_feed_forward") && config.get_bool("enable_chunked_feed_forward");
    if (config.has("feed_forward_chunk_size")) {
        c.chunk_size = config.get_int("feed_forward_chunk_size");
        if (*c.chunk_size <= 0)
            fail(kWanComponentId, "config", "feed_forward_chunk_size must be > 0, got {}", *c.chunk_size);
    } else if (const char* env = std::getenv("WAN_FEED_FORWARD_CHUNK_SIZE"); env != nullptr && *env != '\0') {
        char* end = nullptr;
        const long long v = std::strtoll(env, &end, 10);
        if (end == env || *end != '\0' || v <= 0)
            fail(kWanComponentId, "config",
                 "env WAN_FEED_FORWARD_CHUNK_SIZE must be a positive integer, got '{}'", env);
        c.chunk_size = v;
        st::log::info(kLog, "feed_forward_chunk_size unset: using env WAN_FEED_FORWARD_CHUNK_SIZE={}", v);
    }
    if (c.enabled)
        st::log::info(kLog, "chunked feed-forward on, chunk size {}",
                      c.chunk_size ? std::to_string(*c.chunk_size) : std::string("auto"));
    return c;
}

}  // namespace st::plugins::wan
