// Wav2Vec2 audio encoder of S2V: parity of every hidden state and of the video-rate features with the
// float64 reference (tests/golden/wav2vec2, scripts/golden/wav2vec2_reference.py), the three checkpoint
// layouts, strict-loading errors, the random ForCTC writer, config parsing, the upstream video-rate
// alignment edge cases and the waveform normalisation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/wav2vec2.h"
#include "golden_compare.h"
#include "st/error.h"
#include "st/safetensors.h"
#include "st/weights.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::plugins::wan_s2v;
using st::plugins::wan::test::close_to;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "wav2vec2";
const fs::path kModelDir = kGolden / "audio_encoder";  // ForCTC folder, as in the S2V repos
// float32 C++ vs the float64 reference: observed max |diff| ~1e-6 on O(1) values (see the printed
// numbers); the bound leaves room for other BLAS/conv kernels without hiding a wrong formula (a
// wrong eps, a missing bias or a transposed head split moves values by > 1e-2).
constexpr double kAtol = 5e-5;
constexpr double kRtol = 5e-5;

at::Tensor golden(const std::string& file, const std::string& name) {
    return st::sdk::SafetensorsFile::open(kGolden / file)->load(name);
}

using st::plugins::wan::test::load_all;

fs::path temp_dir(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("wav2vec2", name);
}
const auto* const kTempCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("wav2vec2"));

using st::plugins::wan::test::error_text;

// A checkpoint folder: the golden config.json plus `tensors` as model.safetensors.
fs::path make_variant(const std::string& name, const st::sdk::TensorMap& tensors) {
    const fs::path dir = temp_dir(name);
    fs::copy_file(kModelDir / "config.json", dir / "config.json");
    st::sdk::save_safetensors(dir / "model.safetensors", tensors);
    return dir;
}

std::vector<at::Tensor> forward_one(Wav2Vec2Model& model, const at::Tensor& wave) {
    at::NoGradGuard guard;
    return model->forward(wave.unsqueeze(0));
}

