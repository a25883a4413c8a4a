// output_dir/metrics.jsonl: one JSON object per optimizer step (and extra lines such as eval loss),
// appended and flushed line by line so a killed run keeps every finished step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace st::host::train {

class MetricsWriter {
  public:
    /// Opens `path` for appending. When resuming at `resume_step`, lines of steps after it (work
    /// the resumed run repeats) are dropped first; a last line without its newline gets one, so the
    /// next line starts on its own. st::Error naming the path when it cannot.
    MetricsWriter(std::filesystem::path path, int64_t resume_step);
    ~MetricsWriter();
    MetricsWriter(const MetricsWriter&) = delete;
    MetricsWriter& operator=(const MetricsWriter&) = delete;

    /// Appends one line. A failed write is logged once and never stops training.
    void write(const nlohmann::json& line);
    const std::filesystem::path& path() const { return path_; }

  private:
    void write_text(const std::string& text);

    std::filesystem::path path_;
    std::FILE* file_ = nullptr;
    bool warned_ = false;
};

}  // namespace st::host::train
