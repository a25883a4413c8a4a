// MP4/PNG writers, checked with independent readers: ffprobe for the stream facts and the ffmpeg CLI
// for the decoded pixels (both from scripts/setup-deps.sh; the writers themselves never use the CLI).
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "media/video_writer.h"
#include "st/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace st::host::media;

namespace {

struct Output {
    int rc = -1;
    std::string text;
};

// Runs a shell command and returns its exit status and stdout.
Output run(const std::string& cmd) {
    Output o;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return o;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) o.text.append(buf, n);
    int status = ::pclose(p);
    o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return o;
}

std::string quote(const fs::path& p) {
    return "'" + p.string() + "'";
}

bool have_tools() {
    return run("ffprobe -version >/dev/null 2>&1 && ffmpeg -version >/dev/null 2>&1").rc == 0;
}

// ffprobe -show_streams as JSON (with -count_frames: nb_read_frames is the decoded frame count).
json probe(const fs::path& file) {
    auto o = run("ffprobe -v error -count_frames -show_streams -show_format -of json " + quote(file));
    EXPECT_EQ(o.rc, 0) << "ffprobe failed on " << file;
    return o.rc == 0 ? json::parse(o.text) : json::object();
}

json stream_of(const json& probed, const std::string& type) {
    for (const auto& s : probed.value("streams", json::array()))
        if (s.value("codec_type", "") == type) return s;
    ADD_FAILURE() << "no " << type << " stream in " << probed.dump();
    return json::object();
}

// Decodes every frame to rgb24 with the ffmpeg CLI: uint8 [F, H, W, 3].
at::Tensor decode_rgb(const fs::path& file, int64_t h, int64_t w) {
    auto o = run("ffmpeg -v error -i " + quote(file) + " -f rawvideo -pix_fmt rgb24 -");
    EXPECT_EQ(o.rc, 0);
    const int64_t frame = h * w * 3;
    EXPECT_EQ(static_cast<int64_t>(o.text.size()) % frame, 0);
    auto t = at::empty({static_cast<int64_t>(o.text.size()) / frame, h, w, 3}, at::kByte);
    std::memcpy(t.data_ptr<uint8_t>(), o.text.data(), o.text.size());
    return t;
}

// A smooth moving pattern (what a decoded video looks like): uint8 [F, H, W, 3].
at::Tensor moving_gradient(int64_t f, int64_t h, int64_t w) {
    auto t = at::arange(f, at::kFloat).view({f, 1, 1});
    auto y = at::arange(h, at::kFloat).view({1, h, 1});
    auto x = at::arange(w, at::kFloat).view({1, 1, w});
    auto r = 128 + 100 * at::sin((x + 3 * t) / 8.0) + 0 * y;
    auto g = 128 + 90 * at::cos((y + 2 * t) / 7.0) + 0 * x;
    auto b = (x + y + 4 * t) * (200.0 / (h + w + 4 * f)) + 20;
    return at::stack({r, g, b}, -1).round().clamp(0, 255).to(at::kByte).contiguous();
}

double mean_abs_error(const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kFloat) - b.to(at::kFloat)).abs().mean().item<double>();
}

double to_double(const json& v) {
    return v.is_string() ? std::stod(v.get<std::string>()) : v.get<double>();
}

class VideoWriterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have_tools())
            GTEST_SKIP() << "ffprobe/ffmpeg not installed (scripts/setup-deps.sh installs them)";
        dir_ = fs::temp_directory_path() / ("st_media_test_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        std::error_code ec;
        if (!dir_.empty()) fs::remove_all(dir_, ec);
    }
    // Files in dir_ whose name contains ".tmp-" (leftovers of an atomic write).
    int temp_files() const {
        int n = 0;
        for (auto& e : fs::recursive_directory_iterator(dir_))
            if (e.path().filename().string().find(".tmp-") != std::string::npos) ++n;
        return n;
    }
    // Encodes, probes and decodes one clip; returns the decoded frames.
    at::Tensor round_trip(int64_t f, int64_t h, int64_t w, int fps, int64_t coded_h, int64_t coded_w) {
        auto frames = moving_gradient(f, h, w);
        auto out = dir_ / ("clip_" + std::to_string(w) + "x" + std::to_string(h) + ".mp4");
        write_mp4(out, frames, fps);
        EXPECT_TRUE(fs::exists(out));
        EXPECT_EQ(temp_files(), 0);
        auto probed = probe(out);
        auto v = stream_of(probed, "video");
        EXPECT_EQ(v.value("codec_name", ""), "h264");
        EXPECT_EQ(v.value("pix_fmt", ""), "yuv420p");
        EXPECT_EQ(v.value("width", 0), coded_w);
        EXPECT_EQ(v.value("height", 0), coded_h);
        EXPECT_EQ(v.value("nb_read_frames", ""), std::to_string(f));
        EXPECT_EQ(v.value("r_frame_rate", ""), std::to_string(fps) + "/1");
        EXPECT_EQ(v.value("avg_frame_rate", ""), std::to_string(fps) + "/1");
        EXPECT_NEAR(to_double(v["duration"]), static_cast<double>(f) / fps, 1e-3);
        // faststart: the moov atom precedes mdat.
        std::ifstream file(out, std::ios::binary);
        std::string head(4096, '\0');
        file.read(head.data(), static_cast<std::streamsize>(head.size()));
        EXPECT_LT(head.find("moov"), head.find("mdat")) << "moov atom not at the front";
        return decode_rgb(out, coded_h, coded_w);
    }
    fs::path dir_;
};

}  // namespace

TEST(FramesToUint8Test, RoundsClampsAndMovesChannelsLast) {
    // [3, F=1, H=1, W=6]: channel c of pixel x.
    auto v = at::tensor({-1.0f, 1.0f, 0.0f, 2.0f, -3.0f, 0.2f}).view({1, 1, 1, 6}).repeat({3, 1, 1, 1});
    v[1] = v[1] * -1;
    auto u = frames_to_uint8(v);
    ASSERT_EQ(u.sizes(), (at::IntArrayRef{1, 1, 6, 3}));
    ASSERT_EQ(u.scalar_type(), at::kByte);
    // (x / 2 + 0.5) clamped to [0, 1], times 255, rounded half to even (127.5 -> 128, 153.0 -> 153).
    const int expect_r[6] = {0, 255, 128, 255, 0, 153};
    const int expect_g[6] = {255, 0, 128, 0, 255, 102};
    for (int x = 0; x < 6; ++x) {
        EXPECT_EQ(u[0][0][x][0].item<int>(), expect_r[x]) << x;
        EXPECT_EQ(u[0][0][x][1].item<int>(), expect_g[x]) << x;
        EXPECT_EQ(u[0][0][x][2].item<int>(), expect_r[x]) << x;
    }
    // [1, 3, F, H, W] and bf16 are accepted, with the same result.
    EXPECT_TRUE(at::equal(frames_to_uint8(v.unsqueeze(0).to(at::kBFloat16)), u));
}

TEST(FramesToUint8Test, RejectsWrongShapeOrDtypeNamingTheExpectedShape) {
    for (const auto& bad : {at::zeros({4, 2, 8, 8}), at::zeros({2, 3, 2, 8, 8}), at::zeros({3, 8, 8}),
                            at::zeros({3, 2, 8, 8}, at::kByte)}) {
        try {
            frames_to_uint8(bad);
            ADD_FAILURE() << "accepted " << bad.sizes();
        } catch (const st::Error& e) {
            EXPECT_NE(std::string(e.what()).find("[3, F, H, W]"), std::string::npos) << e.what();
        }
    }
}

TEST_F(VideoWriterTest, EncodesH264AtExactFpsAndDecodesClose) {
    // Measured on these patterns (FFmpeg 5.1, libx264 CRF 18): MAE 3.26/255 (64x48) and 3.19/255
    // (66x38). Most of it is yuv420p chroma subsampling of this colourful pattern: lossless x264
    // (qp 0) in yuv420p still gives 2.85, in yuv444p 0.40. A broken conversion (swapped R/B planes, a
    // shifted or repeated frame) gives tens.
    auto in_a = moving_gradient(17, 48, 64);
    auto out_a = round_trip(17, 48, 64, 16, 48, 64);
    ASSERT_EQ(out_a.size(0), 17);
    double mae_a = mean_abs_error(out_a, in_a);
    EXPECT_LT(mae_a, 5.0);
    auto in_b = moving_gradient(17, 38, 66);
    auto out_b = round_trip(17, 38, 66, 15, 38, 66);
    ASSERT_EQ(out_b.size(0), 17);
    double mae_b = mean_abs_error(out_b, in_b);
    EXPECT_LT(mae_b, 5.0);
    // Frame order is kept: each decoded frame is closest to its own source frame.
    for (int64_t i = 1; i < 17; ++i)
        EXPECT_LT(mean_abs_error(out_a[i], in_a[i]), mean_abs_error(out_a[i], in_a[i - 1])) << i;
    std::printf("[ measured ] MAE 64x48: %.3f, 66x38: %.3f (of 255)\n", mae_a, mae_b);
}

