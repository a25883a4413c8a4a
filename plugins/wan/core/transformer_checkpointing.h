// Gradient checkpointing for LibTorch 1.13 (which has no C++ checkpoint utility): a custom
// autograd Function that runs a function without building a graph in forward, keeps only its
// inputs, and in backward re-runs it with grad enabled and back-propagates through the re-run.
// Equivalent to torch.utils.checkpoint(use_reentrant=True) for deterministic functions.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace st::plugins::wan {

using CheckpointedFn = std::function<at::Tensor(const std::vector<at::Tensor>& inputs)>;

/// Returns fn(inputs). `inputs` are the tensors fn reads as arguments (all defined);
/// `parameters` are the tensors fn reads from elsewhere (module parameters) that need gradients:
/// they become inputs of the autograd node, so their gradients reach them through the engine
/// (accumulating into leaf .grad like any other op). fn must be deterministic (no dropout/RNG).
/// Without grad mode or when nothing requires grad this is just fn(inputs).
at::Tensor checkpointed_call(CheckpointedFn fn, const std::vector<at::Tensor>& inputs,
                             const std::vector<at::Tensor>& parameters);

}  // namespace st::plugins::wan
