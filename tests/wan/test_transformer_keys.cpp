// The diffusers <-> original key table and the LoRA target names, both ways.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "core/key_map.h"
#include "st/safetensors.h"
#include "test_transformer_util.h"

namespace st::plugins::wan {
namespace {

TEST(WanKeyMapTest, GoldenFilesMapOneToOneWithEqualTensors) {
    // Both golden files hold the same tensors under the two layouts (t2v and the i2v experts).
    for (const std::string dir : {"wan_t2v/", "wan_i2v/transformer/", "wan_i2v/transformer_2/"}) {
        auto diff = st::sdk::SafetensorsFile::open(test::golden(dir + "diffusion_pytorch_model.safetensors"));
        auto orig = st::sdk::SafetensorsFile::open(test::golden(dir + "original_format.safetensors"));
        std::set<std::string> mapped;
        for (const auto& info : diff->infos()) {
            auto o = diffusers_to_original(info.name);
            ASSERT_TRUE(o.has_value()) << info.name;
            ASSERT_TRUE(orig->contains(*o)) << info.name << " -> " << *o;
            EXPECT_TRUE(at::equal(diff->load(info.name), orig->load(*o))) << info.name;
            EXPECT_EQ(original_to_diffusers(*o), info.name);
            mapped.insert(*o);
        }
        EXPECT_EQ(mapped.size(), orig->infos().size()) << dir;
    }
}

TEST(WanKeyMapTest, ImageBranchAndTablesMapBothWays) {
    const std::pair<const char*, const char*> pairs[] = {
        {"blocks.3.cross_attn.k_img.weight", "blocks.3.attn2.add_k_proj.weight"},
        {"blocks.3.cross_attn.v_img.bias", "blocks.3.attn2.add_v_proj.bias"},
        {"blocks.3.cross_attn.norm_k_img.weight", "blocks.3.attn2.norm_added_k.weight"},
        {"blocks.12.norm3.weight", "blocks.12.norm2.weight"},
        {"blocks.12.modulation", "blocks.12.scale_shift_table"},
        {"head.modulation", "scale_shift_table"},
        {"img_emb.proj.0.weight", "condition_embedder.image_embedder.norm1.weight"},
        {"img_emb.proj.1.bias", "condition_embedder.image_embedder.ff.net.0.proj.bias"},
        {"img_emb.proj.3.weight", "condition_embedder.image_embedder.ff.net.2.weight"},
        {"img_emb.proj.4.bias", "condition_embedder.image_embedder.norm2.bias"},
        {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"},
        {"time_projection.1.weight", "condition_embedder.time_proj.weight"},
    };
    for (const auto& [o, d] : pairs) {
        EXPECT_EQ(original_to_diffusers(o), std::string(d)) << o;
        EXPECT_EQ(diffusers_to_original(d), std::string(o)) << d;
    }
    EXPECT_FALSE(original_to_diffusers("blocks.0.self_attn.qq.weight").has_value());
    EXPECT_FALSE(original_to_diffusers("vace_blocks.0.after_proj.weight").has_value());
    EXPECT_FALSE(diffusers_to_original("blocks.x.attn1.to_q.weight").has_value());
    EXPECT_FALSE(diffusers_to_original("blocks.0.attn1.to_q.lora_A").has_value());
}

TEST(WanKeyMapTest, LoraTargetsMapEveryBlockLinearBothWays) {
    const std::vector<std::string> native = {
        "blocks.7.self_attn.q",      "blocks.7.self_attn.k",  "blocks.7.self_attn.v",
        "blocks.7.self_attn.o",      "blocks.7.cross_attn.q", "blocks.7.cross_attn.k",
        "blocks.7.cross_attn.v",     "blocks.7.cross_attn.o", "blocks.7.cross_attn.k_img",
        "blocks.7.cross_attn.v_img", "blocks.7.ffn.0",        "blocks.7.ffn.2"};
    const auto diffusers = block_linear_modules(7, /*image_branch=*/true);
    ASSERT_EQ(diffusers.size(), native.size());
    std::set<std::string> seen;
    for (size_t i = 0; i < diffusers.size(); ++i) {
        auto n = lora_module_to_native(diffusers[i]);
        ASSERT_TRUE(n.has_value()) << diffusers[i];
        seen.insert(*n);
        EXPECT_EQ(lora_module_to_diffusers(*n), diffusers[i]) << *n;
    }
    EXPECT_EQ(seen, std::set<std::string>(native.begin(), native.end()));
    EXPECT_EQ(lora_module_to_native("blocks.0.attn1.to_out.0"), std::string("blocks.0.self_attn.o"));
    EXPECT_EQ(lora_module_to_diffusers("blocks.0.cross_attn.o"), std::string("blocks.0.attn2.to_out.0"));
    EXPECT_EQ(lora_module_to_native("condition_embedder.time_proj"), std::string("time_projection.1"));
    EXPECT_EQ(block_linear_modules(0, false).size(), 10u);
    EXPECT_FALSE(lora_module_to_native("blocks.0.attn1").has_value());
}

}  // namespace
}  // namespace st::plugins::wan
