// The collectives of a data-parallel run, on LibTorch's c10d: a TCPStore rendezvous at
// MASTER_ADDR:MASTER_PORT (hosted by rank 0, or by torchrun's agent) and a ProcessGroupGloo (CPU
// tensors). Every failure (a rank that died, a collective that timed out) becomes an st::Error that
// says which ranks were where, from the step each rank last reported in the store.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dist/dist_env.h"

namespace st::host::dist {

class Collectives {
  public:
    /// Joins the group; blocks until every rank has arrived (at most `timeout`).
    Collectives(const DistEnv& env, std::chrono::seconds timeout);
    ~Collectives();
    Collectives(const Collectives&) = delete;
    Collectives& operator=(const Collectives&) = delete;

    int rank() const { return env_.rank; }
    int world_size() const { return env_.world_size; }
    const DistEnv& env() const { return env_; }
    std::chrono::seconds timeout() const { return timeout_; }

    /// An all-reduce in flight: wait() blocks until it completed (st::Error when it failed).
    using Pending = std::function<void()>;
    /// Starts a sum all-reduce of the contiguous CPU tensor `t` in place; `what` names it in errors.
    Pending all_reduce_sum_async(at::Tensor t, std::string what);
    void all_reduce_sum(at::Tensor t, const std::string& what);
    void all_reduce_max(at::Tensor t, const std::string& what);
    void broadcast(at::Tensor t, int root, const std::string& what);
    void barrier(const std::string& what);
    /// Equal-split all-to-all of contiguous tensors: `in` is world_size() chunks along dim 0, chunk j
    /// goes to rank j; `out` (same shape) receives rank i's chunk as its chunk i. The collective of
    /// sequence (Ulysses) context parallelism: tokens sharded -> heads sharded and back.
    void all_to_all(at::Tensor out, at::Tensor in, const std::string& what);

    /// Records in the store the step this rank is at (read back by error messages).
    void report_step(int64_t step);
    /// Records why this rank is leaving (read by the other ranks' error messages); never throws.
    void report_exit(const std::string& why);
    /// "rank 0: step 3; rank 1: step 2 (left: ...)" from the store; never throws.
    std::string describe_ranks();

  private:
    [[noreturn]] void failed(const std::string& what, const std::exception& e);

    struct Impl;
    DistEnv env_;
    std::chrono::seconds timeout_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace st::host::dist
