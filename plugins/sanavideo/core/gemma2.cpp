// Gemma2Model forward. Port of huggingface/transformers
// src/transformers/models/gemma2/modeling_gemma2.py (v4.47.0, commit 5d7739f15a); each function names
// the upstream one it follows. Quirks checked by tests/golden/hf_gemma2 (case.json): RMSNorm in fp32
// with (1 + w), the embedding normaliser rounded to the activation dtype, rotate-half RoPE on every
// position, scale query_pre_attn_scalar^-0.5, soft-cap before the mask, windows on even layers.
#include "core/gemma2.h"

#include <ATen/ATen.h>

#include <fmt/ranges.h>

#include <cmath>

#include "st/attention.h"
#include "st/error.h"

namespace st::plugins::sanavideo {
namespace {

constexpr const char* kComponent = "model.sanavideo.gemma2";

// modeling_gemma2.rotate_half: cat(-x2, x1) over the last dim.
at::Tensor rotate_half(const at::Tensor& x) {
    const int64_t half = x.size(-1) / 2;
    return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

// --- Gemma2RMSNorm ---------------------------------------------------------------------------------

Gemma2RMSNormImpl::Gemma2RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", at::zeros({dim}, options));
}

// [..., dim] -> [..., dim]. Gemma2RMSNorm.forward: (x.float() * rsqrt(mean(x^2) + eps)) * (1 + w.float()),
// cast back (Gemma multiplies by the weight before the cast, unlike Llama).
at::Tensor Gemma2RMSNormImpl::forward(const at::Tensor& x) {
    const at::Tensor xf = x.to(at::kFloat);
    const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return (normed * (1.0 + weight.to(at::kFloat))).to(x.scalar_type());
}

// --- Linear / Embedding without init ---------------------------------------------------------------

Gemma2LinearImpl::Gemma2LinearImpl(int64_t in_features, int64_t out_features,
                                   const at::TensorOptions& options) {
    weight = register_parameter("weight", at::zeros({out_features, in_features}, options));
}

at::Tensor Gemma2LinearImpl::forward(const at::Tensor& x) {
    return at::linear(x, weight);
}

Gemma2EmbeddingImpl::Gemma2EmbeddingImpl(int64_t num_embeddings, int64_t dim,
                                         const at::TensorOptions& options) {
    weight = register_parameter("weight", at::zeros({num_embeddings, dim}, options));
}

at::Tensor Gemma2EmbeddingImpl::forward(const at::Tensor& ids) {
    return at::embedding(weight, ids);
}

// --- Gemma2MLP -------------------------------------------------------------------------------------

Gemma2MLPImpl::Gemma2MLPImpl(const Gemma2Config& config, const at::TensorOptions& options) {
    gate_proj =
        register_module("gate_proj", Gemma2Linear(config.hidden_size, config.intermediate_size, options));
    up_proj = register_module("up_proj", Gemma2Linear(config.hidden_size, config.intermediate_size, options));
    down_proj =
        register_module("down_proj", Gemma2Linear(config.intermediate_size, config.hidden_size, options));
}

// [B, L, hidden] -> [B, L, hidden]. Gemma2MLP.forward with ACT2FN["gelu_pytorch_tanh"].
at::Tensor Gemma2MLPImpl::forward(const at::Tensor& x) {
    return down_proj(at::gelu(gate_proj(x), "tanh") * up_proj(x));
}

// --- RoPE ------------------------------------------------------------------------------------------

// Gemma2RotaryEmbedding: inv_freq = 1 / theta^(arange(0, hd, 2) / hd) in float32, freqs = pos * inv_freq
// (upstream's [hd/2, 1] @ [1, L] product has one term, so it equals the elementwise product), emb =
// cat(freqs, freqs), cos/sin in float32 cast to the activation dtype.
Gemma2Rotary gemma2_rotary(const Gemma2Config& config, int64_t length, at::ScalarType dtype,
                           at::Device device) {
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    const at::Tensor exponent = at::arange(0, config.head_dim, 2, f32.dtype(at::kLong)).to(at::kFloat) /
                                static_cast<double>(config.head_dim);
    const at::Tensor inv_freq = at::pow(config.rope_theta, exponent).reciprocal();
    const at::Tensor positions = at::arange(length, f32);
    const at::Tensor freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);  // [L, hd/2]
    const at::Tensor emb = at::cat({freqs, freqs}, -1);                       // [L, hd]
    return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// --- Gemma2Attention -------------------------------------------------------------------------------

Gemma2AttentionImpl::Gemma2AttentionImpl(const Gemma2Config& config, int64_t layer_index,
                                         const at::TensorOptions& options)
    : config_(config) {
    const int64_t q_dim = config.num_attention_heads * config.head_dim;
    const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
    q_proj = register_module("q_proj", Gemma2Linear(config.hidden_size, q_dim, options));
    k_proj = register_module("k_proj", Gemma2Linear(config.hidden_size, kv_dim, options));
    v_proj = register_module("v_proj", Gemma2Linear(config.hidden_size, kv_dim, options));
    o_proj = register_module("o_proj", Gemma2Linear(q_dim, config.hidden_size, options));
    if (config.is_sliding(layer_index) && config.sliding_window) window_ = *config.sliding_window;
}

// x [B, L, hidden] -> [B, L, hidden]. Gemma2Attention.forward + eager_attention_forward: project, RoPE on
// q and k, scores * query_pre_attn_scalar^-0.5, soft-cap, causal + padding (+ window) masks, softmax
// in float32, o_proj. GQA is st::sdk::attention's (k/v keep their H_kv heads).
at::Tensor Gemma2AttentionImpl::forward(const at::Tensor& x, const Gemma2Rotary& rotary,
                                        const at::Tensor& key_mask) {
    const int64_t b = x.size(0), l = x.size(1), hd = config_.head_dim;
    const int64_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
    at::Tensor q = q_proj(x).view({b, l, heads, hd}).transpose(1, 2);     // [B, H, L, hd]
    at::Tensor k = k_proj(x).view({b, l, kv_heads, hd}).transpose(1, 2);  // [B, H_kv, L, hd]
    const at::Tensor v = v_proj(x).view({b, l, kv_heads, hd}).transpose(1, 2);
    const at::Tensor cos = rotary.cos.view({1, 1, l, hd}), sin = rotary.sin.view({1, 1, l, hd});
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    st::sdk::AttentionOptions o;
    o.scale = std::pow(config_.query_pre_attn_scalar, -0.5);
    o.causal = true;
    o.window = window_;
    o.softcap = config_.attn_logit_softcapping.value_or(0.0);
    o.key_mask = key_mask;
    const at::Tensor out = st::sdk::attention(q, k, v, o);  // [B, H, L, hd]
    return o_proj(out.transpose(1, 2).reshape({b, l, heads * hd}));
}

// --- Gemma2DecoderLayer ----------------------------------------------------------------------------

Gemma2DecoderLayerImpl::Gemma2DecoderLayerImpl(const Gemma2Config& config, int64_t layer_index,
                                               const at::TensorOptions& options) {
    const int64_t d = config.hidden_size;
    const double eps = config.rms_norm_eps;
    self_attn = register_module("self_attn", Gemma2Attention(config, layer_index, options));
    mlp = register_module("mlp", Gemma2MLP(config, options));
    input_layernorm = register_module("input_layernorm", Gemma2RMSNorm(d, eps, options));
    post_attention_layernorm = register_module("post_attention_layernorm", Gemma2RMSNorm(d, eps, options));
    pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", Gemma2RMSNorm(d, eps, options));
    post_feedforward_layernorm =
        register_module("post_feedforward_layernorm", Gemma2RMSNorm(d, eps, options));
}

// [B, L, hidden] -> [B, L, hidden]. Gemma2DecoderLayer.forward (the sandwich norms).
at::Tensor Gemma2DecoderLayerImpl::forward(const at::Tensor& x, const Gemma2Rotary& rotary,
                                           const at::Tensor& key_mask) {
    at::Tensor h = x + post_attention_layernorm(self_attn(input_layernorm(x), rotary, key_mask));
    return h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
}

// --- Gemma2Model -----------------------------------------------------------------------------------

Gemma2ModelImpl::Gemma2ModelImpl(const Gemma2Config& config, const at::TensorOptions& options)
    : config_(config) {
    config_.validate("Gemma2Model");
    embed_tokens =
        register_module("embed_tokens", Gemma2Embedding(config.vocab_size, config.hidden_size, options));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i)
        layers->push_back(Gemma2DecoderLayer(config, i, options));
    norm = register_module("norm", Gemma2RMSNorm(config.hidden_size, config.rms_norm_eps, options));
}

// input_ids [B, L], attention_mask [B, L] -> last_hidden_state [B, L, hidden] (+ hidden states).
// Gemma2Model.forward(input_ids, attention_mask, output_hidden_states) without a cache.
Gemma2Output Gemma2ModelImpl::run(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  bool output_hidden_states) {
    if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(1) < 1 ||
        !at::isIntegralType(input_ids.scalar_type(), /*includeBool=*/false))
        fail(kComponent, "forward", "input_ids must be an integer tensor [B, L] with L >= 1, got {} {}",
             input_ids.defined() ? c10::toString(input_ids.scalar_type()) : "undefined",
             input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
    const int64_t b = input_ids.size(0), l = input_ids.size(1);
    if (attention_mask.defined() &&
        (attention_mask.dim() != 2 || attention_mask.size(0) != b || attention_mask.size(1) != l))
        fail(kComponent, "forward", "attention_mask must be [B, L] = [{}, {}] like input_ids, got {}", b, l,
             attention_mask.sizes());
    const at::Tensor& weight = embed_tokens->weight;
    const at::Tensor ids = input_ids.to(weight.device(), at::kLong);
    if (b > 0) {
        const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
        if (lo < 0 || hi >= config_.vocab_size)
            fail(kComponent, "forward", "input_ids hold ids in [{}, {}], outside the vocabulary of {}", lo,
                 hi, config_.vocab_size);
    }
    const at::Tensor key_mask =
        attention_mask.defined() ? attention_mask.to(weight.device()).ne(0) : at::Tensor();

    Gemma2Output out;
    at::Tensor h = embed_tokens(ids);  // [B, L, hidden]
    // normalizer = torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype): rounded to the dtype first.
    h = h * at::scalar_tensor(std::sqrt(static_cast<double>(config_.hidden_size)), h.options());
    const Gemma2Rotary rotary = gemma2_rotary(config_, l, h.scalar_type(), h.device());
    for (size_t i = 0; i < layers->size(); ++i) {
        if (output_hidden_states) out.hidden_states.push_back(h);
        h = layers[i]->as<Gemma2DecoderLayerImpl>()->forward(h, rotary, key_mask);
    }
    h = norm(h);
    if (output_hidden_states) out.hidden_states.push_back(h);
    out.last_hidden_state = h;
    return out;
}

at::Tensor Gemma2ModelImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
    return run(input_ids, attention_mask, false).last_hidden_state;
}

}  // namespace st::plugins::sanavideo
