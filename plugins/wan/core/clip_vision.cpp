// CLIP vision encoder of Wan 2.1 I2V: configs, CLIPImageProcessor preprocessing and the forward
// (HF transformers models/clip/modeling_clip.py, image_processing_clip.py). See clip_vision.h.
#include "core/clip_vision.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "st/attention.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/fields.h"
#include "st/text.h"

namespace st::plugins::wan {

using st::sdk::shape_str;
namespace {

constexpr const char* kComponent = "model.wan.clip_vision";

template <typename T>
T get_or(const nlohmann::json& j, const std::string& key, T fallback, const std::string& origin) {
    return st::sdk::json_value_or<T>(j, key, std::move(fallback), origin, kComponent);
}

// `size` / `crop_size` of preprocessor_config.json: an int n, {"shortest_edge": n} or
// {"height": h, "width": w} (transformers get_size_dict). Returns {shortest_edge, height, width}.
std::array<int64_t, 3> parse_size(const nlohmann::json& j, const std::string& key,
                                  const std::array<int64_t, 3>& fallback, const std::string& origin) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (it->is_number_integer()) {
        const auto n = st::sdk::json_as<int64_t>(*it, key, origin, kComponent);
        return {n, 0, 0};
    }
    if (it->is_object()) {
        if (it->contains("shortest_edge") && !it->contains("height") && !it->contains("width"))
            return {get_or<int64_t>(*it, "shortest_edge", 0, origin), 0, 0};
        if (it->contains("height") && it->contains("width") && !it->contains("shortest_edge"))
            return {0, get_or<int64_t>(*it, "height", 0, origin), get_or<int64_t>(*it, "width", 0, origin)};
    }
    fail(kComponent, "config",
         "{}: key '{}' has value {}; expected an int, {{\"shortest_edge\": n}} or {{\"height\": h, "
         "\"width\": w}}",
         origin, key, it->dump());
}

std::vector<double> parse_channels(const nlohmann::json& j, const std::string& key,
                                   const std::vector<double>& fallback, const std::string& origin) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    // transformers accepts one float for every channel.
    if (it->is_number())
        return std::vector<double>(3, st::sdk::json_as<double>(*it, key, origin, kComponent));
    auto v = st::sdk::json_as<std::vector<double>>(*it, key, origin, kComponent);
    if (v.size() != 3)
        fail(kComponent, "config", "{}: {} has {} entries, expected 3 (RGB)", origin, key, v.size());
    return v;
}

// The CLIPVisionConfig keys the vision tower reads; the rest of a transformers config (dropouts,
// initializer settings, ...) does not change the forward. Written in the field layout of
// Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_encoder/config.json.
const st::kit::FieldTable<ClipVisionConfig>& clip_fields() {
    using C = ClipVisionConfig;
    static const auto t =
        st::kit::FieldTable<C>(kComponent, "CLIP vision config")
            .constant("architectures", nlohmann::json::array({"CLIPVisionModelWithProjection"}))
            .constant("model_type", "clip_vision_model")
            .constant("attention_dropout", 0.0)
            .constant("dropout", 0.0)
            .constant("initializer_factor", 1.0)
            .constant("initializer_range", 0.02)
            .constant("torch_dtype", "float32")
            .ignore("model_type")  // checked by from_json (nested CLIPConfig)
            .field("hidden_act", &C::hidden_act)
            .field("hidden_size", &C::hidden_size)
            .field("image_size", &C::image_size)
            .field("intermediate_size", &C::intermediate_size)
            .field("layer_norm_eps", &C::layer_norm_eps)
            .field("num_attention_heads", &C::num_attention_heads)
            .field("num_channels", &C::num_channels)
            .field("num_hidden_layers", &C::num_hidden_layers)
            .field("patch_size", &C::patch_size)
            .field("projection_dim", &C::projection_dim)
            .accept_other_keys();
    return t;
}

}  // namespace

// --- ClipVisionConfig ---------------------------------------------------------------------------

ClipVisionConfig ClipVisionConfig::vit_h_14() {
    return ClipVisionConfig{};
}

