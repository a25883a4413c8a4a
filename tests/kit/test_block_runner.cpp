// The kit's block runner (st/kit/block_runner.h) on a toy transformer whose blocks mix tokens (so a
// route changes what every kept token sees): TREAD against an independent reference written here
// (per sample: pick the kept rows, run the routed blocks on them, put them back), ratio 0 bit for bit,
// selection rules (generator, force-keep, l1), taps inside a route, skip layers, checkpointing with
// and without routes (values, gradients, and the dropout masks of the re-run).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <map>
#include <set>

#include "st/error.h"
#include "st/kit/block_runner.h"

namespace {

using st::kit::BlockRunOptions;
using st::kit::RouteView;
using st::kit::TokenAligned;
using st::kit::TokenRoute;

constexpr int64_t kB = 2, kN = 14, kD = 8, kRoutable = 12, kBlocks = 5;

// Toy blocks: x + tanh(softmax(x x^T / sqrt(D)) x W_i + shared[i] + per_token), with an optional dropout
// on the mixed tokens (from the run's generator and from ATen's default one).
struct Toy {
    std::vector<at::Tensor> w;  // [D, D] each, requiring grad
    at::Tensor shared;          // [N, D] travels with the tokens, shared by the batch
    at::Tensor per_token;       // [B, N, D] travels with the tokens, per sample
    double dropout = 0.0;
    std::optional<at::Generator> gen;
    std::map<size_t, at::Tensor> seen_kept;  // block -> view.kept

    Toy() {
        auto g = at::detail::createCPUGenerator(11);
        for (int64_t i = 0; i < kBlocks; ++i)
            w.push_back((at::randn({kD, kD}, g) * 0.3).requires_grad_(true));
        shared = at::randn({kN, kD}, g) * 0.1;
        per_token = at::randn({kB, kN, kD}, g) * 0.1;
    }

    at::Tensor block(size_t i, const at::Tensor& x, const at::Tensor& sh, const at::Tensor& pt) const {
        // x [B, n, D]; sh [n, D] or [B, n, D]; pt [B, n, D]
        const at::Tensor att = (x.matmul(x.transpose(1, 2)) / std::sqrt(static_cast<double>(kD))).softmax(-1);
        at::Tensor h = att.matmul(x).matmul(w[i]);
        if (dropout > 0) {
            const at::Tensor m1 = at::empty_like(h).bernoulli_(1 - dropout, *gen);
            const at::Tensor m2 = at::empty_like(h).bernoulli_(1 - dropout);
            h = h * m1 * m2;
        }
        return x + at::tanh(h + sh + pt);
    }

    st::kit::BlockFn fn() {
        return [this](size_t i, const at::Tensor& x, const std::vector<at::Tensor>& al,
                      const std::vector<at::Tensor>&, const RouteView& view) {
            if (view.kept.defined()) seen_kept[i] = view.kept;
            return block(i, x, al[0], al[1]);
        };
    }
    st::kit::BlockParamsFn params() {
        return [this](size_t i) { return std::vector<at::Tensor>{w[i]}; };
    }
    at::Tensor run(const at::Tensor& x, BlockRunOptions o, st::sdk::TensorMap* taps = nullptr) {
        seen_kept.clear();
        const std::vector<TokenAligned> aligned{{shared, 0, false}, {per_token, 1, true}};
        return st::kit::run_blocks(kBlocks, fn(), params(), x, aligned, {}, o, taps);
    }
};

at::Tensor input() {
    auto g = at::detail::createCPUGenerator(3);
    return at::randn({kB, kN, kD}, g);
}

BlockRunOptions training(std::vector<TokenRoute> routes, uint64_t seed = 5) {
    BlockRunOptions o;
    o.training = true;
    o.routable = kRoutable;
    o.routes = std::move(routes);
    o.generator = at::detail::createCPUGenerator(seed);
    return o;
}

TokenRoute route(double ratio, int64_t start, int64_t end,
                 TokenRoute::Selection s = TokenRoute::Selection::random) {
    TokenRoute r;
    r.selection_ratio = ratio;
    r.start = start;
    r.end = end;
    r.selection = s;
    return r;
}

// The independent reference: per sample, the kept rows in their order, then the non-routable rows, run
// through the routed blocks; afterwards written back into the rows they came from.
at::Tensor reference(const Toy& toy, const at::Tensor& x_in, const std::vector<TokenRoute>& routes,
                     const std::vector<at::Tensor>& kept_per_route) {
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < kB; ++b) {
        at::Tensor x = x_in[b].unsqueeze(0);  // [1, N, D]
        at::Tensor sh = toy.shared, pt = toy.per_token[b].unsqueeze(0);
        size_t r = 0;
        for (int64_t i = 0; i < kBlocks; ++i) {
            if (r < routes.size() && routes[r].start <= i && i <= routes[r].end) {
                const at::Tensor kept = kept_per_route[r][b];
                const at::Tensor tail = at::arange(kRoutable, kN, at::kLong);
                const at::Tensor idx = at::cat({kept, tail});
                at::Tensor h = x.index_select(1, idx);
                const at::Tensor shs = sh.index_select(0, idx), pts = pt.index_select(1, idx);
                for (; i <= routes[r].end; ++i) h = toy.block(static_cast<size_t>(i), h, shs, pts);
                --i;
                at::Tensor full = x.clone();
                full.index_copy_(1, idx, h);
                x = full;
                ++r;
                continue;
            }
            x = toy.block(static_cast<size_t>(i), x, sh, pt);
        }
        rows.push_back(x);
    }
    return at::cat(rows, 0);
}

