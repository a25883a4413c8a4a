// The training job behind `st-host [--plugin X] CONFIG`: loads the model family, prepares the data
// (discovery + caches, as `st-host prepare`), sets up LoRA or full training, and runs the
// flow-matching loop with gradient accumulation, clipping, the optimizer and LR scheduler
// components, EMA, metrics, checkpoints and exact resume. Never loses finished work: see
// docs/training.md.
#pragma once

#include "commands/commands.h"
#include "run/run_setup.h"

namespace st::host::train {

/// Exit codes: 0 finished (or stopped on request with a checkpoint written), 1 failed, 4 stopped
/// by too many non-finite steps in a row (a checkpoint of the last good state is written).
int run_training(CommandContext& ctx, RunSetup& setup);

}  // namespace st::host::train
