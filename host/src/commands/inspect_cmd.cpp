// st-host inspect: the tensors of a safetensors file / sharded checkpoint / model folder.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "commands/commands.h"
#include "st/error.h"
#include "st/safetensors.h"

namespace st::host {
namespace fs = std::filesystem;

namespace {

void inspect_source(const sdk::TensorSource& src) {
    std::printf("%s\n", src.describe().c_str());
    int64_t params = 0, bytes = 0;
    std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (tensors, elements)
    auto infos = src.infos();
    for (const auto& t : infos) {
        std::printf("  %-70s %-5s [%s]\n", t.name.c_str(), t.dtype.c_str(),
                    fmt::format("{}", fmt::join(t.shape, ", ")).c_str());
        params += t.numel();
        bytes += static_cast<int64_t>(t.end - t.begin);
        by_dtype[t.dtype].first += 1;
        by_dtype[t.dtype].second += t.numel();
    }
    std::printf("  total: %zu tensors, %lld elements, %.2f MiB\n", infos.size(),
                static_cast<long long>(params), static_cast<double>(bytes) / (1024.0 * 1024.0));
    for (const auto& [dt, n] : by_dtype)
        std::printf("    %s: %lld tensors, %lld elements\n", dt.c_str(), static_cast<long long>(n.first),
                    static_cast<long long>(n.second));
    auto meta = src.metadata();
    if (!meta.empty()) {
        std::printf("  metadata:\n");
        for (const auto& [k, v] : meta) {
            std::string shown = v.substr(0, 200);
            if (v.size() > 200) shown += "...";
            std::printf("    %s: %s\n", k.c_str(), shown.c_str());
        }
    }
}

}  // namespace

int cmd_inspect(CommandContext&, const std::vector<std::string>& args) {
    if (args.size() != 1) fail("host.cli", "inspect", "usage: st-host inspect FILE_OR_DIR");
    fs::path p = args[0];
    std::error_code ec;
    if (!fs::exists(p, ec)) fail("host.cli", "inspect", "'{}' does not exist", p.string());
    if (fs::is_directory(p, ec)) {
        // A model folder: every checkpoint inside (diffusers subfolders included), one after another.
        std::vector<fs::path> found;
        for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
             it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) break;
            if (it.depth() > 3) it.disable_recursion_pending();
            const auto name = it->path().filename().string();
            if (!it->is_regular_file(ec)) continue;
            if (name.ends_with(".safetensors.index.json")) found.push_back(it->path());
        }
        for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
             it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) break;
            if (it.depth() > 3) it.disable_recursion_pending();
            if (!it->is_regular_file(ec) || it->path().extension() != ".safetensors") continue;
            bool sharded = false;  // shards are shown through their index
            for (const auto& idx : found)
                if (idx.parent_path() == it->path().parent_path()) sharded = true;
            if (!sharded) found.push_back(it->path());
        }
        std::sort(found.begin(), found.end());
        if (found.empty())
            fail("host.cli", "inspect", "'{}' holds no .safetensors file or index", p.string());
        for (const auto& f : found) {
            inspect_source(*sdk::open_tensor_source(f));
            std::printf("\n");
        }
        return 0;
    }
    inspect_source(*sdk::open_tensor_source(p));
    return 0;
}

}  // namespace st::host
