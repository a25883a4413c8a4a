// UMT5 text encoder: parity with the umt5 golden (HF and original Wan layouts), config parsing,
// key mapping, relative-position buckets, Wan's zero-row padding, strict-loading errors and the
// tiny-config battery (shapes, determinism, gradients, save/load round trip).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "st/error.h"
#include "st/kit/umt5.h"
#include "st/safetensors.h"
#include "st/weights.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::kit;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "umt5";
constexpr double kAtol = 2e-4;  // MANIFEST umt5 fp32 tolerance
constexpr double kRtol = 1e-4;

at::Tensor golden(const std::string& file, const std::string& name) {
    return st::sdk::SafetensorsFile::open(kGolden / file)->load(name);
}

// max over elements of |a - b| - (atol + rtol |b|); <= 0 means within tolerance.
double excess(const at::Tensor& a, const at::Tensor& b) {
    const at::Tensor diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
    return (diff - (kAtol + kRtol * b.to(at::kDouble).abs())).max().item<double>();
}

fs::path temp_dir(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("umt5", name);
}
const auto* const kTempCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("umt5"));

using st::plugins::wan::test::error_text;

void expect_golden_parity(UMT5Encoder& model) {
    const at::Tensor ids = golden("inputs.safetensors", "input_ids");
    const at::Tensor mask = golden("inputs.safetensors", "attention_mask");
    const at::Tensor want_hidden = golden("outputs.safetensors", "last_hidden_state");
    const at::Tensor want_embeds = golden("outputs.safetensors", "prompt_embeds");
    const at::Tensor want_lens = golden("outputs.safetensors", "seq_lens");
    at::NoGradGuard no_grad;
    const UMT5Output out = model->encode_prompts(ids, mask);
    ASSERT_EQ(out.prompt_embeds.sizes(), want_embeds.sizes());
    EXPECT_TRUE(at::equal(out.seq_lens, want_lens)) << out.seq_lens << " vs " << want_lens;
    const double max_abs = (out.prompt_embeds - want_embeds).abs().max().item<double>();
    ::testing::Test::RecordProperty("prompt_embeds_max_abs_diff", std::to_string(max_abs));
    std::cout << "prompt_embeds max abs diff vs golden: " << max_abs << "\n";
    EXPECT_LE(excess(out.prompt_embeds, want_embeds), 0.0) << "max abs diff " << max_abs;
    // last_hidden_state: rows < seq_len (padded rows are optional in the MANIFEST rule).
    for (int64_t b = 0; b < ids.size(0); ++b) {
        const int64_t len = want_lens[b].item<int64_t>();
        EXPECT_LE(excess(out.last_hidden_state[b].narrow(0, 0, len), want_hidden[b].narrow(0, 0, len)), 0.0)
            << "sample " << b;
    }
}

}  // namespace

TEST(UMT5Test, GoldenParityHfLayout) {
    UMT5Encoder model = load_umt5_encoder(kGolden / "text_encoder");
    EXPECT_EQ(model->config(), UMT5Config::from_hf_file(kGolden / "text_encoder" / "config.json"));
    expect_golden_parity(model);
}

TEST(UMT5Test, GoldenParityWanLayout) {
    UMT5Encoder model = load_umt5_encoder(kGolden / "original_format.safetensors");
    expect_golden_parity(model);
}

TEST(UMT5Test, ConfigSourcesAgree) {
    std::ifstream in(kGolden / "wan_t5_config.json");
    const UMT5Config wan = UMT5Config::from_wan_json(nlohmann::json::parse(in));
    const UMT5Config hf = UMT5Config::from_hf_file(kGolden / "text_encoder" / "config.json");
    const auto original = st::sdk::SafetensorsFile::open(kGolden / "original_format.safetensors");
    const auto hf_file = st::sdk::SafetensorsFile::open(kGolden / "text_encoder" / "model.safetensors");
    EXPECT_EQ(wan, hf);
    EXPECT_EQ(UMT5Config::from_weights(*original), hf);
    EXPECT_EQ(UMT5Config::from_weights(*hf_file), hf);
    EXPECT_EQ(hf.d_model, 16);
    EXPECT_EQ(hf.num_heads, 4);
    EXPECT_EQ(hf.d_kv, 4);
    EXPECT_EQ(hf.relative_attention_max_distance, 128);
    EXPECT_EQ(UMT5Config::from_hf_json(hf.to_hf_json()), hf);
}

