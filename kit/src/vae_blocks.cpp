// Wan 2.1 VAE building blocks. Port of diffusers autoencoder_kl_wan.py (see vae_blocks.h).
#include "st/kit/vae_blocks.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/padding.h>

#include <cmath>

#include "st/attention.h"
#include "st/error.h"

namespace st::kit::vae {
namespace {

constexpr const char* kComponent = "model.wan.vae";

/// The last `n` frames (dim 2) of x, or all of them when x is shorter.
at::Tensor last_frames(const at::Tensor& x, int64_t n) {
    const int64_t t = x.size(2);
    return x.narrow(2, std::max<int64_t>(0, t - n), std::min(t, n));
}

}  // namespace

size_t FeatCache::take() {
    if (next >= tensors.size())
        fail(kComponent, "forward", "feature cache has {} slots but the network asked for slot {}",
             tensors.size(), next);
    return next++;
}

// ---------------------------------------------------------------------------------------------
// WanCausalConv3d (upstream WanCausalConv3d)

WanCausalConv3dImpl::WanCausalConv3dImpl(int64_t in_channels, int64_t out_channels,
                                         std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                                         std::array<int64_t, 3> padding)
    : stride_(stride), padding_(padding) {
    // PyTorch's Conv3d default init (kaiming_uniform a=sqrt(5) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    const double bound =
        1.0 / std::sqrt(static_cast<double>(in_channels * kernel[0] * kernel[1] * kernel[2]));
    weight = register_parameter(
        "weight",
        at::empty({out_channels, in_channels, kernel[0], kernel[1], kernel[2]}).uniform_(-bound, bound));
    bias = register_parameter("bias", at::empty({out_channels}).uniform_(-bound, bound));
}

at::Tensor WanCausalConv3dImpl::forward(const at::Tensor& x, const at::Tensor& cache) {
    // [B, Cin, T, H, W] (+ cache [B, Cin, Tc, H, W]) -> [B, Cout, T', H', W']
    TORCH_CHECK(x.dim() == 5, "WanCausalConv3d expects [B, C, T, H, W], got ", x.sizes());
    at::Tensor h = x;
    int64_t front = time_padding();
    if (cache.defined() && front > 0) {
        h = at::cat({cache.to(x.device(), x.scalar_type()), x}, 2);
        front -= cache.size(2);
    }
    TORCH_CHECK(front >= 0, "WanCausalConv3d: cache of ", cache.size(2), " frames exceeds the time padding");
    h = at::constant_pad_nd(h, {padding_[2], padding_[2], padding_[1], padding_[1], front, 0});
    return at::conv3d(h, weight, bias, {stride_[0], stride_[1], stride_[2]});
}

at::Tensor cached_causal_conv(WanCausalConv3dImpl& conv, const at::Tensor& x, FeatCache* cache) {
    if (cache == nullptr) return conv.forward(x);
    const size_t idx = cache->take();
    at::Tensor& slot = cache->tensors[idx];
    at::Tensor cache_x = last_frames(x, kCacheT).clone();
    if (cache_x.size(2) < kCacheT && slot.defined()) {
        // A 1-frame chunk: keep the previous chunk's last frame so the slot still has 2 frames.
        cache_x = at::cat({last_frames(slot, 1), cache_x}, 2);
    }
    at::Tensor out = conv.forward(x, slot);
    slot = cache_x;
    return out;
}

// ---------------------------------------------------------------------------------------------
// WanRMSNorm (upstream WanRMS_norm, channel_first, bias=False)

WanRMSNormImpl::WanRMSNormImpl(int64_t dim, bool images) : scale_(std::sqrt(static_cast<double>(dim))) {
    gamma = register_parameter("gamma", images ? at::ones({dim, 1, 1}) : at::ones({dim, 1, 1, 1}));
}

at::Tensor WanRMSNormImpl::forward(const at::Tensor& x) {
    // [B, C, ...] -> [B, C, ...]; F.normalize(x, dim=1) = x / max(||x||_2, 1e-12)
    const at::Tensor denom = x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
    return x / denom * scale_ * gamma;
}

// ---------------------------------------------------------------------------------------------
// WanResample (upstream WanResample)

WanResampleImpl::WanResampleImpl(int64_t dim, ResampleMode mode, int64_t upsample_out_dim)
    : mode_(mode), dim_(dim) {
    if (upsample_out_dim < 0) upsample_out_dim = dim / 2;
    resample_ = register_module("resample", torch::nn::ModuleList());
    // Index 0 is upstream's parameter-free nn.Upsample / nn.ZeroPad2d; computed in forward.
    resample_->push_back(torch::nn::Identity());
    const bool up = mode == ResampleMode::upsample2d || mode == ResampleMode::upsample3d;
    if (up) {
        conv_ = torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, upsample_out_dim, 3).padding(1));
    } else {
        conv_ = torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 3).stride(2));
    }
    resample_->push_back(conv_);
    if (mode == ResampleMode::upsample3d) {
        time_conv_ = register_module(
            "time_conv", WanCausalConv3d(dim, dim * 2, std::array<int64_t, 3>{3, 1, 1},
                                         std::array<int64_t, 3>{1, 1, 1}, std::array<int64_t, 3>{1, 0, 0}));
    } else if (mode == ResampleMode::downsample3d) {
        time_conv_ = register_module(
            "time_conv", WanCausalConv3d(dim, dim, std::array<int64_t, 3>{3, 1, 1},
                                         std::array<int64_t, 3>{2, 1, 1}, std::array<int64_t, 3>{0, 0, 0}));
    }
}

