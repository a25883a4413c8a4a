// TensorBoard event files (`report_to tensorboard` or `all`), written without TensorFlow.
//
// Layout as SimpleTuner's (accelerate's TensorBoardTracker -> torch SummaryWriter):
// output_dir/<logging_dir>/<tracker_project_name>/events.out.tfevents.<seconds>.<host>.<pid>.0.
// A file is a sequence of TFRecords (u64 length, masked CRC32C of the length, the bytes, masked
// CRC32C of the bytes) holding serialized tensorflow.Event protobufs (tensorboard/compat/proto/
// event.proto, summary.proto): first {wall_time, file_version "brain.Event:2"}, then one Event per
// step with Summary.Value {tag, simple_value} scalars, and Summary.Image PNGs of validation frames.
// A resumed run first writes SessionLog START at its first step, which makes TensorBoard drop the
// points an interrupted run wrote past its checkpoint (torch's SummaryWriter(purge_step=)).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace st::host::train {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), and TFRecord's mask of it.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
std::string tfrecord(const std::string& data);

/// Serialized tensorflow.Event messages.
std::string event_file_version(double wall_time);
std::string event_session_start(double wall_time, int64_t step);
std::string event_scalars(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>>& values);
std::string event_image(double wall_time, int64_t step, const std::string& tag, int height, int width,
                        const std::string& png);

/// Numbers of a metrics.jsonl line as TensorBoard tags: nested keys joined by '/' ("time/forward",
/// "loss_terms/crepa"); "step" and non-numbers are left out; booleans are not scalars.
std::vector<std::pair<std::string, float>> json_scalars(const nlohmann::json& line);

class TensorBoardWriter {
  public:
    /// Creates `dir` and a new event file in it. `resume_step` > 0: the first event is SessionLog
    /// START at resume_step + 1. st::Error naming the file when it cannot be created.
    TensorBoardWriter(const std::filesystem::path& dir, int64_t resume_step);
    ~TensorBoardWriter();
    TensorBoardWriter(const TensorBoardWriter&) = delete;
    TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

    /// One metrics line (its "step" is the event step; lines without one are skipped).
    void write_metrics(const nlohmann::json& line);
    void write_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& values);
    /// A PNG file (a validation video's first frame) as an image under `tag`; width and height are read
    /// from its IHDR chunk. A file that is not a PNG is logged and skipped.
    void write_png_file(int64_t step, const std::string& tag, const std::filesystem::path& png);

    const std::filesystem::path& file() const { return file_; }

  private:
    void write_event(const std::string& event);

    std::filesystem::path file_;
    std::FILE* out_ = nullptr;
    bool warned_ = false;
};

}  // namespace st::host::train
