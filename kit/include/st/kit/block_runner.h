// The one transformer block loop of st (every DiT family calls it): runs a family's blocks over a
// token sequence with skip layers (skip-layer guidance), gradient checkpointing (every block, or
// SimpleTuner's gradient_checkpointing_interval), taps, and TREAD token routing.
//
// Taps: "blocks.N.out" is the hidden state after block N has done everything it does (a family's
// per-block extras included, e.g. Wan S2V's audio injection), always over the full token sequence:
// inside a route the kept tokens are scattered back onto the route's input (dropped tokens unchanged).
//
// TREAD (arXiv 2501.04765; SimpleTuner training/tread.py, simpletuner-inventory.md §4.2): a route
// drops `selection_ratio` of the routable tokens for blocks [start, end] (both inclusive): at `start`
// it keeps K = S - round(S * ratio) of the S routable tokens (never fewer than the force-kept ones):
// force-kept tokens first, then by score (random: U(0,1) from the run's generator; l1: the largest L1
// norm of the hidden state), each sample of the batch on its own; the kept tokens (and every tensor
// that travels with the tokens: RoPE tables, per-token modulation) are gathered, in their original
// order, in front of the non-routable tokens; after `end` they are scattered back onto the route's
// input, so dropped tokens skip the routed blocks unchanged. Routes apply only while training with
// gradients (never in validation, evaluation or generation).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "st/routing.h"
#include "st/tensors.h"

namespace st::kit {

/// A TREAD route (st/routing.h).
using TokenRoute = sdk::TokenRoute;

/// A tensor that travels with the tokens: its `token_dim` indexes the sequence of x. `batched`:
/// it has the batch as dim 0 (per-token modulation [B, N, 6, D]); else it is shared by the batch
/// (RoPE tables [N, head_dim]) and becomes [B, K, ...] once routed.
struct TokenAligned {
    at::Tensor tensor;
    int64_t token_dim = 0;
    bool batched = false;
};

/// What the block sees of the routing: `kept` [B, K] (original positions of the routable tokens in
/// front of the sequence, ascending) or undefined when every token is there; `front` = the number of
/// routable tokens in front (K routed, else all of them).
struct RouteView {
    at::Tensor kept;
    int64_t front = 0;
};

struct BlockRunOptions {
    std::vector<int64_t> skip;  ///< blocks that pass x through unchanged (skip-layer guidance)
    bool checkpoint = false;    ///< gradient checkpointing (only while grad mode is on)
    /// Checkpoint every k-th block (SimpleTuner gradient_checkpointing_interval); 1 = every block.
    /// Routes switch it to every block while they are active, as SimpleTuner does.
    int64_t checkpoint_interval = 1;
    std::vector<TokenRoute> routes;  ///< applied only when `training` and grad mode is on
    bool training = false;
    /// The first `routable` tokens of x may be dropped (video tokens); the rest never are.
    int64_t routable = 0;
    /// [B, routable] bool: tokens a route must keep (conditioned frames, masked regions); optional.
    at::Tensor force_keep;
    /// Draws the random selections (the run's generator: saved with checkpoints; required for random
    /// routes); checkpointed blocks re-run with its state of their forward (LoRA dropout draws from it).
    std::optional<at::Generator> generator;
    std::vector<std::string> taps;  ///< "blocks.N.out" names to fill into the intermediates
};

/// The family's block i: x [B, n, D] with `aligned` gathered to the same n tokens, `extras` (tensors
/// read by every block that may need gradients: text context, timestep projection, ...) -> x.
/// Checkpointing keeps a copy of it and calls it again in backward (grad mode on), after the family's
/// forward has returned: it must capture by value (never a reference to a local of the forward).
using BlockFn =
    std::function<at::Tensor(size_t index, const at::Tensor& x, const std::vector<at::Tensor>& aligned,
                             const std::vector<at::Tensor>& extras, const RouteView& view)>;
/// The trainable parameters block i reads (checkpointing re-runs it in backward and needs them).
using BlockParamsFn = std::function<std::vector<at::Tensor>(size_t index)>;

/// Runs `num_blocks` blocks. x [B, N, D]; `aligned` travel with the tokens; `extras` are passed to
/// every block unchanged. Taps requested in `options.taps` are written to `intermediates` (when not
/// null). st::Error for a skip index or route out of range, or a random route without generator.
at::Tensor run_blocks(size_t num_blocks, const BlockFn& block, const BlockParamsFn& params,
                      const at::Tensor& x, const std::vector<TokenAligned>& aligned,
                      const std::vector<at::Tensor>& extras, const BlockRunOptions& options,
                      sdk::TensorMap* intermediates = nullptr);

/// Gradient checkpointing for LibTorch 1.13 (no C++ checkpoint utility): fn(inputs) without a graph in
/// forward, re-run with grad in backward (torch.utils.checkpoint use_reentrant=True). `parameters`:
/// tensors fn reads from elsewhere that need gradients. The re-run sees the forward's state of ATen's
/// default generators and of `generators` (preserve_rng_state: the same dropout masks), which get their
/// current state back afterwards. Without grad mode, or when nothing requires grad, this is fn(inputs).
at::Tensor checkpointed_call(std::function<at::Tensor(const std::vector<at::Tensor>&)> fn,
                             const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& parameters,
                             const std::vector<at::Generator>& generators = {});

}  // namespace st::kit
