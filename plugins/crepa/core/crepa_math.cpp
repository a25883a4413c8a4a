#include "core/crepa_math.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "st/error.h"

namespace st::plugins::crepa {

namespace {
constexpr const char* kComponent = "reg.crepa@1";
}

CrepaSchedule::CrepaSchedule(const CrepaSettings& s) : s_(s), power_(s.power != 0 ? s.power : 1.0) {}

double CrepaSchedule::scheduled(int64_t step, int64_t total_steps) const {
    const int64_t decay_steps = s_.decay_steps > 0 ? s_.decay_steps : total_steps;
    const double base = s_.lambda;
    if (s_.warmup_steps > 0 && step < s_.warmup_steps)
        return base * (static_cast<double>(step) / static_cast<double>(s_.warmup_steps));
    if (s_.schedule == LambdaSchedule::constant) return base;
    const double decay_step = static_cast<double>(step - s_.warmup_steps);
    const double total = static_cast<double>(std::max<int64_t>(decay_steps - s_.warmup_steps, 1));
    const double progress = std::min(decay_step / total, 1.0);
    switch (s_.schedule) {
        case LambdaSchedule::linear:
            return base + (s_.lambda_end - base) * progress;
        case LambdaSchedule::cosine:
            return s_.lambda_end + (base - s_.lambda_end) * (1 + std::cos(M_PI * progress)) / 2;
        case LambdaSchedule::polynomial:
            return (base - s_.lambda_end) * std::pow(1 - progress, power_) + s_.lambda_end;
        case LambdaSchedule::constant:
            break;
    }
    return base;
}

double CrepaSchedule::weight(int64_t step, int64_t total_steps, std::optional<double> similarity) {
    if (similarity)
        ema_ = ema_ ? s_.similarity_ema_decay * *ema_ + (1 - s_.similarity_ema_decay) * *similarity
                    : *similarity;
    if (triggered_ && !s_.threshold_recoverable) return 0.0;
    const bool cutoff = (s_.cutoff_step > 0 && step >= s_.cutoff_step) ||
                        (s_.similarity_threshold && ema_ && *ema_ >= *s_.similarity_threshold);
    if (cutoff) {
        if (!s_.threshold_recoverable) triggered_ = true;
        return 0.0;
    }
    if (s_.threshold_recoverable && triggered_) triggered_ = false;
    return scheduled(step, total_steps);
}

nlohmann::json CrepaSchedule::state() const {
    return {{"similarity_ema", ema_ ? nlohmann::json(*ema_) : nlohmann::json(nullptr)},
            {"cutoff_triggered", triggered_}};
}

void CrepaSchedule::restore(const nlohmann::json& j) {
    if (!j.is_object()) fail(kComponent, "resume", "the checkpoint's CREPA schedule state is not an object");
    const auto& e = j.at("similarity_ema");
    ema_ = e.is_null() ? std::nullopt : std::optional<double>(e.get<double>());
    triggered_ = j.at("cutoff_triggered").get<bool>();
}

namespace {

/// [B, T, N, D] -> the frames at linspace(0, T-1, count) (truncated toward zero as .long() does).
at::Tensor subsample_frames(const at::Tensor& x, int64_t count) {
    const at::Tensor idx =
        at::linspace(0, static_cast<double>(x.size(1) - 1), count, at::kFloat).to(at::kLong);
    return x.index_select(1, idx.to(x.device()));
}

/// [B, T, r*c, D] on grid g -> [B, T, tr*tc, D] (bilinear, align_corners false).
at::Tensor resample(const at::Tensor& x, Grid g, Grid target) {
    if (g == target) return x;
    const int64_t b = x.size(0), t = x.size(1), d = x.size(3);
    const at::Tensor img = x.reshape({b * t, g[0], g[1], d}).permute({0, 3, 1, 2});
    const at::Tensor out = at::upsample_bilinear2d(img, {target[0], target[1]}, false);
    return out.permute({0, 2, 3, 1}).reshape({b, t, target[0] * target[1], d});
}

/// Per-frame mean cosine of a[:, f] with b[:, f] (both L2-normalised): [B, T].
at::Tensor frame_sim(const at::Tensor& a, const at::Tensor& b) {
    return (a * b).sum(-1).mean(-1);
}

}  // namespace

Alignment crepa_alignment(const at::Tensor& projected_in, Grid pgrid, const at::Tensor& features_in,
                          Grid fgrid, const CrepaSettings& s) {
    if (projected_in.dim() != 4 || features_in.dim() != 4)
        fail(kComponent, "step", "projected and teacher features must be [B, T, N, D], got {} and {}",
             c10::str(projected_in.sizes()), c10::str(features_in.sizes()));
    if (projected_in.size(2) != pgrid[0] * pgrid[1] || features_in.size(2) != fgrid[0] * fgrid[1])
        fail(kComponent, "step", "token counts {} and {} do not match the grids {}x{} and {}x{}",
             projected_in.size(2), features_in.size(2), pgrid[0], pgrid[1], fgrid[0], fgrid[1]);
    if (projected_in.size(0) != features_in.size(0) || projected_in.size(3) != features_in.size(3))
        fail(kComponent, "step", "projected {} and teacher features {} differ in batch or width",
             c10::str(projected_in.sizes()), c10::str(features_in.sizes()));
    at::Tensor p = projected_in, f = features_in.to(projected_in.scalar_type());
    // Frames: subsample the longer sequence.
    if (p.size(1) > f.size(1)) p = subsample_frames(p, f.size(1));
    if (f.size(1) > p.size(1)) f = subsample_frames(f, p.size(1));
    // Tokens: a common 2-D grid (the one with fewer tokens), or one mean token per frame.
    if (pgrid != fgrid) {
        if (s.spatial_align) {
            const Grid target = pgrid[0] * pgrid[1] <= fgrid[0] * fgrid[1] ? pgrid : fgrid;
            p = resample(p, pgrid, target);
            f = resample(f, fgrid, target);
        } else {
            p = p.mean(2, true);
            f = f.mean(2, true);
        }
    }
    // F.normalize(x, dim=-1): x / max(||x||, 1e-12)
    p = p / p.norm(2, {-1}, true).clamp_min(1e-12);
    f = f / f.norm(2, {-1}, true).clamp_min(1e-12);

    const at::Tensor self_sim = frame_sim(p, f);  // [B, T]
    at::Tensor total = self_sim.clone();
    const int64_t frames = total.size(1);
    at::Tensor weight_sum = s.normalize_neighbour_sum ? at::ones_like(total) : at::Tensor();
    const int64_t d = std::min<int64_t>(s.adjacent_distance, frames - 1);
    const double tau = std::max(s.adjacent_tau, 1e-8);
    auto add_offset = [&](int64_t k) {
        const double w = std::exp(-static_cast<double>(k) / tau);
        // frame f with the features of f + k, and of f - k
        const at::Tensor fwd = frame_sim(p.slice(1, 0, frames - k), f.slice(1, k));
        const at::Tensor back = frame_sim(p.slice(1, k), f.slice(1, 0, frames - k));
        const at::Tensor pad = at::zeros({total.size(0), k}, total.options());
        total = total + w * at::cat({fwd, pad}, 1) + w * at::cat({pad, back}, 1);
        if (weight_sum.defined()) {
            const at::Tensor one = at::ones({total.size(0), frames - k}, total.options());
            weight_sum = weight_sum + w * at::cat({one, pad}, 1) + w * at::cat({pad, one}, 1);
        }
    };
    if (d > 0) {
        if (s.cumulative_neighbors)
            for (int64_t k = 1; k <= d; ++k) add_offset(k);
        else
            add_offset(d);
    }
    if (weight_sum.defined()) total = total / weight_sum.clamp_min(std::numeric_limits<float>::epsilon());
    at::Tensor per_video = total.sum(1);
    if (s.normalize_by_frames) per_video = per_video / static_cast<double>(frames);
    Alignment a;
    a.score = per_video.mean();
    a.alignment = total.mean().item<double>();
    a.self_similarity = self_sim.mean().item<double>();
    return a;
}

}  // namespace st::plugins::crepa
