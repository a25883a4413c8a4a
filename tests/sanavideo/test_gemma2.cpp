// Gemma-2 text encoder (plugins/sanavideo/core/gemma2*): parity with transformers' Gemma2Model on
// tests/golden/hf_gemma2 (last_hidden_state and every hidden_states_N within case.json's tolerance),
// the config reader, the Gemma2ForCausalLM `model.` prefix layout, strict-load errors naming the
// tensor, the dtype option and the random writer.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/gemma2.h"
#include "core/gemma2_config.h"
#include "core/gemma2_weights.h"
#include "golden_compare.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/safetensors.h"
#include "st/weights.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::plugins::sanavideo;
using st::plugins::wan::test::close_to;
using st::plugins::wan::test::error_text;
using st::plugins::wan::test::load_all;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "hf_gemma2";
const auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("gemma2"));

fs::path scratch(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("gemma2", name);
}

struct Golden {
    st::sdk::TensorMap inputs, outputs;
    double atol = 0, rtol = 0;
};

const Golden& golden() {
    static const Golden g = [] {
        Golden out;
        out.inputs = load_all(kGolden / "inputs.safetensors");
        out.outputs = load_all(kGolden / "outputs.safetensors");
        const auto cs = st::sdk::read_json_file(kGolden / "case.json", "test");
        out.atol = cs["tolerance"]["fp32"]["atol"].get<double>();
        out.rtol = cs["tolerance"]["fp32"]["rtol"].get<double>();
        return out;
    }();
    return g;
}

Gemma2Output run_golden(Gemma2Model& model) {
    at::NoGradGuard no_grad;
    return model->run(golden().inputs.at("input_ids"), golden().inputs.at("attention_mask"), true);
}

// A copy of the golden folder with the weights renamed / changed by `edit`.
fs::path edited_copy(const std::string& name, const std::function<void(st::sdk::TensorMap&)>& edit) {
    const fs::path dir = scratch(name);
    fs::copy_file(kGolden / "config.json", dir / "config.json");
    st::sdk::TensorMap tensors = load_all(kGolden / "model.safetensors");
    edit(tensors);
    st::sdk::save_safetensors(dir / "model.safetensors", tensors);
    return dir;
}

}  // namespace

TEST(Gemma2Test, ConfigReadsTheGoldenTransformersJson) {
    const Gemma2Config c = Gemma2Config::from_file(kGolden / "config.json");
    EXPECT_EQ(c, Gemma2Config::tiny());
    EXPECT_EQ(c.num_key_value_groups(), 2);
    EXPECT_TRUE(c.is_sliding(0));
    EXPECT_FALSE(c.is_sliding(1));
    EXPECT_TRUE(c.is_sliding(2));
    // to_json -> from_json round trip, and the 2B preset's (models.md §6.4) values.
    EXPECT_EQ(Gemma2Config::from_json(c.to_json()), c);
    const Gemma2Config big = Gemma2Config::gemma2_2b();
    EXPECT_EQ(Gemma2Config::from_json(big.to_json()), big);
    EXPECT_EQ(big.hidden_size, 2304);
    EXPECT_EQ(big.num_hidden_layers, 26);
    EXPECT_DOUBLE_EQ(*big.attn_logit_softcapping, 50.0);
}

TEST(Gemma2Test, ConfigErrorsNameTheKey) {
    nlohmann::json j = Gemma2Config::tiny().to_json();
    j["model_type"] = "gemma";
    EXPECT_NE(error_text([&] { Gemma2Config::from_json(j); }).find("model_type"), std::string::npos);
    j = Gemma2Config::tiny().to_json();
    j["num_key_value_heads"] = 3;
    EXPECT_NE(error_text([&] { Gemma2Config::from_json(j); }).find("num_key_value_heads"), std::string::npos);
    j = Gemma2Config::tiny().to_json();
    j["hidden_activation"] = "gelu";
    EXPECT_NE(error_text([&] { Gemma2Config::from_json(j); }).find("hidden_activation"), std::string::npos);
    // gemma-2-2b-it's eos list, a null soft-cap and an unknown future key are accepted.
    j = Gemma2Config::tiny().to_json();
    j["eos_token_id"] = {1, 107};
    j["attn_logit_softcapping"] = nullptr;
    j["some_future_key"] = 1;
    const Gemma2Config c = Gemma2Config::from_json(j);
    EXPECT_FALSE(c.attn_logit_softcapping.has_value());
    j["layer_types"] = {"full_attention", "full_attention", "full_attention"};
    EXPECT_NE(error_text([&] { Gemma2Config::from_json(j); }).find("layer_types"), std::string::npos);
}

