// UMT5 encoder forward. Port of Wan-Video/Wan2.2 wan/modules/t5.py (T5Encoder and its parts) with
// the HF transformers modeling_umt5.py module names. Numerics follow t5.py exactly:
//  - no 1/sqrt(d_kv) scaling of q.k (T5 folds it into the initialisation),
//  - additive bias = per-layer relative-position bias, overwritten with finfo(dtype).min on masked
//    keys (masked_fill, not add), softmax in fp32,
//  - T5LayerNorm statistics in fp32, cast back to the weight dtype when that is half/bf16,
//  - fp16_clamp after each residual add when running in fp16.
#include "st/kit/umt5.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <limits>

#include "st/error.h"
#include "st/log.h"

namespace st::kit {
namespace {

constexpr const char* kComponent = "model.wan.umt5";

torch::nn::Linear linear(int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

// t5.py fp16_clamp: keeps fp16 activations finite after each residual add.
at::Tensor fp16_clamp(at::Tensor x) {
    if (x.scalar_type() == at::kHalf && at::isinf(x).any().item<bool>()) {
        const double clamp = 65504.0 - 1000.0;
        x = at::clamp(x, -clamp, clamp);
    }
    return x;
}

// T5RelativeEmbedding._relative_position_bucket (bidirectional). rel = key - query.
// Same ops and scalar types as the reference so the bucket boundaries agree bit for bit.
at::Tensor relative_position_bucket(const at::Tensor& rel, int64_t num_buckets, int64_t max_distance) {
    const int64_t half = num_buckets / 2;
    at::Tensor buckets = rel.gt(0).to(at::kLong) * half;
    const at::Tensor distance = rel.abs();
    const int64_t max_exact = half / 2;
    // log(0) would be -inf; those positions take the exact branch, so clamp only to keep the
    // float->int conversion defined.
    const at::Tensor scaled = at::log(distance.clamp_min(1).to(at::kFloat) / static_cast<double>(max_exact)) /
                              std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                              static_cast<double>(half - max_exact);
    at::Tensor large = scaled.to(at::kLong) + max_exact;
    large = at::clamp_max(large, half - 1);
    return buckets + at::where(distance.lt(max_exact), distance, large);
}

// torch.finfo(dtype).min, the value t5.py writes on masked keys.
double finfo_min(at::ScalarType type) {
    switch (type) {
        case at::kHalf:
            return -65504.0;
        case at::kBFloat16:
            return -3.3895313892515355e38;
        case at::kDouble:
            return -std::numeric_limits<double>::max();
        default:
            return -static_cast<double>(std::numeric_limits<float>::max());
    }
}

std::string sizes_str(at::IntArrayRef sizes) {
    std::string out = "[";
    for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
    return out + "]";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
UMT5LayerNormImpl::UMT5LayerNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor UMT5LayerNormImpl::forward(const at::Tensor& x) {
    // x [B, L, D] -> [B, L, D]; t5.py T5LayerNorm.forward
    at::Tensor y = x * at::rsqrt(x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true) + eps_);
    if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16)
        y = y.to(weight.scalar_type());
    return weight * y;
}

// ---------------------------------------------------------------------------------------------
UMT5AttentionImpl::UMT5AttentionImpl(const UMT5Config& config) : config_(config) {
    const int64_t inner = config.inner_dim();
    q = register_module("q", linear(config.d_model, inner));
    k = register_module("k", linear(config.d_model, inner));
    v = register_module("v", linear(config.d_model, inner));
    o = register_module("o", linear(inner, config.d_model));
    relative_attention_bias =
        register_module("relative_attention_bias",
                        torch::nn::Embedding(config.relative_attention_num_buckets, config.num_heads));
}

at::Tensor UMT5AttentionImpl::position_bias(int64_t length) const {
    // -> [1, H, L, L]; t5.py T5RelativeEmbedding.forward(lq=L, lk=L)
    const auto opts = at::TensorOptions().dtype(at::kLong).device(relative_attention_bias->weight.device());
    const at::Tensor pos = at::arange(length, opts);
    const at::Tensor rel = pos.unsqueeze(0) - pos.unsqueeze(1);  // [Lq, Lk] = k - q
    const at::Tensor buckets = relative_position_bucket(rel, config_.relative_attention_num_buckets,
                                                        config_.relative_attention_max_distance);
    return at::embedding(relative_attention_bias->weight, buckets)
        .permute({2, 0, 1})
        .unsqueeze(0)
        .contiguous();
}

at::Tensor UMT5AttentionImpl::forward(const at::Tensor& x, const at::Tensor& key_mask) {
    // x [B, L, D], key_mask [B, L] -> [B, L, D]; t5.py T5Attention.forward (self-attention)
    TORCH_CHECK(x.dim() == 3 && x.size(2) == config_.d_model, "UMT5Attention: x must be [B, L, ",
                config_.d_model, "], got ", x.sizes());
    TORCH_CHECK(key_mask.dim() == 2 && key_mask.size(0) == x.size(0) && key_mask.size(1) == x.size(1),
                "UMT5Attention: mask must be [B, L] = ", x.sizes().slice(0, 2), ", got ", key_mask.sizes());
    const int64_t b = x.size(0), l = x.size(1), h = config_.num_heads, c = config_.d_kv;
    const at::Tensor qh = q(x).view({b, l, h, c}).transpose(1, 2);  // [B, H, L, C]
    const at::Tensor kh = k(x).view({b, l, h, c}).transpose(1, 2);
    const at::Tensor vh = v(x).view({b, l, h, c}).transpose(1, 2);

    at::Tensor bias = position_bias(l).to(x.scalar_type()).expand({b, h, l, l});  // [B, H, L, L]
    const at::Tensor masked = key_mask.eq(0).view({b, 1, 1, l});
    bias = bias.masked_fill(masked, finfo_min(x.scalar_type()));

    const at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) + bias;  // no 1/sqrt(C): T5 convention
    const at::Tensor probs = at::softmax(scores.to(at::kFloat), -1).to(x.scalar_type());
    const at::Tensor out = at::matmul(probs, vh).transpose(1, 2).reshape({b, l, h * c});
    return o(out);
}

// ---------------------------------------------------------------------------------------------
UMT5DenseGatedActDenseImpl::UMT5DenseGatedActDenseImpl(const UMT5Config& config) {
    wi_0 = register_module("wi_0", linear(config.d_model, config.d_ff));
    wi_1 = register_module("wi_1", linear(config.d_model, config.d_ff));
    wo = register_module("wo", linear(config.d_ff, config.d_model));
}

at::Tensor UMT5DenseGatedActDenseImpl::forward(const at::Tensor& x) {
    // x [B, L, D] -> [B, L, D]; t5.py T5FeedForward: fc2(fc1(x) * gelu_tanh(gate(x)))
    return wo(wi_1(x) * at::gelu(wi_0(x), "tanh"));
}

UMT5LayerSelfAttentionImpl::UMT5LayerSelfAttentionImpl(const UMT5Config& config) {
    SelfAttention = register_module("SelfAttention", UMT5Attention(config));
    layer_norm = register_module("layer_norm", UMT5LayerNorm(config.d_model, config.layer_norm_epsilon));
}

UMT5LayerFFImpl::UMT5LayerFFImpl(const UMT5Config& config) {
    DenseReluDense = register_module("DenseReluDense", UMT5DenseGatedActDense(config));
    layer_norm = register_module("layer_norm", UMT5LayerNorm(config.d_model, config.layer_norm_epsilon));
}

UMT5BlockImpl::UMT5BlockImpl(const UMT5Config& config) {
    attention = UMT5LayerSelfAttention(config);
    ff = UMT5LayerFF(config);
    torch::nn::ModuleList layer;
    layer->push_back(attention);
    layer->push_back(ff);
    register_module("layer", layer);
}

at::Tensor UMT5BlockImpl::forward(const at::Tensor& x, const at::Tensor& key_mask) {
    // x [B, L, D], key_mask [B, L] -> [B, L, D]; t5.py T5SelfAttention.forward (shared_pos=False)
    at::Tensor h = fp16_clamp(x + attention->SelfAttention(attention->layer_norm(x), key_mask));
    return fp16_clamp(h + ff->DenseReluDense(ff->layer_norm(h)));
}

UMT5EncoderStackImpl::UMT5EncoderStackImpl(const UMT5Config& config) {
    block = register_module("block", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_layers; ++i) block->push_back(UMT5Block(config));
    final_layer_norm =
        register_module("final_layer_norm", UMT5LayerNorm(config.d_model, config.layer_norm_epsilon));
}

// ---------------------------------------------------------------------------------------------
UMT5EncoderImpl::UMT5EncoderImpl(const UMT5Config& config) : config_(config) {
    config_.validate("UMT5Encoder");
    shared = register_module("shared", torch::nn::Embedding(config.vocab_size, config.d_model));
    encoder = register_module("encoder", UMT5EncoderStack(config));
}

at::Tensor UMT5EncoderImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
    // input_ids [B, L] int64, attention_mask [B, L] -> [B, L, D]; t5.py T5Encoder.forward
    TORCH_CHECK(input_ids.dim() == 2, "UMT5Encoder: input_ids must be [B, L], got ", input_ids.sizes());
    TORCH_CHECK(attention_mask.sizes() == input_ids.sizes(), "UMT5Encoder: attention_mask ",
                attention_mask.sizes(), " does not match input_ids ", input_ids.sizes());
    const at::Tensor ids = input_ids.to(at::kLong);
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
        fail(kComponent, "forward", "token id range [{}, {}] is outside the vocabulary [0, {})", lo, hi,
             config_.vocab_size);
    at::Tensor x = shared(ids);
    for (const auto& module : *encoder->block) x = module->as<UMT5Block>()->forward(x, attention_mask);
    return encoder->final_layer_norm(x);
}

