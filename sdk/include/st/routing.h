// TREAD token routing (arXiv 2501.04765), as SimpleTuner configures it (`tread_config`; its
// training/tread.py, simpletuner-inventory.md §4.2): routes that let a fraction of the video tokens
// skip a span of transformer blocks during training. The host parses the config against the model's
// block count (capability token_routing@1) and hands the routes to predict() in training steps only;
// families run them through the block runner of the family kit (st/kit/block_runner.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace st::sdk {

/// One route with absolute block indices.
struct TokenRoute {
    enum class Selection { random, l1 };
    double selection_ratio = 0.0;  ///< fraction of the routable tokens dropped, in [0, 1)
    int64_t start = 0;             ///< first routed block
    int64_t end = 0;               ///< last routed block (inclusive)
    /// random (SimpleTuner's behaviour: its L1 term has weight 0) or l1 (keep the tokens whose hidden
    /// state has the largest L1 norm: what SimpleTuner's docs describe).
    Selection selection = Selection::random;
};

/// `tread_config` ({"routes": [{"selection_ratio", "start_layer_idx", "end_layer_idx"[, "selection":
/// "random" | "l1"]}, ...]}; null = no routes) for a model of `num_blocks` blocks: negative indices count
/// from the end, both ends inclusive, routes ordered and not overlapping. st::Error naming the route
/// (by position) and what is wrong.
std::vector<TokenRoute> parse_tread_config(const nlohmann::json& config, int64_t num_blocks,
                                           const std::string& source = "tread_config");

/// "route 0: 50% of the video tokens skip blocks 2 .. 27 (random)" lines joined with "; ".
std::string describe_routes(const std::vector<TokenRoute>& routes);

}  // namespace st::sdk
