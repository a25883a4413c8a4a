// CLIP vision checkpoint layouts, strict loading, ClipImageEncoder (construction, loading, encode)
// and the random CLIPVisionModelWithProjection writer (make-model / tests). Layouts: HF
// `vision_model.`-prefixed (CLIPVisionModel, CLIPVisionModelWithProjection: the Wan 2.1 I2V diffusers
// image_encoder; CLIPModel with its text tower ignored) and the bare CLIPVisionTransformer state dict.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/clip_vision.h"
#include "core/kit_names.h"
#include "st/error.h"
#include "st/kit/hf_checkpoint.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::wan {
namespace {

constexpr const char* kComponent = "model.wan.clip_vision";
const std::string kPrefix = "vision_model.";
const std::string kProjection = "visual_projection.weight";
const std::string kPositionIds = "embeddings.position_ids";
const std::string kProbe = "embeddings.patch_embedding.weight";

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}
bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Tensors of a prefixed file that are deliberately not loaded: the projection head, the
// position_ids buffer of transformers < 4.31, and a full CLIPModel's text tower.
bool ignored_in_prefixed(const std::string& name) {
    return name == kProjection || name == kPrefix + kPositionIds || starts_with(name, "text_model.") ||
           name == "text_projection.weight" || name == "logit_scale";
}

constexpr const char* kPickleHint =
    "Use the diffusers image_encoder folder (config.json + model.safetensors, e.g. "
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_encoder) or convert it once: python -c \"import torch, "
    "safetensors.torch as s; s.save_file(torch.load('pytorch_model.bin'), 'model.safetensors')\" (or "
    "CLIPVisionModelWithProjection.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)). The "
    "original Wan models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth uses open-clip names that st does "
    "not map: take the diffusers image_encoder instead";

void write_json(const std::filesystem::path& file, const nlohmann::json& j) {
    std::ofstream out(file);
    if (!out) fail(kComponent, "write", "cannot write '{}'", file.string());
    out << j.dump(2) << "\n";
    if (!out) fail(kComponent, "write", "failed writing '{}'", file.string());
}

std::filesystem::path strip_trailing_separator(std::filesystem::path p) {
    return p.has_filename() ? p : p.parent_path();
}

}  // namespace

std::string ClipVisionLayout::describe() const {
    return fmt::format(
        "{}{}{}",
        vision_model_prefix ? "CLIPVisionModel (prefix 'vision_model.')" : "bare CLIPVisionTransformer",
        has_projection ? ", visual_projection checked and ignored" : "",
        ignored_tensors > 0 ? fmt::format(", {} tensors ignored", ignored_tensors) : "");
}

ClipVisionLayout detect_clip_vision_layout(const st::sdk::TensorSource& source) {
    ClipVisionLayout layout;
    if (source.contains(kPrefix + kProbe)) {
        layout.vision_model_prefix = true;
    } else if (!source.contains(kProbe)) {
        bool open_clip = false;
        for (const auto& info : source.infos()) open_clip = open_clip || starts_with(info.name, "visual.");
        fail(kComponent, "detect", "{} is not an HF CLIP vision checkpoint: it has neither '{}{}' nor '{}'{}",
             source.describe(), kPrefix, kProbe, kProbe,
             open_clip ? "; its 'visual.*' names are the original Wan / open-clip layout, which st does not "
                         "read: use the diffusers image_encoder folder (CLIPVisionModelWithProjection)"
                       : "");
    }
    for (const auto& info : source.infos()) {
        if (layout.vision_model_prefix ? ignored_in_prefixed(info.name) : info.name == kPositionIds)
            ++layout.ignored_tensors;
        if (layout.vision_model_prefix && info.name == kProjection) layout.has_projection = true;
    }
    return layout;
}

ClipVisionLayout load_clip_vision_weights(ClipVisionModel& model, const st::sdk::TensorSource& source) {
    const ClipVisionLayout layout = detect_clip_vision_layout(source);
    const ClipVisionConfig& config = model->config();
    if (layout.has_projection) {
        // Not loaded, but its shape is part of the checkpoint contract.
        const auto infos = source.infos();
        const auto it =
            std::find_if(infos.begin(), infos.end(), [](const auto& i) { return i.name == kProjection; });
        const std::vector<int64_t> expected{config.projection_dim, config.hidden_size};
        if (it->shape != expected)
            fail(kComponent, "load", "'{}' does not match the model: {} has shape [{}], expected [{}]",
                 source.describe(), kProjection, fmt::join(it->shape, ", "), fmt::join(expected, ", "));
    }
    st::sdk::LoadOptions options;
    options.component = kComponent;
    const bool prefixed = layout.vision_model_prefix;
    options.key_map = [prefixed](const std::string& name) -> std::optional<std::string> {
        if (!prefixed) {
            if (name == kPositionIds) return std::nullopt;
            return name;  // a prefixed name in a bare file matches no target: reported as unexpected
        }
        if (ignored_in_prefixed(name)) return std::nullopt;
        if (starts_with(name, kPrefix)) return name.substr(kPrefix.size());
        // An unprefixed name in a prefixed file must not fill a target silently: unexpected.
        return name + " [outside vision_model.]";
    };
    st::sdk::load_strict(*model, source, options);
    st::log::info(kComponent, "CLIP vision layout of {}: {}", source.describe(), layout.describe());
    return layout;
}

