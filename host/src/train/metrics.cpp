#include "train/metrics.h"

#include <fstream>
#include <sstream>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

MetricsWriter::MetricsWriter(fs::path path, int64_t resume_step) : path_(std::move(path)) {
    if (fs::exists(path_)) {
        // Keep the history up to the resumed step; later lines belong to steps that run again.
        std::istringstream in(sdk::read_file(path_));
        std::string kept, line;
        int64_t dropped = 0;
        while (std::getline(in, line)) {
            if (line.empty()) continue;
            bool keep = true;
            try {
                sdk::check_json_limits(line, "metrics.jsonl", "host.train", "resume");
                auto j = nlohmann::json::parse(line);
                keep = !j.contains("step") || j["step"].get<int64_t>() <= resume_step;
            } catch (const std::exception&) {
                keep = false;  // a line cut short by a crash
            }
            if (keep)
                kept += line + "\n";
            else
                ++dropped;
        }
        if (dropped > 0) {
            sdk::write_file_atomic(path_, kept);
            log::info("host.train", "{}: dropped {} line(s) after step {} (they are trained again)",
                      path_.string(), dropped, resume_step);
        }
    }
    // A last line that lost its newline (a crash, a disk full, an editor) would get the next line
    // glued on: start on a fresh line.
    bool needs_newline = false;
    if (std::ifstream in(path_, std::ios::binary); in && in.seekg(-1, std::ios::end)) {
        char last = '\n';
        needs_newline = in.get(last) && last != '\n';
    }
    file_ = std::fopen(path_.c_str(), "a");
    if (!file_) fail("host.train", "metrics", "cannot open {} for appending", path_.string());
    if (needs_newline) write_text("\n");
}

MetricsWriter::~MetricsWriter() {
    if (file_) std::fclose(file_);
}

void MetricsWriter::write(const nlohmann::json& line) {
    write_text(line.dump() + "\n");
}

void MetricsWriter::write_text(const std::string& text) {
    const bool ok = std::fwrite(text.data(), 1, text.size(), file_) == text.size() && std::fflush(file_) == 0;
    if (!ok && !warned_) {
        warned_ = true;
        log::warn("host.train", "cannot write {} (disk full?); training continues without metrics lines",
                  path_.string());
    }
}

}  // namespace st::host::train
