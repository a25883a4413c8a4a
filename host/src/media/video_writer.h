// Validation media output: MP4 (H.264 + optional AAC) and PNG, encoded in-process with the FFmpeg
// libraries (libavformat/libavcodec/libswscale/libswresample; never the ffmpeg CLI).
//
// Who calls: validation and generation in the host, after the VAE decode. Every writer is atomic:
// it writes `<out>.tmp-<pid>` in the destination directory and renames it over `out` at the end, so a
// crash or an error never leaves a half-written file under the final name. On error the temporary
// file is removed and st::Error("host.media", ...) names the output path and the FFmpeg error text.
// The parent directory must exist (the writers do not create directories).
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>

namespace st::host::media {

/// An audio track to mux next to the video (Wan S2V validation: the driving audio).
struct AudioTrack {
    /// float (any floating dtype) in [-1, 1]: [N] mono or [C, N] with 1 <= C <= 8 channels.
    at::Tensor samples;
    /// Samples per second of `samples`. Kept when the AAC encoder supports it (8000 ... 96000 in the
    /// MPEG-4 list, e.g. 16000), otherwise resampled to 48000 with libswresample.
    int sample_rate = 0;
};

/// Converts a decoded video as the VAE returns it, float [3, F, H, W] or [1, 3, F, H, W] in [-1, 1],
/// into uint8 frames [F, H, W, 3] RGB on the CPU: round((clamp(x / 2 + 0.5, 0, 1)) * 255), as
/// diffusers' VideoProcessor.postprocess_video + numpy_to_pil do. Throws st::Error naming the expected
/// shape when the input is not a floating [3, F, H, W] / [1, 3, F, H, W] tensor.
at::Tensor frames_to_uint8(const at::Tensor& video);

/// Encodes uint8 frames [F, H, W, 3] RGB (any device; copied to the CPU) as H.264 yuv420p in an MP4
/// at exactly `fps` frames per second (codec time base 1/fps, F frames, r_frame_rate fps/1), moov atom
/// at the front (faststart) so browsers can stream it. Encoder: libx264 at CRF 18 (visually lossless),
/// else FFmpeg's default H.264 encoder; none -> st::Error.
///
/// Odd sizes: yuv420p needs an even width and height, so an odd width/height is padded by one
/// column/row that replicates the last one (no scaling, pixels stay where they are): a 65x37 input
/// gives a 66x38 video. Colour: BT.601 limited range (tagged smpte170m in the stream).
///
/// `audio` (optional) is muxed as AAC (FFmpeg's native `aac` encoder, fltp) with its own duration;
/// it is not trimmed or padded to the video length.
void write_mp4(const std::filesystem::path& out, const at::Tensor& frames_u8, int fps,
               const AudioTrack* audio = nullptr);

/// Writes one uint8 frame [H, W, 3] RGB as an 8-bit RGB PNG (lossless) through libavcodec's png
/// encoder. Atomic like write_mp4.
void write_png(const std::filesystem::path& out, const at::Tensor& frame_u8);

}  // namespace st::host::media
