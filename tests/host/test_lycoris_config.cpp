// SimpleTuner's lycoris_config.json (host/src/train/lycoris_config.cpp): SimpleTuner's example file
// reads with its meaning (int() casts, apply_preset classes and maps), module selection on Wan's module
// paths, and the settings st does not implement are refused with the file and key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "st/error.h"
#include "train/lycoris_config.h"

namespace fs = std::filesystem;
using namespace st::host::train;

namespace {

fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = fs::temp_directory_path() / (std::to_string(::getpid()) + "_" + name);
    std::ofstream(p) << text;
    return p;
}

std::string error_of(const fs::path& p) {
    try {
        read_lycoris_config(p);
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

TEST(LycorisConfigTest, SimpleTunersExampleSelectsAttentionAndFeedForwardWithTheirFactors) {
    // simpletuner/examples/lycoris_config.json
    const auto p = write("example.json", R"({"algo": "lokr", "multiplier": 1.0, "full_matrix": true,
        "linear_alpha": 1, "factor": 16, "apply_preset": {"target_module": ["Attention", "FeedForward"],
        "module_algo_map": {"Attention": {"factor": 16}, "FeedForward": {"factor": 8}}}})");
    const LycorisPlan plan = read_lycoris_config(p);
    EXPECT_EQ(plan.multiplier, 1.0);
    EXPECT_EQ(plan.base.algo, "lokr");
    EXPECT_TRUE(plan.base.full_matrix);
    EXPECT_EQ(plan.base.dim, 4);  // SimpleTuner's default linear_dim
    auto q = lycoris_options_for(plan, "blocks.0.attn1.to_q");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->factor, 16);
    auto f = lycoris_options_for(plan, "blocks.3.ffn.net.0.proj");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->factor, 8);
    EXPECT_FALSE(lycoris_options_for(plan, "blocks.0.scale_shift_table_proj"));
    EXPECT_FALSE(lycoris_options_for(plan, "condition_embedder.time_proj"));
    fs::remove(p);
}

TEST(LycorisConfigTest, IntCastsNameMapsAndDefaultTargets) {
    const auto p =
        write("names.json", R"({"algo": "loha", "linear_dim": 8.9, "linear_alpha": 2.7, "multiplier": 1.5,
        "apply_preset": {"target_name": ["blocks\\.1\\..*"], "name_algo_map": {"blocks.0.attn2.to_k": {"algo": "lokr", "factor": 4}}}})");
    const LycorisPlan plan = read_lycoris_config(p);
    EXPECT_EQ(plan.base.dim, 8);      // int(8.9)
    EXPECT_EQ(plan.base.alpha, 2.0);  // int(2.7)
    EXPECT_EQ(plan.multiplier, 1.0);  // int(1.5), as SimpleTuner
    auto k = lycoris_options_for(plan, "blocks.0.attn2.to_k");
    ASSERT_TRUE(k);
    EXPECT_EQ(k->algo, "lokr");
    EXPECT_EQ(k->factor, 4);
    EXPECT_FALSE(lycoris_options_for(plan, "blocks.0.attn2.to_v"));
    auto b1 = lycoris_options_for(plan, "blocks.1.ffn.net.2");
    ASSERT_TRUE(b1);
    EXPECT_EQ(b1->algo, "loha");
    // No apply_preset: SimpleTuner's Wan default, attention modules only.
    const auto d = write("default.json", R"({"algo": "lokr", "linear_dim": 4, "linear_alpha": 1})");
    const LycorisPlan dp = read_lycoris_config(d);
    EXPECT_TRUE(lycoris_options_for(dp, "blocks.0.attn2.to_out.0"));
    EXPECT_FALSE(lycoris_options_for(dp, "blocks.0.ffn.net.2"));
    fs::remove(p);
    fs::remove(d);
}

