#include "train/checkpoint_store.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <regex>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/log.h"
#include "train/file_hash.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "checkpoint_manifest.json";
// Created first in st's temporary directory and removed once the manifest is in place: proof that a
// `checkpoint-*-tmp` left by a crash is st's to delete.
constexpr const char* kInProgress = ".st-checkpoint-in-progress";
constexpr const char* kFormat = "st-checkpoint-1";
constexpr const char* kLog = "host.checkpoint";
// The manifest's per-file content checksums (XXH64 of the bytes, 16 hex digits), beside the sizes in
// "files" so older st versions still read the manifest. Manifests from before checksums lack it.
constexpr const char* kChecksums = "xxh64";

std::optional<int64_t> step_of(const std::string& name) {
    static const std::regex re("checkpoint-([0-9]{1,18})");
    std::smatch m;
    if (!std::regex_match(name, m, re)) return std::nullopt;
    return std::stoll(m[1].str());
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Every directory of `root` whose name starts with checkpoint-, sorted by name.
std::vector<fs::path> checkpoint_dirs(const fs::path& root) {
    std::vector<fs::path> out;
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return out;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        std::error_code dir_ec;
        if (!e.is_directory(dir_ec) || e.is_symlink(dir_ec)) continue;
        if (e.path().filename().string().rfind("checkpoint-", 0) == 0) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool is_empty_dir(const fs::path& dir) {
    std::error_code ec;
    return fs::is_empty(dir, ec) && !ec;
}

// st's partial leftovers: a -tmp directory with st's marker or manifest, or an empty one; and an empty
// checkpoint-N, which a kill between the last two removals of a prune leaves (nothing in it to lose).
bool st_partial(const fs::path& dir) {
    if (!ends_with(dir.filename().string(), "-tmp")) return is_empty_dir(dir);
    std::error_code ec;
    return fs::exists(dir / kInProgress, ec) || CheckpointStore::written_by_st(dir) || is_empty_dir(dir);
}

// Deletes a folder st owns with its proof of ownership (marker, manifest) last, so a kill in the
// middle leaves a folder st still recognises (and deletes at the next save) instead of an orphan.
void remove_owned(const fs::path& dir, std::error_code& ec) {
    ec.clear();
    std::vector<fs::path> rest;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const auto name = e.path().filename();
        if (name != kInProgress && name != kManifest) rest.push_back(e.path());
    }
    for (const auto& p : rest) fs::remove_all(p, ec);
    if (ec) return;
    fs::remove(dir / kManifest, ec);
    fs::remove(dir / kInProgress, ec);
    fs::remove(dir, ec);
}

}  // namespace

CheckpointStore::CheckpointStore(fs::path output_dir) : root_(std::move(output_dir)) {}

std::string CheckpointStore::dir_name(int64_t step) {
    return fmt::format("checkpoint-{}", step);
}

bool CheckpointStore::written_by_st(const fs::path& dir) {
    std::error_code ec;
    if (!fs::is_regular_file(dir / kManifest, ec)) return false;
    try {
        const std::string text = sdk::read_file(dir / kManifest);
        sdk::check_json_limits(text, (dir / kManifest).string(), kLog, "resume");
        const auto m = nlohmann::json::parse(text);
        return m.is_object() && m.value("format", std::string()) == kFormat;
    } catch (const std::exception&) {
        return false;
    }
}

std::string CheckpointStore::foreign_writer(const fs::path& dir) {
    // SimpleTuner's checkpoints (simpletuner/helpers/training/save_hooks.py and accelerate's
    // save_state) hold some of these; st writes none of them.
    for (const char* f : {".guard", "training_state.json", "optimizer.bin", "scheduler.bin",
                          "random_states_0.pkl", kManifest}) {
        std::error_code ec;
        if (fs::exists(dir / f, ec)) return "SimpleTuner";
    }
    return "another program";
}

