// 3-D RoPE tables and application (st/kit/rope3d.h). Follows diffusers transformer_wan.py
// WanRotaryPosEmbed.forward (get_1d_rotary_pos_embed with use_real, repeat_interleave_real, freqs_dtype
// float64) and attention_processor apply_rotary_emb of WanAttnProcessor.
#include "st/kit/rope3d.h"

#include "st/kit/cuda_dit.h"

#include <ATen/ATen.h>

#include "st/error.h"

namespace st::kit {
namespace {

// [max_len, dim/2] angles p * theta^(-2j/dim), float64.
at::Tensor axis_angles(int64_t dim, int64_t length, double theta) {
    auto opts = at::TensorOptions().dtype(at::kDouble);
    at::Tensor j = at::arange(0, dim, 2, opts).slice(0, 0, dim / 2);
    at::Tensor inv_freq = 1.0 / at::pow(theta, j / static_cast<double>(dim));
    at::Tensor pos = at::arange(length, opts);
    return at::outer(pos, inv_freq);
}

}  // namespace

RopeTables rope3d_tables(int64_t head_dim, int64_t frames, int64_t height, int64_t width, int64_t max_seq_len,
                         const std::string& component, double theta) {
    const int64_t hw_dim = 2 * (head_dim / 6);
    const int64_t t_dim = head_dim - 2 * hw_dim;
    if (frames > max_seq_len || height > max_seq_len || width > max_seq_len)
        fail(component, "rope", "token grid {}x{}x{} exceeds rope_max_seq_len {}", frames, height, width,
             max_seq_len);
    // [F, t/2], [H, h/2], [W, w/2] angles, broadcast over the grid then concatenated per token.
    at::Tensor at_ = axis_angles(t_dim, frames, theta)
                         .view({frames, 1, 1, t_dim / 2})
                         .expand({frames, height, width, t_dim / 2});
    at::Tensor ah = axis_angles(hw_dim, height, theta)
                        .view({1, height, 1, hw_dim / 2})
                        .expand({frames, height, width, hw_dim / 2});
    at::Tensor aw = axis_angles(hw_dim, width, theta)
                        .view({1, 1, width, hw_dim / 2})
                        .expand({frames, height, width, hw_dim / 2});
    at::Tensor angles = at::cat({at_, ah, aw}, -1).reshape({frames * height * width, head_dim / 2});
    RopeTables t;
    t.cos = angles.cos().repeat_interleave(2, 1).to(at::kFloat).contiguous();
    t.sin = angles.sin().repeat_interleave(2, 1).to(at::kFloat).contiguous();
    return t;
}

at::Tensor apply_rope3d(const at::Tensor& x, const RopeTables& tables) {
    // x [B, L, H, D]; tables [L, D], or [B, L, D] per sample (tokens routed by TREAD)
    const bool per_sample = tables.cos.dim() == 3;
    const at::Tensor tc = per_sample ? tables.cos : tables.cos.unsqueeze(0);
    const at::Tensor ts = per_sample ? tables.sin : tables.sin.unsqueeze(0);
    TORCH_CHECK(x.dim() == 4 && x.size(1) == tc.size(1) && x.size(3) == tc.size(2) &&
                    (tc.size(0) == 1 || tc.size(0) == x.size(0)),
                "apply_rope3d: x ", x.sizes(), " vs tables ", tables.cos.sizes());
    if (cuda_dit_available(x)) return rope3d_cuda(x, tc, ts);  // kernels/cuda (ST_CUDA builds)
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor pairs = xf.unflatten(-1, {-1, 2});  // [B, L, H, D/2, 2]
    at::Tensor x1 = pairs.select(-1, 0), x2 = pairs.select(-1, 1);
    // [B|1, L, D] -> [B|1, L, 1, D/2] (one value per pair)
    at::Tensor cos = tc.to(x.device()).slice(2, 0, c10::nullopt, 2).unsqueeze(2);
    at::Tensor sin = ts.to(x.device()).slice(2, 1, c10::nullopt, 2).unsqueeze(2);
    at::Tensor out = at::stack({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1).flatten(-2);
    return out.to(x.scalar_type());
}

}  // namespace st::kit
