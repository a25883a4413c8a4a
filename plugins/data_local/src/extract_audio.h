// `st-host extract-audio`: the equivalent of SimpleTuner's scripts/generate_s2v_audio.py, through
// the FFmpeg libraries: every video in `input_dir` (non-recursive, like the script) gets a 16 kHz
// mono `<stem>.wav|flac` in `output_dir`; videos without audio are skipped; `strip_audio` rewrites
// each processed video without its audio track (stream copy, atomic replace).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace st::plugins::data_local {

struct ExtractAudioReport {
    std::vector<std::string> written;   ///< output files
    std::vector<std::string> skipped;   ///< "<file>: <reason>"
    std::vector<std::string> stripped;  ///< videos rewritten without audio
};

/// format: "wav" (PCM s16le) or "flac". Throws st::Error for bad arguments (missing input dir,
/// unknown format); per-file problems are skipped, logged and listed in the report.
ExtractAudioReport run_extract_audio(const std::filesystem::path& input_dir,
                                     const std::filesystem::path& output_dir, bool strip_audio,
                                     const std::string& format);

/// Writes mono int16 samples as `format` ("wav" or "flac") with libavformat/libavcodec (atomic).
void write_audio_file(const std::filesystem::path& path, const std::vector<int16_t>& samples, int sample_rate,
                      const std::string& format);

/// Copies every stream except audio into a new file with the same container (no re-encode).
void remux_without_audio(const std::filesystem::path& input, const std::filesystem::path& output);

}  // namespace st::plugins::data_local