// The JSON metadata of outputs.safetensors: {"align_cases": [{wave, fps, frames, out_frames}]}.
nlohmann::json align_cases() {
    const auto meta = st::sdk::SafetensorsFile::open(kGolden / "outputs.safetensors")->metadata();
    return nlohmann::json::parse(meta.at("case")).at("align_cases");
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Parity with the float64 reference

TEST(Wav2Vec2Test, NormalizationMatchesReference) {
    for (const std::string wave : {"wave_a", "wave_b"}) {
        const at::Tensor raw = golden("inputs.safetensors", wave);
        EXPECT_TRUE(close_to(normalize_waveform(raw), golden("outputs.safetensors", wave + ".normalized"),
                             wave + ".normalized", 1e-6, 1e-6));
    }
}

TEST(Wav2Vec2Test, EveryHiddenStateMatchesReference) {
    Wav2Vec2Model model = load_wav2vec2(kModelDir);
    ASSERT_EQ(model->config(), Wav2Vec2Config::tiny());
    for (const std::string wave : {"wave_a", "wave_b"}) {
        const at::Tensor input = golden("outputs.safetensors", wave + ".normalized");
        const auto states = forward_one(model, input);
        ASSERT_EQ(static_cast<int64_t>(states.size()), model->config().num_hidden_states());
        for (size_t i = 0; i < states.size(); ++i) {
            const std::string key = wave + ".hidden_states." + std::to_string(i);
            EXPECT_TRUE(close_to(states[i][0], golden("outputs.safetensors", key), key, kAtol, kRtol));
        }
        EXPECT_EQ(states[0].size(1), model->config().num_frames(input.size(0)));
    }
}

TEST(Wav2Vec2Test, EncoderFromRawWaveformMatchesReferenceAtVideoRate) {
    Wav2Vec2AudioEncoder encoder = Wav2Vec2AudioEncoder::load(kModelDir);
    const auto cases = align_cases();
    ASSERT_EQ(cases.size(), 3u);
    for (const auto& c : cases) {
        const std::string wave = c.at("wave");
        const double fps = c.at("fps");
        const int64_t frames = c.at("frames"), out_frames = c.at("out_frames");
        const std::string key = wave + ".video_rate.fps" + std::to_string(static_cast<int>(fps));
        const at::Tensor expected = golden("outputs.safetensors", key);
        const at::Tensor raw = golden("inputs.safetensors", wave);
        // Through the encoder (normalise + model + align) ...
        const at::Tensor got = encoder.encode(raw, fps, frames, out_frames);
        EXPECT_TRUE(close_to(got, expected, key, kAtol, kRtol));
        // ... and the alignment alone on the reference's own hidden states (isolates the rounding).
        std::vector<at::Tensor> ref_states;
        for (int64_t i = 0; i < encoder.config().num_hidden_states(); ++i)
            ref_states.push_back(golden("outputs.safetensors", wave + ".hidden_states." + std::to_string(i)));
        EXPECT_TRUE(close_to(features_at_video_rate(ref_states, fps, frames, out_frames), expected,
                             key + " (align only)", 1e-6, 1e-6));
    }
    // The fps-25 case runs past the audio: its last frames are exact zeros, as upstream.
    const at::Tensor fps25 = golden("outputs.safetensors", "wave_a.video_rate.fps25");
    EXPECT_EQ(fps25.select(2, 16).abs().max().item<double>(), 0.0);
    EXPECT_GT(fps25.select(2, 14).abs().max().item<double>(), 0.1);
}

TEST(Wav2Vec2Test, BatchedForwardEqualsSingleUtterances) {
    Wav2Vec2Model model = load_wav2vec2(kModelDir);
    const at::Tensor a = golden("outputs.safetensors", "wave_a.normalized");
    const at::Tensor b = normalize_waveform(a.flip(0) * 0.5 + 0.1);
    at::NoGradGuard guard;
    const auto batched = model->forward(at::stack({a, b}));
    const auto single_a = model->forward(a.unsqueeze(0));
    const auto single_b = model->forward(b.unsqueeze(0));
    for (size_t i = 0; i < batched.size(); ++i) {
        EXPECT_TRUE(
            close_to(batched[i][0], single_a[i][0], "batch row 0 state " + std::to_string(i), 1e-5, 1e-5));
        EXPECT_TRUE(
            close_to(batched[i][1], single_b[i][0], "batch row 1 state " + std::to_string(i), 1e-5, 1e-5));
    }
}

TEST(Wav2Vec2Test, DeterministicAndNoGrad) {
    Wav2Vec2AudioEncoder encoder = Wav2Vec2AudioEncoder::load(kModelDir);
    const at::Tensor raw = golden("inputs.safetensors", "wave_b");
    const at::Tensor x = encoder.encode(raw, 16, 9, 12);
    const at::Tensor y = encoder.encode(raw, 16, 9, 12);
    EXPECT_TRUE(at::equal(x, y));
    EXPECT_FALSE(x.requires_grad());
    EXPECT_FALSE(x.is_inference());  // usable as an input of a trained module
    EXPECT_EQ(x.scalar_type(), at::kFloat);
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 32, 12}));
}

// ------------------------------------------------------------------------------------------------
// Layouts and strict loading