ClipVisionConfig ClipVisionConfig::tiny() {
    ClipVisionConfig c;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.image_size = 56;
    c.patch_size = 14;
    c.projection_dim = 16;
    return c;
}

void ClipVisionConfig::validate(const std::string& origin) const {
    auto positive = [&](int64_t v, const char* name) {
        if (v <= 0) fail(kComponent, "config", "{}: {} must be positive, got {}", origin, name, v);
    };
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_channels, "num_channels");
    positive(image_size, "image_size");
    positive(patch_size, "patch_size");
    positive(projection_dim, "projection_dim");
    if (hidden_size % num_attention_heads != 0)
        fail(kComponent, "config", "{}: hidden_size {} is not divisible by num_attention_heads {}", origin,
             hidden_size, num_attention_heads);
    if (patch_size > image_size)
        fail(kComponent, "config", "{}: patch_size {} is larger than image_size {}", origin, patch_size,
             image_size);
    if (hidden_act != "gelu" && hidden_act != "quick_gelu")
        fail(kComponent, "config", "{}: hidden_act '{}' is not supported (expected 'gelu' or 'quick_gelu')",
             origin, hidden_act);
    if (!(layer_norm_eps > 0.0))
        fail(kComponent, "config", "{}: layer_norm_eps must be positive, got {}", origin, layer_norm_eps);
}

ClipVisionConfig ClipVisionConfig::from_json(const nlohmann::json& root, const std::string& origin) {
    if (!root.is_object()) fail(kComponent, "config", "{}: expected a JSON object", origin);
    const auto model_type = get_or<std::string>(root, "model_type", "clip_vision_model", origin);
    const nlohmann::json* j = &root;
    std::string where = origin;
    static const nlohmann::json kEmpty = nlohmann::json::object();
    if (model_type == "clip") {
        // CLIPConfig: the vision tower's settings are the nested vision_config (absent = defaults;
        // old files may carry vision_config_dict instead).
        auto it = root.find("vision_config");
        if (it == root.end() || it->is_null()) it = root.find("vision_config_dict");
        if (it == root.end() || it->is_null()) {
            j = &kEmpty;
        } else if (!it->is_object()) {
            fail(kComponent, "config", "{}: key 'vision_config' has value {}; expected an object", origin,
                 it->dump());
        } else {
            j = &*it;
        }
        where = origin + " (vision_config)";
        const auto nested = get_or<std::string>(*j, "model_type", "clip_vision_model", where);
        if (nested != "clip_vision_model")
            fail(kComponent, "config", "{}: model_type '{}' is not 'clip_vision_model'", where, nested);
    } else if (model_type != "clip_vision_model") {
        fail(kComponent, "config",
             "{}: model_type '{}' is not a CLIP vision config (expected 'clip_vision_model' or 'clip')",
             origin, model_type);
    }
    // transformers CLIPVisionConfig defaults (openai/clip-vit-base-patch32) for absent keys.
    ClipVisionConfig c;
    c.hidden_size = 768;
    c.intermediate_size = 3072;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.num_channels = 3;
    c.image_size = 224;
    c.patch_size = 32;
    c.hidden_act = "quick_gelu";
    c.layer_norm_eps = 1e-5;
    c.projection_dim = 512;
    clip_fields().read(c, *j, where);
    c.validate(where);
    return c;
}

ClipVisionConfig ClipVisionConfig::from_file(const std::filesystem::path& config_json) {
    return from_json(st::sdk::read_json_file(config_json, kComponent), config_json.string());
}

nlohmann::json ClipVisionConfig::to_json() const {
    return clip_fields().to_json(*this);
}

// --- ClipImageProcessorConfig -------------------------------------------------------------------

ClipImageProcessorConfig ClipImageProcessorConfig::for_image_size(int64_t image_size) {
    ClipImageProcessorConfig c;
    c.size_shortest_edge = image_size;
    c.crop_height = image_size;
    c.crop_width = image_size;
    return c;
}

