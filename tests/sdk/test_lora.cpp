// st::sdk::Linear with LoRA adapters and suffix injection (sdk/src/lora.cpp) on tiny toy modules.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <set>

#include "st/error.h"
#include "st/lora.h"

using st::sdk::Linear;
using st::sdk::LinearImpl;
using st::sdk::LoraConfig;

namespace {

// A toy attention-like block with diffusers-style names: to_q, to_k (no bias), to_out.0.
struct ToyAttnImpl : torch::nn::Module {
    ToyAttnImpl() {
        to_q = register_module("to_q", Linear(4, 6));
        to_k = register_module("to_k", Linear(4, 6, /*bias=*/false));
        to_out = register_module("to_out", torch::nn::ModuleList(Linear(6, 4)));
    }
    at::Tensor forward(const at::Tensor& x) {
        // x [B, 4] -> [B, 4]
        return to_out->ptr<LinearImpl>(0)->forward(to_q(x) * at::sigmoid(to_k(x))) + x;
    }
    Linear to_q{nullptr}, to_k{nullptr};
    torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(ToyAttn);

struct ToyNetImpl : torch::nn::Module {
    ToyNetImpl() {
        blocks = register_module("blocks", torch::nn::ModuleList(ToyAttn(), ToyAttn()));
        proj_out = register_module("proj_out", Linear(4, 3));
    }
    at::Tensor forward(at::Tensor x) {
        // x [B, 4] -> [B, 3]
        for (size_t i = 0; i < blocks->size(); ++i) x = blocks->ptr<ToyAttnImpl>(i)->forward(x);
        return proj_out(x);
    }
    ToyAttnImpl& block(size_t i) { return *blocks->ptr<ToyAttnImpl>(i); }
    torch::nn::ModuleList blocks{nullptr};
    Linear proj_out{nullptr};
};
TORCH_MODULE(ToyNet);

void randomize_b(LinearImpl& lin, uint64_t seed) {
    at::NoGradGuard g;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    lin.lora_B->weight.copy_(at::randn(lin.lora_B->weight.sizes(), gen));
}

}  // namespace

TEST(LoraTest, LinearIsADropInForTorchLinear) {
    at::manual_seed(7);
    torch::nn::Linear ref(5, 3);
    at::manual_seed(7);
    Linear ours(5, 3);
    std::vector<std::string> ref_names, our_names;
    for (const auto& p : ref->named_parameters()) ref_names.push_back(p.key());
    for (const auto& p : ours->named_parameters()) our_names.push_back(p.key());
    EXPECT_EQ(our_names, ref_names);
    EXPECT_TRUE(at::equal(ours->weight, ref->weight));
    EXPECT_TRUE(at::equal(ours->bias, ref->bias));
    const at::Tensor x = at::randn({2, 7, 5});
    EXPECT_TRUE(at::equal(ours(x), ref(x)));
    Linear nobias(5, 3, false);
    EXPECT_EQ(nobias->named_parameters().size(), 1u);
    EXPECT_FALSE(nobias->bias.defined());
}

TEST(LoraTest, FreshAdapterLeavesOutputUnchanged) {
    ToyNet net;
    const at::Tensor x = at::randn({3, 4});
    const at::Tensor before = net(x);
    st::sdk::inject_lora(*net, {"to_q", "to_k", "to_out.0"}, LoraConfig{2, 4.0, 0.0, 1});
    const at::Tensor after = net(x);
    EXPECT_TRUE(at::equal(before, after));
    // lora_A is not zero (Kaiming uniform, bound 1/sqrt(in)), lora_B is.
    const auto& q = *net->block(0).to_q;
    EXPECT_GT(q.lora_A->weight.abs().max().item<float>(), 0.0f);
    EXPECT_LE(q.lora_A->weight.abs().max().item<float>(), 1.0f / 2.0f + 1e-6f);
    EXPECT_EQ(q.lora_B->weight.abs().max().item<float>(), 0.0f);
}

TEST(LoraTest, ForwardEqualsTheExplicitFormula) {
    Linear lin(5, 3);
    lin->add_lora(LoraConfig{4, 8.0, 0.0, 3});
    randomize_b(*lin, 11);
    lin->set_lora_scale(0.5);
    const at::Tensor x = at::randn({2, 5});
    const at::Tensor expected =
        at::matmul(x, lin->weight.t()) + lin->bias +
        0.5 * (8.0 / 4.0) * at::matmul(at::matmul(x, lin->lora_A->weight.t()), lin->lora_B->weight.t());
    EXPECT_TRUE(at::allclose(lin(x), expected, 1e-5, 1e-6));
    EXPECT_DOUBLE_EQ(lin->lora_scaling(), 1.0);
    EXPECT_EQ(lin->lora_A->weight.sizes(), (std::vector<int64_t>{4, 5}));
    EXPECT_EQ(lin->lora_B->weight.sizes(), (std::vector<int64_t>{3, 4}));
}

TEST(LoraTest, StrengthScalesOnlyTheDelta) {
    Linear lin(5, 3);
    lin->add_lora(LoraConfig{2, std::nullopt, 0.0, 3});
    EXPECT_DOUBLE_EQ(lin->lora_alpha(), 2.0);  // alpha defaults to rank
    randomize_b(*lin, 12);
    const at::Tensor x = at::randn({4, 5});
    lin->set_lora_scale(0.0);
    const at::Tensor base = lin(x);
    EXPECT_TRUE(at::allclose(base, at::linear(x, lin->weight, lin->bias)));
    lin->set_lora_scale(1.0);
    const at::Tensor full = lin(x);
    lin->set_lora_scale(0.25);
    EXPECT_TRUE(at::allclose(lin(x) - base, 0.25 * (full - base), 1e-5, 1e-6));
    EXPECT_FALSE(at::allclose(full, base));
}

TEST(LoraTest, DropoutAppliesOnlyInTraining) {
    Linear lin(64, 8);
    lin->add_lora(LoraConfig{4, 4.0, 0.5, 3});
    randomize_b(*lin, 13);
    const at::Tensor x = at::randn({16, 64});
    const at::Tensor formula = at::linear(x, lin->weight, lin->bias) +
                               at::linear(at::linear(x, lin->lora_A->weight), lin->lora_B->weight);
    lin->eval();
    EXPECT_TRUE(at::allclose(lin(x), formula, 1e-5, 1e-5));
    lin->train();
    at::manual_seed(1);
    const at::Tensor t1 = lin(x);
    const at::Tensor t2 = lin(x);
    EXPECT_FALSE(at::allclose(t1, formula, 1e-3, 1e-3));
    EXPECT_FALSE(at::equal(t1, t2));
    // Dropout touches only the LoRA branch: with strength 0 training output is the base output.
    lin->set_lora_scale(0.0);
    EXPECT_TRUE(at::equal(lin(x), at::linear(x, lin->weight, lin->bias)));
}

TEST(LoraTest, GradientsReachOnlyLoraWhenTheBaseIsFrozen) {
    ToyNet net;
    st::sdk::inject_lora(*net, {"to_q", "to_out.0"}, LoraConfig{2, 2.0, 0.0, 5});
    for (size_t i = 0; i < 2; ++i) randomize_b(*net->block(i).to_q, 20 + i);
    const int64_t trainable = st::sdk::freeze_all_but_lora(*net);
    const auto lora = st::sdk::lora_parameters(*net);
    int64_t lora_numel = 0;
    for (const auto& [n, t] : lora) lora_numel += t.numel();
    EXPECT_EQ(trainable, lora_numel);
    EXPECT_EQ(lora.size(), 8u);
    net(at::randn({3, 4})).pow(2).sum().backward();
    for (const auto& p : net->named_parameters()) {
        const bool is_lora = lora.count(p.key()) > 0;
        EXPECT_EQ(p.value().requires_grad(), is_lora) << p.key();
        if (is_lora) {
            ASSERT_TRUE(p.value().grad().defined()) << p.key();
        } else {
            EXPECT_FALSE(p.value().grad().defined()) << p.key();
        }
    }
    // B of every adapter gets a nonzero gradient; A too where B is nonzero.
    EXPECT_GT(net->block(0).to_q->lora_A->weight.grad().abs().sum().item<float>(), 0.0f);
    EXPECT_GT(net->block(1).to_out->ptr<LinearImpl>(0)->lora_B->weight.grad().abs().sum().item<float>(),
              0.0f);
}

TEST(LoraTest, NamedParametersUsePeftNames) {
    ToyNet net;
    st::sdk::inject_lora(*net, {"to_q"}, LoraConfig{});
    std::set<std::string> names;
    for (const auto& p : net->named_parameters()) names.insert(p.key());
    EXPECT_TRUE(names.count("blocks.0.to_q.weight"));
    EXPECT_TRUE(names.count("blocks.0.to_q.bias"));
    EXPECT_TRUE(names.count("blocks.0.to_q.lora_A.weight"));
    EXPECT_TRUE(names.count("blocks.1.to_q.lora_B.weight"));
    EXPECT_FALSE(names.count("blocks.0.to_k.lora_A.weight"));
    EXPECT_EQ(names.size(), 12u + 4u);  // 2 x (2 + 1 + 2) + 2 base, + 4 LoRA
}

TEST(LoraTest, SuffixMatchingFollowsDotBoundaries) {
    using st::sdk::module_matches_suffix;
    EXPECT_TRUE(module_matches_suffix("blocks.0.attn1.to_out.0", "to_out.0"));
    EXPECT_TRUE(module_matches_suffix("blocks.0.attn1.to_out.0", "attn1.to_out.0"));
    EXPECT_TRUE(module_matches_suffix("to_q", "to_q"));
    EXPECT_FALSE(module_matches_suffix("blocks.0.attn1.to_out.0", "out.0"));
    EXPECT_FALSE(module_matches_suffix("blocks.0.attn1.add_q", "q"));
    EXPECT_FALSE(module_matches_suffix("blocks.0.to_q", ""));
}

TEST(LoraTest, InjectsBySuffixAndReportsNoMatch) {
    ToyNet net;
    const auto injected = st::sdk::inject_lora(*net, {"to_q", "to_out.0"}, LoraConfig{2});
    EXPECT_EQ(injected, (std::vector<std::string>{"blocks.0.to_q", "blocks.0.to_out.0", "blocks.1.to_q",
                                                  "blocks.1.to_out.0"}));
    EXPECT_FALSE(net->proj_out->has_lora());
    EXPECT_FALSE(net->block(0).to_k->has_lora());
    ToyNet other;
    try {
        st::sdk::inject_lora(*other, {"out.0", "to_z"}, LoraConfig{2});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("'out.0', 'to_z'"), std::string::npos) << e.what();
    }
    // A second injection into the same module is refused, naming it.
    try {
        st::sdk::inject_lora(*net, {"blocks.0.to_q"}, LoraConfig{2});
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("blocks.0.to_q"), std::string::npos) << e.what();
    }
}

