// Wan 2.2 S2V transformer weights: config parsing and presets, the diffusers <-> original key table
// over the golden fixture, detection from weights, strict loading errors, save/load round trip.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/s2v_checkpoint.h"
#include "core/s2v_config.h"
#include "core/s2v_key_map.h"
#include "s2v_test_util.h"
#include "st/error.h"
#include "st/safetensors.h"

namespace st::plugins::wan_s2v {
namespace {

namespace fs = std::filesystem;
using test::golden;
using test::golden_case;
using test::run;

fs::path temp_dir(const std::string& name) {
    fs::path p = fs::temp_directory_path() / ("st_s2v_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p;
}

st::sdk::TensorMap read_all(const fs::path& file) {
    auto f = st::sdk::SafetensorsFile::open(file);
    st::sdk::TensorMap out;
    for (const auto& ti : f->infos()) out[ti.name] = f->load(ti.name);
    return out;
}

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

// ---- config -------------------------------------------------------------------------------------

TEST(WanS2VConfigTest, TinyPresetIsTheGoldenConfigAndRoundTripsThroughJson) {
    const auto from_file = WanS2VConfig::from_file(golden("wan_s2v/config.json"));
    EXPECT_EQ(from_file, WanS2VConfig::tiny());
    EXPECT_EQ(WanS2VConfig::from_json(WanS2VConfig::tiny().to_json()), WanS2VConfig::tiny());
    EXPECT_EQ(WanS2VConfig::from_json(WanS2VConfig::small().to_json()), WanS2VConfig::small());
    EXPECT_EQ(WanS2VConfig::tiny().to_json()["_class_name"], "WanS2VTransformer3DModel");
    EXPECT_EQ(WanS2VConfig::tiny().tensor_count(), 141);
    EXPECT_EQ(WanS2VConfig::s2v_14b().tensor_count(), 1260);  // models.md §5.1
    EXPECT_EQ(WanS2VConfig::preset("s2v-14b"), WanS2VConfig::s2v_14b());
    EXPECT_THROW(WanS2VConfig::preset("s2v-1b"), st::Error);
    const auto wc = WanS2VConfig::tiny().to_wan_config();
    EXPECT_EQ(wc.inner_dim(), 24);
    EXPECT_EQ(wc.num_layers, 3);
}

TEST(WanS2VConfigTest, UnknownKeysAndUnsupportedModesAreErrorsNamingThem) {
    auto j = WanS2VConfig::tiny().to_json();
    j["enable_motioner"] = true;
    EXPECT_NE(error_of([&] { WanS2VConfig::from_json(j, "x/config.json"); }).find("enable_motioner"),
              std::string::npos);
    j = WanS2VConfig::tiny().to_json();
    j["adain_mode"] = "attn_output";
    EXPECT_NE(error_of([&] { WanS2VConfig::from_json(j); }).find("attn_output"), std::string::npos);
    j = WanS2VConfig::tiny().to_json();
    j["audio_inject_layers"] = {0, 3};
    EXPECT_NE(error_of([&] { WanS2VConfig::from_json(j); }).find("audio_inject_layers entry 3"),
              std::string::npos);
    j = WanS2VConfig::tiny().to_json();
    j["num_layers"] = "3";
    EXPECT_NE(error_of([&] { WanS2VConfig::from_json(j); }).find("num_layers"), std::string::npos);
}

// ---- key map ------------------------------------------------------------------------------------

TEST(WanS2VKeyMapTest, DiffusersOriginalRoundTripOverAllGoldenKeys) {
    auto diffusers = st::sdk::SafetensorsFile::open(golden("wan_s2v/diffusion_pytorch_model.safetensors"));
    auto original = st::sdk::SafetensorsFile::open(golden("wan_s2v/original_format.safetensors"));
    std::set<std::string> mapped, expected;
    for (const auto& ti : original->infos()) expected.insert(ti.name);
    size_t n = 0;
    for (const auto& ti : diffusers->infos()) {
        auto o = s2v_diffusers_to_original(ti.name);
        ASSERT_TRUE(o) << ti.name;
        mapped.insert(*o);
        EXPECT_EQ(s2v_original_to_diffusers(*o), ti.name);
        EXPECT_EQ(original->info(*o).shape, ti.shape) << ti.name;
        ++n;
    }
    EXPECT_EQ(n, 141u);
    EXPECT_EQ(mapped, expected);
    EXPECT_EQ(
        s2v_diffusers_to_original("condition_embedder.causal_audio_encoder.encoder.conv2.conv.conv.weight"),
        "casual_audio_encoder.encoder.conv2.conv.weight");
    EXPECT_FALSE(s2v_original_to_diffusers("motioner.proj.weight"));
}

TEST(WanS2VKeyMapTest, LoraModuleNamesMapBothWays) {
    for (const auto& [ours, native] : std::vector<std::pair<std::string, std::string>>{
             {"blocks.3.attn1.to_out.0", "blocks.3.self_attn.o"},
             {"blocks.0.attn2.to_q", "blocks.0.cross_attn.q"},
             {"blocks.1.ffn.net.0.proj", "blocks.1.ffn.0"},
             {"audio_injector.injector.11.to_k", "audio_injector.injector.11.k"},
             {"audio_injector.injector.0.to_out.0", "audio_injector.injector.0.o"},
             {"audio_injector.injector_adain_layers.2.linear",
              "audio_injector.injector_adain_layers.2.linear"},
             {"condition_embedder.pose_embedder", "cond_encoder"},
             {"condition_embedder.time_proj", "time_projection.1"}}) {
        EXPECT_EQ(s2v_lora_module_to_native(ours), native);
        EXPECT_EQ(s2v_lora_module_to_diffusers(native), ours);
    }
    EXPECT_FALSE(s2v_lora_module_to_native("audio_injector.injector.0.to_x"));
}

// ---- model names / detection ----------------------------------------------------------------------

TEST(WanS2VWeightsTest, NamedParametersEqualTheDiffusersFileKeysAndShapes) {
    WanS2VTransformer3DModel model(WanS2VConfig::tiny());
    auto file = st::sdk::SafetensorsFile::open(golden("wan_s2v/diffusion_pytorch_model.safetensors"));
    std::map<std::string, std::vector<int64_t>> ours, theirs;
    for (const auto& item : model->named_parameters()) ours[item.key()] = item.value().sizes().vec();
    for (const auto& ti : file->infos()) theirs[ti.name] = ti.shape;
    EXPECT_EQ(ours, theirs);
}

TEST(WanS2VWeightsTest, DetectsTheConfigFromBothLayouts) {
    for (const char* f : {"diffusion_pytorch_model.safetensors", "original_format.safetensors"}) {
        auto src = st::sdk::SafetensorsFile::open(golden(std::string("wan_s2v/") + f));
        const auto info = inspect_s2v_transformer(*src, std::vector<int64_t>{0, 2});
        EXPECT_EQ(info.config, WanS2VConfig::tiny()) << f;
        EXPECT_EQ(info.variant, "s2v custom (dim 24, 3 layers)");
        // Without the injector positions a non-released size cannot be built.
        EXPECT_NE(error_of([&] { inspect_s2v_transformer(*src); }).find("audio_inject_layers"),
                  std::string::npos);
    }
    auto t2v = st::sdk::SafetensorsFile::open(golden("wan_t2v/diffusion_pytorch_model.safetensors"));
    EXPECT_NE(error_of([&] { inspect_s2v_transformer(*t2v); }).find("is not a Wan S2V transformer"),
              std::string::npos);
}

TEST(WanS2VWeightsTest, ComfyPrefixedBf16OriginalFileLoads) {
    const fs::path dir = temp_dir("comfy");
    st::sdk::TensorMap prefixed;
    for (auto& [k, v] : read_all(golden("wan_s2v/original_format.safetensors")))
        prefixed["model.diffusion_model." + k] = v.to(at::kBFloat16);
    st::sdk::save_safetensors(dir / "wan2.2_s2v_tiny_bf16.safetensors", prefixed);
    S2VLoadOptions o;
    o.config = WanS2VConfig::tiny();
    auto loaded = load_s2v_transformer(dir / "wan2.2_s2v_tiny_bf16.safetensors", o);
    EXPECT_EQ(loaded.info.prefix, "model.diffusion_model.");
    EXPECT_EQ(loaded.info.layout, KeyLayout::original);
    EXPECT_EQ(loaded.info.dtypes.at("BF16"), 141u);
    // Same weights rounded to bf16, loaded in fp32.
    auto reference = test::load_golden();
    const auto in = golden_case("out_train_no_motion");
    const at::Tensor a = run(loaded.model, in), b = run(reference.model, in);
    EXPECT_LT((a - b).abs().max().item<double>() / b.abs().max().item<double>(), 0.05);
    EXPECT_FALSE(at::equal(a, b));
    fs::remove_all(dir);
}

TEST(WanS2VWeightsTest, ReleasedInjectorLayoutIsRecoveredWithoutConfig) {
    // 40 blocks and 12 injectors (the S2V-14B counts) at tiny widths, original layout with the ComfyUI
    // prefix: the injector positions default to the released ones; the variant stays "custom".
    WanS2VConfig c = WanS2VConfig::tiny();
    c.num_layers = 40;
    c.audio_inject_layers = WanS2VConfig::s2v_14b().audio_inject_layers;
    auto model = make_random_s2v_transformer(c, 3);
    st::sdk::TensorMap original;
    for (const auto& item : model->named_parameters())
        original["model.diffusion_model." + s2v_diffusers_to_original(item.key()).value()] = item.value();
    const fs::path dir = temp_dir("released");
    st::sdk::save_safetensors(dir / "s2v.safetensors", original);
    auto src = st::sdk::SafetensorsFile::open(dir / "s2v.safetensors");
    const auto info = inspect_s2v_transformer(*src);
    EXPECT_EQ(info.config, c);
    EXPECT_EQ(info.layout, KeyLayout::original);
    EXPECT_EQ(info.variant, "s2v custom (dim 24, 40 layers)");
    EXPECT_EQ(info.tensor_count, static_cast<size_t>(c.tensor_count()));
    fs::remove_all(dir);
}

TEST(WanS2VWeightsTest, ShardedFolderAndLocationInspectionWork) {
    const fs::path dir = temp_dir("sharded");
    const auto all = read_all(golden("wan_s2v/diffusion_pytorch_model.safetensors"));
    st::sdk::TensorMap a, b;
    nlohmann::json index;
    for (const auto& [k, v] : all) {
        const bool first = k.rfind("blocks.", 0) == 0;
        (first ? a : b)[k] = v;
        index["weight_map"][k] = first ? "diffusion_pytorch_model-00001-of-00002.safetensors"
                                       : "diffusion_pytorch_model-00002-of-00002.safetensors";
    }
    index["metadata"]["total_size"] = 0;
    st::sdk::save_safetensors(dir / "diffusion_pytorch_model-00001-of-00002.safetensors", a);
    st::sdk::save_safetensors(dir / "diffusion_pytorch_model-00002-of-00002.safetensors", b);
    std::ofstream(dir / "diffusion_pytorch_model.safetensors.index.json") << index.dump();
    fs::copy_file(golden("wan_s2v/config.json"), dir / "config.json");
    const auto loc = locate_s2v_transformer(dir, "none");
    EXPECT_EQ(loc.weights.filename(), "diffusion_pytorch_model.safetensors.index.json");
    EXPECT_EQ(inspect_s2v_location(loc).config, WanS2VConfig::tiny());
    S2VLoadOptions o;
    o.subfolder = "none";
    auto sharded = load_s2v_transformer(dir, o);
    auto reference = test::load_golden();
    const auto in = golden_case("out_motion");
    EXPECT_TRUE(at::equal(run(sharded.model, in), run(reference.model, in)));
    fs::remove_all(dir);
}

TEST(WanS2VWeightsTest, StrictLoadingNamesMissingUnexpectedAndMisshapenTensors) {
    const fs::path dir = temp_dir("strict");
    const auto good = read_all(golden("wan_s2v/diffusion_pytorch_model.safetensors"));
    std::ifstream cfg_in(golden("wan_s2v/config.json"));
    const std::string cfg((std::istreambuf_iterator<char>(cfg_in)), std::istreambuf_iterator<char>());
    auto write = [&](const st::sdk::TensorMap& t) {
        st::sdk::save_safetensors(dir / "diffusion_pytorch_model.safetensors", t);
        std::ofstream(dir / "config.json") << cfg;
    };
    S2VLoadOptions o;
    o.subfolder = "none";

    auto missing = good;
    missing.erase("audio_injector.injector.1.to_v.weight");
    write(missing);
    std::string e = error_of([&] { load_s2v_transformer(dir, o); });
    EXPECT_NE(e.find("audio_injector.injector.1.to_v.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("diffusion_pytorch_model.safetensors"), std::string::npos) << e;

    auto extra = good;
    extra["audio_injector.injector.0.extra.weight"] = at::zeros({2});
    write(extra);
    e = error_of([&] { load_s2v_transformer(dir, o); });
    EXPECT_NE(e.find("audio_injector.injector.0.extra.weight"), std::string::npos) << e;

    auto misshapen = good;
    misshapen["frame_packer.proj_2x.weight"] = at::zeros({24, 16, 2, 2, 2});
    write(misshapen);
    e = error_of([&] { load_s2v_transformer(dir, o); });
    EXPECT_NE(e.find("frame_packer.proj_2x.weight"), std::string::npos) << e;

    // config.json contradicting the weights.
    st::sdk::save_safetensors(dir / "diffusion_pytorch_model.safetensors", good);
    auto j = WanS2VConfig::tiny();
    j.ffn_dim = 64;
    std::ofstream(dir / "config.json") << j.to_json().dump();
    e = error_of([&] { load_s2v_transformer(dir, o); });
    EXPECT_NE(e.find("ffn_dim: config 64 vs weights 32"), std::string::npos) << e;
    fs::remove_all(dir);
}

TEST(WanS2VWeightsTest, SaveThenLoadRoundTripsAPipelineFolder) {
    const fs::path dir = temp_dir("save");
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 11);
    save_s2v_transformer(*model, dir / "transformer", at::kBFloat16);
    std::ofstream(dir / "model_index.json") << R"({"_class_name": "WanSpeechToVideoPipeline"})";
    auto loaded = load_s2v_transformer(dir);
    EXPECT_EQ(loaded.model->config(), WanS2VConfig::tiny());
    auto file = st::sdk::SafetensorsFile::open(dir / "transformer" / "diffusion_pytorch_model.safetensors");
    EXPECT_EQ(file->info("condition_embedder.causal_audio_encoder.encoder.final_linear.weight").dtype, "F32");
    EXPECT_EQ(file->info("blocks.0.attn1.to_q.weight").dtype, "BF16");
    // Loaded weights equal the saved ones after the same bf16 rounding.
    model->set_compute_dtype(at::kBFloat16);
    model->set_compute_dtype(at::kFloat);
    const auto in = golden_case("out_short_motion");
    EXPECT_TRUE(at::equal(run(model, in), run(loaded.model, in)));
    fs::remove_all(dir);
}

}  // namespace
}  // namespace st::plugins::wan_s2v
