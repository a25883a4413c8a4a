// The data-parallel settings of a run: how many ranks this machine starts and where they meet
// (st-host --nproc_per_node, or SimpleTuner's num_processes / num_machines / machine_rank /
// main_process_ip / main_process_port), the collective timeout and the gradient bucket size.
#pragma once

#include <cstdint>
#include <string>

#include "st/options.h"

namespace st::host::dist {

struct LaunchConfig {
    int nproc_per_node = 1;
    int num_machines = 1;
    int machine_rank = 0;
    std::string master_addr = "127.0.0.1";
    int master_port = 0;  ///< 0: a free port (one machine only)
    int64_t timeout_s = 5400;
    int64_t bucket_cap_bytes = 25 * 1000 * 1000;
    std::string source;  ///< which keys decided nproc_per_node (for the log)
    int world_size() const { return nproc_per_node * num_machines; }
};

/// st::Error naming the keys when they disagree (num_processes not a multiple of num_machines,
/// nproc_per_node x num_machines != num_processes, machine_rank >= num_machines, several machines
/// without main_process_ip).
LaunchConfig read_launch_config(const sdk::ConfigView& config);

}  // namespace st::host::dist
