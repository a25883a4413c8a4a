// CLIP vision encoder of Wan 2.1 I2V: parity of the preprocessing, every hidden state and the
// penultimate state with the float64 reference (tests/golden/clip_vision,
// scripts/golden/clip_vision_reference.py), the checkpoint layouts, strict-loading errors, pickle
// refusal, config and preprocessor parsing, the random writer and the ClipImageEncoder wrapper.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/clip_vision.h"
#include "golden_compare.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/safetensors.h"
#include "st/weights.h"
#include "test_scratch.h"

namespace fs = std::filesystem;
using namespace st::plugins::wan;
using st::plugins::wan::test::close_to;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "clip_vision";
const fs::path kModelDir = kGolden / "image_encoder";  // as in the Wan 2.1 I2V diffusers repo
const fs::path kProcessorJson = kGolden / "image_processor" / "preprocessor_config.json";
const std::vector<std::string> kImages{"landscape", "portrait", "small"};
// float32 C++ vs the float64 reference on O(1) values: observed max |diff| ~5e-6 (printed). A wrong
// eps, a missing bias, a transposed head split or a shifted crop moves values by > 1e-2.
constexpr double kAtol = 5e-5;
constexpr double kRtol = 5e-5;
// Normalised pixels reach ~2.1; the antialiased resize in float32 is good to ~1e-6.
constexpr double kPixelTol = 1e-5;

at::Tensor golden(const std::string& file, const std::string& name) {
    return st::sdk::SafetensorsFile::open(kGolden / file)->load(name);
}

using st::plugins::wan::test::load_all;

fs::path temp_dir(const std::string& name) {
    return st::plugins::wan::test::scratch_dir("clip_vision", name);
}
const auto* const kTempCleanup =
    ::testing::AddGlobalTestEnvironment(new st::plugins::wan::test::ScratchCleanup("clip_vision"));

using st::plugins::wan::test::error_text;

// A checkpoint folder: the golden config.json (or `config`) plus `tensors` as model.safetensors.
fs::path make_variant(const std::string& name, const st::sdk::TensorMap& tensors,
                      const std::optional<nlohmann::json>& config = std::nullopt) {
    const fs::path dir = temp_dir(name);
    if (config)
        std::ofstream(dir / "config.json") << config->dump(2);
    else
        fs::copy_file(kModelDir / "config.json", dir / "config.json");
    st::sdk::save_safetensors(dir / "model.safetensors", tensors);
    return dir;
}

nlohmann::json golden_config_with(const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = st::sdk::read_json_file(kModelDir / "config.json", "test");
    j[key] = value;
    return j;
}