TEST_F(VideoWriterTest, OddSizeIsPaddedByReplicatingTheLastRowAndColumn) {
    auto in = moving_gradient(9, 37, 65);
    auto out = round_trip(9, 37, 65, 15, 38, 66);
    ASSERT_EQ(out.size(0), 9);
    EXPECT_LT(mean_abs_error(out.slice(1, 0, 37).slice(2, 0, 65), in), 5.0);
    // The added column/row repeat the last ones of the source.
    EXPECT_LT(mean_abs_error(out.select(2, 65).slice(1, 0, 37), in.select(2, 64)), 6.0);
    EXPECT_LT(mean_abs_error(out.select(1, 37).slice(1, 0, 65), in.select(1, 36)), 6.0);
}

TEST_F(VideoWriterTest, MuxesAacAudioWithItsDuration) {
    // 1.0 s of 440 Hz at 16000 Hz (an AAC rate: kept) next to 15 frames at 15 fps.
    auto t = at::arange(16000, at::kFloat) / 16000.0;
    auto sine = 0.5 * at::sin(2 * M_PI * 440.0 * t);
    AudioTrack track{sine, 16000};
    auto out = dir_ / "with_audio.mp4";
    write_mp4(out, moving_gradient(15, 32, 32), 15, &track);
    auto probed = probe(out);
    auto a = stream_of(probed, "audio");
    EXPECT_EQ(a.value("codec_name", ""), "aac");
    EXPECT_EQ(a.value("sample_rate", ""), "16000");
    EXPECT_EQ(a.value("channels", 0), 1);
    const double aac_frame = 1024.0 / 16000.0;
    EXPECT_NEAR(to_double(a["duration"]), 1.0, aac_frame);
    auto v = stream_of(probed, "video");
    EXPECT_EQ(v.value("nb_read_frames", ""), "15");
    EXPECT_EQ(v.value("r_frame_rate", ""), "15/1");

    // The tone survives: decode to 16 kHz mono float and check the energy at 440 Hz dominates.
    auto o = run("ffmpeg -v error -i " + quote(out) + " -f f32le -ac 1 -ar 16000 -");
    ASSERT_EQ(o.rc, 0);
    auto pcm = at::from_blob(o.text.data(), {static_cast<int64_t>(o.text.size() / 4)}, at::kFloat).clone();
    ASSERT_GT(pcm.size(0), 8000);
    auto seg = pcm.slice(0, 2000, 10000);
    auto ts = at::arange(seg.size(0), at::kFloat) / 16000.0;
    auto power_at = [&](double hz) {
        double c = (seg * at::cos(2 * M_PI * hz * ts)).sum().item<double>();
        double s = (seg * at::sin(2 * M_PI * hz * ts)).sum().item<double>();
        return c * c + s * s;
    };
    EXPECT_GT(power_at(440.0), 100.0 * power_at(1000.0));
    EXPECT_NEAR(seg.pow(2).mean().item<double>(), 0.125, 0.03);  // RMS of a 0.5 sine
}

TEST_F(VideoWriterTest, ResamplesUnsupportedRatesAndKeepsStereo) {
    // 20000 Hz is not an AAC rate: resampled to 48000 Hz; duration is kept.
    auto t = at::arange(20000, at::kFloat) / 20000.0;
    auto stereo = at::stack({0.3 * at::sin(2 * M_PI * 300.0 * t), 0.3 * at::sin(2 * M_PI * 500.0 * t)});
    AudioTrack track{stereo, 20000};
    auto out = dir_ / "stereo.mp4";
    write_mp4(out, moving_gradient(16, 16, 16), 16, &track);
    auto a = stream_of(probe(out), "audio");
    EXPECT_EQ(a.value("sample_rate", ""), "48000");
    EXPECT_EQ(a.value("channels", 0), 2);
    EXPECT_NEAR(to_double(a["duration"]), 1.0, 1024.0 / 48000.0);
}

