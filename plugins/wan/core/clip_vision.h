// CLIP vision encoder of Wan 2.1 I2V: the HF transformers `CLIPVisionModelWithProjection` that the
// diffusers WanImageToVideoPipeline keeps in `image_encoder/` (ViT-H/14 at 224 px, open-clip
// XLM-RoBERTa-large-ViT-huge-14 weights), and the `CLIPImageProcessor` of `image_processor/`. Wan
// conditions on `hidden_states[-2]` [B, 257, 1280]: the output of encoder layer L-2 (the last layer
// and post_layernorm are never used). Registered under the HF names so that named_parameters() equals
// the checkpoint keys after the `vision_model.` prefix:
//   embeddings.class_embedding [H], embeddings.patch_embedding.weight [H, C, P, P] (no bias),
//   embeddings.position_embedding.weight [N+1, H], pre_layrnorm.{weight,bias} (sic, upstream spelling),
//   encoder.layers.{i}.self_attn.{q_proj,k_proj,v_proj,out_proj}.{weight,bias},
//   encoder.layers.{i}.layer_norm1.*, .mlp.fc1.*, .mlp.fc2.*, .layer_norm2.*,
//   post_layernorm.{weight,bias}
// `visual_projection.weight` [projection_dim, H] of the WithProjection file is shape-checked and
// ignored (it does not affect the hidden states).
//
// Ports: transformers models/clip/modeling_clip.py (CLIPVisionEmbeddings, CLIPAttention, CLIPMLP,
// CLIPEncoderLayer, CLIPEncoder, CLIPVisionTransformer), configuration_clip.py (CLIPVisionConfig,
// CLIPConfig.vision_config) and image_processing_clip.py (CLIPImageProcessor.preprocess); diffusers
// pipeline_wan_i2v.py WanImageToVideoPipeline.encode_image. The original Wan repo (wan/modules/clip.py)
// instead squashes the frame to 224x224 without a crop; we follow the diffusers pipeline.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/kit_names.h"
#include "st/kit/hf_attention.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan {

/// HF CLIPVisionConfig (the fields that shape the forward).
struct ClipVisionConfig {
    int64_t hidden_size = 1280;
    int64_t intermediate_size = 5120;
    int64_t num_hidden_layers = 32;
    int64_t num_attention_heads = 16;
    int64_t num_channels = 3;
    int64_t image_size = 224;
    int64_t patch_size = 14;
    std::string hidden_act = "gelu";  ///< "gelu" (exact erf) or "quick_gelu" (x * sigmoid(1.702 x))
    double layer_norm_eps = 1e-5;
    int64_t projection_dim = 1024;  ///< only the (ignored) visual_projection uses it

    /// Wan 2.1 I2V image_encoder: open-clip ViT-H/14 as CLIPVisionModelWithProjection.
    static ClipVisionConfig vit_h_14();
    /// Test size: hidden 32, intermediate 64, 3 layers, 4 heads, patch 14, image 56 (4x4 patches +
    /// class = 17 tokens), projection 16, gelu.
    static ClipVisionConfig tiny();

    /// Parses an HF CLIPVisionConfig (`model_type` "clip_vision_model") or a full CLIPConfig
    /// (`model_type` "clip": its `vision_config` object). Absent keys take transformers'
    /// CLIPVisionConfig defaults (ViT-B/32: hidden 768, 12 layers, patch 32, quick_gelu, ...), as
    /// from_pretrained would. st::Error naming `origin` and the key for another model_type, a
    /// hidden_act other than gelu/quick_gelu, wrongly typed or inconsistent values. Other keys
    /// (dropouts, initializer settings, text_config, ...) do not change the forward and are ignored.
    static ClipVisionConfig from_json(const nlohmann::json& j, const std::string& origin = "config.json");
    static ClipVisionConfig from_file(const std::filesystem::path& config_json);
    /// HF config.json in the field layout of the Wan image_encoder (loads with transformers).
    nlohmann::json to_json() const;
    /// Throws st::Error naming `origin` and the first inconsistent field.
    void validate(const std::string& origin) const;

    int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
    int64_t num_positions() const { return num_patches() + 1; }  ///< tokens per image (257 for ViT-H)
    int64_t num_hidden_states() const { return num_hidden_layers + 1; }

    bool operator==(const ClipVisionConfig&) const = default;
};

/// HF CLIPImageProcessor settings (image_processor/preprocessor_config.json). Defaults = CLIP's
/// (and the Wan 2.1 I2V repo's): shortest edge 224, bicubic, centre crop 224, rescale 1/255,
/// OpenAI CLIP mean/std.
struct ClipImageProcessorConfig {
    bool do_resize = true;
    /// `size`: {"shortest_edge": n} or an int (aspect kept, long edge int(n * long / short)), or
    /// {"height", "width"} (size_shortest_edge = 0: resize to exactly that size).
    int64_t size_shortest_edge = 224;
    int64_t size_height = 0;
    int64_t size_width = 0;
    int64_t resample = 3;  ///< PIL code; only 3 (bicubic) is supported
    bool do_center_crop = true;
    int64_t crop_height = 224;
    int64_t crop_width = 224;
    bool do_rescale = true;
    double rescale_factor = 1.0 / 255.0;
    bool do_normalize = true;
    std::vector<double> image_mean{0.48145466, 0.4578275, 0.40821073};
    std::vector<double> image_std{0.26862954, 0.26130258, 0.27577711};