std::vector<at::Tensor> hidden_states(ClipVisionModel& model, const at::Tensor& pixel_values) {
    at::NoGradGuard guard;
    return model->forward_hidden_states(pixel_values);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Parity with the float64 reference

TEST(ClipVisionTest, PreprocessingMatchesReference) {
    const ClipImageProcessorConfig processor = ClipImageProcessorConfig::from_file(kProcessorJson);
    for (const std::string& name : kImages) {
        const at::Tensor got = clip_preprocess(golden("inputs.safetensors", name), processor);
        EXPECT_EQ(got.scalar_type(), at::kFloat);
        EXPECT_TRUE(close_to(got, golden("outputs.safetensors", name + ".pixel_values"),
                             name + ".pixel_values", kPixelTol, kPixelTol));
    }
}

TEST(ClipVisionTest, EveryHiddenStateMatchesReference) {
    ClipVisionModel model = load_clip_vision(kModelDir);
    ASSERT_EQ(model->config(), ClipVisionConfig::tiny());
    const auto states = hidden_states(model, golden("outputs.safetensors", "landscape.pixel_values"));
    ASSERT_EQ(static_cast<int64_t>(states.size()), model->config().num_hidden_states());
    for (size_t i = 0; i < states.size(); ++i) {
        const std::string key = "landscape.hidden_states." + std::to_string(i);
        EXPECT_EQ(states[i].sizes(), (std::vector<int64_t>{2, 17, 32})) << key;
        EXPECT_TRUE(close_to(states[i], golden("outputs.safetensors", key), key, kAtol, kRtol));
    }
}

TEST(ClipVisionTest, DoubleModelMatchesReferenceToFloat32Rounding) {
    // In float64 the port and the reference compute the same formulas: only the float32 storage of
    // the golden remains (~3e-7 relative), so any formula difference would show here.
    ClipVisionModel model = load_clip_vision(kModelDir, at::kDouble);
    const auto states = hidden_states(model, golden("outputs.safetensors", "landscape.pixel_values"));
    for (size_t i = 0; i < states.size(); ++i) {
        const std::string key = "landscape.hidden_states." + std::to_string(i);
        EXPECT_EQ(states[i].scalar_type(), at::kDouble);
        EXPECT_TRUE(close_to(states[i], golden("outputs.safetensors", key), key + " (float64)", 1e-6, 1e-6));
    }
}

TEST(ClipVisionTest, PenultimateMatchesReferenceWithoutTheLastLayer) {
    ClipVisionModel model = load_clip_vision(kModelDir);
    at::NoGradGuard guard;
    for (const std::string& name : kImages) {
        const at::Tensor pixel_values = golden("outputs.safetensors", name + ".pixel_values");
        const at::Tensor got = model->penultimate(pixel_values);
        EXPECT_TRUE(close_to(got, golden("outputs.safetensors", name + ".penultimate"), name + ".penultimate",
                             kAtol, kRtol));
        EXPECT_TRUE(at::equal(got, model->forward_hidden_states(pixel_values).end()[-2])) << name;
    }
    // The last layer (and post_layernorm) never reach the penultimate state.
    const at::Tensor x = golden("outputs.safetensors", "landscape.pixel_values");
    const at::Tensor before = model->penultimate(x);
    for (auto& p : model->encoder->layers[2]->parameters()) p.fill_(3.0);
    for (auto& p : model->post_layernorm->parameters()) p.fill_(3.0);
    EXPECT_TRUE(at::equal(model->penultimate(x), before));
    EXPECT_FALSE(at::equal(model->forward_hidden_states(x).back(),
                           golden("outputs.safetensors", "landscape.hidden_states.3")));
}

TEST(ClipVisionTest, QuickGeluMatchesReferenceAndDiffersFromGelu) {
    // Mutation check: the activation is really applied; quick_gelu (OpenAI CLIPs) has its own golden.
    const fs::path dir = make_variant("quick_gelu", load_all(kModelDir / "model.safetensors"),
                                      golden_config_with("hidden_act", "quick_gelu"));
    ClipVisionModel quick = load_clip_vision(dir);
    EXPECT_EQ(quick->config().hidden_act, "quick_gelu");
    at::NoGradGuard guard;
    const at::Tensor x = golden("outputs.safetensors", "landscape.pixel_values");
    const at::Tensor got = quick->penultimate(x);
    const at::Tensor expected = golden("outputs.safetensors", "landscape.penultimate.quick_gelu");
    EXPECT_TRUE(close_to(got, expected, "landscape.penultimate.quick_gelu", kAtol, kRtol));
    const at::Tensor gelu = golden("outputs.safetensors", "landscape.penultimate");
    EXPECT_GT((got - gelu).abs().max().item<double>(), 1e-2);
}

TEST(ClipVisionTest, ImageEncoderFromImagesMatchesReference) {
    ClipImageEncoder encoder = ClipImageEncoder::load(kModelDir);
    EXPECT_EQ(encoder.processor(), ClipImageProcessorConfig::from_file(kProcessorJson));
    for (const std::string& name : kImages) {
        const at::Tensor out = encoder.encode(golden("inputs.safetensors", name));
        // Preprocessing error (~1e-6) passes through the model: a slightly wider bound.
        EXPECT_TRUE(close_to(out, golden("outputs.safetensors", name + ".penultimate"),
                             name + " (end to end)", 1e-4, 1e-4));
    }
    const at::Tensor out = encoder.encode(golden("inputs.safetensors", "landscape"));
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 17, 32}));
    EXPECT_EQ(out.scalar_type(), at::kFloat);
    EXPECT_FALSE(out.requires_grad());
    EXPECT_FALSE(out.is_inference());  // usable as an input of a trained module
    EXPECT_TRUE(at::equal(out, encoder.encode(golden("inputs.safetensors", "landscape"))));
    // The diffusers pipeline root and a trailing separator resolve to the same files.
    ClipImageEncoder from_root = ClipImageEncoder::load(kGolden);
    EXPECT_TRUE(at::equal(from_root.encode(golden("inputs.safetensors", "small")),
                          encoder.encode(golden("inputs.safetensors", "small"))));
    EXPECT_EQ(ClipImageEncoder::load(kModelDir.string() + "/").processor(), encoder.processor());
}

