// Everything before the first step: model, data (discovery + caches), trainable parameters,
// optimizer and scheduler components, and the step budget.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>

#include <random>

#include "dist/dist_env.h"
#include "plugins/guard.h"
#include "run/run_device.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/model_path.h"
#include "system_info.h"
#include "train/trainer_impl.h"
#include "validate/validator.h"

namespace st::host::train {

namespace fs = std::filesystem;
namespace {
constexpr const char* kLog = "host.train";

std::string join(const std::vector<std::string>& v) {
    return fmt::format("{}", fmt::join(v, ", "));
}

const ComponentEntry& find_component(PluginRegistry& reg, const char* kind, const std::string& name,
                                     const char* key) {
    if (const auto* e = reg.find_latest(kind, name)) return *e;
    std::vector<std::string> known;
    for (const auto* c : reg.of_kind(kind)) known.push_back(c->name);
    fail(kLog, "setup", "{} = '{}' is not provided by any loaded plugin; available: {}", key, name,
         known.empty() ? std::string("none (is the optim plugin installed?)") : join(known));
}

}  // namespace

Trainer::Trainer(CommandContext& ctx, RunSetup& setup)
    : ctx_(ctx), setup_(setup), cfg_(read_train_config(setup.config)) {}

Trainer::~Trainer() = default;

void Trainer::load_model() {
    auto path = setup_.config.opt_string("pretrained_model_name_or_path");
    if (!path || path->empty())
        fail(kLog, "setup", "pretrained_model_name_or_path is not set in {}: give the model's local path",
             setup_.config_path.string());
    sdk::require_model_path(*path, "pretrained_model_name_or_path", kLog, "setup");
    dtype_ = cfg_.bf16 ? at::kBFloat16 : at::kFloat;
    const RunDevice run =
        pick_run_device(setup_.config.get_string("device"), dist::read_dist_env().local_rank);
    configure_run_device(run);
    device_ = run.device;
    model_ = std::make_unique<ModelHandle>(*setup_.model);
    sdk::ModelLoadRequest req;
    req.path = *path;
    req.config = setup_.config;
    req.dtype = dtype_;
    req.device = device_;
    req.training = true;
    req.gradient_checkpointing = cfg_.gradient_checkpointing;
    req.gradient_checkpointing_interval = cfg_.gradient_checkpointing_interval;
    if (setup_.config.get_bool("enable_group_offload") && cfg_.base.offload_dir.empty())
        log::info(
            kLog,
            "enable_group_offload without group_offload_to_disk_path: nothing is offloaded (weights "
            "already live in host memory on this build; set group_offload_to_disk_path to stream blocks "
            "from disk)");
    if (!cfg_.base.is_default()) model_->set_base_weights(cfg_.base);
    model_->load(req);
    objective_ = std::make_unique<Objective>(*model_, cfg_.sigmas, device_);
    if (auto own = model_->training_schedule_summary())
        log::info(kLog,
                  "training sigmas: {} ({} has its own noise schedule: flow_schedule_shift, "
                  "flow_schedule_auto_shift and flow_use_uniform_schedule do not apply, as in SimpleTuner)",
                  *own, model_->entry().id);
    if (!cfg_.tread_config.is_null()) {
        // Checked against the model's blocks now, before any caching.
        const auto blocks = model_->routable_blocks();
        if (!blocks)
            fail(kLog, "setup",
                 "tread_config is set but {} has no token routing (capability token_routing@1): remove "
                 "tread_config or train a family that routes tokens (wan, wan_s2v)",
                 model_->entry().id);
        auto routes = sdk::parse_tread_config(cfg_.tread_config, *blocks);
        log::info(kLog, "TREAD over {} blocks: {}{}", *blocks, sdk::describe_routes(routes),
                  cfg_.gradient_checkpointing && cfg_.gradient_checkpointing_interval > 1
                      ? "; routed blocks are checkpointed every block (SimpleTuner disables segmented "
                        "checkpointing while routing)"
                      : "");
        objective_->set_routes(std::move(routes));
    }
    // Validation settings that depend on the model are checked now, not when the first render starts.
    {
        const auto vs = validate::ValidationSettings::read(setup_.config, setup_.config_path.parent_path());
        const bool renders =
            vs.step_interval > 0 && (vs.prompt || vs.user_prompt_library || vs.builtin_library);
        if (renders) vs.check_model(*model_);
    }
    // lora_type lycoris: its lycoris_config.json is read and checked against the model now.
    if (cfg_.lycoris) {
        fs::path file = *cfg_.lycoris_config;
        std::error_code ec;
        if (file.is_relative() && !fs::exists(file, ec) &&
            fs::exists(setup_.config_path.parent_path() / file, ec))
            file = setup_.config_path.parent_path() / file;
        if (!fs::exists(file, ec))
            fail(kLog, "setup", "lycoris_config '{}' does not exist (looked in {} and beside {})",
                 cfg_.lycoris_config->c_str(), fs::current_path().string(), setup_.config_path.string());
        lycoris_plan_ = read_lycoris_config(file);
        int64_t chosen = 0;
        for (const auto& [path, lin] : sdk::linear_modules(model_->trainable())) {
            const auto o = lycoris_options_for(*lycoris_plan_, path);
            if (!o) continue;
            ++chosen;
            try {
                // The adapter's shapes and scale rules (e.g. rs_lora with both LoKr factors full) are
                // checked now, before any caching; the adapters themselves come after it.
                sdk::LycorisAdapterImpl probe(lin->options().in, lin->options().out, *o);
            } catch (const std::exception& e) {
                fail(kLog, "setup", "{}: module {}: {}", file.string(), path, e.what());
            }
        }
        if (lycoris_plan_->train_norm) {
            // LyCORIS's Norm algo adapts LayerNorm / GroupNorm (not RMSNorm: "not supported in Norm algo").
            std::vector<std::string> norms;
            for (const auto& item : model_->trainable().named_modules()) {
                if (item.value()->as<torch::nn::LayerNorm>() || item.value()->as<torch::nn::GroupNorm>())
                    norms.push_back(item.key());
            }
            const auto selected = lycoris_norms_selected(*lycoris_plan_, norms);
            if (!selected.empty())
                fail(kLog, "setup",
                     "{}: train_norm would train the weights of {} norm layer(s) ({}{}), which st does not "
                     "implement; set train_norm false",
                     file.string(), selected.size(), selected.front(), selected.size() > 1 ? ", ..." : "");
            log::info(
                kLog,
                "{}: train_norm: apply_preset selects no LayerNorm / GroupNorm (the only norms LyCORIS's "
                "Norm algo supports; RMSNorm layers are left alone), so it adds nothing to train, as in "
                "LyCORIS",
                file.string());
        }
        if (chosen == 0)
            fail(kLog, "setup",
                 "{}: apply_preset selects no Linear module of {} (module classes st knows: Attention for "
                 "attn*, "
                 "self_attn, cross_attn; FeedForward for ffn, ff; or target_name / name_algo_map patterns on "
                 "module paths like blocks.0.attn1.to_q)",
                 file.string(), model_->entry().id);
    }
    // Regularizers are built against the loaded model now: a wrong tap or setting fails before caching.
    objective_->set_regularizers(build_regularizers(ctx_.plugins(), setup_.config, *model_, device_, seed_));
    log::info(kLog, "training on {} in {} (mixed_precision {})", device_.str(), c10::toString(dtype_),
              cfg_.bf16 ? "bf16" : "no");
}

void Trainer::open_data() {
    backends_ =
        open_data_backends(ctx_, setup_, model_->sample_media(), sample_features(objective_->regularizers()));
    // Data parallel: the caching is split over the ranks, and every rank then reads every cache and
    // walks the same global batches, each keeping its slice.
    if (coll_)
        prepare_data_distributed();
    else
        prepare_data_backends(backends_, &model_->family());
    data_ = std::make_unique<DataCursor>(backends_, cfg_.batch_size * world_,
                                         cfg_.max_train_steps == 0 ? cfg_.num_train_epochs : 0);
    data_->on_epoch_start([this](int64_t epoch) {
        log::info(kLog, "epoch {}{} begins at step {}", epoch,
                  cfg_.max_train_steps == 0 ? fmt::format("/{}", cfg_.num_train_epochs) : std::string(),
                  global_step_);
        fire("on_epoch_start", {{"epoch", epoch}, {"step", global_step_}});
    });
    log::info(kLog, "data ready:\n{}", format_prepare_summary(backends_));
    if (const auto empty = empty_datasets(backends_); !empty.empty())
        fail(kLog, "setup", "{}", fmt::format("{}", fmt::join(empty, "; ")));
    if (cfg_.caption_dropout > 0) null_text_ = model_->encode_text({""});
    model_->release_encoders();
    // The encoders are gone: what stays resident from here is the training footprint.
    // (Read before the reset: the order of a call's arguments is unspecified.)
    const double now = rss_now_mib(), peak = rss_peak_mib();
    const bool reset = reset_rss_peak();
    log::info(kLog, "memory after loading and caching: RSS {:.0f} MiB (peak so far {:.0f} MiB){}", now, peak,
              reset ? "; the training peak is measured from here" : "");
}

void Trainer::setup_trainable() {
    torch::nn::Module& root = model_->trainable();
    params_.clear();
    int64_t total = 0;
    for (const auto& p : root.parameters()) total += p.numel();
    if (cfg_.model_type == ModelType::lora && lycoris_plan_) {
        const LycorisPlan& plan = *lycoris_plan_;
        auto injected = sdk::inject_lycoris(
            root, [&](const std::string& path) { return lycoris_options_for(plan, path); }, seed_);
        lora_modules_ = static_cast<int64_t>(injected.size());
        sdk::freeze_all_but_lora(root);
        if (cfg_.init_lora) {
            auto loaded = sdk::load_lora(*cfg_.init_lora, root, 1.0, model_->lora_name_map(), false);
            log::info(kLog, "init_lora {}: {} adapters loaded", cfg_.init_lora->string(), loaded.size());
        }
        sdk::set_lora_scale(root, plan.multiplier);
        // rank_dropout / module_dropout draw from the run's generator (saved with checkpoints).
        sdk::set_lora_dropout_generator(root, generator_);
        for (auto& [name, t] : sdk::lora_parameters(root)) params_.emplace_back(name, t);
        std::map<std::string, int64_t> algos;
        for (const auto& [path, lin] : sdk::linear_modules(root))
            if (lin->has_lycoris())
                ++algos[fmt::format("{} (factor {}, dim {}, scale {})", lin->lycoris()->algo(),
                                    lin->lycoris()->options().factor, lin->lycoris()->options().dim,
                                    lin->lycoris()->scale())];
        std::vector<std::string> parts;
        for (const auto& [k, n] : algos) parts.push_back(fmt::format("{} x {}", n, k));
        log::info(kLog, "lora_type lycoris from {}: {} adapters: {}; multiplier {}{}", plan.file.string(),
                  injected.size(), join(parts), plan.multiplier,
                  plan.base.rank_dropout > 0 || plan.base.module_dropout > 0
                      ? fmt::format("; rank_dropout {}{}, module_dropout {} (training only)",
                                    plan.base.rank_dropout, plan.base.rank_dropout_scale ? " (scaled)" : "",
                                    plan.base.module_dropout)
                      : std::string());
    } else if (cfg_.model_type == ModelType::lora) {
        sdk::LoraConfig lc;
        lc.rank = cfg_.lora_rank;
        lc.alpha = cfg_.lora_alpha;
        lc.dropout = cfg_.lora_dropout;
        lc.seed = seed_;
        auto targets = cfg_.lora_targets.empty() ? model_->default_lora_targets() : cfg_.lora_targets;
        auto injected = sdk::inject_lora(root, targets, lc);
        lora_modules_ = static_cast<int64_t>(injected.size());
        sdk::freeze_all_but_lora(root);
        if (cfg_.init_lora) {
            const sdk::LoraNameMap names = model_->lora_name_map();
            auto loaded = sdk::load_lora(*cfg_.init_lora, root, 1.0, names, false);
            log::info(kLog, "init_lora {}: {} adapters loaded", cfg_.init_lora->string(), loaded.size());
        }
        for (auto& [name, t] : sdk::lora_parameters(root)) params_.emplace_back(name, t);
        // LoRA dropout draws from the run's generator (saved with checkpoints: resume stays exact).
        sdk::set_lora_dropout_generator(root, generator_);
        log::info(kLog, "model_type lora: {} adapters on [{}] (rank {}, alpha {}, dropout {})",
                  injected.size(), join(targets), lc.rank, lc.effective_alpha(), lc.dropout);
    } else {
        for (const auto& item : root.named_parameters()) {
            item.value().set_requires_grad(true);
            params_.emplace_back(item.key(), item.value());
        }
        log::info(kLog, "model_type full: every transformer weight trains");
    }
    int64_t trainable = 0;
    param_tensors_.clear();
    for (const auto& [n, t] : params_) {
        trainable += t.numel();
        param_tensors_.push_back(t);
    }
    // Regularizer modules (projectors) train too, clipped with the model's gradients, in their own
    // optimizer group; they are saved in checkpoints but not with the model's weights.
    for (const auto& r : objective_->regularizers())
        for (const auto& [n, t] : r.params) {
            t.set_requires_grad(true);
            param_tensors_.push_back(t);
        }
    log::info(kLog, "{} trainable parameters in {} tensors ({:.3f}% of {})", trainable, params_.size(),
              100.0 * static_cast<double>(trainable) / static_cast<double>(std::max<int64_t>(total, 1)),
              total);
    root.train(true);
    if (cfg_.use_ema) {
        ema_ = std::make_unique<Ema>(params_, cfg_.ema_decay, cfg_.ema_warmup_steps, cfg_.ema_on_device);
        log::info(kLog, "EMA of {} tensors in fp32 on {}, decay min((1+t)/(10+t), {}), every {} step(s)",
                  params_.size(),
                  cfg_.ema_on_device ? device_.str() + " (ema_device accelerator)" : "the CPU",
                  cfg_.ema_decay, cfg_.ema_update_interval);
    }
}

void Trainer::create_optimizer() {
    auto& reg = ctx_.plugins();
    optimizer_entry_ = &find_component(reg, "optim", cfg_.optimizer, "optimizer");
    scheduler_entry_ = &find_component(reg, "lr", cfg_.lr_scheduler, "lr_scheduler");
    sdk::OptimizerInit init;
    for (const auto& [name, t] : params_) init.params.push_back({name, t, 0});
    bool reg_group = false;
    for (const auto& r : objective_->regularizers())
        for (const auto& [name, t] : r.params) {
            init.params.push_back({name, t, 1});
            reg_group = true;
        }
    if (reg_group) init.groups = {{cfg_.learning_rate, std::nullopt}, {cfg_.learning_rate, std::nullopt}};
    init.config = setup_.config;
    if (setup_.config.has("optimizer_config")) init.overrides = setup_.config.get_json("optimizer_config");
    optimizer_ = call_plugin(*optimizer_entry_, "create", [&] { return optimizer_entry_->optimizer(init); });

    sdk::LrSchedulerInit si;
    si.warmup_steps = setup_.config.opt_int("lr_warmup_steps").value_or(0);
    si.total_steps = total_steps_;
    si.num_cycles = setup_.config.opt_float("lr_num_cycles").value_or(1.0);
    si.power = setup_.config.opt_float("lr_power").value_or(1.0);
    si.lr_end = setup_.config.opt_float("lr_end").value_or(0.0);
    si.config = setup_.config;
    scheduler_ = call_plugin(*scheduler_entry_, "create", [&] { return scheduler_entry_->lr_scheduler(si); });
    // The scheduler's own line says what lr_warmup_steps means for it (warmup, or cosine's period).
    log::info(kLog, "optimizer {} ({}), lr {} with {} over {} steps, clipping {} at {}", optimizer_entry_->id,
              optimizer_entry_->plugin_name, cfg_.learning_rate, scheduler_entry_->id, total_steps_,
              cfg_.grad_clip_method,
              cfg_.max_grad_norm > 0 ? fmt::format("{}", cfg_.max_grad_norm) : std::string("off"));
}

void Trainer::plan_steps() {
    batches_per_epoch_ = data_->batches_per_epoch();
    if (world_ > 1)
        log::info(kLog, "global batch: {} ranks x train_batch_size {} = {} samples per micro-step", world_,
                  cfg_.batch_size, world_ * cfg_.batch_size);
    if (batches_per_epoch_ == 0)
        fail(kLog, "setup",
             "no batch of {} samples can be formed from the datasets ({} samples): every aspect "
             "bucket has fewer samples than train_batch_size x ranks x gradient_accumulation_steps. Add "
             "samples, "
             "lower train_batch_size, or raise the dataset's `repeats`",
             cfg_.batch_size * world_, [&] {
                 int64_t n = 0;
                 for (auto& b : backends_) n += b.summary.samples;
                 return n;
             }());
    steps_per_epoch_ = (batches_per_epoch_ + cfg_.accumulation - 1) / cfg_.accumulation;
    if (cfg_.max_train_steps > 0 && cfg_.strict_epoch_limit && cfg_.num_train_epochs > 0 &&
        cfg_.num_train_epochs * steps_per_epoch_ < cfg_.max_train_steps) {
        total_steps_ = cfg_.num_train_epochs * steps_per_epoch_;
        log::info(kLog,
                  "strict_epoch_limit: num_train_epochs {} x {} steps = {} steps end the run before "
                  "max_train_steps {}",
                  cfg_.num_train_epochs, steps_per_epoch_, total_steps_, cfg_.max_train_steps);
    } else if (cfg_.max_train_steps > 0) {
        total_steps_ = cfg_.max_train_steps;
        log::info(kLog,
                  "max_train_steps {} decides the length ({} batches = {} steps per epoch, ~{:.2f} epochs)",
                  total_steps_, batches_per_epoch_, steps_per_epoch_,
                  static_cast<double>(total_steps_) / static_cast<double>(steps_per_epoch_));
    } else {
        total_steps_ = cfg_.num_train_epochs * steps_per_epoch_;
        log::info(kLog, "num_train_epochs {} x {} steps ({} batches of {}, accumulation {}) = {} steps",
                  cfg_.num_train_epochs, steps_per_epoch_, batches_per_epoch_, cfg_.batch_size * world_,
                  cfg_.accumulation, total_steps_);
    }
}

int run_training(CommandContext& ctx, RunSetup& setup) {
    Trainer t(ctx, setup);
    return t.run();
}

}  // namespace st::host::train
