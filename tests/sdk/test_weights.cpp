// Strict weight loading: key maps, dtype conversion into the targets, optional and ignored tensors,
// and the single combined error listing missing, unexpected and wrong-shape names.
#include "st/weights.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "st/error.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using st::sdk::load_strict;
using st::sdk::LoadOptions;
using st::sdk::named_tensors;
using st::sdk::SafetensorsFile;
using st::sdk::save_safetensors;
using st::sdk::TensorMap;

namespace {

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "st_weights_XXXXXX").string();
        path_ = ::mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    fs::path operator/(const std::string& name) const { return path_ / name; }

  private:
    fs::path path_;
};

// A tiny module with nested children and a buffer, named like a checkpoint.
struct BlockImpl : torch::nn::Module {
    BlockImpl() {
        proj = register_module("proj", torch::nn::Linear(4, 3));
        norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
        scale = register_buffer("scale", torch::ones({3}));
    }
    torch::nn::Linear proj{nullptr};
    torch::nn::LayerNorm norm{nullptr};
    at::Tensor scale;
};
TORCH_MODULE(Block);

struct TinyImpl : torch::nn::Module {
    TinyImpl() {
        block = Block();
        blocks = register_module("blocks", torch::nn::ModuleList(block));
        head = register_module("head", torch::nn::Linear(3, 2));
    }
    Block block{nullptr};
    torch::nn::ModuleList blocks{nullptr};
    torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Tiny);

// Random tensors with the module's names and shapes, in `dtype`, keys prefixed with `prefix`.
TensorMap checkpoint_for(const torch::nn::Module& module, at::ScalarType dtype, const std::string& prefix) {
    TensorMap out;
    int64_t seed = 7;
    for (const auto& [name, t] : named_tensors(module)) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(seed++);
        out[prefix + name] = at::randn(t.sizes(), gen, at::kFloat).to(dtype);
    }
    return out;
}

std::string strip_prefix(const std::string& name, const std::string& prefix) {
    return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

}  // namespace

TEST(WeightsTest, NamedTensorsListsParametersAndBuffersRecursively) {
    Tiny model;
    const auto named = named_tensors(*model);
    std::vector<std::string> names;
    for (const auto& [name, t] : named) names.push_back(name);
    EXPECT_EQ(names, (std::vector<std::string>{"blocks.0.norm.bias", "blocks.0.norm.weight",
                                               "blocks.0.proj.bias", "blocks.0.proj.weight", "blocks.0.scale",
                                               "head.bias", "head.weight"}));
    // Shallow handles: writing through the map writes the module.
    named.at("head.bias").detach().fill_(5.0);
    EXPECT_TRUE(model->head->bias.equal(at::full({2}, 5.0)));
}

TEST(WeightsTest, LoadsBf16FileIntoFp32ModuleThroughAKeyMap) {
    TempDir dir;
    Tiny model;
    const std::string prefix = "model.diffusion_model.";
    const TensorMap file_tensors = checkpoint_for(*model, at::kBFloat16, prefix);
    save_safetensors(dir / "ckpt.safetensors", file_tensors);
    const auto source = SafetensorsFile::open(dir / "ckpt.safetensors");

    LoadOptions options;
    options.key_map = [&](const std::string& name) -> std::optional<std::string> {
        return strip_prefix(name, prefix);
    };
    options.component = "test.tiny";
    const auto report = load_strict(*model, *source, options);

    EXPECT_EQ(report.loaded, 7u);
    EXPECT_EQ(report.source_dtypes, (std::map<std::string, size_t>{{"BF16", 7}}));
    for (const auto& [name, t] : named_tensors(*model)) {
        EXPECT_EQ(t.scalar_type(), at::kFloat) << name << " keeps the target dtype";
        EXPECT_TRUE(t.equal(file_tensors.at(prefix + name).to(at::kFloat))) << name;
    }
    EXPECT_TRUE(model->head->weight.requires_grad()) << "parameters stay trainable";
    EXPECT_TRUE(model->block->scale.equal(file_tensors.at(prefix + "blocks.0.scale").to(at::kFloat)))
        << "buffers are loaded too";
}

TEST(WeightsTest, ConvertsIntoTheTargetDtypeOfAMapOfTensors) {
    TempDir dir;
    save_safetensors(dir / "f.safetensors",
                     {{"a", at::arange(4, at::kDouble) / 3}, {"b", at::arange(3, at::kInt)}});
    std::map<std::string, at::Tensor> targets{{"a", at::zeros({4}, at::kHalf)},
                                              {"b", at::zeros({3}, at::kFloat)}};
    const auto report = load_strict(targets, *SafetensorsFile::open(dir / "f.safetensors"));
    EXPECT_EQ(report.source_dtypes, (std::map<std::string, size_t>{{"F64", 1}, {"I32", 1}}));
    EXPECT_TRUE(targets["a"].equal((at::arange(4, at::kDouble) / 3).to(at::kHalf)));
    EXPECT_TRUE(targets["b"].equal(at::arange(3, at::kFloat)));
}

