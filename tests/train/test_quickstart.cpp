// SimpleTuner's Wan, Wan S2V and Sana Video quickstarts as their users have them: config/wan/config.json and
// config/wan/multidatabackend.json exactly as the guide prints them (../shared/reference/
// quickstart-configs/wan), only the model paths pointing at a tiny local model, run from the folder
// that holds config/ and datasets/ (SimpleTuner's working directory). Every key is accepted (uploads,
// trackers, attention backends and the like with a note), dataset paths resolve against the working
// directory as SimpleTuner's do, and two steps train. The step budget and the validation cadence are
// command-line overrides; with the quickstart's validation on, its skip layer 9 is refused before any
// caching on this 2-block model.
#include <gtest/gtest.h>

#include "fixtures.h"

namespace {

namespace fs = std::filesystem;
using st_test::shell;

const fs::path kQuickstart = fs::path(ST_TEST_SOURCE_DIR) / "tests" / "golden" / "quickstart" / "wan";

}  // namespace

TEST(QuickstartTest, WanQuickstartFilesRunUnchangedApartFromModelPaths) {
    const fs::path root = fs::path(ST_TEST_BINARY_DIR) / "tmp-quickstart" / std::to_string(::getpid());
    fs::remove_all(root);
    fs::create_directories(root / "config" / "wan");
    fs::create_directories(root / "datasets" / "disney-black-and-white");
    auto make = shell(st_test::host_prefix() + "make-model --plugin wan --preset tiny --seed 5 --out '" +
                      (root / "models" / "wan").string() + "'");
    ASSERT_EQ(make.code, 0) << make.out;
    // The tiny model's RoPE table is sized for tiny grids; the quickstart's 640x352 buckets need more.
    auto tcfg =
        nlohmann::json::parse(st_test::read_text(root / "models" / "wan" / "transformer" / "config.json"));
    tcfg["rope_max_seq_len"] = 1024;
    st_test::write_text(root / "models" / "wan" / "transformer" / "config.json", tcfg.dump(2));
    // Two clips of the quickstart's size class (pixel_area 480, 75 frames at 16 fps).
    const char* sources[] = {"testsrc", "mandelbrot"};
    for (int i = 0; i < 2; ++i) {
        const fs::path clip =
            root / "datasets" / "disney-black-and-white" / ("clip" + std::to_string(i) + ".mp4");
        auto r = shell(std::string("ffmpeg -nostdin -v error -y -f lavfi -i ") + sources[i] +
                       "=size=640x360:rate=16 -frames:v 76 -pix_fmt yuv420p '" + clip.string() + "'");
        ASSERT_EQ(r.code, 0) << r.out;
        st_test::write_text(fs::path(clip).replace_extension(".txt"),
                            std::string("a ") + sources[i] + " pattern");
    }
    auto config = nlohmann::json::parse(st_test::read_text(kQuickstart / "config.json"));
    config["pretrained_model_name_or_path"] = (root / "models" / "wan").string();
    config["pretrained_t5_model_name_or_path"] = (root / "models" / "wan").string();
    st_test::write_text(root / "config" / "wan" / "config.json", config.dump(2));
    fs::copy_file(kQuickstart / "multidatabackend.json", root / "config" / "wan" / "multidatabackend.json");
    // The quickstart names config/wan/webhook.json; a raw target nobody listens on (posts fail, logged).
    st_test::write_text(root / "config" / "wan" / "webhook.json",
                        R"({"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"})");
    const std::string run =
        "cd '" + root.string() + "' && " + st_test::host_prefix() + "config/wan/config.json ";

    // Validation as the quickstart has it: skip layer 9 does not exist here, said before caching.
    auto early = shell(run + "--max_train_steps 2");
    EXPECT_NE(early.code, 0);
    EXPECT_NE(early.out.find("validation_guidance_skip_layers = [9]: block 9 does not exist"),
              std::string::npos)
        << early.out;
    EXPECT_EQ(early.out.find("encode latents"), std::string::npos) << "refused only after caching";

    auto r = shell(run + "--max_train_steps 2 --validation_step_interval 0");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* note :
         {"'push_to_hub' = \"true\" has no effect in st", "'attention_mechanism'",
          "report_to = wandb needs a network service", "dataset paths are relative to the current directory"})
        EXPECT_NE(r.out.find(note), std::string::npos) << note << "\n" << r.out;
    EXPECT_NE(r.out.find("bucket 640x352@73: 2 samples"), std::string::npos) << r.out;
    const auto lines = st_test::read_jsonl(root / "output" / "wan" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_TRUE(fs::exists(root / "output" / "wan" / "pytorch_lora_weights.safetensors"));
    EXPECT_TRUE(fs::exists(root / "output" / "wan" / "ema" / "pytorch_lora_weights.safetensors"));
    EXPECT_TRUE(fs::is_directory(root / "cache" / "vae" / "wan" / "disney-black-and-white"))
        << "cache not under cwd";
    fs::remove_all(root);
}

