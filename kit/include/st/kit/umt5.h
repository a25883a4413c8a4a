// UMT5 text encoder (the encoder of google/umt5-xxl as Wan uses it), registered under the HF
// transformers `UMT5EncoderModel` names so that named_parameters() equals the diffusers
// `text_encoder/model.safetensors` keys:
//   shared.weight
//   encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
//   encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight   [buckets, heads]
//   encoder.block.{i}.layer.0.layer_norm.weight
//   encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight
//   encoder.block.{i}.layer.1.layer_norm.weight
//   encoder.final_layer_norm.weight
// The original Wan t5.py layout (models_t5_umt5-xxl-enc-bf16) loads through `umt5_wan_to_hf_key`.
//
// Ports: Wan-Video/Wan2.2 wan/modules/t5.py (T5Encoder, T5SelfAttention, T5Attention,
// T5RelativeEmbedding, T5FeedForward, T5LayerNorm) — cross-checked against transformers
// modeling_umt5.py semantics (the golden's hf_layout check).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <filesystem>
#include <optional>
#include <string>

#include "st/kit/umt5_config.h"

namespace st::sdk {
class TensorSource;
}

namespace st::kit {

/// T5 RMS norm: x * rsqrt(mean(x^2) + eps) * weight, statistics in fp32, no mean, no bias.
class UMT5LayerNormImpl : public torch::nn::Module {
  public:
    UMT5LayerNormImpl(int64_t dim, double eps);
    at::Tensor forward(const at::Tensor& x);
    at::Tensor weight;

  private:
    double eps_;
};
TORCH_MODULE(UMT5LayerNorm);

/// Self-attention with its own relative-position bias table (UMT5: every layer has one).
class UMT5AttentionImpl : public torch::nn::Module {
  public:
    explicit UMT5AttentionImpl(const UMT5Config& config);
    /// x [B, L, D], key_mask [B, L] (nonzero = attend) -> [B, L, D]
    at::Tensor forward(const at::Tensor& x, const at::Tensor& key_mask);
    /// The additive position bias [1, H, L, L] for a length-L sequence.
    at::Tensor position_bias(int64_t length) const;

    torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
    torch::nn::Embedding relative_attention_bias{nullptr};

  private:
    UMT5Config config_;
};
TORCH_MODULE(UMT5Attention);

/// Gated tanh-GELU FFN: wo(gelu_tanh(wi_0 x) * wi_1 x).
class UMT5DenseGatedActDenseImpl : public torch::nn::Module {
  public:
    explicit UMT5DenseGatedActDenseImpl(const UMT5Config& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, L, D] -> [B, L, D]
    torch::nn::Linear wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
};
TORCH_MODULE(UMT5DenseGatedActDense);

/// layer.0: pre-norm self-attention sublayer.
class UMT5LayerSelfAttentionImpl : public torch::nn::Module {
  public:
    explicit UMT5LayerSelfAttentionImpl(const UMT5Config& config);
    UMT5Attention SelfAttention{nullptr};  // NOLINT(readability-identifier-naming): checkpoint name
    UMT5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(UMT5LayerSelfAttention);

/// layer.1: pre-norm FFN sublayer.
class UMT5LayerFFImpl : public torch::nn::Module {
  public:
    explicit UMT5LayerFFImpl(const UMT5Config& config);
    UMT5DenseGatedActDense DenseReluDense{nullptr};  // NOLINT(readability-identifier-naming)
    UMT5LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(UMT5LayerFF);

class UMT5BlockImpl : public torch::nn::Module {
  public:
    explicit UMT5BlockImpl(const UMT5Config& config);
    /// x [B, L, D], key_mask [B, L] -> [B, L, D]
    at::Tensor forward(const at::Tensor& x, const at::Tensor& key_mask);
    UMT5LayerSelfAttention attention{nullptr};  ///< registered as layer.0
    UMT5LayerFF ff{nullptr};                    ///< registered as layer.1
};
TORCH_MODULE(UMT5Block);

class UMT5EncoderStackImpl : public torch::nn::Module {
  public:
    explicit UMT5EncoderStackImpl(const UMT5Config& config);
    torch::nn::ModuleList block{nullptr};
    UMT5LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(UMT5EncoderStack);

/// What the DiT receives for a batch of prompts (Wan `T5EncoderModel.__call__` + the pipelines'
/// zero padding; diffusers `WanPipeline._get_t5_prompt_embeds`).
struct UMT5Output {
    at::Tensor last_hidden_state;  ///< [B, L, D] encoder output on every position (padded ones too)
    at::Tensor prompt_embeds;      ///< [B, text_len, D] rows [0, seq_len) of the above, the rest exactly 0
    at::Tensor seq_lens;           ///< [B] int64, attention_mask.sum(1)
};

class UMT5EncoderImpl : public torch::nn::Module {
  public:
    explicit UMT5EncoderImpl(const UMT5Config& config);

    /// input_ids [B, L] int64, attention_mask [B, L] (1 = token, 0 = padding) -> last hidden state
    /// [B, L, D]. Padded query rows are computed too (they attend to the unmasked keys only).
    at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask);

    /// Runs forward and shapes the result as Wan does: keep the first seq_len rows of each sample
    /// and zero-pad to config.text_len. Requires L <= text_len and a mask that is 1 on a prefix.
    UMT5Output encode_prompts(const at::Tensor& input_ids, const at::Tensor& attention_mask);

    const UMT5Config& config() const { return config_; }

    torch::nn::Embedding shared{nullptr};
    UMT5EncoderStack encoder{nullptr};

  private:
    UMT5Config config_;
};
TORCH_MODULE(UMT5Encoder);

/// Checkpoint layouts accepted by `load_umt5_weights`.
enum class UMT5Layout { hf, wan };
const char* umt5_layout_name(UMT5Layout layout);

/// Which layout a checkpoint uses (by its embedding name); throws st::Error naming the source when
/// it has neither.
UMT5Layout detect_umt5_layout(const st::sdk::TensorSource& source);

/// Original Wan t5.py name -> HF name ("blocks.3.ffn.gate.0.weight" ->
/// "encoder.block.3.layer.1.DenseReluDense.wi_0.weight"); nullopt for names outside the table.
std::optional<std::string> umt5_wan_to_hf_key(const std::string& wan_name);
/// The inverse mapping (HF -> Wan); nullopt for names outside the table.
std::optional<std::string> umt5_hf_to_wan_key(const std::string& hf_name);

/// Loads a checkpoint in either layout strictly into `model` (every tensor present with the right
/// shape, nothing left over; `encoder.embed_tokens.weight` is accepted as the tied alias of
/// `shared.weight`). Logs one line with the layout, tensor count and source dtypes.
void load_umt5_weights(UMT5Encoder& model, const st::sdk::TensorSource& source);

/// Builds and loads a text encoder from a path:
///  - a folder with config.json + model.safetensors (or sharded index): HF/diffusers text_encoder,
///  - a .safetensors file (either layout): config recovered from the tensor shapes.
/// Parameters end in `dtype` (fp32 by default; the file dtype is converted).
UMT5Encoder load_umt5_encoder(const std::filesystem::path& path, at::ScalarType dtype = at::kFloat);

/// Writes a randomly initialised text_encoder folder (config.json + model.safetensors, HF names),
/// deterministic for a given seed. Init: normal(0, 1) embeddings and norms at 1 plus small noise,
/// linear weights normal(0, 1/sqrt(fan_in)), bias tables normal(0, 0.5).
void write_random_umt5(const std::filesystem::path& out_dir, const UMT5Config& config, uint64_t seed);

}  // namespace st::kit
