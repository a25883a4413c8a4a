// lora_type lycoris end to end (#23): SimpleTuner's LoKr example config trains the tiny Wan model,
// writes LyCORIS keys that st-host generate --lora loads, resumes exactly with rank/module dropout and
// use_scalar, and a LoHa run trains with rs_lora and exclude_name.
#include <gtest/gtest.h>

#include <cmath>

#include "fixtures.h"
#include "st/safetensors.h"

namespace {

using st_test::TrainEnv;
namespace fs = std::filesystem;

fs::path lokr_config(const TrainEnv& env) {
    const fs::path p = env.root / "lycoris_lokr.json";
    st_test::write_text(p, R"({"algo": "lokr", "multiplier": 1.0, "full_matrix": true, "linear_dim": 10000,
      "linear_alpha": 1, "factor": 4, "rank_dropout": 0.25, "rank_dropout_scale": true, "module_dropout": 0.25,
      "use_scalar": true,
      "apply_preset": {"target_module": ["Attention", "FeedForward"],
      "module_algo_map": {"Attention": {"factor": 4}, "FeedForward": {"algo": "locon", "dim": 4, "alpha": 2}}}})");
    return p;
}

nlohmann::json settings(const fs::path& lycoris, int steps) {
    return {{"lora_type", "lycoris"},   {"lycoris_config", lycoris.string()},
            {"max_train_steps", steps}, {"checkpoint_step_interval", 2},
            {"learning_rate", 1e-3},    {"lora_dropout", 0.0}};
}

TEST(LycorisRunTest, LokrTrainsSavesLycorisKeysLoadsInGenerateAndResumesExactly) {
    auto& env = TrainEnv::get();
    const fs::path lyc = lokr_config(env);
    auto r = env.run(env.config("lokr", settings(lyc, 4)));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("lora_type lycoris from"), std::string::npos) << r.log;
    EXPECT_NE(r.log.find("rank_dropout 0.25 (scaled), module_dropout 0.25 (training only)"),
              std::string::npos)
        << r.log;
    const auto lines = st_test::read_jsonl(env.root / "lokr" / "metrics.jsonl");
    ASSERT_FALSE(lines.empty());
    EXPECT_TRUE(std::isfinite(lines.back()["loss"].get<double>()));
    auto f = st::sdk::SafetensorsFile::open(env.root / "lokr" / "pytorch_lora_weights.safetensors");
    size_t w1 = 0, w2 = 0, alpha = 0, down = 0, up = 0;
    for (const auto& i : f->infos()) {
        w1 += i.name.find(".lokr_w1") != std::string::npos;
        w2 += i.name.find(".lokr_w2") != std::string::npos;
        down += i.name.find(".lora_down.weight") != std::string::npos;  // LoCon on the feed-forward
        up += i.name.find(".lora_up.weight") != std::string::npos;
        alpha += i.name.size() > 6 && i.name.compare(i.name.size() - 6, 6, ".alpha") == 0;
        EXPECT_EQ(i.name.rfind("diffusion_model.", 0), 0u) << i.name;
    }
    EXPECT_GT(w1, 0u);
    EXPECT_EQ(w1, w2);
    EXPECT_GT(down, 0u);
    EXPECT_EQ(down, up);
    EXPECT_EQ(w1 + down, alpha);
    EXPECT_NE(f->metadata().count("lycoris_config"), 0u);
    // use_scalar: the file holds w1 times the scalar, as LyCORIS saves; the checkpoint keeps both.
    for (const auto& i : f->infos()) EXPECT_EQ(i.name.find("scalar"), std::string::npos) << i.name;
    EXPECT_TRUE(fs::exists(env.root / "lokr" / "checkpoint-4" / "lycoris_trainable.safetensors"));
    // The saved deltas moved away from zero (use_scalar: the files' w1 / lora_up hold the scalar, 0 at the
    // start).
    double moved_lokr = 0, moved_locon = 0;
    for (const auto& i : f->infos()) {
        if (i.name.find(".lokr_w1") != std::string::npos)
            moved_lokr += f->load(i.name).abs().sum().item<double>();
        if (i.name.find(".lora_up.weight") != std::string::npos)
            moved_locon += f->load(i.name).abs().sum().item<double>();
    }
    EXPECT_GT(moved_lokr, 0.0);
    EXPECT_GT(moved_locon, 0.0);
    // st-host generate attaches the LyCORIS file.
    const auto gen = st_test::shell(st_test::host_prefix() + "generate --plugin wan --model '" +
                                    (env.root / "model").string() +
                                    "' --prompt 'a test' --frames 5 --resolution 32x32 "
                                    "--steps 2 --lora '" +
                                    (env.root / "lokr" / "pytorch_lora_weights.safetensors").string() +
                                    "' --out '" + (env.root / "lokr_gen.mp4").string() + "'");
    ASSERT_EQ(gen.code, 0) << gen.out;
    EXPECT_NE(gen.out.find(" modules, strength 1)"), std::string::npos) << gen.out;  // merged or attached
    EXPECT_TRUE(fs::exists(env.root / "lokr_gen.mp4"));
    // Resume: 4 steps then on to 6 equals 6 straight (rank and module dropout draw from the run's generator).
    auto more = env.run(env.config("lokr", settings(lyc, 6)));
    ASSERT_EQ(more.code, 0) << more.log;
    EXPECT_NE(more.log.find("resumed from"), std::string::npos) << more.log;
    auto straight = env.run(env.config("lokr_ref", settings(lyc, 6)));
    ASSERT_EQ(straight.code, 0) << straight.log;
    auto a = st::sdk::SafetensorsFile::open(env.root / "lokr" / "pytorch_lora_weights.safetensors");
    auto b = st::sdk::SafetensorsFile::open(env.root / "lokr_ref" / "pytorch_lora_weights.safetensors");
    for (const auto& i : a->infos()) EXPECT_TRUE(a->load(i.name).equal(b->load(i.name))) << i.name;
}

