// CREPA's settings: SimpleTuner's crepa_* keys (training/crepa.py, field_registry sections/loss.py)
// with its defaults, declared once as options of reg.crepa@1 and read into CrepaSettings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "st/options.h"

namespace st::plugins::crepa {

enum class FeatureSource { encoder, backbone };
enum class LambdaSchedule { constant, linear, cosine, polynomial };

struct CrepaSettings {
    bool enabled = false;
    int64_t block_index = 8;  ///< 0-based: the hidden state after this block is aligned
    double lambda = 0.5;
    int64_t adjacent_distance = 1;
    double adjacent_tau = 1.0;
    std::string encoder = "dinov2_vitg14";  ///< crepa_model or crepa_encoder
    int64_t encoder_image_size = 518;
    int64_t encoder_frames_batch_size = -1;  ///< frames per teacher call at caching time (-1: all)
    bool normalize_by_frames = true;
    bool spatial_align = true;
    bool cumulative_neighbors = false;
    bool normalize_neighbour_sum = false;
    FeatureSource source = FeatureSource::encoder;
    std::optional<int64_t> teacher_block_index;  ///< backbone source
    LambdaSchedule schedule = LambdaSchedule::constant;
    int64_t warmup_steps = 0;
    int64_t decay_steps = 0;  ///< 0: the whole run
    double lambda_end = 0.0;
    double power = 1.0;
    int64_t cutoff_step = 0;
    std::optional<double> similarity_threshold;
    double similarity_ema_decay = 0.99;
    bool threshold_recoverable = false;  ///< crepa_threshold_mode recoverable (else permanent)
};

/// The options reg.crepa@1 owns (every crepa_* key SimpleTuner has).
std::vector<st::sdk::OptionSpec> crepa_options();

/// Reads and checks the settings; st::Error naming the key for a value SimpleTuner would refuse too
/// (negative distance, tau <= 0, an unknown schedule or source) or one st does not support
/// (crepa_feature_source self_flow).
CrepaSettings read_crepa_settings(const st::sdk::ConfigView& config);

}  // namespace st::plugins::crepa
