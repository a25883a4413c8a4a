// `st-host bench wan` / `st-host bench --plugin wan`: transformer forward and forward+backward time
// and peak RSS for the tiny, small (dim 512, 8 layers) and real 1.3B configs on small latents, and
// attention peak memory at long sequence lengths (which must stay linear in L).
#pragma once

#include <string>
#include <vector>

#include "st/kit/bench_util.h"

namespace st::plugins::wan {

/// args: [--presets tiny,small,1.3b] [--latent FxHxW] [--text-len N] [--steps N]
///       [--attention-tokens 8192,32768] [--attention-heads H] [--tread_config JSON] [--json].
/// Prints markdown tables; with --tread_config every preset is also measured with those TREAD routes
/// in the same run; --json prints one JSON object on the last line (fwd_s, fwd_bwd_s, peak_rss_mib
/// per preset, and under "tread" the routed ones) instead of the attention table.
int run_wan_bench(const std::vector<std::string>& args);

/// The kit's peak-RSS probes (st/kit/bench_util.h), under the names the Wan-family benchmarks use.
using st::kit::peak_rss_mib;
using st::kit::reset_peak_rss;

}  // namespace st::plugins::wan
