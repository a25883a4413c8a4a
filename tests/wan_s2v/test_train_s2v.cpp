// Wan S2V end to end through the real st-host: a tiny S2V model (make-model), short clips with audio
// (ffmpeg CLI, tests only), SimpleTuner-style configs in both audio modes (audio.auto_split on the
// video dataset, and a manual `dataset_type: audio` folder linked by s2v_datasets), LoRA training,
// validation with the reference image + driving audio muxed into the mp4, `st-host generate --audio`.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "../common/host_process.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using st_test::read_text;
using st_test::shell;
using st_test::write_text;

void run_or_throw(const std::string& cmd) {
    const auto p = shell(cmd);
    if (p.code != 0) throw std::runtime_error(cmd + " failed: " + p.out);
}

// The codec of the first audio stream of `file` ("" when it has none), read by ffprobe.
std::string audio_codec(const fs::path& file) {
    auto p = shell("ffprobe -v error -select_streams a -show_entries stream=codec_name -of csv=p=0 '" +
                   file.string() + "'");
    std::string s = p.out;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

class S2VTrainTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        root_ = fs::path(ST_TEST_BINARY_DIR) / "tmp-s2v-train" / std::to_string(::getpid());
        fs::remove_all(root_);
        fs::create_directories(root_ / "talk");
        fs::create_directories(root_ / "mute");
        fs::create_directories(root_ / "voices");
        run_or_throw(st_test::host_prefix() + "make-model --plugin wan_s2v --preset tiny --seed 2 --out '" +
                     (root_ / "model").string() + "'");
        const char* sources[] = {"testsrc", "testsrc2", "smptebars", "mandelbrot", "rgbtestsrc"};
        for (int i = 0; i < 5; ++i) {
            const std::string v = std::string(sources[i]) + "=size=48x48:rate=16";
            const std::string a = "sine=frequency=" + std::to_string(220 + 110 * i) + ":sample_rate=22050";
            const fs::path clip = root_ / "talk" / ("clip" + std::to_string(i) + ".mp4");
            run_or_throw("ffmpeg -nostdin -v error -y -f lavfi -i " + v + " -f lavfi -i " + a +
                         " -t 1.2 -pix_fmt yuv420p -c:a aac -shortest '" + clip.string() + "'");
            write_text(fs::path(clip).replace_extension(".txt"),
                       std::string("a person talking over ") + sources[i]);
            // The manual mode: the same video without audio + its audio as a wav with the same stem.
            const fs::path mute = root_ / "mute" / clip.filename();
            run_or_throw("ffmpeg -nostdin -v error -y -i '" + clip.string() + "' -an -c:v copy '" +
                         mute.string() + "'");
            write_text(fs::path(mute).replace_extension(".txt"),
                       std::string("a person talking over ") + sources[i]);
            run_or_throw("ffmpeg -nostdin -v error -y -i '" + clip.string() + "' -vn -ac 1 -ar 16000 '" +
                         (root_ / "voices" / ("clip" + std::to_string(i) + ".wav")).string() + "'");
        }
        // A clip without audio among the talking ones: skipped (or zeros with allow_zero_audio).
        run_or_throw(
            "ffmpeg -nostdin -v error -y -f lavfi -i life=size=48x48:rate=16 -t 1.2 -pix_fmt yuv420p '" +
            (root_ / "talk" / "silent.mp4").string() + "'");
        write_text(root_ / "talk" / "silent.txt", "cells of the game of life");
    }
    static void TearDownTestSuite() {
        if (!std::getenv("ST_KEEP_TEST_DIR")) fs::remove_all(root_);
    }

    static fs::path write_config(const std::string& name, const json& datasets, const json& extra) {
        write_text(root_ / (name + ".datasets.json"), datasets.dump(2));
        json c = {{"model_family", "wan_s2v"},
                  {"model_flavour", "s2v-14b-2.2"},
                  {"pretrained_model_name_or_path", (root_ / "model").string()},
                  {"data_backend_config", (root_ / (name + ".datasets.json")).string()},
                  {"output_dir", (root_ / name).string()},
                  {"model_type", "lora"},
                  {"lora_rank", 4},
                  {"train_batch_size", 1},
                  {"max_train_steps", 6},
                  {"learning_rate", 1e-3},
                  {"optimizer", "adamw"},
                  {"lr_scheduler", "constant"},
                  {"mixed_precision", "no"},
                  {"checkpoint_step_interval", 100},
                  {"resume_from_checkpoint", "none"},
                  {"framerate", 16},
                  {"seed", 3}};
        for (const auto& [k, v] : extra.items()) c[k] = v;
        const fs::path p = root_ / (name + ".config.json");
        write_text(p, c.dump(2));
        return p;
    }
    static json video_dataset(const std::string& id, const std::string& dir) {
        return {{"id", id},
                {"type", "local"},
                {"dataset_type", "video"},
                {"instance_data_dir", (root_ / dir).string()},
                {"caption_strategy", "textfile"},
                {"resolution", 32},
                {"resolution_type", "pixel"},
                {"crop", true},
                {"crop_aspect", "square"},
                {"cache_dir_vae", (root_ / ("cache-" + id) / "vae").string()},
                {"video", {{"num_frames", 9}, {"min_frames", 9}}}};
    }
    static json text_dataset(const std::string& id) {
        return {{"id", id},
                {"type", "local"},
                {"dataset_type", "text_embeds"},
                {"default", true},
                {"cache_dir", (root_ / ("cache-" + id)).string()}};
    }
    static fs::path root_;
};
fs::path S2VTrainTest::root_;

