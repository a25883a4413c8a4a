// FramePack motion tokens (see s2v_framepack.h). Follows diffusers PR #12258 transformer_wan_s2v.py
// FramePackMotioner.forward @ 64044ecb05 (zip_frame_buckets [1, 2, 16]).
#include "core/s2v_framepack.h"

#include <ATen/ATen.h>

#include <array>

#include "st/error.h"

namespace st::plugins::wan_s2v {
namespace {

// Frames per bucket, newest first: 1 frame at full token resolution, 2 frames at 2x, 16 frames at 4x.
constexpr std::array<int64_t, 3> kBuckets{1, 2, 16};
constexpr int64_t kPackedFrames = kBuckets[0] + kBuckets[1] + kBuckets[2];

torch::nn::Conv3d patch_conv(int64_t out, int64_t t, int64_t s) {
    return torch::nn::Conv3d(torch::nn::Conv3dOptions(kMotionChannels, out, {t, s, s}).stride({t, s, s}));
}

at::Tensor tokens_of(torch::nn::Conv3d& conv, const at::Tensor& x) {
    return conv->forward(x).flatten(2).transpose(1, 2);  // [B, D, f, h, w] -> [B, f*h*w, D]
}

}  // namespace

S2VFramePackerImpl::S2VFramePackerImpl(int64_t inner_dim, std::string drop_mode)
    : drop_mode_(std::move(drop_mode)) {
    proj = register_module("proj", patch_conv(inner_dim, 1, 2));
    proj_2x = register_module("proj_2x", patch_conv(inner_dim, 2, 4));
    proj_4x = register_module("proj_4x", patch_conv(inner_dim, 4, 8));
}

FramePackOutput S2VFramePackerImpl::forward(const at::Tensor& motion, int64_t add_last_motion) {
    // motion [B, 16, M, H, W] -> tokens [B, Nm, D] + RoPE grids
    TORCH_CHECK(motion.dim() == 5 && motion.size(1) == kMotionChannels,
                "S2V FramePack: motion latents must be [B, ", kMotionChannels, ", M, H, W], got ",
                motion.sizes());
    if (add_last_motion < 0 || add_last_motion > 2)
        fail("model.wan_s2v@1", "forward", "add_last_motion must be 0, 1 or 2, got {}", add_last_motion);
    const int64_t b = motion.size(0), m = motion.size(2), h = motion.size(3), w = motion.size(4);
    // The 4x bucket's kernel is 8 latent pixels; smaller sizes floor like the reference's convs.
    if (h < 8 || w < 8)
        fail("model.wan_s2v@1", "forward", "FramePack needs motion latents of at least 8x8, got {}x{}", h, w);
    const at::Tensor x = motion.to(proj->weight.scalar_type());
    // The newest kPackedFrames frames, zero-padded in front (oldest side) when fewer exist.
    const int64_t overlap = std::min(kPackedFrames, m);
    std::vector<at::Tensor> frames;
    if (overlap < kPackedFrames)
        frames.push_back(at::zeros({b, kMotionChannels, kPackedFrames - overlap, h, w}, x.options()));
    if (overlap > 0) frames.push_back(x.narrow(2, m - overlap, overlap));
    at::Tensor packed = at::cat(frames, 2);  // [B, 16, 19, H, W]
    const bool drop = drop_mode_ == "drop";
    if (add_last_motion < 2 && !drop) {
        // "padd": zero the newest bucket(s) that add_last_motion leaves out (1 or 1 + 2 frames).
        const int64_t zero_end = add_last_motion == 1 ? kBuckets[0] : kBuckets[0] + kBuckets[1];
        packed = at::cat({packed.narrow(2, 0, kPackedFrames - zero_end),
                          at::zeros({b, kMotionChannels, zero_end, h, w}, x.options())},
                         2);
    }
    const at::Tensor latents_4x = packed.narrow(2, 0, kBuckets[2]);
    const at::Tensor latents_2x = packed.narrow(2, kBuckets[2], kBuckets[1]);
    const at::Tensor latents_1x = packed.narrow(2, kBuckets[2] + kBuckets[1], kBuckets[0]);

    const bool keep_1x = !(drop && add_last_motion < 2);
    const bool keep_2x = !(drop && add_last_motion < 1);
    FramePackOutput out;
    std::vector<at::Tensor> tokens;
    if (keep_1x) {
        tokens.push_back(tokens_of(proj, latents_1x));
        const int64_t start = -kBuckets[0];
        out.grids.push_back(
            {{start, 0, 0}, {start + kBuckets[0], h / 2, w / 2}, {kBuckets[0], h / 2, w / 2}});
    }
    if (keep_2x) {
        tokens.push_back(tokens_of(proj_2x, latents_2x));
        const int64_t start = -(kBuckets[0] + kBuckets[1]);
        out.grids.push_back(
            {{start, 0, 0}, {start + kBuckets[1] / 2, h / 4, w / 4}, {kBuckets[1], h / 2, w / 2}});
    }
    tokens.push_back(tokens_of(proj_4x, latents_4x));
    const int64_t start = -kPackedFrames;
    out.grids.push_back(
        {{start, 0, 0}, {start + kBuckets[2] / 4, h / 8, w / 8}, {kBuckets[2], h / 2, w / 2}});
    out.tokens = at::cat(tokens, 1);
    return out;
}

}  // namespace st::plugins::wan_s2v
