// DINOv2 forward (see dinov2.h). Reference: facebookresearch/dinov2 dinov2/models/vision_transformer.py
// (DinoVisionTransformer.prepare_tokens_with_masks, interpolate_pos_encoding, forward_features) and
// dinov2/layers (Attention, Mlp, SwiGLUFFNFused, LayerScale).
#include "core/dinov2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "st/attention.h"
#include "st/error.h"

namespace st::plugins::crepa {

namespace nn = torch::nn;

namespace {
constexpr const char* kComponent = "reg.crepa.dinov2";
}

at::Tensor interpolate_pos_encoding(const at::Tensor& pos_embed, int64_t h, int64_t w, const DinoConfig& c) {
    // Upstream names the image's dim 2 "w" and dim 3 "h": w0 = H / p comes first in every size below.
    const int64_t n = pos_embed.size(1) - 1;
    const int64_t w0 = h / c.patch_size, h0 = w / c.patch_size;
    if (w0 * h0 == n && h == w) return pos_embed;
    const int64_t m = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
    if (m * m != n) fail(kComponent, "forward", "pos_embed holds {} patch positions, not a square grid", n);
    const int64_t dim = pos_embed.size(2);
    const at::Tensor pos = pos_embed.to(at::kFloat);
    const at::Tensor cls = pos.select(1, 0);
    const at::Tensor grid = pos.slice(1, 1).reshape({1, m, m, dim}).permute({0, 3, 1, 2});
    at::Tensor out;
    if (c.interpolate_offset != 0.0) {
        // F.interpolate(scale_factor=(sx, sy)): output floor(M * s) = w0, sampled at 1/s steps.
        const double sx = (static_cast<double>(w0) + c.interpolate_offset) / static_cast<double>(m);
        const double sy = (static_cast<double>(h0) + c.interpolate_offset) / static_cast<double>(m);
        const int64_t ow = static_cast<int64_t>(std::floor(static_cast<double>(m) * sx));
        const int64_t oh = static_cast<int64_t>(std::floor(static_cast<double>(m) * sy));
        out = c.interpolate_antialias ? at::_upsample_bicubic2d_aa(grid, {ow, oh}, false, sx, sy)
                                      : at::upsample_bicubic2d(grid, {ow, oh}, false, sx, sy);
    } else {
        out = c.interpolate_antialias ? at::_upsample_bicubic2d_aa(grid, {w0, h0}, false)
                                      : at::upsample_bicubic2d(grid, {w0, h0}, false);
    }
    if (out.size(2) != w0 || out.size(3) != h0)
        fail(kComponent, "forward", "interpolated positions are {}x{}, expected {}x{}", out.size(2),
             out.size(3), w0, h0);
    out = out.permute({0, 2, 3, 1}).reshape({1, -1, dim});
    return at::cat({cls.unsqueeze(0), out}, 1).to(pos_embed.scalar_type());
}

DinoBlockImpl::DinoBlockImpl(const DinoConfig& c) : heads_(c.num_heads), swiglu_(c.swiglu) {
    const int64_t d = c.embed_dim;
    norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({d}).eps(c.layer_norm_eps)));
    norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({d}).eps(c.layer_norm_eps)));
    auto attn = register_module("attn", std::make_shared<nn::Module>());
    qkv = attn->register_module("qkv", nn::Linear(d, 3 * d));
    proj = attn->register_module("proj", nn::Linear(d, d));
    auto mlp = register_module("mlp", std::make_shared<nn::Module>());
    if (swiglu_) {
        w12 = mlp->register_module("w12", nn::Linear(d, 2 * c.ffn_hidden));
        w3 = mlp->register_module("w3", nn::Linear(c.ffn_hidden, d));
    } else {
        fc1 = mlp->register_module("fc1", nn::Linear(d, c.ffn_hidden));
        fc2 = mlp->register_module("fc2", nn::Linear(c.ffn_hidden, d));
    }
    if (c.layer_scale) {
        ls1 = register_module("ls1", std::make_shared<nn::Module>())
                  ->register_parameter("gamma", at::ones({d}));
        ls2 = register_module("ls2", std::make_shared<nn::Module>())
                  ->register_parameter("gamma", at::ones({d}));
    }
}

