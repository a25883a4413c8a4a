// Building blocks of the Wan 2.1 VAE, registered under the diffusers `AutoencoderKLWan` names so
// named_parameters() equals the checkpoint keys. Port of
// diffusers src/diffusers/models/autoencoders/autoencoder_kl_wan.py (WanCausalConv3d, WanRMS_norm,
// WanResample, WanResidualBlock, WanAttentionBlock, WanMidBlock); the original is
// Wan-Video wan/modules/vae2_1.py.
//
// Chunked causal processing: the encoder/decoder are run on short chunks of frames; every causal
// 3-D convolution with a temporal kernel keeps the last kCacheT frames of its *input* from the
// previous chunk in a FeatCache slot, so chunked output equals a full-clip causal run and memory
// does not grow with clip length. Slots are visited in a fixed order per chunk (`FeatCache::take`).
//
// The blocks live in st::kit::vae: several share upstream names with transformer blocks
// (RMS norm, attention) of the same library.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <vector>

namespace st::kit::vae {

/// Frames of history each causal conv keeps between chunks (upstream CACHE_T).
constexpr int64_t kCacheT = 2;

/// The per-clip feature cache (upstream `feat_cache` list + `feat_idx` counter). An undefined
/// tensor is upstream's None; `rep` is upstream's "Rep" marker set by upsample3d on the first
/// decode chunk (time_conv skipped; the next chunk zero-fills the missing history).
struct FeatCache {
    explicit FeatCache(size_t slots) : tensors(slots), rep(slots, false) {}
    /// Called before each chunk: slots are visited again from the first.
    void start_chunk() { next = 0; }
    /// The index of the next slot; throws st::Error when the network uses more slots than counted.
    size_t take();

    std::vector<at::Tensor> tensors;
    std::vector<bool> rep;
    size_t next = 0;
};

/// Conv3d with causal time padding: (W ±pw, H ±ph, T 2·pt in front, 0 behind). A cache (previous
/// chunk's last input frames) is prepended and the front padding reduced by its length.
/// Parameters: weight [out, in, kt, kh, kw], bias [out].
class WanCausalConv3dImpl : public torch::nn::Module {
  public:
    WanCausalConv3dImpl(int64_t in_channels, int64_t out_channels, std::array<int64_t, 3> kernel,
                        std::array<int64_t, 3> stride = {1, 1, 1},
                        std::array<int64_t, 3> padding = {0, 0, 0});
    /// x [B, Cin, T, H, W], cache [B, Cin, <=2, H, W] or undefined -> [B, Cout, T', H', W'].
    at::Tensor forward(const at::Tensor& x, const at::Tensor& cache = {});
    /// Front time padding without cache (2·pt); 0 means the cache is never used.
    int64_t time_padding() const { return 2 * padding_[0]; }

    at::Tensor weight;
    at::Tensor bias;

  private:
    std::array<int64_t, 3> stride_;
    std::array<int64_t, 3> padding_;
};
TORCH_MODULE(WanCausalConv3d);

/// Runs `conv` on `x` with the cache slot protocol shared by every temporal conv of the network:
/// store the last kCacheT input frames (padded with the previous slot's last frame when the chunk
/// is 1 frame long), convolve with the previous slot as history. Without a cache: plain causal conv.
at::Tensor cached_causal_conv(WanCausalConv3dImpl& conv, const at::Tensor& x, FeatCache* cache);

/// Wan RMS norm: F.normalize over channels (eps 1e-12) x sqrt(C) x gamma. gamma is [C,1,1,1] for
/// video tensors, [C,1,1] with images=true (the attention block).
class WanRMSNormImpl : public torch::nn::Module {
  public:
    WanRMSNormImpl(int64_t dim, bool images);
    /// x [B, C, (T,) H, W] -> same shape.
    at::Tensor forward(const at::Tensor& x);
    at::Tensor gamma;

  private:
    double scale_;
};
TORCH_MODULE(WanRMSNorm);

enum class ResampleMode { upsample2d, upsample3d, downsample2d, downsample3d };

/// Spatial (and for *3d temporal) resampling. Parameters: resample.1.{weight,bias} (Conv2d, run per
/// frame) and for *3d time_conv.{weight,bias}. resample.0 is the parameter-free zero-pad/upsample
/// step (computed in forward, kept as a placeholder so indices match the checkpoint).
class WanResampleImpl : public torch::nn::Module {
  public:
    /// upsample_out_dim < 0 means dim / 2 (Wan 2.1).
    WanResampleImpl(int64_t dim, ResampleMode mode, int64_t upsample_out_dim = -1);
    /// x [B, C, T, H, W] -> down: [B, C, T', H/2, W/2]; up: [B, C_out, T', 2H, 2W] (T' = 2T for
    /// upsample3d after the first chunk; the first downsample3d chunk keeps T, later ones halve).
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);
    ResampleMode mode() const { return mode_; }

  private:
    ResampleMode mode_;
    int64_t dim_;
    torch::nn::ModuleList resample_;
    torch::nn::Conv2d conv_{nullptr};
    WanCausalConv3d time_conv_{nullptr};
};
TORCH_MODULE(WanResample);

/// RMS -> SiLU -> CausalConv 3^3 -> RMS -> SiLU -> dropout -> CausalConv 3^3, plus shortcut
/// (CausalConv 1^3 when the width changes). Parameters norm1.gamma, conv1.*, norm2.gamma, conv2.*,
/// [conv_shortcut.*].
class WanResidualBlockImpl : public torch::nn::Module {
  public:
    WanResidualBlockImpl(int64_t in_dim, int64_t out_dim, double dropout);
    /// x [B, Cin, T, H, W] -> [B, Cout, T, H, W].
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);

  private:
    double dropout_;
    WanRMSNorm norm1_{nullptr};
    WanCausalConv3d conv1_{nullptr};
    WanRMSNorm norm2_{nullptr};
    WanCausalConv3d conv2_{nullptr};
    WanCausalConv3d conv_shortcut_{nullptr};
};
TORCH_MODULE(WanResidualBlock);

/// Single-head self-attention over the H·W positions of each frame (time folded into batch), with
/// RMS norm and 1x1 convs. Parameters norm.gamma [C,1,1], to_qkv.* (Conv2d C->3C), proj.* (C->C).
class WanAttentionBlockImpl : public torch::nn::Module {
  public:
    explicit WanAttentionBlockImpl(int64_t dim);
    /// x [B, C, T, H, W] -> same shape.
    at::Tensor forward(const at::Tensor& x);

  private:
    int64_t dim_;
    WanRMSNorm norm_{nullptr};
    torch::nn::Conv2d to_qkv_{nullptr};
    torch::nn::Conv2d proj_{nullptr};
};
TORCH_MODULE(WanAttentionBlock);

/// Res -> Attention -> Res. Parameters resnets.{0,1}.*, attentions.0.*.
class WanMidBlockImpl : public torch::nn::Module {
  public:
    WanMidBlockImpl(int64_t dim, double dropout);
    /// x [B, C, T, H, W] -> same shape.
    at::Tensor forward(const at::Tensor& x, FeatCache* cache);

  private:
    std::vector<WanResidualBlock> resnets_;
    std::vector<WanAttentionBlock> attentions_;
};
TORCH_MODULE(WanMidBlock);

/// Number of WanCausalConv3d modules under `module` (upstream's cache size; 1x1x1 convs are
/// counted too and simply never use their slot).
size_t count_causal_convs(const torch::nn::Module& module);

}  // namespace st::kit::vae