TEST_F(VideoWriterTest, PngIsLosslessAndAtomic) {
    auto frame = moving_gradient(1, 37, 50)[0].contiguous();
    frame[5][7] = at::tensor({255, 0, 17}, at::kByte);  // a sharp pixel a lossy path would blur
    auto out = dir_ / "frame.png";
    std::ofstream(out) << "old contents";
    write_png(out, frame);
    EXPECT_EQ(temp_files(), 0);
    auto v = stream_of(probe(out), "video");
    EXPECT_EQ(v.value("codec_name", ""), "png");
    EXPECT_EQ(v.value("width", 0), 50);
    EXPECT_EQ(v.value("height", 0), 37);
    auto back = decode_rgb(out, 37, 50);
    ASSERT_EQ(back.size(0), 1);
    EXPECT_TRUE(at::equal(back[0], frame));
}

TEST_F(VideoWriterTest, UnwritableDestinationNamesThePathAndLeavesNoTempFile) {
    auto frames = moving_gradient(3, 16, 16);
    std::ofstream(dir_ / "a_file") << "x";
    const std::pair<fs::path, std::string> cases[] = {
        {dir_ / "missing_dir" / "v.mp4", "No such file or directory"},
        {dir_ / "a_file" / "v.mp4", "Not a directory"}};
    for (const auto& [out, reason] : cases) {
        try {
            write_mp4(out, frames, 15);
            ADD_FAILURE() << "wrote " << out;
        } catch (const st::Error& e) {
            EXPECT_NE(std::string(e.what()).find(out.string()), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
        }
        try {
            write_png(out.parent_path() / "f.png", frames[0]);
            ADD_FAILURE() << "wrote png under " << out.parent_path();
        } catch (const st::Error& e) {
            EXPECT_NE(std::string(e.what()).find((out.parent_path() / "f.png").string()), std::string::npos)
                << e.what();
            EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
        }
    }
    // The final rename fails (the destination is a non-empty directory): the encoded temp file is removed.
    fs::create_directories(dir_ / "taken.mp4" / "inside");
    EXPECT_THROW(write_mp4(dir_ / "taken.mp4", frames, 15), st::Error);
    EXPECT_THROW(write_png(dir_ / "taken.mp4", frames[0]), st::Error);
    EXPECT_EQ(temp_files(), 0);
}

TEST_F(VideoWriterTest, WrongInputsNameTheExpectedShape) {
    auto expect_error = [](auto&& fn, const std::string& part) {
        try {
            fn();
            ADD_FAILURE() << "no error, expected one containing " << part;
        } catch (const st::Error& e) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        }
    };
    auto out = dir_ / "bad.mp4";
    expect_error([&] { write_mp4(out, at::zeros({4, 16, 16, 3}), 15); }, "uint8 [F, H, W, 3]");
    expect_error([&] { write_mp4(out, at::zeros({4, 16, 16, 4}, at::kByte), 15); }, "[F, H, W, 3]");
    expect_error([&] { write_mp4(out, at::zeros({16, 16, 3}, at::kByte), 15); }, "[F, H, W, 3]");
    expect_error([&] { write_mp4(out, at::zeros({4, 16, 16, 3}, at::kByte), 0); }, "fps must be > 0");
    AudioTrack bad_audio{at::zeros({2, 3, 100}), 16000};
    expect_error([&] { write_mp4(out, at::zeros({4, 16, 16, 3}, at::kByte), 15, &bad_audio); }, "[C, N]");
    AudioTrack no_rate{at::zeros({100}), 0};
    expect_error([&] { write_mp4(out, at::zeros({4, 16, 16, 3}, at::kByte), 15, &no_rate); }, "sample_rate");
    expect_error([&] { write_png(dir_ / "bad.png", at::zeros({1, 16, 16, 3}, at::kByte)); }, "[H, W, 3]");
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(temp_files(), 0);
}
