// FFmpeg-library decoding: containers/codecs, odd sizes, rotation metadata, anamorphic pixels, MPEG
// program/transport/elementary streams, VFR frame choice by timestamp, audio windows. Fixture clips come
// from the ffmpeg CLI.
#include "media.h"

#include <gtest/gtest.h>

#include "fixtures.h"
#include "st/error.h"

namespace dl = st::plugins::data_local;
using st_test::TempDir;

namespace {
dl::ResizePlan identity_plan(dl::Size s) {
    dl::ResizePlan p;
    p.source = s;
    p.resized = s;
    p.target = s;
    return p;
}
}  // namespace

TEST(DataMediaTest, CommonContainersAndCodecsDecode) {
    TempDir dir("media-codecs");
    struct Case {
        const char* name;
        const char* codec;
    };
    const Case cases[] = {{"a.mp4", "-c:v libx264 -preset ultrafast -pix_fmt yuv420p"},
                          {"b.mkv", "-c:v libvpx-vp9 -deadline realtime -cpu-used 8"},
                          {"c.webm", "-c:v libvpx -deadline realtime"},
                          {"d.avi", "-c:v mpeg4"},
                          {"e.mov", "-c:v mjpeg -pix_fmt yuvj422p"},
                          {"f.gif", "-c:v gif"}};
    for (const auto& c : cases) {
        const auto path = dir.path / c.name;
        st_test::make_clip(path, 96, 64, 10, 1.0, 0, c.codec);
        const dl::MediaInfo info = dl::probe_media(path);
        ASSERT_TRUE(info.has_video) << c.name;
        EXPECT_EQ(info.display, (dl::Size{96, 64})) << c.name;
        EXPECT_NEAR(info.fps, 10.0, 0.6) << c.name;
        EXPECT_GE(info.grid_frames, 9) << c.name;
        dl::ResizePlan plan = identity_plan({96, 64});
        plan.resized = {48, 32};
        plan.target = {32, 32};
        plan.crop_x = 8;
        at::Tensor frames = dl::decode_video(path, info, 0, 9, plan);
        EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{9, 32, 32, 3})) << c.name;
        EXPECT_GT(frames.to(at::kFloat).std().item<double>(), 10.0) << c.name;  // real picture content
    }
}

TEST(DataMediaTest, OddSizesAndStillImages) {
    TempDir dir("media-odd");
    const auto clip = dir.path / "odd.mp4";
    st_test::make_clip(clip, 161, 91, 10, 1.0, 0, "-c:v libx264 -preset ultrafast -pix_fmt yuv444p");
    const auto info = dl::probe_media(clip);
    EXPECT_EQ(info.display, (dl::Size{161, 91}));
    dl::ResizePlan plan = identity_plan({161, 91});
    plan.resized = {57, 33};
    plan.target = {48, 32};
    EXPECT_EQ(dl::decode_video(clip, info, 2, 5, plan).size(0), 5);
    const auto png = dir.path / "still.png";
    st_test::ffmpeg("-f lavfi -i testsrc=size=33x17 -frames:v 1 '" + png.string() + "'");
    const auto pi = dl::probe_media(png);
    EXPECT_TRUE(pi.is_still_image);
    EXPECT_EQ(pi.grid_frames, 1);
    EXPECT_EQ(dl::decode_video(png, pi, 0, 1, identity_plan({33, 17})).sizes(),
              (std::vector<int64_t>{1, 17, 33, 3}));
}