TEST(LoraTest, InitIsSeededPerModule) {
    ToyNet a, b;
    st::sdk::inject_lora(*a, {"to_q"}, LoraConfig{2, std::nullopt, 0.0, 42});
    st::sdk::inject_lora(*b, {"to_q", "to_k"}, LoraConfig{2, std::nullopt, 0.0, 42});
    EXPECT_TRUE(at::equal(a->block(0).to_q->lora_A->weight, b->block(0).to_q->lora_A->weight));
    EXPECT_FALSE(at::equal(a->block(0).to_q->lora_A->weight, a->block(1).to_q->lora_A->weight));
    ToyNet c;
    st::sdk::inject_lora(*c, {"to_q"}, LoraConfig{2, std::nullopt, 0.0, 43});
    EXPECT_FALSE(at::equal(a->block(0).to_q->lora_A->weight, c->block(0).to_q->lora_A->weight));
}

TEST(LoraTest, MergeAndUnmergeKeepTheOutput) {
    Linear lin(6, 5);
    lin->add_lora(LoraConfig{3, 6.0, 0.0, 9});
    randomize_b(*lin, 14);
    const at::Tensor x = at::randn({4, 6});
    const at::Tensor w0 = lin->weight.clone();
    const at::Tensor y = lin(x);
    lin->merge_lora();
    EXPECT_TRUE(lin->lora_merged());
    EXPECT_FALSE(at::allclose(lin->weight, w0));
    EXPECT_TRUE(at::allclose(lin(x), y, 1e-5, 1e-5));
    EXPECT_THROW(lin->set_lora_scale(0.5), st::Error);
    lin->unmerge_lora();
    EXPECT_TRUE(at::allclose(lin->weight, w0, 1e-6, 1e-6));
    EXPECT_TRUE(at::allclose(lin(x), y, 1e-5, 1e-5));
}

TEST(LoraTest, CloneKeepsTheAdapter) {
    Linear lin(6, 5);
    lin->add_lora(LoraConfig{3, 6.0, 0.0, 9});
    randomize_b(*lin, 15);
    auto copy = std::dynamic_pointer_cast<LinearImpl>(lin->clone());
    ASSERT_TRUE(copy);
    ASSERT_TRUE(copy->has_lora());
    EXPECT_EQ(copy->lora_rank(), 3);
    EXPECT_DOUBLE_EQ(copy->lora_alpha(), 6.0);
    const at::Tensor x = at::randn({2, 6});
    EXPECT_TRUE(at::equal(copy->forward(x), lin(x)));
    EXPECT_NE(copy->lora_B->weight.data_ptr(), lin->lora_B->weight.data_ptr());
}

TEST(LoraTest, RejectsBadConfigs) {
    Linear lin(6, 5);
    EXPECT_THROW(lin->add_lora(LoraConfig{0}), st::Error);
    EXPECT_THROW(lin->add_lora(LoraConfig{2, std::nullopt, 1.0}), st::Error);
    EXPECT_THROW(lin->lora_rank(), st::Error);
    EXPECT_THROW(lin->merge_lora(), st::Error);
}
