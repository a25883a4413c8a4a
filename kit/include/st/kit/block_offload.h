// Block offload to disk (SimpleTuner's enable_group_offload + group_offload_to_disk_path, diffusers'
// group offloading with offload_to_disk_path): the stored base weights of a transformer's blocks
// (st/base_weights.h) are written, one safetensors file per group of blocks, into a folder of st's own
// under the user's path, and the layers then read them from those files through a read-only mapping.
// Before a block runs (forward, or its recompute in backward) its group's pages are made wanted and
// every other group's pages are dropped from this process (madvise), so the resident weights stay near
// two groups while the page cache keeps what memory allows. Correctness never depends on the
// residency calls: a dropped page is read back from the file when touched.
//
// On CUDA the same groups would be copied to the device a group ahead on a side stream; this build
// has no CUDA, so block offload is the disk form only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "st/base_weights.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {
class SafetensorsFile;
}

namespace st::kit {

class BlockOffload {
  public:
    /// `blocks`: the transformer blocks in order. Writes the groups under plan.offload_dir/
    /// st-offload-<pid>-<tag>/ (created; removed by the destructor) and moves every stored base weight
    /// of the blocks' st::sdk::Linear layers onto views of those files. st::Error when the folder cannot
    /// be written or a block has no stored weight at all (nothing to offload).
    BlockOffload(const std::vector<torch::nn::Module*>& blocks, const sdk::BaseWeightPlan& plan,
                 const std::string& tag);
    ~BlockOffload();
    BlockOffload(const BlockOffload&) = delete;
    BlockOffload& operator=(const BlockOffload&) = delete;

    /// Before block `index` runs: its group resident (and the next one read ahead when prefetching),
    /// every other group's pages dropped.
    void enter(size_t index);
    /// "40 blocks in 20 groups of 2, 13.2 GiB in /path/st-offload-123-transformer".
    std::string describe() const;
    const std::filesystem::path& folder() const { return folder_; }
    size_t groups() const { return groups_.size(); }

  private:
    struct Group {
        std::shared_ptr<sdk::SafetensorsFile> file;
        uintptr_t begin = 0;  ///< page-aligned span of the group's tensors in the mapping
        uintptr_t end = 0;
        uint64_t bytes = 0;
        bool resident = false;
    };
    void advise(Group& g, int advice);
    std::filesystem::path folder_;
    std::vector<Group> groups_;
    size_t blocks_per_group_ = 1;
    size_t num_blocks_ = 0;
    bool prefetch_ = false;
    long current_ = -1;
};

}  // namespace st::kit
