// Wan VAE encoder. Port of diffusers WanEncoder3d (autoencoder_kl_wan.py), 2.1 and 2.2 (is_residual).
#include "st/kit/vae_encoder.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

namespace st::kit::vae {

WanEncoder3dImpl::WanEncoder3dImpl(const WanVAEConfig& config) : in_channels_(config.in_channels) {
    const std::vector<int64_t> dims = config.encoder_dims();
    const std::array<int64_t, 3> k3{3, 3, 3}, one{1, 1, 1}, pad1{1, 1, 1};
    conv_in_ = register_module("conv_in", WanCausalConv3d(config.in_channels, dims[0], k3, one, pad1));

    // Flat list, same indices as the original `encoder.downsamples.N`: per stage num_res_blocks
    // residual blocks, then a resampler on every stage but the last.
    auto list = register_module("down_blocks", torch::nn::ModuleList());
    const size_t stages = config.dim_mult.size();
    for (size_t i = 0; i < stages; ++i) {
        if (config.is_residual) {
            // Wan 2.2: the last stage neither downsamples nor folds time.
            const bool last = i + 1 == stages;
            DownLayer layer;
            layer.residual_down =
                WanResidualDownBlock(dims[i], dims[i + 1], config.dropout, config.num_res_blocks,
                                     !last && config.temperal_downsample[i], !last);
            list->push_back(layer.residual_down);
            down_blocks_.push_back(layer);
            continue;
        }
        int64_t in_dim = dims[i];
        const int64_t out_dim = dims[i + 1];
        for (int64_t r = 0; r < config.num_res_blocks; ++r) {
            DownLayer layer;
            layer.res = WanResidualBlock(in_dim, out_dim, config.dropout);
            list->push_back(layer.res);
            down_blocks_.push_back(layer);
            in_dim = out_dim;
        }
        if (i + 1 != stages) {
            DownLayer layer;
            layer.resample = WanResample(out_dim, config.temperal_downsample[i] ? ResampleMode::downsample3d
                                                                                : ResampleMode::downsample2d);
            list->push_back(layer.resample);
            down_blocks_.push_back(layer);
        }
    }
    const int64_t out_dim = dims.back();
    mid_block_ = register_module("mid_block", WanMidBlock(out_dim, config.dropout));
    norm_out_ = register_module("norm_out", WanRMSNorm(out_dim, false));
    conv_out_ = register_module("conv_out", WanCausalConv3d(out_dim, config.z_dim * 2, k3, one, pad1));
}

at::Tensor WanEncoder3dImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, C_in, T, H, W] -> [B, 2z, T', H/8, W/8] (T' = 1 per chunk of 1 or 4 frames with the cache)
    TORCH_CHECK(x.dim() == 5 && x.size(1) == in_channels_, "WanEncoder3d expects [B, ", in_channels_,
                ", T, H, W], got ", x.sizes());
    at::Tensor y = cached_causal_conv(*conv_in_, x, cache);
    for (auto& layer : down_blocks_) {
        if (layer.res) {
            y = layer.res->forward(y, cache);
        } else if (layer.resample) {
            y = layer.resample->forward(y, cache);
        } else {
            y = layer.residual_down->forward(y, cache);
        }
    }
    y = mid_block_->forward(y, cache);
    y = at::silu(norm_out_->forward(y));
    return cached_causal_conv(*conv_out_, y, cache);
}

}  // namespace st::kit::vae
