#include "extract_audio.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
}
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "media.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "st/media/ffmpeg.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local.extract";

void check(int rc, const std::filesystem::path& p, const char* what) {
    if (rc < 0)
        throw Error("data.local.extract", "write",
                    fmt::format("{}: {} failed ({})", p.string(), what, st::media::av_error_text(rc)));
}

/// Owns an output context (and its opened file) until committed.
struct Output {
    AVFormatContext* oc = nullptr;
    ~Output() {
        if (!oc) return;
        if (oc->pb) avio_closep(&oc->pb);
        avformat_free_context(oc);
    }
};

std::filesystem::path temp_name(const std::filesystem::path& p) {
    // Same folder and extension (the muxer may be chosen from it), hidden while being written.
    return p.parent_path() / fmt::format(".st-tmp-{}-{}", ::getpid(), p.filename().string());
}

}  // namespace

void write_audio_file(const std::filesystem::path& path, const std::vector<int16_t>& samples, int sample_rate,
                      const std::string& format) {
    if (format != "wav" && format != "flac")
        throw Error("data.local.extract", "args",
                    fmt::format("audio format '{}' is not wav or flac", format));
    const std::filesystem::path tmp = temp_name(path);
    Output out;
    check(avformat_alloc_output_context2(&out.oc, nullptr, format.c_str(), tmp.c_str()), tmp,
          "allocating the muxer");
    const AVCodec* codec = avcodec_find_encoder(format == "wav" ? AV_CODEC_ID_PCM_S16LE : AV_CODEC_ID_FLAC);
    if (!codec)
        throw Error("data.local.extract", "write", fmt::format("no {} encoder in this FFmpeg build", format));
    AVStream* st = avformat_new_stream(out.oc, nullptr);
    AVCodecContext* c = avcodec_alloc_context3(codec);
    std::unique_ptr<AVCodecContext, void (*)(AVCodecContext*)> cguard(
        c, [](AVCodecContext* x) { avcodec_free_context(&x); });
    c->sample_fmt = AV_SAMPLE_FMT_S16;
    c->sample_rate = sample_rate;
    av_channel_layout_default(&c->ch_layout, 1);
    c->time_base = AVRational{1, sample_rate};
    if (out.oc->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    check(avcodec_open2(c, codec, nullptr), tmp, "opening the encoder");
    check(avcodec_parameters_from_context(st->codecpar, c), tmp, "copying encoder parameters");
    st->time_base = c->time_base;
    check(avio_open(&out.oc->pb, tmp.c_str(), AVIO_FLAG_WRITE), tmp, "opening the file");
    check(avformat_write_header(out.oc, nullptr), tmp, "writing the header");
    AVFrame* frame = av_frame_alloc();
    AVPacket* pkt = av_packet_alloc();
    auto drain = [&] {
        while (avcodec_receive_packet(c, pkt) >= 0) {
            av_packet_rescale_ts(pkt, c->time_base, st->time_base);
            pkt->stream_index = st->index;
            check(av_interleaved_write_frame(out.oc, pkt), tmp, "writing a packet");
        }
    };
    const size_t frame_size = c->frame_size > 0 ? static_cast<size_t>(c->frame_size) : 4096;
    try {
        for (size_t pos = 0; pos < samples.size(); pos += frame_size) {
            const size_t n = std::min(frame_size, samples.size() - pos);
            av_frame_unref(frame);
            frame->nb_samples = static_cast<int>(n);
            frame->format = AV_SAMPLE_FMT_S16;
            frame->sample_rate = sample_rate;
            av_channel_layout_default(&frame->ch_layout, 1);
            check(av_frame_get_buffer(frame, 0), tmp, "allocating a frame");
            std::memcpy(frame->data[0], samples.data() + pos, n * sizeof(int16_t));
            frame->pts = static_cast<int64_t>(pos);
            check(avcodec_send_frame(c, frame), tmp, "encoding");
            drain();
        }
        check(avcodec_send_frame(c, nullptr), tmp, "flushing the encoder");
        drain();
        check(av_write_trailer(out.oc), tmp, "writing the trailer");
    } catch (...) {
        av_frame_free(&frame);
        av_packet_free(&pkt);
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw;
    }
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avio_closep(&out.oc->pb);
    std::filesystem::rename(tmp, path);
}

void remux_without_audio(const std::filesystem::path& input, const std::filesystem::path& output) {
    st::sdk::require_regular_file(input, "a video", "data.local");
    AVFormatContext* ic = nullptr;
    check(avformat_open_input(&ic, input.c_str(), nullptr, nullptr), input, "opening");
    std::unique_ptr<AVFormatContext, void (*)(AVFormatContext*)> iguard(
        ic, [](AVFormatContext* x) { avformat_close_input(&x); });
    check(avformat_find_stream_info(ic, nullptr), input, "reading stream info");
    const std::filesystem::path tmp = temp_name(output);
    Output out;
    check(avformat_alloc_output_context2(&out.oc, nullptr, nullptr, output.c_str()), output,
          "choosing the muxer");
    std::vector<int> map(ic->nb_streams, -1);
    for (unsigned i = 0; i < ic->nb_streams; ++i) {
        AVStream* is = ic->streams[i];
        if (is->codecpar->codec_type != AVMEDIA_TYPE_VIDEO)
            continue;  // -an, video copied (like `-an -c:v copy`)
        AVStream* os = avformat_new_stream(out.oc, nullptr);
        check(avcodec_parameters_copy(os->codecpar, is->codecpar), output, "copying stream parameters");
        os->codecpar->codec_tag = 0;
        os->time_base = is->time_base;
        os->avg_frame_rate = is->avg_frame_rate;
        os->r_frame_rate = is->r_frame_rate;
        os->disposition = is->disposition;
        av_dict_copy(&os->metadata, is->metadata, 0);
        for (int k = 0; k < is->nb_side_data; ++k) {
            const AVPacketSideData& sd = is->side_data[k];
            uint8_t* dst = av_stream_new_side_data(os, sd.type, sd.size);
            if (dst) std::memcpy(dst, sd.data, sd.size);
        }
        map[i] = os->index;
    }
    if (out.oc->nb_streams == 0)
        throw Error("data.local.extract", "strip",
                    fmt::format("{}: no video stream to keep", input.string()));
    av_dict_copy(&out.oc->metadata, ic->metadata, 0);
    check(avio_open(&out.oc->pb, tmp.c_str(), AVIO_FLAG_WRITE), tmp, "opening the file");
    check(avformat_write_header(out.oc, nullptr), tmp, "writing the header");
    AVPacket* pkt = av_packet_alloc();
    int rc;
    try {
        while ((rc = av_read_frame(ic, pkt)) >= 0) {
            const int target = map[pkt->stream_index];
            if (target >= 0) {
                av_packet_rescale_ts(pkt, ic->streams[pkt->stream_index]->time_base,
                                     out.oc->streams[target]->time_base);
                pkt->stream_index = target;
                pkt->pos = -1;
                check(av_interleaved_write_frame(out.oc, pkt), tmp, "writing a packet");
            }
            av_packet_unref(pkt);
        }
        check(av_write_trailer(out.oc), tmp, "writing the trailer");
    } catch (...) {
        av_packet_free(&pkt);
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw;
    }
    av_packet_free(&pkt);
    avio_closep(&out.oc->pb);
    std::filesystem::rename(tmp, output);
}

ExtractAudioReport run_extract_audio(const std::filesystem::path& input_dir,
                                     const std::filesystem::path& output_dir, bool strip_audio,
                                     const std::string& format) {
    if (format != "wav" && format != "flac")
        throw Error("data.local.extract", "args", fmt::format("--format '{}' is not wav or flac", format));
    std::error_code ec;
    if (!std::filesystem::is_directory(input_dir, ec))
        throw Error("data.local.extract", "args",
                    fmt::format("--input-dir {} is not a directory", input_dir.string()));
    std::filesystem::create_directories(output_dir, ec);
    if (ec)
        throw Error("data.local.extract", "args",
                    fmt::format("--output-dir {} cannot be created ({})", output_dir.string(), ec.message()));
    // generate_s2v_audio.py's extensions, non-recursive.
    static const std::set<std::string> exts = {".mp4",  ".avi", ".mov", ".mkv",
                                               ".webm", ".flv", ".wmv", ".m4v"};
    std::vector<std::filesystem::path> videos;
    for (const auto& e : std::filesystem::directory_iterator(input_dir, ec)) {
        std::string ext = e.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
        if (exts.count(ext) && e.is_regular_file(ec)) videos.push_back(e.path());
    }
    std::sort(videos.begin(), videos.end());
    ExtractAudioReport report;
    constexpr int kRate = 16000;
    for (const auto& v : videos) {
        try {
            const MediaInfo info = probe_media(v);
            if (!info.has_audio) {
                report.skipped.push_back(v.string() + ": no audio stream");
                log::warn(kLog, "skipped {}: no audio stream", v.string());
                continue;
            }
            const std::filesystem::path out = output_dir / (v.stem().string() + "." + format);
            write_audio_file(out, decode_audio_s16(v, kRate), kRate, format);
            report.written.push_back(out.string());
            log::info(kLog, "{} -> {}", v.string(), out.string());
            if (strip_audio) {
                remux_without_audio(v, v);
                report.stripped.push_back(v.string());
                log::info(kLog, "{}: audio track removed (stream copy)", v.string());
            }
        } catch (const Error& e) {
            report.skipped.push_back(e.message());
            log::warn(kLog, "skipped {}: {}", v.string(), e.message());
        }
    }
    log::info(kLog, "extract-audio: {} written, {} skipped, {} stripped", report.written.size(),
              report.skipped.size(), report.stripped.size());
    return report;
}

}  // namespace st::plugins::data_local