TEST(WeightsTest, OptionalTargetsAndIgnoredFileTensors) {
    TempDir dir;
    save_safetensors(dir / "f.safetensors", {{"w", at::ones({2})}, {"extra.ema", at::ones({9})}});
    std::map<std::string, at::Tensor> targets{{"w", at::zeros({2})}, {"lora.down", at::full({2}, 3.0)}};
    LoadOptions options;
    options.optional_targets = {"lora.down"};
    options.key_map = [](const std::string& name) -> std::optional<std::string> {
        if (name.rfind("extra.", 0) == 0) return std::nullopt;
        return name;
    };
    const auto report = load_strict(targets, *SafetensorsFile::open(dir / "f.safetensors"), options);
    EXPECT_EQ(report.loaded, 1u);
    EXPECT_TRUE(targets["w"].equal(at::ones({2})));
    EXPECT_TRUE(targets["lora.down"].equal(at::full({2}, 3.0))) << "optional target left as initialised";
}

TEST(WeightsTest, ReportsMissingUnexpectedAndWrongShapeTogether) {
    TempDir dir;
    save_safetensors(dir / "bad.safetensors", {{"head.weight", at::ones({3, 2})},  // transposed
                                               {"head.bias", at::ones({2})},
                                               {"blocks.0.proj.weight", at::ones({3, 4})},
                                               {"old.unused", at::ones({5}, at::kBFloat16)},
                                               {"blocks.0.norm.weight", at::ones({4})}});  // wrong size
    Tiny model;
    const auto before = model->head->bias.clone();
    try {
        load_strict(*model, *SafetensorsFile::open(dir / "bad.safetensors"),
                    LoadOptions{.component = "model.tiny"});
        FAIL() << "mismatching checkpoint accepted";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(e.component(), "model.tiny");
        EXPECT_EQ(e.phase(), "load");
        EXPECT_NE(what.find("bad.safetensors"), std::string::npos) << what;
        EXPECT_NE(what.find("3 missing"), std::string::npos) << what;
        EXPECT_NE(what.find("blocks.0.proj.bias [3]"), std::string::npos) << what;
        EXPECT_NE(what.find("blocks.0.norm.bias [3]"), std::string::npos) << what;
        EXPECT_NE(what.find("blocks.0.scale [3]"), std::string::npos) << what;
        EXPECT_NE(what.find("1 unexpected"), std::string::npos) << what;
        EXPECT_NE(what.find("old.unused BF16 [5]"), std::string::npos) << what;
        EXPECT_NE(what.find("2 wrong shape"), std::string::npos) << what;
        EXPECT_NE(what.find("head.weight: expected [2, 3] got [3, 2]"), std::string::npos) << what;
        EXPECT_NE(what.find("blocks.0.norm.weight: expected [3] got [4]"), std::string::npos) << what;
        EXPECT_EQ(what.find("head.weight [2, 3]"), std::string::npos)
            << "wrong-shape is not also missing: " << what;
    }
    EXPECT_TRUE(model->head->bias.equal(before)) << "nothing is copied when the load fails";
}

TEST(WeightsTest, ListsOnlyTheFirstOffendersAndCountsTheRest) {
    TempDir dir;
    TensorMap file;
    for (int k = 0; k < 15; ++k) file["stray." + std::to_string(k)] = at::ones({1});
    save_safetensors(dir / "many.safetensors", file);
    std::map<std::string, at::Tensor> targets{{"w", at::zeros({1})}};
    LoadOptions options;
    options.max_listed = 4;
    try {
        load_strict(targets, *SafetensorsFile::open(dir / "many.safetensors"), options);
        FAIL();
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("15 unexpected"), std::string::npos) << what;
        EXPECT_NE(what.find("... and 11 more"), std::string::npos) << what;
        EXPECT_NE(what.find("1 missing"), std::string::npos) << what;
        EXPECT_EQ(what.find("stray.9"), std::string::npos) << "beyond max_listed: " << what;
    }
}

TEST(WeightsTest, RejectsTwoFileTensorsMappedToOneTarget) {
    TempDir dir;
    save_safetensors(dir / "d.safetensors", {{"a.w", at::ones({2})}, {"b.w", at::ones({2})}});
    std::map<std::string, at::Tensor> targets{{"w", at::zeros({2})}};
    LoadOptions options;
    options.key_map = [](const std::string& name) -> std::optional<std::string> { return name.substr(2); };
    try {
        load_strict(targets, *SafetensorsFile::open(dir / "d.safetensors"), options);
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("a.w and b.w both map to w"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(targets["w"].equal(at::zeros({2})));
}

TEST(WeightsTest, LoadsFromAShardedCheckpoint) {
    TempDir dir;
    Tiny model;
    const TensorMap all = checkpoint_for(*model, at::kFloat, "");
    TensorMap first, second;
    nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
    for (const auto& [name, t] : all) {
        const bool in_first = name.rfind("blocks.", 0) == 0;
        (in_first ? first : second)[name] = t;
        index["weight_map"][name] =
            in_first ? "m-00001-of-00002.safetensors" : "m-00002-of-00002.safetensors";
    }
    save_safetensors(dir / "m-00001-of-00002.safetensors", first);
    save_safetensors(dir / "m-00002-of-00002.safetensors", second);
    std::ofstream(dir / "m.safetensors.index.json") << index.dump();
    const auto source = st::sdk::open_tensor_source(dir / "m.safetensors.index.json");
    EXPECT_EQ(load_strict(*model, *source).loaded, all.size());
    for (const auto& [name, t] : named_tensors(*model)) EXPECT_TRUE(t.equal(all.at(name))) << name;
}
