// Data-parallel pieces in one process: the launcher variables (RANK, WORLD_SIZE, ... as torchrun sets
// them), SimpleTuner's GPU-count keys, and the gradient reducer with two ranks on threads over a real
// Gloo group on loopback: bucketed averages equal the mean of the ranks' gradients, with buckets sent
// during backward, local accumulation on unarmed micro-steps, and an epoch that ends early.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>
#include <functional>
#include <thread>

#include "dist/collectives.h"
#include "dist/dist_env.h"
#include "dist/grad_reducer.h"
#include "dist/launch_config.h"
#include "dist/launcher.h"
#include "st/error.h"

namespace {

using namespace st::host::dist;
using Env = std::map<std::string, std::string>;

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

TEST(DistEnvTest, NoWorldSizeIsOneProcessAndTorchrunsVariablesAreRead) {
    Env none;
    EXPECT_FALSE(read_dist_env(&none).launched());
    Env tr{{"WORLD_SIZE", "4"},
           {"RANK", "3"},
           {"LOCAL_RANK", "1"},
           {"LOCAL_WORLD_SIZE", "2"},
           {"MASTER_ADDR", "10.0.0.1"},
           {"MASTER_PORT", "29400"},
           {"TORCHELASTIC_USE_AGENT_STORE", "True"},
           {"TORCHELASTIC_RESTART_COUNT", "2"}};
    const DistEnv d = read_dist_env(&tr);
    EXPECT_TRUE(d.launched());
    EXPECT_EQ(d.rank, 3);
    EXPECT_EQ(d.world_size, 4);
    EXPECT_EQ(d.local_rank, 1);
    EXPECT_EQ(d.local_world_size, 2);
    EXPECT_EQ(d.master_addr, "10.0.0.1");
    EXPECT_EQ(d.master_port, 29400);
    EXPECT_TRUE(d.agent_store);
    EXPECT_EQ(d.store_prefix, "/worker/attempt_2");
}

TEST(DistEnvTest, BadVariablesAreNamed) {
    Env e{{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}};
    EXPECT_NE(error_of([&] { read_dist_env(&e); }).find("RANK='2' is not a whole number in [0, 1]"),
              std::string::npos);
    e["RANK"] = "1";
    e["MASTER_PORT"] = "70000";
    EXPECT_NE(error_of([&] { read_dist_env(&e); }).find("MASTER_PORT"), std::string::npos);
    e.erase("MASTER_PORT");
    EXPECT_NE(error_of([&] { read_dist_env(&e); }).find("MASTER_PORT is not"), std::string::npos);
    Env w{{"WORLD_SIZE", "two"}};
    EXPECT_NE(error_of([&] { read_dist_env(&w); }).find("WORLD_SIZE='two'"), std::string::npos);
    Env r{{"WORLD_SIZE", "2"}};
    EXPECT_NE(error_of([&] { read_dist_env(&r); }).find("RANK is not"), std::string::npos);
}

st::sdk::ConfigView view(nlohmann::json j) {
    return st::sdk::ConfigView(std::make_shared<const nlohmann::json>(std::move(j)));
}

TEST(LaunchConfigTest, SimpleTunersKeysGiveRanksPerMachine) {
    EXPECT_EQ(read_launch_config(view({})).world_size(), 1);
    const auto a = read_launch_config(view({{"num_processes", 4},
                                            {"num_machines", 2},
                                            {"machine_rank", 1},
                                            {"main_process_ip", "10.1.1.1"},
                                            {"main_process_port", 1234}}));
    EXPECT_EQ(a.nproc_per_node, 2);
    EXPECT_EQ(a.world_size(), 4);
    EXPECT_EQ(a.master_addr, "10.1.1.1");
    EXPECT_EQ(a.master_port, 1234);
    EXPECT_EQ(read_launch_config(view({{"nproc_per_node", 3}})).nproc_per_node, 3);
    EXPECT_EQ(read_launch_config(view({{"process_group_timeout", 7}})).timeout_s, 7);
    EXPECT_NE(
        error_of([] {
            read_launch_config(view({{"num_processes", 3}, {"num_machines", 2}, {"main_process_ip", "h"}}));
        }).find("num_processes 3 is not a multiple of num_machines 2"),
        std::string::npos);
    EXPECT_NE(error_of([] {
                  read_launch_config(view({{"num_processes", 4}, {"nproc_per_node", 3}}));
              }).find("num_processes says 4"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  read_launch_config(view({{"num_machines", 2}}));
              }).find("main_process_ip"),
              std::string::npos);
    EXPECT_NE(
        error_of([] {
            read_launch_config(view({{"num_machines", 2}, {"machine_rank", 2}, {"main_process_ip", "h"}}));
        }).find("machine_rank 2 must be below num_machines 2"),
        std::string::npos);
}