ClipImageProcessorConfig ClipImageProcessorConfig::from_json(const nlohmann::json& j,
                                                             const std::string& origin) {
    if (!j.is_object()) fail(kComponent, "config", "{}: expected a JSON object", origin);
    ClipImageProcessorConfig c;
    c.do_resize = get_or<bool>(j, "do_resize", c.do_resize, origin);
    const auto size = parse_size(j, "size", {c.size_shortest_edge, 0, 0}, origin);
    c.size_shortest_edge = size[0];
    c.size_height = size[1];
    c.size_width = size[2];
    c.resample = get_or<int64_t>(j, "resample", c.resample, origin);
    c.do_center_crop = get_or<bool>(j, "do_center_crop", c.do_center_crop, origin);
    if (j.contains("crop_size") && j.at("crop_size").is_object() &&
        j.at("crop_size").contains("shortest_edge"))
        fail(kComponent, "config", "{}: crop_size must be an int or {{\"height\", \"width\"}}, got {}",
             origin, j.at("crop_size").dump());
    const auto crop = parse_size(j, "crop_size", {0, c.crop_height, c.crop_width}, origin);
    // An int crop_size is square (get_size_dict(crop_size, default_to_square=True)).
    c.crop_height = crop[0] > 0 ? crop[0] : crop[1];
    c.crop_width = crop[0] > 0 ? crop[0] : crop[2];
    c.do_rescale = get_or<bool>(j, "do_rescale", c.do_rescale, origin);
    c.rescale_factor = get_or<double>(j, "rescale_factor", c.rescale_factor, origin);
    c.do_normalize = get_or<bool>(j, "do_normalize", c.do_normalize, origin);
    c.image_mean = parse_channels(j, "image_mean", c.image_mean, origin);
    c.image_std = parse_channels(j, "image_std", c.image_std, origin);
    if (c.do_resize && c.resample != 3)
        fail(kComponent, "config", "{}: resample {} is not supported (only 3 = PIL bicubic, CLIP's)", origin,
             c.resample);
    for (double s : c.image_std)
        if (!(s > 0.0))
            fail(kComponent, "config", "{}: image_std entries must be positive, got {}", origin, s);
    const int64_t sizes[] = {c.size_shortest_edge, c.size_height, c.size_width};
    if (c.do_resize && (c.size_shortest_edge < 0 || (c.size_shortest_edge == 0 && sizes[1] * sizes[2] <= 0)))
        fail(kComponent, "config", "{}: size must be positive, got {}", origin, j.at("size").dump());
    if (c.do_center_crop && (c.crop_height <= 0 || c.crop_width <= 0))
        fail(kComponent, "config", "{}: crop_size must be positive, got {}x{}", origin, c.crop_height,
             c.crop_width);
    return c;
}

ClipImageProcessorConfig ClipImageProcessorConfig::from_file(const std::filesystem::path& preprocessor_json) {
    return from_json(st::sdk::read_json_file(preprocessor_json, kComponent), preprocessor_json.string());
}

nlohmann::json ClipImageProcessorConfig::to_json() const {
    const nlohmann::json size = size_shortest_edge > 0
                                    ? nlohmann::json{{"shortest_edge", size_shortest_edge}}
                                    : nlohmann::json{{"height", size_height}, {"width", size_width}};
    return nlohmann::json{{"crop_size", {{"height", crop_height}, {"width", crop_width}}},
                          {"do_center_crop", do_center_crop},
                          {"do_convert_rgb", true},
                          {"do_normalize", do_normalize},
                          {"do_rescale", do_rescale},
                          {"do_resize", do_resize},
                          {"image_mean", image_mean},
                          {"image_processor_type", "CLIPImageProcessor"},
                          {"image_std", image_std},
                          {"resample", resample},
                          {"rescale_factor", rescale_factor},
                          {"size", size}};
}

std::vector<int64_t> ClipImageProcessorConfig::resized_size(int64_t h, int64_t w) const {
    if (!do_resize) return {h, w};
    if (size_shortest_edge <= 0) return {size_height, size_width};
    // transformers get_resize_output_image_size(default_to_square=False): the long edge is
    // int(n * long / short), the product in integers, the division in double, truncated.
    const int64_t short_edge = std::min(h, w), long_edge = std::max(h, w);
    const auto new_long = static_cast<int64_t>(static_cast<double>(size_shortest_edge * long_edge) /
                                               static_cast<double>(short_edge));
    return w <= h ? std::vector<int64_t>{new_long, size_shortest_edge}
                  : std::vector<int64_t>{size_shortest_edge, new_long};
}

