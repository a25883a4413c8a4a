// Wan 2.2 VAE (TI2V-5B) blocks: the residual down/up blocks with their parameter-free AvgDown3D /
// DupUp3D shortcuts, and the 2x2 pixel patchify. Port of diffusers AvgDown3D, DupUp3D,
// WanResidualDownBlock, WanResidualUpBlock, patchify, unpatchify
// (src/diffusers/models/autoencoders/autoencoder_kl_wan.py); original Wan-Video wan/modules/vae2_2.py.
// WanVAE builds these instead of the 2.1 blocks when the config has is_residual (see vae.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "st/kit/vae_blocks.h"

namespace st::kit::vae {

/// Space/time-to-channel fold then group mean: x [B, Cin, T, H, W] -> [B, Cout, ceil(T/ft), H/fs, W/fs]
/// (T is zero-padded in front to a multiple of ft).
at::Tensor avg_down_3d(const at::Tensor& x, int64_t out_channels, int64_t factor_t, int64_t factor_s);

/// Channel repeat then depth-to-space/time: x [B, Cin, T, H, W] -> [B, Cout, T*ft, H*fs, W*fs]; on the
/// first decode chunk the first ft-1 frames are dropped.
at::Tensor dup_up_3d(const at::Tensor& x, int64_t out_channels, int64_t factor_t, int64_t factor_s,
                     bool first_chunk);

/// [B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p], new channel = c*p*p + pw*p + ph (w offset slower).
at::Tensor patchify(const at::Tensor& x, int64_t patch);
/// Inverse of patchify.
at::Tensor unpatchify(const at::Tensor& x, int64_t patch);

/// num_res_blocks residual blocks + optional downsampler, plus the AvgDown3D shortcut of the input.
/// Parameters resnets.N.*, downsampler.*.
class WanResidualDownBlockImpl : public torch::nn::Module {
  public:
    WanResidualDownBlockImpl(int64_t in_dim, int64_t out_dim, double dropout, int64_t num_res_blocks,
                             bool temporal_downsample, bool down_flag);
    /// x [B, Cin, T, H, W] -> [B, Cout, T', H/2, W/2] (T' as the downsampler; no change without it).
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);

  private:
    int64_t out_dim_, factor_t_, factor_s_;
    std::vector<WanResidualBlock> resnets_;
    WanResample downsampler_{nullptr};
};
TORCH_MODULE(WanResidualDownBlock);

/// num_res_blocks + 1 residual blocks + optional upsampler (keeps the width), plus the DupUp3D
/// shortcut of the input. Parameters resnets.N.*, upsampler.*.
class WanResidualUpBlockImpl : public torch::nn::Module {
  public:
    WanResidualUpBlockImpl(int64_t in_dim, int64_t out_dim, int64_t num_res_blocks, double dropout,
                           bool temporal_upsample, bool up_flag);
    /// x [B, Cin, T, H, W] -> [B, Cout, T', 2H, 2W] (or [B, Cout, T, H, W] without upsampling).
    at::Tensor forward(const at::Tensor& x, FeatCache* cache, bool first_chunk);

  private:
    int64_t out_dim_, factor_t_;
    bool up_flag_;
    std::vector<WanResidualBlock> resnets_;
    WanResample upsampler_{nullptr};
};
TORCH_MODULE(WanResidualUpBlock);

}  // namespace st::kit::vae
