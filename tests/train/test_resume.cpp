// Never losing work: a run stopped at step N and resumed reaches bit-identical weights, optimizer
// and EMA state at step M as an uninterrupted run (CPU); SIGINT finishes the step and checkpoints;
// kill -9 loses at most the steps since the last checkpoint and leaves no checkpoint that resume
// would trust half-written; a checkpoint that cannot be written (file size limit = disk full) leaves
// the previous one intact and the messages name the checkpoint that really is on disk; non-finite
// losses are skipped, named and stop the run after the limit; non-finite weights are never saved; a
// checkpoint damaged after it was written is found by its checksums and not resumed; pruning to
// checkpoints_total_limit also happens before training.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <tuple>

#include "fixtures.h"
#include "st/safetensors.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

// Bit-for-bit equality of every tensor of two safetensors files.
void expect_same_tensors(const fs::path& a, const fs::path& b) {
    auto fa = st::sdk::SafetensorsFile::open(a);
    auto fb = st::sdk::SafetensorsFile::open(b);
    ASSERT_EQ(fa->infos().size(), fb->infos().size()) << a << " vs " << b;
    for (const auto& info : fa->infos()) {
        ASSERT_TRUE(fb->contains(info.name)) << info.name;
        EXPECT_TRUE(fa->load(info.name).equal(fb->load(info.name)))
            << info.name << " differs: " << a << " vs " << b;
    }
}

// Writes a float32 NaN over the first value of the first F32 tensor of a safetensors file (its size
// stays the same).
void write_nan_into(const fs::path& file) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    uint64_t header_len = 0;
    f.read(reinterpret_cast<char*>(&header_len), 8);
    std::string header(header_len, '\0');
    f.read(header.data(), static_cast<std::streamsize>(header_len));
    const auto tensors = nlohmann::json::parse(header);
    for (const auto& [name, info] : tensors.items()) {
        if (name == "__metadata__" || info["dtype"] != "F32") continue;
        f.seekp(static_cast<std::streamoff>(8 + header_len + info["data_offsets"][0].get<uint64_t>()));
        f.write("\x00\x00\xc0\x7f", 4);
        return;
    }
    FAIL() << "no F32 tensor in " << file;
}

// Non-finite values in all tensors of a safetensors file.
int64_t nonfinite_in(const fs::path& file) {
    auto f = st::sdk::SafetensorsFile::open(file);
    int64_t n = 0;
    for (const auto& info : f->infos())
        n += at::isfinite(f->load(info.name)).logical_not().sum().item<int64_t>();
    return n;
}

// Training steps recorded in a metrics.jsonl (evaluation lines left out).
int steps_in(const fs::path& metrics) {
    int n = 0;
    for (const auto& l : st_test::read_jsonl(metrics)) n += l.contains("timesteps") ? 1 : 0;
    return n;
}

// Settings that use every random stream: LoRA dropout (global generator), caption dropout, noise,
// sigmas, accumulation across an epoch end, EMA.
nlohmann::json resume_settings(int steps) {
    return {{"max_train_steps", steps},
            {"lora_dropout", 0.1},
            {"caption_dropout_probability", 0.3},
            {"gradient_accumulation_steps", 3},
            {"use_ema", true},
            {"checkpoint_step_interval", 3},
            {"lr_scheduler", "cosine"},
            {"lr_warmup_steps", 12},
            {"optimizer", "optimi-lion"},
            {"learning_rate", 1e-3},
            {"eval_steps_interval", 4},
            {"validation_step_interval", 5},
            {"validation_prompt", "a test pattern"},
            {"validation_num_video_frames", 5},
            {"validation_resolution", "32x32"},
            {"validation_num_inference_steps", 2},
            {"eval_timesteps", 3},
            {"num_eval_images", 2}};
}