namespace {

std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// RGB [h, w, 3] float of 4:2:0 planes (w x h luma, chroma at half resolution, nearest chroma sample),
/// by the matrix (kr, kb) and range: the analytic conversion, independent of swscale.
at::Tensor yuv420_to_rgb(const std::vector<uint8_t>& yuv, int w, int h, double kr, double kb,
                         bool full_range) {
    const int cw = (w + 1) / 2, ch = (h + 1) / 2;
    at::Tensor rgb = at::empty({h, w, 3}, at::kFloat);
    auto acc = rgb.accessor<float, 3>();
    const double kg = 1.0 - kr - kb;
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            const double luma = yuv[y * w + x];
            const double cb = yuv[w * h + (y / 2) * cw + x / 2] - 128.0;
            const double cr = yuv[w * h + cw * ch + (y / 2) * cw + x / 2] - 128.0;
            const double yn = full_range ? luma / 255.0 : (luma - 16.0) / 219.0;
            const double pb = cb / (full_range ? 255.0 : 224.0), pr = cr / (full_range ? 255.0 : 224.0);
            const double r = yn + 2.0 * (1.0 - kr) * pr, b = yn + 2.0 * (1.0 - kb) * pb;
            const double g = (yn - kr * r - kb * b) / kg;
            const double c[3] = {r, g, b};
            for (int k = 0; k < 3; ++k)
                acc[y][x][k] = static_cast<float>(std::clamp(c[k] * 255.0, 0.0, 255.0));
        }
    return rgb;
}

}  // namespace

// 8-bit 4:2:0 sources take the fast path (resize in YUV, unscaled SIMD YUV->RGB of the crop window). Its
// output must be the analytic conversion of the resized planes (the ffmpeg CLI's swscale area/bicubic
// resize in YUV) with the stream's own matrix and range, for even and odd crops, shrinking and enlarging.
TEST(DataMediaTest, YuvFastPathIsTheExactMatrixConversionOfTheResizedPlanes) {
    TempDir dir("media-yuv420");
    struct Source {
        const char* name;
        const char* args;
        double kr, kb;
        double other_kr, other_kb;  // the wrong matrix, which must not fit
        bool full_range;
    };
    const Source sources[] = {
        {"bt709.mp4", "-pix_fmt yuv420p -colorspace bt709 -color_primaries bt709 -color_trc bt709", 0.2126,
         0.0722, 0.299, 0.114, false},
        {"full601.mp4", "-pix_fmt yuvj420p -colorspace smpte170m", 0.299, 0.114, 0.2126, 0.0722, true}};
    struct Crop {
        dl::Size resized, target;
        int x, y;
        const char* flags;
    };
    const Crop crops[] = {{{120, 72}, {96, 64}, 12, 4, "area"},
                          {{120, 72}, {96, 64}, 13, 5, "area"},
                          {{220, 130}, {191, 113}, 7, 9, "bicubic"},
                          {{121, 73}, {96, 64}, 13, 5, "area"},  // odd resized planes
                          {{160, 96}, {144, 80}, 8, 8, "area"},  // no resize: the decoder's planes
                          {{160, 96}, {150, 90}, 5, 3, "area"}};
    for (const Source& src : sources) {
        const auto clip = dir.path / src.name;
        st_test::ffmpeg(
            "-f lavfi -i testsrc2=size=160x96:rate=10:duration=0.5 -c:v libx264 -preset ultrafast -qp 0 " +
            std::string(src.args) + " '" + clip.string() + "'");
        const auto info = dl::probe_media(clip);
        for (const Crop& c : crops) {
            dl::ResizePlan plan = identity_plan({160, 96});
            plan.resized = c.resized;
            plan.target = c.target;
            plan.crop_x = c.x;
            plan.crop_y = c.y;
            const at::Tensor ours = dl::decode_video(clip, info, 0, 1, plan)[0].to(at::kFloat);
            const auto raw = dir.path / "resized.yuv";
            st_test::ffmpeg(
                "-i '" + clip.string() + "' -frames:v 1 -vf scale=" + std::to_string(c.resized.w) + ":" +
                std::to_string(c.resized.h) + ":flags=" + c.flags + " -f rawvideo '" + raw.string() + "'");
            const auto yuv = read_bytes(raw);
            const int cw = (c.resized.w + 1) / 2, ch = (c.resized.h + 1) / 2;
            ASSERT_EQ(yuv.size(), static_cast<size_t>(c.resized.w * c.resized.h + 2 * cw * ch)) << src.name;
            auto window = [&](const at::Tensor& full) {
                return full.slice(0, c.y, c.y + c.target.h).slice(1, c.x, c.x + c.target.w);
            };
            const std::string what = std::string(src.name) + " crop " + std::to_string(c.x) + "," +
                                     std::to_string(c.y) + " " + c.flags;
            const at::Tensor diff =
                (ours - window(yuv420_to_rgb(yuv, c.resized.w, c.resized.h, src.kr, src.kb, src.full_range)))
                    .abs();
            EXPECT_LE(diff.max().item<double>(), 4.0) << what;
            EXPECT_LT(diff.mean().item<double>(), 1.0) << what;
            const at::Tensor wrong = (ours - window(yuv420_to_rgb(yuv, c.resized.w, c.resized.h, src.other_kr,
                                                                  src.other_kb, src.full_range)))
                                         .abs();
            EXPECT_GT(wrong.max().item<double>(), 10.0) << what << ": the other matrix must not fit";
            const at::Tensor other_range =
                (ours - window(yuv420_to_rgb(yuv, c.resized.w, c.resized.h, src.kr, src.kb, !src.full_range)))
                    .abs();
            EXPECT_GT(other_range.max().item<double>(), 8.0) << what << ": the other range must not fit";
        }
    }
}