UMT5Output UMT5EncoderImpl::encode_prompts(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
    // input_ids, attention_mask [B, L] (L <= text_len) -> prompt_embeds [B, text_len, D]
    // Wan T5EncoderModel.__call__ returns [u[:v] for u, v in zip(context, seq_lens)]; the pipelines
    // then pad each to text_len with zero rows (diffusers _get_t5_prompt_embeds does the same).
    if (input_ids.dim() != 2 || input_ids.size(1) > config_.text_len)
        fail(kComponent, "encode", "input_ids must be [B, L] with L <= text_len {}, got {}", config_.text_len,
             sizes_str(input_ids.sizes()));
    UMT5Output out;
    out.last_hidden_state = forward(input_ids, attention_mask);
    out.seq_lens = attention_mask.ne(0).to(at::kLong).sum(1);
    const int64_t b = input_ids.size(0), l = input_ids.size(1);
    const at::Tensor rows = at::arange(l, out.seq_lens.options()).unsqueeze(0);  // [1, L]
    const at::Tensor keep = rows.lt(out.seq_lens.unsqueeze(1)).unsqueeze(-1);    // [B, L, 1]
    const at::Tensor kept =
        at::where(keep, out.last_hidden_state, at::zeros({}, out.last_hidden_state.options()));
    out.prompt_embeds = at::zeros({b, config_.text_len, config_.d_model}, out.last_hidden_state.options());
    out.prompt_embeds.narrow(1, 0, l).copy_(kept);
    return out;
}

}  // namespace st::kit
