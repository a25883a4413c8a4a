// When and where a run checkpoints, and which checkpoint it resumes: the policy around
// CheckpointStore (folder ownership, writing, pruning). What goes into a checkpoint is the trainer's
// (`fill`); this class never looks inside. Messages name the folders and keys involved.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "train/checkpoint_store.h"

namespace st::host::train {

class CheckpointManager {
  public:
    /// `interval`: checkpoint_step_interval; `limit`: checkpoints_total_limit.
    CheckpointManager(std::filesystem::path output_dir, int64_t interval, int64_t limit);

    /// Logs st's partial leftovers (deleted by prune_at_start) and the folders st did not write.
    void report_leftovers() const;

    /// resume_from_checkpoint: "none" -> nullopt; "latest" -> st's newest complete checkpoint that
    /// verifies (CheckpointStore::verify: sizes and checksums), or nullopt when there is none; a
    /// damaged newer one is named in a warning with what is wrong and the previous one is taken.
    /// Anything else -> that folder (relative: also tried under output_dir), verified: a damaged one
    /// is an error, never replaced by another. st::Error when "latest" finds a newer checkpoint st
    /// did not write (with what can be carried from it), when every st checkpoint is damaged, or when
    /// the path is no folder. The folder returned has been verified.
    std::optional<std::filesystem::path> resume_dir(const std::string& resume) const;

    /// Before the first step: deletes st's partial leftovers and st's oldest checkpoints beyond the
    /// limit (a run killed between a save and its prune left one too many), never `keep_step`'s.
    void prune_at_start(int64_t keep_step);

    /// For messages about lost work: "the newest checkpoint on disk is <dir> (step N of <total>)",
    /// or that none exists in output_dir.
    std::string newest_on_disk(int64_t total_steps) const;

    /// st::Error before training when a save of this run (a multiple of the interval in
    /// (from_step, total_steps], or total_steps itself) would land on a folder st did not write.
    void check_foreign(int64_t from_step, int64_t total_steps) const;

    /// The interval asks for a checkpoint after `step` (the last step is saved by the end of the run).
    bool due(int64_t step, int64_t total_steps) const;

    /// Writes checkpoint-<step> through `fill`, then prunes to the limit. A failure is logged with
    /// its reason (the previous checkpoints are intact), about how many bytes the checkpoint needs
    /// (the larger of `expected_bytes` and the size of the newest checkpoint) and how many the file
    /// system has free, remembered (failed()) and returns nullopt.
    std::optional<std::filesystem::path> save(int64_t step,
                                              const std::function<void(const std::filesystem::path&)>& fill,
                                              const std::string& why, uint64_t expected_bytes = 0);

    /// Step of the last checkpoint written or resumed from (-1: none).
    int64_t last_step() const { return last_step_; }
    void set_last_step(int64_t step) { last_step_ = step; }
    bool failed() const { return failed_; }
    /// The message of the last failed save ("" when none failed).
    const std::string& last_error() const { return last_error_; }
    const CheckpointStore& store() const { return store_; }

  private:
    std::filesystem::path output_dir_;
    int64_t interval_;
    int64_t limit_;
    CheckpointStore store_;
    int64_t last_step_ = -1;
    bool failed_ = false;
    std::string last_error_;
};

}  // namespace st::host::train