TEST(QuickstartTest, SanaVideoQuickstartFilesRunUnchangedApartFromModelPaths) {
    // SimpleTuner's SANAVIDEO quickstart: a full fine-tune with adamw_bf16, EMA, cosine over
    // lr_warmup_steps, 81 frames at pixel_area 480 — on the tiny Sana Video model.
    const fs::path src = fs::path(ST_TEST_SOURCE_DIR) / "tests" / "golden" / "quickstart" / "sanavideo";
    const fs::path root = fs::path(ST_TEST_BINARY_DIR) / "tmp-quickstart-sana" / std::to_string(::getpid());
    fs::remove_all(root);
    fs::create_directories(root / "config" / "sanavideo");
    fs::create_directories(root / "datasets" / "disney-black-and-white");
    auto make =
        shell(st_test::host_prefix() + "make-model --plugin sanavideo --preset tiny --seed 5 --out '" +
              (root / "models" / "sanavideo").string() + "'");
    ASSERT_EQ(make.code, 0) << make.out;
    const char* sources[] = {"testsrc", "mandelbrot"};
    for (int i = 0; i < 2; ++i) {
        const fs::path clip =
            root / "datasets" / "disney-black-and-white" / ("clip" + std::to_string(i) + ".mp4");
        auto r = shell(std::string("ffmpeg -nostdin -v error -y -f lavfi -i ") + sources[i] +
                       "=size=640x360:rate=16 -frames:v 82 -pix_fmt yuv420p '" + clip.string() + "'");
        ASSERT_EQ(r.code, 0) << r.out;
        st_test::write_text(fs::path(clip).replace_extension(".txt"),
                            std::string("a ") + sources[i] + " pattern");
    }
    auto config = nlohmann::json::parse(st_test::read_text(src / "config.json"));
    config["pretrained_model_name_or_path"] = (root / "models" / "sanavideo").string();
    config["pretrained_vae_model_name_or_path"] = (root / "models" / "sanavideo").string();
    st_test::write_text(root / "config" / "sanavideo" / "config.json", config.dump(2));
    fs::copy_file(src / "multidatabackend.json", root / "config" / "sanavideo" / "multidatabackend.json");
    const auto r =
        shell("cd '" + root.string() + "' && " + st_test::host_prefix() +
              "config/sanavideo/config.json --max_train_steps 2 --validation_num_inference_steps 2 "
              "--validation_num_video_frames 5");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* note : {"report_to = wandb needs a network service",
                             "training sigmas: uniform over the 1000 sigmas", "bucket 704x384@81: 2 samples"})
        EXPECT_NE(r.out.find(note), std::string::npos) << note << "\n" << r.out;
    // Two steps, then the final validation at the quickstart's 832x480 with the shipped DPM-Solver++
    // sampler and its negative prompt (steps and frames shortened on the command line).
    const auto lines = st_test::read_jsonl(root / "output" / "sanavideo" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[1].value("step", 0), 2);
    EXPECT_TRUE(lines[2].contains("validation")) << lines[2].dump();
    EXPECT_NE(r.out.find("validation sampler: dpmsolver++ with flow shift 8"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::exists(root / "output" / "sanavideo" / "validation" / "step_2_validation.mp4"));
    EXPECT_TRUE(
        fs::exists(root / "output" / "sanavideo" / "transformer" / "diffusion_pytorch_model.safetensors"));
    EXPECT_TRUE(fs::exists(root / "output" / "sanavideo" / "ema" / "transformer" /
                           "diffusion_pytorch_model.safetensors"));
    EXPECT_TRUE(fs::is_directory(root / "cache" / "vae" / "sanavideo" / "disney-black-and-white"));
    fs::remove_all(root);
}