TEST(BlockRunnerTest, WithoutRoutesItIsThePlainLoop) {
    Toy toy;
    const at::Tensor x = input();
    at::Tensor expected = x;
    for (size_t i = 0; i < kBlocks; ++i) expected = toy.block(i, expected, toy.shared, toy.per_token);
    EXPECT_TRUE(at::equal(toy.run(x, training({})), expected));
}

TEST(BlockRunnerTest, RatioZeroIsBitIdenticalToThePlainForward) {
    Toy toy;
    const at::Tensor x = input();
    const at::Tensor plain = toy.run(x, training({}));
    const at::Tensor routed = toy.run(x, training({route(0.0, 1, 3)}));
    EXPECT_EQ(toy.seen_kept.at(1).size(1), kRoutable);
    EXPECT_TRUE(at::equal(plain, routed));
}

TEST(BlockRunnerTest, RoutedForwardEqualsTheIndependentReference) {
    Toy toy;
    const at::Tensor x = input();
    const std::vector<TokenRoute> routes{route(0.5, 1, 2), route(0.25, 3, 3)};
    const at::Tensor routed = toy.run(x, training(routes));
    // K = S - round(S * ratio), ascending positions, distinct, per sample.
    const at::Tensor k0 = toy.seen_kept.at(1), k1 = toy.seen_kept.at(3);
    ASSERT_EQ(k0.sizes(), (std::vector<int64_t>{kB, 6}));
    ASSERT_EQ(k1.sizes(), (std::vector<int64_t>{kB, 9}));
    EXPECT_TRUE(at::equal(toy.seen_kept.at(2), k0)) << "a route keeps its tokens over all its blocks";
    for (int64_t b = 0; b < kB; ++b) {
        EXPECT_TRUE(at::equal(k0[b], std::get<0>(k0[b].sort()))) << "kept positions are in order";
        EXPECT_EQ(std::get<0>(at::_unique(k0[b])).numel(), 6);
        EXPECT_LT(k0[b].max().item<int64_t>(), kRoutable) << "non-routable tokens are never selected";
    }
    EXPECT_FALSE(at::equal(k0[0], k0[1])) << "each sample draws its own selection";
    const at::Tensor ref = reference(toy, x, routes, {k0, k1});
    EXPECT_TRUE(at::allclose(routed, ref, 1e-6, 1e-6)) << (routed - ref).abs().max();
    EXPECT_GT((routed - toy.run(x, training({}))).abs().max().item<double>(), 1e-3) << "routing changes x";
}

TEST(BlockRunnerTest, TheSameGeneratorSeedGivesTheSameRouting) {
    Toy toy;
    const at::Tensor x = input();
    const at::Tensor a = toy.run(x, training({route(0.5, 0, 4)}, 9));
    const at::Tensor ka = toy.seen_kept.at(0);
    const at::Tensor b = toy.run(x, training({route(0.5, 0, 4)}, 9));
    EXPECT_TRUE(at::equal(ka, toy.seen_kept.at(0)));
    EXPECT_TRUE(at::equal(a, b));
    toy.run(x, training({route(0.5, 0, 4)}, 10));
    EXPECT_FALSE(at::equal(ka, toy.seen_kept.at(0)));
}