TEST(Gemma2Test, ParameterNamesAreTheGoldenKeys) {
    Gemma2Model model(Gemma2Config::tiny());
    const auto src = st::sdk::SafetensorsFile::open(kGolden / "model.safetensors");
    const auto ours = st::sdk::named_tensors(*model);
    std::vector<std::string> file_names, our_names;
    for (const auto& info : src->infos()) file_names.push_back(info.name);
    for (const auto& [name, t] : ours) our_names.push_back(name);
    EXPECT_EQ(our_names, file_names);
    EXPECT_EQ(file_names.size(), 46u);
}

TEST(Gemma2Test, GoldenParityOfEveryHiddenState) {
    Gemma2Model model = load_gemma2(kGolden);
    const Gemma2Output out = run_golden(model);
    const Golden& g = golden();
    ASSERT_EQ(out.hidden_states.size(), 5u);
    EXPECT_TRUE(close_to(out.last_hidden_state, g.outputs.at("last_hidden_state"), "last_hidden_state",
                         g.atol, g.rtol));
    for (size_t i = 0; i < out.hidden_states.size(); ++i) {
        const std::string name = "hidden_states_" + std::to_string(i);
        EXPECT_TRUE(close_to(out.hidden_states[i], g.outputs.at(name), name, g.atol, g.rtol));
    }
    EXPECT_TRUE(at::equal(out.hidden_states.back(), out.last_hidden_state));
    // forward() is run()'s last_hidden_state; without a mask every position is a token.
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(g.inputs.at("input_ids"), g.inputs.at("attention_mask")),
                          out.last_hidden_state));
    const at::Tensor first = g.inputs.at("input_ids").narrow(0, 0, 1);  // valid length 16 = no padding
    EXPECT_TRUE(close_to(model->forward(first), out.last_hidden_state.narrow(0, 0, 1), "no mask", 2e-5, 0));
}

TEST(Gemma2Test, CausalLmPrefixLayoutLoadsAndIgnoresLmHead) {
    const fs::path dir = edited_copy("prefixed", [](st::sdk::TensorMap& t) {
        st::sdk::TensorMap renamed;
        for (auto& [name, value] : t) renamed.emplace("model." + name, value);
        renamed.emplace("lm_head.weight", t.at("embed_tokens.weight").clone());
        t = std::move(renamed);
    });
    const auto source = st::sdk::open_tensor_source(dir / "model.safetensors");
    const Gemma2Layout layout = detect_gemma2_layout(*source);
    EXPECT_TRUE(layout.model_prefix);
    EXPECT_EQ(layout.ignored_tensors, 1);
    Gemma2Model model = load_gemma2(dir);
    const Gemma2Output out = run_golden(model);
    EXPECT_TRUE(close_to(out.last_hidden_state, golden().outputs.at("last_hidden_state"), "prefixed",
                         golden().atol, golden().rtol));
}