TEST(LycorisRunTest, LohaTrainsAndAMissingConfigIsNamedBeforeCaching) {
    auto& env = TrainEnv::get();
    const fs::path p = env.root / "lycoris_loha.json";
    st_test::write_text(
        p, R"({"algo": "loha", "linear_dim": 2, "linear_alpha": 2, "rs_lora": true, "train_norm": true,
      "apply_preset": {"use_fnmatch": true, "target_module": ["Attention"], "exclude_name": ["blocks.0.attn2"]}})");
    auto r = env.run(env.config("loha", settings(p, 3)));
    ASSERT_EQ(r.code, 0) << r.log;
    EXPECT_NE(r.log.find("train_norm: apply_preset selects no LayerNorm / GroupNorm"), std::string::npos)
        << r.log;
    auto f = st::sdk::SafetensorsFile::open(env.root / "loha" / "pytorch_lora_weights.safetensors");
    bool hada = false;
    for (const auto& i : f->infos()) {
        hada = hada || i.name.find(".hada_w1_a") != std::string::npos;
        // rs_lora saves alpha * sqrt(dim) (scale alpha / sqrt(dim) read back as alpha_saved / dim).
        if (i.name.size() > 6 && i.name.compare(i.name.size() - 6, 6, ".alpha") == 0)
            EXPECT_NEAR(f->load(i.name).item<double>(), 2.0 * std::sqrt(2.0), 1e-6) << i.name;
        EXPECT_EQ(i.name.find("blocks.0.cross_attn"), std::string::npos) << i.name << ": excluded";
    }
    EXPECT_TRUE(hada);
    // train_norm on a selection that reaches a block's LayerNorm (cross-attention norm2): refused before
    // caching.
    const fs::path norm = env.root / "lycoris_norm.json";
    st_test::write_text(
        norm, R"({"algo": "loha", "train_norm": true, "apply_preset": {"target_name": ["blocks\\.0\\."]}})");
    auto refused = env.run(env.config("loha_norm", settings(norm, 3)));
    EXPECT_NE(refused.code, 0);
    EXPECT_NE(refused.log.find("train_norm would train the weights of 1 norm layer(s) (blocks.0.norm2)"),
              std::string::npos)
        << refused.log;
    auto missing = env.run(env.config("loha_missing", settings(env.root / "nope.json", 3)));
    EXPECT_NE(missing.code, 0);
    EXPECT_NE(missing.log.find("lycoris_config '"), std::string::npos) << missing.log;
    EXPECT_EQ(missing.log.find("encode latents"), std::string::npos) << "failed only after caching";
}

}  // namespace
