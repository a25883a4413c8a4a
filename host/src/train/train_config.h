// The training loop's settings, read once from the resolved configuration and checked together so a
// bad combination is reported before any model is loaded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "st/base_weights.h"
#include "st/flow_matching.h"
#include "st/options.h"

namespace st::host::train {

enum class ModelType { lora, full };

struct TrainConfig {
    ModelType model_type = ModelType::full;
    int64_t lora_rank = 16;
    std::optional<double> lora_alpha;
    double lora_dropout = 0.1;
    std::vector<std::string> lora_targets;  ///< empty = the family's defaults
    std::optional<std::filesystem::path> init_lora;
    bool lora_write_diffusers = false;  ///< lora_format diffusers: also the transformer.* file
    bool lycoris = false;               ///< lora_type lycoris (adapters from lycoris_config)
    std::optional<std::string> lycoris_config;

    bool bf16 = true;  ///< mixed_precision bf16 (else fp32)
    std::string optimizer = "adamw_bf16";
    double learning_rate = 4e-7;
    std::string lr_scheduler = "constant_with_warmup";
    double max_grad_norm = 2.0;
    std::string grad_clip_method = "value";

    int64_t batch_size = 4;
    int64_t accumulation = 1;
    int64_t max_train_steps = 0;  ///< 0: epochs decide
    int64_t num_train_epochs = 1;
    bool strict_epoch_limit = false;  ///< stop after num_train_epochs even below max_train_steps
    double caption_dropout = 0.0;
    sdk::FlowSigmaOptions sigmas;
    int64_t max_nonfinite = 5;

    bool gradient_checkpointing = true;
    int64_t gradient_checkpointing_interval = 1;  ///< checkpoint every N-th block
    /// base_model_precision / group_offload_* (LoRA runs; full training: compute, no offload).
    sdk::BaseWeightPlan base;
    /// tread_config as given (null = no routes); checked for form here, against the model's block count
    /// once it is loaded (sdk::parse_tread_config).
    nlohmann::json tread_config;

    int64_t eval_interval = 0;  ///< 0 = no evaluation loss
    int64_t eval_timesteps = 28;
    int64_t eval_samples = 4;

    bool use_ema = false;
    int64_t ema_update_interval = 1;
    double ema_decay = 0.995;
    int64_t ema_warmup_steps = 0;
    bool ema_on_device = false;  ///< ema_device accelerator (and not ema_cpu_only)

    int64_t checkpoint_interval = 500;
    int64_t checkpoints_limit = 5;
    std::string resume = "latest";  ///< "latest", "none" or a path

    std::optional<uint64_t> seed;  ///< unset: drawn at start and logged
    std::filesystem::path output_dir;
    /// Set when report_to is tensorboard or all: output_dir/logging_dir/tracker_project_name.
    std::optional<std::filesystem::path> tensorboard_dir;
};

/// Reads and checks the training keys; st::Error lists every problem at once with its key.
/// base_model_precision and the group_offload_* keys -> the plan (problems appended).
sdk::BaseWeightPlan read_base_weight_plan(const sdk::ConfigView& c, bool lora,
                                          std::vector<std::string>& problems);

TrainConfig read_train_config(const sdk::ConfigView& config);

}  // namespace st::host::train
