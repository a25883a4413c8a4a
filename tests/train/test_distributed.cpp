// Data-parallel training end to end (#19), through the real st-host binary with 2 local ranks on
// loopback (Gloo): 2 ranks x batch 1 train like 1 rank x batch 2 (losses per step, timesteps, LoRA);
// torchrun launches the same run; kill -9 of one rank ends the run with a message naming it, leaves no
// process behind and the next start resumes exactly; a rank that hangs is named within
// process_group_timeout; a checkpoint resumed with another number of ranks says what changes.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <signal.h>

#include <cerrno>
#include <regex>

#include "fixtures.h"
#include "st/safetensors.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

// Largest absolute difference over the tensors of two safetensors files (same names required).
double max_difference(const fs::path& a, const fs::path& b) {
    auto fa = st::sdk::SafetensorsFile::open(a);
    auto fb = st::sdk::SafetensorsFile::open(b);
    EXPECT_EQ(fa->infos().size(), fb->infos().size());
    double d = 0;
    for (const auto& info : fa->infos()) {
        EXPECT_TRUE(fb->contains(info.name)) << info.name;
        if (!fb->contains(info.name)) return 1e9;
        d = std::max(d, (fa->load(info.name) - fb->load(info.name)).abs().max().item<double>());
    }
    return d;
}

std::vector<nlohmann::json> steps_of(const fs::path& metrics) {
    std::vector<nlohmann::json> out;
    for (auto& l : st_test::read_jsonl(metrics))
        if (l.contains("timesteps")) out.push_back(l);
    return out;
}

// The settings both sides share: every random stream that can be identical (caption dropout, noise,
// sigmas), accumulation over two micro-batches, an optimizer with state.
nlohmann::json dp_settings(int batch, int steps) {
    return {{"train_batch_size", batch},
            {"max_train_steps", steps},
            {"lora_dropout", 0.0},
            {"caption_dropout_probability", 0.3},
            {"gradient_accumulation_steps", 2},
            {"checkpoint_step_interval", 2},
            {"checkpoints_total_limit", 2},
            {"optimizer", "adamw"},
            {"learning_rate", 1e-3}};
}

int pid_of_rank(const std::string& log, int rank) {
    std::smatch m;
    const std::regex re("rank " + std::to_string(rank) + " is pid ([0-9]+)");
    return std::regex_search(log, m, re) ? std::stoi(m[1]) : -1;
}

bool process_gone(int pid) {
    if (pid <= 0) return false;
    if (::kill(pid, 0) == 0) {
        // A zombie is gone for our purpose only once reaped; /proc/PID/stat says Z.
        const std::string stat = st_test::read_text("/proc/" + std::to_string(pid) + "/stat");
        return stat.find(") Z ") != std::string::npos;
    }
    return errno == ESRCH;
}

void expect_same_losses(const fs::path& a, const fs::path& b) {
    const auto la = steps_of(a / "metrics.jsonl"), lb = steps_of(b / "metrics.jsonl");
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) {
        EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(),
                    1e-5 * std::abs(la[i]["loss"].get<double>()))
            << "step " << i + 1;
        EXPECT_EQ(la[i]["timesteps"], lb[i]["timesteps"]) << "step " << i + 1;
        EXPECT_EQ(la[i]["samples"], lb[i]["samples"]) << "step " << i + 1;
        EXPECT_EQ(la[i]["captions_dropped"], lb[i]["captions_dropped"]) << "step " << i + 1;
    }
}

TEST(DistributedTest, TwoRanksOfBatchOneTrainLikeOneRankOfBatchTwo) {
    auto& env = TrainEnv::get();
    auto one = env.run(env.config("dp_one", dp_settings(2, 6)));
    ASSERT_EQ(one.code, 0) << one.log;
    auto two = env.run(env.config("dp_two", dp_settings(1, 6)), "--nproc_per_node 2");
    ASSERT_EQ(two.code, 0) << two.log;
    EXPECT_NE(two.log.find("all 2 rank(s) finished"), std::string::npos) << two.log;
    EXPECT_NE(two.log.find("global batch: 2 ranks x train_batch_size 1 = 2"), std::string::npos) << two.log;
    // Rank 1 logs warnings only; rank 0 alone writes metrics.
    EXPECT_EQ(two.log.find("INFO  [rank 1]"), std::string::npos) << two.log;
    expect_same_losses(env.root / "dp_one", env.root / "dp_two");
    const auto lines = steps_of(env.root / "dp_two" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 6u);
    EXPECT_EQ(lines[0]["world_size"], 2);
    EXPECT_GE(lines[0]["time"]["allreduce"].get<double>(), 0.0);
    const double d = max_difference(env.root / "dp_one" / "pytorch_lora_weights.safetensors",
                                    env.root / "dp_two" / "pytorch_lora_weights.safetensors");
    EXPECT_LT(d, 1e-5) << "LoRA of 2 ranks x batch 1 vs 1 rank x batch 2";
    // The checkpoint's optimizer state agrees too.
    EXPECT_LT(max_difference(env.root / "dp_one" / "checkpoint-6" / "optimizer.safetensors",
                             env.root / "dp_two" / "checkpoint-6" / "optimizer.safetensors"),
              1e-5);
}

