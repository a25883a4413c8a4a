// Sana Video end to end through the real st-host: a tiny Sana Video model (make-model, the diffusers
// SanaVideoPipeline layout), short clips, SimpleTuner-style configs: LoRA training with validation
// (the shipped DPM-Solver++ sampler, the negative prompt without the complex human instruction), a full
// fine-tune with EMA saved in the diffusers transformer/ layout and read back by an independent reader,
// exact resume of the full fine-tune, CREPA on a Sana block, `st-host generate`, probe, the benchmark.
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

std::vector<json> metrics_of(const fs::path& file) {
    std::vector<json> out;
    std::istringstream in(read_text(file));
    for (std::string line; std::getline(in, line);)
        if (!line.empty() && line.find("\"loss\"") != std::string::npos) out.push_back(json::parse(line));
    return out;
}

class SanaTrainTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        root_ = fs::path(ST_TEST_BINARY_DIR) / "tmp-sana-train" / std::to_string(::getpid());
        fs::remove_all(root_);
        fs::create_directories(root_ / "clips");
        run_or_throw(st_test::host_prefix() + "make-model --plugin sanavideo --preset tiny --seed 3 --out '" +
                     (root_ / "model").string() + "'");
        const char* sources[] = {"testsrc", "testsrc2", "smptebars"};
        for (int i = 0; i < 3; ++i) {
            const fs::path clip = root_ / "clips" / ("clip" + std::to_string(i) + ".mp4");
            run_or_throw(std::string("ffmpeg -nostdin -v error -y -f lavfi -i ") + sources[i] +
                         "=size=48x48:rate=16 -frames:v 12 -pix_fmt yuv420p '" + clip.string() + "'");
            write_text(fs::path(clip).replace_extension(".txt"), std::string("A ") + sources[i] + " Pattern");
        }
    }
    static void TearDownTestSuite() {
        if (!std::getenv("ST_KEEP_TEST_DIR")) fs::remove_all(root_);
    }

    static fs::path write_config(const std::string& name, const json& extra) {
        const json datasets = json::array({{{"id", name + "-clips"},
                                            {"type", "local"},
                                            {"dataset_type", "video"},
                                            {"instance_data_dir", (root_ / "clips").string()},
                                            {"caption_strategy", "textfile"},
                                            {"resolution", 32},
                                            {"resolution_type", "pixel"},
                                            {"crop", true},
                                            {"crop_aspect", "square"},
                                            {"cache_dir_vae", (root_ / ("cache-" + name) / "vae").string()},
                                            {"video", {{"num_frames", 9}, {"min_frames", 9}}}},
                                           {{"id", name + "-text"},
                                            {"type", "local"},
                                            {"dataset_type", "text_embeds"},
                                            {"default", true},
                                            {"cache_dir", (root_ / ("cache-" + name) / "text").string()}}});
        write_text(root_ / (name + ".datasets.json"), datasets.dump(2));
        json c = {{"model_family", "sanavideo"},
                  {"pretrained_model_name_or_path", (root_ / "model").string()},
                  {"data_backend_config", (root_ / (name + ".datasets.json")).string()},
                  {"output_dir", (root_ / name).string()},
                  {"model_type", "lora"},
                  {"lora_rank", 4},
                  {"train_batch_size", 1},
                  {"max_train_steps", 4},
                  {"learning_rate", 1e-3},
                  {"optimizer", "adamw"},
                  {"lr_scheduler", "constant"},
                  {"mixed_precision", "no"},
                  {"checkpoint_step_interval", 100},
                  {"resume_from_checkpoint", "none"},
                  {"framerate", 16},
                  {"seed", 5}};
        for (const auto& [k, v] : extra.items()) c[k] = v;
        const fs::path p = root_ / (name + ".config.json");
        write_text(p, c.dump(2));
        return p;
    }
    static fs::path root_;
};
fs::path SanaTrainTest::root_;

