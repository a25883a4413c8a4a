// Wan 2.1 VAE encoder (diffusers WanEncoder3d in src/diffusers/models/autoencoders/autoencoder_kl_wan.py;
// original Encoder3d in Wan-Video wan/modules/vae2_1.py), registered under the diffusers names.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "st/kit/vae22.h"
#include "st/kit/vae_blocks.h"
#include "st/kit/vae_config.h"

namespace st::kit::vae {

/// conv_in -> down_blocks (2.1: flat list of residual blocks and resamplers with upstream indices;
/// 2.2: one WanResidualDownBlock per stage) -> mid_block
/// -> norm_out -> SiLU -> conv_out (-> 2·z_dim channels: mean and log-variance before quant_conv).
class WanEncoder3dImpl : public torch::nn::Module {
  public:
    explicit WanEncoder3dImpl(const WanVAEConfig& config);
    /// One chunk: x [B, C_in, T, H, W] (T = 1 for the first chunk, 4 afterwards) ->
    /// [B, 2z, 1, H/8, W/8] when run with the cache.
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);

  private:
    /// One entry of down_blocks: exactly one member is set (2.1: flat residual blocks and
    /// resamplers; 2.2 is_residual: one WanResidualDownBlock per stage).
    struct DownLayer {
        WanResidualBlock res{nullptr};
        WanResample resample{nullptr};
        WanResidualDownBlock residual_down{nullptr};
    };
    int64_t in_channels_;
    WanCausalConv3d conv_in_{nullptr};
    std::vector<DownLayer> down_blocks_;
    WanMidBlock mid_block_{nullptr};
    WanRMSNorm norm_out_{nullptr};
    WanCausalConv3d conv_out_{nullptr};
};
TORCH_MODULE(WanEncoder3d);

}  // namespace st::kit::vae