std::vector<CheckpointRef> CheckpointStore::complete() const {
    std::vector<CheckpointRef> out;
    for (const auto& dir : checkpoint_dirs(root_)) {
        auto step = step_of(dir.filename().string());
        if (step && written_by_st(dir)) out.push_back({*step, dir});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
    return out;
}

std::vector<fs::path> CheckpointStore::partial() const {
    std::vector<fs::path> out;
    for (const auto& dir : checkpoint_dirs(root_))
        if (st_partial(dir)) out.push_back(dir);
    return out;
}

std::vector<ForeignCheckpoint> CheckpointStore::foreign() const {
    std::vector<ForeignCheckpoint> out;
    for (const auto& dir : checkpoint_dirs(root_)) {
        const std::string name = dir.filename().string();
        const auto step = step_of(name);
        if (step && written_by_st(dir)) continue;
        if (st_partial(dir)) continue;
        out.push_back({dir, step, foreign_writer(dir)});
    }
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
    if (fs::exists(final_dir, ec) && !written_by_st(final_dir))
        fail(kLog, "save",
             "checkpoint {} was not written ({} already exists and was written by {}, not st; st never "
             "replaces it: move it away or use another output_dir){}",
             final_dir.string(), final_dir.string(), foreign_writer(final_dir),
             latest() ? fmt::format("; the previous checkpoint {} is intact", latest()->dir.string())
                      : std::string());
    if (fs::exists(tmp, ec) && !st_partial(tmp))
        fail(kLog, "save",
             "checkpoint {} was not written: {} exists and was not written by st; st never deletes it",
             final_dir.string(), tmp.string());
    try {
        if (fs::exists(tmp)) remove_owned(tmp, ec);
        fs::create_directories(tmp, ec);
        if (ec) fail(kLog, "save", "cannot create {}: {}", tmp.string(), ec.message());
        // The marker exists from the first instant the folder is not empty (a plain create, not an
        // atomic write whose temporary file would come first) until the manifest is in place, so a
        // kill at any point leaves a folder st recognises as its own.
        if (!std::ofstream(tmp / kInProgress)) fail(kLog, "save", "cannot write in {}", tmp.string());
        fill(tmp);
        nlohmann::json files = nlohmann::json::object(), sums = nlohmann::json::object();
        for (const auto& e : fs::recursive_directory_iterator(tmp))
            if (e.is_regular_file() && e.path().filename() != kInProgress) {
                const std::string rel = fs::relative(e.path(), tmp).generic_string();
                files[rel] = static_cast<int64_t>(e.file_size());
                // Read back right after writing, from the page cache: about 0.2 s per GiB (XXH64
                // itself hashes ~12 GiB/s; measured on an AMD EPYC core), a few ms for a LoRA.
                sums[rel] = xxh64_hex(xxh64_file(e.path()));
            }
        nlohmann::json manifest = {{"format", kFormat}, {"step", step}, {"files", files}, {kChecksums, sums}};
        sdk::write_file_atomic(tmp / kManifest, manifest.dump(2) + "\n");
        fs::remove(tmp / kInProgress);
        sdk::sync_directory(tmp);
        if (fs::exists(final_dir)) {
            // Same step saved again (e.g. a stop right after resuming): swap, then drop the old one
            // (st's: checked above). The -old-tmp carries st's manifest, so a crash here leaves a
            // directory st recognises as its own partial.
            const fs::path old = root_ / (dir_name(step) + "-old-tmp");
            if (fs::exists(old) && !st_partial(old))
                fail(kLog, "save", "{} exists and was not written by st; st never deletes it", old.string());
            if (fs::exists(old)) remove_owned(old, ec);
            fs::rename(final_dir, old);
            fs::rename(tmp, final_dir);
            remove_owned(old, ec);
        } else {
            fs::rename(tmp, final_dir);
        }
        sdk::sync_directory(root_);
    } catch (const std::exception& e) {
        if (st_partial(tmp)) remove_owned(tmp, ec);
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
        remove_owned(p, ec);
        if (!ec) removed.push_back(p);
    }
    auto all = complete();
    int64_t excess = static_cast<int64_t>(all.size()) - limit;
    for (const auto& c : all) {
        if (excess <= 0) break;
        if (c.step == keep_step) continue;
        remove_owned(c.dir, ec);
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

uint64_t CheckpointStore::manifest_bytes(const fs::path& dir) {
    try {
        const std::string text = sdk::read_file(dir / kManifest);
        sdk::check_json_limits(text, (dir / kManifest).string(), kLog, "save");
        const auto m = nlohmann::json::parse(text);
        uint64_t total = 0;
        for (const auto& [rel, size] : m.at("files").items())
            if (size.is_number_unsigned()) total += size.get<uint64_t>();
        return total;
    } catch (const std::exception&) {
        return 0;
    }
}

void CheckpointStore::verify(const fs::path& dir) {
    const fs::path mf = dir / kManifest;
    if (!written_by_st(dir)) {
        std::error_code ec;
        if (!fs::exists(mf, ec) && foreign_writer(dir) != "SimpleTuner")
            fail(kLog, "resume", "{} is not a complete checkpoint: {} is missing", dir.string(), kManifest);
        fail(kLog, "resume",
             "{} was written by {}, not st: it has no st manifest whose sizes and checksums could be "
             "checked (resume_from_checkpoint reads SimpleTuner's checkpoints through their own files)",
             dir.string(), foreign_writer(dir));
    }
    nlohmann::json m;
    try {
        const std::string text = sdk::read_file(mf);
        sdk::check_json_limits(text, mf.string(), kLog, "resume");
        m = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail(kLog, "resume", "{}: invalid JSON: {}", mf.string(), e.what());
    }
    if (!m.contains("files") || !m["files"].is_object())
        fail(kLog, "resume", "{}: no 'files' object", mf.string());
    const bool has_sums = m.contains(kChecksums);
    if (has_sums && !m[kChecksums].is_object())
        fail(kLog, "resume", "{}: '{}' is not an object", mf.string(), kChecksums);
    for (const auto& [rel, size] : m["files"].items()) {
        // st lists only files inside the checkpoint: anything else is a damaged or forged manifest.
        const fs::path rel_path(rel);
        if (rel_path.empty() || rel_path.is_absolute() ||
            std::any_of(rel_path.begin(), rel_path.end(), [](const fs::path& p) { return p == ".."; }))
            fail(kLog, "resume", "{} lists '{}', which is not a file inside the checkpoint", mf.string(),
                 rel);
        std::error_code ec;
        const auto actual = fs::file_size(dir / rel, ec);
        if (ec) fail(kLog, "resume", "checkpoint {} lacks {} listed in its manifest", dir.string(), rel);
        if (!size.is_number_integer() || static_cast<int64_t>(actual) != size.get<int64_t>())
            fail(kLog, "resume", "checkpoint {} is damaged: {} has {} bytes but the manifest says {}",
                 dir.string(), rel, actual, size.dump());
        if (!has_sums) continue;
        const auto want = m[kChecksums].find(rel);
        if (want == m[kChecksums].end() || !want->is_string())
            fail(kLog, "resume", "checkpoint {} is damaged: its manifest records no checksum for {}",
                 dir.string(), rel);
        const std::string got = xxh64_hex(xxh64_file(dir / rel));
        if (got != want->get<std::string>())
            fail(kLog, "resume",
                 "checkpoint {} is damaged: {} has the checksum (XXH64) {} but the manifest recorded {} when "
                 "it was written: its content changed since",
                 dir.string(), rel, got, want->get<std::string>());
    }
    if (!has_sums)
        log::warn(kLog,
                  "{} predates checksums in checkpoint manifests: only the sizes of its files were checked",
                  dir.string());
}

}  // namespace st::host::train
