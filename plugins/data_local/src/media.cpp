#include "media.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/display.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswresample/swresample.h>
}

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include "frame_converter.h"
#include "st/error.h"
#include "st/log.h"
#include "st/media/ffmpeg.h"

namespace st::plugins::data_local {

using st::media::CodecPtr;
using st::media::FormatPtr;
using st::media::FramePtr;
using st::media::media_fail;
using st::media::open_decoder;
using st::media::open_input;
using st::media::PacketPtr;
using st::media::to_seconds;

namespace {

constexpr const char* kComponent = "data.local.media";

/// The main video stream, ignoring cover art attached to audio files; -1 if none.
int find_video_stream(AVFormatContext* fmt) {
    int idx = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    if (idx < 0) return -1;
    if (fmt->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC) return -1;
    return idx;
}

/// Clockwise display rotation from the stream's display matrix (what ffmpeg's autorotate applies).
int stream_rotation(AVStream* st) {
    size_t size = 0;
    const uint8_t* side = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!side || size < 9 * sizeof(int32_t)) return 0;
    double theta = -av_display_rotation_get(reinterpret_cast<const int32_t*>(side));
    if (std::isnan(theta)) return 0;
    theta = std::fmod(theta, 360.0);
    if (theta < 0) theta += 360.0;
    int r = static_cast<int>(std::lround(theta / 90.0)) * 90 % 360;
    return r;
}

}  // namespace