at::Tensor WanResampleImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, C, T, H, W] -> up: [B, C_out, T or 2T, 2H, 2W]; down: [B, C, T or (T+1-3)/2+1, H/2, W/2]
    TORCH_CHECK(x.dim() == 5 && x.size(1) == dim_, "WanResample expects [B, ", dim_, ", T, H, W], got ",
                x.sizes());
    const int64_t b = x.size(0), c = x.size(1), h = x.size(3), w = x.size(4);
    at::Tensor y = x;

    if (mode_ == ResampleMode::upsample3d && cache != nullptr) {
        const size_t idx = cache->take();
        at::Tensor& slot = cache->tensors[idx];
        if (!slot.defined() && !cache->rep[idx]) {
            // First decode chunk: no temporal upsampling (1 latent frame -> 1 frame), mark "Rep".
            cache->rep[idx] = true;
        } else {
            const bool rep = cache->rep[idx];
            at::Tensor cache_x = last_frames(y, kCacheT).clone();
            if (cache_x.size(2) < kCacheT) {
                // Keep 2 frames of history: the previous chunk's last frame, or zeros after "Rep".
                cache_x = at::cat({rep ? at::zeros_like(cache_x) : last_frames(slot, 1), cache_x}, 2);
            }
            // After "Rep" the missing history is zero-filled by the conv's own causal padding.
            y = rep ? time_conv_->forward(y) : time_conv_->forward(y, slot);
            slot = cache_x;
            cache->rep[idx] = false;
            // [B, 2C, T, H, W] -> channel halves interleaved as consecutive frames -> [B, C, 2T, H, W]
            const int64_t t = y.size(2);
            y = y.reshape({b, 2, c, t, h, w});
            y = at::stack({y.select(1, 0), y.select(1, 1)}, 3);
            y = y.reshape({b, c, t * 2, h, w});
        }
    }

    // 2-D part, per frame.
    const int64_t t = y.size(2);
    y = y.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
    if (mode_ == ResampleMode::upsample2d || mode_ == ResampleMode::upsample3d) {
        // Upstream uses nearest-exact x2 in fp32; for an integer factor 2 it selects the same source
        // pixel as plain nearest (floor((i + 0.5) / 2) == floor(i / 2)).
        y = at::upsample_nearest2d(y.to(at::kFloat), {2 * h, 2 * w}).to(x.scalar_type());
    } else {
        y = at::constant_pad_nd(y, {0, 1, 0, 1});  // ZeroPad2d((0, 1, 0, 1)): right and bottom
    }
    y = conv_->forward(y);
    y = y.view({b, t, y.size(1), y.size(2), y.size(3)}).permute({0, 2, 1, 3, 4});

    if (mode_ == ResampleMode::downsample3d && cache != nullptr) {
        const size_t idx = cache->take();
        at::Tensor& slot = cache->tensors[idx];
        if (!slot.defined()) {
            // First encode chunk (1 frame): store it, skip time_conv (1 frame -> 1 latent frame).
            slot = last_frames(y, 1).clone();
        } else {
            at::Tensor cache_x = last_frames(y, 1).clone();
            // k3 s2 over (previous last frame + n frames) -> n/2 frames.
            y = time_conv_->forward(at::cat({last_frames(slot, 1), y}, 2));
            slot = cache_x;
        }
    }
    return y;
}

