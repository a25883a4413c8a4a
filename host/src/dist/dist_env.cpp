#include "dist/dist_env.h"

#include <cstdlib>
#include <limits>

#include "st/error.h"
#include "st/log.h"

namespace st::host::dist {

namespace {
constexpr const char* kLog = "host.dist";

std::optional<std::string> lookup(const std::map<std::string, std::string>* env, const char* name) {
    if (env) {
        auto it = env->find(name);
        if (it == env->end()) return std::nullopt;
        return it->second;
    }
    const char* v = std::getenv(name);
    if (!v) return std::nullopt;
    return std::string(v);
}

int to_int(const std::string& value, const char* name, int lo, int hi) {
    size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(value, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != value.size() || v < lo || v > hi)
        fail(kLog, "env", "the environment variable {}='{}' is not a whole number in [{}, {}]", name, value,
             lo, hi);
    return static_cast<int>(v);
}
}  // namespace

DistEnv read_dist_env(const std::map<std::string, std::string>* env) {
    DistEnv d;
    const auto world = lookup(env, "WORLD_SIZE");
    if (!world) return d;
    constexpr int kMaxRanks = 1 << 20;
    d.world_size = to_int(*world, "WORLD_SIZE", 1, kMaxRanks);
    if (d.world_size == 1) return d;
    const auto rank = lookup(env, "RANK");
    if (!rank)
        fail(kLog, "env",
             "WORLD_SIZE={} is set but RANK is not: a launcher (torchrun, st-host --nproc_per_node) "
             "sets both",
             d.world_size);
    d.rank = to_int(*rank, "RANK", 0, d.world_size - 1);
    d.local_rank = d.rank;
    d.local_world_size = d.world_size;
    if (auto v = lookup(env, "LOCAL_WORLD_SIZE"))
        d.local_world_size = to_int(*v, "LOCAL_WORLD_SIZE", 1, d.world_size);
    if (auto v = lookup(env, "LOCAL_RANK"))
        d.local_rank = to_int(*v, "LOCAL_RANK", 0, d.local_world_size - 1);
    const auto addr = lookup(env, "MASTER_ADDR");
    const auto port = lookup(env, "MASTER_PORT");
    if (!addr || addr->empty() || !port)
        fail(kLog, "env", "WORLD_SIZE={} is set but {} is not: the ranks meet at MASTER_ADDR:MASTER_PORT",
             d.world_size, !addr || addr->empty() ? "MASTER_ADDR" : "MASTER_PORT");
    d.master_addr = *addr;
    d.master_port = to_int(*port, "MASTER_PORT", 1, 65535);
    if (lookup(env, "TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True") {
        d.agent_store = true;
        d.store_prefix = "/worker/attempt_" + lookup(env, "TORCHELASTIC_RESTART_COUNT").value_or("0");
    }
    return d;
}

void quiet_other_ranks() {
    const char* all = std::getenv("ST_LOG_ALL_RANKS");
    if (all && std::string(all) == "1") return;
    DistEnv env;
    try {
        env = read_dist_env();
    } catch (const std::exception&) {
        return;  // reported where the run reads the variables
    }
    if (env.rank != 0 && log::level() == log::Level::info) log::set_level(log::Level::warn);
}

}  // namespace st::host::dist
