// LR schedulers against tests/golden/optim (SimpleTuner's and diffusers' code re-run in Python),
// at every step of several warmup/total combinations, including the warmup boundaries.
#include <gtest/gtest.h>

#include "optim_test_util.h"
#include "st/error.h"

namespace st::plugins::optim::test {
namespace {

sdk::LrSchedulerInit init_from(const nlohmann::json& c) {
    sdk::LrSchedulerInit init;
    init.warmup_steps = c["warmup"].get<int64_t>();
    init.total_steps = c["total"].get<int64_t>();
    init.lr_end = c["lr_end"].get<double>();
    init.power = c["power"].get<double>();
    init.config = config();
    return init;
}

TEST(LrSchedulerTest, MatchesGoldenAtEveryStep) {
    std::map<std::string, int> covered;
    for (const auto& c : golden()["schedulers"]) {
        const std::string name = c["name"];
        auto sched = make_lr_scheduler(name, init_from(c));
        const double base = c["base_lr"].get<double>();
        const auto& lrs = c["lrs"];
        for (size_t step = 0; step < lrs.size(); ++step) {
            const double expected = lrs[step].get<double>();
            // The same float64 operations in the same order: equal up to libm's last bit.
            EXPECT_NEAR(sched->lr(static_cast<int64_t>(step), base), expected,
                        1e-15 + 1e-12 * std::abs(expected))
                << name << " warmup=" << c["warmup"] << " total=" << c["total"] << " step=" << step;
        }
        ++covered[name];
    }
    for (const auto& n : lr_scheduler_names()) EXPECT_GT(covered[n], 0) << n << " has no golden case";
}

TEST(LrSchedulerTest, WarmupBoundaries) {
    sdk::LrSchedulerInit init;
    init.warmup_steps = 10;
    init.total_steps = 100;
    auto cw = make_lr_scheduler("constant_with_warmup", init);
    EXPECT_EQ(cw->lr(0, 1.0), 0.0);  // diffusers: the first update runs at lr 0
    EXPECT_DOUBLE_EQ(cw->lr(9, 1.0), 0.9);
    EXPECT_EQ(cw->lr(10, 1.0), 1.0);
    auto lin = make_lr_scheduler("linear", init);
    EXPECT_EQ(lin->lr(10, 1.0), 1.0);
    EXPECT_DOUBLE_EQ(lin->lr(55, 1.0), 0.5);
    EXPECT_EQ(lin->lr(100, 1.0), 0.0);
    EXPECT_EQ(lin->lr(150, 1.0), 0.0);
}

TEST(LrSchedulerTest, CosineUsesWarmupStepsAsHalfPeriodWithoutWarmup) {
    sdk::LrSchedulerInit init;
    init.warmup_steps = 400;  // quickstarts: lr_warmup_steps = max_train_steps
    init.total_steps = 400;
    init.lr_end = 4e-7;
    auto cos = make_lr_scheduler("cosine", init);
    EXPECT_EQ(cos->lr(0, 5e-5), floor_lr_1e9(5e-5));  // full lr at step 0: no warmup
    EXPECT_NEAR(cos->lr(200, 5e-5), (5e-5 + 4e-7) / 2, 1e-9);
    EXPECT_NEAR(cos->lr(400, 5e-5), 4e-7, 1e-9);
    EXPECT_NEAR(cos->lr(800, 5e-5), 5e-5, 1e-9);  // periodic, period 2 * T0
    init.warmup_steps = 0;                        // SimpleTuner falls back to T0 = 1000
    auto fallback = make_lr_scheduler("cosine", init);
    EXPECT_NEAR(fallback->lr(1000, 5e-5), 4e-7, 1e-9);
    // The cosine_with_warmup alias is the same scheduler.
    EXPECT_EQ(resolve_lr_scheduler_name("cosine_with_warmup"), "cosine");
}

TEST(LrSchedulerTest, FloorsToNanoPrecision) {
    EXPECT_EQ(floor_lr_1e9(1.23456789012e-4), 0.000123456);
    EXPECT_EQ(floor_lr_1e9(0.0), 0.0);
}

TEST(LrSchedulerTest, RejectsInvalidSettings) {
    sdk::LrSchedulerInit init;
    init.warmup_steps = 0;
    init.total_steps = 100;
    EXPECT_THROW(make_lr_scheduler("sine", init), st::Error);
    EXPECT_THROW(make_lr_scheduler("cosine_with_restarts", init), st::Error);
    init.warmup_steps = 100;
    EXPECT_THROW(make_lr_scheduler("polynomial", init), st::Error);  // no decay steps
    init.warmup_steps = 10;
    init.lr_end = 1e-3;
    init.config = config({{"learning_rate", 1e-4}});
    EXPECT_THROW(make_lr_scheduler("polynomial", init), st::Error);  // lr_end >= lr
    try {
        resolve_lr_scheduler_name("onecycle");
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        for (const auto& n : supported_lr_scheduler_names())
            EXPECT_NE(std::string(e.what()).find(n), std::string::npos);
    }
}

}  // namespace
}  // namespace st::plugins::optim::test
