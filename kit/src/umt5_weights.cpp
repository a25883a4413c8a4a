// UMT5 checkpoint layouts (HF UMT5EncoderModel <-> original Wan t5.py T5Encoder), strict loading and
// the random tiny text_encoder writer. Key table: reference/models.md §8 and the umt5 golden quirks.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <utility>

#include "st/error.h"
#include "st/kit/umt5.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.umt5";

// Per-block suffixes: original Wan t5.py name -> HF UMT5 name (after "blocks.{i}." / "encoder.block.{i}.").
constexpr std::array<std::pair<const char*, const char*>, 10> kBlockKeys{{
    {"norm1.weight", "layer.0.layer_norm.weight"},
    {"attn.q.weight", "layer.0.SelfAttention.q.weight"},
    {"attn.k.weight", "layer.0.SelfAttention.k.weight"},
    {"attn.v.weight", "layer.0.SelfAttention.v.weight"},
    {"attn.o.weight", "layer.0.SelfAttention.o.weight"},
    {"pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"},
    {"norm2.weight", "layer.1.layer_norm.weight"},
    {"ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"},  // the GELU branch
    {"ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"},
    {"ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"},
}};
constexpr std::array<std::pair<const char*, const char*>, 2> kTopKeys{{
    {"token_embedding.weight", "shared.weight"},
    {"norm.weight", "encoder.final_layer_norm.weight"},
}};

// Splits "<prefix><digits>.<rest>" into (index, rest); false when `name` does not have that form.
bool split_block(const std::string& name, const std::string& prefix, std::string& index, std::string& rest) {
    if (name.rfind(prefix, 0) != 0) return false;
    size_t pos = prefix.size(), end = pos;
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) ++end;
    if (end == pos || end >= name.size() || name[end] != '.') return false;
    index = name.substr(pos, end - pos);
    rest = name.substr(end + 1);
    return true;
}

}  // namespace

const char* umt5_layout_name(UMT5Layout layout) {
    return layout == UMT5Layout::wan ? "wan-t5" : "hf-umt5";
}

std::optional<std::string> umt5_wan_to_hf_key(const std::string& wan_name) {
    for (const auto& [wan, hf] : kTopKeys)
        if (wan_name == wan) return std::string(hf);
    std::string index, rest;
    if (!split_block(wan_name, "blocks.", index, rest)) return std::nullopt;
    for (const auto& [wan, hf] : kBlockKeys)
        if (rest == wan) return "encoder.block." + index + "." + hf;
    return std::nullopt;
}

std::optional<std::string> umt5_hf_to_wan_key(const std::string& hf_name) {
    for (const auto& [wan, hf] : kTopKeys)
        if (hf_name == hf) return std::string(wan);
    if (hf_name == "encoder.embed_tokens.weight") return std::string("token_embedding.weight");
    std::string index, rest;
    if (!split_block(hf_name, "encoder.block.", index, rest)) return std::nullopt;
    for (const auto& [wan, hf] : kBlockKeys)
        if (rest == hf) return "blocks." + index + "." + wan;
    return std::nullopt;
}

UMT5Layout detect_umt5_layout(const st::sdk::TensorSource& source) {
    if (source.contains("token_embedding.weight")) return UMT5Layout::wan;
    if (source.contains("shared.weight") || source.contains("encoder.embed_tokens.weight"))
        return UMT5Layout::hf;
    fail(kComponent, "detect",
         "{} is not a UMT5 text encoder: it has neither 'shared.weight' / 'encoder.embed_tokens.weight' "
         "(HF UMT5EncoderModel) nor 'token_embedding.weight' (original Wan t5.py)",
         source.describe());
}

