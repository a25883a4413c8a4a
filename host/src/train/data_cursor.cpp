#include "train/data_cursor.h"

#include "plugins/guard.h"
#include "st/error.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.train";
}

DataCursor::DataCursor(std::vector<OpenedBackend>& backends, int64_t batch_size, int64_t max_epochs)
    : backends_(backends), batch_size_(batch_size), max_epochs_(max_epochs) {}

std::optional<sdk::Batch> DataCursor::next() {
    if (data_done_) return std::nullopt;
    if (!epoch_open_) {
        if (max_epochs_ > 0 && epoch_ >= max_epochs_) {
            data_done_ = true;
            return std::nullopt;
        }
        for (auto& b : backends_)
            call_plugin(*b.component, "start_epoch", [&] { b.backend->start_epoch(epoch_); });
        backend_index_ = 0;
        epoch_open_ = true;
        if (on_epoch_start_) on_epoch_start_(epoch_ + 1);
    }
    while (backend_index_ < backends_.size()) {
        auto& b = backends_[backend_index_];
        auto batch =
            call_plugin(*b.component, "next_batch", [&] { return b.backend->next_batch(batch_size_); });
        if (batch) return batch;
        ++backend_index_;
    }
    epoch_open_ = false;
    ++epoch_;
    return std::nullopt;
}

int64_t DataCursor::batches_per_epoch() const {
    int64_t n = 0;
    for (auto& b : backends_)
        n += call_plugin(*b.component, "batches_per_epoch",
                         [&] { return b.backend->batches_per_epoch(batch_size_); });
    return n;
}

DataCursor::Position DataCursor::position() const {
    Position p;
    for (auto& b : backends_)
        p.data.push_back(call_plugin(*b.component, "state", [&] { return b.backend->state(); }));
    p.epoch = epoch_;
    p.backend_index = backend_index_;
    p.epoch_open = epoch_open_;
    p.data_done = data_done_;
    return p;
}

void DataCursor::restore(const Position& p) {
    if (!p.data.is_array() || p.data.size() != backends_.size())
        fail(kLog, "resume", "the saved data position holds {} data backend(s) but this run opened {}",
             p.data.is_array() ? p.data.size() : 0, backends_.size());
    for (size_t i = 0; i < backends_.size(); ++i)
        call_plugin(*backends_[i].component, "restore", [&] { backends_[i].backend->restore(p.data[i]); });
    epoch_ = p.epoch;
    backend_index_ = p.backend_index;
    epoch_open_ = p.epoch_open;
    data_done_ = p.data_done;
}

bool DataCursor::scan(const std::function<bool(const sdk::Batch&)>& visit) {
    const Position saved = position();
    bool stopped = false;
    for (auto& b : backends_) {
        call_plugin(*b.component, "start_epoch", [&] { b.backend->start_epoch(0); });
        while (!stopped) {
            auto batch = call_plugin(*b.component, "next_batch", [&] { return b.backend->next_batch(1); });
            if (!batch) break;
            stopped = visit(*batch);
        }
        if (stopped) break;
    }
    restore(saved);
    return stopped;
}

std::vector<sdk::Batch> DataCursor::first_samples(int64_t n) {
    std::vector<sdk::Batch> out;
    int64_t have = 0;
    if (n <= 0) return out;
    scan([&](const sdk::Batch& b) {
        have += static_cast<int64_t>(b.samples.size());
        out.push_back(b);
        return have >= n;
    });
    return out;
}

std::vector<sdk::Batch> DataCursor::eval_batches(int64_t max_samples, int64_t batch_size) {
    std::vector<sdk::Batch> out;
    for (auto& b : backends_) {
        auto batches = call_plugin(*b.component, "eval_batches",
                                   [&] { return b.backend->eval_batches(max_samples, batch_size); });
        for (auto& batch : batches) out.push_back(std::move(batch));
    }
    return out;
}

}  // namespace st::host::train