TEST(UMT5Test, PresetsMatchReference) {
    const UMT5Config xxl = UMT5Config::umt5_xxl();
    EXPECT_EQ(xxl.d_model, 4096);
    EXPECT_EQ(xxl.num_layers, 24);
    EXPECT_EQ(xxl.num_heads, 64);
    EXPECT_EQ(xxl.d_kv, 64);
    EXPECT_EQ(xxl.d_ff, 10240);
    EXPECT_EQ(xxl.vocab_size, 256384);
    EXPECT_EQ(xxl.relative_attention_num_buckets, 32);
    EXPECT_EQ(xxl.relative_attention_max_distance, 128);
    EXPECT_EQ(xxl.text_len, 512);
    const UMT5Config tiny = UMT5Config::tiny();
    EXPECT_EQ(tiny.d_model, 16);
    EXPECT_EQ(tiny.vocab_size, 64);
    EXPECT_EQ(tiny.relative_attention_max_distance, 16);
}

TEST(UMT5Test, ConfigRejectsOtherArchitectures) {
    nlohmann::json j = UMT5Config::tiny().to_hf_json();
    j["feed_forward_proj"] = "relu";
    EXPECT_NE(error_text([&] { UMT5Config::from_hf_json(j); }).find("feed_forward_proj 'relu'"),
              std::string::npos);
    j = UMT5Config::tiny().to_hf_json();
    j["model_type"] = "t5";
    EXPECT_NE(error_text([&] { UMT5Config::from_hf_json(j); }).find("model_type 't5'"), std::string::npos);
    j = UMT5Config::tiny().to_hf_json();
    j["num_heads"] = "four";
    EXPECT_NE(error_text([&] { UMT5Config::from_hf_json(j); }).find("'num_heads'"), std::string::npos);
    EXPECT_NE(error_text([&] {
                  UMT5Config::from_wan_json({{"shared_pos", true}});
              }).find("shared_pos"),
              std::string::npos);
}

TEST(UMT5Test, ParameterNamesEqualHfCheckpointKeys) {
    UMT5Encoder model(UMT5Config::from_hf_file(kGolden / "text_encoder" / "config.json"));
    std::set<std::string> names;
    for (const auto& item : model->named_parameters()) names.insert(item.key());
    std::set<std::string> keys;
    for (const auto& info :
         st::sdk::SafetensorsFile::open(kGolden / "text_encoder" / "model.safetensors")->infos())
        keys.insert(info.name);
    EXPECT_EQ(names, keys);
    EXPECT_EQ(names.size(), 22u);
    EXPECT_TRUE(names.count("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"));
}

TEST(UMT5Test, WanKeyMapCoversOriginalFileBothWays) {
    std::set<std::string> mapped;
    for (const auto& info :
         st::sdk::SafetensorsFile::open(kGolden / "original_format.safetensors")->infos()) {
        const auto hf = umt5_wan_to_hf_key(info.name);
        ASSERT_TRUE(hf.has_value()) << info.name;
        EXPECT_EQ(umt5_hf_to_wan_key(*hf), info.name);
        mapped.insert(*hf);
    }
    std::set<std::string> keys;
    for (const auto& info :
         st::sdk::SafetensorsFile::open(kGolden / "text_encoder" / "model.safetensors")->infos())
        keys.insert(info.name);
    EXPECT_EQ(mapped, keys);
    EXPECT_EQ(umt5_wan_to_hf_key("blocks.3.ffn.gate.0.weight"),
              "encoder.block.3.layer.1.DenseReluDense.wi_0.weight");
    EXPECT_EQ(umt5_wan_to_hf_key("blocks.x.ffn.fc1.weight"), std::nullopt);
    EXPECT_EQ(umt5_wan_to_hf_key("head.weight"), std::nullopt);
}

TEST(UMT5Test, RelativeBucketsFollowT5Formula) {
    // Bias table row b = b for every head, so position_bias returns the bucket ids.
    UMT5Config config = UMT5Config::tiny();
    config.relative_attention_max_distance = 128;
    UMT5Attention attention(config);
    {
        at::NoGradGuard no_grad;
        attention->relative_attention_bias->weight.copy_(
            at::arange(32, at::kFloat).unsqueeze(1).expand({32, config.num_heads}));
    }
    const int64_t length = 300;
    const at::Tensor buckets = attention->position_bias(length)[0][0].to(at::kLong);
    auto expected = [](int64_t rel) {
        int64_t bucket = rel > 0 ? 16 : 0;
        const int64_t n = std::abs(rel);
        if (n < 8) return bucket + n;
        const auto large = 8 + static_cast<int64_t>(std::log(n / 8.0) / std::log(16.0) * 8.0);
        return bucket + std::min<int64_t>(large, 15);
    };
    for (int64_t i = 0; i < length; i += 7)
        for (int64_t j = 0; j < length; j += 5)
            ASSERT_EQ(buckets[i][j].item<int64_t>(), expected(j - i)) << "query " << i << " key " << j;
    EXPECT_EQ(buckets[0][1].item<int64_t>(), 17);  // key after query: upper half
    EXPECT_EQ(buckets[1][0].item<int64_t>(), 1);
    EXPECT_EQ(buckets[0][299].item<int64_t>(), 31);  // clamped
    EXPECT_EQ(buckets[299][0].item<int64_t>(), 15);
}

