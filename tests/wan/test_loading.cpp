// Loading Wan transformers: layouts, detection, and one test per loading failure (each must be a
// clear st::Error naming the file / key / shape).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/checkpoint.h"
#include "core/detect.h"
#include "st/error.h"
#include "st/safetensors.h"
#include "test_transformer_util.h"

namespace st::plugins::wan {
namespace {

namespace fs = std::filesystem;

class WanLoadingTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("st_wan_loading_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    static st::sdk::TensorMap golden_tensors(const std::string& file) {
        auto src = st::sdk::SafetensorsFile::open(test::golden(file));
        st::sdk::TensorMap m;
        for (const auto& i : src->infos()) m[i.name] = src->load(i.name);
        return m;
    }
    // Expects an st::Error whose text contains every fragment.
    template <typename F>
    static void expect_error(F&& f, const std::vector<std::string>& fragments) {
        try {
            f();
            ADD_FAILURE() << "no error";
        } catch (const st::Error& e) {
            const std::string what = e.what();
            for (const auto& frag : fragments)
                EXPECT_NE(what.find(frag), std::string::npos) << "'" << frag << "' not in: " << what;
        }
    }
    static void write(const fs::path& p, const std::string& text) {
        fs::create_directories(p.parent_path());
        std::ofstream(p) << text;
    }
    fs::path dir_;
};

TEST_F(WanLoadingTest, DetectsVariantsOfGoldenFiles) {
    auto t2v = inspect_transformer(
        *st::sdk::SafetensorsFile::open(test::golden("wan_t2v/diffusion_pytorch_model.safetensors")));
    EXPECT_EQ(t2v.kind, WanVariantKind::t2v);
    EXPECT_EQ(t2v.config, test::as_detected(WanTransformerConfig::tiny()));
    EXPECT_EQ(t2v.variant, "t2v custom (dim 24, 2 layers)");
    auto orig = inspect_transformer(
        *st::sdk::SafetensorsFile::open(test::golden("wan_t2v/original_format.safetensors")));
    EXPECT_EQ(orig.layout, KeyLayout::original);
    EXPECT_EQ(orig.config, test::as_detected(WanTransformerConfig::tiny()));
    auto sharded = inspect_transformer(*st::sdk::ShardedSafetensors::open(
        test::golden("wan_t2v/sharded/diffusion_pytorch_model.safetensors.index.json")));
    EXPECT_EQ(sharded.config, test::as_detected(WanTransformerConfig::tiny()));
    auto i2v = inspect_transformer(
        *st::sdk::SafetensorsFile::open(test::golden("wan_i2v21/diffusion_pytorch_model.safetensors")));
    EXPECT_EQ(i2v.kind, WanVariantKind::i2v_21);
    EXPECT_NE(i2v.summary().find("diffusers layout"), std::string::npos);
    // Real sizes get their flavour names.
    EXPECT_EQ(variant_name(WanTransformerConfig::t2v_1_3b()), "t2v-1.3b-2.1");
    EXPECT_EQ(variant_name(WanTransformerConfig::i2v_14b_21()), "i2v-14b-2.1");
    EXPECT_EQ(variant_name(WanTransformerConfig::i2v_a14b_22()), "i2v-a14b-2.2");
    EXPECT_EQ(variant_name(WanTransformerConfig::ti2v_5b()), "ti2v-5b-2.2");
}

TEST_F(WanLoadingTest, FlavourTableUsesDiffusersExpertFolders) {
    EXPECT_EQ(find_flavour("i2v-14b-2.2-high").subfolder, "transformer");
    EXPECT_EQ(find_flavour("i2v-14b-2.2-high").peer_subfolder, "transformer_2");
    EXPECT_EQ(find_flavour("i2v-14b-2.2-low").subfolder, "transformer_2");
    EXPECT_EQ(find_flavour("t2v-480p-1.3b-2.1").subfolder, "transformer");
    expect_error([] { find_flavour("t2v-9b"); }, {"t2v-9b", "t2v-480p-1.3b-2.1"});
}

TEST_F(WanLoadingTest, FolderThatIsNotWan) {
    write(dir_ / "model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
    expect_error([&] { load_transformer(dir_); },
                 {dir_.string(), "not a Wan pipeline", "StableDiffusionPipeline"});
    fs::remove(dir_ / "model_index.json");
    // Weights of something else.
    st::sdk::save_safetensors(dir_ / "model.safetensors", {{"encoder.block.0.weight", at::zeros({2, 2})}});
    expect_error([&] { load_transformer(dir_, {.subfolder = "none"}); },
                 {"model.safetensors", "is not a Wan transformer checkpoint", "encoder.block.0.weight"});
    fs::remove(dir_ / "model.safetensors");
    expect_error([&] { load_transformer(dir_, {.subfolder = "none"}); }, {"is not a Wan transformer folder"});
    // A transformer config of another class.
    write(dir_ / "config.json", R"({"_class_name": "SanaVideoTransformer3DModel"})");
    expect_error([&] { load_transformer(dir_, {.subfolder = "none"}); }, {"SanaVideoTransformer3DModel"});
}

TEST_F(WanLoadingTest, MissingSubfolder) {
    fs::copy(test::golden("wan_i2v/model_index.json"), dir_ / "model_index.json");
    fs::copy(test::golden("wan_i2v/transformer"), dir_ / "transformer", fs::copy_options::recursive);
    EXPECT_NO_THROW(load_transformer(dir_, {.subfolder = "transformer"}));
    expect_error([&] { load_transformer(dir_, {.subfolder = "transformer_2"}); },
                 {"no 'transformer_2/' subfolder", "download is incomplete"});
    expect_error([&] { load_transformer(dir_ / "transformer", {.subfolder = "none", .variant = "fp16"}); },
                 {"diffusion_pytorch_model.fp16", "variant 'fp16'"});
}

TEST_F(WanLoadingTest, TruncatedShard) {
    fs::copy(test::golden("wan_t2v/sharded"), dir_, fs::copy_options::recursive);
    const fs::path shard = dir_ / "diffusion_pytorch_model-00002-of-00002.safetensors";
    fs::permissions(shard, fs::perms::owner_write, fs::perm_options::add);
    fs::resize_file(shard, fs::file_size(shard) - 100);
    expect_error([&] { load_transformer(dir_, {.subfolder = "none"}); },
                 {"diffusion_pytorch_model-00002-of-00002.safetensors"});
}

TEST_F(WanLoadingTest, ShapeThatFitsNoFlavour) {
    auto t = golden_tensors("wan_t2v/diffusion_pytorch_model.safetensors");
    // 5 output channels with 4 input channels: neither T2V (in == out) nor I2V (in == 2*out + 4).
    auto bad = t;
    bad["proj_out.weight"] = at::zeros({20, 24});
    bad["proj_out.bias"] = at::zeros({20});
    st::sdk::save_safetensors(dir_ / "a.safetensors", bad);
    expect_error([&] { load_transformer(dir_ / "a.safetensors", {.subfolder = "none"}); },
                 {"fit no Wan flavour", "in_channels 4", "out_channels 5"});
    // One block with a different width.
    bad = t;
    bad["blocks.1.attn1.to_q.weight"] = at::zeros({24, 20});
    st::sdk::save_safetensors(dir_ / "b.safetensors", bad);
    expect_error([&] { load_transformer(dir_ / "b.safetensors", {.subfolder = "none"}); },
                 {"blocks.1.attn1.to_q.weight", "[24, 20]", "[24, 24]", "fit no Wan flavour"});
}

TEST_F(WanLoadingTest, StrictLoadingNamesMissingAndUnexpectedTensors) {
    auto t = golden_tensors("wan_t2v/diffusion_pytorch_model.safetensors");
    t.erase("blocks.0.attn2.norm_k.weight");
    t["blocks.0.attn2.extra.weight"] = at::zeros({3});
    st::sdk::save_safetensors(dir_ / "c.safetensors", t);
    expect_error([&] { load_transformer(dir_ / "c.safetensors", {.subfolder = "none"}); },
                 {"blocks.0.attn2.norm_k.weight", "blocks.0.attn2.extra.weight"});
}

TEST_F(WanLoadingTest, ConfigDisagreeingWithWeights) {
    fs::copy(test::golden("wan_t2v/diffusion_pytorch_model.safetensors"),
             dir_ / "diffusion_pytorch_model.safetensors");
    auto cfg = WanTransformerConfig::tiny().to_json();
    cfg["image_dim"] = 4;
    cfg["added_kv_proj_dim"] = 24;
    write(dir_ / "config.json", cfg.dump());
    expect_error([&] { load_transformer(dir_, {.subfolder = "none"}); },
                 {"config.json", "disagrees", "image_dim: config 4 vs weights null"});
}

TEST_F(WanLoadingTest, HubIdAndMissingPath) {
    expect_error([] { load_transformer("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"); },
                 {"hub id", "does not download", "--local-dir"});
    expect_error([&] { load_transformer(dir_ / "nope"); }, {"does not exist"});
}

}  // namespace
}  // namespace st::plugins::wan
