#include "dist/launch_config.h"

#include <fmt/format.h>

#include <cstdlib>

#include "st/error.h"

namespace st::host::dist {

namespace {
constexpr const char* kLog = "host.dist";
}

LaunchConfig read_launch_config(const sdk::ConfigView& config) {
    LaunchConfig c;
    c.num_machines = static_cast<int>(config.opt_int("num_machines").value_or(1));
    c.machine_rank = static_cast<int>(config.opt_int("machine_rank").value_or(0));
    if (c.machine_rank >= c.num_machines)
        fail(kLog, "config", "machine_rank {} must be below num_machines {}", c.machine_rank, c.num_machines);
    const auto per_node = config.opt_int("nproc_per_node");
    const auto total = config.opt_int("num_processes");
    if (total && *total % c.num_machines != 0)
        fail(kLog, "config",
             "num_processes {} is not a multiple of num_machines {}: every machine runs the same "
             "number of ranks",
             *total, c.num_machines);
    if (per_node && total && *per_node * c.num_machines != *total)
        fail(kLog, "config",
             "nproc_per_node {} x num_machines {} = {} ranks, but num_processes says {}: set one of them",
             *per_node, c.num_machines, *per_node * c.num_machines, *total);
    if (per_node) {
        c.nproc_per_node = static_cast<int>(*per_node);
        c.source = "nproc_per_node";
    } else if (total) {
        c.nproc_per_node = static_cast<int>(*total / c.num_machines);
        c.source = "num_processes / num_machines";
    }
    if (auto ip = config.opt_string("main_process_ip"); ip && !ip->empty())
        c.master_addr = *ip;
    else if (c.num_machines > 1)
        fail(kLog, "config",
             "num_machines {} needs main_process_ip: the address of machine 0, where the ranks meet",
             c.num_machines);
    c.master_port =
        static_cast<int>(config.opt_int("main_process_port").value_or(c.num_machines > 1 ? 29500 : 0));
    if (auto t = config.opt_int("process_group_timeout")) {
        c.timeout_s = *t;
    } else if (const char* env = std::getenv("SIMPLETUNER_PROCESS_GROUP_TIMEOUT_SECONDS"); env && *env) {
        char* end = nullptr;
        const long long v = std::strtoll(env, &end, 10);
        if (!end || *end != '\0' || v < 1)
            fail(kLog, "config",
                 "SIMPLETUNER_PROCESS_GROUP_TIMEOUT_SECONDS='{}' is not a positive whole number of seconds",
                 env);
        c.timeout_s = v;
    }
    c.bucket_cap_bytes =
        static_cast<int64_t>(config.opt_float("ddp_bucket_cap_mb").value_or(25.0) * 1000.0 * 1000.0);
    if (c.bucket_cap_bytes < 4) c.bucket_cap_bytes = 4;
    return c;
}

}  // namespace st::host::dist