TEST(ClipVisionTest, BatchEqualsPerSampleRuns) {
    ClipImageEncoder encoder = ClipImageEncoder::load(kModelDir);
    const at::Tensor images = golden("inputs.safetensors", "landscape");
    const at::Tensor batched = encoder.encode(images);
    for (int64_t b = 0; b < images.size(0); ++b)
        EXPECT_TRUE(close_to(batched[b], encoder.encode(images.narrow(0, b, 1))[0],
                             "batch row " + std::to_string(b), 1e-5, 1e-5));
}

TEST(ClipVisionTest, Bfloat16EncoderStaysCloseToReference) {
    ClipImageEncoder encoder = ClipImageEncoder::load(kModelDir, at::kBFloat16);
    const at::Tensor out = encoder.encode(golden("inputs.safetensors", "portrait"));
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    const at::Tensor expected = golden("outputs.safetensors", "portrait.penultimate");
    // bf16 keeps 8 bits of mantissa: values up to ~6 carry ~0.03 of rounding per op.
    EXPECT_TRUE(close_to(out.to(at::kFloat), expected, "portrait.penultimate (bf16)", 0.25, 0.05));
}

// ------------------------------------------------------------------------------------------------
// Layouts and strict loading

TEST(ClipVisionTest, LoadsPrefixedBareAndFullClipLayouts) {
    const st::sdk::TensorMap with_projection = load_all(kModelDir / "model.safetensors");
    ASSERT_TRUE(with_projection.count("visual_projection.weight"));
    st::sdk::TensorMap bare, clip_model, old_transformers;
    for (const auto& [name, t] : with_projection) {
        if (name.rfind("vision_model.", 0) == 0) bare.emplace(name.substr(13), t);
        clip_model.emplace(name, t);
        old_transformers.emplace(name, t);
    }
    bare.emplace("embeddings.position_ids", at::arange(17).unsqueeze(0));
    old_transformers.emplace("vision_model.embeddings.position_ids", at::arange(17).unsqueeze(0));
    clip_model.emplace("text_model.embeddings.token_embedding.weight", at::zeros({10, 8}));
    clip_model.emplace("text_projection.weight", at::zeros({16, 8}));
    clip_model.emplace("logit_scale", at::zeros({}));
    nlohmann::json clip_config{{"model_type", "clip"},
                               {"projection_dim", 16},
                               {"text_config", {{"hidden_size", 8}}},
                               {"vision_config", ClipVisionConfig::tiny().to_json()}};
    clip_config["vision_config"].erase("model_type");

    const ClipVisionLayout golden_layout = detect_clip_vision_layout(*st::sdk::open_tensor_source(kModelDir));
    EXPECT_TRUE(golden_layout.vision_model_prefix);
    EXPECT_TRUE(golden_layout.has_projection);
    EXPECT_EQ(golden_layout.ignored_tensors, 1);
    const fs::path bare_dir = make_variant("bare", bare);
    const ClipVisionLayout bare_layout = detect_clip_vision_layout(*st::sdk::open_tensor_source(bare_dir));
    EXPECT_FALSE(bare_layout.vision_model_prefix);
    EXPECT_FALSE(bare_layout.has_projection);
    const fs::path clip_dir = make_variant("clip_model", clip_model, clip_config);
    EXPECT_EQ(detect_clip_vision_layout(*st::sdk::open_tensor_source(clip_dir)).ignored_tensors, 4);
    const fs::path old_dir = make_variant("old_transformers", old_transformers);

    ClipVisionModel reference = load_clip_vision(kModelDir);
    const auto expected = st::sdk::named_tensors(*reference);
    EXPECT_EQ(expected.size(), with_projection.size() - 1);  // named_parameters() == file keys
    for (const auto& [name, t] : expected) EXPECT_TRUE(at::equal(t, bare.at(name))) << name;
    for (const fs::path& path : {bare_dir, clip_dir, old_dir, kModelDir / "model.safetensors"}) {
        ClipVisionModel model = load_clip_vision(path);
        for (const auto& [name, t] : st::sdk::named_tensors(*model))
            EXPECT_TRUE(at::equal(t, expected.at(name))) << name << " from " << path;
    }
}

