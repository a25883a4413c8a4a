// Gemma-2 checkpoint layouts, strict loading and the random writer (see gemma2_weights.h). Key names:
// reference/models.md §6.4 and transformers Gemma2Model.state_dict() (tests/golden/hf_gemma2).
#include "core/gemma2_weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fstream>
#include <vector>

#include "st/error.h"
#include "st/kit/hf_checkpoint.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::sanavideo {
namespace {

constexpr const char* kComponent = "model.sanavideo.gemma2";
constexpr const char* kModelPrefix = "model.";
constexpr const char* kLmHead = "lm_head.";
constexpr const char* kPickleHint =
    "Convert it once, e.g. Gemma2Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)";

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string Gemma2Layout::describe() const {
    return fmt::format(
        "{}{}", model_prefix ? "Gemma2ForCausalLM (prefix 'model.')" : "Gemma2Model",
        ignored_tensors > 0 ? fmt::format(", {} lm_head tensor(s) ignored", ignored_tensors) : "");
}

std::optional<std::string> gemma2_canonical_key(const std::string& file_key) {
    if (starts_with(file_key, kLmHead)) return std::nullopt;
    if (starts_with(file_key, kModelPrefix)) return file_key.substr(std::string(kModelPrefix).size());
    return file_key;
}

Gemma2Layout detect_gemma2_layout(const st::sdk::TensorSource& source) {
    Gemma2Layout layout;
    const std::string probe = "embed_tokens.weight";
    if (source.contains(kModelPrefix + probe)) {
        layout.model_prefix = true;
    } else if (!source.contains(probe)) {
        fail(kComponent, "detect",
             "{} is not a Gemma-2 checkpoint: it has neither '{}' (Gemma2Model) nor '{}{}' "
             "(Gemma2ForCausalLM)",
             source.describe(), probe, kModelPrefix, probe);
    }
    for (const auto& info : source.infos())
        if (starts_with(info.name, kLmHead)) ++layout.ignored_tensors;
    return layout;
}

Gemma2Layout load_gemma2_weights(Gemma2Model& model, const st::sdk::TensorSource& source) {
    const Gemma2Layout layout = detect_gemma2_layout(source);
    if (layout.model_prefix) {
        // A bare Gemma2Model name inside a Gemma2ForCausalLM file would load as if it belonged: refuse
        // the mixed file instead.
        std::vector<std::string> bare;
        for (const auto& info : source.infos())
            if (!starts_with(info.name, kModelPrefix) && !starts_with(info.name, kLmHead))
                bare.push_back(info.name);
        if (!bare.empty()) {
            std::string list;
            for (size_t i = 0; i < bare.size() && i < 10; ++i) list += (i ? ", " : "") + bare[i];
            fail(kComponent, "load",
                 "{} mixes layouts: its embedding is 'model.embed_tokens.weight' (Gemma2ForCausalLM) but {} "
                 "tensor(s) lack the 'model.' prefix: {}{}",
                 source.describe(), bare.size(), list, bare.size() > 10 ? ", ..." : "");
        }
    }
    st::sdk::LoadOptions options;
    options.component = kComponent;
    // In a Gemma2Model file a `model.` name passes through and the strict loader reports it as unexpected.
    const bool prefixed = layout.model_prefix;
    options.key_map = [prefixed](const std::string& name) -> std::optional<std::string> {
        if (!prefixed && !starts_with(name, kLmHead)) return name;
        return gemma2_canonical_key(name);
    };
    const auto report = st::sdk::load_strict(*model, source, options);
    std::string dtypes;
    for (const auto& [dtype, count] : report.source_dtypes)
        dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", count, dtype);
    st::log::info(kComponent, "loaded {} Gemma-2 tensors from {}: {}; {}", report.loaded, source.describe(),
                  layout.describe(), dtypes);
    return layout;
}

Gemma2Model load_gemma2(const std::filesystem::path& path, at::ScalarType dtype, at::Device device) {
    const auto files = st::kit::locate_hf_checkpoint(path, kComponent, "Gemma-2 text encoder", kPickleHint);
    const Gemma2Config config = Gemma2Config::from_file(files.config_json);
    const std::shared_ptr<st::sdk::TensorSource> source = st::sdk::open_tensor_source(files.weights);
    Gemma2Model model(config, at::TensorOptions().dtype(dtype).device(device));
    try {
        load_gemma2_weights(model, *source);
    } catch (const Error& e) {
        throw e.with_context("while loading the Gemma-2 text encoder from " + path.string());
    }
    model->eval();
    return model;
}

void write_random_gemma2(const std::filesystem::path& dir, const Gemma2Config& config, uint64_t seed) {
    namespace fs = std::filesystem;
    config.validate("write_random_gemma2");
    fs::create_directories(dir);
    at::Generator gen = at::detail::createCPUGenerator(seed);
    Gemma2Model model(config);
    st::sdk::TensorMap tensors;
    for (const auto& item : model->named_parameters()) {
        const std::string& name = item.key();
        const at::Tensor& p = item.value();
        at::Tensor value;
        if (ends_with(name, "norm.weight")) {
            value = 0.1 * at::randn(p.sizes(), gen);
        } else if (name == "embed_tokens.weight") {
            value = at::randn(p.sizes(), gen) / std::sqrt(static_cast<double>(config.hidden_size));
        } else {
            value = at::randn(p.sizes(), gen) / std::sqrt(static_cast<double>(p.size(1)));
        }
        tensors.emplace(name, value.to(at::kFloat).contiguous());
    }
    st::sdk::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    const fs::path config_json = dir / "config.json";
    std::ofstream out(config_json);
    if (!out) fail(kComponent, "write", "cannot write '{}'", config_json.string());
    out << config.to_json().dump(2) << "\n";
    if (!out) fail(kComponent, "write", "failed writing '{}'", config_json.string());
    st::log::info(
        kComponent, "wrote random Gemma-2 ({} tensors, hidden {}, {} layers, vocab {}, seed {}) to {}",
        tensors.size(), config.hidden_size, config.num_hidden_layers, config.vocab_size, seed, dir.string());
}

}  // namespace st::plugins::sanavideo
