// Resuming a checkpoint SimpleTuner wrote (simpletuner/helpers/training/save_hooks.py and
// accelerate's save_state): what maps onto st is carried — the LoRA weights
// (pytorch_lora_weights.safetensors, diffusers or LyCORIS names), the EMA LoRA (ema/), the step and
// epoch (training_state.json) and the optimizer state (optimizer.bin, a torch.save of
// torch.optim.Optimizer.state_dict()); what cannot is named: Python's random streams
// (random_states_*.pkl), SimpleTuner's sample order inside the epoch, scheduler.bin (st's schedule is
// a function of the step). Anything that does not fit fails with the file, the entry and the way
// out (init_lora: the LoRA weights only).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "st/tensors.h"

namespace st::host::train {

/// One parameter's entry of a torch optimizer state dict: its tensors and numbers by key.
struct UpstreamParamState {
    std::map<std::string, at::Tensor> tensors;
    std::map<std::string, double> numbers;
    std::optional<int64_t> group_step;  ///< torch-optimi keeps the step in the parameter group
};

/// optimizer.bin: one entry per parameter in the optimizer's order (its param_groups' `params`
/// lists concatenated); a parameter that never stepped has an empty entry.
struct UpstreamOptimizerState {
    std::filesystem::path file;
    std::vector<UpstreamParamState> params;
};

struct SimpleTunerCheckpoint {
    std::filesystem::path dir;
    int64_t global_step = 0;
    int64_t epoch = 1;  ///< SimpleTuner's 1-based epoch
    int64_t epoch_step = 0;
    std::filesystem::path lora;                ///< pytorch_lora_weights.safetensors
    std::optional<std::filesystem::path> ema;  ///< ema/pytorch_lora_weights.safetensors
    UpstreamOptimizerState optimizer;
};

/// Reads training_state.json and optimizer.bin and checks the LoRA file is there. st::Errors name the
/// file and entry and end with the init_lora way out.
SimpleTunerCheckpoint read_simpletuner_checkpoint(const std::filesystem::path& dir);

/// "set init_lora <dir>/pytorch_lora_weights.safetensors and resume_from_checkpoint none ..." (or
/// that the checkpoint holds no LoRA file st could start from).
std::string init_lora_way_out(const std::filesystem::path& dir);

/// `upstream` in st's optimizer state form (sdk::Optimizer::state_dict): parameter i of the upstream
/// order is `order[i]` (st's parameters in module order, the order SimpleTuner's optimizer saw them),
/// each upstream key under st's name (bitsandbytes' state1/absmax1 -> exp_avg.q/exp_avg.absmax, ...),
/// floating state in the parameter's dtype. `fresh` is the st optimizer's state before any step (its
/// meta: optimizer id and groups). The per-parameter step comes from the entry, else its group, else
/// `global_step` (Lion keeps none). st::Error when the counts or shapes disagree, naming the index and
/// the parameter.
sdk::StateDict translate_optimizer_state(const UpstreamOptimizerState& upstream, const sdk::StateDict& fresh,
                                         const std::vector<std::pair<std::string, at::Tensor>>& order,
                                         int64_t global_step);

}  // namespace st::host::train