TEST(BlockRunnerTest, ForceKeptTokensAreAlwaysKept) {
    Toy toy;
    BlockRunOptions o = training({route(0.9, 1, 2)});
    o.force_keep = at::zeros({kB, kRoutable}, at::kBool);
    o.force_keep.select(1, 0).fill_(true);
    o.force_keep.select(1, 1).fill_(true);
    o.force_keep[1][7] = true;
    toy.run(input(), o);
    const at::Tensor k = toy.seen_kept.at(1);
    // round(12 * 0.9) = 11 dropped -> 1 kept, raised to the most force-kept tokens of a sample (3).
    ASSERT_EQ(k.size(1), 3);
    for (int64_t pos : {0, 1}) EXPECT_TRUE((k[0] == pos).any().item<bool>()) << pos;
    for (int64_t pos : {0, 1, 7}) EXPECT_TRUE((k[1] == pos).any().item<bool>()) << pos;
}

TEST(BlockRunnerTest, L1SelectionKeepsTheLargestNorms) {
    Toy toy;
    at::Tensor x = input();
    // Sample 0: rows 2, 5, 9 are large; sample 1: rows 0, 4, 11.
    x[0][2] *= 50, x[0][5] *= 40, x[0][9] *= 30, x[1][0] *= 50, x[1][4] *= 40, x[1][11] *= 30;
    toy.run(x, training({route(0.75, 0, 1, TokenRoute::Selection::l1)}));
    const at::Tensor k = toy.seen_kept.at(0);
    ASSERT_EQ(k.size(1), 3);
    EXPECT_TRUE(at::equal(k[0], at::tensor({2, 5, 9}, at::kLong)));
    EXPECT_TRUE(at::equal(k[1], at::tensor({0, 4, 11}, at::kLong)));
}

TEST(BlockRunnerTest, RoutesApplyOnlyWhileTrainingWithGradients) {
    Toy toy;
    const at::Tensor x = input();
    const at::Tensor plain = toy.run(x, training({}));
    BlockRunOptions eval = training({route(0.5, 0, 4)});
    eval.training = false;
    EXPECT_TRUE(at::equal(toy.run(x, eval), plain));
    EXPECT_TRUE(toy.seen_kept.empty());
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(toy.run(x, training({route(0.5, 0, 4)})), plain));
    EXPECT_TRUE(toy.seen_kept.empty());
}

TEST(BlockRunnerTest, TapsInsideARouteAreScatteredToTheFullGrid) {
    Toy toy;
    const at::Tensor x = input();
    BlockRunOptions o = training({route(0.5, 1, 3)});
    for (int i = 0; i < kBlocks; ++i) o.taps.push_back("blocks." + std::to_string(i) + ".out");
    st::sdk::TensorMap taps;
    const at::Tensor out = toy.run(x, o, &taps);
    const at::Tensor k = toy.seen_kept.at(1);
    for (int i = 0; i < kBlocks; ++i)
        ASSERT_EQ(taps.at("blocks." + std::to_string(i) + ".out").sizes(), x.sizes());
    EXPECT_TRUE(at::equal(taps.at("blocks.4.out"), out));
    // Inside the route, dropped tokens hold the route's input (block 0's output), kept ones moved on.
    const at::Tensor in_route = taps.at("blocks.2.out"), before = taps.at("blocks.0.out");
    for (int64_t b = 0; b < kB; ++b) {
        std::set<int64_t> kept;
        for (int64_t j = 0; j < k.size(1); ++j) kept.insert(k[b][j].item<int64_t>());
        for (int64_t t = 0; t < kN; ++t) {
            const bool same = at::equal(in_route[b][t], before[b][t]);
            EXPECT_EQ(same, t < kRoutable && !kept.count(t)) << "sample " << b << " token " << t;
        }
    }
}

