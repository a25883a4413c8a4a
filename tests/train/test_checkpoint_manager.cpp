// CheckpointManager in process: the interval, what resume_from_checkpoint picks (none, latest, a path,
// a newer SimpleTuner checkpoint taken as SimpleTuner would, another program's refused, a damaged newest one
// skipped for the previous one, a damaged named one refused), foreign folders where this run would save,
// pruning after a save and before training, and a failed save remembered with its message and the space it
// needs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>

#include "st/error.h"
#include "train/checkpoint_manager.h"

namespace {

namespace fs = std::filesystem;
using st::host::train::CheckpointManager;

fs::path scratch(const std::string& name) {
    const fs::path d =
        fs::temp_directory_path() / ("st_test_ckpt_mgr_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void fill(const fs::path& d) {
    std::ofstream(d / "weights.bin") << "w";
}

void simpletuner(const fs::path& dir) {
    fs::create_directories(dir);
    std::ofstream(dir / "optimizer.bin") << "opt";
    std::ofstream(dir / ".guard") << "complete";
}

// Overwrites bytes in the middle of `file`, keeping its size (what a NaN written into a tensor does).
void damage(const fs::path& file) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("X", 1);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(CheckpointManagerTest, IntervalResumeChoicesAndPruning) {
    const fs::path root = scratch("resume");
    CheckpointManager m(root, 5, 2);
    EXPECT_TRUE(m.due(5, 100));
    EXPECT_FALSE(m.due(6, 100));
    EXPECT_FALSE(m.due(100, 100)) << "the end of the run saves the last step";
    EXPECT_FALSE(m.resume_dir("none").has_value());
    EXPECT_FALSE(m.resume_dir("latest").has_value()) << "no checkpoint: a fresh run";
    for (int64_t s : {5, 10, 15}) ASSERT_TRUE(m.save(s, fill, "test").has_value());
    EXPECT_EQ(m.last_step(), 15);
    EXPECT_FALSE(fs::exists(root / "checkpoint-5")) << "pruned to checkpoints_total_limit 2";
    EXPECT_EQ(*m.resume_dir("latest"), root / "checkpoint-15");
    EXPECT_EQ(*m.resume_dir("checkpoint-10"), root / "checkpoint-10") << "relative to output_dir";
    EXPECT_NE(error_of([&] { m.resume_dir("checkpoint-99"); }).find("is not a checkpoint directory"),
              std::string::npos);
    EXPECT_FALSE(m.failed());
    fs::remove_all(root);
}

TEST(CheckpointManagerTest, ForeignFoldersAreNeverResumedNorOverwritten) {
    const fs::path root = scratch("foreign");
    CheckpointManager m(root, 5, 3);
    ASSERT_TRUE(m.save(5, fill, "test"));
    simpletuner(root / "checkpoint-20");
    // SimpleTuner resumes the newest checkpoint-<step> whoever wrote it; st does too when SimpleTuner
    // wrote it (the trainer carries what maps), named or latest.
    EXPECT_EQ(m.resume_dir("latest"), root / "checkpoint-20");
    EXPECT_EQ(m.resume_dir("checkpoint-20"), root / "checkpoint-20");
    // Another program's newest checkpoint is not taken for st's or SimpleTuner's.
    fs::create_directories(root / "checkpoint-30");
    std::ofstream(root / "checkpoint-30" / "weights.pt") << "w";
    const std::string other = error_of([&] { m.resume_dir("latest"); });
    EXPECT_NE(other.find("checkpoint-30 is not a complete checkpoint"), std::string::npos) << other;
    fs::remove_all(root / "checkpoint-30");
    EXPECT_NE(
        error_of([&] { m.check_foreign(5, 100); }).find("is where this run saves its step-20 checkpoint"),
        std::string::npos);
    EXPECT_EQ(error_of([&] { m.check_foreign(20, 100); }), "") << "already past it";
    EXPECT_EQ(error_of([&] { m.check_foreign(5, 19); }), "") << "the run ends before it";
    // A save onto it fails, is remembered with its message, and leaves it as it was.
    EXPECT_FALSE(m.save(20, fill, "test").has_value());
    EXPECT_TRUE(m.failed());
    EXPECT_NE(m.last_error().find("written by SimpleTuner, not st"), std::string::npos) << m.last_error();
    EXPECT_TRUE(fs::exists(root / "checkpoint-20" / ".guard"));
    EXPECT_EQ(m.last_step(), 5);
    fs::remove_all(root);
}

TEST(CheckpointManagerTest, ADamagedNewestCheckpointFallsBackToThePreviousOneANamedOneIsRefused) {
    const fs::path root = scratch("damaged");
    CheckpointManager m(root, 5, 5);
    for (int64_t s : {5, 10, 15}) ASSERT_TRUE(m.save(s, fill, "test").has_value());
    damage(root / "checkpoint-15" / "weights.bin");
    testing::internal::CaptureStderr();
    const auto dir = m.resume_dir("latest");
    const std::string log = testing::internal::GetCapturedStderr();
    ASSERT_TRUE(dir.has_value());
    EXPECT_EQ(*dir, root / "checkpoint-10");
    EXPECT_NE(log.find("checkpoint-15 is damaged: weights.bin has the checksum"), std::string::npos) << log;
    EXPECT_NE(log.find("resuming from " + (root / "checkpoint-10").string() +
                       " (step 10) instead of the damaged "
                       "checkpoint-15"),
              std::string::npos)
        << log;
    EXPECT_TRUE(fs::exists(root / "checkpoint-15")) << "left for inspection";
    // Named explicitly: an error, never another checkpoint.
    const std::string named = error_of([&] { m.resume_dir("checkpoint-15"); });
    EXPECT_NE(named.find("weights.bin has the checksum"), std::string::npos) << named;
    EXPECT_NE(named.find("st does not pick another checkpoint when one is named"), std::string::npos)
        << named;
    EXPECT_EQ(*m.resume_dir("checkpoint-10"), root / "checkpoint-10");
    // Nothing intact: an error rather than a silent fresh start.
    damage(root / "checkpoint-10" / "weights.bin");
    damage(root / "checkpoint-5" / "weights.bin");
    EXPECT_NE(error_of([&] {
                  m.resume_dir("latest");
              }).find("every checkpoint in " + root.string() + " is damaged"),
              std::string::npos);
    fs::remove_all(root);
}

TEST(CheckpointManagerTest, CheckpointsBeyondTheLimitArePrunedBeforeTraining) {
    // What a kill between the rename of a save and its prune leaves: one more than the limit, which a
    // run that never saves again (its step budget reached) would keep for good.
    const fs::path root = scratch("prune_start");
    CheckpointManager writer(root, 2, 10);
    for (int64_t s : {2, 4, 6, 8}) ASSERT_TRUE(writer.save(s, fill, "test").has_value());
    fs::create_directories(root / "checkpoint-12-tmp");
    std::ofstream(root / "checkpoint-12-tmp" / ".st-checkpoint-in-progress") << "st";
    simpletuner(root / "checkpoint-1");
    CheckpointManager m(root, 2, 2);
    m.prune_at_start(4);  // resumed from checkpoint-4: it stays
    EXPECT_FALSE(fs::exists(root / "checkpoint-2"));
    EXPECT_TRUE(fs::exists(root / "checkpoint-4"));
    EXPECT_FALSE(fs::exists(root / "checkpoint-6"));
    EXPECT_TRUE(fs::exists(root / "checkpoint-8"));
    EXPECT_FALSE(fs::exists(root / "checkpoint-12-tmp"));
    EXPECT_TRUE(fs::exists(root / "checkpoint-1" / ".guard")) << "not st's: never pruned";
    fs::remove_all(root);
}

TEST(CheckpointManagerTest, AFailedSaveSaysHowMuchSpaceACheckpointNeedsAndWhatIsFree) {
    const fs::path root = scratch("space");
    CheckpointManager m(root, 5, 3);
    const auto no_space = [](const fs::path&) { throw std::runtime_error("No space left on device"); };
    EXPECT_FALSE(m.save(5, no_space, "test", 3u << 20).has_value());
    EXPECT_NE(m.last_error().find("a checkpoint needs about 3.0 MiB (3145728 bytes) and " + root.string() +
                                  " has "),
              std::string::npos)
        << m.last_error();
    EXPECT_NE(m.last_error().find(" free"), std::string::npos) << m.last_error();
    EXPECT_NE(m.last_error().find("no earlier checkpoint exists"), std::string::npos) << m.last_error();
    // Without an estimate: the size of the newest checkpoint.
    ASSERT_TRUE(m.save(10, fill, "test").has_value());
    EXPECT_FALSE(m.save(15, no_space, "test").has_value());
    EXPECT_NE(m.last_error().find("a checkpoint needs about 1 bytes"), std::string::npos) << m.last_error();
    EXPECT_EQ(m.newest_on_disk(20),
              "the newest checkpoint on disk is " + (root / "checkpoint-10").string() + " (step 10 of 20)");
    fs::remove_all(root);
}