TEST(Wav2Vec2Test, LoadsForCtcBareAndParametrizationLayouts) {
    const st::sdk::TensorMap ctc = load_all(kModelDir / "model.safetensors");
    st::sdk::TensorMap bare, parametrized;
    for (const auto& [name, t] : ctc) {
        if (name.rfind("lm_head.", 0) == 0) continue;
        const std::string stripped = name.substr(std::string("wav2vec2.").size());
        bare.emplace(stripped, t);
        std::string p = name;
        for (const auto& [from, to] :
             {std::pair<std::string, std::string>{"conv.weight_g", "conv.parametrizations.weight.original0"},
              {"conv.weight_v", "conv.parametrizations.weight.original1"}})
            if (p.size() >= from.size() && p.compare(p.size() - from.size(), from.size(), from) == 0)
                p = p.substr(0, p.size() - from.size()) + to;
        parametrized.emplace(p, t);
    }
    parametrized.emplace("lm_head.weight", ctc.at("lm_head.weight"));
    parametrized.erase("wav2vec2.masked_spec_embed");  // optional: absent when SpecAugment is off

    auto src_ctc = st::sdk::open_tensor_source(kModelDir);
    const Wav2Vec2Layout l_ctc = detect_wav2vec2_layout(*src_ctc);
    EXPECT_TRUE(l_ctc.ctc_prefix);
    EXPECT_FALSE(l_ctc.parametrized_weight_norm);
    EXPECT_EQ(l_ctc.ignored_tensors, 2);

    const fs::path bare_dir = make_variant("bare", bare);
    const fs::path par_dir = make_variant("parametrized", parametrized);
    const Wav2Vec2Layout l_bare = detect_wav2vec2_layout(*st::sdk::open_tensor_source(bare_dir));
    EXPECT_FALSE(l_bare.ctc_prefix);
    EXPECT_EQ(l_bare.ignored_tensors, 0);
    const Wav2Vec2Layout l_par = detect_wav2vec2_layout(*st::sdk::open_tensor_source(par_dir));
    EXPECT_TRUE(l_par.ctc_prefix);
    EXPECT_TRUE(l_par.parametrized_weight_norm);
    EXPECT_NE(l_par.describe().find("parametrizations"), std::string::npos);

    Wav2Vec2Model reference = load_wav2vec2(kModelDir);
    const auto expected = st::sdk::named_tensors(*reference);
    // Folder, and a single .safetensors file with config.json next to it.
    for (const fs::path& path :
         {bare_dir, par_dir, par_dir / "model.safetensors", kModelDir / "model.safetensors"}) {
        Wav2Vec2Model model = load_wav2vec2(path);
        for (const auto& [name, t] : st::sdk::named_tensors(*model)) {
            if (name == "masked_spec_embed") continue;
            EXPECT_TRUE(at::equal(t, expected.at(name))) << name << " from " << path;
        }
    }
    const at::Tensor g =
        parametrized.at("wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0");
    EXPECT_TRUE(at::equal(load_wav2vec2(par_dir)->encoder->pos_conv_embed->conv->weight_g, g));
    EXPECT_EQ(
        wav2vec2_canonical_key("wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
        std::optional<std::string>("encoder.pos_conv_embed.conv.weight_v"));
    EXPECT_EQ(wav2vec2_canonical_key("lm_head.bias"), std::nullopt);
}

TEST(Wav2Vec2Test, StrictLoadingNamesTheOffender) {
    const st::sdk::TensorMap ctc = load_all(kModelDir / "model.safetensors");
    {
        st::sdk::TensorMap t = ctc;
        t.erase("wav2vec2.encoder.layers.1.attention.k_proj.bias");
        const fs::path dir = make_variant("missing", t);
        const std::string msg = error_text([&] { load_wav2vec2(dir); });
        EXPECT_NE(msg.find("encoder.layers.1.attention.k_proj.bias"), std::string::npos) << msg;
        EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
        EXPECT_NE(msg.find((dir / "model.safetensors").string()), std::string::npos) << msg;
    }
    {
        st::sdk::TensorMap t = ctc;
        t["wav2vec2.feature_projection.projection.weight"] = at::zeros({32, 15});
        const fs::path dir = make_variant("shape", t);
        const std::string msg = error_text([&] { load_wav2vec2(dir); });
        EXPECT_NE(msg.find("feature_projection.projection.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("15"), std::string::npos) << msg;
        EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    }
    {
        st::sdk::TensorMap t = ctc;
        t.emplace("wav2vec2.encoder.layers.2.layer_norm.weight", at::ones({32}));
        t.emplace("encoder.layer_norm.weight", at::ones({32}));  // unprefixed name in a CTC file
        const fs::path dir = make_variant("unexpected", t);
        const std::string msg = error_text([&] { load_wav2vec2(dir); });
        EXPECT_NE(msg.find("encoder.layers.2.layer_norm.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
    }
    {
        const fs::path dir = temp_dir("not_wav2vec2");
        fs::copy_file(kModelDir / "config.json", dir / "config.json");
        st::sdk::save_safetensors(dir / "model.safetensors", {{"foo.weight", at::ones({2})}});
        const std::string msg = error_text([&] { load_wav2vec2(dir); });
        EXPECT_NE(msg.find("not a Wav2Vec2 checkpoint"), std::string::npos) << msg;
    }
}

TEST(Wav2Vec2Test, PickleOnlyCheckpointAsksForSafetensors) {
    const fs::path dir = temp_dir("bin_only");
    fs::copy_file(kModelDir / "config.json", dir / "config.json");
    std::ofstream(dir / "pytorch_model.bin") << "not really a pickle";
    for (const fs::path& p : {dir, dir / "pytorch_model.bin"}) {
        const std::string msg = error_text([&] { load_wav2vec2(p); });
        EXPECT_NE(msg.find("pytorch_model.bin"), std::string::npos) << msg;
        EXPECT_NE(msg.find("safetensors"), std::string::npos) << msg;
        EXPECT_NE(msg.find("Convert it"), std::string::npos) << msg;
    }
}

TEST(Wav2Vec2Test, MissingConfigIsAnError) {
    const fs::path dir = temp_dir("no_config");
    fs::copy_file(kModelDir / "model.safetensors", dir / "model.safetensors");
    const std::string msg = error_text([&] { load_wav2vec2(dir / "model.safetensors"); });
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
}

// ------------------------------------------------------------------------------------------------
// Config

TEST(Wav2Vec2Test, ConfigPresetsAndJsonRoundTrip) {
    const Wav2Vec2Config large = Wav2Vec2Config::large_xlsr();
    EXPECT_EQ(large.hop_length(), 320);
    EXPECT_EQ(large.receptive_field(), 400);
    EXPECT_EQ(large.num_frames(16000), 49);   // floor((16000 - 400) / 320) + 1
    EXPECT_EQ(large.num_frames(80000), 249);  // a 5 s clip: floor(79600 / 320) + 1
    EXPECT_EQ(large.num_frames(399), 0);
    EXPECT_EQ(large.num_hidden_states(), 25);
    EXPECT_EQ(Wav2Vec2Config::from_json(large.to_json()), large);
    const Wav2Vec2Config tiny = Wav2Vec2Config::tiny();
    EXPECT_EQ(tiny.hop_length(), 320);
    EXPECT_EQ(tiny.receptive_field(), 325);
    EXPECT_EQ(Wav2Vec2Config::from_json(tiny.to_json()), tiny);
    EXPECT_EQ(Wav2Vec2Config::from_file(kModelDir / "config.json"), tiny);

    // jonatasgrosman/wav2vec2-large-xlsr-53-english/config.json (the S2V audio encoder), abridged to
    // the keys that matter plus a few it ignores.
    const auto real = nlohmann::json::parse(R"({
      "activation_dropout": 0.05, "apply_spec_augment": true, "architectures": ["Wav2Vec2ForCTC"],
      "attention_dropout": 0.1, "bos_token_id": 1, "conv_bias": true,
      "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
      "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "mean", "ctc_zero_infinity": true,
      "do_stable_layer_norm": true, "eos_token_id": 2, "feat_extract_activation": "gelu",
      "feat_extract_dropout": 0.0, "feat_extract_norm": "layer", "feat_proj_dropout": 0.05,
      "final_dropout": 0.0, "gradient_checkpointing": true, "hidden_act": "gelu", "hidden_dropout": 0.05,
      "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
      "layerdrop": 0.05, "mask_time_prob": 0.05, "model_type": "wav2vec2", "num_attention_heads": 16,
      "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
      "num_hidden_layers": 24, "pad_token_id": 0, "transformers_version": "4.7.0.dev0", "vocab_size": 33})");
    EXPECT_EQ(Wav2Vec2Config::from_json(real), large);
}

TEST(Wav2Vec2Test, ConfigRejectsUnsupportedVariants) {
    auto with = [](const std::string& key, const nlohmann::json& value) {
        nlohmann::json j = Wav2Vec2Config::tiny().to_json();
        j[key] = value;
        return j;
    };
    std::string msg =
        error_text([&] { Wav2Vec2Config::from_json(with("feat_extract_norm", "group"), "cfg.json"); });
    EXPECT_NE(msg.find("feat_extract_norm 'group'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("do_stable_layer_norm", false)); });
    EXPECT_NE(msg.find("do_stable_layer_norm"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("hidden_act", "gelu_new")); });
    EXPECT_NE(msg.find("hidden_act 'gelu_new'"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("num_feat_extract_layers", 7)); });
    EXPECT_NE(msg.find("num_feat_extract_layers"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("conv_kernel", nlohmann::json::array({10, 4}))); });
    EXPECT_NE(msg.find("conv_kernel"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("num_attention_heads", 5)); });
    EXPECT_NE(msg.find("num_attention_heads"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("hidden_size", "big")); });
    EXPECT_NE(msg.find("hidden_size"), std::string::npos) << msg;
    msg = error_text([&] { Wav2Vec2Config::from_json(with("add_adapter", true)); });
    EXPECT_NE(msg.find("add_adapter"), std::string::npos) << msg;
    // A config without feat_extract_norm gets transformers' default "group" (a base model): rejected.
    nlohmann::json base = Wav2Vec2Config::tiny().to_json();
    base.erase("feat_extract_norm");
    msg = error_text([&] { Wav2Vec2Config::from_json(base); });
    EXPECT_NE(msg.find("'group'"), std::string::npos) << msg;

    // The same check through a checkpoint folder.
    const fs::path dir = temp_dir("group_norm");
    fs::copy_file(kModelDir / "model.safetensors", dir / "model.safetensors");
    std::ofstream(dir / "config.json") << with("feat_extract_norm", "group").dump();
    msg = error_text([&] { load_wav2vec2(dir); });
    EXPECT_NE(msg.find("feat_extract_norm 'group'"), std::string::npos) << msg;
    EXPECT_NE(msg.find((dir / "config.json").string()), std::string::npos) << msg;
}

// ------------------------------------------------------------------------------------------------
// Writer

TEST(Wav2Vec2Test, WriteRandomRoundTrip) {
    const Wav2Vec2Config cfg = Wav2Vec2Config::tiny();
    const fs::path a = temp_dir("write_a"), b = temp_dir("write_b"), c = temp_dir("write_c");
    write_wav2vec2(cfg, a, 7);
    write_wav2vec2(cfg, b, 7);
    write_wav2vec2(cfg, c, 8);
    EXPECT_TRUE(fs::exists(a / "config.json") && fs::exists(a / "preprocessor_config.json"));
    EXPECT_EQ(Wav2Vec2Config::from_file(a / "config.json"), cfg);

    const st::sdk::TensorMap ta = load_all(a / "model.safetensors");
    const st::sdk::TensorMap tb = load_all(b / "model.safetensors");
    const st::sdk::TensorMap tc = load_all(c / "model.safetensors");
    // The same names as the reference's ForCTC file (the real checkpoint layout).
    std::vector<std::string> names, golden_names;
    for (const auto& [n, t] : ta) names.push_back(n);
    for (const auto& [n, t] : load_all(kModelDir / "model.safetensors")) golden_names.push_back(n);
    EXPECT_EQ(names, golden_names);
    bool any_diff = false;
    for (const auto& [n, t] : ta) {
        EXPECT_EQ(t.scalar_type(), at::kFloat) << n;
        EXPECT_TRUE(at::equal(t, tb.at(n))) << n;
        any_diff = any_diff || !at::equal(t, tc.at(n));
    }
    EXPECT_TRUE(any_diff);

    Wav2Vec2Model model = load_wav2vec2(a);
    for (const auto& [name, t] : st::sdk::named_tensors(*model))
        EXPECT_TRUE(at::equal(t, ta.at("wav2vec2." + name))) << name;
    // O(1)-effective weights: the effective positional-conv weight has ~1/sqrt(fan_in) entries.
    const at::Tensor w = model->encoder->pos_conv_embed->conv->weight();
    const double fan_in = static_cast<double>(cfg.hidden_size / cfg.num_conv_pos_embedding_groups *
                                              cfg.num_conv_pos_embeddings);
    EXPECT_NEAR(w.pow(2).mean().sqrt().item<double>() * std::sqrt(fan_in), 1.0, 0.3);
    Wav2Vec2AudioEncoder encoder(model);
    const at::Tensor feats = encoder.encode(golden("inputs.safetensors", "wave_b"), 16, 9, 12);
    EXPECT_TRUE(feats.isfinite().all().item<bool>());
    EXPECT_GT(feats.std().item<double>(), 0.1);
}

// ------------------------------------------------------------------------------------------------
// Video-rate alignment

TEST(Wav2Vec2Test, VideoRateLengthTruncatesLikeUpstream) {
    EXPECT_EQ(video_rate_length(31), 18);    // 18.6
    EXPECT_EQ(video_rate_length(40), 24);    // exact
    EXPECT_EQ(video_rate_length(249), 149);  // 149.4
    EXPECT_EQ(video_rate_length(250), 150);
    EXPECT_EQ(video_rate_length(1), 0);
    EXPECT_EQ(video_rate_length(2), 1);
}

TEST(Wav2Vec2Test, VideoFrameIndicesRoundHalfToEven) {
    // 16 fps: i * 1.875; i = 4 -> 7.5 -> 8, i = 12 -> 22.5 -> 22 (numpy round: ties to even).
    EXPECT_EQ(video_frame_indices(100, 16, 13),
              (std::vector<int64_t>{0, 2, 4, 6, 8, 9, 11, 13, 15, 17, 19, 21, 22}));
    // 24 fps: i * 1.25; 2.5 -> 2, 7.5 -> 8.
    EXPECT_EQ(video_frame_indices(100, 24, 7), (std::vector<int64_t>{0, 1, 2, 4, 5, 6, 8}));
    // 25 fps: i * 1.2.
    EXPECT_EQ(video_frame_indices(100, 25, 11), (std::vector<int64_t>{0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12}));
    // 30 fps: identity.
    EXPECT_EQ(video_frame_indices(100, 30, 5), (std::vector<int64_t>{0, 1, 2, 3, 4}));
    // Beyond the 30 Hz length -> -1 (zeros upstream).
    EXPECT_EQ(video_frame_indices(10, 16, 8), (std::vector<int64_t>{0, 2, 4, 6, 8, 9, -1, -1}));
    // Non-integer fps goes through double rounding.
    EXPECT_EQ(video_frame_indices(100, 23.976, 4), (std::vector<int64_t>{0, 1, 3, 4}));
}

TEST(Wav2Vec2Test, FeaturesAtVideoRateEdgeCases) {
    // States linear in time: value(l, t, c) = t + 100 l + 1000 c, so 30 Hz interpolation is exact:
    // 30 Hz row j holds src(j) + 100 l + 1000 c with src(j) = j (T50 - 1) / (T30 - 1).
    const int64_t t50 = 31, channels = 3, layers = 2;
    std::vector<at::Tensor> states;
    for (int64_t l = 0; l < layers; ++l) {
        const at::Tensor t = at::arange(t50, at::kDouble).unsqueeze(1);
        const at::Tensor c = at::arange(channels, at::kDouble).unsqueeze(0);
        states.push_back((t + 100.0 * l + 1000.0 * c).to(at::kFloat).unsqueeze(0));  // [1, T, C]
    }
    const int64_t t30 = video_rate_length(t50);  // 18
    auto expected_value = [&](int64_t j, int64_t l, int64_t c) {
        return static_cast<double>(j) * (t50 - 1) / (t30 - 1) + 100.0 * l + 1000.0 * c;
    };
    for (const double fps : {16.0, 24.0, 25.0, 30.0}) {
        const int64_t frames = 17, out_frames = 20;  // 17 video frames, 20 = 4 * T_latent(5)
        const at::Tensor out = features_at_video_rate(states, fps, frames, out_frames);
        ASSERT_EQ(out.sizes(), (std::vector<int64_t>{layers, channels, out_frames}));
        const auto idx = video_frame_indices(t30, fps, frames);
        for (int64_t i = 0; i < out_frames; ++i) {
            const int64_t j = idx[static_cast<size_t>(std::min(i, frames - 1))];
            for (int64_t l = 0; l < layers; ++l)
                for (int64_t c = 0; c < channels; ++c) {
                    const double want = j < 0 ? 0.0 : expected_value(j, l, c);
                    EXPECT_NEAR(out[l][c][i].item<double>(), want, 1e-3)
                        << "fps " << fps << " frame " << i << " layer " << l << " channel " << c;
                }
        }
        // Frames past `frames` repeat the last video frame.
        EXPECT_TRUE(at::equal(out.select(2, out_frames - 1), out.select(2, frames - 1)));
    }
    // 30 fps, 17 frames over 18 available rows: all inside the audio; 25 fps runs past it (16 * 1.2).
    EXPECT_GT(features_at_video_rate(states, 30, 17, 20).select(2, 16).abs().min().item<double>(), 0.0);
    EXPECT_EQ(features_at_video_rate(states, 25, 17, 20).select(2, 16).abs().max().item<double>(), 0.0);
    // Frames entirely beyond a short clip: zeros.
    const at::Tensor far = features_at_video_rate(states, 16, 40, 43);
    EXPECT_EQ(far.narrow(2, 20, 23).abs().max().item<double>(), 0.0);
    // [T, C] states (no batch dim) give the same result.
    std::vector<at::Tensor> unbatched;
    for (const auto& s : states) unbatched.push_back(s[0]);
    EXPECT_TRUE(
        at::equal(features_at_video_rate(unbatched, 16, 9, 12), features_at_video_rate(states, 16, 9, 12)));
    // out_frames == frames: no padding.
    EXPECT_EQ(features_at_video_rate(states, 16, 9, 9).size(2), 9);

    EXPECT_NE(error_text([&] { features_at_video_rate(states, 16, 9, 8); }).find("out_frames"),
              std::string::npos);
    EXPECT_NE(error_text([&] { features_at_video_rate(states, 16, 0, 3); }).find("frames"),
              std::string::npos);
    EXPECT_NE(error_text([&] { features_at_video_rate(states, 0, 9, 12); }).find("fps"), std::string::npos);
    const std::vector<at::Tensor> one_frame{at::ones({1, 1, channels})};
    EXPECT_NE(error_text([&] { features_at_video_rate(one_frame, 16, 1, 4); }).find("1/30 s"),
              std::string::npos);
    const std::vector<at::Tensor> mismatched{at::ones({5, channels}), at::ones({6, channels})};
    EXPECT_NE(error_text([&] { features_at_video_rate(mismatched, 16, 1, 4); }).find("hidden state 1"),
              std::string::npos);
    const std::vector<at::Tensor> batch2{at::ones({2, 5, channels})};
    EXPECT_NE(error_text([&] { features_at_video_rate(batch2, 16, 1, 4); }).find("batch size 2"),
              std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Normalisation and encoder input checks

TEST(Wav2Vec2Test, NormalizeIsZeroMeanUnitPopulationVariance) {
    // [0, 2]: mean 1, population variance 1 (the unbiased one would be 2).
    const at::Tensor two = normalize_waveform(at::tensor({0.0f, 2.0f}));
    EXPECT_NEAR(two[0].item<double>(), -1.0 / std::sqrt(1.0 + 1e-7), 1e-7);
    EXPECT_NEAR(two[1].item<double>(), 1.0 / std::sqrt(1.0 + 1e-7), 1e-7);
    // Constant input -> zeros (the 1e-7 floor avoids 0/0).
    EXPECT_EQ(normalize_waveform(at::full({100}, 0.25f)).abs().max().item<double>(), 0.0);
    // Rows of a batch are normalised independently.
    const at::Tensor x = at::randn({2, 1000}) * at::tensor({3.0f, 0.1f}).unsqueeze(1) + 5.0;
    const at::Tensor y = normalize_waveform(x);
    EXPECT_EQ(y.scalar_type(), at::kFloat);
    for (int64_t b = 0; b < 2; ++b) {
        EXPECT_NEAR(y[b].to(at::kDouble).mean().item<double>(), 0.0, 1e-6);
        const double v = x[b].to(at::kDouble).var(/*unbiased=*/false).item<double>();
        EXPECT_NEAR(y[b].to(at::kDouble).var(/*unbiased=*/false).item<double>(), v / (v + 1e-7), 1e-6);
        EXPECT_TRUE(close_to(y[b], normalize_waveform(x[b]), "row", 0, 0));
    }
}

TEST(Wav2Vec2Test, EncoderRejectsBadWaveforms) {
    Wav2Vec2AudioEncoder encoder = Wav2Vec2AudioEncoder::load(kModelDir);
    std::string msg = error_text([&] { encoder.hidden_states(at::zeros({324})); });
    EXPECT_NE(msg.find("receptive field of 325"), std::string::npos) << msg;
    msg = error_text([&] { encoder.hidden_states(at::zeros({2, 1000})); });
    EXPECT_NE(msg.find("[2, 1000]"), std::string::npos) << msg;
    // The shortest accepted input yields one frame per state.
    const auto states = encoder.hidden_states(at::randn({325}));
    EXPECT_EQ(states.back().sizes(), (std::vector<int64_t>{1, 1, 32}));
}
