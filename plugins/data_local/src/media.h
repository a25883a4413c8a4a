// Media access through the FFmpeg libraries (libavformat/libavcodec/libswscale/libswresample):
// probing (streams, rotation, frame timestamps), video decode to a constant-rate frame grid with
// resize + crop, and audio decode + resample to mono float. Never the ffmpeg CLI.
//
// Bad media throws st::Error (component "media") whose message is the skip reason; the
// discovery/caching code catches it, logs one line naming the file and counts it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "geometry.h"
#include "st/media/audio.h"

namespace st::plugins::data_local {

struct MediaInfo {
    bool has_video = false;
    bool is_still_image = false;  ///< single-frame image (png/jpg/webp/...) read through FFmpeg
    Size coded;                   ///< decoder frame size
    Size display;                 ///< width x pixel_aspect, then rotation metadata (what the viewer sees)
    double pixel_aspect = 1.0;    ///< sample aspect ratio (SAR) of the stored pixels
    int rotation = 0;             ///< clockwise degrees to apply for display: 0, 90, 180, 270
    double fps = 0.0;             ///< frame rate of the constant-rate grid frames are chosen on
    double start_time = 0.0;      ///< first video timestamp (seconds, container timeline)
    double end_time = 0.0;        ///< last video timestamp + one frame duration
    int64_t packets = 0;          ///< video packets seen in the file
    int64_t grid_frames = 0;      ///< frames on the grid between start_time and end_time
    bool variable_frame_rate = false;
    /// The file's timestamps cannot place frames (raw MPEG-1/2 elementary streams: no container
    /// clock, no start time, no duration): frame i of the file is shown at start_time + i / fps.
    bool frame_clock = false;
    std::string video_codec;
    bool has_audio = false;
    double audio_start = 0.0;
    double audio_duration = 0.0;
    int audio_sample_rate = 0;
    int audio_channels = 0;
    std::string audio_codec;
};

/// Opens the file, reads stream parameters and every video packet timestamp (demux only, no decode).
/// Throws st::Error with the reason for unreadable / non-video input (audio-only files are returned
/// with has_video false so audio datasets can use the same probe).
MediaInfo probe_media(const std::filesystem::path& path);

/// Decodes `count` frames of the grid starting at grid index `first` (times start_time + i / fps,
/// each the latest frame shown at that time; frames without a pts follow their predecessor by 1 / fps; a
/// seek that lands after the first frame wanted or off a key frame is retried earlier, then replaced by
/// decoding from the start), applies rotation, resizes with `plan.resized` (area
/// filter when shrinking, bicubic when enlarging) and crops `plan.target`.
/// Returns uint8 [count, H, W, 3] RGB. `threads` = decoder threads (1 inside a worker pool).
at::Tensor decode_video(const std::filesystem::path& path, const MediaInfo& info, int64_t first,
                        int64_t count, const ResizePlan& plan, int threads = 1);

// Audio decoding and FFmpeg error texts live in the shared media library (sdk/media).
using st::media::AudioWindow;
using st::media::decode_audio_s16;
using st::media::decode_audio_window;

}  // namespace st::plugins::data_local
