// FFmpeg plumbing (see ffmpeg.h).
#include "st/media/ffmpeg.h"

extern "C" {
#include <libavutil/log.h>
}

#include <fmt/format.h>

#include <algorithm>
#include <cstdarg>
#include <mutex>

#include "st/error.h"
#include "st/log.h"

namespace st::media {

namespace {
/// FFmpeg's own messages go to our logger at debug level (we report failures ourselves).
void av_log_to_st(void* avcl, int level, const char* fmt, va_list vl) {
    if (level > AV_LOG_WARNING || !log::enabled(log::Level::debug)) return;
    char line[1024];
    int print_prefix = 1;
    av_log_format_line(avcl, level, fmt, vl, line, sizeof(line), &print_prefix);
    std::string text(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (!text.empty()) log::write(log::Level::debug, "ffmpeg", text);
}

}  // namespace

void init_ffmpeg_logging() {
    static std::once_flag once;
    std::call_once(once, [] { av_log_set_callback(av_log_to_st); });
}

[[noreturn]] void media_fail(const std::filesystem::path& path, const std::string& reason) {
    throw Error("media", "decode", fmt::format("{}: {}", path.string(), reason));
}

FormatPtr open_input(const std::filesystem::path& path) {
    init_ffmpeg_logging();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) media_fail(path, "not a regular file");
    if (std::filesystem::file_size(path, ec) == 0) media_fail(path, "empty file (0 bytes)");
    AVFormatContext* raw = nullptr;
    int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    if (rc < 0) media_fail(path, "not a readable media file (" + av_error_text(rc) + ")");
    FormatPtr fmt(raw);
    rc = avformat_find_stream_info(raw, nullptr);
    if (rc < 0) media_fail(path, "cannot read stream information (" + av_error_text(rc) + ")");
    return fmt;
}

CodecPtr open_decoder(const std::filesystem::path& path, AVStream* st, int threads) {
    const AVCodec* codec = avcodec_find_decoder(st->codecpar->codec_id);
    if (!codec)
        media_fail(path, fmt::format("no decoder for codec '{}'", avcodec_get_name(st->codecpar->codec_id)));
    CodecPtr ctx(avcodec_alloc_context3(codec));
    if (!ctx) media_fail(path, "out of memory allocating a decoder");
    int rc = avcodec_parameters_to_context(ctx.get(), st->codecpar);
    if (rc < 0) media_fail(path, "bad codec parameters (" + av_error_text(rc) + ")");
    ctx->pkt_timebase = st->time_base;
    ctx->thread_count = std::max(1, threads);
    rc = avcodec_open2(ctx.get(), codec, nullptr);
    if (rc < 0)
        media_fail(path, fmt::format("cannot open the {} decoder ({})", codec->name, av_error_text(rc)));
    return ctx;
}

double to_seconds(int64_t ts, AVRational tb) {
    return static_cast<double>(ts) * av_q2d(tb);
}

std::string av_error_text(int code) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, buf, sizeof(buf));
    return buf;
}

}  // namespace st::media
