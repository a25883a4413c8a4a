// Wan DiT building blocks: RMSNorm, attention, feed-forward, transformer block, embedders.
// Follows diffusers src/diffusers/models/transformers/transformer_wan.py (WanAttention,
// WanAttnProcessor, WanTransformerBlock, WanTimeTextImageEmbedding, WanImageEmbedding) @ 58eb52c080;
// facts in models.md §1.2-1.5.
#include "core/transformer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "st/attention.h"
#include "st/kit/cuda_dit.h"

namespace st::plugins::wan {

// ---- norms ----------------------------------------------------------------------------------------

WanQKRMSNormImpl::WanQKRMSNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor WanQKRMSNormImpl::forward(const at::Tensor& x) {
    // x [..., D] -> [..., D]; variance in float32 whatever the input dtype.
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return (y * weight.to(at::kFloat)).to(x.scalar_type());
}

at::Tensor fp32_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           double eps) {
    // Returns float32 (callers cast back where the reference does).
    c10::optional<at::Tensor> w, b;
    if (weight.defined()) w = weight.to(at::kFloat);
    if (bias.defined()) b = bias.to(at::kFloat);
    return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, w, b, eps);
}

// ---- feed-forward ---------------------------------------------------------------------------------

WanFeedForwardImpl::WanFeedForwardImpl(int64_t dim, int64_t inner_dim, int64_t out_dim, bool gelu_tanh)
    : gelu_tanh_(gelu_tanh) {
    // Checkpoint keys: net.0.proj.{weight,bias}, net.2.{weight,bias} (net.1 is a parameter-free dropout).
    auto net = register_module("net", std::make_shared<torch::nn::Module>());
    auto act = net->register_module("0", std::make_shared<torch::nn::Module>());
    proj = act->register_module("proj", st::sdk::Linear(dim, inner_dim));
    out = net->register_module("2", st::sdk::Linear(inner_dim, out_dim));
}

at::Tensor WanFeedForwardImpl::forward(const at::Tensor& x) {
    // x [..., dim] -> [..., out_dim]
    at::Tensor h = proj->forward(x);
    h = at::gelu(h, gelu_tanh_ ? "tanh" : "none");
    return out->forward(h);
}

// ---- attention ------------------------------------------------------------------------------------

WanAttentionImpl::WanAttentionImpl(const WanAttentionOptions& options) : options_(options) {
    const int64_t d = options.dim;
    to_q = register_module("to_q", st::sdk::Linear(d, d));
    to_k = register_module("to_k", st::sdk::Linear(d, d));
    to_v = register_module("to_v", st::sdk::Linear(d, d));
    to_out = register_module("to_out", torch::nn::ModuleList(st::sdk::Linear(d, d)));
    norm_q = register_module("norm_q", WanQKRMSNorm(d, options.eps));
    norm_k = register_module("norm_k", WanQKRMSNorm(d, options.eps));
    if (options.added_kv_proj_dim) {
        add_k_proj = register_module("add_k_proj", st::sdk::Linear(*options.added_kv_proj_dim, d));
        add_v_proj = register_module("add_v_proj", st::sdk::Linear(*options.added_kv_proj_dim, d));
        norm_added_k = register_module("norm_added_k", WanQKRMSNorm(d, options.eps));
    }
}

namespace {
// [B, L, H, d] tensors -> attention over L -> [B, L, H*d]
at::Tensor heads_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    at::Tensor o = st::sdk::attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
    return o.transpose(1, 2).flatten(2, 3);
}
}  // namespace

at::Tensor WanAttentionImpl::forward(const at::Tensor& x, const at::Tensor& context,
                                     const at::Tensor& image_context, const RopeTables* rope) {
    // x [B, L, D], context [B, Lc, D], image_context [B, Li, D] | undefined -> [B, L, D]
    TORCH_CHECK(x.dim() == 3 && x.size(2) == options_.dim, "WanAttention: x must be [B, L, ", options_.dim,
                "], got ", x.sizes());
    const int64_t h = options_.heads;
    at::Tensor q = norm_q->forward(to_q->forward(x)).unflatten(2, {h, -1});
    at::Tensor k = norm_k->forward(to_k->forward(context)).unflatten(2, {h, -1});
    at::Tensor v = to_v->forward(context).unflatten(2, {h, -1});
    if (rope != nullptr) {
        q = apply_wan_rope(q, *rope);
        k = apply_wan_rope(k, *rope);
    }
    at::Tensor out = heads_attention(q, k, v).to(q.scalar_type());
    if (image_context.defined()) {
        TORCH_CHECK(!add_k_proj.is_empty(),
                    "WanAttention: image context given but this attention has no image branch");
        // Wan 2.1 I2V: the same queries attend the CLIP tokens separately; outputs are summed.
        at::Tensor ki = norm_added_k->forward(add_k_proj->forward(image_context)).unflatten(2, {h, -1});
        at::Tensor vi = add_v_proj->forward(image_context).unflatten(2, {h, -1});
        out = out + heads_attention(q, ki, vi).to(q.scalar_type());
    }
    return to_out->ptr<st::sdk::LinearImpl>(0)->forward(out);
}