at::Tensor clip_preprocess(const at::Tensor& pixels, const ClipImageProcessorConfig& config) {
    // [B, 3, H, W] in [-1, 1] -> [0, 1] -> resize [B, 3, H', W'] -> crop [B, 3, ch, cw] -> normalise
    if (pixels.dim() != 4 || pixels.size(1) != 3 || !at::isFloatingType(pixels.scalar_type()))
        fail(kComponent, "preprocess", "expected float pixels [B, 3, H, W] in [-1, 1], got {} {}",
             shape_str(pixels.sizes()), c10::toString(pixels.scalar_type()));
    const int64_t h = pixels.size(2), w = pixels.size(3);
    at::Tensor x = (pixels.to(at::kFloat) + 1.0) * 0.5;
    const std::vector<int64_t> size = config.resized_size(h, w);
    if (size[0] < 1 || size[1] < 1)
        fail(kComponent, "preprocess", "image {}x{} resizes to {}x{}", h, w, size[0], size[1]);
    if (size[0] != h || size[1] != w) {
        // Pillow's BICUBIC (Keys a = -0.5, filter widened by the scale when shrinking) is what the
        // antialiased kernel implements. PIL works on uint8, which saturates the cubic overshoot at
        // sharp edges: the clamp reproduces that.
        x = at::_upsample_bicubic2d_aa(x.contiguous(), {size[0], size[1]}, /*align_corners=*/false)
                .clamp(0.0, 1.0);
    }
    if (config.do_center_crop) {
        if (config.crop_height > size[0] || config.crop_width > size[1])
            fail(kComponent, "preprocess", "crop {}x{} is larger than the {}x{} image (resized from {}x{})",
                 config.crop_height, config.crop_width, size[0], size[1], h, w);
        // transformers image_transforms.center_crop: top = (H - ch) // 2, left = (W - cw) // 2.
        x = x.narrow(2, (size[0] - config.crop_height) / 2, config.crop_height)
                .narrow(3, (size[1] - config.crop_width) / 2, config.crop_width);
    }
    // x is the uint8 value / 255; upstream multiplies the uint8 value by rescale_factor.
    x = x * (config.do_rescale ? 255.0 * config.rescale_factor : 255.0);
    if (config.do_normalize) {
        if (config.image_mean.size() != 3 || config.image_std.size() != 3)
            fail(kComponent, "preprocess", "image_mean/image_std need 3 entries, got {}/{}",
                 config.image_mean.size(), config.image_std.size());
        const auto opts = at::TensorOptions().dtype(at::kDouble);
        const at::Tensor mean = at::tensor(config.image_mean, opts).to(x.options()).view({1, 3, 1, 1});
        const at::Tensor std = at::tensor(config.image_std, opts).to(x.options()).view({1, 3, 1, 1});
        x = (x - mean) / std;
    }
    return x.contiguous();
}

// --- modules ------------------------------------------------------------------------------------

ClipVisionEmbeddingsImpl::ClipVisionEmbeddingsImpl(const ClipVisionConfig& config) {
    class_embedding = register_parameter("class_embedding", at::randn({config.hidden_size}) * 0.02);
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(config.num_channels, config.hidden_size, config.patch_size)
                              .stride(config.patch_size)
                              .bias(false)));
    position_embedding = register_module("position_embedding",
                                         torch::nn::Embedding(config.num_positions(), config.hidden_size));
}

at::Tensor ClipVisionEmbeddingsImpl::forward(const at::Tensor& pixel_values) {
    // CLIPVisionEmbeddings.forward: [B, C, S, S] -> conv [B, H, G, G] -> [B, G*G, H] -> class token
    // first [B, N+1, H] -> + position_embedding(arange(N+1)) (= the whole table).
    const at::Tensor& weight = patch_embedding->weight;
    const at::Tensor patches =
        patch_embedding->forward(pixel_values.to(weight.scalar_type())).flatten(2).transpose(1, 2);
    const at::Tensor cls = class_embedding.to(patches.scalar_type()).expand({patches.size(0), 1, -1});
    return at::cat({cls, patches}, 1) + position_embedding->weight.unsqueeze(0);
}

