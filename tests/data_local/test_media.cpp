// FFmpeg-library decoding: containers/codecs, odd sizes, rotation metadata, VFR frame choice by
// timestamp, audio windows. Fixture clips come from the ffmpeg CLI.
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

TEST(DataMediaTest, RotationMetadataMatchesFfmpegAutorotate) {
    TempDir dir("media-rot");
    // Left half white, right half black, 64x32, tagged with a display rotation: our decode must
    // equal what the ffmpeg CLI shows after its autorotate (the reference for "displayed").
    const auto src = dir.path / "src.mp4";
    st_test::ffmpeg(
        "-f lavfi -i color=black:size=64x32:rate=5:duration=1 -vf "
        "\"drawbox=x=0:y=0:w=32:h=32:color=white:t=fill\" "
        "-c:v libx264 -preset ultrafast -pix_fmt yuv444p '" +
        src.string() + "'");
    for (const char* tag : {"90", "180", "270"}) {
        const auto rot = dir.path / (std::string("rot") + tag + ".mp4");
        st_test::ffmpeg("-i '" + src.string() + "' -c copy -metadata:s:v:0 rotate=" + tag + " '" +
                        rot.string() + "'");
        const auto info = dl::probe_media(rot);
        EXPECT_NE(info.rotation, 0) << tag;
        const dl::Size shown = info.display;
        EXPECT_EQ(shown, std::string(tag) == "180" ? (dl::Size{64, 32}) : (dl::Size{32, 64})) << tag;
        at::Tensor ours = dl::decode_video(rot, info, 0, 1, identity_plan(shown))[0].to(at::kFloat).mean(2);
        const auto raw = dir.path / (std::string("cli") + tag + ".gray");
        st_test::ffmpeg("-i '" + rot.string() + "' -frames:v 1 -f rawvideo -pix_fmt gray '" + raw.string() +
                        "'");
        std::ifstream in(raw, std::ios::binary);
        std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        ASSERT_EQ(static_cast<int64_t>(bytes.size()), ours.numel()) << tag;
        at::Tensor cli = at::from_blob(bytes.data(), {shown.h, shown.w}, at::kByte).to(at::kFloat);
        EXPECT_LT((ours - cli).abs().mean().item<double>(), 8.0) << "rotate=" << tag;
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
