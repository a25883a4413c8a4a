// Wan 2.1 VAE decoder (diffusers WanUpBlock / WanDecoder3d in
// src/diffusers/models/autoencoders/autoencoder_kl_wan.py; original Decoder3d in Wan-Video
// wan/modules/vae2_1.py), registered under the diffusers names.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <vector>

#include "st/kit/vae22.h"
#include "st/kit/vae_blocks.h"
#include "st/kit/vae_config.h"

namespace st::kit::vae {

/// num_res_blocks + 1 residual blocks, then an optional upsampler (`upsamplers.0`).
class WanUpBlockImpl : public torch::nn::Module {
  public:
    /// mode: none for the last block (no upsampling).
    WanUpBlockImpl(int64_t in_dim, int64_t out_dim, int64_t num_res_blocks, double dropout,
                   std::optional<ResampleMode> mode);
    /// x [B, Cin, T, H, W] -> [B, Cout/2 (if upsampled), T', H', W'].
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);

  private:
    std::vector<WanResidualBlock> resnets_;
    WanResample upsampler_{nullptr};
};
TORCH_MODULE(WanUpBlock);

/// conv_in -> mid_block -> up_blocks -> norm_out -> SiLU -> conv_out (no clamp here).
class WanDecoder3dImpl : public torch::nn::Module {
  public:
    explicit WanDecoder3dImpl(const WanVAEConfig& config);
    /// One latent frame: z [B, z, 1, h, w] -> [B, C_out, 1 (first chunk) or 4, 8h, 8w] with the cache.
    /// first_chunk: the first latent frame (2.2 DupUp3D shortcuts drop their leading frames).
    at::Tensor forward(const at::Tensor& z, FeatCache* cache, bool first_chunk = false);

  private:
    int64_t z_dim_;
    WanCausalConv3d conv_in_{nullptr};
    WanMidBlock mid_block_{nullptr};
    /// Exactly one member set: 2.1 WanUpBlock or 2.2 (is_residual) WanResidualUpBlock.
    struct UpLayer {
        WanUpBlock plain{nullptr};
        WanResidualUpBlock residual{nullptr};
    };
    std::vector<UpLayer> up_blocks_;
    WanRMSNorm norm_out_{nullptr};
    WanCausalConv3d conv_out_{nullptr};
};
TORCH_MODULE(WanDecoder3d);

}  // namespace st::kit::vae
