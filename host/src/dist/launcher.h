// st-host --nproc_per_node N: starts this machine's N ranks as children running the same command
// line, with the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
// MASTER_ADDR, MASTER_PORT). The children live in their own process group and die with the launcher
// (PR_SET_PDEATHSIG). Ctrl-C / SIGTERM are passed on once per signal (the first stops every rank at
// the same step with a checkpoint, a second quits). When a rank fails, the launcher names it, sends
// the others SIGTERM and, after `grace_s`, SIGKILL: no process is left behind.
#pragma once

#include <string>
#include <vector>

#include "dist/launch_config.h"

namespace st::host::dist {

/// `argv`: the command line to run (argv[0] is replaced by this executable). Returns 0 when every rank
/// finished with 0, else the exit code of the first rank that failed (128 + signal when killed).
int launch_ranks(const LaunchConfig& config, const std::vector<std::string>& argv, int grace_s = 30);

/// Runs this executable with `args` (without argv[0]) as a child and returns its exit code (128 +
/// signal when killed). Used by benchmarks that measure a launched run next to an in-process one.
int run_self(const std::vector<std::string>& args);

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
int free_port();

}  // namespace st::host::dist
