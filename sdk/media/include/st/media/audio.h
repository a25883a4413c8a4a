// Audio of any file FFmpeg reads (WAV, FLAC, MP3, an MP4's AAC track, ...): its first audio stream,
// mixed to mono and resampled with libswresample. Used for speech-to-video caching (data_local),
// validation's driving audio and `st-host generate --audio` (host), and extract-audio.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace st::media {

struct AudioWindow {
    at::Tensor waveform;  ///< float32 [samples] mono in [-1, 1], zero where there is no audio
    int64_t covered = 0;  ///< samples of the window that the track really covered
    int64_t samples = 0;  ///< length of the window: round(duration * sample_rate)
};

/// The window [start, start + duration) of the file's timeline (seconds) at `sample_rate` mono.
/// `start` may lie before the track starts or the window past its end (zeros there). st::Error naming
/// the file when it cannot be opened, has no audio stream, or nothing decodes.
AudioWindow decode_audio_window(const std::filesystem::path& path, int sample_rate, double start,
                                double duration);

/// The whole audio track as mono int16 at `sample_rate`. st::Error as above.
std::vector<int16_t> decode_audio_s16(const std::filesystem::path& path, int sample_rate);

}  // namespace st::media
