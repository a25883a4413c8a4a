#include "train/checkpoint_store.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>

#include "st/error.h"
#include "st/files.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "checkpoint_manifest.json";
constexpr const char* kLog = "host.checkpoint";

std::optional<int64_t> step_of(const std::string& name) {
    static const std::regex re("checkpoint-([0-9]{1,18})");
    std::smatch m;
    if (!std::regex_match(name, m, re)) return std::nullopt;
    return std::stoll(m[1].str());
}

}  // namespace

CheckpointStore::CheckpointStore(fs::path output_dir) : root_(std::move(output_dir)) {}

std::string CheckpointStore::dir_name(int64_t step) {
    return fmt::format("checkpoint-{}", step);
}

std::vector<CheckpointRef> CheckpointStore::complete() const {
    std::vector<CheckpointRef> out;
    std::error_code ec;
    if (!fs::is_directory(root_, ec)) return out;
    for (const auto& e : fs::directory_iterator(root_, ec)) {
        if (!e.is_directory()) continue;
        auto step = step_of(e.path().filename().string());
        if (step && fs::exists(e.path() / kManifest)) out.push_back({*step, e.path()});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
    return out;
}

std::vector<fs::path> CheckpointStore::partial() const {
    std::vector<fs::path> out;
    std::error_code ec;
    if (!fs::is_directory(root_, ec)) return out;
    for (const auto& e : fs::directory_iterator(root_, ec)) {
        if (!e.is_directory()) continue;
        const std::string name = e.path().filename().string();
        if (name.rfind("checkpoint-", 0) != 0) continue;
        const bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, "-tmp") == 0;
        if (tmp || (step_of(name) && !fs::exists(e.path() / kManifest))) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::optional<CheckpointRef> CheckpointStore::latest() const {
    auto all = complete();
    if (all.empty()) return std::nullopt;
    return all.back();
}

fs::path CheckpointStore::write(int64_t step, const std::function<void(const fs::path&)>& fill) {
    const fs::path final_dir = root_ / dir_name(step);
    const fs::path tmp = root_ / (dir_name(step) + "-tmp");
    std::error_code ec;
    try {
        fs::remove_all(tmp, ec);
        fs::create_directories(tmp, ec);
        if (ec) fail(kLog, "save", "cannot create {}: {}", tmp.string(), ec.message());
        fill(tmp);
        nlohmann::json files = nlohmann::json::object();
        for (const auto& e : fs::recursive_directory_iterator(tmp))
            if (e.is_regular_file())
                files[fs::relative(e.path(), tmp).generic_string()] = static_cast<int64_t>(e.file_size());
        nlohmann::json manifest = {{"format", "st-checkpoint-1"}, {"step", step}, {"files", files}};
        sdk::write_file_atomic(tmp / kManifest, manifest.dump(2) + "\n");
        sdk::sync_directory(tmp);
        if (fs::exists(final_dir)) {
            // Same step saved again (e.g. a stop right after resuming): swap, then drop the old one.
            const fs::path old = root_ / (dir_name(step) + "-old-tmp");
            fs::remove_all(old, ec);
            fs::rename(final_dir, old);
            fs::rename(tmp, final_dir);
            fs::remove_all(old, ec);
        } else {
            fs::rename(tmp, final_dir);
        }
        sdk::sync_directory(root_);
    } catch (const std::exception& e) {
        fs::remove_all(tmp, ec);
        const auto prev = latest();
        fail(kLog, "save", "checkpoint {} could not be written ({}); {}", final_dir.string(), e.what(),
             prev ? fmt::format("the previous checkpoint {} is intact", prev->dir.string())
                  : std::string("no earlier checkpoint exists"));
    }
    return final_dir;
}

std::vector<fs::path> CheckpointStore::prune(int64_t limit, int64_t keep_step) {
    std::vector<fs::path> removed;
    std::error_code ec;
    for (const auto& p : partial()) {
        fs::remove_all(p, ec);
        if (!ec) removed.push_back(p);
    }
    auto all = complete();
    int64_t excess = static_cast<int64_t>(all.size()) - limit;
    for (const auto& c : all) {
        if (excess <= 0) break;
        if (c.step == keep_step) continue;
        fs::remove_all(c.dir, ec);
        if (ec) {
            log::warn(kLog, "could not delete old checkpoint {}: {}", c.dir.string(), ec.message());
            continue;
        }
        removed.push_back(c.dir);
        --excess;
    }
    for (const auto& r : removed) log::info(kLog, "deleted {}", r.string());
    return removed;
}

void CheckpointStore::verify(const fs::path& dir) {
    const fs::path mf = dir / kManifest;
    if (!fs::exists(mf))
        fail(kLog, "resume", "{} is not a complete checkpoint: {} is missing", dir.string(), kManifest);
    nlohmann::json m;
    try {
        m = nlohmann::json::parse(sdk::read_file(mf));
    } catch (const nlohmann::json::exception& e) {
        fail(kLog, "resume", "{}: invalid JSON: {}", mf.string(), e.what());
    }
    if (!m.contains("files") || !m["files"].is_object())
        fail(kLog, "resume", "{}: no 'files' object", mf.string());
    for (const auto& [rel, size] : m["files"].items()) {
        std::error_code ec;
        const auto actual = fs::file_size(dir / rel, ec);
        if (ec) fail(kLog, "resume", "checkpoint {} lacks {} listed in its manifest", dir.string(), rel);
        if (static_cast<int64_t>(actual) != size.get<int64_t>())
            fail(kLog, "resume", "checkpoint {}: {} has {} bytes but the manifest says {}", dir.string(), rel,
                 actual, size.get<int64_t>());
    }
}

}  // namespace st::host::train
