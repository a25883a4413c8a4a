// CREPA's math, free of plugin plumbing: the weight schedule (SimpleTuner's CrepaScheduler: warmup,
// constant/linear/cosine/polynomial decay, step and similarity cutoffs) and the alignment of projected
// hidden states with teacher features (temporal subsampling, 2-D token alignment, cosine similarity of
// each frame with itself and its neighbours). Reference: SimpleTuner simpletuner/helpers/training/crepa.py
// (CrepaScheduler, CrepaRegularizer.compute_loss / _maybe_align_temporal / _maybe_align_tokens).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>

#include "core/crepa_config.h"

namespace st::plugins::crepa {

class CrepaSchedule {
  public:
    explicit CrepaSchedule(const CrepaSettings& s);
    /// The weight at `step` of a run of `total_steps` (crepa_decay_steps 0 decays over the whole run;
    /// 0 while cut off); `similarity` (this step's alignment score) updates the EMA first, exactly as
    /// CrepaScheduler.get_weight.
    double weight(int64_t step, int64_t total_steps, std::optional<double> similarity);
    /// The scheduled weight without cutoffs.
    double scheduled(int64_t step, int64_t total_steps) const;
    std::optional<double> similarity_ema() const { return ema_; }
    bool cut_off() const { return triggered_; }
    nlohmann::json state() const;
    void restore(const nlohmann::json& j);

  private:
    CrepaSettings s_;
    double power_;
    std::optional<double> ema_;
    bool triggered_ = false;
};

/// A token grid [rows, cols] of one frame.
using Grid = std::array<int64_t, 2>;

struct Alignment {
    at::Tensor score;            ///< mean over the batch of the per-video alignment (in the graph)
    double alignment = 0;        ///< mean of every frame's total similarity (crepa_alignment_score)
    double self_similarity = 0;  ///< mean similarity of each frame with its own features
};

/// projected [B, T, R*C, D] on the grid `pgrid` (the model's tokens after the projector), features
/// [B, T2, N, D] on `fgrid` (the teacher's) -> the alignment. Frames: the longer sequence is subsampled
/// at linspace(0, T-1, T_short) (truncated). Tokens: when the grids differ and spatial_align, both are
/// resampled bilinearly (align_corners false) to the grid with fewer tokens (a 2-D grid of the real
/// frame, never a flattened raster), else mean-pooled to one token per frame.
Alignment crepa_alignment(const at::Tensor& projected, Grid pgrid, const at::Tensor& features, Grid fgrid,
                          const CrepaSettings& s);

}  // namespace st::plugins::crepa