TEST_F(S2VTrainTest, AutoSplitTrainsValidatesWithDrivingAudioAndSkipsSilentClips) {
    json datasets = json::array({video_dataset("talk", "talk"), text_dataset("text-a")});
    const fs::path cfg = write_config("auto", datasets,
                                      {{"validation_step_interval", 6},
                                       {"validation_prompt", "a person talking"},
                                       {"validation_negative_prompt", "blurry"},
                                       {"validation_num_video_frames", 9},
                                       {"validation_resolution", "32x32"},
                                       {"validation_num_inference_steps", 2},
                                       {"validation_guidance", 3.0},
                                       {"validation_seed", 1}});
    const auto r = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    // The silent clip is skipped with a message naming it and why.
    EXPECT_NE(r.out.find("silent.mp4"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("audio.auto_split"), std::string::npos);
    // Six finite training steps.
    std::istringstream metrics(read_text(root_ / "auto" / "metrics.jsonl"));
    std::string line;
    int steps = 0;
    while (std::getline(metrics, line)) {
        if (line.empty()) continue;
        const json m = json::parse(line);
        if (!m.contains("loss")) continue;
        EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << line;
        EXPECT_EQ(m.value("bucket", std::string()).find("silent"), std::string::npos);
        ++steps;
    }
    EXPECT_EQ(steps, 6);
    // The LoRA covers the audio injector attentions (SimpleTuner's default targets hit them too).
    const std::string lora = read_text(root_ / "auto" / "pytorch_lora_weights.safetensors");
    EXPECT_NE(lora.find("audio_injector.injector.0"), std::string::npos);
    EXPECT_NE(lora.find("audio_injector.injector.1"), std::string::npos);
    // Validation: reference image + audio of a training sample; the mp4 carries that audio.
    EXPECT_NE(r.out.find("validation reference sample"), std::string::npos) << r.out;
    const fs::path mp4 = root_ / "auto" / "validation" / "step_6_validation.mp4";
    ASSERT_TRUE(fs::exists(mp4)) << r.out;
    EXPECT_EQ(audio_codec(mp4), "aac");
}

TEST_F(S2VTrainTest, ManualAudioFolderLinkedByS2VDatasets) {
    json video = video_dataset("mute", "mute");
    video["s2v_datasets"] = json::array({"voices"});
    json voices = {{"id", "voices"},
                   {"type", "local"},
                   {"dataset_type", "audio"},
                   {"instance_data_dir", (root_ / "voices").string()},
                   {"cache_dir_vae", (root_ / "cache-voices").string()},
                   {"audio", {{"sample_rate", 16000}, {"channels", 1}}}};
    // With TREAD on (S2V routes its noisy video tokens; SimpleTuner's S2V TREAD path is broken).
    const json tread = {
        {"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 1}, {"end_layer_idx", -1}}}}};
    const fs::path cfg = write_config("manual", json::array({video, voices, text_dataset("text-b")}),
                                      {{"max_train_steps", 3}, {"tread_config", tread}});
    const auto r = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("TREAD over 3 blocks: route 0: 50% of the video tokens skip blocks 1 .. 2"),
              std::string::npos)
        << r.out;
    EXPECT_TRUE(fs::exists(root_ / "manual" / "pytorch_lora_weights.safetensors"));
    // Every video found its audio by stem: nothing skipped for missing audio.
    EXPECT_EQ(r.out.find("no audio"), std::string::npos) << r.out;
}

TEST_F(S2VTrainTest, AllowZeroAudioKeepsSilentClips) {
    json video = video_dataset("zero", "talk");
    video["audio"] = {{"auto_split", true}, {"allow_zero_audio", true}};
    // With CREPA on block 1 (the tap's video tokens sit before S2V's reference and motion tokens).
    const json crepa = {{"max_train_steps", 2},
                        {"crepa_enabled", true},
                        {"crepa_block_index", 1},
                        {"crepa_encoder", (fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vits_style").string()},
                        {"crepa_encoder_image_size", 8}};
    const fs::path cfg = write_config("zero", json::array({video, text_dataset("text-c")}), crepa);
    const auto r = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("\"zero_audio\":1"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("regularizer features (crepa)"), std::string::npos) << r.out;
    const std::string metrics = st_test::read_text(root_ / "zero" / "metrics.jsonl");
    EXPECT_NE(metrics.find("\"crepa_alignment_score\""), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\"crepa_loss\""), std::string::npos) << metrics;
}

TEST_F(S2VTrainTest, GenerateMuxesTheDrivingAudioAndRequiresIt) {
    const std::string base = st_test::host_prefix() + "generate --plugin wan_s2v --model '" +
                             (root_ / "model").string() +
                             "' --prompt 'a person talking' --frames 9 --resolution 32x32 --steps 2 --fps 16 "
                             "--guidance 2 --image '" +
                             (root_ / "talk" / "clip1.mp4").string() + "' ";
    const fs::path out = root_ / "gen" / "talk.mp4";
    const auto ok = shell(base + "--audio '" + (root_ / "voices" / "clip1.wav").string() + "' --out '" +
                          out.string() + "'");
    ASSERT_EQ(ok.code, 0) << ok.out;
    EXPECT_EQ(audio_codec(out), "aac");
    const auto missing = shell(base + "--out '" + (root_ / "gen" / "no.mp4").string() + "'");
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.out.find("--audio"), std::string::npos) << missing.out;
}

}  // namespace

namespace {

TEST(S2VBenchCommand, ReportsBothAudioPathsAndEncoderSpeed) {
    // The benchmark command itself (numbers go to docs/performance.md; here only that it runs and
    // reports every row).
    const auto r =
        st_test::shell(st_test::host_prefix() +
                       "bench --plugin wan_s2v --preset tiny --steps 1 --frames 5 --resolution 32x32 "
                       "--audio-seconds 1");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* row :
         {"audio features from the cache", "audio encoded every step", "s per second of audio"})
        EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
    // With routes and --json: the last line is one JSON object with the routed pass next to the plain one.
    const auto tread = st_test::shell(
        st_test::host_prefix() +
        "bench --plugin wan_s2v --preset tiny --steps 1 --frames 5 --resolution 32x32 --audio-seconds 1 "
        "--json "
        "--tread_config '[{\"selection_ratio\":0.5,\"start_layer_idx\":1,\"end_layer_idx\":-1}]'");
    ASSERT_EQ(tread.code, 0) << tread.out;
    std::string last = tread.out.substr(0, tread.out.find_last_not_of('\n') + 1);
    last = last.substr(last.find_last_of('\n') + 1);
    const json j = json::parse(last);
    const json& row = j.at("presets").at(0);
    for (const char* key : {"fwd_s", "fwd_bwd_s", "peak_rss_mib"}) {
        EXPECT_GT(row.at(key).get<double>(), 0.0) << key;
        EXPECT_GT(row.at("tread").at(key).get<double>(), 0.0) << key;
    }
    EXPECT_GT(row.at("tread_fwd_bwd_speedup").get<double>(), 0.0);
    const auto bad = st_test::shell(st_test::host_prefix() + "bench --plugin wan_s2v --frames 6");
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.out.find("4k+1"), std::string::npos) << bad.out;
}

}  // namespace