TEST(ClipVisionTest, StrictLoadingNamesTheOffender) {
    const st::sdk::TensorMap file = load_all(kModelDir / "model.safetensors");
    {
        st::sdk::TensorMap t = file;
        t.erase("vision_model.encoder.layers.1.self_attn.k_proj.bias");
        const fs::path dir = make_variant("missing", t);
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("encoder.layers.1.self_attn.k_proj.bias"), std::string::npos) << msg;
        EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
        EXPECT_NE(msg.find((dir / "model.safetensors").string()), std::string::npos) << msg;
    }
    {
        st::sdk::TensorMap t = file;
        t["vision_model.encoder.layers.0.mlp.fc1.weight"] = at::zeros({64, 31});
        const fs::path dir = make_variant("shape", t);
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("encoder.layers.0.mlp.fc1.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("expected [64, 32] got [64, 31]"), std::string::npos) << msg;
        EXPECT_NE(msg.find((dir / "model.safetensors").string()), std::string::npos) << msg;
    }
    {
        st::sdk::TensorMap t = file;
        t.emplace("vision_model.encoder.layers.3.layer_norm1.weight", at::ones({32}));
        const fs::path dir = make_variant("leftover", t);
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("vision_model.encoder.layers.3.layer_norm1.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
    }
    {
        // An unprefixed name in a prefixed file does not silently fill the target.
        st::sdk::TensorMap t = file;
        t.emplace("pre_layrnorm.bias", t.at("vision_model.pre_layrnorm.bias"));
        t.erase("vision_model.pre_layrnorm.bias");
        const fs::path dir = make_variant("mixed", t);
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
        EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
        EXPECT_NE(msg.find("pre_layrnorm.bias"), std::string::npos) << msg;
    }
    {
        st::sdk::TensorMap t = file;
        t["visual_projection.weight"] = at::zeros({8, 32});
        const fs::path dir = make_variant("projection", t);
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("visual_projection.weight has shape [8, 32], expected [16, 32]"),
                  std::string::npos)
            << msg;
        EXPECT_NE(msg.find((dir / "model.safetensors").string()), std::string::npos) << msg;
    }
    {
        const fs::path dir = make_variant("open_clip", {{"visual.conv1.weight", at::ones({2})}});
        const std::string msg = error_text([&] { load_clip_vision(dir); });
        EXPECT_NE(msg.find("not an HF CLIP vision checkpoint"), std::string::npos) << msg;
        EXPECT_NE(msg.find("open-clip"), std::string::npos) << msg;
    }
}