TEST(LycorisConfigTest, WhatStDoesNotImplementIsRefusedWithFileAndKey) {
    const auto a = write("noalgo.json", R"({"linear_dim": 4})");
    EXPECT_NE(error_of(a).find("'algo' is required"), std::string::npos) << error_of(a);
    const auto b = write("dylora.json", R"({"algo": "dylora", "linear_dim": 4, "linear_alpha": 1})");
    EXPECT_NE(error_of(b).find("algo 'dylora' is not trained by st on Linear layers: lokr, loha or locon"),
              std::string::npos)
        << error_of(b);
    // locon (and LyCORIS's alias lora) are LoConModule.
    const auto l = write("locon.json", R"({"algo": "lora", "linear_dim": 4, "linear_alpha": 1})");
    EXPECT_EQ(read_lycoris_config(l).base.algo, "locon");
    fs::remove(l);
    const auto c = write("norm.json", R"({"algo": "lokr", "train_norm": 1})");
    EXPECT_NE(error_of(c).find("train_norm must be true or false"), std::string::npos) << error_of(c);
    const auto e = write("prefix.json", R"({"algo": "lokr", "apply_preset": {"lora_prefix": ""}})");
    EXPECT_NE(error_of(e).find("apply_preset.lora_prefix: expected a non-empty string"), std::string::npos)
        << error_of(e);
    const auto f = write("rdrop.json", R"({"algo": "lokr", "rank_dropout": 1.5})");
    EXPECT_NE(error_of(f).find("rank_dropout must be a number in [0, 1], got 1.5"), std::string::npos)
        << error_of(f);
    const auto d = write(
        "map.json", R"({"algo": "lokr", "apply_preset": {"module_algo_map": {"Attention": {"bogus": 1}}}})");
    EXPECT_NE(error_of(d).find("apply_preset.module_algo_map.Attention: 'bogus'"), std::string::npos)
        << error_of(d);
    for (const auto& p : {a, b, c, d, e, f}) fs::remove(p);
}

// apply_preset's exclude_name and use_fnmatch with LyCORIS's semantics (wrapper.py create_modules): an
// excluded module is never the one that targets its Linears; a Linear named inside a targeted module is
// still adapted (LyCORIS adapts it while walking that module); patterns are globs with use_fnmatch.
TEST(LycorisConfigTest, ExcludeNameAndFnmatchPatterns) {
    const auto a = write("exclude.json", R"({"algo": "lokr", "apply_preset": {"target_module": ["Attention"],
        "exclude_name": ["blocks.1.attn2", "blocks.2.attn1.to_q"]}})");
    const LycorisPlan pa = read_lycoris_config(a);
    EXPECT_TRUE(lycoris_options_for(pa, "blocks.1.attn1.to_q"));
    EXPECT_FALSE(lycoris_options_for(pa, "blocks.1.attn2.to_k"));
    EXPECT_TRUE(lycoris_options_for(pa, "blocks.2.attn1.to_q")) << "inside the targeted blocks.2.attn1";
    const auto b = write("fnmatch.json", R"({"algo": "loha", "apply_preset": {"use_fnmatch": true,
        "target_name": ["blocks.*.ffn.net.?.proj"], "exclude_name": ["blocks.1[0-9].*"],
        "name_algo_map": {"*.attn2.to_[kv]": {"algo": "lokr", "factor": 4}}}})");
    const LycorisPlan pb = read_lycoris_config(b);
    EXPECT_TRUE(pb.use_fnmatch);
    EXPECT_TRUE(lycoris_options_for(pb, "blocks.3.ffn.net.0.proj"));
    EXPECT_FALSE(lycoris_options_for(pb, "blocks.3.ffn.net.2")) << "a glob matches the whole name";
    EXPECT_FALSE(lycoris_options_for(pb, "blocks.12.ffn.net.0.proj"));
    auto kv = lycoris_options_for(pb, "blocks.3.attn2.to_v");
    ASSERT_TRUE(kv);
    EXPECT_EQ(kv->algo, "lokr");
    EXPECT_EQ(kv->factor, 4);
    EXPECT_FALSE(lycoris_options_for(pb, "blocks.3.attn2.to_q"));
    // Without use_fnmatch the same pattern is a regex matched at the start (re.match).
    const auto c =
        write("regex.json", R"({"algo": "lokr", "apply_preset": {"target_name": ["blocks\\.[0-9]\\.ffn"]}})");
    const LycorisPlan pc = read_lycoris_config(c);
    EXPECT_TRUE(lycoris_options_for(pc, "blocks.3.ffn.net.2"));
    EXPECT_FALSE(lycoris_options_for(pc, "blocks.13.ffn.net.2"));
    for (const auto& p : {a, b, c}) fs::remove(p);
}

