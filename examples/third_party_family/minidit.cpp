// MiniDiT (see minidit.h).
#include "minidit.h"

#include <ATen/ATen.h>

#include <cmath>

#include "st/attention.h"
#include "st/error.h"

namespace example::minidit {

namespace {

constexpr const char* kComponent = "model.minidit@1";

// [n] positions -> [n, dim] (sin | cos), dim even.
at::Tensor sinusoid(const at::Tensor& pos, int64_t dim) {
    const int64_t half = dim / 2;
    const at::Tensor freq =
        at::exp(-std::log(10000.0) * at::arange(half, pos.options()) / static_cast<double>(half));
    const at::Tensor angle = pos.unsqueeze(-1) * freq;
    return at::cat({at::sin(angle), at::cos(angle)}, -1);
}

// Fixed positions of an (f, h, w) token grid: [f h w, D] with D split in three even parts.
at::Tensor grid_positions(int64_t f, int64_t h, int64_t w, int64_t dim, const at::TensorOptions& opts) {
    const int64_t part = (dim / 3) / 2 * 2;
    const int64_t rest = dim - 2 * part;
    const auto fo = at::TensorOptions().dtype(at::kFloat).device(opts.device());
    const at::Tensor pf = sinusoid(at::arange(f, fo), rest).view({f, 1, 1, rest}).expand({f, h, w, rest});
    const at::Tensor ph = sinusoid(at::arange(h, fo), part).view({1, h, 1, part}).expand({f, h, w, part});
    const at::Tensor pw = sinusoid(at::arange(w, fo), part).view({1, 1, w, part}).expand({f, h, w, part});
    return at::cat({pf, ph, pw}, -1).reshape({f * h * w, dim}).to(opts);
}

torch::nn::LayerNorm plain_norm(int64_t dim, double eps) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps).elementwise_affine(false));
}

}  // namespace

const st::kit::FieldTable<MiniDiTConfig>& MiniDiTConfig::fields() {
    using C = MiniDiTConfig;
    static const auto table = st::kit::FieldTable<C>(kComponent, "MiniDiT transformer config")
                                  .constant("_class_name", "MiniDiTTransformer3DModel")
                                  .field("attention_head_dim", &C::attention_head_dim)
                                  .field("eps", &C::eps)
                                  .field("freq_dim", &C::freq_dim)
                                  .field("in_channels", &C::in_channels)
                                  .field("num_attention_heads", &C::num_attention_heads)
                                  .field("num_layers", &C::num_layers)
                                  .field("out_channels", &C::out_channels)
                                  .field("patch_size", &C::patch_size)
                                  .field("text_dim", &C::text_dim);
    return table;
}

void MiniDiTConfig::validate() const {
    for (auto [name, v] : {std::pair<const char*, int64_t>{"in_channels", in_channels},
                           {"out_channels", out_channels},
                           {"num_attention_heads", num_attention_heads},
                           {"attention_head_dim", attention_head_dim},
                           {"num_layers", num_layers},
                           {"text_dim", text_dim},
                           {"freq_dim", freq_dim}})
        if (v <= 0) st::fail(kComponent, "config", "{} must be > 0, got {}", name, v);
    if (freq_dim % 2 != 0 || inner_dim() < 6)
        st::fail(kComponent, "config", "freq_dim must be even and the width >= 6 (got {} and {})", freq_dim,
                 inner_dim());
    for (int64_t p : patch_size)
        if (p <= 0) st::fail(kComponent, "config", "patch_size entries must be > 0");
}

MiniDiTAttentionImpl::MiniDiTAttentionImpl(const MiniDiTConfig& c) : heads_(c.num_attention_heads) {
    const int64_t d = c.inner_dim();
    to_q = register_module("to_q", st::sdk::Linear(d, d));
    to_k = register_module("to_k", st::sdk::Linear(d, d));
    to_v = register_module("to_v", st::sdk::Linear(d, d));
    to_out = register_module("to_out", st::sdk::Linear(d, d));
}

at::Tensor MiniDiTAttentionImpl::forward(const at::Tensor& x, const at::Tensor& context) {
    const int64_t b = x.size(0), d = x.size(2);
    auto heads = [&](const at::Tensor& y) {
        return y.view({b, y.size(1), heads_, d / heads_}).transpose(1, 2);
    };
    const at::Tensor o = st::sdk::attention(heads(to_q(x)), heads(to_k(context)), heads(to_v(context)));
    return to_out(o.transpose(1, 2).reshape({b, x.size(1), d}));
}

