// The 3-D rotary position embedding of the Wan DiT (diffusers WanRotaryPosEmbed, original
// wan/modules/model.py rope_params/rope_apply), shared by every family built on it: Wan, Wan S2V and
// Sana Video (whose diffusers model copies WanRotaryPosEmbed). models.md §1.4, §6.3.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace st::kit {

/// cos/sin tables per token, interleaved-pair layout: [L, head_dim] each (float32), token order
/// f, h, w (w fastest); entries 2j and 2j+1 hold the same angle.
struct RopeTables {
    at::Tensor cos;
    at::Tensor sin;
};

/// Angles are computed in float64 (as both references do) and cast to float32 at the end.
/// head_dim is split t / h / w = head_dim - 2*hw / hw / hw with hw = 2*(head_dim/6).
/// Throws st::Error (prefixed `component`) when a grid axis exceeds max_seq_len.
RopeTables rope3d_tables(int64_t head_dim, int64_t frames, int64_t height, int64_t width, int64_t max_seq_len,
                         const std::string& component, double theta = 10000.0);

/// Rotates consecutive pairs: x [B, L, H, head_dim] (any float dtype), tables [L, head_dim] or
/// [B, L, head_dim] (per sample, after TREAD routing).
/// out[2j] = x[2j] cos - x[2j+1] sin, out[2j+1] = x[2j] sin + x[2j+1] cos, computed in float32
/// and returned in x's dtype.
at::Tensor apply_rope3d(const at::Tensor& x, const RopeTables& tables);

}  // namespace st::kit
