// LoRA on the real Wan transformer with SimpleTuner's default targets (to_q, to_k, to_v, to_out.0):
// which modules are hit, that only adapters train, and that the ComfyUI/native file uses the names
// ComfyUI and diffusers load for Wan (diffusion_model.blocks.N.self_attn.q.lora_A.weight + .alpha).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <filesystem>

#include "core/config.h"
#include "core/key_map.h"
#include "core/transformer.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using namespace st::plugins::wan;

namespace {

st::sdk::LoraNameMap native_names() {
    return [](const std::string& m) { return lora_module_to_native(m).value_or(""); };
}

WanTransformerInputs tiny_inputs(const WanTransformerConfig& cfg) {
    auto gen = at::detail::createCPUGenerator(3);
    WanTransformerInputs in;
    in.hidden_states = at::randn({1, cfg.in_channels, 2, 8, 8}, gen);
    in.timestep = at::full({1}, 700.0);
    in.encoder_hidden_states = at::randn({1, 8, cfg.text_dim}, gen);
    return in;
}

}  // namespace

TEST(WanLoraTest, DefaultTargetsHitSelfAndCrossAttentionOfEveryBlock) {
    auto cfg = WanTransformerConfig::tiny();
    WanTransformer3DModel model(cfg);
    randomize_parameters(*model, 1);
    auto injected = st::sdk::inject_lora(*model, {"to_q", "to_k", "to_v", "to_out.0"}, {4, 4.0, 0.0, 7});
    EXPECT_EQ(injected.size(), static_cast<size_t>(cfg.num_layers) * 2 * 4);
    EXPECT_NE(std::find(injected.begin(), injected.end(), "blocks.0.attn1.to_q"), injected.end());
    EXPECT_NE(std::find(injected.begin(), injected.end(), "blocks.1.attn2.to_out.0"), injected.end());
    // A fresh adapter (lora_B = 0) leaves the output unchanged; training reaches only the adapters.
    auto in = tiny_inputs(cfg);
    int64_t trainable = st::sdk::freeze_all_but_lora(*model);
    int64_t lora_elements = 0;
    for (const auto& p : st::sdk::lora_parameters(*model)) lora_elements += p.second.numel();
    EXPECT_EQ(st::sdk::lora_parameters(*model).size(), injected.size() * 2);
    EXPECT_EQ(trainable, lora_elements);
    auto out = model->forward(in);
    torch::autograd::backward({out.square().mean()});
    for (const auto& p : model->named_parameters()) {
        bool is_lora = p.key().find(".lora_") != std::string::npos;
        EXPECT_EQ(p.value().requires_grad(), is_lora) << p.key();
        if (!is_lora) EXPECT_FALSE(p.value().grad().defined()) << p.key();
    }
    // lora_B starts at zero, so only lora_B gets a gradient on the first step.
    EXPECT_TRUE(model->named_parameters()["blocks.0.attn1.to_q.lora_B.weight"].grad().defined());
}

TEST(WanLoraTest, ComfyUiFileUsesNativeWanNamesAndLoadsBack) {
    auto cfg = WanTransformerConfig::tiny();
    WanTransformer3DModel model(cfg);
    randomize_parameters(*model, 1);
    st::sdk::inject_lora(*model, {"to_q", "to_k", "to_v", "to_out.0"}, {4, 2.0, 0.0, 7});
    {
        at::NoGradGuard g;
        for (auto& p : st::sdk::lora_parameters(*model)) p.second.normal_(0, 0.05);
    }
    auto in = tiny_inputs(cfg);
    at::Tensor expected;
    {
        at::NoGradGuard g;
        expected = model->forward(in);
    }
    fs::path file =
        fs::temp_directory_path() / ("st_wan_lora_" + std::to_string(::getpid()) + ".safetensors");
    st::sdk::save_lora(file, *model, st::sdk::LoraFormat::comfyui, native_names());
    auto src = st::sdk::SafetensorsFile::open(file);
    EXPECT_TRUE(src->contains("diffusion_model.blocks.0.self_attn.q.lora_A.weight"));
    EXPECT_TRUE(src->contains("diffusion_model.blocks.0.self_attn.q.lora_B.weight"));
    EXPECT_TRUE(src->contains("diffusion_model.blocks.1.cross_attn.o.alpha"));
    EXPECT_FLOAT_EQ(src->load("diffusion_model.blocks.1.cross_attn.o.alpha").item<float>(), 2.0f);
    EXPECT_EQ(src->infos().size(), static_cast<size_t>(cfg.num_layers) * 2 * 4 * 3);

    WanTransformer3DModel fresh(cfg);
    randomize_parameters(*fresh, 1);
    auto loaded = st::sdk::load_lora(file, *fresh, 1.0, native_names());
    EXPECT_EQ(loaded.size(), static_cast<size_t>(cfg.num_layers) * 2 * 4);
    at::NoGradGuard g;
    EXPECT_TRUE(at::allclose(fresh->forward(in), expected, 1e-5, 1e-6));
    fs::remove(file);
}