ClipVisionModel load_clip_vision(const std::filesystem::path& path_in, at::ScalarType dtype,
                                 at::Device device) {
    namespace fs = std::filesystem;
    const fs::path path = strip_trailing_separator(path_in);
    const HfCheckpointFiles files = locate_hf_checkpoint(path, kComponent, "CLIP image encoder", kPickleHint);
    const ClipVisionConfig config = ClipVisionConfig::from_file(files.config_json);
    const std::shared_ptr<st::sdk::TensorSource> source = st::sdk::open_tensor_source(files.weights);
    ClipVisionModel model(config);
    model->to(device, dtype);
    load_clip_vision_weights(model, *source);
    model->eval();
    return model;
}

// --- image encoder ------------------------------------------------------------------------------------

ClipImageEncoder::ClipImageEncoder(ClipVisionModel model, ClipImageProcessorConfig processor)
    : model_(std::move(model)), processor_(std::move(processor)) {
    if (!model_) fail(kComponent, "init", "ClipImageEncoder needs a model");
    const ClipVisionConfig& c = model_->config();
    if (c.num_channels != 3)
        fail(kComponent, "init", "the image encoder takes RGB images; the model has num_channels {}",
             c.num_channels);
    if (processor_.do_center_crop &&
        (processor_.crop_height != c.image_size || processor_.crop_width != c.image_size))
        fail(kComponent, "init", "preprocessor crop_size {}x{} does not match the model's image_size {}",
             processor_.crop_height, processor_.crop_width, c.image_size);
    model_->eval();
    for (auto& p : model_->parameters()) p.set_requires_grad(false);
}

at::Tensor ClipImageEncoder::preprocess(const at::Tensor& pixels) const {
    return clip_preprocess(pixels.to(model_->embeddings->class_embedding.device()), processor_);
}

at::Tensor ClipImageEncoder::encode(const at::Tensor& pixels) {
    // [B, 3, H, W] in [-1, 1] -> [B, 3, S, S] -> [B, N+1, H] (WanImageToVideoPipeline.encode_image)
    at::NoGradGuard guard;  // not InferenceMode: the Wan transformer saves its inputs for backward
    return model_->penultimate(preprocess(pixels));
}

ClipImageEncoder ClipImageEncoder::load(const std::filesystem::path& path_in, at::ScalarType dtype,
                                        at::Device device) {
    namespace fs = std::filesystem;
    fs::path path = strip_trailing_separator(path_in);
    // A diffusers pipeline root: take its image_encoder/.
    if (fs::is_directory(path) && !fs::exists(path / "config.json") &&
        fs::is_directory(path / "image_encoder"))
        path /= "image_encoder";
    ClipVisionModel model = load_clip_vision(path, dtype, device);
    const fs::path model_dir = fs::is_directory(path) ? path : path.parent_path();
    const fs::path sibling = model_dir.parent_path() / "image_processor" / "preprocessor_config.json";
    const fs::path inside = model_dir / "preprocessor_config.json";
    ClipImageProcessorConfig processor;
    if (fs::exists(sibling)) {
        processor = ClipImageProcessorConfig::from_file(sibling);
        st::log::info(kComponent, "image preprocessing from {}", sibling.string());
    } else if (fs::exists(inside)) {
        processor = ClipImageProcessorConfig::from_file(inside);
        st::log::info(kComponent, "image preprocessing from {}", inside.string());
    } else {
        processor = ClipImageProcessorConfig::for_image_size(model->config().image_size);
        st::log::info(kComponent, "no preprocessor_config.json at {} or {}: CLIP defaults at {} px",
                      sibling.string(), inside.string(), model->config().image_size);
    }
    return ClipImageEncoder(std::move(model), std::move(processor));
}

void save_clip_vision(const std::filesystem::path& dir, const ClipVisionConfig& config, uint64_t seed) {
    config.validate("save_clip_vision");
    std::filesystem::create_directories(dir);
    at::Generator gen = at::detail::createCPUGenerator(seed);
    ClipVisionModel model(config);
    st::sdk::TensorMap tensors;
    for (const auto& item : model->named_parameters()) {
        const std::string& name = item.key();
        const at::Tensor& p = item.value();
        at::Tensor value;
        if (name == "embeddings.class_embedding") {
            value = at::randn(p.sizes(), gen);
        } else if (name == "embeddings.position_embedding.weight") {
            value = 0.5 * at::randn(p.sizes(), gen);
        } else if (p.dim() == 1 &&
                   (name.find("layrnorm") != std::string::npos ||
                    name.find("layernorm") != std::string::npos ||
                    name.find("layer_norm") != std::string::npos) &&
                   ends_with(name, ".weight")) {
            value = 1.0 + 0.1 * at::randn(p.sizes(), gen);
        } else if (ends_with(name, ".bias")) {
            value = 0.1 * at::randn(p.sizes(), gen);
        } else {
            const double fan_in = static_cast<double>(p.numel() / p.size(0));
            value = at::randn(p.sizes(), gen) / std::sqrt(fan_in);
        }
        tensors.emplace(kPrefix + name, value.to(at::kFloat).contiguous());
    }
    tensors.emplace(kProjection, (at::randn({config.projection_dim, config.hidden_size}, gen) /
                                  std::sqrt(static_cast<double>(config.hidden_size)))
                                     .to(at::kFloat));
    st::sdk::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    write_json(dir / "config.json", config.to_json());
    st::log::info(
        kComponent,
        "wrote random CLIP vision encoder (CLIPVisionModelWithProjection layout, {} tensors, hidden "
        "{}, {} layers, seed {}) to {}",
        tensors.size(), config.hidden_size, config.num_hidden_layers, seed, dir.string());
}

void save_clip_image_processor(const std::filesystem::path& dir, const ClipImageProcessorConfig& config) {
    std::filesystem::create_directories(dir);
    write_json(dir / "preprocessor_config.json", config.to_json());
}

}  // namespace st::plugins::wan