MiniDiTBlockImpl::MiniDiTBlockImpl(const MiniDiTConfig& c) {
    const int64_t d = c.inner_dim();
    scale_shift_table = register_parameter("scale_shift_table", at::randn({1, 6, d}) / std::sqrt(d));
    norm1 = register_module("norm1", plain_norm(d, c.eps));
    attn1 = register_module("attn1", MiniDiTAttention(c));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.eps)));
    attn2 = register_module("attn2", MiniDiTAttention(c));
    norm3 = register_module("norm3", plain_norm(d, c.eps));
    fc1 = register_module("fc1", st::sdk::Linear(d, 4 * d));
    fc2 = register_module("fc2", st::sdk::Linear(4 * d, d));
}

at::Tensor MiniDiTBlockImpl::forward(const at::Tensor& x, const at::Tensor& mod, const at::Tensor& text) {
    // (table + time projection) -> shift, scale, gate of the self-attention and of the MLP, each [B, 1, D]
    const auto m = (scale_shift_table + mod).chunk(6, 1);
    at::Tensor h = norm1(x) * (1 + m[1]) + m[0];
    at::Tensor out = x + m[2] * attn1(h, h);
    out = out + attn2(norm2(out), text);
    h = norm3(out) * (1 + m[4]) + m[3];
    return out + m[5] * fc2(at::gelu(fc1(h), "tanh"));
}

MiniDiTImpl::MiniDiTImpl(const MiniDiTConfig& c) : config_(c) {
    config_.validate();
    const int64_t d = c.inner_dim();
    const auto& p = c.patch_size;
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv3d(
            torch::nn::Conv3dOptions(c.in_channels, d, {p[0], p[1], p[2]}).stride({p[0], p[1], p[2]})));
    time_linear_1 = register_module("time_linear_1", st::sdk::Linear(c.freq_dim, d));
    time_linear_2 = register_module("time_linear_2", st::sdk::Linear(d, d));
    time_proj = register_module("time_proj", st::sdk::Linear(d, 6 * d));
    text_linear_1 = register_module("text_linear_1", st::sdk::Linear(c.text_dim, d));
    text_linear_2 = register_module("text_linear_2", st::sdk::Linear(d, d));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_layers; ++i) blocks->push_back(MiniDiTBlock(c));
    scale_shift_table = register_parameter("scale_shift_table", at::randn({1, 2, d}) / std::sqrt(d));
    norm_out = register_module("norm_out", plain_norm(d, c.eps));
    proj_out = register_module("proj_out", st::sdk::Linear(d, c.out_channels * p[0] * p[1] * p[2]));
}

at::Tensor MiniDiTImpl::forward(const at::Tensor& latents, const at::Tensor& timesteps,
                                const at::Tensor& text) {
    // latents [B, C, F, H, W] -> tokens [B, f h w, D] -> blocks -> [B, C_out, F, H, W]
    const auto& p = config_.patch_size;
    TORCH_CHECK(latents.dim() == 5 && latents.size(1) == config_.in_channels, "MiniDiT expects latents [B, ",
                config_.in_channels, ", F, H, W], got ", latents.sizes());
    TORCH_CHECK(latents.size(2) % p[0] == 0 && latents.size(3) % p[1] == 0 && latents.size(4) % p[2] == 0,
                "latent frames/height/width ", latents.sizes(), " are not multiples of the patch size");
    const int64_t b = latents.size(0), d = config_.inner_dim();
    const int64_t f = latents.size(2) / p[0], h = latents.size(3) / p[1], w = latents.size(4) / p[2];
    at::Tensor x = patch_embedding(latents).flatten(2).transpose(1, 2);
    x = x + grid_positions(f, h, w, d, x.options()).unsqueeze(0);
    const at::Tensor t = sinusoid(timesteps.to(at::kFloat).reshape({b}), config_.freq_dim).to(x.dtype());
    const at::Tensor temb = time_linear_2(at::silu(time_linear_1(t)));  // [B, D]
    const at::Tensor mod = time_proj(at::silu(temb)).view({b, 6, d});
    const at::Tensor ctx = text_linear_2(at::gelu(text_linear_1(text.to(x.dtype())), "tanh"));
    for (const auto& block : *blocks) x = block->as<MiniDiTBlockImpl>()->forward(x, mod, ctx);
    const auto m = (scale_shift_table + temb.unsqueeze(1)).chunk(2, 1);
    x = proj_out(norm_out(x) * (1 + m[1]) + m[0]);  // [B, f h w, C_out pt ph pw]
    // unpatchify: [B, f, h, w, C, pt, ph, pw] -> [B, C, f pt, h ph, w pw]
    x = x.view({b, f, h, w, config_.out_channels, p[0], p[1], p[2]}).permute({0, 4, 1, 5, 2, 6, 3, 7});
    return x.reshape({b, config_.out_channels, f * p[0], h * p[1], w * p[2]});
}

}  // namespace example::minidit
