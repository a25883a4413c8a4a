// Driving audio for speech-to-video validation and `st-host generate --audio`: decodes the first
// audio stream of any file FFmpeg reads (WAV, FLAC, MP3, an MP4's AAC track, ...), mixes it to mono
// and resamples it with libswresample. FFmpeg libraries only, never the ffmpeg CLI.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>

namespace st::host::media {

struct AudioClip {
    at::Tensor samples;  ///< float [N] mono in [-1, 1], N = round(duration * sample_rate)
    int sample_rate = 0;
    int64_t covered = 0;  ///< samples that came from the file (the rest are zeros: the file ended)
};

/// The window [start, start + duration) seconds of the file's timeline, resampled to
/// `sample_rate` mono. Throws st::Error naming the file when it cannot be opened, has no audio
/// stream, or nothing decodes.
AudioClip read_audio(const std::filesystem::path& path, int sample_rate, double start, double duration);

}  // namespace st::host::media
