// LyCORIS adapters on st::sdk::Linear (sdk/src/lycoris.cpp): LyCORIS's factorization table, LoKr and
// LoHa shapes / initialisation / scale rules, the forward against the formulas computed here
// independently (Kronecker product written out element by element, LoHa's Hadamard product), both
// file layouts read back by the independent stdlib reader (tests/sdk/read_safetensors.py), loading
// with ComfyUI's scale rule, attach and merge.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "../common/independent_safetensors.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/lycoris.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using st::sdk::Linear;
using st::sdk::LinearImpl;
using st::sdk::LycorisAdapterImpl;
using st::sdk::LycorisOptions;

namespace {

// kron(a, b)[i*p + k, j*q + l] = a[i, j] * b[k, l], written out (not at::kron).
at::Tensor kron_by_hand(const at::Tensor& a, const at::Tensor& b) {
    const int64_t m = a.size(0), n = a.size(1), p = b.size(0), q = b.size(1);
    at::Tensor out = at::zeros({m * p, n * q}, at::kDouble);
    auto A = a.to(at::kDouble), B = b.to(at::kDouble);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j)
            for (int64_t k = 0; k < p; ++k)
                for (int64_t l = 0; l < q; ++l)
                    out[i * p + k][j * q + l] = A[i][j].item<double>() * B[k][l].item<double>();
    return out;
}

void randomize(LycorisAdapterImpl& a, uint64_t seed) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    at::NoGradGuard ng;
    for (auto& p : a.parameters()) p.copy_(at::randn(p.sizes(), g));
}

std::map<std::string, at::Tensor> params_of(const LycorisAdapterImpl& a) {
    std::map<std::string, at::Tensor> m;
    for (const auto& item : a.named_parameters(false)) m[item.key()] = item.value().detach();
    return m;
}

TEST(LycorisTest, FactorizationIsLycorissTable) {
    // Values of LyCORIS's functional/general.py factorization (run in Python).
    const std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> table = {
        {1536, -1, 32, 48},    {1536, 8, 8, 192},  {1536, 16, 16, 96}, {8960, -1, 80, 112},
        {8960, 4, 4, 2240},    {8960, 8, 8, 1120}, {5120, -1, 64, 80}, {5120, 16, 16, 320},
        {13824, -1, 108, 128}, {32, 16, 2, 16},    {32, 8, 4, 8},      {64, -1, 8, 8},
        {96, 7, 6, 16},        {24, 5, 4, 6}};
    for (const auto& [d, f, m, n] : table) {
        const auto got = st::sdk::lycoris_factorization(d, f);
        EXPECT_EQ(got.first, m) << d << " factor " << f;
        EXPECT_EQ(got.second, n) << d << " factor " << f;
    }
}

TEST(LycorisTest, LokrShapesScaleAndInitFollowLycoris) {
    // Both factors full (full_matrix): scale 1 and the saved alpha is linear_dim.
    LycorisAdapterImpl full(16, 32, LycorisOptions{"lokr", 10000, 1.0, 4, true, false});
    auto p = params_of(full);
    ASSERT_TRUE(p.count("lokr_w1") && p.count("lokr_w2"));
    EXPECT_EQ(p["lokr_w1"].sizes(), at::IntArrayRef({4, 4}));  // (out_l, in_m) = small factors
    EXPECT_EQ(p["lokr_w2"].sizes(), at::IntArrayRef({8, 4}));  // (out_k, in_n)
    EXPECT_EQ(full.scale(), 1.0);
    EXPECT_EQ(full.saved_alpha(), 10000.0);
    // dim < max(out_k, in_n) / 2: w2 low rank, scale alpha / dim.
    LycorisAdapterImpl low(64, 64, LycorisOptions{"lokr", 2, 1.0, 4, false, false});
    p = params_of(low);
    EXPECT_EQ(p["lokr_w1"].sizes(), at::IntArrayRef({4, 4}));
    EXPECT_EQ(p["lokr_w2_a"].sizes(), at::IntArrayRef({16, 2}));
    EXPECT_EQ(p["lokr_w2_b"].sizes(), at::IntArrayRef({2, 16}));
    EXPECT_DOUBLE_EQ(low.scale(), 0.5);
    LycorisAdapterImpl both(64, 64, LycorisOptions{"lokr", 1, 0.0, 4, false, true});
    p = params_of(both);
    EXPECT_EQ(p["lokr_w1_a"].sizes(), at::IntArrayRef({4, 1}));
    EXPECT_EQ(p["lokr_w1_b"].sizes(), at::IntArrayRef({1, 4}));
    EXPECT_DOUBLE_EQ(both.scale(), 1.0);  // alpha 0 = dim
    // Initialisation: w2 (or w2_b) zero, so the delta is zero; w1 Kaiming-uniform within 1/sqrt(cols).
    low.init_weights(5);
    p = params_of(low);
    EXPECT_TRUE(p["lokr_w2_b"].eq(0).all().item<bool>());
    EXPECT_GT(p["lokr_w1"].abs().max().item<double>(), 0.0);
    EXPECT_LE(p["lokr_w1"].abs().max().item<double>(), 1.0 / std::sqrt(4.0));
    EXPECT_LE(p["lokr_w2_a"].abs().max().item<double>(), 1.0 / std::sqrt(2.0));
    EXPECT_EQ(low.delta_weight().abs().max().item<double>(), 0.0);
}

