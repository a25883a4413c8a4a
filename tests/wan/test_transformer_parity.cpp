// Parity of the Wan transformer with the diffusers reference on the golden tiny models
// (tests/golden/wan_t2v, wan_i2v, wan_i2v21; tolerances from MANIFEST.md).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <unistd.h>

#include <filesystem>

#include "core/checkpoint.h"
#include "core/transformer.h"
#include "st/error.h"
#include "st/safetensors.h"
#include "test_transformer_util.h"

namespace st::plugins::wan {
namespace {

using test::allclose_manifest;
using test::golden;
using test::load_tensor;
namespace fs = std::filesystem;

struct T2VInputs {
    at::Tensor hidden_states, timestep, timestep_per_token, text;
};

T2VInputs t2v_inputs() {
    auto f = golden("wan_t2v/inputs.safetensors");
    return {load_tensor(f, "hidden_states"), load_tensor(f, "timestep"), load_tensor(f, "timestep_per_token"),
            load_tensor(f, "encoder_hidden_states")};
}

at::Tensor run(WanTransformer3DModel& model, const at::Tensor& x, const at::Tensor& t, const at::Tensor& text,
               const at::Tensor& image = {}, st::sdk::TensorMap* inter = nullptr) {
    torch::NoGradGuard no_grad;
    return model->forward({x, t, text, image}, inter);
}

at::Tensor ref_out(const std::string& name) {
    return load_tensor(golden("wan_t2v/outputs.safetensors"), name);
}

TEST(WanTransformerParityTest, T2VPerSampleTimestepMatchesDiffusers) {
    auto loaded = load_transformer(golden("wan_t2v"), {.subfolder = "none"});
    EXPECT_EQ(loaded.info.layout, KeyLayout::diffusers);
    auto in = t2v_inputs();
    st::sdk::TensorMap inter;
    at::Tensor out = run(loaded.model, in.hidden_states, in.timestep, in.text, {}, &inter);
    EXPECT_TRUE(allclose_manifest(out, ref_out("out")));
    // Intermediates of the same run (debug aids of the golden case).
    auto f = golden("wan_t2v/intermediates.safetensors");
    EXPECT_TRUE(allclose_manifest(inter.at("rope_cos"), load_tensor(f, "rope_cos"), {1e-6, 0, 1e-6}));
    EXPECT_TRUE(allclose_manifest(inter.at("rope_sin"), load_tensor(f, "rope_sin"), {1e-6, 0, 1e-6}));
    EXPECT_TRUE(allclose_manifest(inter.at("temb"), load_tensor(f, "temb")));
    EXPECT_TRUE(allclose_manifest(inter.at("timestep_proj"), load_tensor(f, "timestep_proj")));
    EXPECT_TRUE(allclose_manifest(inter.at("text_embedder_out"), load_tensor(f, "text_embedder_out")));
    EXPECT_TRUE(allclose_manifest(inter.at("patch_embed_out"), load_tensor(f, "patch_embed_out")));
    EXPECT_TRUE(allclose_manifest(inter.at("blocks.0.out"), load_tensor(f, "block_0_out")));
    EXPECT_TRUE(allclose_manifest(inter.at("blocks.1.out"), load_tensor(f, "block_1_out")));
}

TEST(WanTransformerParityTest, T2VPerTokenTimestepMatchesDiffusers) {
    auto loaded = load_transformer(golden("wan_t2v"), {.subfolder = "none"});
    auto in = t2v_inputs();
    at::Tensor out = run(loaded.model, in.hidden_states, in.timestep_per_token, in.text);
    EXPECT_TRUE(allclose_manifest(out, ref_out("out_per_token_timestep")));
    // The per-token input has t = 0 on frame 0, so it must differ from the per-sample output.
    EXPECT_GT((out - ref_out("out")).abs().max().item<double>(), 1e-2);
}

TEST(WanTransformerParityTest, ShardedCheckpointMatches) {
    auto loaded = load_transformer(golden("wan_t2v/sharded"), {.subfolder = "none"});
    EXPECT_TRUE(loaded.location.weights.string().ends_with(".index.json"));
    auto in = t2v_inputs();
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in.hidden_states, in.timestep, in.text), ref_out("out")));
}

