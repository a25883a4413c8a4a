// Pipeline path resolution shared by the Wan-family plugins (see model_paths.h).
#include "core/model_paths.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <vector>

#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "st/model_path.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::ConfigView;

namespace {

std::string cfg_string(const ConfigView& config, const std::string& key, const std::string& def) {
    return config.has(key) ? config.get_string(key) : def;
}

const char* log_name(const std::string& component) {
    return component == "model.wan_s2v@1" ? "model.wan_s2v" : "model.wan";
}

}  // namespace

std::vector<st::sdk::OptionSpec> pipeline_option_specs() {
    using namespace st::sdk;
    return {opt_string("pretrained_transformer_model_name_or_path", std::nullopt,
                       "Alternate transformer weights: a pipeline folder, a transformer folder or a single "
                       "original/ComfyUI .safetensors file (local paths only)."),
            opt_string("pretrained_transformer_subfolder", std::string("transformer"),
                       "Subfolder of the transformer inside the (transformer) model path; 'none' when the "
                       "path is the transformer itself."),
            opt_string("pretrained_vae_model_name_or_path", std::nullopt,
                       "VAE override: a pipeline folder (its vae/ is used), a vae folder or a single Wan VAE "
                       ".safetensors file. Unset: the model's vae/."),
            opt_string("pretrained_t5_model_name_or_path", std::nullopt,
                       "UMT5 text encoder override: a pipeline folder (text_encoder/ + tokenizer/), a "
                       "text_encoder folder or a .safetensors file. Unset: the model's text_encoder/.")};
}

bool is_pipeline_folder(const fs::path& dir) {
    return fs::is_directory(dir) && fs::exists(dir / "model_index.json");
}

void require_path_exists(const fs::path& p, const std::string& key, const std::string& component) {
    st::sdk::require_model_path(p, key, component, "config");
}

fs::path component_in(const fs::path& path, const std::string& sub) {
    if (fs::is_directory(path / sub)) return path / sub;
    if (is_pipeline_folder(path)) return {};  // a pipeline without that part: reported by require_*
    return path;
}

WanModelPaths resolve_pipeline_paths(const fs::path& model, const ConfigView& config,
                                     const std::string& component) {
    const char* log = log_name(component);
    WanModelPaths p;
    p.component = component;
    p.root = model;

    const std::string tr_override = cfg_string(config, "pretrained_transformer_model_name_or_path", "");
    if (!tr_override.empty())
        require_path_exists(tr_override, "pretrained_transformer_model_name_or_path", component);
    p.transformer = tr_override.empty() ? model : fs::path(tr_override);
    std::string sub = cfg_string(config, "pretrained_transformer_subfolder", "transformer");
    if (sub == "none") sub = "";
    p.transformer_subfolder = sub;
    if (!tr_override.empty())
        st::log::info(log, "transformer from pretrained_transformer_model_name_or_path {} (subfolder '{}')",
                      p.transformer.string(), sub.empty() ? "none" : sub);
    if (is_pipeline_folder(model)) p.model_index = model / "model_index.json";

    const std::string vae_override = cfg_string(config, "pretrained_vae_model_name_or_path", "");
    if (!vae_override.empty()) {
        require_path_exists(vae_override, "pretrained_vae_model_name_or_path", component);
        p.vae = component_in(vae_override, "vae");
        st::log::info(log, "VAE from pretrained_vae_model_name_or_path {}", p.vae.string());
    } else if (fs::is_directory(model / "vae")) {
        p.vae = model / "vae";
    } else if (fs::is_directory(model) && fs::exists(model / "config.json")) {
        p.vae = model;  // a vae folder given directly (checked when loaded)
    }

    // Text encoder and tokenizer (the T5 override may be a pipeline holding both).
    const std::string t5_override = cfg_string(config, "pretrained_t5_model_name_or_path", "");
    fs::path te_root = model;
    if (!t5_override.empty()) {
        require_path_exists(t5_override, "pretrained_t5_model_name_or_path", component);
        te_root = t5_override;
        st::log::info(log, "text encoder from pretrained_t5_model_name_or_path {}", te_root.string());
    }
    if (fs::is_directory(te_root / "text_encoder")) {
        p.text_encoder = te_root / "text_encoder";
    } else if (fs::is_regular_file(te_root) || (fs::is_directory(te_root) && !is_pipeline_folder(te_root) &&
                                                fs::exists(te_root / "config.json"))) {
        p.text_encoder = te_root;
    }
    // Wan 2.1 I2V: the CLIP vision tower of the pipeline (image_processor/ beside it is read by the loader).
    if (fs::is_directory(model / "image_encoder")) p.image_encoder = model / "image_encoder";
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
        fail(paths.component, "load",
             "no Wan VAE found for '{}': expected a diffusers pipeline folder with vae/ (config.json + "
             "diffusion_pytorch_model.safetensors), a vae folder, or pretrained_vae_model_name_or_path",
             paths.root.string());
    return paths.vae;
}

const fs::path& require_text_encoder_path(const WanModelPaths& paths) {
    if (paths.text_encoder.empty())
        fail(paths.component, "load",
             "no UMT5 text encoder found for '{}': expected a pipeline folder with text_encoder/ "
             "(config.json + model.safetensors), a text_encoder folder, or pretrained_t5_model_name_or_path",
             paths.root.string());
    return paths.text_encoder;
}

const fs::path& require_tokenizer_path(const WanModelPaths& paths) {
    if (paths.tokenizer.empty())
        fail(paths.component, "load",
             "no UMT5 tokenizer found for '{}': expected tokenizer/spiece.model in the pipeline folder (or "
             "next to pretrained_t5_model_name_or_path)",
             paths.root.string());
    return paths.tokenizer;
}

}  // namespace st::plugins::wan