// Runs f(rank, collectives) on `world` threads that form one Gloo group on loopback.
void on_ranks(int world, const std::function<void(int, Collectives&)>& f) {
    const int port = free_port();
    std::vector<std::thread> threads;
    std::vector<std::string> errors(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r)
        threads.emplace_back([&, r] {
            try {
                DistEnv env;
                env.rank = r;
                env.world_size = world;
                env.local_rank = r;
                env.local_world_size = world;
                env.master_addr = "127.0.0.1";
                env.master_port = port;
                Collectives c(env, std::chrono::seconds(20));
                f(r, c);
            } catch (const std::exception& e) {
                errors[static_cast<size_t>(r)] = e.what();
            }
        });
    for (auto& t : threads) t.join();
    for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

// A small network whose parameters differ in size; the loss depends on the rank's input.
struct Net {
    std::vector<at::Tensor> params;
    std::vector<std::string> names;
    Net() {
        at::Generator g =
            at::make_generator<at::CPUGeneratorImpl>(0);  // not the global one: ranks are threads
        for (int i = 0; i < 5; ++i) {
            params.push_back(at::randn({8 + i, 8 + i + 1}, g).requires_grad_(true));
            names.push_back("w" + std::to_string(i));
        }
    }
    at::Tensor loss(double x) const {
        at::Tensor h = at::full({1, 8}, x);
        for (const auto& p : params) {
            h = at::tanh(h.matmul(p.narrow(0, 0, h.size(1))));
        }
        return h.pow(2).sum();
    }
};

TEST(GradReducerTest, AveragesAreTheMeanOfTheRanksGradientsWithBucketsSentDuringBackward) {
    // Reference: the mean of the two ranks' gradients (each a sum over 2 micro-steps), in one process.
    std::vector<at::Tensor> expected;
    {
        Net n;
        for (int r = 0; r < 2; ++r)
            for (int m = 0; m < 2; ++m) n.loss(0.1 + r + 0.5 * m).backward();
        for (auto& p : n.params) expected.push_back(p.grad() / 2);
    }
    std::vector<std::vector<at::Tensor>> got(2);
    std::vector<ReduceTiming> timing(2);
    on_ranks(2, [&](int rank, Collectives& c) {
        Net n;
        // ~2 parameters per bucket: several buckets, most sent from the hooks.
        GradReducer red(c, n.params, n.names, 4 * 200);
        EXPECT_GT(red.bucket_count(), 2);
        red.arm(false);
        n.loss(0.1 + rank).backward();  // accumulates locally
        red.arm(true);
        n.loss(0.1 + rank + 0.5).backward();
        timing[static_cast<size_t>(rank)] = red.finish();
        for (auto& p : n.params) got[static_cast<size_t>(rank)].push_back(p.grad().clone());
    });
    for (int r = 0; r < 2; ++r) {
        ASSERT_EQ(got[static_cast<size_t>(r)].size(), expected.size());
        for (size_t i = 0; i < expected.size(); ++i)
            EXPECT_TRUE(at::allclose(got[static_cast<size_t>(r)][i], expected[i], 1e-5, 1e-6))
                << "rank " << r << " w" << i;
        EXPECT_GT(timing[static_cast<size_t>(r)].overlapped, 0) << "no bucket was sent during backward";
        EXPECT_EQ(timing[static_cast<size_t>(r)].buckets, timing[0].buckets);
    }
}

TEST(GradReducerTest, AStepWhoseLastMicroStepWasNotArmedIsReducedInFinish) {
    // An epoch that ends before the accumulation is complete: finish() sends every bucket itself.
    std::vector<std::vector<at::Tensor>> got(2);
    std::vector<at::Tensor> expected;
    {
        Net n;
        n.loss(1.0).backward();
        n.loss(2.0).backward();
        for (auto& p : n.params) expected.push_back(p.grad() / 2);
    }
    on_ranks(2, [&](int rank, Collectives& c) {
        Net n;
        GradReducer red(c, n.params, n.names, 1 << 20);
        red.arm(false);
        n.loss(rank == 0 ? 1.0 : 2.0).backward();
        const ReduceTiming t = red.finish();
        EXPECT_EQ(t.overlapped, 0);
        for (auto& p : n.params) got[static_cast<size_t>(rank)].push_back(p.grad().clone());
    });
    for (int r = 0; r < 2; ++r)
        for (size_t i = 0; i < expected.size(); ++i)
            EXPECT_TRUE(at::allclose(got[static_cast<size_t>(r)][i], expected[i], 1e-5, 1e-6));
}

TEST(CollectivesTest, BroadcastMaxAndTheStepEachRankReported) {
    on_ranks(2, [&](int rank, Collectives& c) {
        at::Tensor t = at::full({3}, static_cast<double>(rank + 1), at::kDouble);
        c.broadcast(t, 0, "test broadcast");
        EXPECT_EQ(t[2].item<double>(), 1.0);
        at::Tensor m = at::full({1}, static_cast<double>(rank * 10), at::kDouble);
        c.all_reduce_max(m, "test max");
        EXPECT_EQ(m[0].item<double>(), 10.0);
        c.report_step(5 + rank);
        c.barrier("test barrier");
        const std::string d = c.describe_ranks();
        EXPECT_NE(d.find(rank == 0 ? "rank 1 last reported step 6" : "rank 0 last reported step 5"),
                  std::string::npos)
            << d;
        c.barrier("test barrier 2");
    });
}

// Ulysses sequence parallelism, simulated with 2 ranks: each rank holds a slice of the tokens of q,
// k and v for every head; one all-to-all gives each rank every token of its share of the heads, plain
// attention runs per head, and a second all-to-all returns each rank its tokens for every head. The
// result equals the full attention's rows of that rank (docs/distributed.md, "Context parallel").
TEST(CollectivesTest, UlyssesAllToAllAttentionEqualsFullAttention) {
    const int64_t world = 2, S = 12, H = 4, D = 8;
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
    const at::Tensor q = at::randn({S, H, D}, g), k = at::randn({S, H, D}, g), v = at::randn({S, H, D}, g);
    auto attention = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {  // [S, h, D]
        const at::Tensor qh = q.transpose(0, 1), kh = k.transpose(0, 1), vh = v.transpose(0, 1);
        const at::Tensor w = at::softmax(qh.matmul(kh.transpose(1, 2)) / std::sqrt(double(q.size(2))), -1);
        return w.matmul(vh).transpose(0, 1).contiguous();
    };
    const at::Tensor full = attention(q, k, v);
    std::vector<at::Tensor> got(world);
    on_ranks(static_cast<int>(world), [&](int rank, Collectives& c) {
        const int64_t s = S / world, h = H / world;
        // tokens [rank*s, (rank+1)*s) of every head -> every token of heads [rank*h, (rank+1)*h)
        auto to_heads = [&](const at::Tensor& x) {
            const at::Tensor mine = x.narrow(0, rank * s, s);                                // [s, H, D]
            at::Tensor in = mine.view({s, world, h, D}).permute({1, 0, 2, 3}).contiguous();  // by head group
            at::Tensor out = at::empty_like(in);
            c.all_to_all(out, in, "ulysses q/k/v");
            return out.view({S, h, D});  // chunk i = rank i's tokens: token order
        };
        const at::Tensor o = attention(to_heads(q), to_heads(k), to_heads(v));  // [S, h, D]
        at::Tensor back_in = o.view({world, s, h, D}).contiguous();             // chunk i -> rank i
        at::Tensor back = at::empty_like(back_in);
        c.all_to_all(back, back_in, "ulysses output");
        got[static_cast<size_t>(rank)] = back.permute({1, 0, 2, 3}).reshape({s, H, D});  // heads of group j
    });
    for (int64_t r = 0; r < world; ++r)
        EXPECT_TRUE(
            at::allclose(got[static_cast<size_t>(r)], full.narrow(0, r * (S / world), S / world), 1e-5, 1e-6))
            << "rank " << r;
}

}  // namespace