    /// The CLIP settings at another resolution (size and crop = `image_size`), e.g. for tiny models.
    static ClipImageProcessorConfig for_image_size(int64_t image_size);
    /// Parses preprocessor_config.json: `size` / `crop_size` as objects or ints, the do_* flags,
    /// rescale_factor, image_mean/std (3 entries each), resample. st::Error naming `origin` and the key
    /// for an unsupported resample, a std entry <= 0, wrongly typed values. Other keys are ignored.
    static ClipImageProcessorConfig from_json(const nlohmann::json& j,
                                              const std::string& origin = "preprocessor_config.json");
    static ClipImageProcessorConfig from_file(const std::filesystem::path& preprocessor_json);
    nlohmann::json to_json() const;  ///< the field layout of the Wan 2.1 I2V repo's file

    /// [out_h, out_w] after the resize step for an input of h x w (unchanged when !do_resize).
    std::vector<int64_t> resized_size(int64_t h, int64_t w) const;

    bool operator==(const ClipImageProcessorConfig&) const = default;
};

/// CLIPImageProcessor.preprocess on our pixel convention: pixels [B, 3, H, W] float in [-1, 1]
/// (any float dtype, any device) -> pixel_values [B, 3, crop_h, crop_w] float32 on the same device:
/// x01 = (x + 1) / 2 -> resize (bicubic, antialiased, Pillow's filter; then clamped to [0, 1] as the
/// uint8 result of PIL would be) -> centre crop (offsets floor((size - crop) / 2)) -> x01 * 255 *
/// rescale_factor -> (x - mean) / std. Upstream resizes uint8 PIL images, so real-image parity with
/// transformers is ~1/255 (our resize has no uint8 rounding). st::Error when the crop is larger than
/// the (resized) image or the input is not [B, 3, H, W].
at::Tensor clip_preprocess(const at::Tensor& pixels, const ClipImageProcessorConfig& config);

/// CLIPVisionEmbeddings: patch conv (stride = patch, no bias) -> prepend class token -> + positions.
class ClipVisionEmbeddingsImpl : public torch::nn::Module {
  public:
    explicit ClipVisionEmbeddingsImpl(const ClipVisionConfig& config);
    at::Tensor forward(const at::Tensor& pixel_values);  ///< [B, C, S, S] -> [B, N+1, H]
    at::Tensor class_embedding;                          ///< [H]
    torch::nn::Conv2d patch_embedding{nullptr};
    torch::nn::Embedding position_embedding{nullptr};  ///< weight [N+1, H]
};
TORCH_MODULE(ClipVisionEmbeddings);

/// CLIPMLP: fc2(act(fc1(x))).
class ClipMLPImpl : public torch::nn::Module {
  public:
    explicit ClipMLPImpl(const ClipVisionConfig& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, T, H] -> [B, T, H]
    torch::nn::Linear fc1{nullptr}, fc2{nullptr};

  private:
    bool quick_gelu_;
};
TORCH_MODULE(ClipMLP);

/// CLIPEncoderLayer (pre-LN): x += attn(layer_norm1(x)); x += mlp(layer_norm2(x)).
class ClipEncoderLayerImpl : public torch::nn::Module {
  public:
    explicit ClipEncoderLayerImpl(const ClipVisionConfig& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, T, H] -> [B, T, H]
    HfSelfAttention self_attn{nullptr};
    torch::nn::LayerNorm layer_norm1{nullptr};
    ClipMLP mlp{nullptr};
    torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

class ClipEncoderImpl : public torch::nn::Module {
  public:
    explicit ClipEncoderImpl(const ClipVisionConfig& config);
    torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(ClipEncoder);

/// CLIPVisionTransformer (the `vision_model` of CLIPVisionModel / ...WithProjection / CLIPModel).
class ClipVisionModelImpl : public torch::nn::Module {
  public:
    explicit ClipVisionModelImpl(const ClipVisionConfig& config);

    /// pixel_values [B, C, S, S] (S = image_size; cast to the weights' dtype as HF does) -> the
    /// num_hidden_layers + 1 hidden states [B, N+1, H] of HF `output_hidden_states=True`:
    /// [0] = pre_layrnorm(embeddings), [i] = output of encoder layer i-1. Eval semantics (CLIP has no
    /// dropout at inference). st::Error for another image size or channel count.
    std::vector<at::Tensor> forward_hidden_states(const at::Tensor& pixel_values);
    /// hidden_states[-2] (what Wan 2.1 I2V feeds the transformer) without running the last layer:
    /// [B, C, S, S] -> [B, N+1, H].
    at::Tensor penultimate(const at::Tensor& pixel_values);

