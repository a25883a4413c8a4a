// Parity of the Sana Video transformer with diffusers' SanaVideoTransformer3DModel on the golden tiny
// model (tests/golden/sanavideo; tolerance from its MANIFEST section), loading in every layout st
// accepts (diffusers folder, original single file with fused qkv / kv, [1, 2, D] scale_shift_table).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <filesystem>

#include "../common/golden_tolerance.h"
#include "core/sana_checkpoint.h"
#include "core/sana_transformer.h"
#include "st/error.h"
#include "st/safetensors.h"

namespace st::plugins::sanavideo {
namespace {

using st::test::allclose_manifest;
using st::test::golden;
using st::test::load_tensor;
namespace fs = std::filesystem;

struct Inputs {
    at::Tensor x, t, t_per_token, text, mask;
};

Inputs inputs() {
    auto f = golden("sanavideo/inputs.safetensors");
    return {load_tensor(f, "hidden_states"), load_tensor(f, "timestep"), load_tensor(f, "timestep_per_token"),
            load_tensor(f, "encoder_hidden_states"), load_tensor(f, "encoder_attention_mask")};
}

at::Tensor ref(const std::string& name) {
    return load_tensor(golden("sanavideo/outputs.safetensors"), name);
}

at::Tensor run(SanaVideoTransformer3DModel& m, const Inputs& in, const at::Tensor& t, bool with_mask,
               st::sdk::TensorMap* inter = nullptr) {
    torch::NoGradGuard no_grad;
    SanaTransformerInputs si;
    si.hidden_states = in.x;
    si.timestep = t;
    si.encoder_hidden_states = in.text;
    if (with_mask) si.encoder_attention_mask = in.mask;
    return m->forward(si, inter);
}

fs::path scratch(const std::string& name) {
    fs::path p = fs::temp_directory_path() / ("st_sana_parity_" + std::to_string(::getpid())) / name;
    fs::create_directories(p.parent_path());
    return p;
}

TEST(SanaTransformerParityTest, MatchesDiffusersWithMaskAndIntermediates) {
    auto loaded = load_sana_transformer(golden("sanavideo"), {.subfolder = "none"});
    EXPECT_EQ(loaded.info.facts.layout, st::kit::KeyLayout::diffusers);
    EXPECT_EQ(loaded.info.config, SanaVideoTransformerConfig::tiny());
    EXPECT_EQ(loaded.info.config.tensor_count(), 64);
    auto in = inputs();
    st::sdk::TensorMap inter;
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in, in.t, true, &inter), ref("out")));
    auto f = golden("sanavideo/intermediates.safetensors");
    EXPECT_TRUE(allclose_manifest(inter.at("rope_cos"), load_tensor(f, "rope_cos"), {1e-6, 0, 1e-6}));
    EXPECT_TRUE(allclose_manifest(inter.at("rope_sin"), load_tensor(f, "rope_sin"), {1e-6, 0, 1e-6}));
    EXPECT_TRUE(allclose_manifest(inter.at("time_embed_6D"), load_tensor(f, "time_embed_6D")));
    EXPECT_TRUE(allclose_manifest(inter.at("embedded_timestep"), load_tensor(f, "embedded_timestep")));
    EXPECT_TRUE(allclose_manifest(inter.at("caption_tokens"), load_tensor(f, "caption_tokens")));
    EXPECT_TRUE(allclose_manifest(inter.at("blocks.0.out"), load_tensor(f, "block_0_out")));
    EXPECT_TRUE(allclose_manifest(inter.at("blocks.1.out"), load_tensor(f, "block_1_out")));
}

TEST(SanaTransformerParityTest, PerTokenTimestepAndNoMaskMatchDiffusers) {
    auto loaded = load_sana_transformer(golden("sanavideo"), {.subfolder = "none"});
    auto in = inputs();
    EXPECT_TRUE(
        allclose_manifest(run(loaded.model, in, in.t_per_token, true), ref("out_per_token_timestep")));
    // The same per-token timesteps as [B, L].
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in, in.t_per_token.reshape({1, -1}), true),
                                  ref("out_per_token_timestep")));
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in, in.t, false), ref("out_without_mask")));
    // The masked rows hold random values: with the mask they must not matter.
    Inputs changed = in;
    changed.text = in.text.clone();
    changed.text.index_put_({0, in.mask[0].eq(0)}, 7.0);
    EXPECT_TRUE(allclose_manifest(run(loaded.model, changed, in.t, true), ref("out")));
}

