#include "train/checkpoint_manager.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <vector>

#include "st/error.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.checkpoint";

std::string bytes_text(uint64_t n) {
    if (n < 1024) return fmt::format("{} bytes", n);
    const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n) / 1024;
    size_t u = 0;
    for (; v >= 1024 && u + 1 < std::size(units); ++u) v /= 1024;
    return fmt::format("{:.1f} {} ({} bytes)", v, units[u], n);
}

// The message without st::Error's "[component] phase: " prefix, for text that adds its own context.
std::string message_of(const std::exception& e) {
    const auto* st_error = dynamic_cast<const Error*>(&e);
    return st_error ? st_error->message() : e.what();
}
}  // namespace

CheckpointManager::CheckpointManager(fs::path output_dir, int64_t interval, int64_t limit)
    : output_dir_(std::move(output_dir)), interval_(interval), limit_(limit), store_(output_dir_) {}

void CheckpointManager::report_leftovers() const {
    for (const auto& p : store_.partial())
        log::warn(
            kLog,
            "ignoring {}: an incomplete checkpoint st left at an interrupted save (deleted before training)",
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
            if (newer->writer == "SimpleTuner") {
                log::info(kLog,
                          "resume_from_checkpoint latest: the newest checkpoint in {} is {}, written by "
                          "SimpleTuner: st continues from it (what carries over is listed below)",
                          output_dir_.string(), newer->dir.filename().string());
                return newer->dir;
            }
            log::error(kLog,
                       "resume_from_checkpoint latest: the newest checkpoint in {} is {}, written by {}",
                       output_dir_.string(), newer->dir.filename().string(), newer->writer);
            CheckpointStore::verify(newer->dir);
        }
        if (!latest) {
            log::info(kLog, "no checkpoint in {}: a fresh run", output_dir_.string());
            return std::nullopt;
        }
        // Newest first: a damaged checkpoint (a file changed after it was written) is named and the
        // previous complete one is taken; it is left on disk for inspection (the run saves over it
        // when it reaches that step again).
        const auto all = store_.complete();
        std::vector<std::string> damaged;
        for (auto it = all.rbegin(); it != all.rend(); ++it) {
            try {
                CheckpointStore::verify(it->dir);
            } catch (const std::exception& e) {
                log::warn(kLog, "resume_from_checkpoint latest: {}; trying the previous checkpoint",
                          message_of(e));
                damaged.push_back(it->dir.filename().string());
                continue;
            }
            if (!damaged.empty())
                log::warn(kLog, "resuming from {} (step {}) instead of the damaged {}", it->dir.string(),
                          it->step, fmt::format("{}", fmt::join(damaged, ", ")));
            return it->dir;
        }
        fail(kLog, "resume",
             "resume_from_checkpoint latest: every checkpoint in {} is damaged ({}; see the warnings above); "
             "set resume_from_checkpoint none to start over",
             output_dir_.string(), fmt::format("{}", fmt::join(damaged, ", ")));
    }
    fs::path dir = resume;
    if (dir.is_relative() && !fs::exists(dir)) dir = output_dir_ / dir;
    if (!fs::is_directory(dir))
        fail(kLog, "resume", "resume_from_checkpoint '{}' is not a checkpoint directory", resume);
    // A folder st did not write: SimpleTuner's is carried over where the formats allow (the trainer
    // reads it); anything else is named by verify.
    if (!CheckpointStore::written_by_st(dir)) {
        if (CheckpointStore::foreign_writer(dir) == "SimpleTuner") return dir;
        CheckpointStore::verify(dir);
    }
    try {
        CheckpointStore::verify(dir);
    } catch (const std::exception& e) {
        // The user named this one: taking another would silently train from a different step.
        fail(kLog, "resume",
             "resume_from_checkpoint {}: {}; st does not pick another checkpoint when one is named: name "
             "an intact one or use latest (which falls back to the newest intact one)",
             resume, message_of(e));
    }
    return dir;
}

void CheckpointManager::prune_at_start(int64_t keep_step) {
    const auto removed = store_.prune(limit_, keep_step);
    if (!removed.empty())
        log::info(kLog,
                  "before training: {} folder(s) deleted (checkpoints_total_limit {}, interrupted saves)",
                  removed.size(), limit_);
}

std::string CheckpointManager::newest_on_disk(int64_t total_steps) const {
    const auto latest = store_.latest();
    if (!latest) return fmt::format("no checkpoint exists in {}", output_dir_.string());
    return fmt::format("the newest checkpoint on disk is {} (step {} of {})", latest->dir.string(),
                       latest->step, total_steps);
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
                                                const std::string& why, uint64_t expected_bytes) {
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
        // Whatever the cause, say what the next try needs: on a full disk the user must free this much.
        if (const auto latest = store_.latest())
            expected_bytes = std::max(expected_bytes, CheckpointStore::manifest_bytes(latest->dir));
        std::error_code ec;
        const fs::space_info space = fs::space(output_dir_, ec);
        if (expected_bytes > 0)
            last_error_ += fmt::format("; a checkpoint needs about {}", bytes_text(expected_bytes));
        if (!ec)
            last_error_ += fmt::format("{}{} has {} free", expected_bytes > 0 ? " and " : "; ",
                                       output_dir_.string(), bytes_text(space.available));
        log::error(kLog, "{}", last_error_);
        return std::nullopt;
    }
}

}  // namespace st::host::train