ClipMLPImpl::ClipMLPImpl(const ClipVisionConfig& config) : quick_gelu_(config.hidden_act == "quick_gelu") {
    fc1 = register_module("fc1", torch::nn::Linear(config.hidden_size, config.intermediate_size));
    fc2 = register_module("fc2", torch::nn::Linear(config.intermediate_size, config.hidden_size));
}

at::Tensor ClipMLPImpl::forward(const at::Tensor& x) {
    // CLIPMLP.forward: [B, T, H] -> fc1 [B, T, I] -> act -> fc2 [B, T, H]. ACT2FN["gelu"] is the exact
    // erf GELU; "quick_gelu" (OpenAI CLIPs) is x * sigmoid(1.702 x).
    const at::Tensor h = fc1->forward(x);
    return fc2->forward(quick_gelu_ ? h * at::sigmoid(1.702 * h) : at::gelu(h));
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipVisionConfig& config) {
    const auto ln = torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps);
    self_attn = register_module("self_attn", HfSelfAttention(config.hidden_size, config.num_attention_heads));
    layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", ClipMLP(config));
    layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(ln));
}

at::Tensor ClipEncoderLayerImpl::forward(const at::Tensor& x) {
    // CLIPEncoderLayer.forward: [B, T, H] -> [B, T, H]
    const at::Tensor h = x + self_attn->forward(layer_norm1->forward(x));
    return h + mlp->forward(layer_norm2->forward(h));
}

ClipEncoderImpl::ClipEncoderImpl(const ClipVisionConfig& config) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(config));
}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& config) : config_(config) {
    config_.validate("ClipVisionModel");
    const auto ln = torch::nn::LayerNormOptions({config_.hidden_size}).eps(config_.layer_norm_eps);
    embeddings = register_module("embeddings", ClipVisionEmbeddings(config_));
    pre_layrnorm = register_module("pre_layrnorm", torch::nn::LayerNorm(ln));
    encoder = register_module("encoder", ClipEncoder(config_));
    post_layernorm = register_module("post_layernorm", torch::nn::LayerNorm(ln));
}

at::Tensor ClipVisionModelImpl::embed(const at::Tensor& pixel_values) {
    // CLIPVisionTransformer.forward up to the encoder: [B, C, S, S] -> [B, N+1, H]
    const int64_t s = config_.image_size;
    if (pixel_values.dim() != 4 || pixel_values.size(1) != config_.num_channels ||
        pixel_values.size(2) != s || pixel_values.size(3) != s)
        fail(kComponent, "forward", "expected pixel_values [B, {}, {}, {}], got {}", config_.num_channels, s,
             s, shape_str(pixel_values.sizes()));
    return pre_layrnorm->forward(embeddings->forward(pixel_values));
}

std::vector<at::Tensor> ClipVisionModelImpl::forward_hidden_states(const at::Tensor& pixel_values) {
    // [B, C, S, S] -> num_hidden_layers + 1 states [B, N+1, H]
    std::vector<at::Tensor> states;
    states.reserve(static_cast<size_t>(config_.num_hidden_states()));
    states.push_back(embed(pixel_values));
    for (const auto& layer : *encoder->layers)
        states.push_back(layer->as<ClipEncoderLayerImpl>()->forward(states.back()));
    return states;
}

at::Tensor ClipVisionModelImpl::penultimate(const at::Tensor& pixel_values) {
    // [B, C, S, S] -> hidden_states[-2] = output of layer L-2 (= states[0] for a 1-layer model)
    at::Tensor h = embed(pixel_values);
    for (int64_t i = 0; i + 1 < config_.num_hidden_layers; ++i)
        h = encoder->layers[static_cast<size_t>(i)]->as<ClipEncoderLayerImpl>()->forward(h);
    return h;
}

}  // namespace st::plugins::wan