void expect_same_run(const fs::path& a, const fs::path& b, int step) {
    expect_same_tensors(a / "pytorch_lora_weights.safetensors", b / "pytorch_lora_weights.safetensors");
    expect_same_tensors(a / "ema" / "pytorch_lora_weights.safetensors",
                        b / "ema" / "pytorch_lora_weights.safetensors");
    const std::string ck = "checkpoint-" + std::to_string(step);
    expect_same_tensors(a / ck / "optimizer.safetensors", b / ck / "optimizer.safetensors");
    // Step and evaluation lines (validation lines differ: a run that ended at the stop validated there).
    auto read = [](const fs::path& p) {
        std::vector<nlohmann::json> out;
        for (auto& l : st_test::read_jsonl(p))
            if (!l.contains("validation")) out.push_back(l);
        return out;
    };
    const auto la = read(a / "metrics.jsonl"), lb = read(b / "metrics.jsonl");
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) {
        EXPECT_EQ(la[i].value("loss", nlohmann::json()), lb[i].value("loss", nlohmann::json()))
            << "line " << i;
        EXPECT_EQ(la[i].value("loss/val", nlohmann::json()), lb[i].value("loss/val", nlohmann::json()))
            << "line " << i;
        EXPECT_EQ(la[i].value("timesteps", nlohmann::json()), lb[i].value("timesteps", nlohmann::json()))
            << "line " << i;
    }
}

TEST(ResumeTest, StoppedAndResumedRunIsBitIdenticalToAnUninterruptedOne) {
    auto& env = TrainEnv::get();
    auto full = env.run(env.config("straight", resume_settings(12)));
    ASSERT_EQ(full.code, 0) << full.log;
    // Stop at 7 (the step budget ends there; checkpoints at 3, 6 and the final 7)...
    auto first = env.run(env.config("resumed", resume_settings(7)));
    ASSERT_EQ(first.code, 0) << first.log;
    // ...then continue from `latest` with the full budget. The schedule (cosine over lr_warmup_steps)
    // does not depend on max_train_steps, so both runs see the same learning rates.
    auto second = env.run(env.config("resumed", resume_settings(12)));
    ASSERT_EQ(second.code, 0) << second.log;
    EXPECT_NE(second.log.find("resumed from"), std::string::npos) << second.log;
    EXPECT_NE(second.log.find("checkpoint-7 at step 7"), std::string::npos) << second.log;
    expect_same_run(env.root / "straight", env.root / "resumed", 12);
}

