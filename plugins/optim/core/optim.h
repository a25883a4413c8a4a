// Public API of st_optim_core: the optimizers and LR schedulers users name in config.json
// (`optimizer`, `lr_scheduler`), their option declarations, name resolution (aliases such as the
// bitsandbytes `-paged` names) and the gradient-clipping helpers used by the trainer.
//
// The plugin (plugins/optim/plugin/plugin.cpp) registers these as `optim.<name>@1` / `lr.<name>@1`;
// tests and benchmarks link this library directly. Semantics and formulas: docs/optimizers.md and
// docs/lr-schedulers.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "st/lr_scheduler.h"
#include "st/optimizer.h"
#include "st/options.h"

namespace st::plugins::optim {

// ---------------------------------------------------------------------------------------------
// Optimizers

/// Canonical optimizer names (each is one component `optim.<name>@1`), in registration order.
const std::vector<std::string>& optimizer_names();

/// Every name a user may write in `optimizer` (canonical names and aliases), sorted.
std::vector<std::string> supported_optimizer_names();

/// Maps a user-facing name to its canonical name: canonical names map to themselves, the
/// bitsandbytes paged names map to their non-paged twins (`bnb-adamw8bit-paged` -> `bnb-adamw8bit`,
/// `bnb-lion8bit-paged` -> `bnb-lion8bit`: paging is a CUDA unified-memory detail of bitsandbytes,
/// the update is identical). Throws st::Error listing every supported name for anything else.
std::string resolve_optimizer_name(const std::string& name);

/// "optim.<canonical>@1".
std::string optimizer_component_id(const std::string& canonical_name);

/// Hyper-parameters of one optimizer after defaults, config keys and `optimizer_config` overrides
/// were applied (precedence, lowest first: the optimizer's own default (SimpleTuner's
/// `default_settings`), `adam_*` keys when set, `optimizer_beta1`/`optimizer_beta2` when set,
/// `optimizer_config`).
struct OptimizerHParams {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;             ///< unused by the Lion family
    double weight_decay = 0.0;     ///< default for groups that do not give their own
    bool kahan_sum = true;         ///< optimi-*: Kahan-compensated updates for bf16/fp16 params
    bool decouple_lr = false;      ///< optimi-*: wd scaled by lr/max_lr instead of lr
    std::optional<double> max_lr;  ///< optimi-* with decouple_lr (default: the group's initial lr)
    int64_t min_8bit_size = 4096;  ///< bnb-*: params with fewer elements keep fp32 state
    int64_t block_size = 256;      ///< bnb-*: elements per quantization block (one fp32 absmax each)
};

/// Keys `optimizer_config` may set for this optimizer (for error messages and docs).
std::vector<std::string> optimizer_override_keys(const std::string& canonical_name);

/// Resolves the hyper-parameters of `canonical_name` (see OptimizerHParams for the precedence).
/// `overrides` is the parsed `optimizer_config` object; an unknown key or a value of the wrong type
/// throws st::Error naming the key, the optimizer and the known keys.
OptimizerHParams resolve_optimizer_hparams(const std::string& canonical_name, const sdk::ConfigView& config,
                                           const nlohmann::json& overrides);

/// Parses SimpleTuner's `optimizer_config` text form "k=v,k2=v2" (values: true/false/none, integers,
/// floats, else strings; "none" becomes null) or a JSON object text. Empty text gives {}. Throws
/// st::Error for an item without '=' or an empty key.
nlohmann::json parse_optimizer_config(const std::string& text);

/// Creates the optimizer `name` (canonical or alias). Throws st::Error for an unknown name (listing
/// the supported ones), unknown override keys, a parameter whose group index is out of range, a
/// duplicate parameter name, or a dtype the optimizer does not support (adamw_bf16 needs bf16).
std::unique_ptr<sdk::Optimizer> make_optimizer(const std::string& name, const sdk::OptimizerInit& init);

/// Options shared by all optimizers (adam_beta1, adam_beta2, adam_epsilon, adam_weight_decay,
/// optimizer_beta1, optimizer_beta2, optimizer_config). Declared once, by optim.adamw@1.
std::vector<sdk::OptionSpec> optim_shared_options();

// ---------------------------------------------------------------------------------------------
// LR schedulers

/// Canonical scheduler names (each is one component `lr.<name>@1`).
const std::vector<std::string>& lr_scheduler_names();
/// Canonical names plus aliases (`cosine_with_warmup` -> `cosine`, as SimpleTuner maps it), sorted.
std::vector<std::string> supported_lr_scheduler_names();
/// Throws st::Error listing the supported names for an unknown one.
std::string resolve_lr_scheduler_name(const std::string& name);
std::string lr_scheduler_component_id(const std::string& canonical_name);

/// Creates scheduler `name` (canonical or alias). Throws st::Error for invalid settings the way
/// SimpleTuner refuses them (sine/cosine_with_restarts with lr_warmup_steps <= 0, polynomial with
/// max_train_steps <= lr_warmup_steps).
std::unique_ptr<sdk::LrScheduler> make_lr_scheduler(const std::string& name,
                                                    const sdk::LrSchedulerInit& init);

/// lr_warmup_steps, lr_num_cycles, lr_power, lr_end (SimpleTuner defaults 0, 1, 0.8, 4e-7).
/// Declared once, by lr.constant@1.
std::vector<sdk::OptionSpec> lr_shared_options();

/// SimpleTuner's custom schedulers store lr truncated to 1e-9 (`math.floor(lr * 1e9) / 1e9`).
double floor_lr_1e9(double lr);

}  // namespace st::plugins::optim
