// Wav2Vec2 checkpoint layouts, strict loading and the random ForCTC writer (make-model / tests).
// Layouts (reference/models.md §9): HF Wav2Vec2ForCTC (`wav2vec2.` prefix + `lm_head.*`, what the S2V
// repos ship as wav2vec2-large-xlsr-53-english), bare Wav2Vec2Model, and the torch>=2.1
// parametrizations weight-norm names of transformers' newer saves.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <fstream>

#include "core/kit_names.h"
#include "core/wav2vec2.h"
#include "st/error.h"
#include "st/kit/hf_checkpoint.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v.wav2vec2";
constexpr const char* kCtcPrefix = "wav2vec2.";
constexpr const char* kPosConv = "encoder.pos_conv_embed.conv.";
constexpr const char* kParamG = "parametrizations.weight.original0";
constexpr const char* kParamV = "parametrizations.weight.original1";

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

constexpr const char* kPickleHint =
    "Convert it once, e.g. python -c \"import torch, safetensors.torch as s; "
    "s.save_file(torch.load('pytorch_model.bin'), 'model.safetensors')\" (or "
    "Wav2Vec2ForCTC.from_pretrained(dir).save_pretrained(dir, safe_serialization=True))";

}  // namespace

std::string Wav2Vec2Layout::describe() const {
    return fmt::format(
        "{} ({}weight norm as {}{})", ctc_prefix ? "Wav2Vec2ForCTC" : "Wav2Vec2Model",
        ctc_prefix ? "prefix 'wav2vec2.', " : "",
        parametrized_weight_norm ? "parametrizations.weight.original0/1" : "weight_g/weight_v",
        ignored_tensors > 0 ? fmt::format(", {} lm_head tensors ignored", ignored_tensors) : "");
}

std::optional<std::string> wav2vec2_canonical_key(const std::string& file_key) {
    if (starts_with(file_key, "lm_head.")) return std::nullopt;
    std::string name =
        starts_with(file_key, kCtcPrefix) ? file_key.substr(std::string(kCtcPrefix).size()) : file_key;
    if (name == std::string(kPosConv) + kParamG) return std::string(kPosConv) + "weight_g";
    if (name == std::string(kPosConv) + kParamV) return std::string(kPosConv) + "weight_v";
    return name;
}

Wav2Vec2Layout detect_wav2vec2_layout(const st::sdk::TensorSource& source) {
    Wav2Vec2Layout layout;
    const std::string probe = "feature_projection.projection.weight";
    if (source.contains(kCtcPrefix + probe)) {
        layout.ctc_prefix = true;
    } else if (!source.contains(probe)) {
        fail(kComponent, "detect",
             "{} is not a Wav2Vec2 checkpoint: it has neither '{}' (Wav2Vec2Model) nor '{}{}' "
             "(Wav2Vec2ForCTC)",
             source.describe(), probe, kCtcPrefix, probe);
    }
    const std::string prefix = layout.ctc_prefix ? kCtcPrefix : "";
    layout.parametrized_weight_norm = source.contains(prefix + kPosConv + kParamG);
    for (const auto& info : source.infos())
        if (starts_with(info.name, "lm_head.")) ++layout.ignored_tensors;
    return layout;
}

Wav2Vec2Layout load_wav2vec2_weights(Wav2Vec2Model& model, const st::sdk::TensorSource& source) {
    const Wav2Vec2Layout layout = detect_wav2vec2_layout(source);
    st::sdk::LoadOptions options;
    options.component = kComponent;
    const bool ctc = layout.ctc_prefix;
    options.key_map = [ctc](const std::string& name) -> std::optional<std::string> {
        // An unprefixed name in a CTC file (or a prefixed one in a bare file) stays as it is, so the
        // strict loader reports it as unexpected instead of silently accepting a mixed file.
        if (ctc != starts_with(name, kCtcPrefix) && !starts_with(name, "lm_head.")) return name;
        return wav2vec2_canonical_key(name);
    };
    // Wav2Vec2Model only creates masked_spec_embed when SpecAugment is configured; eval ignores it.
    options.optional_targets = {"masked_spec_embed"};
    const auto report = st::sdk::load_strict(*model, source, options);
    std::string dtypes;
    for (const auto& [dtype, count] : report.source_dtypes)
        dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", count, dtype);
    st::log::info(kComponent, "loaded {} wav2vec2 tensors from {}: layout {}; {}", report.loaded,
                  source.describe(), layout.describe(), dtypes);
    return layout;
}

