// Block offload to disk: see st/kit/block_offload.h.
#include "st/kit/block_offload.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>

#include "st/error.h"
#include "st/log.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace st::kit {
namespace fs = std::filesystem;
namespace {
constexpr const char* kComponent = "kit.block_offload";

// The whole pages inside `t`'s bytes leave this process. Only for a tensor nobody reads again (about to
// be freed) or a view of a read-only file mapping (its clean pages come back from the file).
void drop_pages(const at::Tensor& t, uintptr_t page) {
    const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t begin = (p + page - 1) / page * page;
    const uintptr_t end = (p + t.nbytes()) / page * page;
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}
// st-offload-<pid>-<tag> folders of st processes that no longer exist (killed before their exit
// could remove them): st's own files, removed. Anything else under the path is left alone.
void remove_stale_folders(const fs::path& dir) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("st-offload-", 0) != 0 || !e.is_directory(ec)) continue;
        const std::string rest = name.substr(11);
        const size_t dash = rest.find('-');
        if (dash == std::string::npos || dash == 0) continue;
        pid_t pid = 0;
        try {
            pid = static_cast<pid_t>(std::stol(rest.substr(0, dash)));
        } catch (...) {
            continue;
        }
        if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
        fs::remove_all(e.path(), ec);
        log::info(kComponent, "removed '{}', left by st process {} that no longer runs", e.path().string(),
                  pid);
    }
}
}  // namespace

BlockOffload::BlockOffload(const std::vector<torch::nn::Module*>& blocks, const sdk::BaseWeightPlan& plan,
                           const std::string& tag)
    : blocks_per_group_(static_cast<size_t>(std::max<int64_t>(1, plan.blocks_per_group))),
      num_blocks_(blocks.size()),
      prefetch_(plan.prefetch) {
    if (plan.offload_dir.empty()) fail(kComponent, "setup", "group_offload_to_disk_path is empty");
    folder_ = plan.offload_dir / fmt::format("st-offload-{}-{}", ::getpid(), tag);
    std::error_code ec;
    remove_stale_folders(plan.offload_dir);
    fs::create_directories(folder_, ec);
    if (ec)
        fail(kComponent, "setup", "group_offload_to_disk_path: cannot create '{}': {}", folder_.string(),
             ec.message());
    const long page = ::sysconf(_SC_PAGESIZE);
    at::NoGradGuard no_grad;
    for (size_t first = 0; first < blocks.size(); first += blocks_per_group_) {
        const size_t last = std::min(blocks.size(), first + blocks_per_group_);
        sdk::TensorMap tensors;
        std::vector<std::pair<std::string, sdk::LinearImpl*>> layers;
        for (size_t b = first; b < last; ++b) {
            for (const auto& [path, lin] : sdk::linear_modules(*blocks[b])) {
                if (!lin->base_stored()) continue;
                const std::string name = fmt::format("{}.{}", b, path);
                tensors[name + ".weight"] = lin->weight;
                if (lin->weight_scale.defined()) tensors[name + ".weight_scale"] = lin->weight_scale;
                layers.emplace_back(name, lin);
            }
        }
        if (layers.empty())
            fail(kComponent, "setup", "blocks {}..{} have no stored base weight to offload", first, last - 1);
        const fs::path file = folder_ / fmt::format("group-{:04d}.safetensors", groups_.size());
        sdk::save_safetensors(file, tensors, {{"st_offload", "1"}});
        Group g;
        g.file = sdk::SafetensorsFile::open(file);
        g.begin = UINTPTR_MAX;
        for (auto& [name, lin] : layers) {
            // The weight it replaces is a view of the model file (clean pages) or memory freed below.
            drop_pages(lin->weight, static_cast<uintptr_t>(page));
            lin->weight.set_data(g.file->view(name + ".weight"));
            if (lin->weight_scale.defined()) lin->weight_scale.set_data(g.file->view(name + ".weight_scale"));
            const auto p = reinterpret_cast<uintptr_t>(lin->weight.data_ptr());
            g.begin = std::min(g.begin, p);
            g.end = std::max(g.end, p + lin->weight.nbytes());
            g.bytes += lin->weight.nbytes();
        }
        g.begin -= g.begin % static_cast<uintptr_t>(page);
        g.end += (static_cast<uintptr_t>(page) - g.end % static_cast<uintptr_t>(page)) %
                 static_cast<uintptr_t>(page);
        groups_.push_back(std::move(g));
    }
    // The weights now come from the files: nothing of them needs to stay resident.
    for (auto& g : groups_) advise(g, MADV_DONTNEED);
}

BlockOffload::~BlockOffload() {
    std::error_code ec;
    fs::remove_all(folder_, ec);  // st's own folder (its name carries st's pid): never a user's files
    if (ec) log::warn(kComponent, "could not remove '{}': {}", folder_.string(), ec.message());
}

void BlockOffload::advise(Group& g, int advice) {
    if (g.end <= g.begin) return;
    ::madvise(reinterpret_cast<void*>(g.begin), g.end - g.begin, advice);
    g.resident = advice != MADV_DONTNEED;
}

void BlockOffload::enter(size_t index) {
    const long group = static_cast<long>(std::min(index, num_blocks_ - 1) / blocks_per_group_);
    if (group == current_) return;
    current_ = group;
    const long ahead = prefetch_ ? group + (group + 1 < static_cast<long>(groups_.size()) ? 1 : 0) : group;
    for (long k = 0; k < static_cast<long>(groups_.size()); ++k) {
        Group& g = groups_[static_cast<size_t>(k)];
        // Every other group is dropped, even one not marked resident: a backward without checkpointing
        // touches weights between enter() calls.
        if (k == group || k == ahead)
            advise(g, MADV_WILLNEED);
        else
            advise(g, MADV_DONTNEED);
    }
}

std::string BlockOffload::describe() const {
    uint64_t bytes = 0;
    for (const auto& g : groups_) bytes += g.bytes;
    return fmt::format("{} blocks in {} groups of {}, {:.2f} GiB in {}{}", num_blocks_, groups_.size(),
                       blocks_per_group_, static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0),
                       folder_.string(), prefetch_ ? ", reading one group ahead" : "");
}

}  // namespace st::kit
