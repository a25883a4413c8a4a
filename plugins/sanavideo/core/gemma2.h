// Gemma-2 decoder as the Sana / Sana Video text encoder (reference/models.md §6.4): transformers
// `Gemma2Model` (no LM head), registered under its names so that named_parameters() equals the keys of
// a Gemma2Model checkpoint (a Gemma2ForCausalLM file adds the prefix `model.` and `lm_head.weight`,
// see gemma2_weights.h):
//   embed_tokens.weight                                   [vocab, hidden]
//   layers.{i}.input_layernorm.weight                     [hidden]  (RMSNorm, zero-centred weight)
//   layers.{i}.self_attn.{q_proj [H*hd, hidden], k_proj / v_proj [H_kv*hd, hidden],
//                         o_proj [hidden, H*hd]}.weight
//   layers.{i}.post_attention_layernorm.weight, layers.{i}.pre_feedforward_layernorm.weight,
//   layers.{i}.post_feedforward_layernorm.weight           [hidden]
//   layers.{i}.mlp.{gate_proj, up_proj [inter, hidden], down_proj [hidden, inter]}.weight
//   norm.weight                                           [hidden]
//
// Port of huggingface/transformers src/transformers/models/gemma2/modeling_gemma2.py (v4.47.0, commit
// 5d7739f15a): Gemma2RMSNorm, Gemma2MLP, Gemma2RotaryEmbedding + apply_rotary_pos_emb, Gemma2Attention
// with eager_attention_forward, Gemma2DecoderLayer, Gemma2Model.forward. Attention runs through
// st::sdk::attention (grouped-query heads, soft-capping, causal + key mask, the sliding window on the
// sliding layers); its softmax is in float32 as upstream's, its scores too (upstream multiplies q.k in the
// activation dtype).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "core/gemma2_config.h"

namespace st::plugins::sanavideo {

/// y = x * rsqrt(mean(x^2) + eps) * (1 + w), computed in float32 and cast back to x's dtype (the
/// weight is stored zero-centred).
class Gemma2RMSNormImpl : public torch::nn::Module {
  public:
    Gemma2RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options);
    at::Tensor forward(const at::Tensor& x);  ///< [..., dim] -> [..., dim]
    at::Tensor weight;

  private:
    double eps_;
};
TORCH_MODULE(Gemma2RMSNorm);

/// nn.Linear(in, out, bias=False): y = x W^T. Parameters are created zeroed in `options` (no
/// random init: the model is always loaded from a checkpoint, and a 2B model built in fp32 first
/// would need twice the memory).
class Gemma2LinearImpl : public torch::nn::Module {
  public:
    Gemma2LinearImpl(int64_t in_features, int64_t out_features, const at::TensorOptions& options);
    at::Tensor forward(const at::Tensor& x);  ///< [..., in] -> [..., out]
    at::Tensor weight;                        ///< [out, in]
};
TORCH_MODULE(Gemma2Linear);

/// nn.Embedding(vocab, hidden) without random init (as Gemma2Linear).
class Gemma2EmbeddingImpl : public torch::nn::Module {
  public:
    Gemma2EmbeddingImpl(int64_t num_embeddings, int64_t dim, const at::TensorOptions& options);
    at::Tensor forward(const at::Tensor& ids);  ///< [B, L] integer -> [B, L, dim]
    at::Tensor weight;                          ///< [num_embeddings, dim]
};
TORCH_MODULE(Gemma2Embedding);

/// down_proj(gelu_tanh(gate_proj(x)) * up_proj(x)).
class Gemma2MLPImpl : public torch::nn::Module {
  public:
    Gemma2MLPImpl(const Gemma2Config& config, const at::TensorOptions& options);
    at::Tensor forward(const at::Tensor& x);  ///< [B, L, hidden] -> [B, L, hidden]
    Gemma2Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Gemma2MLP);

/// Rotary tables for positions 0 .. length-1 (every row, padding or not, as upstream):
/// cos/sin [length, head_dim] = cos/sin(cat(f, f)), f = pos * theta^(-2i/head_dim), computed in
/// float32 and rounded to `dtype`.
struct Gemma2Rotary {
    at::Tensor cos, sin;
};
Gemma2Rotary gemma2_rotary(const Gemma2Config& config, int64_t length, at::ScalarType dtype,
                           at::Device device);

class Gemma2AttentionImpl : public torch::nn::Module {
  public:
    Gemma2AttentionImpl(const Gemma2Config& config, int64_t layer_index, const at::TensorOptions& options);
    /// x [B, L, hidden], rotary tables [L, head_dim], key_mask [B, L] bool (true = token) ->
    /// [B, L, hidden]. Causal; the window when the layer is a sliding one.
    at::Tensor forward(const at::Tensor& x, const Gemma2Rotary& rotary, const at::Tensor& key_mask);
    Gemma2Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

  private:
    Gemma2Config config_;
    int64_t window_ = 0;  ///< 0 = global layer
};
TORCH_MODULE(Gemma2Attention);

class Gemma2DecoderLayerImpl : public torch::nn::Module {
  public:
    Gemma2DecoderLayerImpl(const Gemma2Config& config, int64_t layer_index, const at::TensorOptions& options);
    /// h += post_attention_layernorm(attn(input_layernorm(h)));
    /// h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).  [B, L, hidden] -> same.
    at::Tensor forward(const at::Tensor& x, const Gemma2Rotary& rotary, const at::Tensor& key_mask);
    Gemma2Attention self_attn{nullptr};
    Gemma2MLP mlp{nullptr};
    Gemma2RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
    Gemma2RMSNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};
};
TORCH_MODULE(Gemma2DecoderLayer);

struct Gemma2Output {
    at::Tensor last_hidden_state;  ///< [B, L, hidden] = norm(output of the last layer), every position
    /// With output_hidden_states, num_hidden_layers + 1 tensors [B, L, hidden] as transformers'
    /// hidden_states: [0] the scaled embeddings, [i] the output of layer i-1 for i < num_hidden_layers,
    /// [num_hidden_layers] = last_hidden_state (the final norm applied). Empty otherwise.
    std::vector<at::Tensor> hidden_states;
};

class Gemma2ModelImpl : public torch::nn::Module {
  public:
    /// Parameters zeroed in `options` (dtype, device); load them with load_gemma2_weights.
    explicit Gemma2ModelImpl(const Gemma2Config& config, const at::TensorOptions& options = at::kFloat);

    /// input_ids [B, L] integer, attention_mask [B, L] (1 = token, 0 = padding; undefined = all
    /// tokens) -> Gemma2Output in the parameters' dtype. Padded query rows are computed too: they
    /// attend to the valid keys of their causal window (Sana passes them on with the mask). A row
    /// left with no valid key (a padding run longer than the sliding window, never the case for
    /// Sana's <= ~450 tokens and window 4096) is zero here where transformers averages every key.
    Gemma2Output run(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                     bool output_hidden_states = false);
    /// run(...).last_hidden_state
    at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});

    const Gemma2Config& config() const { return config_; }

    Gemma2Embedding embed_tokens{nullptr};
    torch::nn::ModuleList layers{nullptr};
    Gemma2RMSNorm norm{nullptr};

  private:
    Gemma2Config config_;
};
TORCH_MODULE(Gemma2Model);

}  // namespace st::plugins::sanavideo