    const ClipVisionConfig& config() const { return config_; }

    ClipVisionEmbeddings embeddings{nullptr};
    torch::nn::LayerNorm pre_layrnorm{nullptr};
    ClipEncoder encoder{nullptr};
    torch::nn::LayerNorm post_layernorm{nullptr};  ///< loaded (strictness), unused by the hidden states

  private:
    at::Tensor embed(const at::Tensor& pixel_values);  ///< -> hidden_states[0]
    ClipVisionConfig config_;
};
TORCH_MODULE(ClipVisionModel);

// --- weights (clip_vision_weights.cpp) ----------------------------------------------------------

/// How a checkpoint names its tensors (detected from the names, never from the file name).
struct ClipVisionLayout {
    bool vision_model_prefix = false;  ///< `vision_model.` (CLIPVisionModel[WithProjection], CLIPModel)
    bool has_projection = false;       ///< visual_projection.weight present (checked, ignored)
    int64_t ignored_tensors = 0;       ///< visual_projection, position_ids, CLIPModel text tower
    std::string describe() const;
};

/// Detects the layout; st::Error naming the source when it is no HF CLIP vision checkpoint (with a
/// hint for the original Wan / open-clip `visual.*` names).
ClipVisionLayout detect_clip_vision_layout(const st::sdk::TensorSource& source);

/// Strictly loads the `vision_model.`-prefixed or the bare layout into `model`: every tensor present
/// with its shape, nothing left over (one st::Error naming the offenders, expected and actual shapes
/// and the file). Ignored: visual_projection.weight (shape-checked against [projection_dim, H]),
/// embeddings.position_ids (a persistent buffer in transformers < 4.31), and in the prefixed layout
/// the text tower of a full CLIPModel (text_model.*, text_projection.weight, logit_scale). File dtypes
/// are converted to the model's. Logs one line. Returns the layout.
ClipVisionLayout load_clip_vision_weights(ClipVisionModel& model, const st::sdk::TensorSource& source);

/// Builds and loads a model (eval, parameters in `dtype` on `device`) from an image_encoder folder
/// (config.json + model.safetensors or a sharded *.safetensors.index.json) or a .safetensors file
/// (or index json) with config.json next to it. Pickles (.bin/.pth/.pt/.ckpt, e.g. the original
/// Wan models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth) are refused with a hint.
ClipVisionModel load_clip_vision(const std::filesystem::path& path, at::ScalarType dtype = at::kFloat,
                                 at::Device device = at::kCPU);

/// Writes a random model in the exact HF CLIPVisionModelWithProjection layout: `dir`/config.json +
/// `dir`/model.safetensors (`vision_model.` prefix + visual_projection.weight), fp32, deterministic for
/// a seed. Init: conv/linears normal(0, 1/sqrt(fan_in)), class embedding N(0, 1), positions 0.5 N,
/// norm weights 1 + 0.1 N, biases 0.1 N, so every branch matters.
void save_clip_vision(const std::filesystem::path& dir, const ClipVisionConfig& config, uint64_t seed);

/// Writes `dir`/preprocessor_config.json (the layout of the Wan repo's image_processor folder).
void save_clip_image_processor(const std::filesystem::path& dir, const ClipImageProcessorConfig& config);

/// Image -> Wan 2.1 I2V image embeddings: preprocessing + the vision model's penultimate state.
/// Owns an eval model with frozen parameters.
class ClipImageEncoder {
  public:
    /// st::Error when the processor's crop is not the model's image_size or its mean/std do not have
    /// num_channels entries.
    ClipImageEncoder(ClipVisionModel model, ClipImageProcessorConfig processor);

    /// `path`: an image_encoder folder, a .safetensors file with config.json beside it, or a
    /// diffusers pipeline root holding image_encoder/. The processor comes from the sibling
    /// image_processor/preprocessor_config.json, else a preprocessor_config.json in the model folder,
    /// else the CLIP defaults at the model's image_size (logged).
    static ClipImageEncoder load(const std::filesystem::path& path, at::ScalarType dtype = at::kFloat,
                                 at::Device device = at::kCPU);

    /// pixels [B, 3, H, W] in [-1, 1] -> [B, N+1, H] (Wan: [B, 257, 1280]) in the model's dtype on its
    /// device. Runs under no-grad (not InferenceMode: the result is an input of a trained module).
    at::Tensor encode(const at::Tensor& pixels);
    /// clip_preprocess on the model's device -> [B, 3, S, S] float32.
    at::Tensor preprocess(const at::Tensor& pixels) const;

    ClipVisionModel& model() { return model_; }
    const ClipVisionConfig& config() const { return model_->config(); }
    const ClipImageProcessorConfig& processor() const { return processor_; }

  private:
    ClipVisionModel model_;
    ClipImageProcessorConfig processor_;
};

}  // namespace st::plugins::wan
