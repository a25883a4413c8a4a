// S2V RoPE: the generic "grid -> positions" routine of Wan S2V (original wan/modules/s2v/
// s2v_utils.py rope_precompute; diffusers PR WanS2VRotaryPosEmbed.forward with grid_sizes), which
// places the noisy tokens at f = 0.., the reference image at f = 30 and the motion tokens at negative
// frames. models.md §5.4 step 1. Tables use the layout of the Wan core (plugins/wan/core/rope.h), so
// attention applies them with st::plugins::wan::apply_wan_rope.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/rope.h"

namespace st::plugins::wan_s2v {

/// One block of tokens laid out as a (f, h, w) grid, token order f, h, w (w fastest).
/// Token counts per axis are end - start; positions per axis are numpy
/// `linspace(start, start + span - 1, end - start)` truncated to integers (so a coarse grid is spread
/// over a finer span). A negative frame start mirrors the frame axis: positions are taken from
/// linspace(-start, -start - span + 1, n) and their angles negated (the reference's complex
/// conjugate). h/w starts must be >= 0.
struct S2VRopeGrid {
    std::array<int64_t, 3> start{0, 0, 0};
    std::array<int64_t, 3> end{0, 0, 0};
    std::array<int64_t, 3> span{0, 0, 0};
    int64_t tokens() const { return (end[0] - start[0]) * (end[1] - start[1]) * (end[2] - start[2]); }
};

/// numpy.linspace(start, stop, num) (endpoint included) with `.astype(int)` truncation toward zero,
/// reproducing numpy's float64 arithmetic (i*step + start, last element = stop).
std::vector<int64_t> linspace_int(double start, double stop, int64_t num);

/// Signed frame positions and h/w positions of one grid (frame positions negative for a mirrored
/// grid). Exposed for tests.
struct S2VGridPositions {
    std::vector<int64_t> f, h, w;
};
S2VGridPositions s2v_grid_positions(const S2VRopeGrid& grid);

/// cos/sin tables [sum of tokens, head_dim] for the grids concatenated in order. Angles in float64
/// (as both references), head_dim split t/h/w as the Wan core. Throws st::Error when a position's
/// magnitude reaches max_seq_len (the reference tables have max_seq_len rows) or a grid is malformed.
st::plugins::wan::RopeTables s2v_rope_tables(int64_t head_dim, const std::vector<S2VRopeGrid>& grids,
                                             int64_t max_seq_len, double theta = 10000.0);

/// The noisy-latent grid (f 0..F'-1) and the reference-image grid (f = 30) of the DiT input.
S2VRopeGrid s2v_noisy_grid(int64_t frames, int64_t height, int64_t width);
S2VRopeGrid s2v_reference_grid(int64_t height, int64_t width);

/// Frame index of the reference image tokens (diffusers WanS2VRotaryPosEmbed: start 30, end 31).
constexpr int64_t kReferenceFrameIndex = 30;

}  // namespace st::plugins::wan_s2v
