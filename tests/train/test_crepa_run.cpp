// CREPA in real runs of st-host on the tiny Wan model, with the tiny DINOv2 of tests/golden/dinov2 as
// the teacher: the teacher's features are cached once per clip (never recomputed, never re-encoding
// the latents), the alignment score rises while the diffusion loss falls, every term and metric is in
// metrics.jsonl, the projector is trained and checkpointed, resume is bit-identical, CREPA over a
// block that a TREAD route covers trains, and SimpleTuner's quickstart settings are accepted (errors
// name the key before any caching).
#include <gtest/gtest.h>

#include "fixtures.h"
#include "st/safetensors.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

const fs::path kTeacher = fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vits_style";

nlohmann::json crepa(nlohmann::json extra) {
    nlohmann::json c = {{"crepa_enabled", true},
                        {"crepa_block_index", 0},
                        {"crepa_lambda", 0.5},
                        {"crepa_encoder", kTeacher.string()},
                        {"crepa_encoder_image_size", 12}};
    for (const auto& [k, v] : extra.items()) c[k] = v;
    return c;
}

double mean_of(const std::vector<nlohmann::json>& lines, size_t from, size_t to,
               const std::function<double(const nlohmann::json&)>& f) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += f(lines[i]);
    return s / static_cast<double>(to - from);
}

}  // namespace

TEST(CrepaRunTest, AlignmentRisesWhileTheDiffusionLossFallsWithCachedTeacherFeatures) {
    auto& env = TrainEnv::get();
    const fs::path data = env.write_datasets("crepa_data.json", "crepa_cache");
    auto r = env.run(env.config("crepa", crepa({{"max_train_steps", 60},
                                                {"data_backend_config", data.string()},
                                                {"checkpoint_step_interval", 30}})));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("reg.crepa@1 enabled (crepa_enabled set): taps blocks.0.out"), std::string::npos)
        << r.log;
    EXPECT_NE(r.log.find("regularizer features (crepa): 0 cached, 8 to encode"), std::string::npos) << r.log;
    {
        // One feature file per clip next to the VAE cache folder (<cache_dir_vae>-crepa/).
        std::vector<std::string> found;
        for (const auto& e : fs::recursive_directory_iterator(env.root))
            if (e.path().string().find("vae-crepa") != std::string::npos && e.is_regular_file())
                found.push_back(fs::relative(e.path(), env.root).string());
        EXPECT_EQ(found.size(), 8u) << ::testing::PrintToString(found);
    }
    const auto lines = st_test::read_jsonl(env.root / "crepa" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 60u);
    for (const auto& l : lines) {
        ASSERT_TRUE(l["loss_terms"].contains("crepa_loss")) << l.dump();
        ASSERT_TRUE(l["regularizer_metrics"].contains("crepa_alignment_score")) << l.dump();
        EXPECT_NEAR(
            l["loss"].get<double>(),
            l["loss_terms"]["flow_matching"].get<double>() + l["loss_terms"]["crepa_loss"].get<double>(),
            1e-5);
        EXPECT_DOUBLE_EQ(l["regularizer_metrics"]["crepa_weight"].get<double>(), 0.5);
    }
    auto score = [](const nlohmann::json& l) {
        return l["regularizer_metrics"]["crepa_alignment_score"].get<double>();
    };
    auto fm = [](const nlohmann::json& l) { return l["loss_terms"]["flow_matching"].get<double>(); };
    const double s0 = mean_of(lines, 0, 10, score), s1 = mean_of(lines, 50, 60, score);
    const double f0 = mean_of(lines, 0, 15, fm), f1 = mean_of(lines, 45, 60, fm);
    std::printf("alignment score %.4f -> %.4f, flow matching %.4f -> %.4f\n", s0, s1, f0, f1);
    EXPECT_GT(s1, s0 + 0.05) << "alignment did not rise: " << s0 << " -> " << s1;
    EXPECT_LT(f1, 0.9 * f0) << "diffusion loss did not fall: " << f0 << " -> " << f1;
    // The projector trained (in its own parameter group) and is in the checkpoints with the state.
    auto a =
        st::sdk::SafetensorsFile::open(env.root / "crepa" / "checkpoint-30" / "regularizers.safetensors");
    auto b =
        st::sdk::SafetensorsFile::open(env.root / "crepa" / "checkpoint-60" / "regularizers.safetensors");
    ASSERT_TRUE(a->contains("reg.crepa.projector.1.weight"));
    EXPECT_FALSE(a->load("reg.crepa.projector.1.weight").equal(b->load("reg.crepa.projector.1.weight")));
    const auto state = nlohmann::json::parse(
        st_test::read_text(env.root / "crepa" / "checkpoint-60" / "training_state.json"));
    EXPECT_TRUE(state["regularizers"]["reg.crepa@1"].contains("similarity_ema")) << state.dump();
    EXPECT_NE(r.log.find("parameter group 1"), std::string::npos) << r.log;

    // A second run on the same caches encodes nothing: neither latents nor teacher features.
    auto again = env.run(
        env.config("crepa_again", crepa({{"max_train_steps", 2}, {"data_backend_config", data.string()}})));
    ASSERT_EQ(again.code, 0) << again.log;
    EXPECT_NE(again.log.find("regularizer features (crepa): 8 cached, 0 to encode"), std::string::npos)
        << again.log;
    EXPECT_NE(again.log.find("latents: 8 cached, 0 to encode"), std::string::npos) << again.log;
    // Another teacher image size rebuilds only the features.
    auto resized = env.run(env.config("crepa_resized", crepa({{"max_train_steps", 1},
                                                              {"data_backend_config", data.string()},
                                                              {"crepa_encoder_image_size", 8}})));
    ASSERT_EQ(resized.code, 0) << resized.log;
    EXPECT_NE(resized.log.find("regularizer features (crepa): 0 cached, 8 to encode"), std::string::npos)
        << resized.log;
    EXPECT_NE(resized.log.find("latents: 8 cached, 0 to encode"), std::string::npos) << resized.log;
}

