// read_first_frame: the conditioning image of image-to-video validation / generation, decoded with
// the FFmpeg libraries (an image file or the first frame of a video clip).
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "st/error.h"
#include "st/files.h"
#include "validate/sampling.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}

namespace st::host::validate {

namespace {

std::string av_error(int code) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, buf, sizeof buf);
    return buf;
}

struct FormatCloser {
    void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecFreer {
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFreer {
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFreer {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFreer {
    void operator()(SwsContext* s) const { sws_freeContext(s); }
};

}  // namespace

at::Tensor read_first_frame(const std::filesystem::path& path) {
    // file -> [H, W, 3] uint8 RGB
    const std::string file = path.string();
    auto bad = [&](const std::string& what, int code) {
        fail("host.validate", "image", "cannot read the conditioning image '{}': {}{}", file, what,
             code ? ": " + av_error(code) : std::string());
    };
    sdk::require_regular_file(path, "a conditioning image or video", "host.validate");
    AVFormatContext* raw = nullptr;
    if (int r = avformat_open_input(&raw, file.c_str(), nullptr, nullptr); r < 0) bad("open failed", r);
    std::unique_ptr<AVFormatContext, FormatCloser> fmt(raw);
    if (int r = avformat_find_stream_info(fmt.get(), nullptr); r < 0) bad("no stream information", r);
    const int stream = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    if (stream < 0) bad("no image or video stream", stream);
    const AVCodecParameters* par = fmt->streams[stream]->codecpar;
    const AVCodec* codec = avcodec_find_decoder(par->codec_id);
    if (!codec) bad("no decoder for its codec", 0);
    std::unique_ptr<AVCodecContext, CodecFreer> dec(avcodec_alloc_context3(codec));
    if (int r = avcodec_parameters_to_context(dec.get(), par); r < 0) bad("decoder set-up failed", r);
    if (int r = avcodec_open2(dec.get(), codec, nullptr); r < 0) bad("decoder open failed", r);

    std::unique_ptr<AVFrame, FrameFreer> frame(av_frame_alloc());
    std::unique_ptr<AVPacket, PacketFreer> pkt(av_packet_alloc());
    bool got = false, flushing = false;
    while (!got) {
        if (!flushing) {
            const int r = av_read_frame(fmt.get(), pkt.get());
            if (r < 0) {
                flushing = true;
                avcodec_send_packet(dec.get(), nullptr);
            } else {
                if (pkt->stream_index == stream) avcodec_send_packet(dec.get(), pkt.get());
                av_packet_unref(pkt.get());
            }
        }
        const int r = avcodec_receive_frame(dec.get(), frame.get());
        if (r == 0) {
            got = true;
        } else if (r == AVERROR_EOF || (flushing && r == AVERROR(EAGAIN))) {
            bad("no frame could be decoded", r == AVERROR_EOF ? 0 : r);
        } else if (r != AVERROR(EAGAIN)) {
            bad("decoding failed", r);
        }
    }
    const int w = frame->width, h = frame->height;
    std::unique_ptr<SwsContext, SwsFreer> sws(sws_getContext(w, h, static_cast<AVPixelFormat>(frame->format),
                                                             w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr,
                                                             nullptr, nullptr));
    if (!sws) bad("no conversion to RGB", 0);
    at::Tensor out = at::empty({h, w, 3}, at::TensorOptions().dtype(at::kByte));
    uint8_t* dst[4] = {out.data_ptr<uint8_t>(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {3 * w, 0, 0, 0};
    sws_scale(sws.get(), frame->data, frame->linesize, 0, h, dst, dst_stride);
    return out;
}

}  // namespace st::host::validate
