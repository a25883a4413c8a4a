// model.sanavideo@1: the option table, where each network of a model lives (pipeline folder,
// pretrained_* overrides), the training sigma table and the shipped sampler of scheduler_config.json.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sana_family.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/diffusers_model.h"
#include "st/log.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;
using st::sdk::ConfigView;

namespace {
constexpr const char* kLog = "model.sanavideo";

std::string cfg_string(const ConfigView& config, const std::string& key, const std::string& def) {
    return config.has(key) ? config.get_string(key) : def;
}

void require_exists(const std::string& p, const std::string& key) {
    if (!fs::exists(p)) st::kit::missing_model_path(p, key, kSanaComponentId);
}
}  // namespace

std::vector<st::sdk::OptionSpec> sana_option_specs() {
    using namespace st::sdk;
    std::vector<OptionSpec> specs{
        opt_string("model_flavour", std::string("2b-480p"),
                   "Sana Video flavour (SimpleTuner names): 2b-480p = Efficient-Large-Model/"
                   "SANA-Video_2B_480p_diffusers. The weights decide the architecture.",
                   {"2b-480p"}),
        opt_string(
            "pretrained_transformer_model_name_or_path", std::nullopt,
            "Transformer override: a pipeline folder, a transformer folder or a single file (diffusers or "
            "original layout). Unset: the model's transformer/."),
        opt_string(
            "pretrained_transformer_subfolder", std::string("transformer"),
            "Subfolder of the transformer inside a pipeline folder; 'none' = the path is the transformer."),
        opt_string("pretrained_vae_model_name_or_path", std::nullopt,
                   "VAE override: a pipeline folder (its vae/) or a VAE folder. Unset: the model's vae/."),
        opt_json("sana_complex_human_instruction",
                 "Prefix prompts (not negative prompts) with the Sana Video pipeline's complex human "
                 "instruction, as SimpleTuner does: unset or any text = on (the pipeline's own instruction "
                 "is used), null, \"None\", \"\" or false = off."),
        opt_int("sana_motion_score", std::nullopt,
                "Append ' motion score: N.' to every prompt (not to negative prompts), as SimpleTuner's "
                "Sana Video does; the Sana Video docs use 30. Unset: nothing appended."),
    };
    for (auto& s : specs) s.group = "model";
    return specs;
}

std::string sana_component_summary() {
    return "Sana Video 2B: linear-attention video DiT + Gemma-2 text encoder + Wan 2.1 VAE (make-model "
           "presets "
           "tiny, small, 2b-480p = the real transformer shapes)";
}

bool sana_complex_human_instruction_on(const ConfigView& config) {
    if (!config.has("sana_complex_human_instruction")) return true;
    const auto& j = config.get_json("sana_complex_human_instruction");
    if (j.is_null() || (j.is_boolean() && !j.get<bool>())) return false;
    if (j.is_string()) {
        const std::string s = j.get<std::string>();
        return !(s.empty() || s == "None");
    }
    if (j.is_array()) return !j.empty();
    return true;
}

SanaModelPaths resolve_sana_paths(const fs::path& model, const ConfigView& config) {
    SanaModelPaths p;
    p.root = model;
    p.transformer = model;
    p.transformer_subfolder = cfg_string(config, "pretrained_transformer_subfolder", "transformer");
    if (p.transformer_subfolder == "none") p.transformer_subfolder.clear();
    if (const std::string o = cfg_string(config, "pretrained_transformer_model_name_or_path", "");
        !o.empty()) {
        require_exists(o, "pretrained_transformer_model_name_or_path");
        p.transformer = o;
        st::log::info(kLog, "transformer from pretrained_transformer_model_name_or_path {} (subfolder '{}')",
                      o, p.transformer_subfolder);
    }
    auto part = [&](const char* sub) { return fs::is_directory(model / sub) ? model / sub : fs::path(); };
    p.vae = part("vae");
    if (const std::string o = cfg_string(config, "pretrained_vae_model_name_or_path", ""); !o.empty()) {
        require_exists(o, "pretrained_vae_model_name_or_path");
        p.vae = fs::is_directory(fs::path(o) / "vae") ? fs::path(o) / "vae" : fs::path(o);
        st::log::info(kLog, "VAE from pretrained_vae_model_name_or_path {}", p.vae.string());
    }
    p.text_encoder = part("text_encoder");
    p.tokenizer = part("tokenizer");
    if (fs::is_regular_file(model / "scheduler" / "scheduler_config.json"))
        p.scheduler_config = model / "scheduler" / "scheduler_config.json";
    return p;
}

std::vector<float> sana_training_sigma_table(const fs::path& scheduler_config) {
    // diffusers FlowMatchEulerDiscreteScheduler.__init__ (use_dynamic_shifting false): t = linspace(1, N, N)
    // reversed, sigma = t / N, then the static shift s sigma / (1 + (s - 1) sigma) with the config's `shift`.
    double shift = 1.0;
    int64_t n = 1000;
    if (!scheduler_config.empty()) {
        const auto j = st::sdk::read_json_file(scheduler_config, kSanaComponentId, "load");
        if (j.contains("shift") && j["shift"].is_number()) shift = j["shift"].get<double>();
        if (j.contains("num_train_timesteps") && j["num_train_timesteps"].is_number_integer())
            n = j["num_train_timesteps"].get<int64_t>();
        if (j.value("use_dynamic_shifting", false))
            fail(kSanaComponentId, "load",
                 "{}: use_dynamic_shifting true is not supported for the training schedule",
                 scheduler_config.string());
    }
    if (n < 1 || !(shift > 0))
        fail(kSanaComponentId, "load", "{}: num_train_timesteps {} and shift {} must be positive",
             scheduler_config.string(), n, shift);
    std::vector<float> table(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const float s = static_cast<float>(n - i) / static_cast<float>(n);
        table[static_cast<size_t>(i)] = static_cast<float>(shift * s / (1.0 + (shift - 1.0) * s));
    }
    return table;
}

st::sdk::SamplingDefaults sana_sampling_defaults(const fs::path& scheduler_config) {
    // SanaVideoPipeline.__call__ defaults: guidance 6.0, 50 steps, 81 frames (models.md §6.1, §12.4).
    st::sdk::SamplingDefaults d;
    d.guidance = 6.0;
    d.steps = 50;
    d.frames = 81;
    if (scheduler_config.empty()) {
        d.scheduler = "euler";
        d.sampler.shift = 8.0;
        return d;
    }
    const auto j = st::sdk::read_json_file(scheduler_config, kSanaComponentId, "load");
    const std::string cls = j.value("_class_name", "");
    if (cls == "DPMSolverMultistepScheduler")
        d.scheduler = "dpmsolver++";
    else if (cls == "UniPCMultistepScheduler")
        d.scheduler = "unipc";
    else if (cls == "FlowMatchEulerDiscreteScheduler")
        d.scheduler = "euler";
    else
        fail(kSanaComponentId, "load",
             "{}: scheduler _class_name '{}' is not one st samples with (DPMSolverMultistepScheduler, "
             "UniPCMultistepScheduler, FlowMatchEulerDiscreteScheduler)",
             scheduler_config.string(), cls);
    try {
        d.sampler = st::sdk::SamplerConfig::from_diffusers_json(j);
    } catch (const Error& e) {
        throw e.with_context("while reading " + scheduler_config.string());
    }
    return d;
}

}  // namespace st::plugins::sanavideo