MediaInfo probe_media(const std::filesystem::path& path) {
    FormatPtr fmt = open_input(path);
    MediaInfo info;
    const int vidx = find_video_stream(fmt.get());
    const int aidx = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
    AVStream* vs = vidx >= 0 ? fmt->streams[vidx] : nullptr;
    AVStream* as = aidx >= 0 ? fmt->streams[aidx] : nullptr;
    if (vs) {
        if (vs->codecpar->width <= 0 || vs->codecpar->height <= 0)
            media_fail(path, "video stream has no frame size");
        if (!avcodec_find_decoder(vs->codecpar->codec_id))
            media_fail(path, fmt::format("no decoder for video codec '{}'",
                                         avcodec_get_name(vs->codecpar->codec_id)));
        info.coded = {vs->codecpar->width, vs->codecpar->height};
        info.rotation = stream_rotation(vs);
        // Non-square pixels (anamorphic PAL/NTSC, SAR 64:45 shows 720x576 as 1024x576): the display width
        // is the stored width x SAR, as players show it; buckets and resizing work on that size, so the
        // resize from the coded frame undoes the squeeze.
        Size shown = info.coded;
        const AVRational sar = av_guess_sample_aspect_ratio(fmt.get(), vs, nullptr);
        if (sar.num > 0 && sar.den > 0 && sar.num != sar.den) {
            info.pixel_aspect = static_cast<double>(sar.num) / static_cast<double>(sar.den);
            // Rounded to even like ffmpeg's scale=-2 (NTSC 720x480 at SAR 32:27 shows 853.3 -> 854 wide).
            shown.w = std::max(2, 2 * static_cast<int>(std::lround(static_cast<double>(info.coded.w) *
                                                                   info.pixel_aspect / 2)));
            log::debug(kComponent, "{}: anamorphic, {}x{} stored at SAR {}:{} is shown as {}x{}",
                       path.string(), info.coded.w, info.coded.h, sar.num, sar.den, shown.w, shown.h);
        }
        info.display = (info.rotation == 90 || info.rotation == 270) ? Size{shown.h, shown.w} : shown;
        info.video_codec = avcodec_get_name(vs->codecpar->codec_id);
    }
    if (as) {
        info.audio_sample_rate = as->codecpar->sample_rate;
        info.audio_channels = as->codecpar->ch_layout.nb_channels;
        info.audio_codec = avcodec_get_name(as->codecpar->codec_id);
    }
    // Demux every packet (no decoding): exact video timestamps (VFR-safe) and the audio extent.
    // Video packet timestamps in stream time base (AV_NOPTS_VALUE where the packet has none).
    std::vector<int64_t> pts, dts;
    double last_duration = 0.0;
    double audio_first = INFINITY, audio_end = -INFINITY;
    PacketPtr pkt(av_packet_alloc());
    int rc;
    while ((rc = av_read_frame(fmt.get(), pkt.get())) >= 0) {
        if (vs && pkt->stream_index == vidx) {
            pts.push_back(pkt->pts);
            dts.push_back(pkt->dts);
            last_duration = pkt->duration > 0 ? to_seconds(pkt->duration, vs->time_base) : 0.0;
        } else if (as && pkt->stream_index == aidx) {
            const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
            if (ts != AV_NOPTS_VALUE) {
                const double t = to_seconds(ts, as->time_base);
                audio_first = std::min(audio_first, t);
                audio_end = std::max(audio_end,
                                     t + (pkt->duration > 0 ? to_seconds(pkt->duration, as->time_base) : 0));
            }
        }
        av_packet_unref(pkt.get());
    }
    if (rc != AVERROR_EOF)
        log::debug(kComponent, "{}: demux stopped early ({}); using the {} video packets read", path.string(),
                   st::media::av_error_text(rc), pts.size());
    if (as && std::isfinite(audio_first) && audio_end > audio_first) {
        info.has_audio = true;
        info.audio_start = audio_first;
        info.audio_duration = audio_end - audio_first;
    }
    if (!vs) return info;
    if (pts.empty()) media_fail(path, "video stream has no frames (file truncated or damaged)");
    info.has_video = true;
    info.packets = static_cast<int64_t>(pts.size());
    const std::string demuxer = fmt->iformat->name;
    AVRational rate =
        vs->avg_frame_rate.num > 0 && vs->avg_frame_rate.den > 0 ? vs->avg_frame_rate : vs->r_frame_rate;
    info.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
    const auto missing = [](const std::vector<int64_t>& v) {
        return std::count(v.begin(), v.end(), AV_NOPTS_VALUE);
    };
    const int64_t pts_missing = missing(pts), dts_missing = missing(dts);
    // Raw MPEG-1/2 elementary streams (.m2v/.m1v) have no clock: libavformat invents decode times and
    // its parser a few presentation times that do not agree with them. Each packet is one frame (the
    // parser splits pictures), so frames are placed by their order at the stream's frame rate.
    info.frame_clock = demuxer == "mpegvideo" || (pts_missing == info.packets && dts_missing == info.packets);
    std::vector<double> times;
    if (!info.frame_clock && pts_missing == 0) {
        for (int64_t t : pts) times.push_back(to_seconds(t, vs->time_base));
    } else if (!info.frame_clock && dts_missing == 0) {
        // MPEG program/transport streams put a pts only on the PES packets that start a picture, so some
        // frames have a decode time only. Decode times are the presentation times shifted by the reorder
        // delay (one frame with B-frames): shift them by the earliest pts minus the earliest dts rather
        // than mixing the two clocks (which showed one frame twice and skipped its neighbour).
        int64_t first_pts = INT64_MAX;
        for (int64_t t : pts)
            if (t != AV_NOPTS_VALUE) first_pts = std::min(first_pts, t);
        const int64_t first_dts = *std::min_element(dts.begin(), dts.end());
        const int64_t shift = pts_missing == info.packets ? 0 : first_pts - first_dts;
        for (int64_t t : dts) times.push_back(to_seconds(t + shift, vs->time_base));
    } else if (!info.frame_clock) {
        for (size_t i = 0; i < pts.size(); ++i) {
            const int64_t ts = pts[i] != AV_NOPTS_VALUE ? pts[i] : dts[i];
            if (ts != AV_NOPTS_VALUE) times.push_back(to_seconds(ts, vs->time_base));
        }
    }
    if (info.frame_clock) {
        if (info.fps <= 0 || info.fps > 1000) info.fps = 25.0;
        for (int64_t i = 0; i < info.packets; ++i) times.push_back(static_cast<double>(i) / info.fps);
        last_duration = 0.0;
        log::debug(kComponent, "{}: no usable timestamps ({} demuxer); {} frames counted at {} fps",
                   path.string(), demuxer, info.packets, info.fps);
    }
    std::sort(times.begin(), times.end());
    info.is_still_image =
        times.size() == 1 &&
        (demuxer == "image2" || demuxer.find("_pipe") != std::string::npos || demuxer == "webp_pipe");
    const double span = times.back() - times.front();
    if ((info.fps <= 0 || info.fps > 1000) && times.size() > 1) info.fps = (times.size() - 1) / span;
    if (info.fps <= 0 || info.fps > 1000) info.fps = 25.0;
    info.start_time = times.front();
    info.end_time = times.back() + (last_duration > 0 ? last_duration : 1.0 / info.fps);
    info.grid_frames =
        info.is_still_image
            ? 1
            : static_cast<int64_t>(std::floor((info.end_time - info.start_time) * info.fps + 1e-3));
    info.grid_frames = std::max<int64_t>(1, info.grid_frames);
    // Variable frame rate: intervals that differ by more than a third of the nominal interval.
    const double nominal = 1.0 / info.fps;
    for (size_t i = 1; i < times.size() && !info.variable_frame_rate; ++i)
        info.variable_frame_rate = std::fabs((times[i] - times[i - 1]) - nominal) > nominal / 3;
    return info;
}

