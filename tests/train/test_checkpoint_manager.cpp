// CheckpointManager in process: the interval, what resume_from_checkpoint picks (none, latest, a path,
// a newer SimpleTuner checkpoint refused with what can be carried), foreign folders where this run
// would save, pruning after a save, and a failed save remembered with its message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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
    const std::string latest = error_of([&] { m.resume_dir("latest"); });
    EXPECT_NE(latest.find("checkpoint-20 was written by SimpleTuner, not st"), std::string::npos) << latest;
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