// ---- block ----------------------------------------------------------------------------------------

WanTransformerBlockImpl::WanTransformerBlockImpl(const WanTransformerConfig& c) : eps_(c.eps) {
    const int64_t d = c.inner_dim();
    WanAttentionOptions self_opts{d, c.num_attention_heads, c.eps, std::nullopt};
    WanAttentionOptions cross_opts{d, c.num_attention_heads, c.eps, c.added_kv_proj_dim};
    attn1 = register_module("attn1", WanAttention(self_opts));
    attn2 = register_module("attn2", WanAttention(cross_opts));
    if (c.cross_attn_norm)
        norm2 = register_module(
            "norm2",
            torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.eps).elementwise_affine(true)));
    ffn = register_module("ffn", WanFeedForward(d, c.ffn_dim, d, /*gelu_tanh=*/true));
    scale_shift_table =
        register_parameter("scale_shift_table", at::randn({1, 6, d}) / std::sqrt(static_cast<double>(d)));
}

at::Tensor chunked_feed_forward(const FeedForwardChunking& chunking, const at::Tensor& x,
                                const std::function<at::Tensor(const at::Tensor&)>& ffn) {
    // x [B, L, D]; the FFN is per token, so chunking along batch or sequence leaves it unchanged.
    if (!chunking.enabled) return ffn(x);
    int64_t dim = 0, size = 0;
    if (!chunking.chunk_size) {
        if (x.size(0) > 1) {
            size = 2;
        } else {
            dim = 1;
            size = std::max<int64_t>(1, (x.size(1) + 3) / 4);
        }
    } else {
        dim = chunking.chunk_dim;
        size = *chunking.chunk_size;
    }
    if (dim < 0 || dim >= x.dim() || size <= 0) return ffn(x);
    const int64_t extent = x.size(dim);
    if (extent <= 1) return ffn(x);
    if (size >= extent) size = std::max<int64_t>(1, extent / 2);
    std::vector<at::Tensor> outs;
    for (const auto& piece : x.split(size, dim)) outs.push_back(ffn(piece));
    return at::cat(outs, dim);
}

at::Tensor WanTransformerBlockImpl::feed_forward(const at::Tensor& x) {
    return chunked_feed_forward(chunking, x, [this](const at::Tensor& p) { return ffn->forward(p); });
}

namespace {

// norm(x) * (1 + scale) + shift with a non-affine fp32 LayerNorm, in dt. Inference on CUDA runs
// st's fused kernel (kernels/cuda); training (autograd) and the CPU keep the ATen formula.
at::Tensor modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                          at::ScalarType dt) {
    if (!at::GradMode::is_enabled() && st::kit::cuda_dit_available(x))
        return st::kit::modulated_layer_norm_cuda(x, shift, scale, eps, dt);
    return (fp32_layer_norm(x, {}, {}, eps) * (1 + scale) + shift).to(dt);
}

// x + f * gate in fp32, returned in dt (x's dtype).
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& f, const at::Tensor& gate,
                          at::ScalarType dt) {
    if (!at::GradMode::is_enabled() && st::kit::cuda_dit_available(x) && f.scalar_type() == x.scalar_type())
        return st::kit::gated_residual_cuda(x, f, gate);
    return (x.to(at::kFloat) + f.to(at::kFloat) * gate).to(dt);
}

}  // namespace

at::Tensor WanTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context,
                                            const at::Tensor& image_context, const at::Tensor& timestep_proj,
                                            const RopeTables& rope) {
    // x [B, L, D]; timestep_proj [B, 6, D] or [B, L, 6, D] -> [B, L, D]
    TORCH_CHECK(x.dim() == 3, "WanTransformerBlock: x must be [B, L, D], got ", x.sizes());
    const auto dt = x.scalar_type();
    std::vector<at::Tensor> mod;  // shift, scale, gate (msa), shift, scale, gate (ffn); fp32
    if (timestep_proj.dim() == 4) {
        mod = (scale_shift_table.unsqueeze(0).to(at::kFloat) + timestep_proj.to(at::kFloat))
                  .unbind(2);  // [B, L, D]
    } else {
        TORCH_CHECK(timestep_proj.dim() == 3,
                    "WanTransformerBlock: timestep_proj must be [B,6,D] or [B,L,6,D], got ",
                    timestep_proj.sizes());
        mod = (scale_shift_table.to(at::kFloat) + timestep_proj.to(at::kFloat)).chunk(6, 1);  // [B, 1, D]
    }
    // 1. self-attention on the modulated, non-affine LayerNorm
    at::Tensor nx = modulated_norm(x, mod[0], mod[1], eps_, dt);
    at::Tensor a = attn1->forward(nx, nx, {}, &rope);
    at::Tensor h = gated_residual(x, a, mod[2], dt);
    // 2. cross-attention (affine LayerNorm, no gate)
    nx = norm2.is_empty() ? h : fp32_layer_norm(h, norm2->weight, norm2->bias, eps_).to(dt);
    h = h + attn2->forward(nx, context, image_context, nullptr);
    // 3. feed-forward
    nx = modulated_norm(h, mod[3], mod[4], eps_, dt);
    at::Tensor f = feed_forward(nx);
    return gated_residual(h, f, mod[5], dt);
}

