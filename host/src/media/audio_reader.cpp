// read_audio: demux + decode the best audio stream (FFmpeg doc/examples/demux_decode.c loop),
// mono float at the requested rate through libswresample (doc/examples/resample_audio.c).
#include "media/audio_reader.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "st/error.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libswresample/swresample.h>
}

namespace fs = std::filesystem;

namespace st::host::media {
namespace {

constexpr const char* kComponent = "host.media";

struct InputClose {
    void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
struct DecoderFree {
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct ResamplerFree {
    void operator()(SwrContext* s) const { swr_free(&s); }
};

[[noreturn]] void audio_fail(const fs::path& path, const std::string& why) {
    fail(kComponent, "audio", "cannot read audio from '{}': {}", path.string(), why);
}

std::string error_text(int code) {
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, buf, sizeof(buf));
    return buf;
}

// Decodes the whole stream up to `stop_seconds` of output; returns the samples and the timeline
// position (seconds) of the first decoded sample.
std::vector<float> decode_mono(const fs::path& path, int rate, double stop_seconds, double& first_pts) {
    AVFormatContext* raw_fmt = nullptr;
    if (int rc = avformat_open_input(&raw_fmt, path.c_str(), nullptr, nullptr); rc < 0)
        audio_fail(path, error_text(rc));
    std::unique_ptr<AVFormatContext, InputClose> fmt(raw_fmt);
    if (int rc = avformat_find_stream_info(fmt.get(), nullptr); rc < 0) audio_fail(path, error_text(rc));
    const int index = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
    if (index < 0) audio_fail(path, "the file has no audio stream");
    AVStream* stream = fmt->streams[index];
    for (unsigned i = 0; i < fmt->nb_streams; ++i)
        if (static_cast<int>(i) != index) fmt->streams[i]->discard = AVDISCARD_ALL;
    const AVCodec* codec = avcodec_find_decoder(stream->codecpar->codec_id);
    if (codec == nullptr)
        audio_fail(path, std::string("no decoder for codec ") + avcodec_get_name(stream->codecpar->codec_id));
    std::unique_ptr<AVCodecContext, DecoderFree> dec(avcodec_alloc_context3(codec));
    if (!dec || avcodec_parameters_to_context(dec.get(), stream->codecpar) < 0 ||
        avcodec_open2(dec.get(), codec, nullptr) < 0)
        audio_fail(path, std::string("cannot open the ") + codec->name + " decoder");

    AVChannelLayout in_layout{};  // zeroed: av_channel_layout_copy uninits the destination first
    if (dec->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || dec->ch_layout.nb_channels <= 0)
        av_channel_layout_default(&in_layout, std::max(1, dec->ch_layout.nb_channels));
    else
        av_channel_layout_copy(&in_layout, &dec->ch_layout);
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    SwrContext* raw_swr = nullptr;
    const int rc = swr_alloc_set_opts2(&raw_swr, &mono, AV_SAMPLE_FMT_FLT, rate, &in_layout, dec->sample_fmt,
                                       dec->sample_rate, 0, nullptr);
    av_channel_layout_uninit(&in_layout);
    std::unique_ptr<SwrContext, ResamplerFree> swr(raw_swr);
    if (rc < 0 || swr_init(swr.get()) < 0)
        audio_fail(path, "cannot resample " + std::to_string(dec->sample_rate) + " Hz audio to " +
                             std::to_string(rate) + " Hz mono");

    std::vector<float> out;
    bool started = false;
    first_pts = 0.0;
    const size_t stop = static_cast<size_t>(std::max(0.0, stop_seconds) * rate) + 1;
    std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
    std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
    auto convert = [&](const uint8_t** in, int count) {
        const int cap = swr_get_out_samples(swr.get(), count);
        if (cap <= 0) return;
        const size_t old = out.size();
        out.resize(old + static_cast<size_t>(cap));
        auto* dst = reinterpret_cast<uint8_t*>(out.data() + old);
        const int got = swr_convert(swr.get(), &dst, cap, in, count);
        out.resize(old + static_cast<size_t>(std::max(0, got)));
    };
    auto receive = [&] {
        while (avcodec_receive_frame(dec.get(), frame.get()) >= 0) {
            if (!started) {
                started = true;
                if (frame->best_effort_timestamp != AV_NOPTS_VALUE)
                    first_pts = static_cast<double>(frame->best_effort_timestamp) * av_q2d(stream->time_base);
            }
            convert(const_cast<const uint8_t**>(frame->extended_data), frame->nb_samples);
            av_frame_unref(frame.get());
        }
    };
    while (out.size() < stop && av_read_frame(fmt.get(), pkt.get()) >= 0) {
        if (pkt->stream_index == index) {
            avcodec_send_packet(dec.get(), pkt.get());
            receive();
        }
        av_packet_unref(pkt.get());
    }
    avcodec_send_packet(dec.get(), nullptr);
    receive();
    convert(nullptr, 0);  // the resampler's delay line
    if (!started) audio_fail(path, "the audio stream has no decodable samples");
    return out;
}

}  // namespace

AudioClip read_audio(const fs::path& path, int sample_rate, double start, double duration) {
    if (sample_rate <= 0 || !(duration > 0.0))
        fail(kComponent, "audio", "read_audio('{}'): sample rate {} and duration {} must be > 0",
             path.string(), sample_rate, duration);
    if (!fs::exists(path)) audio_fail(path, "the file does not exist");
    double first = 0.0;
    const std::vector<float> all = decode_mono(path, sample_rate, start + duration + 1.0, first);
    AudioClip clip;
    clip.sample_rate = sample_rate;
    const int64_t n = std::llround(duration * sample_rate);
    clip.samples = at::zeros({n}, at::kFloat);
    float* dst = clip.samples.data_ptr<float>();
    const int64_t offset = std::llround((start - first) * sample_rate);
    const int64_t have = static_cast<int64_t>(all.size());
    for (int64_t i = 0; i < n; ++i) {
        const int64_t src = offset + i;
        if (src >= 0 && src < have) {
            dst[i] = all[static_cast<size_t>(src)];
            ++clip.covered;
        }
    }
    return clip;
}

}  // namespace st::host::media
