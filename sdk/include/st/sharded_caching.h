// Optional interface of a data backend: caching split over the ranks of a data-parallel run. A
// backend that implements it (next to DataBackend) is told, before prepare(), which share of the
// encoding work is its own: item k (a sample, a unique caption) belongs to rank k % count, a choice
// every rank makes alike whatever is cached already. prepare() then encodes only its own missing
// items. The host waits for every rank, calls set_cache_shard(0, 1) and prepare() again, which finds
// every cache complete (rank 0 first, so anything a failed share left out is encoded once).
// Backends without it are prepared by rank 0 alone while the others wait. Added in SDK ABI 5.0
// (a header of its own, so plugins that do not offer it need no rebuild).
#pragma once

#include <cstdint>

namespace st::sdk {

class ShardedCaching {
  public:
    virtual ~ShardedCaching();
    /// 0 <= index < count; count 1 = every item (the default).
    virtual void set_cache_shard(int64_t index, int64_t count) = 0;
};

}  // namespace st::sdk
