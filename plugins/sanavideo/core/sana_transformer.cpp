// Sana Video DiT modules: RMSNorm, linear self-attention, cross-attention, GLUMBTempConv, block,
// time and caption embedders. Follows diffusers transformer_sana_video.py (SanaLinearAttnProcessor3_0,
// SanaAttnProcessor2_0, GLUMBTempConv, SanaVideoTransformerBlock) @ 58eb52c080; models.md §6.3.
#include "core/sana_transformer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "st/attention.h"

namespace st::plugins::sanavideo {

namespace {
constexpr double kQKNormEps = 1e-5;  // diffusers Attention's RMSNorm eps (qk_norm)
constexpr double kLinearAttentionEps = 1e-15;

torch::nn::Conv2d conv2d(int64_t in, int64_t out, std::array<int64_t, 2> kernel, std::array<int64_t, 2> pad,
                         int64_t groups, bool bias) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, {kernel[0], kernel[1]})
                                 .padding({pad[0], pad[1]})
                                 .groups(groups)
                                 .bias(bias));
}
}  // namespace

// ---- norms ----------------------------------------------------------------------------------------

SanaRMSNormImpl::SanaRMSNormImpl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor SanaRMSNormImpl::forward(const at::Tensor& x) {
    // x [..., D] -> [..., D]
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return (y * weight.to(at::kFloat)).to(x.scalar_type());
}

// ---- attention ------------------------------------------------------------------------------------

SanaLinearAttentionImpl::SanaLinearAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias) : heads_(heads) {
    to_q = register_module("to_q", st::sdk::Linear(dim, dim, qkv_bias));
    to_k = register_module("to_k", st::sdk::Linear(dim, dim, qkv_bias));
    to_v = register_module("to_v", st::sdk::Linear(dim, dim, qkv_bias));
    norm_q = register_module("norm_q", SanaRMSNorm(dim, kQKNormEps));
    norm_k = register_module("norm_k", SanaRMSNorm(dim, kQKNormEps));
    to_out = register_module("to_out", torch::nn::ModuleList(st::sdk::Linear(dim, dim)));
}

at::Tensor SanaLinearAttentionImpl::forward(const at::Tensor& x, const st::kit::RopeTables& rope) {
    // x [B, n, D] -> [B, n, D]. Per head with ReLU features q, k (rotated: q_r, k_r):
    //   out_n = (sum_m v_m k_r,m^T) q_r,n / (sum_m k_m . q_n + 1e-15)
    // the numerator over rotated features, the denominator over un-rotated ones; both in fp32.
    const auto dt = x.scalar_type();
    at::Tensor q = at::relu(norm_q->forward(to_q->forward(x)).unflatten(2, {heads_, -1}));  // [B,n,H,C]
    at::Tensor k = at::relu(norm_k->forward(to_k->forward(x)).unflatten(2, {heads_, -1}));
    at::Tensor v = to_v->forward(x).unflatten(2, {heads_, -1});
    at::Tensor qr = st::kit::apply_rope3d(q, rope).to(at::kFloat).permute({0, 2, 3, 1});  // [B,H,C,n]
    at::Tensor kr = st::kit::apply_rope3d(k, rope).to(at::kFloat).permute({0, 2, 3, 1});
    at::Tensor vf = v.to(at::kFloat).permute({0, 2, 3, 1});
    at::Tensor qf = q.to(at::kFloat).permute({0, 2, 3, 1});
    at::Tensor kf = k.to(at::kFloat).permute({0, 2, 3, 1});
    at::Tensor z =
        1.0 / (at::matmul(kf.sum(-1, /*keepdim=*/true).transpose(-2, -1), qf) + kLinearAttentionEps);
    at::Tensor scores = at::matmul(vf, kr.transpose(-1, -2));  // [B, H, C, C]
    at::Tensor out = at::matmul(scores, qr) * z;               // [B, H, C, n]
    out = out.flatten(1, 2).transpose(1, 2).to(dt);            // [B, n, H*C]
    return to_out->ptr<st::sdk::LinearImpl>(0)->forward(out);
}