TEST(CrepaRunTest, ResumeWithCrepaIsBitIdentical) {
    auto& env = TrainEnv::get();
    auto settings = [](int steps) {
        return crepa({{"max_train_steps", steps},
                      {"checkpoint_step_interval", 3},
                      {"crepa_adjacent_distance", 2},
                      {"crepa_similarity_threshold", 0.9},
                      {"crepa_scheduler", "cosine"},
                      {"crepa_decay_steps", 6},  // not the run length: the two runs differ in it
                      {"crepa_warmup_steps", 2},
                      {"lora_dropout", 0.1}});
    };
    auto full = env.run(env.config("crepa_straight", settings(8)));
    ASSERT_EQ(full.code, 0) << full.log;
    auto first = env.run(env.config("crepa_resumed", settings(5)));
    ASSERT_EQ(first.code, 0) << first.log;
    auto second = env.run(env.config("crepa_resumed", settings(8)));
    ASSERT_EQ(second.code, 0) << second.log;
    EXPECT_NE(second.log.find("checkpoint-5 at step 5"), std::string::npos) << second.log;
    const auto a = st_test::read_jsonl(env.root / "crepa_straight" / "metrics.jsonl");
    const auto b = st_test::read_jsonl(env.root / "crepa_resumed" / "metrics.jsonl");
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "line " << i;
        EXPECT_EQ(a[i]["regularizer_metrics"], b[i]["regularizer_metrics"]) << "line " << i;
    }
    auto la = st::sdk::SafetensorsFile::open(env.root / "crepa_straight" / "checkpoint-8" /
                                             "regularizers.safetensors");
    auto lb = st::sdk::SafetensorsFile::open(env.root / "crepa_resumed" / "checkpoint-8" /
                                             "regularizers.safetensors");
    for (const auto& i : la->infos()) EXPECT_TRUE(la->load(i.name).equal(lb->load(i.name))) << i.name;
    // Resuming without CREPA is refused with the reason.
    auto off = env.run(env.config("crepa_resumed", {{"max_train_steps", 9}}));
    EXPECT_NE(off.code, 0);
    EXPECT_NE(off.log.find("was trained with the regularizers [reg.crepa@1] but this run has []"),
              std::string::npos)
        << off.log;
}