TEST(LycorisTest, LokrForwardIsBasePlusScaledKroneckerProduct) {
    for (bool full : {true, false}) {
        Linear lin(16, 32);
        lin->add_lycoris(LycorisOptions{"lokr", full ? 10000 : 1, 3.0, 4, full, false}, 1);
        randomize(*lin->lycoris(), 2);
        lin->set_lora_scale(0.7);
        const at::Tensor x = at::randn({3, 16}, at::make_generator<at::CPUGeneratorImpl>(4));
        auto p = params_of(*lin->lycoris());
        const at::Tensor w2 = full ? p["lokr_w2"] : at::matmul(p["lokr_w2_a"], p["lokr_w2_b"]);
        const double scale = full ? 1.0 : 3.0 / 1.0;
        const at::Tensor dw = kron_by_hand(p["lokr_w1"], w2) * scale;
        const at::Tensor want =
            (at::matmul(x.to(at::kDouble), (lin->weight.detach().to(at::kDouble) + 0.7 * dw).t()) +
             lin->bias.detach().to(at::kDouble));
        EXPECT_TRUE(at::allclose(lin->forward(x).to(at::kDouble), want, 1e-4, 1e-5)) << "full " << full;
        // Merging gives the same output; unmerging restores the base weight.
        const at::Tensor before = lin->weight.detach().clone();
        lin->merge_lora();
        EXPECT_TRUE(at::allclose(lin->forward(x).to(at::kDouble), want, 1e-4, 1e-5));
        lin->unmerge_lora();
        EXPECT_TRUE(at::allclose(lin->weight.detach(), before, 1e-5, 1e-6));
    }
}