TEST(ClipVisionTest, PickleCheckpointsAreRefusedWithAHint) {
    const fs::path dir = temp_dir("pickle");
    fs::copy_file(kModelDir / "config.json", dir / "config.json");
    std::ofstream(dir / "pytorch_model.bin") << "not really a pickle";
    std::ofstream(dir / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth") << "nor this";
    for (const fs::path& p :
         {dir, dir / "pytorch_model.bin", dir / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"}) {
        const std::string msg = error_text([&] { load_clip_vision(p); });
        EXPECT_NE(msg.find("pickle"), std::string::npos) << msg;
        EXPECT_NE(msg.find("safetensors"), std::string::npos) << msg;
        EXPECT_NE(msg.find("image_encoder"), std::string::npos) << msg;
        EXPECT_NE(msg.find("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"), std::string::npos)
            << msg;
    }
    const fs::path no_config = temp_dir("no_config");
    fs::copy_file(kModelDir / "model.safetensors", no_config / "model.safetensors");
    EXPECT_NE(error_text([&] { load_clip_vision(no_config); }).find("config.json"), std::string::npos);
    EXPECT_NE(error_text([&] { load_clip_vision(no_config / "absent"); }).find("does not exist"),
              std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Config

TEST(ClipVisionTest, ConfigPresetsAndJson) {
    const ClipVisionConfig h14 = ClipVisionConfig::vit_h_14();
    EXPECT_EQ(h14.num_positions(), 257);
    EXPECT_EQ(h14.num_hidden_states(), 33);
    EXPECT_EQ(ClipVisionConfig::from_json(h14.to_json()), h14);
    EXPECT_EQ(ClipVisionConfig::tiny().num_positions(), 17);
    EXPECT_EQ(ClipVisionConfig::from_json(ClipVisionConfig::tiny().to_json()), ClipVisionConfig::tiny());
    // Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_encoder/config.json.
    const auto wan = nlohmann::json::parse(R"({
      "_name_or_path": "image_encoder", "architectures": ["CLIPVisionModelWithProjection"],
      "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 224,
      "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05,
      "model_type": "clip_vision_model", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 32,
      "patch_size": 14, "projection_dim": 1024, "torch_dtype": "float32", "transformers_version": "4.48.0"})");
    EXPECT_EQ(ClipVisionConfig::from_json(wan), h14);

    // A full CLIPConfig: the nested vision_config, absent keys at transformers' defaults.
    const auto clip = nlohmann::json::parse(R"({"model_type": "clip", "projection_dim": 768,
      "text_config": {"hidden_size": 768}, "vision_config": {"hidden_size": 1024, "intermediate_size": 4096,
      "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}})");
    const ClipVisionConfig vit_l = ClipVisionConfig::from_json(clip);
    EXPECT_EQ(vit_l.hidden_size, 1024);
    EXPECT_EQ(vit_l.num_hidden_layers, 24);
    EXPECT_EQ(vit_l.patch_size, 14);
    EXPECT_EQ(vit_l.image_size, 224);
    EXPECT_EQ(vit_l.hidden_act, "quick_gelu");
    EXPECT_EQ(vit_l.projection_dim, 768);
    const ClipVisionConfig b32 = ClipVisionConfig::from_json(nlohmann::json{{"model_type", "clip"}});
    EXPECT_EQ(b32.hidden_size, 768);
    EXPECT_EQ(b32.patch_size, 32);
    EXPECT_EQ(b32.num_positions(), 50);
}

TEST(ClipVisionTest, ConfigRejectsUnsupportedValues) {
    auto with = [](const std::string& key, const nlohmann::json& value) {
        nlohmann::json j = ClipVisionConfig::tiny().to_json();
        j[key] = value;
        return j;
    };
    std::string msg =
        error_text([&] { ClipVisionConfig::from_json(with("hidden_act", "gelu_new"), "cfg.json"); });
    EXPECT_NE(msg.find("hidden_act 'gelu_new'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    const nlohmann::json nested{{"model_type", "clip"}, {"vision_config", with("hidden_act", "relu")}};
    msg = error_text([&] { ClipVisionConfig::from_json(nested, "clip.json"); });
    EXPECT_NE(msg.find("hidden_act 'relu'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("clip.json (vision_config)"), std::string::npos) << msg;
    msg = error_text([&] { ClipVisionConfig::from_json(with("model_type", "siglip_vision_model")); });
    EXPECT_NE(msg.find("model_type 'siglip_vision_model'"), std::string::npos) << msg;
    msg = error_text([&] { ClipVisionConfig::from_json(with("num_attention_heads", 5)); });
    EXPECT_NE(msg.find("num_attention_heads"), std::string::npos) << msg;
    msg = error_text([&] { ClipVisionConfig::from_json(with("hidden_size", "big")); });
    EXPECT_NE(msg.find("hidden_size"), std::string::npos) << msg;
    msg = error_text([&] { ClipVisionConfig::from_json(with("patch_size", 64)); });
    EXPECT_NE(msg.find("patch_size"), std::string::npos) << msg;
    msg = error_text([&] {
        ClipVisionConfig::from_json(nlohmann::json{{"model_type", "clip"}, {"vision_config", 3}});
    });
    EXPECT_NE(msg.find("vision_config"), std::string::npos) << msg;

    // Through a checkpoint folder the error names the config file.
    const fs::path dir = make_variant("bad_act", load_all(kModelDir / "model.safetensors"),
                                      golden_config_with("hidden_act", "gelu_pytorch_tanh"));
    msg = error_text([&] { load_clip_vision(dir); });
    EXPECT_NE(msg.find("hidden_act 'gelu_pytorch_tanh'"), std::string::npos) << msg;
    EXPECT_NE(msg.find((dir / "config.json").string()), std::string::npos) << msg;
}

TEST(ClipVisionTest, ProcessorConfigParsing) {
    // Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_processor/preprocessor_config.json = the defaults.
    const auto wan = nlohmann::json::parse(R"({"crop_size": {"height": 224, "width": 224},
      "do_center_crop": true, "do_convert_rgb": true, "do_normalize": true, "do_rescale": true,
      "do_resize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
      "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
      "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}})");
    const ClipImageProcessorConfig defaults;
    EXPECT_EQ(ClipImageProcessorConfig::from_json(wan), defaults);
    EXPECT_EQ(ClipImageProcessorConfig::from_json(defaults.to_json()), defaults);
    EXPECT_EQ(ClipImageProcessorConfig::from_json(nlohmann::json::object()), defaults);
    // Old-style ints: size = shortest edge, crop_size = square.
    const auto ints = ClipImageProcessorConfig::from_json(nlohmann::json{{"size", 56}, {"crop_size", 48}});
    EXPECT_EQ(ints.size_shortest_edge, 56);
    EXPECT_EQ(ints.crop_height, 48);
    EXPECT_EQ(ints.crop_width, 48);
    EXPECT_EQ(ClipImageProcessorConfig::from_file(kProcessorJson),
              ClipImageProcessorConfig::for_image_size(56));
    const auto exact = ClipImageProcessorConfig::from_json(
        nlohmann::json{{"size", {{"height", 30}, {"width", 40}}}, {"do_center_crop", false}});
    EXPECT_EQ(exact.resized_size(70, 93), (std::vector<int64_t>{30, 40}));
    EXPECT_EQ(ClipImageProcessorConfig::from_json(exact.to_json()), exact);

    std::string msg = error_text([&] {
        ClipImageProcessorConfig::from_json(nlohmann::json{{"resample", 2}}, "p.json");
    });
    EXPECT_NE(msg.find("resample 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("p.json"), std::string::npos) << msg;
    msg = error_text([&] {
        ClipImageProcessorConfig::from_json(nlohmann::json{{"image_mean", {0.5, 0.5}}});
    });
    EXPECT_NE(msg.find("image_mean has 2 entries"), std::string::npos) << msg;
    msg = error_text([&] {
        ClipImageProcessorConfig::from_json(nlohmann::json{{"image_std", {0.5, 0.0, 0.5}}});
    });
    EXPECT_NE(msg.find("image_std"), std::string::npos) << msg;
    msg = error_text([&] {
        ClipImageProcessorConfig::from_json(nlohmann::json{{"size", {{"longest_edge", 9}}}});
    });
    EXPECT_NE(msg.find("'size'"), std::string::npos) << msg;
    msg = error_text([&] { ClipImageProcessorConfig::from_json(nlohmann::json{{"do_resize", "yes"}}); });
    EXPECT_NE(msg.find("do_resize"), std::string::npos) << msg;
}

// ------------------------------------------------------------------------------------------------
// Preprocessing details

TEST(ClipVisionTest, ResizeKeepsAspectAndTruncatesTheLongEdge) {
    const ClipImageProcessorConfig c;                                       // shortest edge 224
    EXPECT_EQ(c.resized_size(480, 832), (std::vector<int64_t>{224, 388}));  // 388.27
    EXPECT_EQ(c.resized_size(832, 480), (std::vector<int64_t>{388, 224}));
    EXPECT_EQ(c.resized_size(720, 1280), (std::vector<int64_t>{224, 398}));  // 398.2
    EXPECT_EQ(c.resized_size(300, 300), (std::vector<int64_t>{224, 224}));
    const auto tiny = ClipImageProcessorConfig::for_image_size(56);
    EXPECT_EQ(tiny.resized_size(70, 93), (std::vector<int64_t>{56, 74}));  // 74.4
    EXPECT_EQ(tiny.resized_size(100, 60), (std::vector<int64_t>{93, 56}));
}

TEST(ClipVisionTest, PreprocessWithoutResizeIsExactNormalisation) {
    // An image already at the crop size is not resampled: ((x + 1) / 2 - mean) / std exactly.
    const auto c = ClipImageProcessorConfig::for_image_size(56);
    const at::Tensor x = at::rand({1, 3, 56, 56}) * 2.0 - 1.0;
    const at::Tensor mean = at::tensor(c.image_mean, at::kDouble).view({1, 3, 1, 1});
    const at::Tensor std = at::tensor(c.image_std, at::kDouble).view({1, 3, 1, 1});
    const at::Tensor expected = ((x.to(at::kDouble) + 1.0) / 2.0 - mean) / std;
    EXPECT_TRUE(close_to(clip_preprocess(x, c), expected, "no-resize", 1e-6, 1e-6));
    // Saturated input stays within the normalised [0, 1] range after an upscale (the clamp).
    const at::Tensor edges = at::where(at::rand({1, 3, 20, 30}) > 0.5, at::ones({1}), -at::ones({1}));
    const at::Tensor up = clip_preprocess(edges, c);
    EXPECT_LE((up * std.to(at::kFloat) + mean.to(at::kFloat)).max().item<double>(), 1.0 + 1e-6);
    EXPECT_GE((up * std.to(at::kFloat) + mean.to(at::kFloat)).min().item<double>(), -1e-6);

    std::string msg = error_text([&] { clip_preprocess(at::zeros({3, 56, 56}), c); });
    EXPECT_NE(msg.find("[3, 56, 56]"), std::string::npos) << msg;
    ClipImageProcessorConfig no_resize = c;
    no_resize.do_resize = false;
    msg = error_text([&] { clip_preprocess(at::zeros({1, 3, 40, 80}), no_resize); });
    EXPECT_NE(msg.find("crop 56x56 is larger than the 40x80 image"), std::string::npos) << msg;
}

TEST(ClipVisionTest, WrongImageSizeAndMismatchedProcessorAreErrors) {
    ClipVisionModel model = load_clip_vision(kModelDir);
    const std::string msg = error_text([&] { model->penultimate(at::zeros({1, 3, 64, 64})); });
    EXPECT_NE(msg.find("[B, 3, 56, 56]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[1, 3, 64, 64]"), std::string::npos) << msg;
    EXPECT_NE(
        error_text([&] { ClipImageEncoder(model, ClipImageProcessorConfig{}); }).find("crop_size 224x224"),
        std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Writer

TEST(ClipVisionTest, SaveRandomRoundTrip) {
    const ClipVisionConfig cfg = ClipVisionConfig::tiny();
    const fs::path root = temp_dir("saved");
    const fs::path a = root / "image_encoder", b = temp_dir("saved_b"), c = temp_dir("saved_c");
    save_clip_vision(a, cfg, 7);
    save_clip_vision(b, cfg, 7);
    save_clip_vision(c, cfg, 8);
    save_clip_image_processor(root / "image_processor",
                              ClipImageProcessorConfig::for_image_size(cfg.image_size));
    EXPECT_EQ(ClipVisionConfig::from_file(a / "config.json"), cfg);

    const st::sdk::TensorMap ta = load_all(a / "model.safetensors");
    const st::sdk::TensorMap tb = load_all(b / "model.safetensors");
    const st::sdk::TensorMap tc = load_all(c / "model.safetensors");
    // Exactly the names and shapes of the reference's CLIPVisionModelWithProjection file.
    const st::sdk::TensorMap reference = load_all(kModelDir / "model.safetensors");
    ASSERT_EQ(ta.size(), reference.size());
    bool any_diff = false;
    for (const auto& [n, t] : ta) {
        ASSERT_TRUE(reference.count(n)) << n;
        EXPECT_EQ(t.sizes(), reference.at(n).sizes()) << n;
        EXPECT_EQ(t.scalar_type(), at::kFloat) << n;
        EXPECT_TRUE(at::equal(t, tb.at(n))) << n;
        any_diff = any_diff || !at::equal(t, tc.at(n));
    }
    EXPECT_TRUE(any_diff);

    ClipVisionModel model = load_clip_vision(a);
    for (const auto& [name, t] : st::sdk::named_tensors(*model))
        EXPECT_TRUE(at::equal(t, ta.at("vision_model." + name))) << name;
    ClipImageEncoder encoder = ClipImageEncoder::load(root);
    EXPECT_EQ(encoder.processor(), ClipImageProcessorConfig::from_file(kProcessorJson));
    const at::Tensor images = golden("inputs.safetensors", "landscape");
    const at::Tensor out = encoder.encode(images);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 17, 32}));
    EXPECT_TRUE(out.isfinite().all().item<bool>());
    EXPECT_GT(out.std().item<double>(), 0.1);
    // The same weights give the same outputs as a second load.
    EXPECT_TRUE(at::equal(out, ClipImageEncoder::load(a).encode(images)));
}