TEST_F(SanaTrainTest, LoraTrainsWithItsOwnScheduleAndValidatesWithTheShippedSampler) {
    const fs::path cfg = write_config("lora", {{"validation_step_interval", 4},
                                               {"validation_prompt", "a test pattern"},
                                               {"validation_negative_prompt", "blurry"},
                                               {"validation_num_video_frames", 5},
                                               {"validation_resolution", "32x32"},
                                               {"validation_num_inference_steps", 2},
                                               {"validation_guidance", 3.0},
                                               {"validation_seed", 1},
                                               {"flow_schedule_shift", 5.0}});
    const auto r = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("training sigmas: uniform over the 1000 sigmas"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(
                  "flow_schedule_shift, flow_schedule_auto_shift and flow_use_uniform_schedule do not apply"),
              std::string::npos);
    EXPECT_NE(r.out.find("validation sampler: dpmsolver++ with flow shift 8"), std::string::npos) << r.out;
    const auto steps = metrics_of(root_ / "lora" / "metrics.jsonl");
    ASSERT_EQ(steps.size(), 4u);
    for (const auto& m : steps) {
        EXPECT_TRUE(std::isfinite(m["loss"].get<double>()));
        // Sigmas from the table (k / 1000): the timesteps are whole numbers in [1, 1000].
        if (m.contains("timesteps"))
            for (const auto& t : m["timesteps"]) EXPECT_EQ(std::fmod(t.get<double>(), 1.0), 0.0) << m.dump();
    }
    // diffusers / PEFT names of SimpleTuner's default Sana targets.
    const std::string lora = read_text(root_ / "lora" / "pytorch_lora_weights.safetensors");
    for (const char* key : {"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight",
                            "transformer.transformer_blocks.1.attn2.to_out.0.lora_B.weight"})
        EXPECT_NE(lora.find(key), std::string::npos) << key;
    EXPECT_EQ(lora.find("ff.conv_"), std::string::npos);
    EXPECT_TRUE(fs::exists(root_ / "lora" / "validation" / "step_4_validation.mp4")) << r.out;
}