TEST(DistributedTest, CachingIsSplitOverTheRanksAndNothingIsEncodedTwice) {
    auto& env = TrainEnv::get();
    nlohmann::json s = dp_settings(1, 2);
    s["data_backend_config"] = env.write_datasets("mdb_split.json", "cache_split").string();
    auto r = env.run(env.config("dp_split", s), "--nproc_per_node 2", "ST_LOG_ALL_RANKS=1 ");
    ASSERT_EQ(r.code, 0) << r.log;
    for (const char* line :
         {"[rank 0] [data.local.cache] latents: 0 cached, 4 to encode (this rank's share of the caching: 1 "
          "of 2)",
          "[rank 1] [data.local.cache] latents: 0 cached, 4 to encode (this rank's share of the caching: 2 "
          "of 2)",
          "[rank 0] [data.local.cache] text embeddings: 8 captions, 4 to encode (this rank's share",
          "[rank 1] [data.local.cache] text embeddings: 8 captions, 4 to encode (this rank's share",
          "[rank 0] [data.local.cache] latents: 8 cached, 0 to encode",
          "[rank 1] [data.local.cache] latents: 8 cached, 0 to encode",
          "[rank 1] [data.local.cache] text embeddings: 8 captions, 0 to encode"})
        EXPECT_NE(r.log.find(line), std::string::npos) << line << "\n" << r.log;
}

int files_with_extension(const fs::path& dir, const std::string& ext) {
    int n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().extension() == ext ? 1 : 0;
    return n;
}

TEST(DistributedTest, RankZerosHooksStopSaveAndScaleTheLearningRateOfEveryRank) {
    // Lua runs on rank 0 only; its lr scale, checkpoint and stop reach rank 1 at the same step, so the
    // 2-rank run still equals the 1-rank run with the same hooks. Rank 0 alone validates.
    auto& env = TrainEnv::get();
    const fs::path script = env.root / "dp_hooks.lua";
    st_test::write_text(script, R"(
st.on("on_step_end", function(ev)
  if ev.step == 2 then st.set_lr_scale(0.25) end
  if ev.step == 3 then st.save_checkpoint() end
  if ev.step == 5 then st.stop("enough") end
end)
)");
    auto settings = [&](int batch) {
        nlohmann::json s = dp_settings(batch, 10);
        s["checkpoint_step_interval"] = 100;
        s["checkpoints_total_limit"] = 5;
        s["lua_hooks"] = script.string();
        s["validation_step_interval"] = 4;
        s["validation_prompt"] = "a test pattern";
        s["validation_num_video_frames"] = 5;
        s["validation_resolution"] = "32x32";
        s["validation_num_inference_steps"] = 2;
        return s;
    };
    auto one = env.run(env.config("dp_hooks_one", settings(2)));
    ASSERT_EQ(one.code, 0) << one.log;
    auto two = env.run(env.config("dp_hooks_two", settings(1)), "--nproc_per_node 2");
    ASSERT_EQ(two.code, 0) << two.log;
    EXPECT_EQ(two.log.find("Lua hooks loaded", two.log.find("[rank 1]")), std::string::npos)
        << "rank 1 loaded the hooks";
    ASSERT_EQ(steps_of(env.root / "dp_hooks_two" / "metrics.jsonl").size(), 5u);
    expect_same_losses(env.root / "dp_hooks_one", env.root / "dp_hooks_two");
    for (const char* ck : {"checkpoint-3", "checkpoint-5"})
        EXPECT_LT(max_difference(env.root / "dp_hooks_one" / ck / "pytorch_lora_weights.safetensors",
                                 env.root / "dp_hooks_two" / ck / "pytorch_lora_weights.safetensors"),
                  1e-5)
            << ck;
    EXPECT_EQ(files_with_extension(env.root / "dp_hooks_two", ".mp4"),
              files_with_extension(env.root / "dp_hooks_one", ".mp4"));
    EXPECT_GT(files_with_extension(env.root / "dp_hooks_two", ".mp4"), 0);
}

TEST(DistributedTest, TorchrunLaunchesTheSameRun) {
    if (st_test::shell("command -v torchrun").code != 0)
        GTEST_SKIP() << "torchrun (python3-torch) is not installed";
    auto& env = TrainEnv::get();
    auto two = env.run(env.config("dp_ref", dp_settings(1, 4)), "--nproc_per_node 2");
    ASSERT_EQ(two.code, 0) << two.log;
    // Debian's torchrun 1.13 under Python 3.11 cannot parse the default --redirects 0: 1 works.
    const std::string cmd =
        std::string("ST_PLUGIN_PATH= torchrun --nproc_per_node 2 --redirects 1 --tee 1 --log_dir '") +
        (env.root / "torchrun-logs").string() + "' --no_python " + ST_HOST_EXE +
        " --no-install-plugins --plugin-dir '" + ST_TEST_PLUGIN_DIR + "' '" +
        env.config("dp_torchrun", dp_settings(1, 4)).string() + "'";
    const auto tr = st_test::shell(cmd);
    ASSERT_EQ(tr.code, 0) << tr.out;
    EXPECT_NE(tr.out.find("torchrun's store"), std::string::npos) << tr.out;
    expect_same_losses(env.root / "dp_ref", env.root / "dp_torchrun");
    EXPECT_LT(max_difference(env.root / "dp_ref" / "pytorch_lora_weights.safetensors",
                             env.root / "dp_torchrun" / "pytorch_lora_weights.safetensors"),
              1e-5);
}