TEST(CrepaRunTest, TheCrepaGradientReachesTheLoraWeights) {
    // Without clipping (which would couple the projector's gradient into every update) and with the
    // same draws, a run with CREPA on block 1 ends with other LoRA weights than one without: only the
    // CREPA term's gradient can make the difference. The first step's flow-matching loss is the same.
    auto& env = TrainEnv::get();
    auto with = env.run(env.config(
        "crepa_grad", crepa({{"max_train_steps", 2}, {"max_grad_norm", 0.0}, {"crepa_block_index", 1}})));
    ASSERT_EQ(with.code, 0) << with.log;
    auto without = env.run(env.config("crepa_nograd", {{"max_train_steps", 2}, {"max_grad_norm", 0.0}}));
    ASSERT_EQ(without.code, 0) << without.log;
    const auto a = st_test::read_jsonl(env.root / "crepa_grad" / "metrics.jsonl");
    const auto b = st_test::read_jsonl(env.root / "crepa_nograd" / "metrics.jsonl");
    EXPECT_EQ(a[0]["loss_terms"]["flow_matching"], b[0]["loss_terms"]["flow_matching"]);
    auto la = st::sdk::SafetensorsFile::open(env.root / "crepa_grad" / "pytorch_lora_weights.safetensors");
    auto lb = st::sdk::SafetensorsFile::open(env.root / "crepa_nograd" / "pytorch_lora_weights.safetensors");
    int differ = 0;
    for (const auto& i : la->infos()) differ += la->load(i.name).equal(lb->load(i.name)) ? 0 : 1;
    EXPECT_GT(differ, 0);
}

TEST(CrepaRunTest, CrepaOnABlockInsideATreadRouteTrains) {
    // SimpleTuner's reshape breaks here; the block runner hands the tap back on the full token grid.
    // A Lua hook sees the regularizer's metrics in on_step_end.
    auto& env = TrainEnv::get();
    const fs::path script = env.root / "crepa_hook.lua";
    st_test::write_text(script,
                        "st.on('on_step_end', function(ev)\n"
                        "  st.metric('seen_alignment', ev.regularizer_metrics.crepa_alignment_score)\n"
                        "  st.metric('seen_crepa_loss', ev.loss_terms.crepa_loss)\n"
                        "end)\n");
    auto r = env.run(env.config(
        "crepa_tread",
        crepa({{"max_train_steps", 6},
               {"lua_hooks", script.string()},
               {"crepa_block_index", 1},
               {"tread_config",
                {{"routes", {{{"selection_ratio", 0.5}, {"start_layer_idx", 1}, {"end_layer_idx", 1}}}}}}})));
    ASSERT_EQ(r.code, 0) << r.log;
    const auto lines = st_test::read_jsonl(env.root / "crepa_tread" / "metrics.jsonl");
    ASSERT_EQ(lines.size(), 6u);
    EXPECT_TRUE(std::isfinite(lines.back()["loss_terms"]["crepa_loss"].get<double>()));
    for (const auto& l : lines) {
        EXPECT_NEAR(l["hook_metrics"]["seen_alignment"].get<double>(),
                    l["regularizer_metrics"]["crepa_alignment_score"].get<double>(), 1e-12);
        EXPECT_NEAR(l["hook_metrics"]["seen_crepa_loss"].get<double>(),
                    l["loss_terms"]["crepa_loss"].get<double>(), 1e-12);
    }
}