TEST(DataMediaTest, RotationMetadataMatchesFfmpegAutorotate) {
    TempDir dir("media-rot");
    // 64x32: left half white, top-right quadrant grey, bottom-right black, tagged with a display
    // rotation. Our decode must equal what the ffmpeg CLI shows after its autorotate (the reference for
    // "displayed"), at the native size and resized + cropped. yuv444p takes the general swscale path,
    // yuv420p the fast YUV path.
    for (const std::string pix_fmt : {"yuv444p", "yuv420p"}) {
        const auto src = dir.path / ("src-" + pix_fmt + ".mp4");
        st_test::ffmpeg(
            "-f lavfi -i color=black:size=64x32:rate=5:duration=1 -vf "
            "\"drawbox=x=0:y=0:w=32:h=32:color=white:t=fill,drawbox=x=32:y=0:w=32:h=16:color=gray:t=fill\" "
            "-c:v libx264 -preset ultrafast -pix_fmt " +
            pix_fmt + " '" + src.string() + "'");
        for (const std::string tag : {"90", "180", "270"}) {
            const std::string what = "rotate=" + tag + " " + pix_fmt;
            const auto rot = dir.path / ("rot" + tag + pix_fmt + ".mp4");
            st_test::ffmpeg("-i '" + src.string() + "' -c copy -metadata:s:v:0 rotate=" + tag + " '" +
                            rot.string() + "'");
            const auto info = dl::probe_media(rot);
            EXPECT_NE(info.rotation, 0) << what;
            const dl::Size shown = info.display;
            EXPECT_EQ(shown, tag == "180" ? (dl::Size{64, 32}) : (dl::Size{32, 64})) << what;
            dl::ResizePlan small = identity_plan(shown);
            small.resized = {shown.w / 2, shown.h / 2};
            small.target = {small.resized.w - 4, small.resized.h - 6};
            small.crop_x = 2;
            small.crop_y = 4;
            for (const dl::ResizePlan& plan : {identity_plan(shown), small}) {
                const at::Tensor ours = dl::decode_video(rot, info, 0, 1, plan)[0].to(at::kFloat).mean(2);
                const auto raw = dir.path / "cli.gray";
                st_test::ffmpeg(
                    "-i '" + rot.string() + "' -frames:v 1 -vf scale=" + std::to_string(plan.resized.w) +
                    ":" + std::to_string(plan.resized.h) +
                    ":flags=area,crop=" + std::to_string(plan.target.w) + ":" +
                    std::to_string(plan.target.h) + ":" + std::to_string(plan.crop_x) + ":" +
                    std::to_string(plan.crop_y) + " -f rawvideo -pix_fmt gray '" + raw.string() + "'");
                std::vector<uint8_t> bytes = read_bytes(raw);
                ASSERT_EQ(static_cast<int64_t>(bytes.size()), ours.numel()) << what;
                at::Tensor cli =
                    at::from_blob(bytes.data(), {plan.target.h, plan.target.w}, at::kByte).to(at::kFloat);
                EXPECT_LT((ours - cli).abs().mean().item<double>(), 8.0)
                    << what << " resized " << plan.resized.w << "x" << plan.resized.h;
            }
        }
    }
}