namespace {

/// One decoding pass of decode_video. `seek_margin` < 0: decode from the start of the file; else seek to
/// `seek_margin` seconds before the first frame wanted. Returns nullopt when that seek cannot serve the
/// window: the first key frame after it has no known time or comes after the first frame wanted (MPEG
/// program and transport streams seek by timestamp to any picture, not to key frames).
std::optional<at::Tensor> decode_pass(const std::filesystem::path& path, const MediaInfo& info, int64_t first,
                                      int64_t count, const ResizePlan& plan, int threads,
                                      double seek_margin) {
    FormatPtr fmt = open_input(path);
    const int vidx = find_video_stream(fmt.get());
    if (vidx < 0) media_fail(path, "no video stream");
    AVStream* st = fmt->streams[vidx];
    CodecPtr ctx = open_decoder(path, st, threads);
    for (unsigned i = 0; i < fmt->nb_streams; ++i)
        if (static_cast<int>(i) != vidx) fmt->streams[i]->discard = AVDISCARD_ALL;

    const double eps = 0.25 / info.fps;  // timestamp jitter tolerance
    auto slot_time = [&](int64_t i) { return info.start_time + static_cast<double>(first + i) / info.fps; };
    // After a seek, frames before the first key frame reference pictures that were never decoded.
    bool awaiting_key = false;
    if (seek_margin >= 0) {
        const int64_t ts = static_cast<int64_t>((slot_time(0) - eps - seek_margin) / av_q2d(st->time_base));
        if (av_seek_frame(fmt.get(), vidx, ts, AVSEEK_FLAG_BACKWARD) < 0) return std::nullopt;
        avcodec_flush_buffers(ctx.get());
        awaiting_key = true;
    }
    bool seek_missed = false;
    int64_t frames_seen = 0;
    at::Tensor out = at::empty({count, plan.target.h, plan.target.w, 3}, at::kByte);
    uint8_t* const out_data = out.data_ptr<uint8_t>();
    const size_t frame_bytes = static_cast<size_t>(plan.target.h) * plan.target.w * 3;
    FrameConverter converter(plan, info.rotation);
    FramePtr prev(av_frame_alloc()), frame(av_frame_alloc());
    bool have_prev = false;
    int64_t prev_slot = -1;  // output frame `prev` was converted into; frames before the window never are
    double prev_t = info.start_time - 1.0 / info.fps;
    int64_t next = 0;
    auto emit_prev = [&] {
        uint8_t* dst = out_data + next * frame_bytes;
        if (prev_slot < 0) {
            converter.convert(prev.get(), dst);
            prev_slot = next;
        } else {
            std::memcpy(dst, out_data + prev_slot * frame_bytes, frame_bytes);  // frame shown again
        }
        ++next;
    };
    auto on_frame = [&](AVFrame* f) {
        // A frame without a pts (MPEG-PS pictures whose PES carried none) follows its predecessor: its
        // best-effort timestamp would be the decode time, a frame early. Without a clock (raw elementary
        // streams) frames are counted from the start of the file.
        double t = NAN;
        if (info.frame_clock)
            t = info.start_time + static_cast<double>(frames_seen) / info.fps;
        else if (f->pts != AV_NOPTS_VALUE)
            t = to_seconds(f->best_effort_timestamp != AV_NOPTS_VALUE ? f->best_effort_timestamp : f->pts,
                           st->time_base);
        else if (have_prev)
            t = prev_t + 1.0 / info.fps;
        else if (seek_margin < 0)
            t = info.start_time;
        ++frames_seen;
        if (awaiting_key) {
            if (!f->key_frame) return;
            if (!(t <= slot_time(0) + eps)) {
                seek_missed = true;
                return;
            }
            awaiting_key = false;
        }
        if (!have_prev) {
            // The first decoded frame also covers grid times before it (stream start jitter).
            av_frame_ref(prev.get(), f);
            have_prev = true;
            prev_t = t;
            return;
        }
        while (next < count && slot_time(next) < t - eps) emit_prev();
        av_frame_unref(prev.get());
        av_frame_ref(prev.get(), f);
        prev_slot = -1;
        prev_t = t;
    };
    PacketPtr pkt(av_packet_alloc());
    int decode_errors = 0;
    auto drain = [&] {
        while (true) {
            int rc = avcodec_receive_frame(ctx.get(), frame.get());
            if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
            if (rc < 0) {
                ++decode_errors;
                return;
            }
            on_frame(frame.get());
            av_frame_unref(frame.get());
        }
    };
    while (next < count && !seek_missed && av_read_frame(fmt.get(), pkt.get()) >= 0) {
        if (pkt->stream_index == vidx) {
            if (avcodec_send_packet(ctx.get(), pkt.get()) < 0) ++decode_errors;
            drain();
        }
        av_packet_unref(pkt.get());
    }
    if (seek_missed) return std::nullopt;
    if (next < count) {
        avcodec_send_packet(ctx.get(), nullptr);
        drain();
        if (have_prev)
            while (next < count && slot_time(next) < info.end_time - eps) emit_prev();
        if (info.is_still_image && have_prev)
            while (next < count) emit_prev();
    }
    if (seek_missed || (awaiting_key && seek_margin >= 0)) return std::nullopt;
    if (next < count)
        media_fail(path,
                   fmt::format("decoded only {} of {} frames from frame {} ({} decode errors; file truncated "
                               "or damaged)",
                               next, count, first, decode_errors));
    if (decode_errors > 0)
        log::debug(kComponent, "{}: {} packets failed to decode; frames were taken from their neighbours",
                   path.string(), decode_errors);
    return out;
}

}  // namespace

at::Tensor decode_video(const std::filesystem::path& path, const MediaInfo& info, int64_t first,
                        int64_t count, const ResizePlan& plan, int threads) {
    // Seeking saves decoding the frames before the window; without a clock the file has nothing to seek
    // by. A seek that misses is retried further back, then the file is decoded from its start.
    if (first > 0 && !info.frame_clock)
        for (double margin : {0.0, 1.0, 5.0})
            if (auto frames = decode_pass(path, info, first, count, plan, threads, margin)) return *frames;
    return *decode_pass(path, info, first, count, plan, threads, -1.0);
}

}  // namespace st::plugins::data_local