at::Tensor DinoBlockImpl::forward(const at::Tensor& x) {
    // x + ls1(attn(norm1(x))); x + ls2(ffn(norm2(x)))
    const int64_t b = x.size(0), n = x.size(1), d = x.size(2);
    const at::Tensor q_k_v = qkv->forward(norm1->forward(x)).reshape({b, n, 3, heads_, d / heads_});
    const at::Tensor qkvp = q_k_v.permute({2, 0, 3, 1, 4});
    at::Tensor a = st::sdk::attention(qkvp[0], qkvp[1], qkvp[2]).transpose(1, 2).reshape({b, n, d});
    a = proj->forward(a);
    if (ls1.defined()) a = a * ls1;
    at::Tensor y = x + a;
    const at::Tensor hdn = norm2->forward(y);
    at::Tensor f;
    if (swiglu_) {
        const auto halves = w12->forward(hdn).chunk(2, -1);
        f = w3->forward(at::silu(halves[0]) * halves[1]);
    } else {
        f = fc2->forward(at::gelu(fc1->forward(hdn)));
    }
    if (ls2.defined()) f = f * ls2;
    return y + f;
}

DinoV2Impl::DinoV2Impl(DinoConfig c) : config_(std::move(c)) {
    const int64_t d = config_.embed_dim, p = config_.patch_size;
    const int64_t grid = config_.img_size / p;
    auto pe = register_module("patch_embed", std::make_shared<nn::Module>());
    patch_embed = pe->register_module("proj", nn::Conv2d(nn::Conv2dOptions(3, d, p).stride(p)));
    cls_token = register_parameter("cls_token", at::zeros({1, 1, d}));
    pos_embed = register_parameter("pos_embed", at::zeros({1, 1 + grid * grid, d}));
    mask_token = register_parameter("mask_token", at::zeros({1, d}));  // in every hub checkpoint; unused
    if (config_.num_register_tokens > 0)
        register_tokens =
            register_parameter("register_tokens", at::zeros({1, config_.num_register_tokens, d}));
    blocks = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < config_.depth; ++i) blocks->push_back(DinoBlock(config_));
    norm = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({d}).eps(config_.layer_norm_eps)));
}

DinoV2Impl::Features DinoV2Impl::forward_features(const at::Tensor& images) {
    // images [B, 3, H, W] -> tokens [B, 1 + R + (H/p)(W/p), D]
    if (images.dim() != 4 || images.size(1) != 3)
        fail(kComponent, "forward", "images must be [B, 3, H, W], got {}", c10::str(images.sizes()));
    const int64_t h = images.size(2), w = images.size(3), p = config_.patch_size;
    if (h % p != 0 || w % p != 0)
        fail(kComponent, "forward", "image size {}x{} is not a multiple of the patch size {}", h, w, p);
    const int64_t b = images.size(0);
    at::Tensor x = patch_embed->forward(images.to(cls_token.scalar_type())).flatten(2).transpose(1, 2);
    x = at::cat({cls_token.expand({b, -1, -1}), x}, 1);
    Features f;
    f.pos = interpolate_pos_encoding(pos_embed, h, w, config_);
    x = x + f.pos;
    if (register_tokens.defined())
        x = at::cat({x.slice(1, 0, 1), register_tokens.expand({b, -1, -1}), x.slice(1, 1)}, 1);
    for (const auto& blk : *blocks) x = blk->as<DinoBlock>()->forward(x);
    x = norm->forward(x);
    f.cls = x.select(1, 0);
    f.patch = x.slice(1, 1 + config_.num_register_tokens);
    return f;
}

}  // namespace st::plugins::crepa