TEST(DataMediaTest, AnamorphicPixelsAreShownAtTheirDisplayAspect) {
    // A 1024x576 frame with a 200x200 white square, stored anamorphically as 720x576 with SAR 64:45 (PAL
    // 16:9, what DVD rips carry). Players show 1024x576; so must the training frame: buckets see 16:9
    // and the square stays square after resizing (stored pixels are 0.7 times as wide as tall).
    TempDir dir("media-sar");
    const auto clip = dir.path / "pal.mp4";
    st_test::ffmpeg(
        "-f lavfi -i color=black:size=1024x576:rate=5:duration=1 -vf "
        "\"drawbox=x=412:y=188:w=200:h=200:color=white:t=fill,scale=720:576,setsar=64/45\" "
        "-c:v libx264 -preset ultrafast -pix_fmt yuv420p '" +
        clip.string() + "'");
    const auto info = dl::probe_media(clip);
    EXPECT_EQ(info.coded, (dl::Size{720, 576}));
    EXPECT_EQ(info.display, (dl::Size{1024, 576}));
    EXPECT_NEAR(info.pixel_aspect, 64.0 / 45.0, 1e-9);
    // Resized to 512 wide at the shown aspect, as the bucket planner does.
    dl::ResizePlan plan = identity_plan(info.display);
    plan.resized = plan.target = {512, 512 * info.display.h / info.display.w};
    const at::Tensor gray = dl::decode_video(clip, info, 0, 1, plan)[0].to(at::kFloat).mean(2);
    const at::Tensor white = gray > 128;
    const int64_t rows = white.any(1).sum().item<int64_t>(), cols = white.any(0).sum().item<int64_t>();
    EXPECT_NEAR(static_cast<double>(rows), 100.0, 3.0);
    EXPECT_NEAR(static_cast<double>(cols), 100.0, 3.0) << "the square came out " << cols << "x" << rows;
}

TEST(DataMediaTest, StreamsWithoutTimestampsAreCountedByDecoding) {
    // Raw MPEG-1/2 video elementary streams carry no container duration or start time.
    TempDir dir("media-es");
    for (const std::string fmt : {"mpeg2video", "mpeg1video"}) {
        const auto clip = dir.path / ("clip." + std::string(fmt == "mpeg2video" ? "m2v" : "m1v"));
        st_test::ffmpeg("-f lavfi -i testsrc=size=64x48:rate=25:duration=1 -c:v " + fmt + " -f " + fmt +
                        " '" + clip.string() + "'");
        const auto info = dl::probe_media(clip);
        EXPECT_EQ(info.grid_frames, 25) << fmt;
        EXPECT_NEAR(info.fps, 25.0, 1e-6) << fmt;
        const at::Tensor frames =
            dl::decode_video(clip, info, 0, info.grid_frames, identity_plan(info.display));
        EXPECT_EQ(frames.size(0), 25) << fmt;
    }
}

TEST(DataMediaTest, AnamorphicNtscIsResizedLikeFfmpegToSquarePixels) {
    // NTSC 16:9 (720x480, SAR 32:27) shows 853.3 pixels wide: the display width is rounded to even like
    // ffmpeg's scale=-2, and the frame resized from the stored pixels to half that size must be what the
    // ffmpeg CLI gives for scale=427:240,setsar=1 (area filter in YUV, then BT.709 to RGB).
    TempDir dir("media-ntsc");
    const auto clip = dir.path / "ntsc.mp4";
    st_test::ffmpeg(
        "-f lavfi -i testsrc2=size=720x480:rate=10:duration=0.3 -vf setsar=32/27 -c:v libx264 "
        "-preset ultrafast -qp 0 -pix_fmt yuv420p -colorspace bt709 -color_primaries bt709 "
        "-color_trc bt709 '" +
        clip.string() + "'");
    const auto info = dl::probe_media(clip);
    EXPECT_EQ(info.coded, (dl::Size{720, 480}));
    EXPECT_EQ(info.display, (dl::Size{854, 480}));
    dl::ResizePlan plan = identity_plan(info.display);
    plan.resized = plan.target = {427, 240};
    const at::Tensor ours = dl::decode_video(clip, info, 0, 1, plan)[0].to(at::kFloat);
    const auto raw = dir.path / "scaled.yuv";
    st_test::ffmpeg("-i '" + clip.string() +
                    "' -frames:v 1 -vf scale=427:240:flags=area,setsar=1 -f rawvideo '" + raw.string() + "'");
    const at::Tensor diff = (ours - yuv420_to_rgb(read_bytes(raw), 427, 240, 0.2126, 0.0722, false)).abs();
    EXPECT_LE(diff.max().item<double>(), 4.0);
    EXPECT_LT(diff.mean().item<double>(), 1.0);
}

