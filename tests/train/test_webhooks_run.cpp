// Webhooks of a training run, received by a local HTTP server (tests/train/record_http.py): the start,
// every checkpoint, each validation with its videos inline (raw payload, base64), and the end; a
// webhook target that refuses connections is logged and never stops training.
#include <gtest/gtest.h>

#include "fixtures.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

struct Receiver {
    pid_t pid = -1;
    int port = 0;
    fs::path log;
    explicit Receiver(const fs::path& dir) {
        fs::create_directories(dir);
        const fs::path port_file = dir / "port";
        log = dir / "requests.jsonl";
        fs::remove(port_file);
        pid = ::fork();
        if (pid == 0) {
            const std::string script = std::string(ST_TEST_SOURCE_DIR) + "/tests/train/record_http.py";
            ::execl("/usr/bin/python3", "python3", script.c_str(), port_file.c_str(), log.c_str(),
                    static_cast<char*>(nullptr));
            ::_exit(127);
        }
        for (int i = 0; i < 500 && !fs::exists(port_file); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        port = std::stoi(st_test::read_text(port_file));
    }
    ~Receiver() {
        ::kill(pid, SIGKILL);
        TrainEnv::wait_exit(pid);
    }
    std::vector<nlohmann::json> payloads() const {
        std::vector<nlohmann::json> out;
        if (!fs::exists(log)) return out;
        for (const auto& r : st_test::read_jsonl(log))
            out.push_back(nlohmann::json::parse(r["body"].get<std::string>()));
        return out;
    }
};

TEST(RunWebhookTest, RunEventsAndValidationVideosReachARawTarget) {
    auto& env = TrainEnv::get();
    Receiver rx(env.root / "receiver");
    const std::string url = "http://127.0.0.1:" + std::to_string(rx.port) + "/hook";
    auto r =
        env.run(env.config("hooked", {{"max_train_steps", 4},
                                      {"checkpoint_step_interval", 2},
                                      {"validation_step_interval", 4},
                                      {"validation_prompt", "a test pattern"},
                                      {"validation_num_video_frames", 5},
                                      {"validation_resolution", "32x32"},
                                      {"validation_num_inference_steps", 2},
                                      {"webhook_config", {{"webhook_type", "raw"}, {"callback_url", url}}}}));
    ASSERT_EQ(r.code, 0) << r.log;
    const auto p = rx.payloads();
    std::vector<std::string> types;
    for (const auto& j : p) types.push_back(j.value("type", ""));
    auto count = [&](const std::string& t) { return std::count(types.begin(), types.end(), t); };
    EXPECT_EQ(count("training.status"), 2) << r.log;      // start and end
    EXPECT_EQ(count("training.checkpoint"), 2) << r.log;  // steps 2 and 4
    ASSERT_EQ(count("validation"), 1) << r.log;
    for (const auto& j : p) {
        EXPECT_EQ(j.value("job_id", ""), "hooked");
        if (j["type"] == "validation") {
            ASSERT_TRUE(j.contains("videos")) << j.dump().substr(0, 500);
            EXPECT_FALSE(j["videos"].empty());
            EXPECT_EQ(j["data"]["step"], 4);
        }
    }
    EXPECT_EQ(types.front(), "training.status");
    EXPECT_EQ(types.back(), "training.status");
}

TEST(RunWebhookTest, ARunThatCannotStartTellsTheWebhookWhy) {
    // Skip layer 9 on the 2-block model failed after training with exit 1 and no webhook; now it fails
    // at start and the webhook gets the error.
    auto& env = TrainEnv::get();
    Receiver rx(env.root / "receiver_fail");
    const std::string url = "http://127.0.0.1:" + std::to_string(rx.port) + "/hook";
    auto r = env.run(
        env.config("hooked_fail", {{"max_train_steps", 2},
                                   {"validation_prompt", "a test pattern"},
                                   {"validation_guidance", 5.0},
                                   {"validation_guidance_skip_layers", {9}},
                                   {"webhook_config", {{"webhook_type", "raw"}, {"callback_url", url}}}}));
    EXPECT_EQ(r.code, 1) << r.log;
    bool told = false;
    for (const auto& j : rx.payloads())
        if (j.value("type", "") == "error" &&
            j.dump().find("validation_guidance_skip_layers = [9]: block 9 does not exist") !=
                std::string::npos)
            told = true;
    EXPECT_TRUE(told) << r.log;
}

TEST(RunWebhookTest, AnUnreachableTargetNeverStopsTraining) {
    auto& env = TrainEnv::get();
    // Port 9 (discard) on the loopback: nothing listens, the connection is refused.
    auto r = env.run(env.config(
        "unreachable",
        {{"max_train_steps", 3},
         {"webhook_config", {{"webhook_type", "raw"}, {"callback_url", "http://127.0.0.1:9/x"}}}}));
    EXPECT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("127.0.0.1:9"), std::string::npos) << r.log;
    EXPECT_EQ(st_test::read_jsonl(env.root / "unreachable" / "metrics.jsonl").size(), 3u);
}

}  // namespace