Wav2Vec2Model load_wav2vec2(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    const auto files = st::plugins::wan::locate_hf_checkpoint(path, kComponent, "wav2vec2", kPickleHint);
    const Wav2Vec2Config config = Wav2Vec2Config::from_file(files.config_json);
    const std::shared_ptr<st::sdk::TensorSource> source = st::sdk::open_tensor_source(files.weights);
    Wav2Vec2Model model(config);
    model->to(at::kFloat);
    load_wav2vec2_weights(model, *source);
    model->eval();
    return model;
}

void write_wav2vec2(const Wav2Vec2Config& config, const std::filesystem::path& dir, uint64_t seed) {
    namespace fs = std::filesystem;
    config.validate("write_wav2vec2");
    fs::create_directories(dir);
    at::Generator gen = at::detail::createCPUGenerator(seed);
    Wav2Vec2Model model(config);
    st::sdk::TensorMap tensors;
    const double g_scale = std::sqrt(static_cast<double>(config.hidden_size) /
                                     static_cast<double>(config.num_conv_pos_embeddings));
    for (const auto& item : model->named_parameters()) {
        const std::string& name = item.key();
        const at::Tensor& p = item.value();
        at::Tensor value;
        if (ends_with(name, "layer_norm.weight")) {
            value = 1.0 + 0.1 * at::randn(p.sizes(), gen);
        } else if (ends_with(name, ".bias")) {
            value = 0.1 * at::randn(p.sizes(), gen);
        } else if (ends_with(name, "weight_g")) {
            // ||effective weight[:, :, k]|| = g: sqrt(hidden/K) gives entries ~ 1/sqrt(fan_in).
            value = g_scale * (1.0 + 0.1 * at::randn(p.sizes(), gen));
        } else if (ends_with(name, "weight_v")) {
            value = at::randn(p.sizes(), gen);
        } else if (name == "masked_spec_embed") {
            value = at::rand(p.sizes(), gen);  // HF init: uniform_()
        } else {
            const double fan_in = static_cast<double>(p.numel() / p.size(0));
            value = at::randn(p.sizes(), gen) / std::sqrt(fan_in);
        }
        tensors.emplace(kCtcPrefix + name, value.to(at::kFloat).contiguous());
    }
    tensors.emplace("lm_head.weight", (at::randn({config.vocab_size, config.hidden_size}, gen) /
                                       std::sqrt(static_cast<double>(config.hidden_size)))
                                          .to(at::kFloat));
    tensors.emplace("lm_head.bias", (0.1 * at::randn({config.vocab_size}, gen)).to(at::kFloat));
    st::sdk::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});

    auto write_json = [](const fs::path& file, const nlohmann::json& j) {
        std::ofstream out(file);
        if (!out) fail(kComponent, "write", "cannot write '{}'", file.string());
        out << j.dump(2) << "\n";
        if (!out) fail(kComponent, "write", "failed writing '{}'", file.string());
    };
    write_json(dir / "config.json", config.to_json());
    // Wav2Vec2FeatureExtractor settings of the real checkpoint (what normalize_waveform implements).
    write_json(dir / "preprocessor_config.json",
               nlohmann::json{{"do_normalize", true},
                              {"feature_extractor_type", "Wav2Vec2FeatureExtractor"},
                              {"feature_size", 1},
                              {"padding_side", "right"},
                              {"padding_value", 0.0},
                              {"return_attention_mask", true},
                              {"sampling_rate", kWav2Vec2SampleRate}});
    st::log::info(kComponent,
                  "wrote random wav2vec2 (ForCTC layout, {} tensors, hidden {}, {} layers, seed {}) to {}",
                  tensors.size(), config.hidden_size, config.num_hidden_layers, seed, dir.string());
}

}  // namespace st::plugins::wan_s2v
