// run_blocks: skip layers, checkpointing, taps and TREAD routes (see block_runner.h).
#include "st/kit/block_runner.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <set>

#include "st/error.h"

namespace st::kit {

namespace {

constexpr const char* kComponent = "kit.blocks";

// The routed state of one active route.
struct ActiveRoute {
    at::Tensor kept;  // [B, K] original positions (ascending) of the kept routable tokens
    at::Tensor full;  // x at the route's start [B, N, D]
    std::vector<at::Tensor> full_aligned;
};

// Selects the kept routable tokens: [B, K] ascending positions.
at::Tensor select_tokens(const at::Tensor& x, const TokenRoute& route, const BlockRunOptions& o) {
    const int64_t b = x.size(0), r = o.routable;
    at::Tensor score;
    if (route.selection == TokenRoute::Selection::random) {
        if (!o.generator) fail(kComponent, "route", "a random TREAD route needs the run's generator");
        score = at::rand({b, r}, *o.generator, at::TensorOptions().dtype(at::kFloat)).to(x.device());
    } else {
        // l1: keep the largest L1 norms -> the smallest scores.
        const at::Tensor l1 = x.narrow(1, 0, r).detach().to(at::kFloat).abs().sum(-1);  // [B, R]
        const at::Tensor lo = std::get<0>(l1.min(1, true)), hi = std::get<0>(l1.max(1, true));
        score = 1.0 - (l1 - lo) / (hi - lo).clamp_min(1e-12);
    }
    int64_t keep = r - static_cast<int64_t>(std::llround(static_cast<double>(r) * route.selection_ratio));
    if (o.force_keep.defined()) {
        const at::Tensor fk = o.force_keep.to(score.device()).to(at::kBool);
        score = at::where(fk, at::full_like(score, -1.0), score);
        keep = std::max<int64_t>(keep, fk.sum(1).max().item<int64_t>());
    }
    keep = std::clamp<int64_t>(keep, 1, r);
    const at::Tensor ids = std::get<1>(score.sort(1)).narrow(1, 0, keep);
    return std::get<0>(ids.sort(1));
}

// t (token dim `td`, first `r` tokens routable) -> the kept routable tokens in front of the rest.
at::Tensor gather_tokens(const at::Tensor& t, int64_t td, const at::Tensor& kept, int64_t r) {
    std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
    shape[0] = kept.size(0);
    shape[static_cast<size_t>(td)] = kept.size(1);
    std::vector<int64_t> expand = t.sizes().vec();
    expand[static_cast<size_t>(td)] = kept.size(1);
    std::vector<int64_t> view(static_cast<size_t>(t.dim()), 1);
    view[0] = kept.size(0);
    view[static_cast<size_t>(td)] = kept.size(1);
    const at::Tensor index = kept.view(view).expand(expand);
    const at::Tensor front = t.narrow(td, 0, r).gather(td, index);
    if (t.size(td) == r) return front;
    return at::cat({front, t.narrow(td, r, t.size(td) - r)}, td);
}

// The batched form of an aligned tensor (shared tables get the batch dim).
at::Tensor batched(const TokenAligned& a, int64_t b) {
    if (a.batched) return a.tensor;
    std::vector<int64_t> expand = a.tensor.sizes().vec();
    expand.insert(expand.begin(), b);
    return a.tensor.unsqueeze(0).expand(expand);
}

// The routed x [B, K + rest, D] put back onto the route's input: kept positions from `routed`, the
// dropped ones from `full`, the non-routable rest from `routed`.
at::Tensor scatter_back(const at::Tensor& routed, const at::Tensor& full, const at::Tensor& kept, int64_t r) {
    const int64_t k = kept.size(1), d = routed.size(2);
    const at::Tensor index = kept.unsqueeze(-1).expand({kept.size(0), k, d});
    const at::Tensor front = full.narrow(1, 0, r).scatter(1, index, routed.narrow(1, 0, k));
    if (routed.size(1) == k) return front;
    return at::cat({front, routed.narrow(1, k, routed.size(1) - k)}, 1);
}

}  // namespace

at::Tensor run_blocks(size_t num_blocks, const BlockFn& block, const BlockParamsFn& params,
                      const at::Tensor& x_in, const std::vector<TokenAligned>& aligned,
                      const std::vector<at::Tensor>& extras, const BlockRunOptions& o,
                      sdk::TensorMap* intermediates) {
    // x [B, N, D] -> [B, N, D]
    std::vector<bool> skip(num_blocks, false);
    for (const int64_t s : o.skip) {
        if (s < 0 || s >= static_cast<int64_t>(num_blocks))
            fail(kComponent, "forward", "skip layer {} is out of range: this transformer has blocks 0 .. {}",
                 s, static_cast<int64_t>(num_blocks) - 1);
        skip[static_cast<size_t>(s)] = true;
    }
    const bool grad = torch::autograd::GradMode::is_enabled();
    const bool routing = o.training && grad && !o.routes.empty();
    if (routing) {
        if (o.routable <= 0 || o.routable > x_in.size(1))
            fail(kComponent, "route", "{} routable tokens of {}: nothing to route", o.routable, x_in.size(1));
        for (const auto& r : o.routes)
            if (r.start < 0 || r.end >= static_cast<int64_t>(num_blocks) || r.end < r.start)
                fail(kComponent, "route", "route over blocks {} .. {} does not fit {} blocks", r.start, r.end,
                     num_blocks);
    }
    const std::set<std::string> taps(o.taps.begin(), o.taps.end());
    const int64_t interval = std::max<int64_t>(1, o.checkpoint_interval);

    at::Tensor x = x_in;
    std::vector<at::Tensor> al;
    for (const auto& a : aligned) al.push_back(a.tensor);
    RouteView view{{}, o.routable};
    std::optional<ActiveRoute> active;
    size_t next_route = 0;
    const int64_t b = x_in.size(0);
    std::vector<at::Generator> gens;
    if (o.generator) gens.push_back(*o.generator);

    for (size_t i = 0; i < num_blocks; ++i) {
        const auto idx = static_cast<int64_t>(i);
        if (routing && !active && next_route < o.routes.size() && o.routes[next_route].start == idx) {
            ActiveRoute ar;
            ar.kept = select_tokens(x, o.routes[next_route], o);
            ar.full = x;
            ar.full_aligned = al;
            x = gather_tokens(x, 1, ar.kept, o.routable);
            for (size_t k = 0; k < al.size(); ++k) {
                const TokenAligned& a = aligned[k];
                al[k] = gather_tokens(batched({al[k], a.token_dim, a.batched}, b),
                                      a.batched ? a.token_dim : a.token_dim + 1, ar.kept, o.routable);
            }
            view = RouteView{ar.kept, ar.kept.size(1)};
            active = std::move(ar);
        }
        if (!skip[i]) {
            const bool ckpt = o.checkpoint && grad && (active || idx % interval == 0);
            if (ckpt) {
                std::vector<at::Tensor> inputs{x};
                inputs.insert(inputs.end(), al.begin(), al.end());
                inputs.insert(inputs.end(), extras.begin(), extras.end());
                const size_t n_al = al.size();
                // The closure outlives this call (backward re-runs it): it holds a copy of the block
                // function, never a reference to the caller's.
                x = checkpointed_call(
                    [block, i, n_al, view](const std::vector<at::Tensor>& a) {
                        const std::vector<at::Tensor> al_in(a.begin() + 1,
                                                            a.begin() + 1 + static_cast<long>(n_al));
                        const std::vector<at::Tensor> ex_in(a.begin() + 1 + static_cast<long>(n_al), a.end());
                        return block(i, a[0], al_in, ex_in, view);
                    },
                    inputs, params(i), gens);
            } else {
                x = block(i, x, al, extras, view);
            }
        }
        const bool route_ends = active && o.routes[next_route].end == idx;
        const std::string tap = "blocks." + std::to_string(i) + ".out";
        if (route_ends) {
            x = scatter_back(x, active->full, active->kept, o.routable);
            al = active->full_aligned;
            view = RouteView{{}, o.routable};
            active.reset();
            ++next_route;
        }
        if (intermediates && taps.count(tap))
            (*intermediates)[tap] = active ? scatter_back(x, active->full, active->kept, o.routable) : x;
    }
    return x;
}

}  // namespace st::kit
