#include "train/checkpoint_manager.h"

#include <fmt/format.h>

#include <chrono>

#include "st/error.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.checkpoint";
}

CheckpointManager::CheckpointManager(fs::path output_dir, int64_t interval, int64_t limit)
    : output_dir_(std::move(output_dir)), interval_(interval), limit_(limit), store_(output_dir_) {}

void CheckpointManager::report_leftovers() const {
    for (const auto& p : store_.partial())
        log::warn(
            kLog,
            "ignoring {}: an incomplete checkpoint st left at an interrupted save (deleted at the next save)",
            p.string());
    for (const auto& f : store_.foreign())
        log::warn(kLog, "{} was written by {}, not st: it is left as it is (never pruned or replaced)",
                  f.dir.string(), f.writer);
}

std::optional<fs::path> CheckpointManager::resume_dir(const std::string& resume) const {
    if (resume == "none") {
        log::info(kLog, "resume_from_checkpoint none: a fresh run");
        return std::nullopt;
    }
    if (resume == "latest") {
        const auto latest = store_.latest();
        // SimpleTuner resumes the newest checkpoint-<step> whoever wrote it: when that one is not st's,
        // starting fresh (or from an older st checkpoint) would silently drop the user's progress, so
        // say what st can take from it instead.
        std::optional<ForeignCheckpoint> newer;
        for (const auto& f : store_.foreign())
            if (f.step && (!latest || *f.step > latest->step) && (!newer || *f.step > *newer->step))
                newer = f;
        if (newer) {
            log::error(kLog,
                       "resume_from_checkpoint latest: the newest checkpoint in {} is {}, written by {}",
                       output_dir_.string(), newer->dir.filename().string(), newer->writer);
            CheckpointStore::verify(newer->dir);
        }
        if (!latest) {
            log::info(kLog, "no checkpoint in {}: a fresh run", output_dir_.string());
            return std::nullopt;
        }
        return latest->dir;
    }
    fs::path dir = resume;
    if (dir.is_relative() && !fs::exists(dir)) dir = output_dir_ / dir;
    if (!fs::is_directory(dir))
        fail(kLog, "resume", "resume_from_checkpoint '{}' is not a checkpoint directory", resume);
    return dir;
}

void CheckpointManager::check_foreign(int64_t from_step, int64_t total_steps) const {
    for (const auto& f : store_.foreign()) {
        if (!f.step || *f.step <= from_step || *f.step > total_steps) continue;
        if (*f.step % interval_ == 0 || *f.step == total_steps)
            fail(kLog, "setup",
                 "{} (written by {}) is where this run saves its step-{} checkpoint, and st never replaces "
                 "a checkpoint it did not write: move that folder away or choose another output_dir",
                 f.dir.string(), f.writer, *f.step);
    }
}

bool CheckpointManager::due(int64_t step, int64_t total_steps) const {
    return step > 0 && step % interval_ == 0 && step < total_steps;
}

std::optional<fs::path> CheckpointManager::save(int64_t step,
                                                const std::function<void(const fs::path&)>& fill,
                                                const std::string& why) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
        const fs::path dir = store_.write(step, fill);
        last_step_ = step;
        log::info(kLog, "checkpoint {} written ({}) in {:.2f} s", dir.string(), why,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        store_.prune(limit_, step);
        return dir;
    } catch (const std::exception& e) {
        failed_ = true;
        last_error_ = e.what();
        log::error(kLog, "{}", e.what());
        return std::nullopt;
    }
}

}  // namespace st::host::train
