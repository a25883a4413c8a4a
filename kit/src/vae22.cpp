// Wan 2.2 VAE blocks. Port of diffusers AvgDown3D, DupUp3D, WanResidualDownBlock,
// WanResidualUpBlock, patchify, unpatchify (autoencoder_kl_wan.py).
#include "st/kit/vae22.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include "st/error.h"

namespace st::kit::vae {
namespace {
constexpr const char* kComponent = "model.wan.vae";
}  // namespace

at::Tensor avg_down_3d(const at::Tensor& x, int64_t out_channels, int64_t factor_t, int64_t factor_s) {
    // [B, Cin, T, H, W] -> [B, Cout, ceil(T/ft), H/fs, W/fs]
    const int64_t factor = factor_t * factor_s * factor_s;
    TORCH_CHECK(x.size(1) * factor % out_channels == 0, "AvgDown3D: ", x.size(1), "*", factor,
                " channels do not group into ", out_channels);
    const int64_t group = x.size(1) * factor / out_channels;
    const int64_t pad_t = (factor_t - x.size(2) % factor_t) % factor_t;
    const at::Tensor p = at::constant_pad_nd(x, {0, 0, 0, 0, pad_t, 0});
    const int64_t b = p.size(0), c = p.size(1), t = p.size(2), h = p.size(3), w = p.size(4);
    at::Tensor y = p.view({b, c, t / factor_t, factor_t, h / factor_s, factor_s, w / factor_s, factor_s})
                       .permute({0, 1, 3, 5, 7, 2, 4, 6})
                       .contiguous();
    y = y.view({b, c * factor, t / factor_t, h / factor_s, w / factor_s});
    return y.view({b, out_channels, group, t / factor_t, h / factor_s, w / factor_s}).mean(2);
}

at::Tensor dup_up_3d(const at::Tensor& x, int64_t out_channels, int64_t factor_t, int64_t factor_s,
                     bool first_chunk) {
    // [B, Cin, T, H, W] -> [B, Cout, T*ft (- (ft-1) on the first chunk), H*fs, W*fs]
    const int64_t factor = factor_t * factor_s * factor_s;
    TORCH_CHECK(out_channels * factor % x.size(1) == 0, "DupUp3D: ", out_channels, "*", factor,
                " channels are not a multiple of ", x.size(1));
    const int64_t repeats = out_channels * factor / x.size(1);
    const int64_t b = x.size(0), t = x.size(2), h = x.size(3), w = x.size(4);
    at::Tensor y = x.repeat_interleave(repeats, 1);
    y = y.view({b, out_channels, factor_t, factor_s, factor_s, t, h, w})
            .permute({0, 1, 5, 2, 6, 3, 7, 4})
            .contiguous();
    y = y.view({b, out_channels, t * factor_t, h * factor_s, w * factor_s});
    if (first_chunk) y = y.narrow(2, factor_t - 1, y.size(2) - (factor_t - 1));
    return y;
}

at::Tensor patchify(const at::Tensor& x, int64_t patch) {
    // [B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p]
    if (patch == 1) return x;
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    if (h % patch != 0 || w % patch != 0)
        fail(kComponent, "patchify", "height/width {}x{} must be divisible by patch_size {}", h, w, patch);
    return x.view({b, c, t, h / patch, patch, w / patch, patch})
        .permute({0, 1, 6, 4, 2, 3, 5})
        .contiguous()
        .view({b, c * patch * patch, t, h / patch, w / patch});
}

at::Tensor unpatchify(const at::Tensor& x, int64_t patch) {
    // [B, C*p*p, T, H, W] -> [B, C, T, H*p, W*p]
    if (patch == 1) return x;
    const int64_t b = x.size(0), c = x.size(1) / (patch * patch), t = x.size(2), h = x.size(3), w = x.size(4);
    return x.view({b, c, patch, patch, t, h, w})
        .permute({0, 1, 4, 5, 3, 6, 2})
        .contiguous()
        .view({b, c, t, h * patch, w * patch});
}

WanResidualDownBlockImpl::WanResidualDownBlockImpl(int64_t in_dim, int64_t out_dim, double dropout,
                                                   int64_t num_res_blocks, bool temporal_downsample,
                                                   bool down_flag)
    : out_dim_(out_dim), factor_t_(temporal_downsample ? 2 : 1), factor_s_(down_flag ? 2 : 1) {
    auto resnets = register_module("resnets", torch::nn::ModuleList());
    int64_t current = in_dim;
    for (int64_t r = 0; r < num_res_blocks; ++r) {
        resnets_.emplace_back(current, out_dim, dropout);
        resnets->push_back(resnets_.back());
        current = out_dim;
    }
    if (down_flag)
        downsampler_ = register_module(
            "downsampler", WanResample(out_dim, temporal_downsample ? ResampleMode::downsample3d
                                                                    : ResampleMode::downsample2d));
}

at::Tensor WanResidualDownBlockImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, Cin, T, H, W] -> [B, Cout, T', H', W']
    at::Tensor y = x;
    for (auto& resnet : resnets_) y = resnet->forward(y, cache);
    if (downsampler_) y = downsampler_->forward(y, cache);
    return y + avg_down_3d(x, out_dim_, factor_t_, factor_s_);
}

WanResidualUpBlockImpl::WanResidualUpBlockImpl(int64_t in_dim, int64_t out_dim, int64_t num_res_blocks,
                                               double dropout, bool temporal_upsample, bool up_flag)
    : out_dim_(out_dim), factor_t_(temporal_upsample ? 2 : 1), up_flag_(up_flag) {
    auto resnets = register_module("resnets", torch::nn::ModuleList());
    int64_t current = in_dim;
    for (int64_t r = 0; r < num_res_blocks + 1; ++r) {
        resnets_.emplace_back(current, out_dim, dropout);
        resnets->push_back(resnets_.back());
        current = out_dim;
    }
    if (up_flag)
        upsampler_ = register_module(
            "upsampler",
            WanResample(out_dim, temporal_upsample ? ResampleMode::upsample3d : ResampleMode::upsample2d,
                        out_dim));
}

at::Tensor WanResidualUpBlockImpl::forward(const at::Tensor& x, FeatCache* cache, bool first_chunk) {
    // [B, Cin, T, H, W] -> [B, Cout, T', 2H, 2W] (T' = T on the first chunk, 2T after, T without temporal
    // upsampling)
    at::Tensor y = x;
    for (auto& resnet : resnets_) y = resnet->forward(y, cache);
    if (!up_flag_) return y;
    y = upsampler_->forward(y, cache);
    return y + dup_up_3d(x, out_dim_, factor_t_, 2, first_chunk);
}

}  // namespace st::kit::vae
