// MP4/PNG writers on the FFmpeg libraries. The encode loop follows FFmpeg's
// doc/examples/mux.c (send_frame/receive_packet, av_packet_rescale_ts, av_interleaved_write_frame).
#include "media/video_writer.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "st/error.h"
#include "st/log.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

namespace fs = std::filesystem;

namespace st::host::media {
namespace {

constexpr const char* kComponent = "host.media";

std::string av_error_text(int code) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, buf, sizeof(buf));
    return buf;
}

// Throws st::Error naming the output path, the step and FFmpeg's error string when ret < 0.
int check(int ret, const fs::path& out, const char* phase, const std::string& step) {
    if (ret < 0) fail(kComponent, phase, "{}: {} failed: {}", out.string(), step, av_error_text(ret));
    return ret;
}

// FFmpeg logs at AV_LOG_INFO by default (x264 prints its stats on every close); keep warnings and
// errors only, unless the process already chose a level.
void quiet_ffmpeg_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_WARNING);
    });
}

struct CodecCtxFree {
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFree {
    void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct SwrFree {
    void operator()(SwrContext* s) const { swr_free(&s); }
};
using CodecCtxPtr = std::unique_ptr<AVCodecContext, CodecCtxFree>;
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;

// Output container: closes the file (if opened) and frees the context.
struct OutputFile {
    AVFormatContext* ctx = nullptr;
    bool opened = false;
    ~OutputFile() {
        if (ctx) {
            if (opened) avio_closep(&ctx->pb);
            avformat_free_context(ctx);
        }
    }
};

// `<out>.tmp-<pid>` next to `out`; removed on destruction unless commit() renamed it over `out`.
class TempFile {
  public:
    explicit TempFile(const fs::path& out) : out_(out) {
        tmp_ = out;
        tmp_ += ".tmp-" + std::to_string(::getpid());
    }
    ~TempFile() {
        if (!committed_) {
            std::error_code ec;
            fs::remove(tmp_, ec);
        }
    }
    const fs::path& path() const { return tmp_; }
    void commit(const char* phase) {
        std::error_code ec;
        fs::rename(tmp_, out_, ec);
        if (ec)
            fail(kComponent, phase, "{}: renaming {} into place failed: {}", out_.string(), tmp_.string(),
                 ec.message());
        committed_ = true;
    }

  private:
    fs::path out_;
    fs::path tmp_;
    bool committed_ = false;
};

std::string shape_str(const at::Tensor& t) {
    std::string s = "[";
    for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + "]";
}

// Receives every packet the encoder has ready and writes it to `stream`.
void drain_encoder(AVCodecContext* enc, AVFormatContext* fmt, AVStream* stream, AVPacket* pkt,
                   const fs::path& out) {
    for (;;) {
        int ret = avcodec_receive_packet(enc, pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
        check(ret, out, "write_mp4", "avcodec_receive_packet");
        av_packet_rescale_ts(pkt, enc->time_base, stream->time_base);
        pkt->stream_index = stream->index;
        check(av_interleaved_write_frame(fmt, pkt), out, "write_mp4", "av_interleaved_write_frame");
    }
}

void encode(AVCodecContext* enc, AVFrame* frame, AVFormatContext* fmt, AVStream* stream, AVPacket* pkt,
            const fs::path& out) {
    check(avcodec_send_frame(enc, frame), out, "write_mp4", "avcodec_send_frame");
    drain_encoder(enc, fmt, stream, pkt, out);
}

const AVCodec* find_h264_encoder(const fs::path& out) {
    if (const AVCodec* c = avcodec_find_encoder_by_name("libx264")) return c;
    const AVCodec* c = avcodec_find_encoder(AV_CODEC_ID_H264);
    if (!c)
        fail(kComponent, "write_mp4",
             "{}: this FFmpeg build has no H.264 encoder (neither libx264 nor a default one); rebuild "
             "FFmpeg with --enable-libx264",
             out.string());
    st::log::warn(kComponent, "libx264 not available; using FFmpeg's default H.264 encoder '{}'", c->name);
    return c;
}

// Pads [F, H, W, 3] to even H and W by replicating the last row/column.
at::Tensor pad_to_even(at::Tensor frames) {
    const int64_t h = frames.size(1), w = frames.size(2);
    if (h % 2) frames = at::cat({frames, frames.slice(1, h - 1, h)}, 1);
    if (w % 2) frames = at::cat({frames, frames.slice(2, w - 1, w)}, 2);
    return frames.contiguous();
}

// Audio prepared for the encoder: planar float at the output rate.
struct PreparedAudio {
    std::vector<std::vector<float>> planes;
    int sample_rate = 0;
    int channels = 0;
};

int choose_sample_rate(const AVCodec* codec, int wanted) {
    if (!codec->supported_samplerates) return wanted;
    for (const int* r = codec->supported_samplerates; *r; ++r)
        if (*r == wanted) return wanted;
    return 48000;
}

PreparedAudio prepare_audio(const AudioTrack& audio, int out_rate, const fs::path& out) {
    at::Tensor s = audio.samples;
    if (!s.defined() || !at::isFloatingType(s.scalar_type()) || (s.dim() != 1 && s.dim() != 2))
        fail(kComponent, "write_mp4", "{}: audio samples must be float [N] or [C, N] in [-1, 1], got {} {}",
             out.string(), s.defined() ? std::string(c10::toString(s.scalar_type())) : "undefined",
             s.defined() ? shape_str(s) : "");
    if (s.dim() == 1) s = s.unsqueeze(0);
    const int channels = static_cast<int>(s.size(0));
    if (channels < 1 || channels > 8 || s.size(1) < 1)
        fail(kComponent, "write_mp4", "{}: audio samples must be [C, N] with 1 <= C <= 8 and N >= 1, got {}",
             out.string(), shape_str(s));
    if (audio.sample_rate <= 0)
        fail(kComponent, "write_mp4", "{}: audio sample_rate must be > 0, got {}", out.string(),
             audio.sample_rate);
    s = s.to(at::kCPU, at::kFloat).clamp(-1.0, 1.0).contiguous();
    const int64_t n = s.size(1);

    PreparedAudio prepared;
    prepared.sample_rate = out_rate;
    prepared.channels = channels;
    prepared.planes.assign(channels, {});
    const float* base = s.data_ptr<float>();
    if (out_rate == audio.sample_rate) {
        for (int c = 0; c < channels; ++c) prepared.planes[c].assign(base + c * n, base + (c + 1) * n);
        return prepared;
    }

    AVChannelLayout layout;
    av_channel_layout_default(&layout, channels);
    SwrContext* raw = nullptr;
    check(swr_alloc_set_opts2(&raw, &layout, AV_SAMPLE_FMT_FLTP, out_rate, &layout, AV_SAMPLE_FMT_FLTP,
                              audio.sample_rate, 0, nullptr),
          out, "write_mp4", "swr_alloc_set_opts2");
    std::unique_ptr<SwrContext, SwrFree> swr(raw);
    av_channel_layout_uninit(&layout);
    check(swr_init(swr.get()), out, "write_mp4", "swr_init");

    const int64_t cap = av_rescale_rnd(n, out_rate, audio.sample_rate, AV_ROUND_UP) + 256;
    for (auto& p : prepared.planes) p.resize(cap);
    std::vector<const uint8_t*> in(channels);
    std::vector<uint8_t*> dst(channels);
    for (int c = 0; c < channels; ++c) in[c] = reinterpret_cast<const uint8_t*>(base + c * n);
    int64_t done = 0;
    // One call with the whole input, then flush calls (in == nullptr) until the resampler is empty.
    for (bool flushing = false;; flushing = true) {
        for (int c = 0; c < channels; ++c)
            dst[c] = reinterpret_cast<uint8_t*>(prepared.planes[c].data() + done);
        int got = check(swr_convert(swr.get(), dst.data(), static_cast<int>(cap - done),
                                    flushing ? nullptr : in.data(), flushing ? 0 : static_cast<int>(n)),
                        out, "write_mp4", "swr_convert");
        done += got;
        if (flushing && got == 0) break;
    }
    for (auto& p : prepared.planes) p.resize(done);
    st::log::debug(kComponent, "audio resampled {} Hz -> {} Hz ({} -> {} samples)", audio.sample_rate,
                   out_rate, n, done);
    return prepared;
}

void check_frames(const at::Tensor& t, int64_t dims, const char* expected, const fs::path& out,
                  const char* phase) {
    if (!t.defined() || t.scalar_type() != at::kByte || t.dim() != dims || t.size(-1) != 3 || t.numel() == 0)
        fail(kComponent, phase, "{}: expected uint8 {} RGB, got {} {}", out.string(), expected,
             t.defined() ? std::string(c10::toString(t.scalar_type())) : "undefined",
             t.defined() ? shape_str(t) : "");
}

}  // namespace

at::Tensor frames_to_uint8(const at::Tensor& video) {
    at::Tensor v = video;
    if (v.defined() && v.dim() == 5 && v.size(0) == 1) v = v.squeeze(0);
    if (!v.defined() || !at::isFloatingType(v.scalar_type()) || v.dim() != 4 || v.size(0) != 3)
        fail(kComponent, "frames_to_uint8",
             "expected a float video [3, F, H, W] or [1, 3, F, H, W], got {} {}",
             v.defined() ? std::string(c10::toString(video.scalar_type())) : "undefined",
             video.defined() ? shape_str(video) : "");
    // diffusers VaeImageProcessor.denormalize (x / 2 + 0.5).clamp(0, 1), then numpy_to_pil's
    // (x * 255).round(). Done in float32 so bf16 inputs do not round twice.
    at::Tensor u = (v.to(at::kCPU, at::kFloat) / 2.0 + 0.5).clamp(0.0, 1.0).mul(255.0).round();
    return u.to(at::kByte).permute({1, 2, 3, 0}).contiguous();
}

void write_mp4(const fs::path& out, const at::Tensor& frames_u8, int fps, const AudioTrack* audio) {
    check_frames(frames_u8, 4, "[F, H, W, 3]", out, "write_mp4");
    if (fps <= 0) fail(kComponent, "write_mp4", "{}: fps must be > 0, got {}", out.string(), fps);
    quiet_ffmpeg_once();
    const int64_t num_frames = frames_u8.size(0);
    const int src_h = static_cast<int>(frames_u8.size(1)), src_w = static_cast<int>(frames_u8.size(2));
    at::Tensor frames = pad_to_even(frames_u8.to(at::kCPU));
    const int h = static_cast<int>(frames.size(1)), w = static_cast<int>(frames.size(2));
    if (h != src_h || w != src_w)
        st::log::info(kComponent, "{}: padding {}x{} to {}x{} (yuv420p needs even sizes)", out.string(),
                      src_w, src_h, w, h);

    TempFile tmp(out);
    OutputFile file;
    check(avformat_alloc_output_context2(&file.ctx, nullptr, "mp4", tmp.path().c_str()), out, "write_mp4",
          "avformat_alloc_output_context2");
    AVFormatContext* fmt = file.ctx;

    // Video stream.
    const AVCodec* vcodec = find_h264_encoder(out);
    CodecCtxPtr venc(avcodec_alloc_context3(vcodec));
    if (!venc) fail(kComponent, "write_mp4", "{}: avcodec_alloc_context3 failed", out.string());
    venc->width = w;
    venc->height = h;
    venc->pix_fmt = AV_PIX_FMT_YUV420P;
    venc->time_base = AVRational{1, fps};
    venc->framerate = AVRational{fps, 1};
    venc->color_range = AVCOL_RANGE_MPEG;
    venc->colorspace = AVCOL_SPC_SMPTE170M;
    venc->color_primaries = AVCOL_PRI_SMPTE170M;
    venc->color_trc = AVCOL_TRC_SMPTE170M;
    if (fmt->oformat->flags & AVFMT_GLOBALHEADER) venc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (std::string(vcodec->name) == "libx264") {
        av_opt_set(venc->priv_data, "crf", "18", 0);
        av_opt_set(venc->priv_data, "preset", "medium", 0);
        // One encoder thread: the same frames give the same file (validation videos of two runs can
        // be compared byte for byte); validation clips are small, so the speed cost is minor.
        venc->thread_count = 1;
    } else {
        venc->bit_rate = static_cast<int64_t>(w) * h * fps * 2;  // ~2 bits/pixel: near-lossless
    }
    check(avcodec_open2(venc.get(), vcodec, nullptr), out, "write_mp4",
          std::string("opening the H.264 encoder '") + vcodec->name + "'");
    AVStream* vstream = avformat_new_stream(fmt, nullptr);
    if (!vstream) fail(kComponent, "write_mp4", "{}: avformat_new_stream failed", out.string());
    vstream->time_base = venc->time_base;
    vstream->avg_frame_rate = venc->framerate;
    check(avcodec_parameters_from_context(vstream->codecpar, venc.get()), out, "write_mp4",
          "avcodec_parameters_from_context");

    // Audio stream.
    CodecCtxPtr aenc;
    AVStream* astream = nullptr;
    PreparedAudio pcm;
    if (audio) {
        const AVCodec* acodec = avcodec_find_encoder_by_name("aac");
        if (!acodec)
            fail(kComponent, "write_mp4", "{}: this FFmpeg build has no 'aac' encoder", out.string());
        pcm = prepare_audio(*audio, choose_sample_rate(acodec, audio->sample_rate), out);
        aenc.reset(avcodec_alloc_context3(acodec));
        if (!aenc) fail(kComponent, "write_mp4", "{}: avcodec_alloc_context3 failed", out.string());
        aenc->sample_fmt = AV_SAMPLE_FMT_FLTP;
        aenc->sample_rate = pcm.sample_rate;
        av_channel_layout_default(&aenc->ch_layout, pcm.channels);
        aenc->bit_rate = 64000LL * pcm.channels;
        aenc->time_base = AVRational{1, pcm.sample_rate};
        if (fmt->oformat->flags & AVFMT_GLOBALHEADER) aenc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
        check(avcodec_open2(aenc.get(), acodec, nullptr), out, "write_mp4", "opening the AAC encoder");
        astream = avformat_new_stream(fmt, nullptr);
        if (!astream) fail(kComponent, "write_mp4", "{}: avformat_new_stream failed", out.string());
        astream->time_base = aenc->time_base;
        check(avcodec_parameters_from_context(astream->codecpar, aenc.get()), out, "write_mp4",
              "avcodec_parameters_from_context (audio)");
    }

    check(avio_open(&fmt->pb, tmp.path().c_str(), AVIO_FLAG_WRITE), out, "write_mp4",
          "opening " + tmp.path().string() + " for writing");
    file.opened = true;
    AVDictionary* mux_opts = nullptr;
    av_dict_set(&mux_opts, "movflags", "+faststart", 0);
    int ret = avformat_write_header(fmt, &mux_opts);
    av_dict_free(&mux_opts);
    check(ret, out, "write_mp4", "avformat_write_header");

    FramePtr yuv(av_frame_alloc());
    PacketPtr pkt(av_packet_alloc());
    if (!yuv || !pkt) fail(kComponent, "write_mp4", "{}: out of memory allocating frames", out.string());
    yuv->format = AV_PIX_FMT_YUV420P;
    yuv->width = w;
    yuv->height = h;
    check(av_frame_get_buffer(yuv.get(), 0), out, "write_mp4", "av_frame_get_buffer (video)");
    std::unique_ptr<SwsContext, SwsFree> sws(sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, AV_PIX_FMT_YUV420P,
                                                            SWS_BICUBIC | SWS_ACCURATE_RND, nullptr, nullptr,
                                                            nullptr));
    if (!sws) fail(kComponent, "write_mp4", "{}: sws_getContext rgb24 -> yuv420p failed", out.string());

    FramePtr afr;
    int64_t audio_pos = 0;
    const int64_t audio_total = pcm.planes.empty() ? 0 : static_cast<int64_t>(pcm.planes[0].size());
    if (aenc) {
        afr.reset(av_frame_alloc());
        if (!afr) fail(kComponent, "write_mp4", "{}: out of memory allocating frames", out.string());
    }
    const int afr_size = aenc ? (aenc->frame_size > 0 ? aenc->frame_size : 1024) : 0;

    const uint8_t* rgb = frames.data_ptr<uint8_t>();
    const int64_t frame_bytes = static_cast<int64_t>(w) * h * 3;
    int64_t vi = 0;
    bool video_flushed = false, audio_flushed = !aenc;
    // Interleave by presentation time (FFmpeg's mux.c): feed whichever stream is behind.
    while (!video_flushed || !audio_flushed) {
        const bool pick_video =
            !video_flushed &&
            (audio_flushed || av_compare_ts(vi, venc->time_base, audio_pos, aenc->time_base) <= 0);
        if (pick_video) {
            if (vi == num_frames) {
                encode(venc.get(), nullptr, fmt, vstream, pkt.get(), out);
                video_flushed = true;
                continue;
            }
            check(av_frame_make_writable(yuv.get()), out, "write_mp4", "av_frame_make_writable");
            const uint8_t* src[1] = {rgb + vi * frame_bytes};
            const int src_stride[1] = {w * 3};
            sws_scale(sws.get(), src, src_stride, 0, h, yuv->data, yuv->linesize);
            yuv->pts = vi++;
            encode(venc.get(), yuv.get(), fmt, vstream, pkt.get(), out);
        } else {
            if (audio_pos >= audio_total) {
                encode(aenc.get(), nullptr, fmt, astream, pkt.get(), out);
                audio_flushed = true;
                continue;
            }
            const int n = static_cast<int>(std::min<int64_t>(afr_size, audio_total - audio_pos));
            av_frame_unref(afr.get());
            afr->format = AV_SAMPLE_FMT_FLTP;
            afr->sample_rate = pcm.sample_rate;
            afr->nb_samples = n;
            check(av_channel_layout_copy(&afr->ch_layout, &aenc->ch_layout), out, "write_mp4",
                  "av_channel_layout_copy");
            check(av_frame_get_buffer(afr.get(), 0), out, "write_mp4", "av_frame_get_buffer (audio)");
            for (int c = 0; c < pcm.channels; ++c)
                std::copy_n(pcm.planes[c].data() + audio_pos, n, reinterpret_cast<float*>(afr->data[c]));
            afr->pts = audio_pos;
            audio_pos += n;
            encode(aenc.get(), afr.get(), fmt, astream, pkt.get(), out);
        }
    }
    check(av_write_trailer(fmt), out, "write_mp4", "av_write_trailer");
    check(avio_closep(&fmt->pb), out, "write_mp4", "closing " + tmp.path().string());
    file.opened = false;
    tmp.commit("write_mp4");
    st::log::info(kComponent, "wrote {} ({} frames {}x{} @ {} fps, {}{})", out.string(), num_frames, w, h,
                  fps, vcodec->name,
                  audio ? fmt::format(" + aac {} Hz x{} ({:.2f} s)", pcm.sample_rate, pcm.channels,
                                      static_cast<double>(audio_total) / pcm.sample_rate)
                        : std::string());
}

void write_png(const fs::path& out, const at::Tensor& frame_u8) {
    check_frames(frame_u8, 3, "[H, W, 3]", out, "write_png");
    quiet_ffmpeg_once();
    at::Tensor frame = frame_u8.to(at::kCPU).contiguous();
    const int h = static_cast<int>(frame.size(0)), w = static_cast<int>(frame.size(1));

    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    if (!codec) fail(kComponent, "write_png", "{}: this FFmpeg build has no PNG encoder", out.string());
    CodecCtxPtr enc(avcodec_alloc_context3(codec));
    if (!enc) fail(kComponent, "write_png", "{}: avcodec_alloc_context3 failed", out.string());
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_RGB24;
    enc->time_base = AVRational{1, 1};
    check(avcodec_open2(enc.get(), codec, nullptr), out, "write_png", "opening the PNG encoder");

    FramePtr fr(av_frame_alloc());
    PacketPtr pkt(av_packet_alloc());
    if (!fr || !pkt) fail(kComponent, "write_png", "{}: out of memory allocating frames", out.string());
    fr->format = AV_PIX_FMT_RGB24;
    fr->width = w;
    fr->height = h;
    check(av_frame_get_buffer(fr.get(), 0), out, "write_png", "av_frame_get_buffer");
    const uint8_t* src = frame.data_ptr<uint8_t>();
    for (int y = 0; y < h; ++y)
        std::copy_n(src + static_cast<int64_t>(y) * w * 3, w * 3, fr->data[0] + y * fr->linesize[0]);
    fr->pts = 0;
    check(avcodec_send_frame(enc.get(), fr.get()), out, "write_png", "avcodec_send_frame");
    check(avcodec_send_frame(enc.get(), nullptr), out, "write_png", "avcodec_send_frame (flush)");
    std::string bytes;
    for (;;) {
        int ret = avcodec_receive_packet(enc.get(), pkt.get());
        if (ret == AVERROR_EOF) break;
        check(ret, out, "write_png", "avcodec_receive_packet");
        bytes.append(reinterpret_cast<const char*>(pkt->data), pkt->size);
        av_packet_unref(pkt.get());
    }

    TempFile tmp(out);
    {
        std::ofstream f(tmp.path(), std::ios::binary | std::ios::trunc);
        if (!f)
            fail(kComponent, "write_png", "{}: cannot open {} for writing: {}", out.string(),
                 tmp.path().string(), std::error_code(errno, std::generic_category()).message());
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        f.close();
        if (!f)
            fail(kComponent, "write_png", "{}: writing {} failed: {}", out.string(), tmp.path().string(),
                 std::error_code(errno, std::generic_category()).message());
    }
    tmp.commit("write_png");
    st::log::debug(kComponent, "wrote {} ({}x{} png, {} bytes)", out.string(), w, h, bytes.size());
}

}  // namespace st::host::media
