// The Trainer: the run that ties the parts together. Its parts are classes of their own with
// in-process tests: DataCursor (data order, epochs, position), Objective (the loss of a micro-batch),
// CheckpointManager (when/where to checkpoint, what to resume), ValidationController (renders during
// the run, the reference sample). The Trainer's own files: trainer_setup.cpp (before the first step),
// trainer_loop.cpp (the steps), trainer_state.cpp (checkpoint contents, resume, final weights),
// trainer_eval.cpp, trainer_validation.cpp, trainer_hooks.cpp. Private to host/src/train.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands/commands.h"
#include "dist/collectives.h"
#include "dist/grad_reducer.h"
#include "dist/launch_config.h"
#include "lua/hook_engine.h"
#include "notify/webhook.h"
#include "plugins/model_handle.h"
#include "run/data_setup.h"
#include "run/run_setup.h"
#include "st/log.h"
#include "st/lr_scheduler.h"
#include "st/model.h"
#include "st/optimizer.h"
#include "train/checkpoint_manager.h"
#include "train/data_cursor.h"
#include "train/ema.h"
#include "train/lycoris_config.h"
#include "train/metrics.h"
#include "train/objective.h"
#include "train/simpletuner_checkpoint.h"
#include "train/tensorboard.h"
#include "train/train_config.h"
#include "train/validation_controller.h"

namespace st::host::train {

/// Seconds spent in each part of one optimizer step.
struct StepTiming {
    double data = 0, forward = 0, backward = 0, optimizer = 0, total = 0;
    double allreduce = 0;       ///< data parallel: seconds blocked on gradient all-reduces (not overlapped)
    double allreduce_span = 0;  ///< data parallel: first bucket sent to last one averaged
};

/// What the loop hands metrics, progress and hooks after each optimizer step.
struct StepReport {
    int64_t step = 0;
    int64_t epoch = 0;  ///< 1-based epoch of the step's first batch (events and metrics agree on it)
    double loss = 0;
    double lr = 0;
    std::map<std::string, double> terms;    ///< loss terms (mean over the micro-batches)
    std::map<std::string, double> metrics;  ///< regularizer metrics (mean over the micro-batches)
    int64_t micro_batches = 0;
    double grad_metric = 0;  ///< total norm (norm clipping) or max |grad| (value clipping)
    bool skipped = false;    ///< non-finite loss or gradients: no update was applied
    std::vector<double> timesteps;
    std::vector<std::string> sample_ids;
    std::vector<std::string> captions;
    std::string bucket;
    int64_t samples = 0;
    int64_t captions_dropped = 0;
    StepTiming time;
};

/// Everything that says where the run is in its data and random streams, captured after each
/// completed step so a checkpoint (even one written after a failed step) matches the weights.
struct Position {
    DataCursor::Position data;
    at::Tensor generator;         ///< the run's generator (noise, sigmas, dropout of captions)
    at::Tensor global_generator;  ///< ATen's default CPU generator (LoRA dropout)
};

class Trainer {
  public:
    Trainer(CommandContext& ctx, RunSetup& setup);
    ~Trainer();
    int run();

    // ---- setup (trainer_setup.cpp) ----
    void load_model();
    void open_data();
    void setup_trainable();
    void create_optimizer();
    void plan_steps();

    // ---- loop (trainer_loop.cpp) ----
    StepReport train_step();
    /// Loss of one micro-batch, backward included; adds its terms to `report`.
    double micro_step(sdk::Batch& batch, StepReport& report);
    int64_t apply_caption_dropout(sdk::Batch& batch);
    void report_step(const StepReport& r);

    // ---- evaluation loss (trainer_eval.cpp) ----
    /// Collects the fixed evaluation batches (held-out datasets, else the first num_eval_images samples
    /// of the training order; data positions are left as they were).
    void build_eval_set();
    /// Mean flow-matching loss over the eval set at the fixed timesteps; writes a metrics line.
    void evaluate();

    // ---- validation and webhooks (trainer_validation.cpp) ----
    void start_validation();
    void start_webhooks();
    /// Renders the validation prompts (hooks may edit them), logs, fires on_validation_end, posts.
    void validate();
    /// One metrics line: metrics.jsonl, and TensorBoard scalars with report_to tensorboard.
    void write_metrics(const nlohmann::json& line);
    /// Posts an event when webhooks are configured (never throws).
    void notify(const std::string& type, notify::Severity level, const std::string& message,
                nlohmann::json data = nullptr, std::vector<std::filesystem::path> attachments = {},
                bool raw_only = false);

    // ---- Lua hooks (trainer_hooks.cpp) ----
    void start_hooks();
    /// Fires `event` when a handler listens (st.state refreshed first); queues the actions.
    nlohmann::json fire(const std::string& event, const nlohmann::json& table);
    nlohmann::json state_table() const;
    /// Applies queued actions between steps: lr scale, checkpoint; returns a stop reason or "".
    std::string apply_actions();