// rank_dropout / module_dropout (lycoris/modules/lokr.py, loha.py; training only): one uniform draw per
// forward skips the adapter with probability module_dropout; one draw per output row zeroes that row of
// dW with probability rank_dropout (rank_dropout_scale divides by the kept fraction). Draws from the
// Linear's dropout generator, in that order.
TEST(LycorisTest, RankAndModuleDropoutInTrainingOnly) {
    LycorisOptions o{"loha", 4, 4.0, -1, false, false};
    o.rank_dropout = 0.5;
    o.rank_dropout_scale = true;
    Linear lin(16, 32);
    lin->add_lycoris(o, 1);
    randomize(*lin->lycoris(), 2);
    const at::Tensor x = at::randn({3, 16}, at::make_generator<at::CPUGeneratorImpl>(4));
    const at::Tensor base = at::linear(x, lin->weight.detach(), lin->bias.detach());
    const at::Tensor dw = lin->lycoris()->delta_weight().detach();
    lin->set_dropout_generator(at::make_generator<at::CPUGeneratorImpl>(11));
    lin->train(true);
    const at::Tensor got = lin->forward(x).detach();
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);
    at::Tensor keep = at::rand({32}, g, at::TensorOptions(at::kFloat)).gt(0.5).to(at::kFloat);
    const int64_t kept = keep.sum().item<int64_t>();
    EXPECT_GT(kept, 0);
    EXPECT_LT(kept, 32);
    keep = keep / keep.mean();
    EXPECT_TRUE(at::allclose(got, base + at::linear(x, dw * keep.view({-1, 1})), 1e-5, 1e-6));
    lin->train(false);
    EXPECT_TRUE(at::allclose(lin->forward(x).detach(), base + at::linear(x, dw), 1e-5, 1e-6))
        << "eval: no dropout";
    // module_dropout 1: every training forward is the base layer's.
    LycorisOptions m{"lokr", 1, 1.0, 4, false, false};
    m.module_dropout = 1.0;
    Linear skip(16, 32);
    skip->add_lycoris(m, 1);
    randomize(*skip->lycoris(), 2);
    skip->train(true);
    EXPECT_TRUE(skip->forward(x).detach().equal(at::linear(x, skip->weight.detach(), skip->bias.detach())));
    skip->train(false);
    EXPECT_FALSE(skip->forward(x).detach().equal(at::linear(x, skip->weight.detach(), skip->bias.detach())));
}

TEST(LycorisTest, LohaForwardIsTheHadamardProductOfTwoLowRankMatrices) {
    Linear lin(12, 10);
    lin->add_lycoris(LycorisOptions{"loha", 3, 6.0, -1, false, false}, 9);
    auto p = params_of(*lin->lycoris());
    EXPECT_TRUE(p["hada_w2_a"].eq(0).all().item<bool>()) << "LoHa starts with w2_a = 0";
    EXPECT_NEAR(p["hada_w1_b"].std().item<double>(), 1.0, 0.35);
    randomize(*lin->lycoris(), 3);
    p = params_of(*lin->lycoris());
    const at::Tensor x = at::randn({2, 12}, at::make_generator<at::CPUGeneratorImpl>(5));
    at::Tensor dw = at::zeros({10, 12}, at::kDouble);
    for (int64_t i = 0; i < 10; ++i)
        for (int64_t j = 0; j < 12; ++j) {
            double s1 = 0, s2 = 0;
            for (int64_t r = 0; r < 3; ++r) {
                s1 += p["hada_w1_a"][i][r].item<double>() * p["hada_w1_b"][r][j].item<double>();
                s2 += p["hada_w2_a"][i][r].item<double>() * p["hada_w2_b"][r][j].item<double>();
            }
            dw[i][j] = s1 * s2 * (6.0 / 3.0);
        }
    const at::Tensor want = at::matmul(x.to(at::kDouble), (lin->weight.detach().to(at::kDouble) + dw).t()) +
                            lin->bias.detach().to(at::kDouble);
    EXPECT_TRUE(at::allclose(lin->forward(x).to(at::kDouble), want, 1e-4, 1e-5));
    // Gradients reach every factor.
    lin->forward(x).sum().backward();
    for (const auto& item : lin->lycoris()->named_parameters(false))
        EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
}

// A toy transformer with Wan's diffusers names and a native name map.
struct ToyImpl : torch::nn::Module {
    ToyImpl() {
        at::manual_seed(11);
        auto blocks = register_module("blocks", torch::nn::ModuleList());
        for (int b = 0; b < 2; ++b) {
            auto block = std::make_shared<torch::nn::Module>();
            auto attn1 = block->register_module("attn1", std::make_shared<torch::nn::Module>());
            q.push_back(attn1->register_module("to_q", Linear(16, 16)));
            auto ffn = block->register_module("ffn", std::make_shared<torch::nn::Module>());
            f.push_back(ffn->register_module("proj", Linear(16, 32)));
            blocks->push_back(block);
        }
    }
    at::Tensor forward(at::Tensor x) {
        for (size_t b = 0; b < q.size(); ++b) x = x + at::tanh(q[b](x)) + f[b](x).narrow(1, 0, 16);
        return x;
    }
    std::vector<Linear> q, f;
};
TORCH_MODULE(Toy);

