// Data-parallel gradient averaging, the way DDP does it: the trainable parameters are split into
// buckets (reverse registration order, at most bucket_cap bytes of fp32 each); a post-hook on each
// parameter's gradient accumulator marks it ready during backward, and a bucket whose parameters are
// all ready is flattened and all-reduced while backward goes on. finish() sends what is left, waits,
// divides by the world size and writes the averages back: N ranks x batch b then equal one rank x
// batch N*b. Micro-steps that do not end an accumulation run with the hooks disarmed (no traffic).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/collectives.h"

namespace st::host::dist {

struct ReduceTiming {
    double wait = 0;      ///< seconds finish() blocked on all-reduces (communication not hidden by backward)
    double total = 0;     ///< seconds from the first bucket sent to the last one written back
    int64_t buckets = 0;  ///< buckets sent during backward (overlapped) + in finish()
    int64_t overlapped = 0;
    int64_t bytes = 0;  ///< fp32 bytes reduced per rank
};

class GradReducer {
  public:
    /// `names` name the parameters in error messages.
    GradReducer(Collectives& coll, std::vector<at::Tensor> params, std::vector<std::string> names,
                int64_t bucket_cap_bytes);
    ~GradReducer();

    /// Before a micro-step's backward: `sync` true when its gradients complete the step's
    /// accumulation (buckets are then sent as they fill), false to accumulate locally.
    void arm(bool sync);
    /// After the step's last backward: sends every bucket not sent yet (all of them when the last
    /// micro-step was not armed, e.g. an epoch ended early), waits and writes the averages back.
    ReduceTiming finish();

    int64_t bucket_count() const;
    std::string describe() const;

    struct State;  // public so the autograd hooks (in the .cpp) can hold it weakly

  private:
    std::shared_ptr<State> state_;
};

}  // namespace st::host::dist