TEST(UMT5Test, EveryLayerUsesItsOwnBiasTable) {
    const fs::path dir = temp_dir("own_bias");
    write_random_umt5(dir, UMT5Config::tiny(), 7);
    UMT5Encoder model = load_umt5_encoder(dir);
    at::manual_seed(0);
    const at::Tensor ids = at::randint(3, 64, {1, 20}, at::kLong);
    const at::Tensor mask = at::ones({1, 20}, at::kLong);
    at::NoGradGuard no_grad;
    const at::Tensor before = model->forward(ids, mask);
    // Only layer 1's table changes (per bucket, since softmax ignores a constant shift): the output
    // must change (T5 would read layer 0's table only).
    auto* block1 = model->encoder->block->ptr(1)->as<UMT5Block>();
    block1->attention->SelfAttention->relative_attention_bias->weight.add_(
        at::arange(32, at::kFloat).unsqueeze(1) * 0.5);
    EXPECT_GT((model->forward(ids, mask) - before).abs().max().item<double>(), 1e-4);
}

TEST(UMT5Test, PaddingGivesZeroRowsAndMaskedKeysAreIgnored) {
    const fs::path dir = temp_dir("padding");
    write_random_umt5(dir, UMT5Config::tiny(), 3);
    UMT5Encoder model = load_umt5_encoder(dir);
    at::manual_seed(1);
    at::Tensor ids = at::randint(3, 64, {2, 20}, at::kLong);
    at::Tensor mask = at::ones({2, 20}, at::kLong);
    mask[0].narrow(0, 15, 5).zero_();
    ids[0].narrow(0, 15, 5).zero_();
    at::NoGradGuard no_grad;
    const UMT5Output out = model->encode_prompts(ids, mask);
    ASSERT_EQ(out.prompt_embeds.sizes(), (std::vector<int64_t>{2, 512, 16}));
    EXPECT_EQ(out.seq_lens[0].item<int64_t>(), 15);
    EXPECT_EQ(out.seq_lens[1].item<int64_t>(), 20);
    EXPECT_TRUE(at::equal(out.prompt_embeds[0].narrow(0, 0, 15), out.last_hidden_state[0].narrow(0, 0, 15)));
    EXPECT_EQ(out.prompt_embeds[0].narrow(0, 15, 512 - 15).abs().max().item<float>(), 0.0f);
    EXPECT_EQ(out.prompt_embeds[1].narrow(0, 20, 512 - 20).abs().max().item<float>(), 0.0f);
    EXPECT_GT(out.last_hidden_state[0].narrow(0, 15, 5).abs().max().item<float>(),
              0.0f);  // computed, then dropped
    // Changing the padded tokens must not change the real rows.
    at::Tensor other = ids.clone();
    other[0].narrow(0, 15, 5).fill_(42);
    const UMT5Output out2 = model->encode_prompts(other, mask);
    EXPECT_LT((out2.prompt_embeds - out.prompt_embeds).abs().max().item<double>(), 1e-6);
    // Longer than text_len is refused.
    const at::Tensor long_ids = at::ones({1, 513}, at::kLong);
    EXPECT_NE(error_text([&] { model->encode_prompts(long_ids, long_ids); }).find("text_len 512"),
              std::string::npos);
}

