// The run's walk through its data: epochs over every opened data backend in order (one backend's
// batches until it has none, then the next), the epoch budget, and the position a checkpoint saves.
// Every call into a backend goes through call_plugin. Used by the trainer (batches, position), the
// evaluation loss (held-out batches, or the first samples of the order) and validation (the reference
// sample search).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "run/data_setup.h"
#include "st/data_backend.h"

namespace st::host::train {

class DataCursor {
  public:
    /// Where the walk is; saved in checkpoints (training_state.json keys data, epoch, backend_index,
    /// epoch_open, data_done).
    struct Position {
        nlohmann::json data = nlohmann::json::array();  ///< DataBackend::state() of each backend
        int64_t epoch = 0;                              ///< 0-based index of the current (or next) epoch
        size_t backend_index = 0;
        bool epoch_open = false;
        bool data_done = false;
    };

    /// `max_epochs` 0: epochs never run out (max_train_steps decides the length).
    DataCursor(std::vector<OpenedBackend>& backends, int64_t batch_size, int64_t max_epochs);

    /// Called with the 1-based epoch number whenever an epoch opens.
    void on_epoch_start(std::function<void(int64_t)> f) { on_epoch_start_ = std::move(f); }

    /// The next batch of `batch_size` samples. nullopt when the open epoch has no batch left (the
    /// epoch closes; the next call opens the next epoch) or when the epoch budget is spent (done()).
    std::optional<sdk::Batch> next();
    /// 1-based number of the open epoch, or of the epoch that closed last (0 before the first).
    int64_t epoch() const { return epoch_open_ ? epoch_ + 1 : epoch_; }
    /// 0-based index of the epoch the next batch comes from.
    int64_t epoch_index() const { return epoch_; }
    bool epoch_open() const { return epoch_open_; }
    bool done() const { return data_done_; }

    /// Batches of `batch_size` one epoch yields, over every backend.
    int64_t batches_per_epoch() const;
    Position position() const;
    void restore(const Position& p);

    /// The first `n` samples of the data order (epoch 0, batches of one sample); the position is
    /// left as it was.
    std::vector<sdk::Batch> first_samples(int64_t n);
    /// Every backend's held-out evaluation batches (DataBackend::eval_batches), in backend order.
    std::vector<sdk::Batch> eval_batches(int64_t max_samples, int64_t batch_size);
    /// Walks epoch 0's order one sample at a time from the start, calling `visit` until it returns
    /// true or the order ends; the position is left as it was. Returns whether `visit` stopped it.
    bool scan(const std::function<bool(const sdk::Batch&)>& visit);

    size_t backend_count() const { return backends_.size(); }

  private:
    std::vector<OpenedBackend>& backends_;
    int64_t batch_size_;
    int64_t max_epochs_;
    std::function<void(int64_t)> on_epoch_start_;
    int64_t epoch_ = 0;
    size_t backend_index_ = 0;
    bool epoch_open_ = false;
    bool data_done_ = false;
};

}  // namespace st::host::train