TEST(DataMediaTest, MpegProgramTransportAndElementaryStreamsDecodeTheFramesFfmpegShows) {
    // DVD-style MPEG-2 (B-frames, 12-frame GOPs) in the containers it comes in. Program streams put a pts
    // only on the PES packets that start a picture, so some frames carry a decode time only; raw elementary
    // streams have no clock at all (ffprobe: start_time and duration N/A). Every frame must be the one the
    // ffmpeg CLI decodes at that position, and a window that starts mid-file (a seek, which in MPEG-PS/TS
    // lands on any picture) must hold the same frames as decoding from the start.
    TempDir dir("media-mpeg");
    for (const std::string name : {"dvd.mpg", "dvd.ts", "dvd.m2v", "vcd.m1v"}) {
        const auto clip = dir.path / name;
        const std::string format = name.ends_with(".mpg")   ? "mpeg"
                                   : name.ends_with(".ts")  ? "mpegts"
                                   : name.ends_with(".m2v") ? "mpeg2video"
                                                            : "mpeg1video";
        const std::string codec = name.ends_with(".m1v") ? "mpeg1video" : "mpeg2video";
        st_test::ffmpeg("-f lavfi -i testsrc=size=160x128:rate=25:duration=4 -c:v " + codec +
                        " -bf 2 -g 12 -q:v 2 -f " + format + " '" + clip.string() + "'");
        if (format.ends_with("video")) {
            // No start time; no duration either for MPEG-2 (MPEG-1 gets one guessed from the bit rate).
            const std::string entries = format == "mpeg2video" ? "start_time,duration" : "start_time";
            const std::string cmd = "test \"$(ffprobe -v error -show_entries format=" + entries +
                                    " -of csv=p=0 '" + clip.string() + "' | tr -d ',\\n')\" = \"$(printf '" +
                                    (format == "mpeg2video" ? "N/AN/A" : "N/A") + "')\"";
            ASSERT_EQ(std::system(cmd.c_str()), 0) << name << ": the fixture must have no clock: " << cmd;
        }
        const auto info = dl::probe_media(clip);
        EXPECT_EQ(info.grid_frames, 100) << name;
        EXPECT_NEAR(info.fps, 25.0, 1e-6) << name;
        EXPECT_FALSE(info.variable_frame_rate) << name;
        const at::Tensor all =
            dl::decode_video(clip, info, 0, info.grid_frames, identity_plan(info.display)).to(at::kFloat);
        const auto raw = dir.path / "frames.rgb";
        st_test::ffmpeg("-i '" + clip.string() + "' -fps_mode passthrough -pix_fmt rgb24 -f rawvideo '" +
                        raw.string() + "'");
        const auto bytes = read_bytes(raw);
        ASSERT_EQ(bytes.size(), static_cast<size_t>(100 * 128 * 160 * 3)) << name;
        const at::Tensor cli =
            at::from_blob(const_cast<uint8_t*>(bytes.data()), {100, 128, 160, 3}, at::kByte).to(at::kFloat);
        ASSERT_EQ(all.sizes(), cli.sizes()) << name;
        const at::Tensor per_frame = (all - cli).abs().mean({1, 2, 3});
        // Same libswscale conversion at the same size: equal up to rounding. Neighbouring testsrc frames
        // differ by about 0.5 on average, so a frame off by one fails.
        EXPECT_LT(per_frame.max().item<double>(), 0.1)
            << name << ": frame " << per_frame.argmax().item<int64_t>() << " is not the CLI's";
        const at::Tensor window = dl::decode_video(clip, info, 50, 50, identity_plan(info.display));
        EXPECT_TRUE(at::equal(window.to(at::kFloat), all.slice(0, 50))) << name << ": a window from frame 50";
    }
}

