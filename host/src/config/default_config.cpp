#include "config/default_config.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "st/error.h"
#include "st/files.h"

namespace st::host {

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
    const size_t a = s.find_first_not_of(" \t\r\n");
    if (a == std::string::npos) return {};
    return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

std::string unquote(std::string v) {
    if (v.size() >= 2 && ((v.front() == '"' && v.back() == '"') || (v.front() == '\'' && v.back() == '\'')))
        v = v.substr(1, v.size() - 2);
    return v;
}

std::string join_words(const std::string& v) {
    std::istringstream in(v);
    std::string word, out;
    while (in >> word) out += (out.empty() ? "" : " ") + word;
    return out;
}

std::string env_or(std::initializer_list<const char*> names, const std::string& fallback) {
    for (const char* n : names)
        if (const char* v = std::getenv(n); v != nullptr && *v != '\0') return v;
    return fallback;
}

bool is_file(const fs::path& p) {
    std::error_code ec;
    return fs::is_regular_file(p, ec);
}

}  // namespace

std::map<std::string, std::string> parse_config_env(const fs::path& file,
                                                    std::vector<std::string>* warnings) {
    std::map<std::string, std::string> out;
    if (!is_file(file)) return out;
    std::istringstream in(sdk::read_file(file));
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        line = trim(line);
        if (line.empty() || line[0] == '#') continue;
        if (line.rfind("export ", 0) == 0) line = trim(line.substr(7));
        if (const size_t plus = line.find("+="); plus != std::string::npos) {
            const std::string key = trim(line.substr(0, plus));
            const std::string value = join_words(unquote(trim(line.substr(plus + 2))));
            std::string& slot = out[key];
            slot += (slot.empty() || value.empty() ? "" : " ") + value;
            continue;
        }
        const size_t eq = line.find('=');
        if (eq == std::string::npos) {
            if (warnings)
                warnings->push_back(fmt::format("{}:{}: skipped (not K=V): {}", file.string(), number, line));
            continue;
        }
        out[trim(line.substr(0, eq))] = join_words(unquote(trim(line.substr(eq + 1))));
    }
    return out;
}

DefaultConfig find_default_config(const fs::path& cwd) {
    DefaultConfig d;
    // 1. config.env files into the environment (the env-specific one can only be found once ENV is known).
    auto source = [&](const fs::path& rel) {
        const auto vars = parse_config_env(cwd / rel);
        if (vars.empty()) return;
        for (const auto& [k, v] : vars)
            if (!v.empty()) ::setenv(k.c_str(), v.c_str(), 1);
        d.loaded_env_files.push_back(rel.string());
    };
    source("config/config.env");
    const std::string first_env = env_or({"ENV", "SIMPLETUNER_ENV"}, "default");
    if (first_env != "default") source(fs::path("config") / first_env / "config.env");
    // 2. and 3.
    d.env = env_or({"SIMPLETUNER_ENVIRONMENT", "SIMPLETUNER_ENV", "ENV"}, "default");
    const fs::path base = d.env == "default" ? fs::path("config") : fs::path("config") / d.env;
    std::string backend = env_or({"SIMPLETUNER_CONFIG_BACKEND", "CONFIG_BACKEND", "CONFIG_TYPE"}, "");
    for (auto& c : backend) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (backend.empty()) {
        backend = "json";
        for (const char* b : {"json", "toml", "env"})
            if (is_file(cwd / base / fmt::format("config.{}", b))) {
                backend = b;
                break;
            }
    }
    if (backend == "env") {
        // Every setting is an environment variable (config.env already sourced above): the caller turns
        // them into command-line settings (env_backend_arguments).
        d.backend = "env";
        d.path = cwd / base / "config.env";
        return d;
    }
    if (backend != "json" && backend != "toml")
        fail("host.config", "load", "CONFIG_BACKEND = '{}': expected json, toml or env", backend);
    d.backend = backend;
    // 4.
    std::vector<fs::path> candidates;
    if (backend == "toml") {
        candidates.push_back(base / "config.toml");
    } else {
        if (const char* override_path = std::getenv("CONFIG_PATH"); override_path && *override_path) {
            const fs::path o = override_path;
            std::error_code ec;
            if (fs::is_directory(o.is_absolute() ? o : cwd / o, ec)) {
                candidates.push_back(o / "config.json");
            } else {
                if (o.has_extension()) candidates.push_back(o);
                candidates.push_back(fs::path(o).replace_extension(".json"));
            }
        }
        if (d.env != "default") {
            const fs::path e = d.env;
            if (e.has_extension()) {
                candidates.push_back(e);
            } else {
                candidates.push_back(e / "config.json");
                if (e.begin() == e.end() || *e.begin() != "config")
                    candidates.push_back("config" / e / "config.json");
            }
        } else {
            candidates.push_back("config/config.json");
        }
    }
    for (const auto& c : candidates) {
        const fs::path full = c.is_absolute() ? c : cwd / c;
        d.tried.push_back(c);
        if (is_file(full)) {
            d.path = full;
            break;
        }
    }
    return d;
}

}  // namespace st::host

