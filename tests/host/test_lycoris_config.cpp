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
    const auto b = write("locon.json", R"({"algo": "locon", "linear_dim": 4, "linear_alpha": 1})");
    EXPECT_NE(error_of(b).find("use lora_type standard"), std::string::npos) << error_of(b);
    const auto c = write("drop.json", R"({"algo": "lokr", "rank_dropout": 0.1})");
    EXPECT_NE(error_of(c).find("rank_dropout 0.1 is not implemented"), std::string::npos) << error_of(c);
    const auto d = write(
        "map.json", R"({"algo": "lokr", "apply_preset": {"module_algo_map": {"Attention": {"bogus": 1}}}})");
    EXPECT_NE(error_of(d).find("apply_preset.module_algo_map.Attention: 'bogus'"), std::string::npos)
        << error_of(d);
    for (const auto& p : {a, b, c, d}) fs::remove(p);
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
