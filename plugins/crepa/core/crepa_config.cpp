#include "core/crepa_config.h"

#include "st/error.h"

namespace st::plugins::crepa {

namespace sdk = st::sdk;

namespace {
constexpr const char* kComponent = "reg.crepa@1";
}

std::vector<sdk::OptionSpec> crepa_options() {
    std::vector<sdk::OptionSpec> o = {
        sdk::opt_bool(
            "crepa_enabled", false,
            "CREPA (cross-frame representation alignment, arXiv 2506.09229): align the hidden state "
            "after crepa_block_index with a frozen DINOv2's features of the clean frames and their "
            "neighbours, as an extra loss term."),
        sdk::opt_int(
            "crepa_block_index", 8,
            "0-based transformer block whose output is aligned (SimpleTuner's quickstarts: 8 for Wan "
            "and S2V, 10 for Sana Video)."),
        sdk::opt_float("crepa_lambda", 0.5, "Weight of the CREPA term (the quickstarts' \"Weight\")."),
        sdk::opt_int("crepa_adjacent_distance", 1,
                     "Neighbour distance d: frame f is also aligned with frames f-d and f+d, weighted "
                     "exp(-d/tau) (0: only the frame itself)."),
        sdk::opt_float("crepa_adjacent_tau", 1.0, "Temporal decay tau of the neighbour weights (> 0)."),
        sdk::opt_string(
            "crepa_encoder", std::string("dinov2_vitg14"),
            "Teacher: a DINOv2 torch-hub name (dinov2_vits14/vitb14/vitl14/vitg14, _reg variants, "
            "aliases dinov2_s/b/g) found in ~/.cache/torch/hub/checkpoints, or the path of a .pth, "
            "a .safetensors or a folder with config.json. st downloads nothing."),
        sdk::opt_string("crepa_model", std::nullopt, "Same as crepa_encoder (SimpleTuner prefers this key)."),
        sdk::opt_int("crepa_encoder_image_size", 518,
                     "Frames are resized (bilinear) to this square size before the teacher (a multiple of "
                     "its patch size; 518 = the 37x37 grid DINOv2 was trained at)."),
        sdk::opt_int(
            "crepa_encoder_frames_batch_size", -1,
            "Frames per teacher call while caching the features (-1: all frames of a clip at once)."),
        sdk::opt_bool("crepa_normalize_by_frames", true, "Average the per-frame alignment over the frames."),
        sdk::opt_bool("crepa_spatial_align", true,
                      "Resample the token grids to a common 2-D grid when they differ (false: compare the "
                      "mean token of each frame)."),
        sdk::opt_bool("crepa_cumulative_neighbors", false,
                      "Use every distance 1..d (weights exp(-k/tau)) instead of exactly d."),
        sdk::opt_bool("crepa_normalize_neighbour_sum", false,
                      "Divide each frame's alignment by the sum of its weights."),
        sdk::opt_string(
            "crepa_feature_source", std::string("encoder"),
            "Teacher features: encoder (DINOv2 on the clean frames, cached once) or backbone (the "
            "model's own block crepa_teacher_block_index, detached).",
            {"encoder", "external", "backbone", "internal", "self_flow", "selfflow"}),
        sdk::opt_int("crepa_teacher_block_index", std::nullopt,
                     "Backbone source: the block whose output is the teacher (default: the last block)."),
        sdk::opt_bool("crepa_use_backbone_features", false, "Legacy form of crepa_feature_source backbone."),
        sdk::opt_string("crepa_scheduler", std::string("constant"),
                        "Schedule of the weight after warmup: constant, or linear/cosine/polynomial from "
                        "crepa_lambda to crepa_lambda_end over crepa_decay_steps.",
                        {"constant", "linear", "cosine", "polynomial"}),
        sdk::opt_int("crepa_warmup_steps", 0, "Linear warmup of the weight from 0 over this many steps."),
        sdk::opt_int("crepa_decay_steps", 0, "Steps until crepa_lambda_end is reached (0: the whole run)."),
        sdk::opt_float("crepa_lambda_end", 0.0, "Final weight of the decaying schedules."),
        sdk::opt_float("crepa_power", 1.0, "Exponent of the polynomial schedule."),
        sdk::opt_int("crepa_cutoff_step", 0, "From this step on the weight is 0 (0: never)."),
        sdk::opt_float("crepa_similarity_threshold", std::nullopt,
                       "Cut the term off once the EMA of the alignment score reaches this value."),
        sdk::opt_float("crepa_similarity_ema_decay", 0.99, "Decay of the alignment-score EMA."),
        sdk::opt_string("crepa_threshold_mode", std::string("permanent"),
                        "permanent: a cutoff stays; recoverable: the term returns when the condition clears.",
                        {"permanent", "recoverable"}),
        sdk::opt_bool("crepa_use_tae", false,
                      "SimpleTuner decodes latents with a tiny VAE every step for the teacher; st caches the "
                      "teacher's features of the clean frames once, so nothing is decoded (accepted, no "
                      "effect)."),
        sdk::opt_bool("crepa_drop_vae_encoder", false,
                      "Accepted for compatibility; st's teacher features come from the cache (no effect)."),
    };
    for (auto& s : o) s.group = "crepa";
    return o;
}

CrepaSettings read_crepa_settings(const sdk::ConfigView& c) {
    CrepaSettings s;
    s.enabled = c.get_bool("crepa_enabled");
    s.block_index = c.get_int("crepa_block_index");
    s.lambda = c.get_float("crepa_lambda");
    s.adjacent_distance = c.get_int("crepa_adjacent_distance");
    if (s.adjacent_distance < 0)
        fail(kComponent, "config", "crepa_adjacent_distance must be >= 0, got {}", s.adjacent_distance);
    s.adjacent_tau = c.get_float("crepa_adjacent_tau");
    if (!(s.adjacent_tau > 0))
        fail(kComponent, "config", "crepa_adjacent_tau must be > 0, got {}", s.adjacent_tau);
    s.encoder = c.opt_string("crepa_model").value_or(c.get_string("crepa_encoder"));
    s.encoder_image_size = c.get_int("crepa_encoder_image_size");
    if (s.encoder_image_size < 1)
        fail(kComponent, "config", "crepa_encoder_image_size must be >= 1, got {}", s.encoder_image_size);
    s.encoder_frames_batch_size = c.get_int("crepa_encoder_frames_batch_size");
    s.normalize_by_frames = c.get_bool("crepa_normalize_by_frames");
    s.spatial_align = c.get_bool("crepa_spatial_align");
    s.cumulative_neighbors = c.get_bool("crepa_cumulative_neighbors");
    s.normalize_neighbour_sum = c.get_bool("crepa_normalize_neighbour_sum");
    const std::string src = c.get_string("crepa_feature_source");
    if (src == "self_flow" || src == "selfflow")
        fail(kComponent, "config",
             "crepa_feature_source self_flow (an EMA-teacher forward at a lower sigma every step) is not "
             "supported by st: use encoder (DINOv2, cached) or backbone");
    s.source = (src == "backbone" || src == "internal") ? FeatureSource::backbone : FeatureSource::encoder;
    if (c.get_bool("crepa_use_backbone_features")) {
        if (c.has("crepa_feature_source") && s.source != FeatureSource::backbone && src != "encoder")
            fail(kComponent, "config", "crepa_use_backbone_features conflicts with crepa_feature_source {}",
                 src);
        s.source = FeatureSource::backbone;
    }
    s.teacher_block_index = c.opt_int("crepa_teacher_block_index");
    const std::string sched = c.get_string("crepa_scheduler");
    s.schedule = sched == "linear"       ? LambdaSchedule::linear
                 : sched == "cosine"     ? LambdaSchedule::cosine
                 : sched == "polynomial" ? LambdaSchedule::polynomial
                                         : LambdaSchedule::constant;
    s.warmup_steps = c.get_int("crepa_warmup_steps");
    s.decay_steps = c.get_int("crepa_decay_steps");
    s.lambda_end = c.get_float("crepa_lambda_end");
    s.power = c.get_float("crepa_power");
    s.cutoff_step = c.get_int("crepa_cutoff_step");
    s.similarity_threshold = c.opt_float("crepa_similarity_threshold");
    s.similarity_ema_decay = c.get_float("crepa_similarity_ema_decay");
    s.threshold_recoverable = c.get_string("crepa_threshold_mode") == "recoverable";
    return s;
}

}  // namespace st::plugins::crepa