namespace st::host {

namespace {
// SimpleTuner's env_to_args_map (simpletuner/helpers/configuration/env_file.py): the variables of the
// env backend and the option each sets. Variables of features st does not have map to SimpleTuner's
// option names, which st then reports as it reports those keys in a config.json.
const std::vector<std::pair<const char*, const char*>>& env_to_args() {
    static const std::vector<std::pair<const char*, const char*>> table = {
        {"RESUME_CHECKPOINT", "--resume_from_checkpoint"},
        {"DATALOADER_CONFIG", "--data_backend_config"},
        {"ASPECT_BUCKET_ROUNDING", "--aspect_bucket_rounding"},
        {"TRAINING_SEED", "--seed"},
        {"USE_EMA", "--use_ema"},
        {"MINIMUM_RESOLUTION", "--minimum_image_size"},
        {"OUTPUT_DIR", "--output_dir"},
        {"USE_DORA", "--use_dora"},
        {"LORA_TYPE", "--lora_type"},
        {"LYCORIS_CONFIG", "--lycoris_config"},
        {"PUSH_TO_HUB", "--push_to_hub"},
        {"PUSH_CHECKPOINTS", "--push_checkpoints_to_hub"},
        {"MAX_NUM_STEPS", "--max_train_steps"},
        {"NUM_EPOCHS", "--num_train_epochs"},
        {"CHECKPOINTING_STEPS", "--checkpoint_step_interval"},
        {"CHECKPOINT_STEP_INTERVAL", "--checkpoint_step_interval"},
        {"CHECKPOINTING_LIMIT", "--checkpoints_total_limit"},
        {"HUB_MODEL_NAME", "--hub_model_id"},
        {"TRACKER_PROJECT_NAME", "--tracker_project_name"},
        {"TRACKER_RUN_NAME", "--tracker_run_name"},
        {"MODEL_TYPE", "--model_type"},
        {"MODEL_NAME", "--pretrained_model_name_or_path"},
        {"MODEL_FAMILY", "--model_family"},
        {"TRAIN_BATCH_SIZE", "--train_batch_size"},
        {"USE_GRADIENT_CHECKPOINTING", "--gradient_checkpointing"},
        {"ENABLE_CHUNKED_FEED_FORWARD", "--enable_chunked_feed_forward"},
        {"FEED_FORWARD_CHUNK_SIZE", "--feed_forward_chunk_size"},
        {"CAPTION_DROPOUT_PROBABILITY", "--caption_dropout_probability"},
        {"RESOLUTION_TYPE", "--resolution_type"},
        {"RESOLUTION", "--resolution"},
        {"VALIDATION_SEED", "--validation_seed"},
        {"VALIDATION_STEPS", "--validation_step_interval"},
        {"VALIDATION_STEP_INTERVAL", "--validation_step_interval"},
        {"VALIDATION_RESOLUTION", "--validation_resolution"},
        {"VALIDATION_GUIDANCE", "--validation_guidance"},
        {"VALIDATION_GUIDANCE_RESCALE", "--validation_guidance_rescale"},
        {"VALIDATION_NUM_INFERENCE_STEPS", "--validation_num_inference_steps"},
        {"VALIDATION_PROMPT", "--validation_prompt"},
        {"MIXED_PRECISION", "--mixed_precision"},
        {"OPTIMIZER", "--optimizer"},
        {"LEARNING_RATE", "--learning_rate"},
        {"LR_SCHEDULE", "--lr_scheduler"},
        {"LR_WARMUP_STEPS", "--lr_warmup_steps"},
        {"BASE_MODEL_PRECISION", "--base_model_precision"},
        {"QUANTIZE_VIA", "--quantize_via"},
        {"TRAINING_NUM_PROCESSES", "--num_processes"},
        {"TRAINING_NUM_MACHINES", "--num_machines"},
        {"GRADIENT_ACCUMULATION_STEPS", "--gradient_accumulation_steps"},
        {"LR_END", "--lr_end"},
        {"VALIDATION_NEGATIVE_PROMPT", "--validation_negative_prompt"},
        {"WRITE_BATCH_SIZE", "--write_batch_size"},
        {"DISABLE_BENCHMARK", "--disable_benchmark"},
        {"USE_XFORMERS", "--enable_xformers_memory_efficient_attention"},
        {"ALLOW_TF32", "--allow_tf32"},
        {"VALIDATION_INPUT", "--validation_input"},
        {"VALIDATION_EPOCH_INTERVAL", "--validation_epoch_interval"},
        {"TORCH_NUM_THREADS", "--torch_num_threads"}};
    return table;
}

}  // namespace

std::vector<std::string> env_backend_arguments() {
    // load_env_config(): "true" -> the bare flag, "false" -> nothing, anything else -> --option=value;
    // then TRAINER_EXTRA_ARGS split on whitespace.
    std::vector<std::string> out;
    for (const auto& [var, arg] : env_to_args()) {
        const char* raw = std::getenv(var);
        if (!raw) continue;
        std::string v = unquote(raw);
        std::string lower = v;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower == "true")
            out.push_back(std::string(arg) + "=true");
        else if (lower != "false")
            out.push_back(std::string(arg) + "=" + v);
    }
    if (const char* extra = std::getenv("TRAINER_EXTRA_ARGS"); extra && *extra) {
        std::istringstream in(unquote(extra));
        std::string w;
        while (in >> w) out.push_back(w);
    }
    return out;
}

}  // namespace st::host