TEST_F(SanaTrainTest, FullFineTuneWithEmaSavesTheDiffusersTransformerAndResumesExactly) {
    const json full = {{"model_type", "full"},      {"mixed_precision", "bf16"},
                       {"optimizer", "adamw_bf16"}, {"learning_rate", 1e-4},
                       {"use_ema", true},           {"ema_update_interval", 2},
                       {"max_grad_norm", 0.0},      {"checkpoint_step_interval", 2}};
    const fs::path a = write_config("full", full);
    const auto r = shell(st_test::host_prefix() + "'" + a.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    const fs::path tr = root_ / "full" / "transformer";
    ASSERT_TRUE(fs::exists(tr / "config.json")) << r.out;
    ASSERT_TRUE(fs::exists(tr / "diffusion_pytorch_model.safetensors"));
    // The independent reader: names, shapes and config as diffusers' SanaVideoTransformer3DModel has them.
    const fs::path reader = fs::path(ST_TEST_SOURCE_DIR) / "tests" / "sanavideo" / "read_sana_transformer.py";
    const auto py = shell("python3 '" + reader.string() + "' '" + tr.string() + "'");
    ASSERT_EQ(py.code, 0) << py.out;
    EXPECT_NE(py.out.find("OK 64 tensors"), std::string::npos) << py.out;
    // use_ema: the EMA weights in the same layout, also readable.
    const auto ema = shell("python3 '" + reader.string() + "' '" +
                           (root_ / "full" / "ema" / "transformer").string() + "'");
    EXPECT_EQ(ema.code, 0) << ema.out;

    // Interrupted at step 2 (the checkpoint), resumed: the final weights equal the uninterrupted run's.
    json half = full;
    half["max_train_steps"] = 2;
    const fs::path b = write_config("resumed", half);
    ASSERT_EQ(shell(st_test::host_prefix() + "'" + b.string() + "'").code, 0);
    json rest = full;
    rest["resume_from_checkpoint"] = "latest";
    const fs::path c = write_config("resumed", rest);
    const auto rr = shell(st_test::host_prefix() + "'" + c.string() + "'");
    ASSERT_EQ(rr.code, 0) << rr.out;
    EXPECT_EQ(read_text(root_ / "resumed" / "transformer" / "diffusion_pytorch_model.safetensors"),
              read_text(tr / "diffusion_pytorch_model.safetensors"));
}

TEST_F(SanaTrainTest, CrepaAlignsASanaBlock) {
    const json crepa = {{"max_train_steps", 2},
                        {"crepa_enabled", true},
                        {"crepa_block_index", 1},
                        {"crepa_encoder", (fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vits_style").string()},
                        {"crepa_encoder_image_size", 8}};
    const fs::path cfg = write_config("crepa", crepa);
    const auto r = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string metrics = read_text(root_ / "crepa" / "metrics.jsonl");
    EXPECT_NE(metrics.find("\"crepa_alignment_score\""), std::string::npos) << metrics;
}

TEST_F(SanaTrainTest, GenerateProbeAndRefusals) {
    const fs::path out = root_ / "gen" / "cat.mp4";
    const auto g =
        shell(st_test::host_prefix() + "generate --plugin sanavideo --model '" + (root_ / "model").string() +
              "' --prompt 'a cat' --frames 5 --resolution 32x32 --steps 2 --guidance 2 --out '" +
              out.string() + "'");
    ASSERT_EQ(g.code, 0) << g.out;
    EXPECT_TRUE(fs::exists(out));
    EXPECT_NE(g.out.find("dpmsolver++"), std::string::npos) << g.out;
    // Without --guidance the pipeline's 6.0 applies (neither flag nor config file sets it).
    const auto d =
        shell(st_test::host_prefix() + "generate --plugin sanavideo --model '" + (root_ / "model").string() +
              "' --prompt 'a cat' --frames 5 --resolution 32x32 --steps 2 --out '" +
              (root_ / "gen" / "d.mp4").string() + "'");
    ASSERT_EQ(d.code, 0) << d.out;
    EXPECT_NE(d.out.find("the model's pipeline defaults: guidance 6"), std::string::npos) << d.out;
    EXPECT_EQ(d.out.find("50 steps"), std::string::npos) << d.out;
    const auto p =
        shell(st_test::host_prefix() + "probe --plugin sanavideo '" + (root_ / "model").string() + "'");
    ASSERT_EQ(p.code, 0) << p.out;
    EXPECT_NE(p.out.find("diffusers pipeline"), std::string::npos) << p.out;
    // TREAD cannot drop tokens of a model whose feed-forward convolves the grid: said before caching.
    const fs::path cfg = write_config(
        "tread",
        {{"tread_config",
          {{"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 0}, {"end_layer_idx", 1}}}}}}});
    const auto t = shell(st_test::host_prefix() + "'" + cfg.string() + "'");
    EXPECT_NE(t.code, 0);
    EXPECT_NE(t.out.find("token_routing@1"), std::string::npos) << t.out;
    EXPECT_EQ(t.out.find("encode latents"), std::string::npos);
}

TEST(SanaBenchCommand, ReportsEveryPresetAsJson) {
    const auto r =
        shell(st_test::host_prefix() +
              "bench --plugin sanavideo --presets tiny --latent 2x8x8 --text-len 12 --steps 1 --json");
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
    const json j = json::parse(last);
    EXPECT_EQ(j["bench"], "sanavideo");
    ASSERT_EQ(j["presets"].size(), 1u);
    for (const char* key : {"fwd_s", "fwd_bwd_s", "peak_rss_mib", "inference_fwd_s"})
        EXPECT_GT(j["presets"][0][key].get<double>(), 0.0) << key;
}

}  // namespace
