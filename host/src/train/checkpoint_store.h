// The checkpoint directories of a run: `output_dir/checkpoint-<step>/`, written under
// `checkpoint-<step>-tmp` and renamed when complete (the manifest is the last file written), so a
// reader that only trusts directories with a manifest never sees a partial checkpoint. Pruning keeps
// the newest `checkpoints_total_limit` (SimpleTuner's rule) and removes partial leftovers.
//
// Ownership: a user's output_dir may hold checkpoints st did not write (SimpleTuner's
// `checkpoint-1000/`, its `checkpoint-1000-tmp/` of `checkpointing_use_tempdir`, or anything else
// named checkpoint-*). Only directories that carry st's proof of authorship are ever deleted,
// pruned, replaced or resumed: an st manifest (`"format": "st-checkpoint-1"`) or, while a save is
// in progress, the marker file st writes first into its temporary directory. Everything else is
// foreign: listed, named in the log, never touched.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace st::host::train {

struct CheckpointRef {
    int64_t step = 0;
    std::filesystem::path dir;
};

/// A checkpoint-* directory st did not write.
struct ForeignCheckpoint {
    std::filesystem::path dir;
    std::optional<int64_t> step;  ///< from the name checkpoint-<int>, when it has that form
    std::string writer;           ///< "SimpleTuner" when its files say so, else "another program"
};

class CheckpointStore {
  public:
    explicit CheckpointStore(std::filesystem::path output_dir);

    /// st's complete checkpoints (name checkpoint-<int>, st manifest present), oldest first.
    std::vector<CheckpointRef> complete() const;
    /// st's directories a crash left behind: `checkpoint-*-tmp` holding st's in-progress marker or
    /// st's manifest (the `-old-tmp` of a same-step swap), or an empty `checkpoint-*-tmp`.
    std::vector<std::filesystem::path> partial() const;
    /// checkpoint-* directories st did not write, by name.
    std::vector<ForeignCheckpoint> foreign() const;
    std::optional<CheckpointRef> latest() const;

    /// Creates checkpoint-<step>-tmp (st's marker first), lets `fill` write into it, writes the
    /// manifest (every file with its size and XXH64 checksum), renames it to checkpoint-<step> (replacing an
    /// older st checkpoint of the same step) and syncs. A foreign checkpoint-<step> is never replaced: the
    /// save fails naming it. On any failure the temporary directory is removed and st::Error says
    /// which checkpoint failed and that the previous ones are intact.
    std::filesystem::path write(int64_t step, const std::function<void(const std::filesystem::path&)>& fill);

    /// Deletes st's partial directories and st's oldest complete checkpoints until at most `limit`
    /// of st's remain, never the one of `keep_step`; foreign ones are neither deleted nor counted.
    /// Returns the deleted directories.
    std::vector<std::filesystem::path> prune(int64_t limit, int64_t keep_step);

    /// Checks that `dir` is an st checkpoint with a manifest and every file it lists with the
    /// listed size and checksum; st::Error naming the first problem otherwise ("checkpoint <dir> is
    /// damaged: <file> ..." for a file whose size or content changed; a foreign checkpoint is named
    /// as such, with what st can take from it). A manifest from before checksums is checked by size
    /// and a warning says so. Reads every file once.
    static void verify(const std::filesystem::path& dir);

    /// Sum of the file sizes a complete checkpoint's manifest lists (0 when it cannot be read).
    static uint64_t manifest_bytes(const std::filesystem::path& dir);

    /// True when `dir` holds st's manifest.
    static bool written_by_st(const std::filesystem::path& dir);
    /// "SimpleTuner" or "another program", from the files in a foreign checkpoint.
    static std::string foreign_writer(const std::filesystem::path& dir);

    static std::string dir_name(int64_t step);

  private:
    std::filesystem::path root_;
};

}  // namespace st::host::train
