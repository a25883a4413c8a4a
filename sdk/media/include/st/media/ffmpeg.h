// FFmpeg (libav*) plumbing every media reader of st shares: owning pointers, opening an input and a
// decoder with errors that name the file, FFmpeg's own log routed to st's logger at debug level.
// Includes the FFmpeg C headers: only for .cpp files that decode or encode media.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswresample/swresample.h>
}

#include <filesystem>
#include <memory>
#include <string>

namespace st::media {

struct FormatCloser {
    void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecCloser {
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameCloser {
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketCloser {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwrCloser {
    void operator()(SwrContext* s) const { swr_free(&s); }
};
using FormatPtr = std::unique_ptr<AVFormatContext, FormatCloser>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecCloser>;
using FramePtr = std::unique_ptr<AVFrame, FrameCloser>;
using PacketPtr = std::unique_ptr<AVPacket, PacketCloser>;
using SwrPtr = std::unique_ptr<SwrContext, SwrCloser>;

/// Routes FFmpeg's log to st's logger (debug level; failures are reported by st itself). Idempotent.
void init_ffmpeg_logging();
/// Text of an FFmpeg error code.
std::string av_error_text(int code);
/// st::Error("media", "decode", "<path>: <reason>").
[[noreturn]] void media_fail(const std::filesystem::path& path, const std::string& reason);
/// Opens a regular, non-empty media file and reads its stream information (st::Error naming the
/// file otherwise: FIFOs and devices are refused before FFmpeg could block on them).
FormatPtr open_input(const std::filesystem::path& path);
/// An open decoder for `stream` with `threads` decoding threads.
CodecPtr open_decoder(const std::filesystem::path& path, AVStream* stream, int threads);
/// `ts` in `tb` units as seconds.
double to_seconds(int64_t ts, AVRational tb);

}  // namespace st::media