TEST(SanaTransformerParityTest, OriginalLayoutWithFusedProjectionsLoadsToTheSameNetwork) {
    // Build the original (.pth-style) names from the diffusers file: fused qkv and kv, renamed modules,
    // a prefix, a [1, 2, D] final table and the tensors the converter drops.
    auto src = st::sdk::SafetensorsFile::open(golden("sanavideo/diffusion_pytorch_model.safetensors"));
    st::sdk::TensorMap orig;
    std::map<std::string, at::Tensor> d;
    for (const auto& i : src->infos()) d[i.name] = src->load(i.name);
    for (const auto& [name, t] : d) {
        if (name.find(".attn1.to_k.") != std::string::npos ||
            name.find(".attn1.to_v.") != std::string::npos || name.find(".attn2.to_v.") != std::string::npos)
            continue;
        std::string o = sana_original_name(name);
        if (name.find(".attn1.to_q.") != std::string::npos) {
            const std::string base = name.substr(0, name.find(".to_q."));
            const std::string suf = name.substr(name.rfind('.'));
            o = o.substr(0, o.find(' '));
            orig[o] = at::cat({t, d.at(base + ".to_k" + suf), d.at(base + ".to_v" + suf)}, 0);
        } else if (name.find(".attn2.to_k.") != std::string::npos) {
            const std::string base = name.substr(0, name.find(".to_k."));
            const std::string suf = name.substr(name.rfind('.'));
            o = o.substr(0, o.find(' '));
            orig[o] = at::cat({t, d.at(base + ".to_v" + suf)}, 0);
        } else {
            orig[o] = name == "scale_shift_table" ? t.unsqueeze(0) : t;
        }
    }
    orig["y_embedder.y_embedding"] = at::zeros({300, 16});
    orig["pos_embed"] = at::zeros({1, 4, 24});
    st::sdk::TensorMap prefixed;
    for (auto& [k, v] : orig) prefixed["model.diffusion_model." + k] = v;
    EXPECT_TRUE(prefixed.count("model.diffusion_model.blocks.0.attn.qkv.weight"));
    EXPECT_TRUE(prefixed.count("model.diffusion_model.blocks.1.cross_attn.kv_linear.bias"));
    const fs::path file = scratch("sana_original.safetensors");
    st::sdk::save_safetensors(file, prefixed, {});

    auto loaded = load_sana_transformer(file, {.subfolder = "none"});
    EXPECT_EQ(loaded.info.facts.layout, st::kit::KeyLayout::original);
    EXPECT_EQ(loaded.info.facts.prefix, "model.diffusion_model.");
    EXPECT_TRUE(loaded.info.squeezed_scale_shift_table);
    auto c = loaded.info.config;
    c.rope_max_seq_len = 32;  // not in the weights
    c.sample_size = 8;
    EXPECT_EQ(c, SanaVideoTransformerConfig::tiny());
    auto in = inputs();
    // rope_max_seq_len 1024 (detected default) gives the same tables for this small grid.
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in, in.t, true), ref("out")));
    fs::remove_all(file.parent_path());
}

TEST(SanaTransformerParityTest, StrictLoadingNamesTheMissingTensorInBothLayouts) {
    auto src = st::sdk::SafetensorsFile::open(golden("sanavideo/diffusion_pytorch_model.safetensors"));
    st::sdk::TensorMap t;
    for (const auto& i : src->infos())
        if (i.name != "transformer_blocks.1.ff.conv_temp.weight") t[i.name] = src->load(i.name);
    const fs::path file = scratch("missing/diffusion_pytorch_model.safetensors");
    st::sdk::save_safetensors(file, t, {});
    try {
        load_sana_transformer(file, {.subfolder = "none"});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("transformer_blocks.1.ff.conv_temp.weight"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(sana_original_name("transformer_blocks.1.ff.conv_temp.weight"), "blocks.1.mlp.t_conv.weight");
    EXPECT_EQ(sana_original_name("transformer_blocks.0.attn1.to_k.weight"),
              "blocks.0.attn.qkv.weight [part 2/3]");
    fs::remove_all(file.parent_path());
}

TEST(SanaTransformerParityTest, ConfigRoundTripsAndRefusesWhatStDoesNotImplement) {
    const auto c = SanaVideoTransformerConfig::sana_2b_480p();
    EXPECT_EQ(c.tensor_count(), 496);
    EXPECT_EQ(c.ffn_hidden(), 6720);
    EXPECT_EQ(SanaVideoTransformerConfig::from_json(c.to_json()), c);
    auto j = c.to_json();
    j["guidance_embeds"] = true;
    EXPECT_THROW(SanaVideoTransformerConfig::from_json(j), st::Error);
    j = c.to_json();
    j["qk_norm"] = "rms_norm";
    EXPECT_THROW(SanaVideoTransformerConfig::from_json(j), st::Error);
    j = c.to_json();
    j["num_layerz"] = 3;
    try {
        SanaVideoTransformerConfig::from_json(j, "x/config.json");
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("num_layers"), std::string::npos) << e.what();
    }
    j = c.to_json();
    j["cross_attention_dim"] = 1024;
    EXPECT_THROW(SanaVideoTransformerConfig::from_json(j), st::Error);
}

}  // namespace
}  // namespace st::plugins::sanavideo
