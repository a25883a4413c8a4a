// Where this process sits in a data-parallel run: the standard variables torchrun (and st-host's own
// --nproc_per_node launcher) set: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, plus TORCHELASTIC_USE_AGENT_STORE / TORCHELASTIC_RESTART_COUNT (torchrun hosts the
// rendezvous store itself). See docs/distributed.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace st::host::dist {

struct DistEnv {
    int rank = 0;
    int world_size = 1;
    int local_rank = 0;
    int local_world_size = 1;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    bool agent_store = false;  ///< torchrun's agent hosts the store: every rank is a client
    std::string store_prefix;  ///< "/worker/attempt_<n>" under torchrun's agent store
    bool launched() const { return world_size > 1; }
};

/// Reads the variables from `env` (the process environment when null). No WORLD_SIZE (or 1): a
/// single-process run. st::Error naming the variable when one is malformed or inconsistent (RANK
/// outside [0, WORLD_SIZE), MASTER_PORT outside 1..65535, a missing MASTER_ADDR/MASTER_PORT/RANK).
DistEnv read_dist_env(const std::map<std::string, std::string>* env = nullptr);

/// Ranks other than 0 log warnings and errors only (their info lines repeat rank 0's), unless
/// ST_LOG_ALL_RANKS=1 or the log level is debug/trace. Call after every change of the log level.
void quiet_other_ranks();

}  // namespace st::host::dist
