// Validation during training (#23): a long render shows its sampling progress, and a Ctrl-C while it
// renders stops it at the next sampling step; the run then saves a checkpoint and exits cleanly
// (it used to render to the end first: S2V at the quickstart size ran 5+ minutes after the Ctrl-C).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "fixtures.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

TEST(ValidationStopTest, CtrlCDuringAValidationStopsItSavesAndExits) {
    auto& env = TrainEnv::get();
    // 10000 sampling steps would render for minutes; the stop must not wait for them.
    const auto cfg = env.config("valstop", {{"max_train_steps", 100},
                                            {"checkpoint_step_interval", 1000},
                                            {"validation_step_interval", 2},
                                            {"validation_prompt", "a test pattern"},
                                            {"validation_num_video_frames", 5},
                                            {"validation_resolution", "32x32"},
                                            {"validation_num_inference_steps", 10000}});
    const fs::path log_file = env.root / "valstop.log";
    const pid_t pid = env.spawn(cfg, log_file);
    ASSERT_GE(TrainEnv::wait_for_steps(env.root / "valstop" / "metrics.jsonl", 2), 2u)
        << st_test::read_text(log_file);
    std::this_thread::sleep_for(std::chrono::seconds(2));  // well inside the render
    const auto sent = std::chrono::steady_clock::now();
    ::kill(pid, SIGINT);
    const int code = TrainEnv::wait_exit(pid);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
    const std::string log = st_test::read_text(log_file);
    ASSERT_EQ(code, 0) << log;
    EXPECT_LT(seconds, 60.0) << log;
    EXPECT_NE(log.find("step 2: validation interrupted by the stop request (sampling stopped before step"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("validation 'validation' 32x32"), std::string::npos) << log;  // its progress line
    EXPECT_NE(log.find("SIGINT received"), std::string::npos) << log;
    EXPECT_TRUE(fs::exists(env.root / "valstop" / "checkpoint-2")) << log;
    EXPECT_FALSE(fs::exists(env.root / "valstop" / "validation" / "step_2_validation.mp4"));
}

}  // namespace
