// S2V grid RoPE (see s2v_rope.h). Follows diffusers PR #12258 transformer_wan_s2v.py
// WanS2VRotaryPosEmbed.forward and Wan-Video wan/modules/s2v/s2v_utils.py rope_precompute.
#include "core/s2v_rope.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>

#include "st/error.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v@1";

// [n, dim/2] angles pos * theta^(-2j/dim) in float64 for signed positions.
at::Tensor axis_angles(int64_t dim, const std::vector<int64_t>& positions, double theta) {
    auto opts = at::TensorOptions().dtype(at::kDouble);
    at::Tensor j = at::arange(0, dim, 2, opts).slice(0, 0, dim / 2);
    at::Tensor inv_freq = 1.0 / at::pow(theta, j / static_cast<double>(dim));
    at::Tensor pos = at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(at::kDouble);
    return at::outer(pos, inv_freq);
}

}  // namespace

std::vector<int64_t> linspace_int(double start, double stop, int64_t num) {
    // numpy.linspace: div = num - 1; step = (stop - start) / div; y_i = i * step + start (when the
    // step is 0: i / div * delta + start); y_last = stop; then astype(int) truncates toward zero.
    std::vector<int64_t> out;
    if (num <= 0) return out;
    out.reserve(static_cast<size_t>(num));
    const double delta = stop - start;
    const int64_t div = num - 1;
    for (int64_t i = 0; i < num; ++i) {
        double y;
        if (div == 0) {
            y = static_cast<double>(i) * delta + start;
        } else {
            const double step = delta / static_cast<double>(div);
            y = step == 0.0 ? static_cast<double>(i) / static_cast<double>(div) * delta + start
                            : static_cast<double>(i) * step + start;
            if (i == num - 1) y = stop;
        }
        out.push_back(static_cast<int64_t>(std::trunc(y)));
    }
    return out;
}

S2VGridPositions s2v_grid_positions(const S2VRopeGrid& g) {
    const auto& s = g.start;
    const auto& e = g.end;
    const auto& t = g.span;
    for (int a = 0; a < 3; ++a) {
        if (e[a] < s[a] || t[a] <= 0)
            fail(kComponent, "rope", "malformed RoPE grid on axis {}: start {}, end {}, span {}", a, s[a],
                 e[a], t[a]);
        // The reference asserts that start and end have the same sign.
        if (s[a] * e[a] < 0)
            fail(kComponent, "rope", "RoPE grid axis {} crosses zero: start {}, end {}", a, s[a], e[a]);
    }
    if (s[1] < 0 || s[2] < 0)
        fail(kComponent, "rope", "RoPE grid h/w starts must be >= 0, got {}, {}", s[1], s[2]);
    S2VGridPositions p;
    const int64_t nf = e[0] - s[0], nh = e[1] - s[1], nw = e[2] - s[2];
    if (s[0] >= 0) {
        p.f = linspace_int(static_cast<double>(s[0]), static_cast<double>(t[0] + s[0] - 1), nf);
    } else {
        // Mirrored frames: magnitudes from linspace(-start, -span - start + 1), angles conjugated.
        p.f = linspace_int(static_cast<double>(-s[0]), static_cast<double>(-t[0] - s[0] + 1), nf);
        for (auto& v : p.f) v = -v;
    }
    p.h = linspace_int(static_cast<double>(s[1]), static_cast<double>(t[1] + s[1] - 1), nh);
    p.w = linspace_int(static_cast<double>(s[2]), static_cast<double>(t[2] + s[2] - 1), nw);
    return p;
}

st::plugins::wan::RopeTables s2v_rope_tables(int64_t head_dim, const std::vector<S2VRopeGrid>& grids,
                                             int64_t max_seq_len, double theta) {
    const int64_t hw_dim = 2 * (head_dim / 6);
    const int64_t t_dim = head_dim - 2 * hw_dim;
    std::vector<at::Tensor> parts;
    for (const auto& g : grids) {
        if (g.tokens() == 0) continue;
        const S2VGridPositions p = s2v_grid_positions(g);
        for (const auto* axis : {&p.f, &p.h, &p.w})
            for (const int64_t v : *axis)
                if (std::llabs(v) >= max_seq_len)
                    fail(kComponent, "rope", "RoPE position {} exceeds rope_max_seq_len {}", v, max_seq_len);
        const int64_t nf = static_cast<int64_t>(p.f.size()), nh = static_cast<int64_t>(p.h.size()),
                      nw = static_cast<int64_t>(p.w.size());
        at::Tensor af =
            axis_angles(t_dim, p.f, theta).view({nf, 1, 1, t_dim / 2}).expand({nf, nh, nw, t_dim / 2});
        at::Tensor ah =
            axis_angles(hw_dim, p.h, theta).view({1, nh, 1, hw_dim / 2}).expand({nf, nh, nw, hw_dim / 2});
        at::Tensor aw =
            axis_angles(hw_dim, p.w, theta).view({1, 1, nw, hw_dim / 2}).expand({nf, nh, nw, hw_dim / 2});
        parts.push_back(at::cat({af, ah, aw}, -1).reshape({nf * nh * nw, head_dim / 2}));
    }
    at::Tensor angles = parts.empty() ? at::zeros({0, head_dim / 2}, at::TensorOptions().dtype(at::kDouble))
                                      : at::cat(parts, 0);
    st::plugins::wan::RopeTables out;
    out.cos = angles.cos().repeat_interleave(2, 1).to(at::kFloat).contiguous();
    out.sin = angles.sin().repeat_interleave(2, 1).to(at::kFloat).contiguous();
    return out;
}

S2VRopeGrid s2v_noisy_grid(int64_t frames, int64_t height, int64_t width) {
    return {{0, 0, 0}, {frames, height, width}, {frames, height, width}};
}

S2VRopeGrid s2v_reference_grid(int64_t height, int64_t width) {
    return {{kReferenceFrameIndex, 0, 0}, {kReferenceFrameIndex + 1, height, width}, {1, height, width}};
}

}  // namespace st::plugins::wan_s2v
