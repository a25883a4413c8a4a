// FramePack motion tokens of Wan 2.2 S2V (diffusers PR #12258 FramePackMotioner; original
// wan/modules/s2v/motioner.py FramePackMotioner): the last 19 motion latent frames, split newest ->
// oldest into buckets of 1 / 2 / 16 frames, patchified at 1x / 2x / 4x coarser scales and placed at
// negative RoPE frames. models.md §5.4 step 5.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/s2v_rope.h"

namespace st::plugins::wan_s2v {

/// Motion latents always have 16 channels (the reference hard-codes the FramePack convs' input).
constexpr int64_t kMotionChannels = 16;

struct FramePackOutput {
    at::Tensor tokens;               ///< [B, Nm, D]
    std::vector<S2VRopeGrid> grids;  ///< RoPE grids of the tokens, in token order
};

class S2VFramePackerImpl : public torch::nn::Module {
  public:
    /// drop_mode "padd" (skipped buckets are zeroed) or "drop" (their tokens are removed).
    S2VFramePackerImpl(int64_t inner_dim, std::string drop_mode);
    /// motion [B, 16, M, H, W] (M >= 0; the last 19 frames are used, fewer are zero-padded on the
    /// left); add_last_motion 2: all buckets, 1: without the newest frame, 0: only the 16-frame
    /// bucket. -> tokens [B, (H/2)(W/2) + (H/4)(W/4) + 4 (H/8)(W/8), D] with "padd" (floor divisions).
    FramePackOutput forward(const at::Tensor& motion, int64_t add_last_motion);

    torch::nn::Conv3d proj{nullptr}, proj_2x{nullptr}, proj_4x{nullptr};

  private:
    std::string drop_mode_;
};
TORCH_MODULE(S2VFramePacker);

}  // namespace st::plugins::wan_s2v