TEST(QuickstartTest, WanS2VQuickstartFilesRunUnchangedApartFromModelPaths) {
    // SimpleTuner's WAN_S2V quickstart: LoRA with optimi-lion, cosine, EMA every 2 steps, audio split
    // from the videos (audio.auto_split) at 16 kHz, pixel_area 480 x 75 frames -- on the tiny S2V model
    // with two clips that carry speech-like tones. Two steps, then the final validation with the
    // reference sample's audio (steps, frames and size shortened on the command line).
    const fs::path src = fs::path(ST_TEST_SOURCE_DIR) / "tests" / "golden" / "quickstart" / "wan_s2v";
    const fs::path root = fs::path(ST_TEST_BINARY_DIR) / "tmp-quickstart-s2v" / std::to_string(::getpid());
    fs::remove_all(root);
    fs::create_directories(root / "config" / "wan_s2v");
    fs::create_directories(root / "datasets" / "s2v-videos");
    auto make = shell(st_test::host_prefix() + "make-model --plugin wan_s2v --preset tiny --seed 5 --out '" +
                      (root / "models" / "s2v").string() + "'");
    ASSERT_EQ(make.code, 0) << make.out;
    for (int i = 0; i < 2; ++i) {
        const fs::path clip = root / "datasets" / "s2v-videos" / ("clip" + std::to_string(i) + ".mp4");
        auto r = shell(
            "ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=640x360:rate=16 -f lavfi -i "
            "sine=frequency=" +
            std::to_string(300 + 100 * i) + ":sample_rate=16000 -t 4.75 -pix_fmt yuv420p -c:a aac '" +
            clip.string() + "'");
        ASSERT_EQ(r.code, 0) << r.out;
        st_test::write_text(fs::path(clip).replace_extension(".txt"),
                            "a person speaking " + std::to_string(i));
    }
    auto config = nlohmann::json::parse(st_test::read_text(src / "config.json"));
    config["pretrained_model_name_or_path"] = (root / "models" / "s2v").string();
    config["pretrained_t5_model_name_or_path"] = (root / "models" / "s2v").string();
    st_test::write_text(root / "config" / "wan_s2v" / "config.json", config.dump(2));
    fs::copy_file(src / "multidatabackend.json", root / "config" / "wan_s2v" / "multidatabackend.json");
    st_test::write_text(root / "config" / "wan_s2v" / "webhook.json",
                        R"({"webhook_type": "raw", "callback_url": "http://127.0.0.1:9/hook"})");
    const auto r = shell("cd '" + root.string() + "' && " + st_test::host_prefix() +
                         "config/wan_s2v/config.json --max_train_steps 2 --validation_num_inference_steps 2 "
                         "--validation_num_video_frames 5 --validation_resolution 64x64");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* note :
         {"'push_to_hub' = \"true\" has no effect in st", "report_to = wandb needs a network service",
          "created audio dataset 's2v-videos_audio'", "bucket 640x352@73: 2 samples"})
        EXPECT_NE(r.out.find(note), std::string::npos) << note << "\n" << r.out;
    const auto lines = st_test::read_jsonl(root / "output" / "wan_s2v" / "metrics.jsonl");
    ASSERT_GE(lines.size(), 2u);
    EXPECT_EQ(lines[1].value("step", 0), 2);
    EXPECT_TRUE(fs::exists(root / "output" / "wan_s2v" / "validation" / "step_2_validation.mp4"));
    EXPECT_TRUE(fs::exists(root / "output" / "wan_s2v" / "pytorch_lora_weights.safetensors"));
    EXPECT_TRUE(fs::exists(root / "output" / "wan_s2v" / "ema" / "pytorch_lora_weights.safetensors"));
    EXPECT_TRUE(fs::is_directory(root / "cache" / "vae" / "wan_s2v" / "videos"));
    fs::remove_all(root);
}