// ---- embedders ------------------------------------------------------------------------------------

namespace {
constexpr double kImageNormEps = 1e-5;
}  // namespace

WanMLPEmbedderImpl::WanMLPEmbedderImpl(int64_t in_dim, int64_t dim, bool gelu_tanh_act)
    : gelu_tanh_act_(gelu_tanh_act) {
    linear_1 = register_module("linear_1", torch::nn::Linear(in_dim, dim));
    linear_2 = register_module("linear_2", torch::nn::Linear(dim, dim));
}

at::Tensor WanMLPEmbedderImpl::forward(const at::Tensor& x) {
    // x [..., in_dim] -> [..., dim]
    at::Tensor h = linear_1->forward(x);
    h = gelu_tanh_act_ ? at::gelu(h, "tanh") : at::silu(h);
    return linear_2->forward(h);
}

WanImageEmbedderImpl::WanImageEmbedderImpl(int64_t image_dim, int64_t dim,
                                           std::optional<int64_t> pos_embed_seq_len) {
    // FP32LayerNorm(features) with nn.LayerNorm's default eps 1e-5 (original MLPProj likewise),
    // unlike the 1e-6 of every other Wan norm.
    norm1 = register_module(
        "norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({image_dim}).eps(kImageNormEps)));
    ff = register_module("ff", WanFeedForward(image_dim, image_dim, dim, /*gelu_tanh=*/false));
    norm2 =
        register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kImageNormEps)));
    if (pos_embed_seq_len)
        pos_embed = register_parameter("pos_embed", at::zeros({1, *pos_embed_seq_len, image_dim}));
}

at::Tensor WanImageEmbedderImpl::forward(const at::Tensor& x_in) {
    // x [B, Li, image_dim] -> [B, Li', D]. FLF2V (pos_embed [1, 2 L, image_dim]) takes the first and last
    // frame's tokens as one sequence: either [B, 2 L, image_dim] (first | last, what st caches) or
    // diffusers' layout [2 B, L, image_dim] (first_0, last_0, first_1, ...), which it folds by view.
    at::Tensor x = x_in;
    if (pos_embed.defined()) {
        const int64_t pos_len = pos_embed.size(1);
        if (x.size(1) != pos_len) {
            TORCH_CHECK(2 * x.size(1) == pos_len && x.size(0) % 2 == 0,
                        "WanImageEmbedder (FLF2V): image_embeds ", x.sizes(), " must be [B, ", pos_len,
                        ", D] (first | last frame tokens) or [2B, ", pos_len / 2, ", D] in first/last pairs");
            x = x.reshape({-1, pos_len, x.size(2)});
        }
        x = x + pos_embed.to(x.scalar_type());
    }
    const auto dt = ff->proj->weight.scalar_type();
    at::Tensor h = fp32_layer_norm(x, norm1->weight, norm1->bias, kImageNormEps).to(dt);
    h = ff->forward(h);
    return fp32_layer_norm(h, norm2->weight, norm2->bias, kImageNormEps).to(dt);
}

WanConditionEmbedderImpl::WanConditionEmbedderImpl(const WanTransformerConfig& c) {
    const int64_t d = c.inner_dim();
    time_embedder = register_module("time_embedder", WanMLPEmbedder(c.freq_dim, d, /*gelu_tanh_act=*/false));
    time_proj = register_module("time_proj", torch::nn::Linear(d, 6 * d));
    text_embedder = register_module("text_embedder", WanMLPEmbedder(c.text_dim, d, /*gelu_tanh_act=*/true));
    if (c.image_dim)
        image_embedder =
            register_module("image_embedder", WanImageEmbedder(*c.image_dim, d, c.pos_embed_seq_len));
}

at::Tensor wan_timestep_sinusoid(const at::Tensor& t, int64_t dim) {
    // t [...] -> [..., dim]: [cos(t w_i), sin(t w_i)], w_i = 10000^(-i/half), float32 as diffusers.
    const int64_t half = dim / 2;
    at::Tensor exponent = at::arange(half, at::TensorOptions().dtype(at::kFloat).device(t.device())) *
                          static_cast<float>(-std::log(10000.0)) / static_cast<float>(half);
    at::Tensor args = t.to(at::kFloat).unsqueeze(-1) * at::exp(exponent);
    return at::cat({at::cos(args), at::sin(args)}, -1);
}

}  // namespace st::plugins::wan
