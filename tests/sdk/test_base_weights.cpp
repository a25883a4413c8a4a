// Stored base weights (sdk/src/base_weights.cpp, LinearImpl::set_base_weight, load_strict adoption):
// int8 quantisation against the rule written out element by element, the stored matmul's values and
// gradients against the dense ones, zero-copy views of a mapped file, LoRA on a stored layer.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "st/base_weights.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace {

using st::sdk::BasePrecision;
using st::sdk::Linear;
using st::sdk::LinearImpl;
namespace fs = std::filesystem;

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    return at::randn(shape, g, at::kFloat);
}

fs::path scratch(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("st_base_weights_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d / name;
}

TEST(BaseWeightsTest, Int8QuantisationFollowsThePerChannelAbsmaxRule) {
    at::Tensor w = randn({5, 7}, 1);
    w[3].zero_();    // a zero row: scale 1, all zeros
    w[1][2] = 10.0;  // one large value sets its row's scale
    const auto qw = st::sdk::quantize_int8(w.to(at::kBFloat16));
    ASSERT_EQ(qw.q.scalar_type(), at::kChar);
    ASSERT_EQ(qw.scale.scalar_type(), at::kFloat);
    const at::Tensor wb = w.to(at::kBFloat16).to(at::kFloat);  // what was quantised
    for (int64_t r = 0; r < 5; ++r) {
        float absmax = 0;
        for (int64_t c = 0; c < 7; ++c) absmax = std::max(absmax, std::fabs(wb[r][c].item<float>()));
        const float scale = absmax > 0 ? absmax / 127.0f : 1.0f;
        EXPECT_FLOAT_EQ(qw.scale[r].item<float>(), scale) << r;
        for (int64_t c = 0; c < 7; ++c) {
            const float v = wb[r][c].item<float>() / scale;
            const float want = std::nearbyint(v);  // round half to even (default rounding mode)
            EXPECT_EQ(qw.q[r][c].item<int8_t>(), static_cast<int8_t>(want)) << r << "," << c;
        }
    }
    EXPECT_EQ(qw.q[1][2].item<int8_t>(), 127);
    // Dequantised error is at most half a step of each row.
    const at::Tensor back = st::sdk::dequantize_int8(qw.q, qw.scale, at::kFloat);
    EXPECT_TRUE(((back - wb).abs() <= qw.scale.unsqueeze(1) * 0.5f + 1e-7f).all().item<bool>());
}

TEST(BaseWeightsTest, StoredMatmulEqualsTheDenseOneAndGivesInputAndBiasGradientsOnly) {
    const at::Tensor w = randn({6, 4}, 2);
    for (const bool int8 : {false, true}) {
        at::Tensor stored, scale, dense;
        if (int8) {
            auto qw = st::sdk::quantize_int8(w);
            stored = qw.q;
            scale = qw.scale;
            dense = st::sdk::dequantize_int8(qw.q, qw.scale, at::kFloat);
        } else {
            stored = w.to(at::kBFloat16);
            dense = stored.to(at::kFloat);
        }
        at::Tensor x = randn({2, 3, 4}, 3).set_requires_grad(true);
        at::Tensor b = randn({6}, 4).set_requires_grad(true);
        at::Tensor y = st::sdk::stored_linear(x, stored, scale, b);
        const at::Tensor dy = randn({2, 3, 6}, 5);
        y.backward(dy);
        at::Tensor x2 = x.detach().clone().set_requires_grad(true);
        at::Tensor b2 = b.detach().clone().set_requires_grad(true);
        at::Tensor y2 = at::linear(x2, dense, b2);
        y2.backward(dy);
        EXPECT_TRUE(at::allclose(y, y2, 1e-6, 1e-6)) << int8;
        EXPECT_TRUE(at::allclose(x.grad(), x2.grad(), 1e-6, 1e-6)) << int8;
        EXPECT_TRUE(at::allclose(b.grad(), b2.grad(), 1e-6, 1e-6)) << int8;
        // The graph keeps the stored tensor, not a dense copy: nothing of w needs a gradient.
        EXPECT_FALSE(stored.requires_grad());
    }
}

TEST(BaseWeightsTest, PrecisionNamesAndModuleChoiceFollowSimpleTuner) {
    EXPECT_EQ(st::sdk::parse_base_precision("no_change"), BasePrecision::keep);
    EXPECT_EQ(st::sdk::parse_base_precision("bf16"), BasePrecision::bf16);
    EXPECT_EQ(st::sdk::parse_base_precision("int8-quanto"), BasePrecision::int8);
    EXPECT_EQ(st::sdk::parse_base_precision("int8-torchao"), BasePrecision::int8);
    try {
        st::sdk::parse_base_precision("fp8-quanto");
        FAIL() << "fp8-quanto accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(e.message().find("base_model_precision = 'fp8-quanto'"), std::string::npos) << e.what();
        EXPECT_NE(e.message().find("int8-quanto"), std::string::npos) << e.what();
    }
    st::sdk::BaseWeightPlan quanto;
    quanto.precision = BasePrecision::int8;
    quanto.int8_exclude = {"*ffn*", "proj_out*", "*norm*"};
    EXPECT_EQ(st::sdk::base_precision_for(quanto, "blocks.0.attn1.to_q", 64, 64), BasePrecision::int8);
    EXPECT_EQ(st::sdk::base_precision_for(quanto, "blocks.0.ffn.net.0.proj", 64, 256), BasePrecision::keep);
    EXPECT_EQ(st::sdk::base_precision_for(quanto, "proj_out", 64, 64), BasePrecision::keep);
    st::sdk::BaseWeightPlan torchao;
    torchao.precision = BasePrecision::int8;
    torchao.int8_multiple = 16;
    EXPECT_EQ(st::sdk::base_precision_for(torchao, "blocks.0.ffn.net.0.proj", 64, 256), BasePrecision::int8);
    EXPECT_EQ(st::sdk::base_precision_for(torchao, "x", 64, 24), BasePrecision::keep);
}

TEST(BaseWeightsTest, DeferredInitDrawsNothingFromTheGlobalGenerator) {
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_current_seed(7);
    { Linear a(8, 8); }
    const at::Tensor after_init = at::rand({4});
    gen.set_current_seed(7);
    {
        st::sdk::DeferredInit deferred;
        Linear b(8, 8);
    }
    const at::Tensor after_deferred = at::rand({4});
    gen.set_current_seed(7);
    const at::Tensor fresh = at::rand({4});
    EXPECT_TRUE(after_deferred.equal(fresh));       // nothing was drawn
    EXPECT_FALSE(after_init.equal(fresh));          // (and an ordinary init does draw)
    EXPECT_FALSE(st::sdk::DeferredInit::active());  // restored
}

struct TwoLayersImpl : torch::nn::Module {
    TwoLayersImpl() {
        to_q = register_module("to_q", Linear(16, 32));
        ffn = register_module("ffn", Linear(32, 16));
    }
    at::Tensor forward(const at::Tensor& x) { return ffn(at::gelu(to_q(x))); }
    Linear to_q{nullptr}, ffn{nullptr};
};
TORCH_MODULE(TwoLayers);

TEST(BaseWeightsTest, StrictLoadAdoptsMappedViewsQuantisesAndLeavesTheFileAlone) {
    TwoLayers ref;
    const fs::path file = scratch("two.safetensors");
    st::sdk::TensorMap t;
    for (const auto& p : ref->named_parameters()) t[p.key()] = p.value().detach().to(at::kBFloat16);
    st::sdk::save_safetensors(file, t);
    const std::string bytes_before = [&] {
        std::ifstream in(file, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }();
    auto src = st::sdk::SafetensorsFile::open(file);

    TwoLayers m{nullptr};
    {
        st::sdk::DeferredInit deferred;
        m = TwoLayers();
    }
    st::sdk::LoadOptions lo;
    lo.base_precision = [](const std::string& path, int64_t, int64_t) {
        return path == "to_q" ? BasePrecision::int8 : BasePrecision::keep;
    };
    st::sdk::load_strict(*m, *src, lo);
    st::sdk::convert_parameters(*m, [](const std::string&) { return at::kFloat; });
    // ffn keeps the file's bf16 tensor itself: the bytes of the mapping, no copy.
    EXPECT_TRUE(m->ffn->base_stored());
    EXPECT_EQ(m->ffn->weight.scalar_type(), at::kBFloat16);
    EXPECT_EQ(m->ffn->weight.data_ptr(), src->view("ffn.weight").data_ptr());
    EXPECT_EQ(m->ffn->compute_dtype(), at::kFloat);
    EXPECT_EQ(m->ffn->bias.scalar_type(), at::kFloat);
    EXPECT_EQ(m->to_q->weight.scalar_type(), at::kChar);
    EXPECT_EQ(m->to_q->weight_scale.sizes(), at::IntArrayRef({32}));
    const auto counts = st::sdk::count_base_precisions(*m);
    EXPECT_EQ(counts.at("int8"), 1);
    EXPECT_EQ(counts.at("BFloat16"), 1);

    // Forward = the dense model with the same (dequantised) weights.
    const at::Tensor x = randn({3, 16}, 9);
    TwoLayers dense;
    {
        at::NoGradGuard ng;
        dense->to_q->weight.copy_(m->to_q->dense_weight(at::kFloat));
        dense->to_q->bias.copy_(m->to_q->bias);
        dense->ffn->weight.copy_(m->ffn->dense_weight(at::kFloat));
        dense->ffn->bias.copy_(m->ffn->bias);
    }
    EXPECT_TRUE(at::allclose(m->forward(x), dense->forward(x), 1e-6, 1e-6));

    // A page release keeps the view valid (read back from the file).
    src->release("ffn.weight");
    EXPECT_TRUE(
        m->ffn->weight.to(at::kFloat).equal(ref->ffn->weight.detach().to(at::kBFloat16).to(at::kFloat)));

    // LoRA on stored layers: adapters in the compute dtype, gradients reach them only.
    st::sdk::LoraConfig lc;
    lc.rank = 4;
    st::sdk::inject_lora(*m, {"to_q", "ffn"}, lc);
    EXPECT_EQ(m->to_q->lora_A->weight.scalar_type(), at::kFloat);
    EXPECT_EQ(m->ffn->lora_B->weight.scalar_type(), at::kFloat);
    st::sdk::freeze_all_but_lora(*m);
    {
        at::NoGradGuard ng;
        m->to_q->lora_B->weight.normal_();
        m->ffn->lora_B->weight.normal_();
    }
    m->forward(x).sum().backward();
    EXPECT_TRUE(m->to_q->lora_A->weight.grad().defined());
    EXPECT_FALSE(m->ffn->weight.grad().defined());
    // Merging writes a dense copy in the adapter's dtype, never the mapped file.
    const at::Tensor before = m->forward(x).detach();
    m->ffn->merge_lora();
    m->to_q->merge_lora();
    EXPECT_FALSE(m->ffn->base_stored());
    EXPECT_EQ(m->ffn->weight.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::allclose(m->forward(x), before, 1e-5, 1e-5));
    std::ifstream in(file, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes_before);
}

TEST(BaseWeightsTest, ALoraTrainedOnInt8LayersLoadsOnTheUnquantisedOnes) {
    TwoLayers q, plain;
    {
        at::NoGradGuard ng;
        plain->to_q->weight.copy_(q->to_q->weight);
        plain->to_q->bias.copy_(q->to_q->bias);
        plain->ffn->weight.copy_(q->ffn->weight);
        plain->ffn->bias.copy_(q->ffn->bias);
    }
    q->to_q->set_base_weight(q->to_q->weight.detach().clone(), BasePrecision::int8);
    q->ffn->set_base_weight(q->ffn->weight.detach().clone(), BasePrecision::int8);
    st::sdk::LoraConfig lc;
    lc.rank = 2;
    st::sdk::inject_lora(*q, {"to_q", "ffn"}, lc);
    {
        at::NoGradGuard ng;
        q->to_q->lora_B->weight.normal_();
        q->ffn->lora_B->weight.normal_();
    }
    const fs::path f = scratch("int8_lora.safetensors");
    st::sdk::save_lora(f, *q, st::sdk::LoraFormat::diffusers);
    st::sdk::load_lora(f, *plain);
    for (const auto& [name, t] : st::sdk::lora_parameters(*q))
        EXPECT_TRUE(t.equal(st::sdk::lora_parameters(*plain).at(name))) << name;
    // The adapters' contribution is the same on both bases.
    const at::Tensor x = randn({3, 16}, 11);
    const at::Tensor dq = q->to_q->forward(x) -
                          st::sdk::stored_linear(x, q->to_q->weight, q->to_q->weight_scale, q->to_q->bias);
    const at::Tensor dp = plain->to_q->forward(x) - at::linear(x, plain->to_q->weight, plain->to_q->bias);
    EXPECT_TRUE(at::allclose(dq, dp, 1e-5, 1e-5));
}

}  // namespace
