// The checkpoint directories of a run: `output_dir/checkpoint-<step>/`, written under
// `checkpoint-<step>-tmp` and renamed when complete (the manifest is the last file written), so a
// reader that only trusts directories with a manifest never sees a partial checkpoint. Pruning keeps
// the newest `checkpoints_total_limit` (SimpleTuner's rule) and removes partial leftovers.
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

class CheckpointStore {
  public:
    explicit CheckpointStore(std::filesystem::path output_dir);

    /// Complete checkpoints (name checkpoint-<int>, manifest present), oldest first.
    std::vector<CheckpointRef> complete() const;
    /// Directories a crash left behind: `checkpoint-*-tmp`, or checkpoint-<int> without a manifest.
    std::vector<std::filesystem::path> partial() const;
    std::optional<CheckpointRef> latest() const;

    /// Creates checkpoint-<step>-tmp, lets `fill` write into it, writes the manifest (every file and
    /// its size), renames it to checkpoint-<step> (replacing an older one of the same step) and
    /// syncs. On any failure the temporary directory is removed and st::Error says which
    /// checkpoint failed and that the previous ones are intact.
    std::filesystem::path write(int64_t step, const std::function<void(const std::filesystem::path&)>& fill);

    /// Deletes partial directories and the oldest complete checkpoints until at most `limit` remain,
    /// never the one of `keep_step`. Returns the deleted directories.
    std::vector<std::filesystem::path> prune(int64_t limit, int64_t keep_step);

    /// Checks that `dir` has a manifest and every file it lists with the listed size; st::Error
    /// naming the first problem otherwise.
    static void verify(const std::filesystem::path& dir);

    static std::string dir_name(int64_t step);

  private:
    std::filesystem::path root_;
};

}  // namespace st::host::train