TEST(DataMediaTest, VariableFrameRateFramesChosenByTimestamp) {
    TempDir dir("media-vfr");
    // 20 frames whose brightness encodes their index (Y = 16 + 10 N, limited range); the first 10 last 0.1 s
    // each, the next 10 last 0.05 s (pts in ms: 0,100,...,900,950,...,1400). mkv keeps the timestamps.
    const auto vfr = dir.path / "vfr.mkv";
    st_test::ffmpeg(
        "-f lavfi -i "
        "\"color=black:size=32x32:rate=10:duration=2,geq=lum='16+N*10':cb=128:cr=128,settb=1/1000,"
        "setpts='(if(lt(N,10),N*0.1,1.0+(N-10)*0.05))/TB'\" -frames:v 20 -fps_mode passthrough "
        "-c:v libx264 -preset ultrafast -qp 0 -pix_fmt yuv444p '" +
        vfr.string() + "'");
    const auto info = dl::probe_media(vfr);
    EXPECT_TRUE(info.variable_frame_rate);
    EXPECT_EQ(info.packets, 20);
    at::Tensor frames = dl::decode_video(vfr, info, 0, info.grid_frames, identity_plan({32, 32}));
    // Each grid frame is the latest source frame shown at its time.
    for (int64_t i = 0; i < info.grid_frames; ++i) {
        const double t = i / info.fps;
        const int64_t n = t < 1.0 - 1e-9 ? static_cast<int64_t>(t / 0.1 + 0.25)
                                         : 10 + static_cast<int64_t>((t - 1.0) / 0.05 + 0.25);
        const double luma = frames[i].to(at::kFloat).mean().item<double>();
        EXPECT_NEAR(luma, std::min<int64_t>(n, 19) * 10.0 * 255.0 / 219.0, 4.0)
            << "grid frame " << i << " t=" << t;
    }
}

TEST(DataMediaTest, AudioWindowIsTheClipSpan) {
    TempDir dir("media-audio");
    // Audio value = 0.1 * t (a ramp), so a window's first sample tells where it starts.
    const auto clip = dir.path / "ramp.mkv";
    st_test::ffmpeg(
        "-f lavfi -i color=gray:size=32x32:rate=10:duration=3 -f lavfi -i "
        "\"aevalsrc='0.1*t':s=48000:d=3\" -c:v libx264 -preset ultrafast -c:a pcm_s16le '" +
        clip.string() + "'");
    const auto info = dl::probe_media(clip);
    ASSERT_TRUE(info.has_audio);
    EXPECT_NEAR(info.audio_duration, 3.0, 0.05);
    const auto w = dl::decode_audio_window(clip, 16000, 1.0, 0.5);
    EXPECT_EQ(w.samples, 8000);
    EXPECT_EQ(w.covered, 8000);
    EXPECT_NEAR(w.waveform[0].item<float>(), 0.10, 0.005);
    EXPECT_NEAR(w.waveform[7999].item<float>(), 0.15, 0.005);
    // A window past the end of the track is zero-padded and reports its coverage.
    const auto tail = dl::decode_audio_window(clip, 16000, 2.75, 0.5);
    EXPECT_NEAR(static_cast<double>(tail.covered) / tail.samples, 0.5, 0.02);
    EXPECT_EQ(tail.waveform[7999].item<float>(), 0.0f);
}

TEST(DataMediaTest, BadInputsThrowWithReason) {
    TempDir dir("media-bad");
    st_test::write_text(dir.path / "empty.mp4", "");
    st_test::write_text(dir.path / "text.mp4", "this is not a video at all\n");
    auto reason = [](const std::filesystem::path& p) {
        try {
            dl::probe_media(p);
        } catch (const st::Error& e) {
            return e.message();
        }
        return std::string();
    };
    EXPECT_NE(reason(dir.path / "empty.mp4").find("empty file"), std::string::npos);
    EXPECT_NE(reason(dir.path / "text.mp4").find("not a readable media file"), std::string::npos);
    EXPECT_NE(reason(dir.path).find("not a regular file"), std::string::npos);
}