// ---------------------------------------------------------------------------------------------
// WanResidualBlock (upstream WanResidualBlock)

WanResidualBlockImpl::WanResidualBlockImpl(int64_t in_dim, int64_t out_dim, double dropout)
    : dropout_(dropout) {
    const std::array<int64_t, 3> k3{3, 3, 3}, one{1, 1, 1}, pad1{1, 1, 1};
    norm1_ = register_module("norm1", WanRMSNorm(in_dim, false));
    conv1_ = register_module("conv1", WanCausalConv3d(in_dim, out_dim, k3, one, pad1));
    norm2_ = register_module("norm2", WanRMSNorm(out_dim, false));
    conv2_ = register_module("conv2", WanCausalConv3d(out_dim, out_dim, k3, one, pad1));
    if (in_dim != out_dim)
        conv_shortcut_ = register_module("conv_shortcut", WanCausalConv3d(in_dim, out_dim, one));
}

at::Tensor WanResidualBlockImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, Cin, T, H, W] -> [B, Cout, T, H, W]
    const at::Tensor h = conv_shortcut_ ? conv_shortcut_->forward(x) : x;
    at::Tensor y = at::silu(norm1_->forward(x));
    y = cached_causal_conv(*conv1_, y, cache);
    y = at::silu(norm2_->forward(y));
    if (dropout_ > 0.0 && is_training()) y = at::dropout(y, dropout_, /*train=*/true);
    y = cached_causal_conv(*conv2_, y, cache);
    return y + h;
}

// ---------------------------------------------------------------------------------------------
// WanAttentionBlock (upstream WanAttentionBlock)

WanAttentionBlockImpl::WanAttentionBlockImpl(int64_t dim) : dim_(dim) {
    norm_ = register_module("norm", WanRMSNorm(dim, true));
    to_qkv_ = register_module("to_qkv", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim * 3, 1)));
    proj_ = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim, dim, 1)));
}

at::Tensor WanAttentionBlockImpl::forward(const at::Tensor& x) {
    // [B, C, T, H, W] -> [B, C, T, H, W]; one head of width C over the H*W tokens of each frame.
    TORCH_CHECK(x.dim() == 5 && x.size(1) == dim_, "WanAttentionBlock expects [B, ", dim_, ", T, H, W], got ",
                x.sizes());
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    at::Tensor y = x.permute({0, 2, 1, 3, 4}).reshape({b * t, c, h, w});
    y = norm_->forward(y);
    at::Tensor qkv = to_qkv_->forward(y);                                            // [BT, 3C, H, W]
    qkv = qkv.reshape({b * t, 1, c * 3, h * w}).permute({0, 1, 3, 2}).contiguous();  // [BT, 1, HW, 3C]
    const auto parts = qkv.chunk(3, -1);
    at::Tensor o = st::sdk::attention(parts[0], parts[1], parts[2]);  // scale 1/sqrt(C)
    o = o.squeeze(1).permute({0, 2, 1}).reshape({b * t, c, h, w});
    o = proj_->forward(o);
    o = o.view({b, t, c, h, w}).permute({0, 2, 1, 3, 4});
    return o + x;
}

// ---------------------------------------------------------------------------------------------
// WanMidBlock (upstream WanMidBlock, num_layers=1)

WanMidBlockImpl::WanMidBlockImpl(int64_t dim, double dropout) {
    auto resnets = register_module("resnets", torch::nn::ModuleList());
    auto attentions = register_module("attentions", torch::nn::ModuleList());
    for (int i = 0; i < 2; ++i) {
        resnets_.emplace_back(dim, dim, dropout);
        resnets->push_back(resnets_.back());
    }
    attentions_.emplace_back(dim);
    attentions->push_back(attentions_.back());
}

at::Tensor WanMidBlockImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, C, T, H, W] -> [B, C, T, H, W]
    at::Tensor y = resnets_[0]->forward(x, cache);
    y = attentions_[0]->forward(y);
    return resnets_[1]->forward(y, cache);
}

size_t count_causal_convs(const torch::nn::Module& module) {
    size_t n = 0;
    for (const auto& m : module.modules(/*include_self=*/true))
        if (dynamic_cast<const WanCausalConv3dImpl*>(m.get()) != nullptr) ++n;
    return n;
}

}  // namespace st::kit::vae
