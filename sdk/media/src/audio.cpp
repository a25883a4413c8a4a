// Audio decoding (see audio.h).
#include "st/media/audio.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
}

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "st/error.h"
#include "st/media/ffmpeg.h"

namespace st::media {

namespace {

// Decodes the first audio stream to mono float at `sample_rate`, stopping once `stop_after` seconds
// (<= 0: everything) are in; `track_start` gets the first frame's time on the file's timeline.
std::vector<float> decode_audio_mono(const std::filesystem::path& path, int sample_rate, double stop_after,
                                     double* track_start) {
    FormatPtr fmt = open_input(path);
    const int aidx = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
    if (aidx < 0) media_fail(path, "no audio stream");
    AVStream* st = fmt->streams[aidx];
    for (unsigned i = 0; i < fmt->nb_streams; ++i)
        if (static_cast<int>(i) != aidx) fmt->streams[i]->discard = AVDISCARD_ALL;
    CodecPtr ctx = open_decoder(path, st, 1);
    AVChannelLayout in_layout{};  // zeroed: av_channel_layout_copy uninits the destination first
    if (ctx->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || ctx->ch_layout.nb_channels <= 0)
        av_channel_layout_default(&in_layout, std::max(1, ctx->ch_layout.nb_channels));
    else
        av_channel_layout_copy(&in_layout, &ctx->ch_layout);
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    SwrContext* raw = nullptr;
    int rc = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, sample_rate, &in_layout, ctx->sample_fmt,
                                 ctx->sample_rate, 0, nullptr);
    av_channel_layout_uninit(&in_layout);
    SwrPtr swr(raw);
    if (rc < 0 || swr_init(swr.get()) < 0)
        media_fail(path, fmt::format("cannot resample audio ({} Hz, {} channels, {}) to {} Hz mono",
                                     ctx->sample_rate, ctx->ch_layout.nb_channels,
                                     av_get_sample_fmt_name(ctx->sample_fmt), sample_rate));
    std::vector<float> samples;
    bool started = false;
    *track_start = 0.0;
    const size_t stop_samples = stop_after > 0 ? static_cast<size_t>(stop_after * sample_rate) + 1 : SIZE_MAX;
    FramePtr frame(av_frame_alloc());
    PacketPtr pkt(av_packet_alloc());
    auto append = [&](const uint8_t** in, int in_count) {
        const int cap = swr_get_out_samples(swr.get(), in_count);
        if (cap <= 0) return;
        const size_t old = samples.size();
        samples.resize(old + cap);
        uint8_t* out = reinterpret_cast<uint8_t*>(samples.data() + old);
        int got = swr_convert(swr.get(), &out, cap, in, in_count);
        samples.resize(old + std::max(0, got));
    };
    auto drain = [&] {
        while (avcodec_receive_frame(ctx.get(), frame.get()) >= 0) {
            if (!started) {
                started = true;
                if (frame->best_effort_timestamp != AV_NOPTS_VALUE)
                    *track_start = to_seconds(frame->best_effort_timestamp, st->time_base);
            }
            append(const_cast<const uint8_t**>(frame->extended_data), frame->nb_samples);
            av_frame_unref(frame.get());
        }
    };
    while (samples.size() < stop_samples && av_read_frame(fmt.get(), pkt.get()) >= 0) {
        if (pkt->stream_index == aidx) {
            avcodec_send_packet(ctx.get(), pkt.get());
            drain();
        }
        av_packet_unref(pkt.get());
    }
    avcodec_send_packet(ctx.get(), nullptr);
    drain();
    append(nullptr, 0);  // flush the resampler's delay line
    if (!started) media_fail(path, "audio stream has no decodable samples");
    return samples;
}

}  // namespace

AudioWindow decode_audio_window(const std::filesystem::path& path, int sample_rate, double start,
                                double duration) {
    AudioWindow w;
    w.samples = static_cast<int64_t>(std::llround(duration * sample_rate));
    double track_start = 0.0;
    // Decode a little past the window end (relative to a track that may start late or early).
    std::vector<float> all = decode_audio_mono(path, sample_rate, start + duration + 1.0, &track_start);
    w.waveform = at::zeros({w.samples}, at::kFloat);
    const int64_t offset = static_cast<int64_t>(std::llround((start - track_start) * sample_rate));
    float* dst = w.waveform.data_ptr<float>();
    const int64_t n = static_cast<int64_t>(all.size());
    for (int64_t i = 0; i < w.samples; ++i) {
        const int64_t src = offset + i;
        if (src >= 0 && src < n) {
            dst[i] = all[src];
            ++w.covered;
        }
    }
    return w;
}

std::vector<int16_t> decode_audio_s16(const std::filesystem::path& path, int sample_rate) {
    double track_start = 0.0;
    std::vector<float> all = decode_audio_mono(path, sample_rate, 0.0, &track_start);
    std::vector<int16_t> out(all.size());
    for (size_t i = 0; i < all.size(); ++i)
        out[i] = static_cast<int16_t>(std::lround(std::clamp(all[i], -1.0f, 1.0f) * 32767.0f));
    return out;
}

}  // namespace st::media
