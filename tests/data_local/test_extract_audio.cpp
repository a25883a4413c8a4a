// run_extract_audio (st-host extract-audio): outputs decoded back with the FFmpeg libraries.
#include "extract_audio.h"

#include <gtest/gtest.h>

#include "fixtures.h"
#include "media.h"
#include "st/error.h"

namespace dl = st::plugins::data_local;
namespace fs = std::filesystem;
using st_test::TempDir;

TEST(DataExtractAudioTest, WritesSixteenKhzMonoAndStripsAudio) {
    TempDir dir("extract");
    const fs::path in = dir.path / "in";
    fs::create_directories(in);
    st_test::ffmpeg(
        "-f lavfi -i testsrc=size=64x48:rate=10:duration=2 -f lavfi -i "
        "\"aevalsrc='0.1*t|-0.1*t':s=44100:d=2\" "
        "-c:v libx264 -preset ultrafast -c:a aac '" +
        (in / "speech.mp4").string() + "'");
    st_test::make_clip(in / "mute.mp4", 64, 48, 10, 1.0);
    for (const std::string format : {"wav", "flac"}) {
        const fs::path out = dir.path / ("out_" + format);
        const auto report = dl::run_extract_audio(in, out, false, format);
        ASSERT_EQ(report.written.size(), 1u) << format;
        ASSERT_EQ(report.skipped.size(), 1u) << format;
        EXPECT_NE(report.skipped[0].find("no audio stream"), std::string::npos);
        const fs::path file = out / ("speech." + format);
        const auto info = dl::probe_media(file);
        EXPECT_EQ(info.audio_sample_rate, 16000) << format;
        EXPECT_EQ(info.audio_channels, 1) << format;
        EXPECT_EQ(info.audio_codec, format == "wav" ? "pcm_s16le" : "flac");
        const auto samples = dl::decode_audio_s16(file, 16000);
        EXPECT_NEAR(static_cast<double>(samples.size()), 32000.0, 1200.0) << format;
    }
    const auto report = dl::run_extract_audio(in, dir.path / "strip", true, "wav");
    ASSERT_EQ(report.stripped.size(), 1u);
    const auto stripped = dl::probe_media(in / "speech.mp4");
    EXPECT_TRUE(stripped.has_video);
    EXPECT_FALSE(stripped.has_audio);
    EXPECT_EQ(stripped.packets, 20);  // video packets copied, not re-encoded
    EXPECT_THROW(dl::run_extract_audio(in, dir.path / "x", false, "mp3"), st::Error);
    EXPECT_THROW(dl::run_extract_audio(dir.path / "missing", dir.path / "x", false, "wav"), st::Error);
}
