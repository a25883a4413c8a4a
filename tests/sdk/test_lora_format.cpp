// LoRA files (sdk/src/lora_format.cpp): the diffusers and comfyui layouts we write, round trips,
// kohya / lora_down names, strength and merge, error messages, and an independent reader
// (tests/sdk/read_safetensors.py) confirming keys, shapes and alpha values of files we wrote.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>

#include "../common/independent_safetensors.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using st::sdk::Linear;
using st::sdk::LinearImpl;
using st::sdk::LoraConfig;
using st::sdk::LoraFormat;
using st::sdk::TensorMap;

namespace {

// diffusers-style names: blocks.N.attn1.{to_q,to_out.0}, blocks.N.ffn.net.0.proj; native (Wan-like):
// blocks.N.self_attn.{q,o}, blocks.N.ffn.0.
struct ToyBlockImpl : torch::nn::Module {
    ToyBlockImpl() {
        auto attn1 = register_module("attn1", std::make_shared<torch::nn::Module>());
        to_q = attn1->register_module("to_q", Linear(4, 4));
        to_out = attn1->register_module("to_out", torch::nn::ModuleList(Linear(4, 4)));
        auto ffn = register_module("ffn", std::make_shared<torch::nn::Module>());
        auto net = ffn->register_module("net", std::make_shared<torch::nn::Module>());
        auto n0 = net->register_module("0", std::make_shared<torch::nn::Module>());
        proj = n0->register_module("proj", Linear(4, 8));
        out = net->register_module("2", Linear(8, 4));
    }
    at::Tensor forward(const at::Tensor& x) {
        // x [B, 4] -> [B, 4]
        at::Tensor h = x + to_out->ptr<LinearImpl>(0)->forward(at::tanh(to_q(x)));
        return h + out(at::gelu(proj(h)));
    }
    Linear to_q{nullptr}, proj{nullptr}, out{nullptr};
    torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(ToyBlock);

struct ToyModelImpl : torch::nn::Module {
    explicit ToyModelImpl(uint64_t seed) {
        at::manual_seed(static_cast<int64_t>(seed));  // same seed -> same base weights
        blocks = register_module("blocks", torch::nn::ModuleList(ToyBlock(), ToyBlock()));
    }
    at::Tensor forward(at::Tensor x) {
        for (size_t i = 0; i < blocks->size(); ++i) x = blocks->ptr<ToyBlockImpl>(i)->forward(x);
        return x;
    }
    torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(ToyModel);

// Our module path -> native name, the way a model plugin supplies it.
std::string to_native(const std::string& p) {
    const std::vector<std::pair<std::string, std::string>> table = {{".attn1.to_q", ".self_attn.q"},
                                                                    {".attn1.to_out.0", ".self_attn.o"},
                                                                    {".ffn.net.0.proj", ".ffn.0"},
                                                                    {".ffn.net.2", ".ffn.2"}};
    for (const auto& [ours, native] : table) {
        const auto pos = p.find(ours);
        if (pos != std::string::npos && pos + ours.size() == p.size()) return p.substr(0, pos) + native;
    }
    return "";
}

const std::vector<std::string> kTargets = {"to_q", "to_out.0", "ffn.net.0.proj", "ffn.net.2"};

// A trained-looking adapter: every lora_B nonzero, alpha != rank so the scale matters.
ToyModel trained_model() {
    ToyModel m(1);
    st::sdk::inject_lora(*m, kTargets, LoraConfig{2, 3.0, 0.0, 7});
    auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
    at::NoGradGuard g;
    for (auto& [name, t] : st::sdk::lora_parameters(*m)) t.copy_(at::randn(t.sizes(), gen));
    return m;
}

struct TempDir {
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "st_lora_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() { fs::remove_all(path); }
    fs::path operator/(const std::string& s) const { return path / s; }
    fs::path path;
};

std::set<std::string> keys_of(const fs::path& file) {
    std::set<std::string> out;
    for (const auto& i : st::sdk::SafetensorsFile::open(file)->infos()) out.insert(i.name);
    return out;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "(no error)";
}

const at::Tensor& input() {
    static const at::Tensor x = at::randn({5, 4}, at::make_generator<at::CPUGeneratorImpl>(3));
    return x;
}

}  // namespace

TEST(LoraFormatTest, DiffusersKeysAndMetadata) {
    TempDir dir;
    ToyModel m = trained_model();
    const auto file = dir / "pytorch_lora_weights.safetensors";
    EXPECT_EQ(st::sdk::save_lora(file, *m, LoraFormat::diffusers, {}, {{"st.step", "12"}}), 16u);
    std::set<std::string> expected;
    for (const char* b : {"0", "1"}) {
        for (const char* mod : {"attn1.to_q", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2"}) {
            for (const char* f : {"lora_A", "lora_B"})
                expected.insert(fmt::format("transformer.blocks.{}.{}.{}.weight", b, mod, f));
        }
    }
    EXPECT_EQ(keys_of(file), expected);
    const auto f = st::sdk::SafetensorsFile::open(file);
    EXPECT_EQ(f->info("transformer.blocks.0.ffn.net.0.proj.lora_A.weight").shape,
              (std::vector<int64_t>{2, 4}));
    EXPECT_EQ(f->info("transformer.blocks.0.ffn.net.0.proj.lora_B.weight").shape,
              (std::vector<int64_t>{8, 2}));
    const auto meta = f->metadata();
    EXPECT_EQ(meta.at("st.step"), "12");
    EXPECT_EQ(meta.at("format"), "pt");
    const auto cfg = nlohmann::json::parse(meta.at("lora_adapter_metadata"));
    EXPECT_EQ(cfg.at("transformer.r").get<int64_t>(), 2);
    EXPECT_EQ(cfg.at("transformer.lora_alpha").get<double>(), 3.0);
    EXPECT_EQ(cfg.at("transformer.target_modules").size(), 8u);
}

TEST(LoraFormatTest, ComfyuiKeysUseNativeNamesAndAlphaScalars) {
    TempDir dir;
    ToyModel m = trained_model();
    const auto file = dir / "comfy.safetensors";
    EXPECT_EQ(st::sdk::save_lora(file, *m, LoraFormat::comfyui, to_native), 24u);
    std::set<std::string> expected;
    for (const char* b : {"0", "1"}) {
        for (const char* mod : {"self_attn.q", "self_attn.o", "ffn.0", "ffn.2"}) {
            const std::string p = fmt::format("diffusion_model.blocks.{}.{}", b, mod);
            expected.insert(p + ".lora_A.weight");
            expected.insert(p + ".lora_B.weight");
            expected.insert(p + ".alpha");
        }
    }
    EXPECT_EQ(keys_of(file), expected);
    const auto f = st::sdk::SafetensorsFile::open(file);
    const at::Tensor alpha = f->load("diffusion_model.blocks.1.ffn.2.alpha");
    EXPECT_EQ(alpha.dim(), 0);
    EXPECT_EQ(alpha.scalar_type(), at::kFloat);
    EXPECT_EQ(alpha.item<float>(), 3.0f);
    // A module without a native name cannot be written in this format.
    EXPECT_NE(error_of([&] {
                  st::sdk::save_lora(dir / "x.safetensors", *m, LoraFormat::comfyui,
                                     [](const std::string&) { return std::string(); });
              }).find("no native name"),
              std::string::npos);
}

TEST(LoraFormatTest, RoundTripsInBothFormats) {
    TempDir dir;
    ToyModel m = trained_model();
    const at::Tensor y = m(input());
    ToyModel plain(1);
    ASSERT_FALSE(at::allclose(plain(input()), y, 1e-4, 1e-4));  // the adapter matters
    for (LoraFormat format : {LoraFormat::diffusers, LoraFormat::comfyui}) {
        const auto file = dir / (std::string(st::sdk::lora_format_name(format)) + ".safetensors");
        st::sdk::save_lora(file, *m, format, to_native);
        ToyModel fresh(1);
        const auto loaded = st::sdk::load_lora(file, *fresh, 1.0, to_native);
        EXPECT_EQ(loaded.size(), 8u);
        EXPECT_TRUE(at::allclose(fresh(input()), y, 1e-6, 1e-6)) << st::sdk::lora_format_name(format);
        const auto& q = *fresh->blocks->ptr<ToyBlockImpl>(0)->to_q;
        EXPECT_EQ(q.lora_rank(), 2);
        EXPECT_DOUBLE_EQ(q.lora_alpha(), 3.0);
        // Loading again into modules that already carry adapters overwrites them.
        st::sdk::load_lora(file, *fresh, 1.0, to_native);
        EXPECT_TRUE(at::allclose(fresh(input()), y, 1e-6, 1e-6));
    }
}

TEST(LoraFormatTest, KohyaNamesLoadWithAlphaOverRank) {
    TempDir dir;
    ToyModel src = trained_model();
    // Written by hand the way musubi/kohya name things: lora_unet_<native with underscores>.
    TensorMap t;
    for (auto& [path, lin] : st::sdk::linear_modules(*src)) {
        std::string k = "lora_unet_" + to_native(path);
        std::replace(k.begin(), k.end(), '.', '_');
        t[k + ".lora_down.weight"] = lin->lora_A->weight.detach();
        t[k + ".lora_up.weight"] = lin->lora_B->weight.detach();
        t[k + ".alpha"] = at::scalar_tensor(3.0, at::kFloat);
    }
    const auto file = dir / "kohya.safetensors";
    st::sdk::save_safetensors(file, t);
    ToyModel fresh(1);
    EXPECT_EQ(st::sdk::load_lora(file, *fresh, 1.0, to_native).size(), 8u);
    EXPECT_TRUE(at::allclose(fresh(input()), src(input()), 1e-6, 1e-6));

    // Explicit formula for one module: delta = strength * alpha / rank * up @ down.
    ToyModel half(1);
    st::sdk::load_lora(file, *half, 0.5, to_native);
    const auto& lin = *half->blocks->ptr<ToyBlockImpl>(1)->out;
    const at::Tensor expected = 0.5 * 3.0 / 2.0 *
                                at::matmul(t["lora_unet_blocks_1_ffn_2.lora_up.weight"],
                                           t["lora_unet_blocks_1_ffn_2.lora_down.weight"]);
    EXPECT_TRUE(at::allclose(lin.lora_delta(), expected, 1e-6, 1e-6));
}

TEST(LoraFormatTest, NativeDownUpWithoutAlphaMeansAlphaEqualsRank) {
    TempDir dir;
    ToyModel src = trained_model();
    TensorMap t;
    for (auto& [path, lin] : st::sdk::linear_modules(*src)) {
        const std::string k = "diffusion_model." + to_native(path);
        t[k + ".lora_down.weight"] = lin->lora_A->weight.detach().to(at::kBFloat16);
        t[k + ".lora_up.weight"] = lin->lora_B->weight.detach().to(at::kBFloat16);
    }
    const auto file = dir / "native.safetensors";
    st::sdk::save_safetensors(file, t);
    ToyModel fresh(1);
    st::sdk::load_lora(file, *fresh, 1.0, to_native);
    const auto& q = *fresh->blocks->ptr<ToyBlockImpl>(0)->to_q;
    EXPECT_DOUBLE_EQ(q.lora_alpha(), 2.0);
    EXPECT_EQ(q.lora_A->weight.scalar_type(), at::kFloat);  // cast to the module's dtype
}

TEST(LoraFormatTest, MergeEqualsAttachedAdapter) {
    TempDir dir;
    ToyModel m = trained_model();
    const auto file = dir / "a.safetensors";
    st::sdk::save_lora(file, *m, LoraFormat::comfyui, to_native);
    ToyModel attached(1), merged(1);
    st::sdk::load_lora(file, *attached, 0.7, to_native);
    st::sdk::load_lora(file, *merged, 0.7, to_native, /*merge=*/true);
    EXPECT_TRUE(st::sdk::lora_parameters(*merged).empty());
    EXPECT_TRUE(at::allclose(merged(input()), attached(input()), 1e-5, 1e-5));
    // Two files stack when merged.
    st::sdk::load_lora(file, *merged, 0.3, to_native, /*merge=*/true);
    ToyModel full(1);
    st::sdk::load_lora(file, *full, 1.0, to_native);
    EXPECT_TRUE(at::allclose(merged(input()), full(input()), 1e-5, 1e-5));
}

TEST(LoraFormatTest, ErrorsNameTheOffenders) {
    TempDir dir;
    ToyModel m(1);
    auto write = [&](const std::string& name, TensorMap t) {
        const auto p = dir / name;
        st::sdk::save_safetensors(p, t);
        return p;
    };
    const auto unknown =
        write("u.safetensors", {{"transformer.blocks.0.attn1.to_q.weight", at::zeros({4, 4})}});
    EXPECT_NE(
        error_of([&] { st::sdk::load_lora(unknown, *m); }).find("transformer.blocks.0.attn1.to_q.weight"),
        std::string::npos);
    const auto unmatched =
        write("m.safetensors", {{"transformer.blocks.7.attn1.to_q.lora_A.weight", at::zeros({2, 4})},
                                {"transformer.blocks.7.attn1.to_q.lora_B.weight", at::zeros({4, 2})}});
    const std::string um = error_of([&] { st::sdk::load_lora(unmatched, *m); });
    EXPECT_NE(um.find("transformer.blocks.7.attn1.to_q.lora_A.weight"), std::string::npos) << um;
    const auto shape =
        write("s.safetensors", {{"transformer.blocks.0.ffn.net.2.lora_A.weight", at::zeros({2, 4})},
                                {"transformer.blocks.0.ffn.net.2.lora_B.weight", at::zeros({4, 2})}});
    const std::string se = error_of([&] { st::sdk::load_lora(shape, *m); });
    EXPECT_NE(se.find("[2, 4]"), std::string::npos) << se;
    EXPECT_NE(se.find("[rank, 8]"), std::string::npos) << se;
    const auto half =
        write("h.safetensors", {{"transformer.blocks.0.ffn.net.2.lora_A.weight", at::zeros({2, 8})}});
    EXPECT_NE(error_of([&] { st::sdk::load_lora(half, *m); }).find("lacks its up"), std::string::npos);
    EXPECT_NE(error_of([&] {
                  st::sdk::save_lora(dir / "e.safetensors", *m, LoraFormat::diffusers);
              }).find("no LoRA adapter"),
              std::string::npos);
    EXPECT_EQ(st::sdk::parse_lora_format("comfyui"), LoraFormat::comfyui);
    EXPECT_THROW(st::sdk::parse_lora_format("kohya"), st::Error);
}

// Found by the lora_keys fuzz target (tests/fuzz/regressions/lora/): a file st refuses never reaches
// the weights, and nothing of the model changes when it is refused.
TEST(LoraFormatTest, DamagedFilesAreRefusedBeforeTheModelChanges) {
    TempDir dir;
    auto write = [&](const std::string& name, TensorMap t) {
        const auto p = dir / name;
        st::sdk::save_safetensors(p, t);
        return p;
    };
    const std::string a = "diffusion_model.blocks.0.self_attn.q.lora_A.weight";
    const std::string b = "diffusion_model.blocks.0.self_attn.q.lora_B.weight";
    const std::string alpha = "diffusion_model.blocks.0.self_attn.q.alpha";
    const std::string good_a = "diffusion_model.blocks.1.self_attn.q.lora_A.weight";
    const std::string good_b = "diffusion_model.blocks.1.self_attn.q.lora_B.weight";
    struct Case {
        const char* name;
        TensorMap tensors;
        std::string phrase;
    };
    const std::vector<Case> cases = {
        // Rank 0 passes the shape checks; merged, alpha / 0 wrote NaN into the weights.
        {"rank0", {{a, at::zeros({0, 4})}, {b, at::zeros({4, 0})}}, "rank 0, expected rank >= 1"},
        {"nan_alpha",
         {{a, at::ones({1, 4})}, {b, at::ones({4, 1})}, {alpha, at::scalar_tensor(NAN, at::kFloat)}},
         "'" + alpha + "' holds NaN or infinite values"},
        {"inf_weights",
         {{a, at::full({1, 4}, INFINITY)}, {b, at::ones({4, 1})}},
         "'" + a + "' holds NaN or infinite values"},
        // alpha 1e300 is finite, but strength x alpha / rank x B @ A is not, in float32.
        {"huge_alpha",
         {{a, at::ones({1, 4})}, {b, at::ones({4, 1})}, {alpha, at::scalar_tensor(1e300, at::kDouble)}},
         "could overflow its Float weights"},
    };
    for (const auto& c : cases) {
        TensorMap tensors = c.tensors;
        tensors[good_a] = at::ones({1, 4});  // a valid module listed first: must stay unmerged
        tensors[good_b] = at::ones({4, 1});
        const auto file = write(std::string(c.name) + ".safetensors", tensors);
        for (const bool merge : {false, true}) {
            if (!merge && std::string(c.name) == "huge_alpha") continue;  // attached, the scale is finite
            ToyModel m(1), untouched(1);
            const std::string err = error_of([&] { st::sdk::load_lora(file, *m, 1.0, to_native, merge); });
            EXPECT_NE(err.find(file.string()), std::string::npos) << c.name << ": " << err;
            EXPECT_NE(err.find(c.phrase), std::string::npos) << c.name << ": " << err;
            EXPECT_TRUE(st::sdk::lora_parameters(*m).empty()) << c.name;
            const auto before = untouched->named_parameters();
            for (const auto& p : m->named_parameters())
                EXPECT_TRUE(at::equal(p.value(), before[p.key()])) << c.name << ": " << p.key() << " changed";
        }
    }
}

TEST(LoraFormatTest, PythonReaderConfirmsWhatWeWrote) {
    if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is not available";
    TempDir dir;
    ToyModel m = trained_model();
    const auto file = dir / "comfy.safetensors";
    st::sdk::save_lora(file, *m, LoraFormat::comfyui, to_native);
    const auto py = st_test::read_safetensors_independently(file);
    ASSERT_EQ(py["tensors"].size(), 24u);
    const auto& alpha = py["tensors"]["diffusion_model.blocks.0.self_attn.q.alpha"];
    EXPECT_EQ(alpha["dtype"], "F32");
    EXPECT_TRUE(alpha["shape"].empty());
    EXPECT_EQ(alpha["values"][0].get<double>(), 3.0);
    const auto& a = py["tensors"]["diffusion_model.blocks.1.ffn.0.lora_A.weight"];
    EXPECT_EQ(a["shape"].get<std::vector<int64_t>>(), (std::vector<int64_t>{2, 4}));
    const at::Tensor ours =
        m->blocks->ptr<ToyBlockImpl>(1)->proj->lora_A->weight.detach().reshape(-1).to(at::kDouble);
    for (int64_t k = 0; k < ours.numel(); ++k)
        EXPECT_EQ(a["values"][k].get<double>(), ours[k].item<double>());
    EXPECT_EQ(
        py["tensors"]["diffusion_model.blocks.0.ffn.2.lora_B.weight"]["shape"].get<std::vector<int64_t>>(),
        (std::vector<int64_t>{4, 2}));

    // The diffusers file: keys, shapes and the alpha in the metadata, as the reader sees them.
    const auto dfile = dir / "diffusers.safetensors";
    st::sdk::save_lora(dfile, *m, LoraFormat::diffusers);
    const auto dpy = st_test::read_safetensors_independently(dfile);
    ASSERT_EQ(dpy["tensors"].size(), 16u);
    EXPECT_EQ(dpy["tensors"]["transformer.blocks.1.attn1.to_out.0.lora_B.weight"]["shape"]
                  .get<std::vector<int64_t>>(),
              (std::vector<int64_t>{4, 2}));
    const auto cfg = nlohmann::json::parse(dpy["metadata"]["lora_adapter_metadata"].get<std::string>());
    EXPECT_EQ(cfg["transformer.lora_alpha"].get<double>(), 3.0);
    EXPECT_EQ(cfg["transformer.r"].get<int64_t>(), 2);
}