TEST(BlockRunnerTest, SkippedBlocksPassThrough) {
    Toy toy;
    const at::Tensor x = input();
    BlockRunOptions o = training({});
    o.skip = {1, 3};
    at::Tensor expected = x;
    for (size_t i : {0, 2, 4}) expected = toy.block(i, expected, toy.shared, toy.per_token);
    EXPECT_TRUE(at::equal(toy.run(x, o), expected));
}

// Values and gradients (input and every block weight) of a run with `o`.
std::pair<at::Tensor, std::vector<at::Tensor>> value_and_grads(Toy& toy, const at::Tensor& x0,
                                                               BlockRunOptions o) {
    const at::Tensor x = x0.clone().requires_grad_(true);
    for (auto& w : toy.w) w.mutable_grad() = at::Tensor();
    const at::Tensor y = toy.run(x, std::move(o));
    torch::autograd::backward({(y * y).sum()});
    std::vector<at::Tensor> g{x.grad()};
    for (auto& w : toy.w) g.push_back(w.grad().defined() ? w.grad().clone() : at::zeros_like(w));
    return {y.detach(), g};
}

TEST(BlockRunnerTest, CheckpointingKeepsValuesAndGradientsWithAndWithoutRoutes) {
    Toy toy;
    const at::Tensor x = input();
    for (const auto& routes : {std::vector<TokenRoute>{}, std::vector<TokenRoute>{route(0.5, 1, 3)}}) {
        const auto plain = value_and_grads(toy, x, training(routes));
        for (int64_t interval : {1, 2}) {
            BlockRunOptions o = training(routes);
            o.checkpoint = true;
            o.checkpoint_interval = interval;
            const auto ck = value_and_grads(toy, x, o);
            EXPECT_TRUE(at::allclose(plain.first, ck.first, 1e-6, 1e-6));
            for (size_t k = 0; k < plain.second.size(); ++k)
                EXPECT_TRUE(at::allclose(plain.second[k], ck.second[k], 1e-5, 1e-6))
                    << "gradient " << k << " interval " << interval << " routes " << routes.size();
        }
    }
    // Gradients reach the weights of routed and unrouted blocks alike.
    const auto routed = value_and_grads(toy, x, training({route(0.5, 1, 3)}));
    for (size_t k = 1; k < routed.second.size(); ++k)
        EXPECT_GT(routed.second[k].abs().sum().item<double>(), 0) << k;
}

TEST(BlockRunnerTest, CheckpointedBlocksReRunWithTheForwardsRandomness) {
    // Dropout from the run's generator and from ATen's default one: the backward re-run must draw the
    // forward's masks, else the gradients belong to another function.
    Toy toy;
    toy.dropout = 0.3;
    const at::Tensor x = input();
    auto run = [&](bool checkpoint) {
        at::manual_seed(21);
        toy.gen = at::detail::createCPUGenerator(22);
        BlockRunOptions o = training({route(0.5, 1, 2)}, 23);
        o.generator = toy.gen;
        o.checkpoint = checkpoint;
        auto r = value_and_grads(toy, x, o);
        // The streams continue where the forward left them, whichever way the backward went.
        r.second.push_back(at::rand({4}, *toy.gen));
        r.second.push_back(at::rand({4}));
        return r;
    };
    const auto plain = run(false), ck = run(true);
    EXPECT_TRUE(at::allclose(plain.first, ck.first, 1e-6, 1e-6));
    for (size_t k = 0; k < plain.second.size(); ++k)
        EXPECT_TRUE(at::allclose(plain.second[k], ck.second[k], 1e-5, 1e-6)) << "entry " << k;
}

TEST(BlockRunnerTest, BadSkipsAndRoutesAreNamed) {
    Toy toy;
    const at::Tensor x = input();
    auto message = [&](BlockRunOptions o) {
        try {
            toy.run(x, o);
        } catch (const st::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    BlockRunOptions skip = training({});
    skip.skip = {5};
    EXPECT_NE(message(skip).find("skip layer 5 is out of range"), std::string::npos) << message(skip);
    EXPECT_NE(message(training({route(0.5, 3, 5)})).find("does not fit 5 blocks"), std::string::npos);
    BlockRunOptions no_gen = training({route(0.5, 0, 1)});
    no_gen.generator.reset();
    EXPECT_NE(message(no_gen).find("generator"), std::string::npos) << message(no_gen);
}

}  // namespace