TEST(ResumeTest, ResumeWithTreadRoutingIsBitIdenticalToo) {
    // The token selections draw from the run's generator (saved), LoRA dropout too, also inside
    // blocks re-run by gradient checkpointing.
    auto& env = TrainEnv::get();
    auto settings = [](int steps) {
        return nlohmann::json{
            {"max_train_steps", steps},
            {"lora_dropout", 0.2},
            {"checkpoint_step_interval", 3},
            {"gradient_checkpointing", true},
            {"tread_config",
             {{"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 0}, {"end_layer_idx", -1}}}}}}};
    };
    auto full = env.run(env.config("tread_straight", settings(8)));
    ASSERT_EQ(full.code, 0) << full.log;
    auto first = env.run(env.config("tread_resumed", settings(4)));
    ASSERT_EQ(first.code, 0) << first.log;
    auto second = env.run(env.config("tread_resumed", settings(8)));
    ASSERT_EQ(second.code, 0) << second.log;
    EXPECT_NE(second.log.find("checkpoint-4 at step 4"), std::string::npos) << second.log;
    expect_same_tensors(env.root / "tread_straight" / "pytorch_lora_weights.safetensors",
                        env.root / "tread_resumed" / "pytorch_lora_weights.safetensors");
    const auto a = st_test::read_jsonl(env.root / "tread_straight" / "metrics.jsonl");
    const auto b = st_test::read_jsonl(env.root / "tread_resumed" / "metrics.jsonl");
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "line " << i;
    // A run without routes takes other steps (the routes did something).
    auto plain = env.run(env.config("tread_plain", {{"max_train_steps", 8}, {"lora_dropout", 0.2}}));
    ASSERT_EQ(plain.code, 0) << plain.log;
    const auto c = st_test::read_jsonl(env.root / "tread_plain" / "metrics.jsonl");
    EXPECT_NE(c.back()["loss"], a.back()["loss"]);
}

TEST(ResumeTest, SigintFinishesTheStepWritesACheckpointAndExitsCleanly) {
    auto& env = TrainEnv::get();
    const auto cfg = env.config("sigint", resume_settings(100000));
    const pid_t pid = env.spawn(cfg, env.root / "sigint.log");
    ASSERT_GE(TrainEnv::wait_for_steps(env.root / "sigint" / "metrics.jsonl", 4), 4u)
        << st_test::read_text(env.root / "sigint.log");
    ::kill(pid, SIGINT);
    const int code = TrainEnv::wait_exit(pid);
    const std::string log = st_test::read_text(env.root / "sigint.log");
    ASSERT_EQ(code, 0) << log;
    EXPECT_NE(log.find("SIGINT received"), std::string::npos) << log;
    const int n = steps_in(env.root / "sigint" / "metrics.jsonl");
    EXPECT_TRUE(fs::exists(env.root / "sigint" / ("checkpoint-" + std::to_string(n)))) << log;
    // Resuming continues exactly: compare with an uninterrupted run to n + 2.
    auto resumed = env.run(cfg, "--max_train_steps " + std::to_string(n + 2));
    ASSERT_EQ(resumed.code, 0) << resumed.log;
    auto straight = env.run(env.config("sigint_ref", resume_settings(n + 2)));
    ASSERT_EQ(straight.code, 0) << straight.log;
    expect_same_run(env.root / "sigint_ref", env.root / "sigint", n + 2);
}

TEST(ResumeTest, KillNineLosesAtMostTheStepsSinceTheLastCheckpointAndResumesExactlyWithTread) {
    auto& env = TrainEnv::get();
    nlohmann::json s = resume_settings(100000);
    s["checkpoint_step_interval"] = 2;
    s["checkpoints_total_limit"] = 2;
    // With TREAD on: the token selections are part of the resumed random streams (#17).
    s["tread_config"] = {
        {"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 1}, {"end_layer_idx", -1}}}}};
    const auto cfg = env.config("kill9", s);
    // Three kills at different moments, each followed by a resume that must continue.
    for (size_t target : {5u, 9u, 14u}) {
        const pid_t pid = env.spawn(cfg, env.root / "kill9.log");
        ASSERT_GE(TrainEnv::wait_for_steps(env.root / "kill9" / "metrics.jsonl", target), target);
        ::kill(pid, SIGKILL);
        TrainEnv::wait_exit(pid);
        std::vector<int> complete;
        for (const auto& e : fs::directory_iterator(env.root / "kill9")) {
            const std::string name = e.path().filename().string();
            if (name.rfind("checkpoint-", 0) == 0 && fs::exists(e.path() / "checkpoint_manifest.json") &&
                name.find("tmp") == std::string::npos)
                complete.push_back(std::stoi(name.substr(11)));
        }
        ASSERT_FALSE(complete.empty());
        const int latest = *std::max_element(complete.begin(), complete.end());
        const int steps = steps_in(env.root / "kill9" / "metrics.jsonl");
        EXPECT_GE(latest, steps - 2) << "more than checkpoint_step_interval steps lost";
    }
    // A leftover partial directory is reported and never resumed from.
    fs::create_directories(env.root / "kill9" / "checkpoint-99999-tmp");
    auto resumed = env.run(cfg, "--max_train_steps 20");
    ASSERT_EQ(resumed.code, 0) << resumed.log;
    EXPECT_NE(resumed.log.find("ignoring"), std::string::npos) << resumed.log;
    EXPECT_NE(resumed.log.find("checkpoint-99999-tmp"), std::string::npos) << resumed.log;
    EXPECT_FALSE(fs::exists(env.root / "kill9" / "checkpoint-99999-tmp"));
    int kept = 0;
    for (const auto& e : fs::directory_iterator(env.root / "kill9"))
        kept += e.path().filename().string().rfind("checkpoint-", 0) == 0 ? 1 : 0;
    std::string listing;
    for (const auto& e : fs::directory_iterator(env.root / "kill9"))
        listing += " " + e.path().filename().string();
    EXPECT_EQ(kept, 2) << "checkpoints_total_limit 2; output_dir holds:" << listing << "\n" << resumed.log;
    nlohmann::json ref = s;
    ref["max_train_steps"] = 20;
    auto straight = env.run(env.config("kill9_ref", ref));
    ASSERT_EQ(straight.code, 0) << straight.log;
    expect_same_run(env.root / "kill9_ref", env.root / "kill9", 20);
}

TEST(ResumeTest, CheckpointThatCannotBeWrittenLeavesThePreviousOneIntact) {
    auto& env = TrainEnv::get();
    // Uncompressed caches of its own: reading gzip caches needs scratch files, which the limit below
    // would refuse before any checkpoint is due.
    nlohmann::json s = {{"max_train_steps", 2},
                        {"checkpoint_step_interval", 2},
                        {"compress_disk_cache", false},
                        {"data_backend_config", env.write_datasets("raw_caches.json", "cache_raw").string()}};
    const auto cfg = env.config("full_disk", s);
    auto ok = env.run(cfg);
    ASSERT_EQ(ok.code, 0) << ok.log;
    // An 8 KiB file size limit (/bin/sh counts 512-byte blocks): the config files (~3 KB) and metrics
    // fit, the LoRA and optimizer state (~17 KB each) cannot be written, as on a full disk. SIGXFSZ is
    // ignored so write() fails with EFBIG instead of killing the process.
    auto full = env.run(cfg, "--max_train_steps 4", "trap '' XFSZ; ulimit -f 16; ");
    EXPECT_EQ(full.code, 1) << full.log;
    EXPECT_NE(full.log.find("checkpoint-4 could not be written"), std::string::npos) << full.log;
    EXPECT_NE(full.log.find("checkpoint-2 is intact"), std::string::npos) << full.log;
    // What the next try needs and what is free (a full disk and this limit fail alike).
    EXPECT_NE(full.log.find("a checkpoint needs about"), std::string::npos) << full.log;
    EXPECT_NE(full.log.find(" free"), std::string::npos) << full.log;
    // The final weights failed too: the message names the checkpoint that is really there.
    EXPECT_NE(full.log.find("final weights could not be written"), std::string::npos) << full.log;
    EXPECT_NE(full.log.find("the newest checkpoint on disk is " +
                            (env.root / "full_disk" / "checkpoint-2").string() + " (step 2 of 4)"),
              std::string::npos)
        << full.log;
    EXPECT_EQ(full.log.find("the last checkpoint has them"), std::string::npos) << full.log;
    EXPECT_FALSE(fs::exists(env.root / "full_disk" / "checkpoint-4"));
    EXPECT_FALSE(fs::exists(env.root / "full_disk" / "checkpoint-4-tmp"));
    EXPECT_TRUE(fs::exists(env.root / "full_disk" / "checkpoint-2" / "checkpoint_manifest.json"));
    // The intact checkpoint still resumes.
    auto again = env.run(cfg, "--max_train_steps 4");
    ASSERT_EQ(again.code, 0) << again.log;
    EXPECT_NE(again.log.find("checkpoint-2 at step 2"), std::string::npos) << again.log;
}

TEST(ResumeTest, NonFiniteStepsAreSkippedNamedAndStopTheRunAfterTheLimit) {
    auto& env = TrainEnv::get();
    // An absurd learning rate sends the adapters to +-1e30 after the first update: every later loss
    // is inf/NaN.
    auto r = env.run(env.config("nan", {{"max_train_steps", 50},
                                        {"learning_rate", 1e30},
                                        {"max_grad_norm", 0},
                                        {"max_consecutive_nonfinite_steps", 3}}));
    EXPECT_EQ(r.code, 4) << r.log;
    EXPECT_NE(r.log.find("skipped"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("clips/clip"), std::string::npos) << "the batch's samples are named: " << r.log;
    EXPECT_NE(r.log.find("3 steps in a row had a non-finite loss or gradient"), std::string::npos) << r.log;
    const auto lines = st_test::read_jsonl(env.root / "nan" / "metrics.jsonl");
    int skipped = 0;
    for (const auto& l : lines) skipped += l.value("skipped", false) ? 1 : 0;
    EXPECT_EQ(skipped, 3);
    EXPECT_TRUE(fs::exists(env.root / "nan" / "checkpoint-1" / "checkpoint_manifest.json")) << r.log;
}

TEST(ResumeTest, NonFiniteWeightsAreNeverSavedAndTheLastGoodCheckpointIsNamed) {
    auto& env = TrainEnv::get();
    // From step 3 on the learning rate is 3e305: that step's loss is still finite, its update turns
    // the adapters into inf/NaN.
    const fs::path script = env.root / "lr_blowup.lua";
    st_test::write_text(script, R"(
st.on("on_step_end", function(ev)
  if ev.step == 2 then st.set_lr_scale(1e308) end
end)
)");
    // The run ends at step 3: neither its checkpoint nor its final weights are written.
    auto end = env.run(env.config(
        "inf_end",
        {{"max_train_steps", 3}, {"checkpoint_step_interval", 2}, {"lua_hooks", script.string()}}));
    EXPECT_EQ(end.code, 4) << end.log;
    const fs::path out = env.root / "inf_end";
    EXPECT_NE(end.log.find("checkpoint-3 was not written (end of training) and no checkpoint is deleted: the "
                           "state holds"),
              std::string::npos)
        << end.log;
    EXPECT_NE(end.log.find("non-finite value(s) in"), std::string::npos) << end.log;
    EXPECT_NE(end.log.find("trainable '"), std::string::npos) << "names a tensor: " << end.log;
    EXPECT_NE(
        end.log.find("final weights not written to " + (out / "pytorch_lora_weights.safetensors").string()),
        std::string::npos)
        << end.log;
    EXPECT_NE(end.log.find("the newest checkpoint on disk is " + (out / "checkpoint-2").string() +
                           " (step 2 of 3)"),
              std::string::npos)
        << end.log;
    EXPECT_FALSE(fs::exists(out / "checkpoint-3"));
    EXPECT_FALSE(fs::exists(out / "pytorch_lora_weights.safetensors"));
    EXPECT_EQ(nonfinite_in(out / "checkpoint-2" / "pytorch_lora_weights.safetensors"), 0);
    EXPECT_EQ(nonfinite_in(out / "checkpoint-2" / "optimizer.safetensors"), 0);
    // A checkpoint due in the middle of the run is refused and the run stops there, as after too many
    // non-finite losses; no checkpoint was written before it.
    auto mid = env.run(env.config(
        "inf_mid",
        {{"max_train_steps", 10}, {"checkpoint_step_interval", 3}, {"lua_hooks", script.string()}}));
    EXPECT_EQ(mid.code, 4) << mid.log;
    EXPECT_NE(mid.log.find("checkpoint-3 was not written (checkpoint_step_interval)"), std::string::npos)
        << mid.log;
    EXPECT_NE(mid.log.find("no checkpoint exists in " + (env.root / "inf_mid").string()), std::string::npos)
        << mid.log;
    EXPECT_NE(mid.log.find("stopping at step 3: the weights hold non-finite values"), std::string::npos)
        << mid.log;
    EXPECT_FALSE(fs::exists(env.root / "inf_mid" / "checkpoint-3"));
    EXPECT_EQ(steps_in(env.root / "inf_mid" / "metrics.jsonl"), 3);
}

TEST(ResumeTest, ADamagedNewestCheckpointIsNamedAndThePreviousOneResumesExactly) {
    auto& env = TrainEnv::get();
    const fs::path out = env.root / "damaged";
    const auto cfg = env.config("damaged", {{"max_train_steps", 4}, {"checkpoint_step_interval", 2}});
    auto first = env.run(cfg);
    ASSERT_EQ(first.code, 0) << first.log;
    const fs::path straight = env.root / "damaged_straight.safetensors";
    fs::copy_file(out / "pytorch_lora_weights.safetensors", straight);
    // A NaN in the optimizer state of the newest checkpoint: same size, so sizes alone resumed it.
    write_nan_into(out / "checkpoint-4" / "optimizer.safetensors");
    auto latest = env.run(cfg);
    ASSERT_EQ(latest.code, 0) << latest.log;
    EXPECT_NE(latest.log.find("checkpoint " + (out / "checkpoint-4").string() +
                              " is damaged: optimizer.safetensors has the checksum"),
              std::string::npos)
        << latest.log;
    EXPECT_NE(latest.log.find("resumed from " + (out / "checkpoint-2").string() + " at step 2"),
              std::string::npos)
        << latest.log;
    // Steps 3 and 4 again, from checkpoint-2: the same weights as the uninterrupted run.
    expect_same_tensors(straight, out / "pytorch_lora_weights.safetensors");
    EXPECT_EQ(nonfinite_in(out / "checkpoint-4" / "optimizer.safetensors"), 0) << "saved again";
    // A damaged checkpoint named explicitly is an error, never another one.
    write_nan_into(out / "checkpoint-4" / "optimizer.safetensors");
    auto named = env.run(cfg, "--resume_from_checkpoint checkpoint-4");
    EXPECT_NE(named.code, 0) << named.log;
    EXPECT_NE(named.log.find("optimizer.safetensors has the checksum"), std::string::npos) << named.log;
    EXPECT_NE(named.log.find("st does not pick another checkpoint when one is named"), std::string::npos)
        << named.log;
    EXPECT_EQ(named.log.find("resumed from"), std::string::npos) << named.log;
}

TEST(ResumeTest, CheckpointsBeyondTheLimitArePrunedEvenWhenTheRunSavesNoMore) {
    // A kill between a save's rename and its prune leaves more than checkpoints_total_limit; so does a
    // lower limit. A resumed run whose budget is already reached never saves, so it prunes at start.
    auto& env = TrainEnv::get();
    const fs::path out = env.root / "over_limit";
    const auto cfg = env.config(
        "over_limit",
        {{"max_train_steps", 8}, {"checkpoint_step_interval", 2}, {"checkpoints_total_limit", 10}});
    auto first = env.run(cfg);
    ASSERT_EQ(first.code, 0) << first.log;
    ASSERT_TRUE(fs::exists(out / "checkpoint-2"));
    auto again = env.run(cfg, "--checkpoints_total_limit 2");
    ASSERT_EQ(again.code, 0) << again.log;
    EXPECT_NE(again.log.find("the step budget 8 is already reached"), std::string::npos) << again.log;
    for (const char* gone : {"checkpoint-2", "checkpoint-4"}) EXPECT_FALSE(fs::exists(out / gone)) << gone;
    for (const char* kept : {"checkpoint-6", "checkpoint-8"}) EXPECT_TRUE(fs::exists(out / kept)) << kept;
}

TEST(ResumeTest, ResumesFromAnExplicitCheckpointPath) {
    auto& env = TrainEnv::get();
    auto first = env.run(env.config("explicit", {{"max_train_steps", 4}, {"checkpoint_step_interval", 2}}));
    ASSERT_EQ(first.code, 0) << first.log;
    const fs::path ck = env.root / "explicit" / "checkpoint-2";
    auto again =
        env.run(env.config("explicit_b", {{"max_train_steps", 4}, {"resume_from_checkpoint", ck.string()}}));
    ASSERT_EQ(again.code, 0) << again.log;
    EXPECT_NE(again.log.find("resumed from " + ck.string() + " at step 2"), std::string::npos) << again.log;
    EXPECT_EQ(steps_in(env.root / "explicit_b" / "metrics.jsonl"), 2);  // steps 3 and 4
    auto missing =
        env.run(env.config("explicit_c", {{"resume_from_checkpoint", (env.root / "nope").string()}}));
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.log.find("is not a checkpoint directory"), std::string::npos) << missing.log;
}

TEST(ResumeTest, ChangingTheOptimizerIsRefusedWithAClearMessage) {
    auto& env = TrainEnv::get();
    auto first = env.run(env.config("swap", {{"max_train_steps", 2}}));
    ASSERT_EQ(first.code, 0) << first.log;
    auto second = env.run(env.config("swap", {{"max_train_steps", 4}, {"optimizer", "lion"}}));
    EXPECT_NE(second.code, 0);
    EXPECT_NE(second.log.find("holds the state of optimizer optim.adamw@1 but this run uses optim.lion@1"),
              std::string::npos)
        << second.log;
}

}  // namespace

TEST(ResumeTest, SimpleTunerCheckpointsInTheOutputDirAreNamedAndNeverDeleted) {
    auto& env = TrainEnv::get();
    const fs::path out = env.root / "foreign";
    fs::remove_all(out);
    // SimpleTuner's checkpoint-1000 (LoRA, accelerate state, list-shaped manifest, .guard) and one
    // without a manifest, which st once took for its own interrupted save and deleted.
    for (const char* name : {"checkpoint-1000", "checkpoint-3"}) {
        const fs::path d = out / name;
        fs::create_directories(d);
        st_test::write_text(d / "pytorch_lora_weights.safetensors", "lora");
        st_test::write_text(d / "optimizer.bin", "opt");
        st_test::write_text(d / "training_state.json", R"({"global_step": 1000})");
        if (std::string(name) == "checkpoint-1000") {
            st_test::write_text(d / "checkpoint_manifest.json", R"({"files": ["optimizer.bin"]})");
            st_test::write_text(d / ".guard", "complete");
        }
    }
    const auto cfg = env.config(
        "foreign", {{"max_train_steps", 6}, {"checkpoint_step_interval", 2}, {"checkpoints_total_limit", 1}});
    // resume latest takes SimpleTuner's checkpoint-1000, as SimpleTuner would; these files are not
    // readable, which is said before the model loads, with the way out.
    auto latest = env.run(cfg);
    EXPECT_NE(latest.code, 0) << latest.log;
    EXPECT_NE(latest.log.find("checkpoint-1000 (written by SimpleTuner): optimizer.bin: '"),
              std::string::npos)
        << latest.log;
    EXPECT_NE(latest.log.find("is not a zip-format torch.save() file"), std::string::npos) << latest.log;
    EXPECT_EQ(latest.log.find("data ready"), std::string::npos) << latest.log;
    EXPECT_NE(latest.log.find("init_lora " + (out / "checkpoint-1000").string()), std::string::npos)
        << latest.log;
    EXPECT_EQ(steps_in(out / "metrics.jsonl"), 0);
    // A run that would save where a foreign checkpoint sits is refused before training.
    auto collide =
        env.run(cfg, "--resume_from_checkpoint none --max_train_steps 1000 --checkpoint_step_interval 500");
    EXPECT_NE(collide.code, 0) << collide.log;
    EXPECT_NE(collide.log.find("is where this run saves its step-1000 checkpoint"), std::string::npos)
        << collide.log;
    // A fresh run next to them: its own checkpoints are pruned to the limit, theirs stay as they were.
    auto fresh = env.run(cfg, "--resume_from_checkpoint none");
    ASSERT_EQ(fresh.code, 0) << fresh.log;
    EXPECT_NE(fresh.log.find("checkpoint-3 was written by SimpleTuner, not st: it is left as it is"),
              std::string::npos)
        << fresh.log;
    EXPECT_TRUE(fs::exists(out / "checkpoint-1000" / ".guard"));
    EXPECT_TRUE(fs::exists(out / "checkpoint-3" / "optimizer.bin"));
    EXPECT_TRUE(fs::exists(out / "checkpoint-6" / "checkpoint_manifest.json"));
    EXPECT_FALSE(fs::exists(out / "checkpoint-4"));
    EXPECT_FALSE(fs::exists(out / "checkpoint-2"));
}

namespace {
// make_simpletuner_checkpoint.py: SimpleTuner's layout of an st checkpoint's state (diffusers LoRA
// names, torch.save'd AdamW state in diffusers' module order, training_state.json, accelerate files).
void make_simpletuner_checkpoint(const fs::path& from, const fs::path& to, const std::string& args = "") {
    const std::string cmd = "/usr/bin/python3 '" + std::string(ST_TEST_SOURCE_DIR) +
                            "/tests/train/make_simpletuner_checkpoint.py' '" + from.string() + "' '" +
                            to.string() + "' " + args;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

nlohmann::json optimizer_meta(const fs::path& file) {
    auto f = st::sdk::SafetensorsFile::open(file);
    return nlohmann::json::parse(f->metadata().at("st_state_meta"));
}
}  // namespace

TEST(ResumeTest, ASimpleTunerCheckpointResumesItsLoraStepAndOptimizerState) {
    auto& env = TrainEnv::get();
    const nlohmann::json base = {
        {"lora_format", "diffusers"}, {"checkpoint_step_interval", 2}, {"checkpoints_total_limit", 1}};
    auto with = [&](nlohmann::json extra) {
        for (const auto& [k, v] : base.items()) extra[k] = v;
        return extra;
    };
    const fs::path src = env.root / "st_src";
    fs::remove_all(src);
    auto made = env.run(env.config("st_src", with({{"max_train_steps", 2}})));
    ASSERT_EQ(made.code, 0) << made.log;
    const fs::path st_ck = src / "checkpoint-2";

    // The step budget already reached: the weights written are the LoRA carried over, bit for bit.
    const fs::path out = env.root / "st_import";
    fs::remove_all(out);
    make_simpletuner_checkpoint(st_ck, out / "checkpoint-2", "--epoch 1 --epoch-step 1");
    const auto cfg2 = env.config("st_import", with({{"max_train_steps", 2}}));
    auto reached = env.run(cfg2);
    ASSERT_EQ(reached.code, 0) << reached.log;
    EXPECT_NE(
        reached.log.find("resumed from " + (out / "checkpoint-2").string() +
                         " (written by SimpleTuner) at step 2 (epoch 1): carried: the LoRA weights, the "
                         "optimizer state of "),
        std::string::npos)
        << reached.log;
    EXPECT_NE(reached.log.find("not carried: SimpleTuner's sample order inside epoch 1 (1 steps of it"),
              std::string::npos)
        << reached.log;
    expect_same_tensors(out / "pytorch_lora_weights_diffusers.safetensors",
                        st_ck / "pytorch_lora_weights_diffusers.safetensors");

    // Two more steps: the optimizer continues SimpleTuner's state (step 2 + 2 on every parameter), and
    // SimpleTuner's checkpoint stays as it was with checkpoints_total_limit 1.
    auto more = env.run(env.config("st_import", with({{"max_train_steps", 4}})));
    ASSERT_EQ(more.code, 0) << more.log;
    const auto meta = optimizer_meta(out / "checkpoint-4" / "optimizer.safetensors");
    const auto src_meta = optimizer_meta(st_ck / "optimizer.safetensors");
    ASSERT_EQ(meta["params"].size(), src_meta["params"].size());
    for (const auto& [name, entry] : meta["params"].items()) EXPECT_EQ(entry["step"], 4) << name;
    EXPECT_TRUE(fs::exists(out / "checkpoint-2" / "optimizer.bin"));
    EXPECT_TRUE(fs::exists(out / "checkpoint-2" / "random_states_0.pkl"));

    // Parameters in another order (shapes disagree by index) and another optimizer's state: refused
    // with the index or entry, and the way out.
    for (const auto& [name, args, expect] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"st_import_order", "--order reversed", "optimizer.bin's parameter #0 has 'exp_avg' of shape"},
             {"st_import_optim", "--extra-state shift",
              "optimizer.bin does not fit this run's optimizer optim.adamw@1"}}) {
        fs::remove_all(env.root / name);
        make_simpletuner_checkpoint(st_ck, env.root / name / "checkpoint-2", args);
        auto bad = env.run(env.config(name, with({{"max_train_steps", 4}})));
        EXPECT_NE(bad.code, 0) << bad.log;
        EXPECT_NE(bad.log.find(expect), std::string::npos) << bad.log;
        EXPECT_NE(bad.log.find("set init_lora " + (env.root / name / "checkpoint-2").string()),
                  std::string::npos)
            << bad.log;
        EXPECT_TRUE(fs::exists(env.root / name / "checkpoint-2" / "optimizer.bin"));
    }
}