SanaCrossAttentionImpl::SanaCrossAttentionImpl(int64_t dim, int64_t context_dim, int64_t heads)
    : heads_(heads) {
    to_q = register_module("to_q", st::sdk::Linear(dim, dim));
    to_k = register_module("to_k", st::sdk::Linear(context_dim, dim));
    to_v = register_module("to_v", st::sdk::Linear(context_dim, dim));
    norm_q = register_module("norm_q", SanaRMSNorm(dim, kQKNormEps));
    norm_k = register_module("norm_k", SanaRMSNorm(dim, kQKNormEps));
    to_out = register_module("to_out", torch::nn::ModuleList(st::sdk::Linear(dim, dim)));
}

at::Tensor SanaCrossAttentionImpl::forward(const at::Tensor& x, const at::Tensor& context,
                                           const at::Tensor& key_mask) {
    // x [B, n, D], context [B, Lt, D], key_mask [B, Lt] | undefined -> [B, n, D]. diffusers adds
    // (1 - m) * -10000 to the scores; a boolean key mask gives the same softmax (exp(-10000) == 0 in
    // fp32) whenever a row has a valid key, which Sana's prompts always have (BOS is kept).
    at::Tensor q = norm_q->forward(to_q->forward(x)).unflatten(2, {heads_, -1}).transpose(1, 2);
    at::Tensor k = norm_k->forward(to_k->forward(context)).unflatten(2, {heads_, -1}).transpose(1, 2);
    at::Tensor v = to_v->forward(context).unflatten(2, {heads_, -1}).transpose(1, 2);
    st::sdk::AttentionOptions opts;
    if (key_mask.defined()) opts.key_mask = key_mask.to(at::kBool);
    at::Tensor o = st::sdk::attention(q, k, v, opts).transpose(1, 2).flatten(2, 3).to(x.scalar_type());
    return to_out->ptr<st::sdk::LinearImpl>(0)->forward(o);
}

// ---- feed-forward ---------------------------------------------------------------------------------

SanaGLUMBTempConvImpl::SanaGLUMBTempConvImpl(int64_t dim, int64_t hidden) {
    conv_inverted = register_module("conv_inverted", conv2d(dim, 2 * hidden, {1, 1}, {0, 0}, 1, true));
    conv_depth =
        register_module("conv_depth", conv2d(2 * hidden, 2 * hidden, {3, 3}, {1, 1}, 2 * hidden, true));
    conv_point = register_module("conv_point", conv2d(hidden, dim, {1, 1}, {0, 0}, 1, false));
    conv_temp = register_module("conv_temp", conv2d(dim, dim, {3, 1}, {1, 0}, 1, false));
}

at::Tensor SanaGLUMBTempConvImpl::forward(const at::Tensor& x) {
    // x [B, F, H, W, D] -> [B, F, H, W, D]
    const int64_t B = x.size(0), F = x.size(1), H = x.size(2), W = x.size(3), D = x.size(4);
    at::Tensor h = x.reshape({B * F, H, W, D}).permute({0, 3, 1, 2});  // [B F, D, H, W]
    h = at::silu(conv_inverted->forward(h));
    h = conv_depth->forward(h);
    auto parts = h.chunk(2, 1);
    h = conv_point->forward(parts[0] * at::silu(parts[1]));  // [B F, D, H, W]
    // temporal mixing over latent frames: [B, D, F, H W] with a (3, 1) kernel
    at::Tensor t = h.reshape({B, F, D, H * W}).permute({0, 2, 1, 3});
    t = t + conv_temp->forward(t);
    return t.permute({0, 2, 3, 1}).reshape({B, F, H, W, D});
}

// ---- block ----------------------------------------------------------------------------------------

SanaVideoTransformerBlockImpl::SanaVideoTransformerBlockImpl(const SanaVideoTransformerConfig& c)
    : eps_(c.norm_eps) {
    const int64_t d = c.inner_dim();
    attn1 = register_module("attn1", SanaLinearAttention(d, c.num_attention_heads, c.attention_bias));
    attn2 =
        register_module("attn2", SanaCrossAttention(d, c.cross_attention_dim, c.num_cross_attention_heads));
    ff = register_module("ff", SanaGLUMBTempConv(d, c.ffn_hidden()));
    scale_shift_table =
        register_parameter("scale_shift_table", at::randn({6, d}) / std::sqrt(static_cast<double>(d)));
}