TEST(Gemma2Test, StrictLoadErrorsNameTheTensor) {
    const fs::path missing =
        edited_copy("missing", [](st::sdk::TensorMap& t) { t.erase("layers.1.mlp.up_proj.weight"); });
    EXPECT_NE(error_text([&] { load_gemma2(missing); }).find("layers.1.mlp.up_proj.weight"),
              std::string::npos);
    const fs::path shape = edited_copy("shape", [](st::sdk::TensorMap& t) {
        t["layers.2.self_attn.k_proj.weight"] = at::zeros({64, 64});
    });
    const std::string shape_error = error_text([&] { load_gemma2(shape); });
    EXPECT_NE(shape_error.find("layers.2.self_attn.k_proj.weight"), std::string::npos) << shape_error;
    const fs::path extra =
        edited_copy("extra", [](st::sdk::TensorMap& t) { t["layers.0.mystery"] = at::zeros({2}); });
    EXPECT_NE(error_text([&] { load_gemma2(extra); }).find("layers.0.mystery"), std::string::npos);
    // A Gemma2Model name inside a `model.`-prefixed file is unexpected, not silently accepted.
    const fs::path mixed = edited_copy("mixed", [](st::sdk::TensorMap& t) {
        st::sdk::TensorMap renamed;
        for (auto& [name, value] : t) renamed.emplace(name == "norm.weight" ? name : "model." + name, value);
        t = std::move(renamed);
    });
    const std::string mixed_error = error_text([&] { load_gemma2(mixed); });
    EXPECT_NE(mixed_error.find("'model.' prefix: norm.weight"), std::string::npos) << mixed_error;
    const fs::path bare_with_prefixed = edited_copy("bare_with_prefixed", [](st::sdk::TensorMap& t) {
        t["model.layers.0.mlp.up_proj.weight"] = at::zeros({128, 64});
    });
    EXPECT_NE(error_text([&] { load_gemma2(bare_with_prefixed); }).find("model.layers.0.mlp.up_proj.weight"),
              std::string::npos);
    const fs::path none = edited_copy("none", [](st::sdk::TensorMap& t) {
        t = {{"encoder.weight", at::zeros({2})}};
    });
    EXPECT_NE(error_text([&] { load_gemma2(none); }).find("embed_tokens.weight"), std::string::npos);
}

TEST(Gemma2Test, DtypeOptionBuildsInThatDtype) {
    Gemma2Model model = load_gemma2(kGolden, at::kBFloat16);
    for (const auto& p : model->parameters()) EXPECT_EQ(p.scalar_type(), at::kBFloat16);
    const Gemma2Output out = run_golden(model);
    EXPECT_EQ(out.last_hidden_state.scalar_type(), at::kBFloat16);
    // bf16 weights and activations: a few per cent of the unit-scale output.
    EXPECT_TRUE(
        close_to(out.last_hidden_state, golden().outputs.at("last_hidden_state"), "bf16", 0.15, 0.05));
}

TEST(Gemma2Test, RandomWriterIsDeterministicAndLoads) {
    Gemma2Config config = Gemma2Config::tiny();
    config.vocab_size = 300;
    const fs::path a = scratch("rand_a"), b = scratch("rand_b");
    write_random_gemma2(a, config, 7);
    write_random_gemma2(b, config, 7);
    const auto ta = load_all(a / "model.safetensors"), tb = load_all(b / "model.safetensors");
    ASSERT_EQ(ta.size(), 46u);
    for (const auto& [name, t] : ta) EXPECT_TRUE(at::equal(t, tb.at(name))) << name;
    EXPECT_EQ(Gemma2Config::from_file(a / "config.json"), config);
    Gemma2Model model = load_gemma2(a);
    at::NoGradGuard no_grad;
    const at::Tensor ids = at::tensor({2, 17, 250, 5, 0, 0}, at::kLong).view({1, 6});
    const at::Tensor mask = at::tensor({1, 1, 1, 1, 0, 0}, at::kLong).view({1, 6});
    const at::Tensor h = model->forward(ids, mask);
    EXPECT_TRUE(at::isfinite(h).all().item<bool>());
    // Final RMSNorm with weights near 1: unit RMS per position.
    EXPECT_NEAR(h.pow(2).mean().item<double>(), 1.0, 0.3);
    EXPECT_NE(error_text([&] {
                  model->forward(at::tensor({2, 300}, at::kLong).view({1, 2}));
              }).find("vocabulary"),
              std::string::npos);
}