void load_umt5_weights(UMT5Encoder& model, const st::sdk::TensorSource& source) {
    const UMT5Layout layout = detect_umt5_layout(source);
    st::sdk::LoadOptions options;
    options.component = kComponent;
    if (layout == UMT5Layout::wan) {
        // Unmapped names pass through unchanged so the strict loader lists them as unexpected.
        options.key_map = [](const std::string& name) -> std::optional<std::string> {
            return umt5_wan_to_hf_key(name).value_or(name);
        };
    } else {
        // HF checkpoints may carry the tied embedding twice; keep shared.weight when both exist.
        const bool has_shared = source.contains("shared.weight");
        options.key_map = [has_shared](const std::string& name) -> std::optional<std::string> {
            if (name == "encoder.embed_tokens.weight")
                return has_shared ? std::nullopt : std::optional<std::string>("shared.weight");
            return name;
        };
    }
    const auto report = st::sdk::load_strict(*model, source, options);
    std::string dtypes;
    for (const auto& [dtype, count] : report.source_dtypes)
        dtypes += fmt::format("{}{} {}", dtypes.empty() ? "" : ", ", count, dtype);
    // load_strict already logged the count at info level; the layout detail is for debugging.
    st::log::debug(kComponent, "loaded {} UMT5 tensors from {} ({} layout; {})", report.loaded,
                   source.describe(), umt5_layout_name(layout), dtypes);
}

UMT5Encoder load_umt5_encoder(const std::filesystem::path& path, at::ScalarType dtype) {
    namespace fs = std::filesystem;
    if (!fs::exists(path))
        fail(kComponent, "load",
             "text encoder path '{}' does not exist (expected a text_encoder folder with "
             "config.json + model.safetensors, or a UMT5 .safetensors file)",
             path.string());
    if (fs::is_regular_file(path) &&
        (path.extension() == ".pth" || path.extension() == ".pt" || path.extension() == ".bin"))
        fail(kComponent, "load",
             "'{}' is a pickle checkpoint; st reads safetensors only (convert it, e.g. "
             "models_t5_umt5-xxl-enc-bf16.pth -> .safetensors with safetensors.torch.save_file)",
             path.string());
    const std::shared_ptr<st::sdk::TensorSource> source = st::sdk::open_tensor_source(path);
    UMT5Config config;
    if (fs::is_directory(path)) {
        const fs::path config_json = path / "config.json";
        if (!fs::exists(config_json))
            fail(kComponent, "load", "text encoder folder '{}' has no config.json (HF UMT5Config expected)",
                 path.string());
        config = UMT5Config::from_hf_file(config_json);
    } else {
        config = UMT5Config::from_weights(*source);
    }
    UMT5Encoder model(config);
    model->to(dtype);
    load_umt5_weights(model, *source);
    model->eval();
    return model;
}

void write_random_umt5(const std::filesystem::path& out_dir, const UMT5Config& config, uint64_t seed) {
    namespace fs = std::filesystem;
    config.validate("write_random_umt5");
    fs::create_directories(out_dir);
    at::Generator gen = at::detail::createCPUGenerator(seed);
    UMT5Encoder model(config);
    st::sdk::TensorMap tensors;
    for (const auto& item : model->named_parameters()) {
        const std::string& name = item.key();
        const at::Tensor& p = item.value();
        at::Tensor value;
        if (name.find("layer_norm") != std::string::npos) {
            value = 1.0 + 0.1 * at::randn(p.sizes(), gen);
        } else if (name == "shared.weight") {
            value = at::randn(p.sizes(), gen);
        } else if (name.find("relative_attention_bias") != std::string::npos) {
            value = 0.5 * at::randn(p.sizes(), gen);
        } else {
            value = at::randn(p.sizes(), gen) / std::sqrt(static_cast<double>(p.size(1)));
        }
        tensors.emplace(name, value.to(at::kFloat).contiguous());
    }
    st::sdk::save_safetensors(out_dir / "model.safetensors", tensors, {{"format", "pt"}});
    std::ofstream out(out_dir / "config.json");
    if (!out) fail(kComponent, "write", "cannot write '{}'", (out_dir / "config.json").string());
    out << config.to_hf_json().dump(2) << "\n";
    if (!out) fail(kComponent, "write", "failed writing '{}'", (out_dir / "config.json").string());
    st::log::info(kComponent,
                  "wrote random UMT5 text encoder ({} tensors, d_model {}, {} layers, seed {}) to {}",
                  tensors.size(), config.d_model, config.num_layers, seed, out_dir.string());
}

}  // namespace st::kit