TEST(WanTransformerParityTest, Bf16WeightsOnDiskMatchUpcastReference) {
    auto loaded = load_transformer(golden("wan_t2v"), {.subfolder = "none", .variant = "bf16"});
    EXPECT_EQ(loaded.info.dtypes.count("BF16"), 1u);
    auto in = t2v_inputs();
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in.hidden_states, in.timestep, in.text),
                                  ref_out("out_bf16_weights")));
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in.hidden_states, in.timestep_per_token, in.text),
                                  ref_out("out_bf16_weights_per_token_timestep")));
}

TEST(WanTransformerParityTest, OriginalLayoutSingleFileMatches) {
    auto loaded = load_transformer(golden("wan_t2v/original_format.safetensors"), {.subfolder = "none"});
    EXPECT_EQ(loaded.info.layout, KeyLayout::original);
    EXPECT_EQ(loaded.info.prefix, "");
    EXPECT_FALSE(loaded.location.config_json.has_value());  // config recovered from the weights
    auto in = t2v_inputs();
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in.hidden_states, in.timestep, in.text), ref_out("out")));
}

TEST(WanTransformerParityTest, ComfyUIPrefixedSingleFileMatches) {
    // ComfyUI repackages prefix every original key with `model.diffusion_model.`.
    auto src = st::sdk::SafetensorsFile::open(golden("wan_t2v/original_format.safetensors"));
    st::sdk::TensorMap prefixed;
    for (const auto& info : src->infos())
        prefixed["model.diffusion_model." + info.name] = src->load(info.name);
    fs::path dir = fs::temp_directory_path() / ("st_wan_parity_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    st::sdk::save_safetensors(dir / "wan2.1_t2v_tiny_comfy.safetensors", prefixed);
    auto loaded = load_transformer(dir / "wan2.1_t2v_tiny_comfy.safetensors", {.subfolder = "none"});
    EXPECT_EQ(loaded.info.prefix, "model.diffusion_model.");
    EXPECT_EQ(loaded.info.layout, KeyLayout::original);
    auto in = t2v_inputs();
    EXPECT_TRUE(allclose_manifest(run(loaded.model, in.hidden_states, in.timestep, in.text), ref_out("out")));
    fs::remove_all(dir);
}

TEST(WanTransformerParityTest, I2V22BothExpertsAndBoundarySwitch) {
    auto boundary = read_boundary_ratio(golden("wan_i2v/model_index.json"));
    ASSERT_TRUE(boundary.has_value());
    EXPECT_DOUBLE_EQ(*boundary, 0.9);
    // Flavour table: "-high" is the diffusers `transformer` folder, "-low" is `transformer_2`.
    auto high =
        load_transformer(golden("wan_i2v"), {.subfolder = find_flavour("i2v-14b-2.2-high").subfolder});
    auto low = load_transformer(golden("wan_i2v"), {.subfolder = find_flavour("i2v-14b-2.2-low").subfolder});
    EXPECT_EQ(high.info.kind, WanVariantKind::i2v_22);
    EXPECT_EQ(high.info.config.in_channels, 12);
    WanExpertPair pair(high.model, low.model, *boundary);

    auto f = golden("wan_i2v/inputs.safetensors");
    at::Tensor x = load_tensor(f, "hidden_states"), text = load_tensor(f, "encoder_hidden_states");
    at::Tensor ts = load_tensor(f, "timesteps");
    // Model input = cat(latents, mask, condition) on channels.
    EXPECT_TRUE(at::equal(
        x, at::cat({load_tensor(f, "latents"), load_tensor(f, "mask"), load_tensor(f, "condition_latents")},
                   1)));
    auto outs = golden("wan_i2v/outputs.safetensors");
    torch::NoGradGuard no_grad;
    EXPECT_EQ(ts[0].item<double>(), 950.0);
    EXPECT_TRUE(pair.is_high(950.0));
    EXPECT_FALSE(pair.is_high(400.0));
    EXPECT_TRUE(pair.is_high(900.0));  // t >= boundary*1000 is high
    at::Tensor o950 = pair.forward({x, ts.slice(0, 0, 1), text, {}});
    at::Tensor o400 = pair.forward({x, ts.slice(0, 1, 2), text, {}});
    EXPECT_TRUE(allclose_manifest(o950, load_tensor(outs, "out_t950")));
    EXPECT_TRUE(allclose_manifest(o400, load_tensor(outs, "out_t400")));
    // The wrong expert does not match (the folders hold different weights).
    at::Tensor wrong = low.model->forward({x, ts.slice(0, 0, 1), text, {}});
    EXPECT_FALSE(allclose_manifest(wrong, load_tensor(outs, "out_t950")));
    // A batch straddling the boundary is refused.
    EXPECT_THROW(pair.forward({x.repeat({2, 1, 1, 1, 1}), ts, text.repeat({2, 1, 1}), {}}), st::Error);
}

TEST(WanTransformerParityTest, I2V22OriginalLayoutMatches) {
    auto high =
        load_transformer(golden("wan_i2v/transformer/original_format.safetensors"), {.subfolder = "none"});
    EXPECT_EQ(high.info.layout, KeyLayout::original);
    auto f = golden("wan_i2v/inputs.safetensors");
    at::Tensor out = run(high.model, load_tensor(f, "hidden_states"),
                         load_tensor(f, "timesteps").slice(0, 0, 1), load_tensor(f, "encoder_hidden_states"));
    EXPECT_TRUE(allclose_manifest(out, load_tensor(golden("wan_i2v/outputs.safetensors"), "out_t950")));
}

TEST(WanTransformerParityTest, I2V21ImageBranchMatchesDiffusers) {
    auto loaded = load_transformer(golden("wan_i2v21"), {.subfolder = "none"});
    EXPECT_EQ(loaded.info.kind, WanVariantKind::i2v_21);
    EXPECT_EQ(loaded.info.config.added_kv_proj_dim, 24);
    auto f = golden("wan_i2v21/inputs.safetensors");
    at::Tensor out =
        run(loaded.model, load_tensor(f, "hidden_states"), load_tensor(f, "timestep"),
            load_tensor(f, "encoder_hidden_states"), load_tensor(f, "encoder_hidden_states_image"));
    EXPECT_TRUE(allclose_manifest(out, load_tensor(golden("wan_i2v21/outputs.safetensors"), "out")));
    // The image branch contributes (without it the model refuses to run, so zero the image instead).
    at::Tensor no_img = run(loaded.model, load_tensor(f, "hidden_states"), load_tensor(f, "timestep"),
                            load_tensor(f, "encoder_hidden_states"),
                            at::zeros_like(load_tensor(f, "encoder_hidden_states_image")));
    EXPECT_GT((no_img - out).abs().max().item<double>(), 1e-3);
}

TEST(WanTransformerParityTest, Bf16ComputeStaysCloseToFp32) {
    auto fp32 = load_transformer(golden("wan_t2v"), {.subfolder = "none"});
    auto bf16 = load_transformer(golden("wan_t2v"), {.subfolder = "none", .dtype = at::kBFloat16});
    EXPECT_EQ(bf16.model->condition_embedder->time_embedder->linear_1->weight.scalar_type(), at::kFloat);
    EXPECT_EQ(bf16.model->blocks->ptr<WanTransformerBlockImpl>(0)->scale_shift_table.scalar_type(),
              at::kFloat);
    EXPECT_EQ(bf16.model->proj_out->weight.scalar_type(), at::kBFloat16);
    auto in = t2v_inputs();
    at::Tensor a = run(fp32.model, in.hidden_states, in.timestep, in.text);
    at::Tensor b = run(bf16.model, in.hidden_states, in.timestep, in.text);
    EXPECT_EQ(b.scalar_type(), at::kBFloat16);
    // bf16 has ~3 significant digits; outputs are O(1) (|y| max ~4).
    EXPECT_LT((a - b.to(at::kFloat)).abs().max().item<double>(), 0.15);
}

}  // namespace
}  // namespace st::plugins::wan