TEST(UMT5Test, TinyBatteryDeterminismGradientsRoundTrip) {
    const fs::path a = temp_dir("seed_a"), b = temp_dir("seed_b"), c = temp_dir("seed_c");
    write_random_umt5(a, UMT5Config::tiny(), 11);
    write_random_umt5(b, UMT5Config::tiny(), 11);
    write_random_umt5(c, UMT5Config::tiny(), 12);
    const auto fa = st::sdk::SafetensorsFile::open(a / "model.safetensors");
    const auto fb = st::sdk::SafetensorsFile::open(b / "model.safetensors");
    const auto fc = st::sdk::SafetensorsFile::open(c / "model.safetensors");
    EXPECT_TRUE(at::equal(fa->load("shared.weight"), fb->load("shared.weight")));
    EXPECT_FALSE(at::equal(fa->load("shared.weight"), fc->load("shared.weight")));

    UMT5Encoder model = load_umt5_encoder(a);
    EXPECT_EQ(model->config(), UMT5Config::tiny());
    // Loaded values equal the file (round trip through named_parameters).
    for (const auto& item : model->named_parameters())
        EXPECT_TRUE(at::equal(item.value(), fa->load(item.key()).to(at::kFloat))) << item.key();

    at::manual_seed(2);
    const at::Tensor ids = at::randint(3, 64, {1, 20}, at::kLong);
    at::Tensor mask = at::ones({1, 20}, at::kLong);
    mask[0].narrow(0, 15, 5).zero_();
    const at::Tensor y1 = model->forward(ids, mask);
    const at::Tensor y2 = model->forward(ids, mask);
    EXPECT_EQ(y1.sizes(), (std::vector<int64_t>{1, 20, 16}));
    EXPECT_TRUE(at::equal(y1, y2));
    y1.pow(2).sum().backward();
    for (const auto& item : model->named_parameters()) {
        ASSERT_TRUE(item.value().grad().defined()) << item.key();
        EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
    }
}

TEST(UMT5Test, LoadErrorsNameTheTensor) {
    const fs::path dir = temp_dir("errors");
    const auto src = st::sdk::SafetensorsFile::open(kGolden / "text_encoder" / "model.safetensors");
    st::sdk::TensorMap tensors;
    for (const auto& info : src->infos()) tensors[info.name] = src->load(info.name);

    // Wrong shape.
    st::sdk::TensorMap wrong = tensors;
    wrong["encoder.block.1.layer.1.DenseReluDense.wo.weight"] = at::zeros({16, 31});
    fs::create_directories(dir / "wrong");
    fs::copy_file(kGolden / "text_encoder" / "config.json", dir / "wrong" / "config.json");
    st::sdk::save_safetensors(dir / "wrong" / "model.safetensors", wrong);
    const std::string shape_err = error_text([&] { load_umt5_encoder(dir / "wrong"); });
    EXPECT_NE(shape_err.find("encoder.block.1.layer.1.DenseReluDense.wo.weight"), std::string::npos)
        << shape_err;

    // Missing tensor and an unexpected one.
    st::sdk::TensorMap missing = tensors;
    missing.erase("encoder.final_layer_norm.weight");
    missing["encoder.block.0.layer.0.SelfAttention.extra.weight"] = at::zeros({2});
    fs::create_directories(dir / "missing");
    fs::copy_file(kGolden / "text_encoder" / "config.json", dir / "missing" / "config.json");
    st::sdk::save_safetensors(dir / "missing" / "model.safetensors", missing);
    const std::string missing_err = error_text([&] { load_umt5_encoder(dir / "missing"); });
    EXPECT_NE(missing_err.find("encoder.final_layer_norm.weight"), std::string::npos) << missing_err;
    EXPECT_NE(missing_err.find("SelfAttention.extra.weight"), std::string::npos) << missing_err;

    // Tied alias only: accepted as shared.weight.
    st::sdk::TensorMap alias = tensors;
    alias["encoder.embed_tokens.weight"] = alias["shared.weight"];
    alias.erase("shared.weight");
    fs::create_directories(dir / "alias");
    fs::copy_file(kGolden / "text_encoder" / "config.json", dir / "alias" / "config.json");
    st::sdk::save_safetensors(dir / "alias" / "model.safetensors", alias);
    EXPECT_NO_THROW(load_umt5_encoder(dir / "alias"));

    // Not a UMT5 file, no config.json, a pickle, a missing path.
    st::sdk::save_safetensors(dir / "other.safetensors", {{"conv.weight", at::zeros({2, 2})}});
    EXPECT_NE(error_text([&] { load_umt5_encoder(dir / "other.safetensors"); }).find("not a UMT5"),
              std::string::npos);
    fs::create_directories(dir / "noconfig");
    fs::copy_file(kGolden / "text_encoder" / "model.safetensors", dir / "noconfig" / "model.safetensors");
    EXPECT_NE(error_text([&] { load_umt5_encoder(dir / "noconfig"); }).find("config.json"),
              std::string::npos);
    std::ofstream(dir / "enc.pth") << "not really";
    EXPECT_NE(error_text([&] { load_umt5_encoder(dir / "enc.pth"); }).find("safetensors only"),
              std::string::npos);
    EXPECT_NE(error_text([&] { load_umt5_encoder(dir / "absent"); }).find("does not exist"),
              std::string::npos);
}