namespace {
at::Tensor layer_norm_fp32(const at::Tensor& x, double eps) {
    return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, {}, {}, eps);
}
}  // namespace

at::Tensor SanaVideoTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& tproj,
                                                  const at::Tensor& context, const at::Tensor& key_mask,
                                                  const st::kit::RopeTables& rope,
                                                  const std::array<int64_t, 3>& grid) {
    // x [B, L, D]; tproj [B, 6, D] | [B, L, 6, D] -> [B, L, D]
    TORCH_CHECK(x.dim() == 3 && x.size(1) == grid[0] * grid[1] * grid[2],
                "SanaVideoTransformerBlock: x must be [B, F'H'W', D] over the full grid, got ", x.sizes());
    const auto dt = x.scalar_type();
    std::vector<at::Tensor> mod;  // shift, scale, gate (msa), shift, scale, gate (mlp); fp32
    if (tproj.dim() == 4)
        mod = (scale_shift_table.to(at::kFloat).unsqueeze(0).unsqueeze(0) + tproj.to(at::kFloat)).unbind(2);
    else
        mod = (scale_shift_table.to(at::kFloat).unsqueeze(0) + tproj.to(at::kFloat)).chunk(6, 1);  // [B,1,D]
    // 1. linear self-attention on the modulated LayerNorm (no affine)
    at::Tensor nx = (layer_norm_fp32(x, eps_) * (1 + mod[1]) + mod[0]).to(dt);
    at::Tensor a = attn1->forward(nx, rope);
    at::Tensor h = (x.to(at::kFloat) + mod[2] * a.to(at::kFloat)).to(dt);
    // 2. cross-attention, no norm, no gate
    h = h + attn2->forward(h, context, key_mask);
    // 3. GLUMBTempConv over the (F', H', W') grid
    nx = (layer_norm_fp32(h, eps_) * (1 + mod[4]) + mod[3]).to(dt);
    at::Tensor f = ff->forward(nx.unflatten(1, {grid[0], grid[1], grid[2]})).flatten(1, 3);
    return (h.to(at::kFloat) + mod[5] * f.to(at::kFloat)).to(dt);
}

// ---- embedders ------------------------------------------------------------------------------------

SanaMLPImpl::SanaMLPImpl(int64_t in_dim, int64_t dim, bool gelu_tanh) : gelu_tanh_(gelu_tanh) {
    linear_1 = register_module("linear_1", torch::nn::Linear(in_dim, dim));
    linear_2 = register_module("linear_2", torch::nn::Linear(dim, dim));
}

at::Tensor SanaMLPImpl::forward(const at::Tensor& x) {
    at::Tensor h = linear_1->forward(x);
    h = gelu_tanh_ ? at::gelu(h, "tanh") : at::silu(h);
    return linear_2->forward(h);
}

SanaTimeEmbedImpl::SanaTimeEmbedImpl(int64_t dim) {
    emb = register_module("emb", std::make_shared<torch::nn::Module>());
    timestep_embedder = emb->register_module("timestep_embedder", SanaMLP(256, dim, /*gelu_tanh=*/false));
    linear = register_module("linear", torch::nn::Linear(dim, 6 * dim));
}

at::Tensor sana_timestep_sinusoid(const at::Tensor& t, int64_t dim) {
    // t [...] -> [..., dim]: [cos(t w_i), sin(t w_i)], w_i = 10000^(-i/half), float32 as diffusers.
    const int64_t half = dim / 2;
    at::Tensor exponent = at::arange(half, at::TensorOptions().dtype(at::kFloat).device(t.device())) *
                          static_cast<float>(-std::log(10000.0)) / static_cast<float>(half);
    at::Tensor args = t.to(at::kFloat).unsqueeze(-1) * at::exp(exponent);
    return at::cat({at::cos(args), at::sin(args)}, -1);
}

}  // namespace st::plugins::sanavideo