TEST(DistributedTest, KillNineOfOneRankEndsTheRunAndTheNextStartResumesExactly) {
    auto& env = TrainEnv::get();
    const auto cfg = env.config("dp_kill", dp_settings(1, 100000));
    const fs::path log = env.root / "dp_kill.log";
    const pid_t launcher = env.spawn(cfg, log, "--nproc_per_node 2");
    ASSERT_GE(TrainEnv::wait_for_steps(env.root / "dp_kill" / "metrics.jsonl", 5), 5u);
    const std::string before = st_test::read_text(log);
    const int rank0 = pid_of_rank(before, 0), rank1 = pid_of_rank(before, 1);
    ASSERT_GT(rank1, 0) << before;
    ::kill(rank1, SIGKILL);
    const auto t0 = std::chrono::steady_clock::now();
    const int code = TrainEnv::wait_exit(launcher);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
    const std::string text = st_test::read_text(log);
    EXPECT_NE(code, 0) << text;
    EXPECT_NE(text.find("rank 1 (pid " + std::to_string(rank1) + ") was killed by signal 9"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("rank 1 last reported step"), std::string::npos) << text;
    EXPECT_TRUE(process_gone(rank0)) << "rank 0 is still running";
    EXPECT_TRUE(process_gone(rank1));
    // The next start resumes from the newest checkpoint and ends where a run that was never killed ends.
    auto resumed = env.run(cfg, "--nproc_per_node 2 --max_train_steps 14");
    ASSERT_EQ(resumed.code, 0) << resumed.log;
    EXPECT_NE(resumed.log.find("resumed from"), std::string::npos) << resumed.log;
    auto straight = env.run(env.config("dp_kill_ref", dp_settings(1, 14)), "--nproc_per_node 2");
    ASSERT_EQ(straight.code, 0) << straight.log;
    EXPECT_EQ(max_difference(env.root / "dp_kill" / "pytorch_lora_weights.safetensors",
                             env.root / "dp_kill_ref" / "pytorch_lora_weights.safetensors"),
              0.0);
}

TEST(DistributedTest, ARankThatHangsIsNamedWithinTheTimeout) {
    auto& env = TrainEnv::get();
    nlohmann::json s = dp_settings(1, 100000);
    s["process_group_timeout"] = 4;
    const auto cfg = env.config("dp_hang", s);
    const fs::path log = env.root / "dp_hang.log";
    const pid_t launcher = env.spawn(cfg, log, "--nproc_per_node 2");
    ASSERT_GE(TrainEnv::wait_for_steps(env.root / "dp_hang" / "metrics.jsonl", 3), 3u);
    const int rank1 = pid_of_rank(st_test::read_text(log), 1);
    ASSERT_GT(rank1, 0);
    ::kill(rank1, SIGSTOP);
    const auto t0 = std::chrono::steady_clock::now();
    const int code = TrainEnv::wait_exit(launcher);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string text = st_test::read_text(log);
    EXPECT_NE(code, 0) << text;
    EXPECT_LT(took, 4 + 4 + 20.0) << "timeout 4 s + SIGKILL grace 4 s";
    EXPECT_NE(text.find("process_group_timeout 4 s"), std::string::npos) << text;
    EXPECT_NE(text.find("rank 1 last reported step"), std::string::npos) << text;
    EXPECT_TRUE(process_gone(rank1)) << "the hung rank was left behind";
    // Nothing half-written: every checkpoint left is complete and resumable.
    auto resumed = env.run(cfg, "--nproc_per_node 2 --max_train_steps 8");
    EXPECT_EQ(resumed.code, 0) << resumed.log;
}

TEST(DistributedTest, AnotherNumberOfRanksResumesWithALineAboutWhatChanges) {
    auto& env = TrainEnv::get();
    auto two = env.run(env.config("dp_resize", dp_settings(1, 4)), "--nproc_per_node 2");
    ASSERT_EQ(two.code, 0) << two.log;
    auto one = env.run(env.config("dp_resize", dp_settings(1, 6)));
    ASSERT_EQ(one.code, 0) << one.log;
    EXPECT_NE(one.log.find("was written by 2 rank(s) (global batch 2); this run has 1 (global batch 1"),
              std::string::npos)
        << one.log;
}

TEST(DistributedTest, NumProcessesFromSimpleTunerStartsTheRanks) {
    auto& env = TrainEnv::get();
    nlohmann::json s = dp_settings(1, 2);
    s["num_processes"] = 2;
    auto r = env.run(env.config("dp_numproc", s));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("num_processes / num_machines"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("all 2 rank(s) finished"), std::string::npos) << r.log;
}

}  // namespace
