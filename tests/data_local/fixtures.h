// Test helpers for data_local: temporary folders, fixture clips made with the ffmpeg CLI (tests
// only; the implementation decodes with the FFmpeg libraries), and FakeEncoders, a documented test
// double for a model's encoders.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "st/data_backend.h"

namespace st_test {

namespace fs = std::filesystem;

/// A fresh folder under the build tree, removed at the end of the test.
struct TempDir {
    fs::path path;
    explicit TempDir(const std::string& name) {
        path = fs::path(ST_TEST_BINARY_DIR) / "tmp-data_local" / (name + "-" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

/// Runs the ffmpeg CLI (fixture generation only); fails the test when it fails.
inline void ffmpeg(const std::string& args) {
    const std::string cmd = "ffmpeg -nostdin -v error -y " + args + " 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

/// A test clip: `seconds` of testsrc at w x h, `fps`, with an optional 440 Hz tone of `audio_s`.
inline void make_clip(const fs::path& out, int w, int h, int fps, double seconds, double audio_s = 0,
                      const std::string& codec = "-c:v libx264 -preset ultrafast -pix_fmt yuv420p") {
    fs::create_directories(out.parent_path());
    std::string args = "-f lavfi -i testsrc=size=" + std::to_string(w) + "x" + std::to_string(h) +
                       ":rate=" + std::to_string(fps) + ":duration=" + std::to_string(seconds);
    if (audio_s > 0)
        args += " -f lavfi -i sine=frequency=440:sample_rate=44100:duration=" + std::to_string(audio_s);
    args += " " + codec;
    if (audio_s > 0) args += " -c:a aac";
    ffmpeg(args + " '" + out.string() + "'");
}

inline std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_text(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
}

/// Test double for a model's encoders (NOT a model): "latents" = 8x8 spatial average pooling of the
/// pixels and 4x temporal pooling (frame 0 alone, then groups of 4, Wan's 4k+1 layout), 3 channels
/// tiled to 16; text = 8x4 values derived from a hash of the caption; audio = per-video-frame mean
/// and absolute mean of the waveform window ([B, 2, frames]).
class FakeEncoders : public st::sdk::Encoders, public st::sdk::AudioConditioning {
  public:
    /// Offer the audio_conditioning capability (a text/video-only model when false).
    bool audio = true;
    st::sdk::Capability* capability(std::string_view id) override {
        if (audio && id == st::sdk::AudioConditioning::kId)
            return static_cast<st::sdk::AudioConditioning*>(this);
        return nullptr;
    }
    int audio_sample_rate() const override { return 16000; }
    std::string identity = "fake-encoders-v1";
    /// Also return "image_embeds" [B, 3, H*W/256] (16x16 pooling of frame 0), like Wan 2.1 I2V's CLIP.
    bool image_embeds = false;
    std::vector<int64_t> video_batches;  ///< batch size of each encode_video call
    std::vector<int64_t> text_batches;
    std::vector<at::Tensor> waveforms;  ///< every waveform given to encode_audio
    std::string cache_identity() const override { return identity; }
    int spatial_multiple() const override { return 16; }
    int temporal_multiple() const override { return 4; }
    st::sdk::TensorMap encode_video(const at::Tensor& pixels) override {
        // pixels [B, 3, F, H, W] -> latents [B, 16, (F-1)/4+1, H/8, W/8]
        video_batches.push_back(pixels.size(0));
        at::Tensor first = pixels.narrow(2, 0, 1);
        at::Tensor pooled = at::avg_pool3d(first, {1, 8, 8});
        if (pixels.size(2) > 1) {
            at::Tensor rest = at::avg_pool3d(pixels.narrow(2, 1, pixels.size(2) - 1), {4, 8, 8});
            pooled = at::cat({pooled, rest}, 2);
        }
        at::Tensor lat = pooled.repeat({1, 6, 1, 1, 1}).narrow(1, 0, 16).contiguous();
        if (image_embeds)
            return {{"latents", lat},
                    {"image_embeds", at::avg_pool2d(pixels.select(2, 0), {16, 16}).flatten(2).contiguous()}};
        return {{"latents", lat}};
    }
    st::sdk::TensorMap encode_text(const std::vector<std::string>& captions) override {
        text_batches.push_back(static_cast<int64_t>(captions.size()));
        at::Tensor out = at::empty({static_cast<int64_t>(captions.size()), 8, 4});
        for (size_t i = 0; i < captions.size(); ++i) {
            uint64_t h = std::hash<std::string>{}(captions[i]);
            for (int k = 0; k < 32; ++k) {
                h = h * 6364136223846793005ull + 1442695040888963407ull;
                out[static_cast<int64_t>(i)].view({-1})[k] = static_cast<float>((h >> 40) % 1000) / 1000.0f;
            }
        }
        return {{"prompt_embeds", out},
                {"attention_masks", at::ones({static_cast<int64_t>(captions.size()), 8})}};
    }
    st::sdk::TensorMap encode_audio(const at::Tensor& waveform, double fps, int64_t frames) override {
        // waveform [B, samples] -> [B, 2, frames]
        waveforms.push_back(waveform.clone());
        const int64_t per = waveform.size(1) / frames;
        at::Tensor w = waveform.narrow(1, 0, per * frames).view({waveform.size(0), frames, per});
        (void)fps;
        return {{"audio_features", at::stack({w.mean(2), w.abs().mean(2)}, 1)}};
    }
};

}  // namespace st_test
