// Wan VAE decoder. Port of diffusers WanUpBlock / WanDecoder3d (autoencoder_kl_wan.py), 2.1 and
// 2.2 (is_residual, WanResidualUpBlock in vae22.cpp).
#include "st/kit/vae_decoder.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

namespace st::kit::vae {

WanUpBlockImpl::WanUpBlockImpl(int64_t in_dim, int64_t out_dim, int64_t num_res_blocks, double dropout,
                               std::optional<ResampleMode> mode) {
    auto resnets = register_module("resnets", torch::nn::ModuleList());
    int64_t current = in_dim;
    for (int64_t r = 0; r < num_res_blocks + 1; ++r) {
        resnets_.emplace_back(current, out_dim, dropout);
        resnets->push_back(resnets_.back());
        current = out_dim;
    }
    if (mode) {
        auto upsamplers = register_module("upsamplers", torch::nn::ModuleList());
        upsampler_ = WanResample(out_dim, *mode);  // Wan 2.1: conv out_dim -> out_dim / 2
        upsamplers->push_back(upsampler_);
    }
}

at::Tensor WanUpBlockImpl::forward(const at::Tensor& x, FeatCache* cache) {
    // [B, Cin, T, H, W] -> [B, Cout (/2 when upsampling), T or 2T, H or 2H, W or 2W]
    at::Tensor y = x;
    for (auto& resnet : resnets_) y = resnet->forward(y, cache);
    if (upsampler_) y = upsampler_->forward(y, cache);
    return y;
}

WanDecoder3dImpl::WanDecoder3dImpl(const WanVAEConfig& config) : z_dim_(config.z_dim) {
    const std::vector<int64_t> dims = config.decoder_dims();
    const std::vector<bool> temporal = config.temperal_upsample();
    const std::array<int64_t, 3> k3{3, 3, 3}, one{1, 1, 1}, pad1{1, 1, 1};
    conv_in_ = register_module("conv_in", WanCausalConv3d(config.z_dim, dims[0], k3, one, pad1));
    mid_block_ = register_module("mid_block", WanMidBlock(dims[0], config.dropout));

    auto list = register_module("up_blocks", torch::nn::ModuleList());
    const size_t stages = config.dim_mult.size();
    for (size_t i = 0; i < stages; ++i) {
        const bool up_flag = i + 1 != stages;
        const int64_t out_dim = dims[i + 1];
        UpLayer layer;
        if (config.is_residual) {
            // Wan 2.2: upsamplers keep the width; a DupUp3D shortcut is added.
            layer.residual = WanResidualUpBlock(dims[i], out_dim, config.num_res_blocks, config.dropout,
                                                up_flag && temporal[i], up_flag);
            list->push_back(layer.residual);
        } else {
            // Wan 2.1: every upsampler halves the width, so blocks after the first start at in_dim / 2.
            const int64_t in_dim = i > 0 ? dims[i] / 2 : dims[i];
            std::optional<ResampleMode> mode;
            if (up_flag) mode = temporal[i] ? ResampleMode::upsample3d : ResampleMode::upsample2d;
            layer.plain = WanUpBlock(in_dim, out_dim, config.num_res_blocks, config.dropout, mode);
            list->push_back(layer.plain);
        }
        up_blocks_.push_back(layer);
    }
    const int64_t out_dim = dims.back();
    norm_out_ = register_module("norm_out", WanRMSNorm(out_dim, false));
    conv_out_ = register_module("conv_out", WanCausalConv3d(out_dim, config.out_channels, k3, one, pad1));
}

at::Tensor WanDecoder3dImpl::forward(const at::Tensor& z, FeatCache* cache, bool first_chunk) {
    // [B, z, T, h, w] -> [B, C_out, T_out, 8h, 8w] (one latent frame per call with the cache:
    // T_out = 1 on the first chunk, 4 afterwards)
    TORCH_CHECK(z.dim() == 5 && z.size(1) == z_dim_, "WanDecoder3d expects [B, ", z_dim_, ", T, h, w], got ",
                z.sizes());
    at::Tensor y = cached_causal_conv(*conv_in_, z, cache);
    y = mid_block_->forward(y, cache);
    for (auto& block : up_blocks_)
        y = block.plain ? block.plain->forward(y, cache) : block.residual->forward(y, cache, first_chunk);
    y = at::silu(norm_out_->forward(y));
    return cached_causal_conv(*conv_out_, y, cache);
}

}  // namespace st::kit::vae