    // ---- data parallel (trainer_dist.cpp; docs/distributed.md) ----
    /// Joins the other ranks when a launcher started this process (RANK/WORLD_SIZE set).
    void start_distributed();
    bool writer() const { return rank_ == 0; }  ///< rank 0 alone writes files, runs hooks, validates
    /// This rank's slice of a global batch (every rank loads the same global batch and keeps its part).
    sdk::Batch shard_of(const sdk::Batch& global) const;
    /// After the step's backward passes: averages the gradients and the step's loss figures.
    void reduce_step(StepReport& r, double& loss_sum, bool& finite, int64_t micro_batches);
    /// Makes every rank leave the loop at the same step: rank 0's stop reason and exit code (hooks,
    /// non-finite state, a failed save) and any rank's SIGINT/SIGTERM. Returns whether to stop.
    bool agree_to_stop(std::string& stop_reason, int& code, bool signal_here);
    /// Discovery and caching with several ranks: each encodes its share (backends with
    /// sdk::ShardedCaching; else rank 0 all of it), then every rank prepares again and finds every
    /// cache complete (rank 0 first: whatever is still missing is encoded once).
    void prepare_data_distributed();
    /// Every rank starts from rank 0's trainable weights (identical by seed and resume; checked).
    void sync_weights();

    // ---- state (trainer_state.cpp) ----
    /// Decides what to resume (before anything loads): st's checkpoint, or SimpleTuner's, read and
    /// checked now so that a mismatch fails before hours of caching.
    void plan_resume();
    void maybe_resume();
    void restore(const std::filesystem::path& dir);
    /// SimpleTuner's checkpoint: LoRA (+ EMA LoRA), step, epoch and optimizer state where they map.
    void restore_simpletuner(const SimpleTunerCheckpoint& ck);
    bool save_checkpoint(const std::string& why);
    void save_weights(const std::filesystem::path& dir, bool ema);
    void save_final_weights();
    nlohmann::json training_state() const;
    void snapshot_position();
    /// A LyCORIS adapter trains a use_scalar scalar (its checkpoints keep the raw trainable tensors).
    bool has_lycoris_scalar() const;

    CommandContext& ctx_;
    RunSetup& setup_;
    TrainConfig cfg_;
    at::Device device_ = at::kCPU;
    at::ScalarType dtype_ = at::kFloat;

    std::unique_ptr<ModelHandle> model_;
    std::unique_ptr<Objective> objective_;
    std::vector<OpenedBackend> backends_;
    std::unique_ptr<DataCursor> data_;
    sdk::TensorMap null_text_;  ///< encode_text({""}) for caption dropout
    std::vector<std::pair<std::string, at::Tensor>> params_;
    std::vector<at::Tensor> param_tensors_;
    int64_t lora_modules_ = 0;
    std::optional<LycorisPlan> lycoris_plan_;  ///< lora_type lycoris: read before any caching

    const ComponentEntry* optimizer_entry_ = nullptr;
    const ComponentEntry* scheduler_entry_ = nullptr;
    std::unique_ptr<sdk::Optimizer> optimizer_;
    std::unique_ptr<sdk::LrScheduler> scheduler_;
    std::unique_ptr<Ema> ema_;
    std::optional<std::filesystem::path> resume_dir_;  ///< plan_resume's decision
    std::optional<SimpleTunerCheckpoint> simpletuner_resume_;

    at::Generator generator_;
    uint64_t seed_ = 0;
    int64_t batches_per_epoch_ = 0;
    int64_t steps_per_epoch_ = 0;
    int64_t total_steps_ = 0;

    // Position (saved in every checkpoint; the data position is data_'s).
    int64_t global_step_ = 0;
    int64_t nonfinite_in_row_ = 0;
    int64_t nonfinite_total_ = 0;
    double lr_scale_ = 1.0;

    std::unique_ptr<CheckpointManager> checkpoints_;
    std::unique_ptr<MetricsWriter> metrics_;
    std::unique_ptr<TensorBoardWriter> tensorboard_;  ///< report_to tensorboard / all
    std::chrono::steady_clock::time_point started_;
    Position position_;
    std::unique_ptr<lua::HookEngine> hooks_;
    lua::HookActions pending_;  ///< actions queued by handlers, applied between steps
    double last_loss_ = 0;
    std::unique_ptr<ValidationController> validation_;
    std::unique_ptr<notify::WebhookSender> webhooks_;
    int64_t last_validation_step_ = -1;
    nlohmann::json resumed_reference_;  ///< the checkpoint's validation_reference (null: none)
    std::vector<sdk::Batch> eval_batches_;
    std::vector<at::Tensor> eval_noise_;
    bool eval_held_out_ = false;       ///< eval_batches_ come from dataset_type eval datasets
    bool validate_requested_ = false;  ///< st.validate_now(): validate after the current step
    bool final_weights_failed_ = false;
    bool nonfinite_weights_ = false;  ///< a save was refused: the weights or optimizer state hold inf/NaN
    bool in_update_ = false;  ///< inside optimizer step + EMA: a failure here leaves weights half-updated

    // Data parallel (null / 0 / 1 in a single process).
    dist::LaunchConfig launch_;
    std::unique_ptr<dist::Collectives> coll_;
    std::unique_ptr<dist::GradReducer> reducer_;
    int rank_ = 0;
    int world_ = 1;
};

}  // namespace st::host::train