TEST(CrepaRunTest, QuickstartSettingsAreAcceptedAndErrorsComeBeforeCaching) {
    // The quickstarts' "Block Index 8, Weight 0.5, Adjacent Distance 1, Temporal Decay 1.0,
    // dinov2_vitg14 at 518" as SimpleTuner's config keys, the teacher found in the torch-hub cache.
    auto& env = TrainEnv::get();
    const fs::path hub = env.root / "torch_home" / "hub" / "checkpoints";
    fs::create_directories(hub);
    fs::copy_file(fs::path(ST_TEST_GOLDEN_DIR) / "dinov2" / "vitg_style" / "dinov2_hub.pth",
                  hub / "dinov2_vitg14_pretrain.pth", fs::copy_options::overwrite_existing);
    const nlohmann::json quickstart = {{"crepa_enabled", true},
                                       {"crepa_block_index", 8},
                                       {"crepa_lambda", 0.5},
                                       {"crepa_adjacent_distance", 1},
                                       {"crepa_adjacent_tau", 1.0},
                                       {"crepa_encoder", "dinov2_vitg14"},
                                       {"crepa_encoder_image_size", 518},
                                       {"crepa_scheduler", "constant"},
                                       {"crepa_spatial_align", true},
                                       {"crepa_normalize_by_frames", true}};
    const std::string env_home = "TORCH_HOME='" + (env.root / "torch_home").string() + "' ";
    auto r = env.run(env.config("crepa_quickstart", quickstart), "", env_home);
    EXPECT_NE(r.code, 0);
    // Every key was accepted; the tiny model has 2 blocks, so block 8 is named as the problem.
    EXPECT_NE(r.log.find("crepa_block_index 8 is outside the model's blocks 0..1"), std::string::npos)
        << r.log;
    EXPECT_NE(r.log.find("dinov2_vitg14_pretrain.pth"), std::string::npos) << r.log;
    EXPECT_EQ(r.log.find("encode latents"), std::string::npos) << "failed after caching began";
    auto missing = env.run(env.config("crepa_missing", {{"crepa_enabled", true}, {"crepa_block_index", 1}}),
                           "", "TORCH_HOME='" + (env.root / "empty_home").string() + "' ");
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.log.find("empty_home/hub/checkpoints/dinov2_vitg14_pretrain.pth is missing"),
              std::string::npos)
        << missing.log;
    EXPECT_EQ(missing.log.find("encode latents"), std::string::npos);
}

TEST(CrepaRunTest, BenchTrainMeasuresTheOverheadAgainstARunWithoutAndSimpleTunersPath) {
    auto& env = TrainEnv::get();
    const auto r = st_test::shell(st_test::host_prefix() +
                                  "bench train --plugin wan --preset tiny --steps 3 --warmup 1 --frames 9 "
                                  "--resolution 64 --json --crepa_enabled true --crepa_block_index 1 "
                                  "--crepa_encoder '" +
                                  kTeacher.string() + "' --crepa_encoder_image_size 8");
    ASSERT_EQ(r.code, 0) << r.out;
    (void)env;
    const auto pos = r.out.rfind("{\"batch\"");
    ASSERT_NE(pos, std::string::npos) << r.out;
    const auto j = nlohmann::json::parse(r.out.substr(pos, r.out.find('\n', pos) - pos));
    EXPECT_EQ(j["regularizers"], nlohmann::json::array({"crepa_enabled"}));
    EXPECT_GT(j["without"]["total"].get<double>(), 0.0);
    EXPECT_GT(j["median"]["total"].get<double>(), 0.0);
    EXPECT_TRUE(j.contains("overhead_percent"));
    EXPECT_GT(j["decode_and_teacher_per_step"].get<double>(), 0.0);
    EXPECT_NE(r.out.find("regularizer overhead:"), std::string::npos) << r.out;
}
