#include "dist/grad_reducer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <mutex>

#include "st/error.h"

namespace st::host::dist {

namespace {
constexpr const char* kLog = "host.dist";
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

struct GradReducer::State {
    struct Bucket {
        std::vector<size_t> params;  // indices into State::params
        int64_t numel = 0;
        size_t waiting = 0;  // params of this step not ready yet
        at::Tensor buffer;   // fp32, numel
        Collectives::Pending pending;
        bool sent = false;
    };

    Collectives& coll;
    std::vector<at::Tensor> params;
    std::vector<std::string> names;
    std::vector<size_t> bucket_of;
    std::vector<bool> ready;
    std::vector<Bucket> buckets;
    std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // kept alive: they hold the hooks
    std::mutex mutex;
    bool armed = false;
    bool alive = true;
    size_t next_to_send = 0;
    std::string late;  // a parameter that got its gradient after its bucket was sent
    Clock::time_point first_sent;
    bool any_sent = false;
    int64_t overlapped = 0;

    State(Collectives& c, std::vector<at::Tensor> p, std::vector<std::string> n)
        : coll(c), params(std::move(p)), names(std::move(n)) {}

    void send(size_t b, bool during_backward) {
        Bucket& k = buckets[b];
        int64_t off = 0;
        for (size_t i : k.params) {
            const at::Tensor& p = params[i];
            at::Tensor dst = k.buffer.narrow(0, off, p.numel());
            const at::Tensor& g = p.grad();
            if (g.defined())
                dst.copy_(g.reshape({-1}));
            else
                dst.zero_();  // unused in this step on this rank: contributes nothing
            off += p.numel();
        }
        if (!any_sent) {
            first_sent = Clock::now();
            any_sent = true;
        }
        k.pending = coll.all_reduce_sum_async(
            k.buffer, fmt::format("the gradient all-reduce (bucket {} of {})", b + 1, buckets.size()));
        k.sent = true;
        if (during_backward) ++overlapped;
    }

    // Sends every complete bucket whose predecessors were sent (the order is the same on every rank).
    void send_ready() {
        while (next_to_send < buckets.size() && buckets[next_to_send].waiting == 0) {
            send(next_to_send, true);
            ++next_to_send;
        }
    }

    void on_grad(size_t i) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!alive || !armed) return;
        if (ready[i]) return;
        Bucket& k = buckets[bucket_of[i]];
        if (k.sent) {
            if (late.empty()) late = names[i];
            return;
        }
        ready[i] = true;
        --k.waiting;
        send_ready();
    }
};

namespace {
struct ReadyHook : torch::autograd::FunctionPostHook {
    std::weak_ptr<GradReducer::State> state;
    size_t index;
    ReadyHook(std::weak_ptr<GradReducer::State> s, size_t i) : state(std::move(s)), index(i) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list&) override {
        if (auto s = state.lock()) s->on_grad(index);
        return outputs;
    }
};
}  // namespace

GradReducer::GradReducer(Collectives& coll, std::vector<at::Tensor> params, std::vector<std::string> names,
                         int64_t bucket_cap_bytes)
    : state_(std::make_shared<State>(coll, std::move(params), std::move(names))) {
    State& s = *state_;
    const size_t n = s.params.size();
    s.bucket_of.assign(n, 0);
    s.ready.assign(n, false);
    // Reverse order: backward produces the last parameters' gradients first.
    for (size_t j = n; j-- > 0;) {
        const int64_t bytes = s.params[j].numel() * 4;
        if (s.buckets.empty() ||
            (s.buckets.back().numel > 0 && (s.buckets.back().numel * 4 + bytes) > bucket_cap_bytes))
            s.buckets.emplace_back();
        s.buckets.back().params.push_back(j);
        s.buckets.back().numel += s.params[j].numel();
        s.bucket_of[j] = s.buckets.size() - 1;
    }
    for (auto& b : s.buckets) b.buffer = at::empty({b.numel}, at::TensorOptions().dtype(at::kFloat));
    for (size_t i = 0; i < n; ++i) {
        const at::Tensor& p = s.params[i];
        if (!p.requires_grad() || !p.is_leaf())
            fail(kLog, "setup", "trainable tensor '{}' is not a leaf that requires a gradient", s.names[i]);
        auto acc = torch::autograd::impl::grad_accumulator(p);
        acc->add_post_hook(std::make_unique<ReadyHook>(state_, i));
        s.accumulators.push_back(std::move(acc));
    }
}

GradReducer::~GradReducer() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->alive = false;
}

void GradReducer::arm(bool sync) {
    State& s = *state_;
    std::lock_guard<std::mutex> lock(s.mutex);
    s.armed = sync;
    if (!sync) return;
    std::fill(s.ready.begin(), s.ready.end(), false);
    for (auto& b : s.buckets) {
        b.waiting = b.params.size();
        b.sent = false;
        b.pending = nullptr;
    }
    s.next_to_send = 0;
    s.late.clear();
    s.any_sent = false;
    s.overlapped = 0;
}

ReduceTiming GradReducer::finish() {
    State& s = *state_;
    ReduceTiming t;
    std::unique_lock<std::mutex> lock(s.mutex);
    if (!s.armed) {  // the step's last micro-step ran unarmed: reduce everything now
        lock.unlock();
        arm(true);
        lock.lock();
    }
    for (size_t b = s.next_to_send; b < s.buckets.size(); ++b) s.send(b, false);
    s.next_to_send = s.buckets.size();
    s.armed = false;
    const std::string late = s.late;
    lock.unlock();
    const auto w = Clock::now();
    for (auto& b : s.buckets) {
        b.pending();
        b.pending = nullptr;
    }
    t.wait = since(w);
    if (!late.empty())
        fail(kLog, "step",
             "'{}' received its gradient after its bucket had been sent (a parameter used twice in separate "
             "backward passes of one step?): the average would miss part of it",
             late);
    const double inv = 1.0 / static_cast<double>(s.coll.world_size());
    for (auto& b : s.buckets) {
        b.buffer.mul_(inv);
        int64_t off = 0;
        for (size_t i : b.params) {
            at::Tensor& p = s.params[i];
            at::Tensor src = b.buffer.narrow(0, off, p.numel()).view(p.sizes());
            if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
            p.mutable_grad().copy_(src);
            off += p.numel();
        }
        t.bytes += b.numel * 4;
    }
    t.total = s.any_sent ? since(s.first_sent) : 0;
    t.buckets = static_cast<int64_t>(s.buckets.size());
    t.overlapped = s.overlapped;
    return t;
}

int64_t GradReducer::bucket_count() const {
    return static_cast<int64_t>(state_->buckets.size());
}

std::string GradReducer::describe() const {
    int64_t numel = 0;
    for (const auto& b : state_->buckets) numel += b.numel;
    return fmt::format("{} tensors ({:.2f} MB of fp32 gradients) in {} bucket(s)", state_->params.size(),
                       static_cast<double>(numel) * 4 / 1e6, state_->buckets.size());
}

}  // namespace st::host::dist