// rs_lora (alpha / sqrt(dim)) from the top level or a map entry; dropout is accepted and has no effect,
// as in LyCORIS's LoKr/LoHa (which do not implement it).
TEST(LycorisConfigTest, RsLoraAndDropoutAsLycorisTreatsThem) {
    const auto a = write("rs.json", R"({"algo": "loha", "linear_dim": 16, "linear_alpha": 8, "rs_lora": true,
        "dropout": 0.1, "apply_preset": {"target_module": ["Attention"],
        "module_algo_map": {"Attention": {"rs_lora": false}}, "name_algo_map": {"blocks.0.ffn": {"dim": 4}},
        "target_name": ["blocks.0.ffn"]}})");
    const LycorisPlan plan = read_lycoris_config(a);
    EXPECT_TRUE(plan.base.rs_lora);
    EXPECT_FALSE(lycoris_options_for(plan, "blocks.0.attn1.to_q")->rs_lora);
    EXPECT_TRUE(lycoris_options_for(plan, "blocks.0.ffn.net.2")->rs_lora);
    const auto s = write("scalar.json", R"({"algo": "lokr", "use_scalar": true,
        "apply_preset": {"module_algo_map": {"FeedForward": {"use_scalar": false}}}})");
    const LycorisPlan sp = read_lycoris_config(s);
    EXPECT_TRUE(sp.base.use_scalar);
    EXPECT_FALSE(lycoris_options_for(sp, "blocks.0.ffn.net.2")->use_scalar);
    fs::remove(s);
    const auto b = write("rs_bad.json", R"({"algo": "lokr", "rs_lora": "yes"})");
    EXPECT_NE(error_of(b).find("rs_lora must be true or false"), std::string::npos) << error_of(b);
    const auto c = write("drop_bad.json", R"({"algo": "lokr", "dropout": 2})");
    EXPECT_NE(error_of(c).find("dropout must be a number in [0, 1], got 2"), std::string::npos)
        << error_of(c);
    // In bypass_mode LyCORIS drops the adapter's output: not what st computes, so refused.
    const auto d = write("drop_bypass.json", R"({"algo": "lokr", "dropout": 0.1, "bypass_mode": true})");
    EXPECT_NE(error_of(d).find("dropout / rank_dropout with bypass_mode"), std::string::npos) << error_of(d);
    const auto e = write("bypass.json", R"({"algo": "lokr", "bypass_mode": true, "module_dropout": 0.1})");
    EXPECT_EQ(error_of(e), "");
    for (const auto& p : {a, b, c, d, e}) fs::remove(p);
}

// train_norm selects norm layers as LyCORIS selects modules: inside a targeted module or by name.
TEST(LycorisConfigTest, TrainNormSelectsTheNormsApplyPresetReaches) {
    const std::vector<std::string> norms = {"blocks.0.norm2", "blocks.1.norm2", "condition_embedder.norm"};
    const auto a = write("tn.json", R"({"algo": "lokr", "train_norm": true,
        "apply_preset": {"target_module": ["Attention", "FeedForward"]}})");
    EXPECT_TRUE(lycoris_norms_selected(read_lycoris_config(a), norms).empty());
    const auto b = write("tn_name.json", R"({"algo": "lokr", "train_norm": true,
        "apply_preset": {"target_name": ["blocks\\.1\\."]}})");
    EXPECT_EQ(lycoris_norms_selected(read_lycoris_config(b), norms),
              std::vector<std::string>{"blocks.1.norm2"});
    const auto c =
        write("tn_off.json", R"({"algo": "lokr", "apply_preset": {"target_name": ["blocks\\.1\\."]}})");
    EXPECT_TRUE(lycoris_norms_selected(read_lycoris_config(c), norms).empty()) << "train_norm false";
    for (const auto& p : {a, b, c}) fs::remove(p);
}

TEST(LycorisConfigTest, ModuleClassesOfTheFamilies) {
    EXPECT_EQ(lycoris_module_class("blocks.0.attn1"), "Attention");
    EXPECT_EQ(lycoris_module_class("blocks.0.attn2"), "Attention");
    EXPECT_EQ(lycoris_module_class("blocks.0.self_attn"), "Attention");
    EXPECT_EQ(lycoris_module_class("blocks.0.ffn"), "FeedForward");
    EXPECT_EQ(lycoris_module_class("transformer_blocks.0.ff"), "FeedForward");
    EXPECT_EQ(lycoris_module_class("blocks.0.attn1.to_q"), "");
}

}  // namespace