std::string to_native(const std::string& p) {
    std::string s = p;
    for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
             {".attn1.to_q", ".self_attn.q"}, {".ffn.proj", ".ffn.0"}}) {
        const auto pos = s.find(a);
        if (pos != std::string::npos) return s.substr(0, pos) + b;
    }
    return "";
}

Toy trained(const std::string& algo) {
    Toy m;
    st::sdk::inject_lycoris(
        *m,
        [&](const std::string&) {
            return std::optional<LycorisOptions>(LycorisOptions{algo, 2, 1.0, 4, false, false});
        },
        7);
    for (auto& [path, lin] : st::sdk::linear_modules(*m))
        randomize(*lin->lycoris(), std::hash<std::string>{}(path));
    return m;
}

TEST(LycorisTest, FilesInBothLayoutsReadBackIndependentlyAndLoadAttachedOrMerged) {
    const fs::path dir = fs::temp_directory_path() / ("st_lycoris_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const at::Tensor x = at::randn({3, 16}, at::make_generator<at::CPUGeneratorImpl>(8));
    for (const std::string algo : {"lokr", "loha"}) {
        Toy m = trained(algo);
        const at::Tensor want = m->forward(x);
        st::sdk::save_lora(dir / "comfy.safetensors", *m, st::sdk::LoraFormat::comfyui, to_native);
        st::sdk::save_lora(dir / "lycoris.safetensors", *m, st::sdk::LoraFormat::diffusers, nullptr);
        const auto comfy = st_test::read_safetensors_independently(dir / "comfy.safetensors");
        const auto lyc = st_test::read_safetensors_independently(dir / "lycoris.safetensors");
        const std::string w = algo == "lokr" ? "lokr_w1" : "hada_w1_a";
        ASSERT_TRUE(comfy["tensors"].contains("diffusion_model.blocks.0.self_attn.q." + w)) << comfy.dump();
        ASSERT_TRUE(comfy["tensors"].contains("diffusion_model.blocks.1.ffn.0.alpha")) << comfy.dump();
        EXPECT_EQ(comfy["tensors"]["diffusion_model.blocks.1.ffn.0.alpha"]["shape"], nlohmann::json::array());
        EXPECT_EQ(comfy["tensors"]["diffusion_model.blocks.1.ffn.0.alpha"]["values"][0], 1.0);
        ASSERT_TRUE(lyc["tensors"].contains("lycoris_blocks_0_attn1_to_q." + w)) << lyc.dump();
        ASSERT_TRUE(lyc["tensors"].contains("lycoris_blocks_1_ffn_proj.alpha"));
        // The reader's values are the adapter's.
        const auto& t = comfy["tensors"]["diffusion_model.blocks.0.self_attn.q." + w];
        const at::Tensor mine = m->q[0]->lycoris()->named_parameters(false)[w].reshape({-1});
        for (int64_t i = 0; i < mine.numel(); ++i)
            EXPECT_FLOAT_EQ(t["values"][static_cast<size_t>(i)].get<float>(), mine[i].item<float>());
        // apply_preset.lora_prefix (LycorisNetwork.LORA_PREFIX) names LyCORIS's layout; the file's
        // lycoris_config metadata tells the loader.
        st::sdk::save_lora(
            dir / "prefixed.safetensors", *m, st::sdk::LoraFormat::diffusers, nullptr,
            {{"lycoris_config", R"({"algo": "x", "apply_preset": {"lora_prefix": "my.net"}})"}});
        const auto pre = st_test::read_safetensors_independently(dir / "prefixed.safetensors");
        ASSERT_TRUE(pre["tensors"].contains("my_net_blocks_0_attn1_to_q." + w)) << pre.dump();
        for (const auto& [name, v] : pre["tensors"].items())
            EXPECT_EQ(name.rfind("lycoris_", 0), std::string::npos);
        for (const char* file : {"comfy.safetensors", "lycoris.safetensors", "prefixed.safetensors"}) {
            Toy attached;
            st::sdk::load_lora(dir / file, *attached, 1.0, to_native, false);
            EXPECT_TRUE(at::allclose(attached->forward(x), want, 1e-5, 1e-6)) << algo << " " << file;
            Toy merged;
            st::sdk::load_lora(dir / file, *merged, 1.0, to_native, true);
            EXPECT_FALSE(merged->q[0]->has_lycoris());
            EXPECT_TRUE(at::allclose(merged->forward(x), want, 1e-4, 1e-5)) << algo << " merged " << file;
        }
    }
    fs::remove_all(dir);
}

// rs_lora (lycoris/modules/loha.py, lokr.py): r_factor = sqrt(dim), scale = alpha / sqrt(dim), saved alpha =
// alpha * dim / sqrt(dim), so that a loader's alpha / dim reads the same scale back.
TEST(LycorisTest, RsLoraScalesBySqrtDimAndReadsBackTheSame) {
    LycorisAdapterImpl loha(32, 32, LycorisOptions{"loha", 16, 8.0, -1, false, false, true});
    EXPECT_DOUBLE_EQ(loha.scale(), 8.0 / 4.0);
    EXPECT_DOUBLE_EQ(loha.saved_alpha(), 8.0 * 16.0 / 4.0);
    loha.init_weights(3);
    std::map<std::string, at::Tensor> t;
    for (const auto& item : loha.named_parameters(false)) t[item.key()] = item.value().detach();
    const auto back = LycorisAdapterImpl::from_tensors(32, 32, t, loha.saved_alpha(), "test");
    EXPECT_DOUBLE_EQ(back->scale(), loha.scale());
    LycorisAdapterImpl lokr(64, 64, LycorisOptions{"lokr", 2, 1.0, 4, false, false, true});
    EXPECT_DOUBLE_EQ(lokr.scale(), 1.0 / std::sqrt(2.0));
    // Both LoKr factors full: LyCORIS's sqrt(dim) would be read back as 1 by every loader.
    try {
        LycorisAdapterImpl full(16, 32, LycorisOptions{"lokr", 4, 1.0, 4, true, false, true});
        FAIL() << "accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("rs_lora with both LoKr factors full"), std::string::npos)
            << e.what();
    }
}

// use_scalar (lokr.py, loha.py): a trainable scalar starting at 0 multiplies dW, w2 starts random; files
// hold w1 times the scalar and no scalar; loading one sets the scalar to 1 (load_weight_hook).
TEST(LycorisTest, UseScalarStartsAtZeroAndIsFoldedIntoW1InFiles) {
    for (const char* algo : {"lokr", "loha"}) {
        LycorisOptions o{algo, 2, 1.0, 4, false, false};
        o.use_scalar = true;
        LycorisAdapterImpl a(64, 64, o);
        a.init_weights(5);
        auto p = params_of(a);
        ASSERT_TRUE(p.count("scalar")) << algo;
        EXPECT_EQ(p["scalar"].dim(), 0);
        EXPECT_EQ(p["scalar"].item<double>(), 0.0);
        const std::string w2 = std::string(algo) == "lokr" ? "lokr_w2_b" : "hada_w2_a";
        EXPECT_GT(p[w2].abs().max().item<double>(), 0.0) << algo << ": w2 starts random";
        EXPECT_EQ(a.delta_weight().abs().max().item<double>(), 0.0);
        p["scalar"].detach().fill_(0.5);
        LycorisOptions plain = o;
        plain.use_scalar = false;
        LycorisAdapterImpl ref(64, 64, plain);
        auto rp = params_of(ref);
        for (auto& [n, t] : rp) t.detach().copy_(p[n]);
        EXPECT_TRUE(at::allclose(a.delta_weight(), ref.delta_weight() * 0.5, 1e-6, 1e-7)) << algo;
        const auto file = a.file_tensors();
        EXPECT_EQ(file.count("scalar"), 0u);
        const std::string w1 = std::string(algo) == "lokr" ? "lokr_w1" : "hada_w1_a";
        EXPECT_TRUE(file.at(w1).equal(p[w1].detach() * 0.5)) << algo;
        const auto back = LycorisAdapterImpl::from_tensors(64, 64, file, a.saved_alpha(), "test");
        EXPECT_TRUE(at::allclose(back->delta_weight(), a.delta_weight(), 1e-6, 1e-7)) << algo;
        LycorisAdapterImpl into(64, 64, o);
        into.copy_from(*back, "test");
        EXPECT_EQ(params_of(into)["scalar"].item<double>(), 1.0);
        EXPECT_TRUE(at::allclose(into.delta_weight(), a.delta_weight(), 1e-6, 1e-7)) << algo;
    }
}

// LoCon (lycoris/modules/locon.py on a Linear): lora_down [r, in] Kaiming-uniform, lora_up [out, r] zero,
// dW = (alpha / r) up @ down; saved as lora_down.weight / lora_up.weight / alpha (a plain LoRA to every
// loader); loading such a file into a module with a LoCon adapter fills that adapter.
TEST(LycorisTest, LoconIsLycorisLoraOnALinear) {
    Linear lin(16, 32);
    lin->add_lycoris(LycorisOptions{"locon", 4, 2.0, -1, false, false}, 1);
    auto p = params_of(*lin->lycoris());
    ASSERT_EQ(p["lora_down"].sizes(), at::IntArrayRef({4, 16}));
    ASSERT_EQ(p["lora_up"].sizes(), at::IntArrayRef({32, 4}));
    EXPECT_TRUE(p["lora_up"].eq(0).all().item<bool>());
    EXPECT_GT(p["lora_down"].abs().max().item<double>(), 0.0);
    EXPECT_LE(p["lora_down"].abs().max().item<double>(), 1.0 / std::sqrt(16.0));
    randomize(*lin->lycoris(), 3);
    p = params_of(*lin->lycoris());
    const at::Tensor x = at::randn({3, 16}, at::make_generator<at::CPUGeneratorImpl>(4));
    const at::Tensor dw = at::matmul(p["lora_up"], p["lora_down"]).detach() * (2.0 / 4.0);
    const at::Tensor want = at::linear(x, lin->weight.detach() + dw, lin->bias.detach());
    EXPECT_TRUE(at::allclose(lin->forward(x).detach(), want, 1e-5, 1e-6));
    const auto file = lin->lycoris()->file_tensors();
    ASSERT_EQ(file.size(), 2u);
    EXPECT_TRUE(file.at("lora_down.weight").equal(p["lora_down"].detach()));
    EXPECT_TRUE(file.at("lora_up.weight").equal(p["lora_up"].detach()));
    EXPECT_DOUBLE_EQ(lin->lycoris()->saved_alpha(), 2.0);
}

TEST(LycorisTest, LoadingFollowsComfyuisScaleRule) {
    // Both LoKr factors full: scale 1 whatever the alpha (SimpleTuner saves bf16(10000) = 9984).
    std::map<std::string, at::Tensor> t = {{"lokr_w1", at::ones({4, 4})},
                                           {"lokr_w2", at::ones({4, 4}) * 0.5}};
    auto a = LycorisAdapterImpl::from_tensors(16, 16, t, 9984.0, "test");
    EXPECT_EQ(a->scale(), 1.0);
    EXPECT_TRUE(at::allclose(a->delta_weight(), at::full({16, 16}, 0.5)));
    // Low-rank w2: alpha / rank of w2.
    t = {{"lokr_w1", at::ones({4, 4})}, {"lokr_w2_a", at::ones({4, 2})}, {"lokr_w2_b", at::ones({2, 4})}};
    a = LycorisAdapterImpl::from_tensors(16, 16, t, 4.0, "test");
    EXPECT_DOUBLE_EQ(a->scale(), 2.0);
    EXPECT_TRUE(at::allclose(a->delta_weight(), at::full({16, 16}, 4.0)));  // 2 (rank sum) x scale 2
    // A shape that does not make the weight is named.
    t = {{"lokr_w1", at::ones({4, 4})}, {"lokr_w2", at::ones({4, 5})}};
    try {
        LycorisAdapterImpl::from_tensors(16, 16, t, std::nullopt, "file.safetensors: module 'x'");
        FAIL() << "accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("kron of w1 [4, 4] and w2 [4, 5] is [16, 20]"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
