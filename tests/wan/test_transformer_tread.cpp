// TREAD on the Wan transformer (T2V, I2V 2.1 with its image branch, per-token timesteps as TI2V): a
// route with ratio 0 is the plain forward bit for bit; a route with ratio > 0 equals an independent
// reference built here from the model's own blocks (per sample: the kept tokens with their RoPE rows and
// per-token modulation through the routed blocks, written back in place); force-kept t = 0 tokens;
// gradients reach LoRA adapters in routed and unrouted blocks; never applied without grad or in eval.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/bench.h"
#include "core/config.h"
#include "core/transformer.h"
#include "st/error.h"
#include "st/lora.h"
#include "st/routing.h"

namespace st::plugins::wan {
namespace {

constexpr int64_t kLayers = 4;

WanTransformerConfig config(bool i2v21) {
    WanTransformerConfig c = WanTransformerConfig::tiny();
    c.num_layers = kLayers;
    if (i2v21) {
        c.in_channels = 12;
        c.image_dim = 4;
        c.added_kv_proj_dim = 24;
    }
    return c;
}

WanTransformer3DModel make(const WanTransformerConfig& c) {
    WanTransformer3DModel m(c);
    randomize_parameters(*m, 5);
    m->train(true);
    return m;
}

WanTransformerInputs inputs(const WanTransformerConfig& c, bool per_token = false) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    WanTransformerInputs in;
    in.hidden_states = at::randn({2, c.in_channels, 3, 8, 8}, gen);  // 48 tokens per sample
    in.timestep = at::tensor({700.0, 300.0});
    if (per_token) {
        in.timestep = at::full({2, 48}, 600.0);
        in.timestep.slice(1, 0, 16).zero_();  // frame 0 conditioned (TI2V)
    }
    in.encoder_hidden_states = at::randn({2, 16, c.text_dim}, gen);
    if (c.image_dim) in.encoder_hidden_states_image = at::randn({2, 5, *c.image_dim}, gen);
    return in;
}

sdk::TokenRoute route(double ratio, int64_t start, int64_t end) {
    sdk::TokenRoute r;
    r.selection_ratio = ratio;
    r.start = start;
    r.end = end;
    return r;
}

// The kept positions a random route draws from a generator seeded `seed` (the documented rule: K = L -
// round(L * ratio) smallest U(0, 1) scores per sample, in order).
at::Tensor kept_for(uint64_t seed, int64_t batch, int64_t tokens, double ratio) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    const at::Tensor score = at::rand({batch, tokens}, g);
    const int64_t k = tokens - static_cast<int64_t>(std::llround(static_cast<double>(tokens) * ratio));
    return std::get<0>(std::get<1>(score.sort(1)).narrow(1, 0, k).sort(1));
}

// Hidden states after the last block: the model's own blocks run per sample with the route applied by
// hand from the unrouted run's inputs to the blocks.
at::Tensor reference(WanTransformer3DModel& m, const WanTransformerInputs& in, const sdk::TokenRoute& r,
                     const at::Tensor& kept) {
    torch::NoGradGuard no_grad;
    sdk::TensorMap inter;
    m->forward(in, &inter);
    const at::Tensor x0 = inter.at("patch_embed_out"), tproj = inter.at("timestep_proj");
    const at::Tensor cos = inter.at("rope_cos"), sin = inter.at("rope_sin"),
                     ctx = inter.at("text_embedder_out");
    const bool per_token = tproj.dim() == 4;
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < x0.size(0); ++b) {
        const at::Tensor img =
            inter.count("image_embedder_out") ? inter.at("image_embedder_out").narrow(0, b, 1) : at::Tensor();
        const at::Tensor c = ctx.narrow(0, b, 1);
        at::Tensor x = x0.narrow(0, b, 1);
        for (int64_t i = 0; i < kLayers; ++i) {
            auto block = m->blocks->ptr<WanTransformerBlockImpl>(static_cast<size_t>(i));
            const at::Tensor tp = tproj.narrow(0, b, 1);
            if (i == r.start) {
                const at::Tensor idx = kept[b];
                at::Tensor h = x.index_select(1, idx);
                const RopeTables rope{cos.index_select(0, idx), sin.index_select(0, idx)};
                const at::Tensor tps = per_token ? tp.index_select(1, idx) : tp;
                for (; i <= r.end; ++i)
                    h = m->blocks->ptr<WanTransformerBlockImpl>(static_cast<size_t>(i))
                            ->forward(h, c, img, tps, rope);
                --i;
                x = x.clone().index_copy_(1, idx, h);
                continue;
            }
            x = block->forward(x, c, img, tp, RopeTables{cos, sin});
        }
        rows.push_back(x);
    }
    return at::cat(rows, 0);
}

void expect_route_matches_reference(bool i2v21, bool per_token) {
    const auto c = config(i2v21);
    auto m = make(c);
    WanTransformerInputs in = inputs(c, per_token);
    const auto r = route(0.5, 1, 2);
    const at::Tensor ref = reference(m, in, r, kept_for(17, 2, 48, 0.5));
    in.routes = {r};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(17);
    sdk::TensorMap taps;
    m->forward(in, &taps);  // grad mode on, train mode: the route applies
    const at::Tensor got = taps.at("blocks." + std::to_string(kLayers - 1) + ".out").detach();
    EXPECT_TRUE(at::allclose(got, ref, 1e-5, 1e-5))
        << "i2v21 " << i2v21 << " per_token " << per_token << ": max diff " << (got - ref).abs().max();
}

TEST(WanTreadTest, RoutedForwardEqualsTheIndependentReference) {
    expect_route_matches_reference(false, false);
    expect_route_matches_reference(true, false);
}

TEST(WanTreadTest, PerTokenTimestepsTravelWithTheTokens) {
    // Without force-keeping (the transformer alone): per-token modulation is gathered like RoPE.
    expect_route_matches_reference(false, true);
}

TEST(WanTreadTest, RatioZeroIsBitIdenticalAndEvalOrNoGradNeverRoutes) {
    const auto c = config(false);
    auto m = make(c);
    WanTransformerInputs in = inputs(c);
    const at::Tensor plain = m->forward(in).detach();
    in.routes = {route(0.0, 0, kLayers - 1)};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(1);
    EXPECT_TRUE(at::equal(m->forward(in).detach(), plain));
    in.routes = {route(0.5, 0, kLayers - 1)};
    EXPECT_FALSE(at::allclose(m->forward(in).detach(), plain, 1e-4, 1e-4)) << "the route applies in training";
    {
        torch::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(m->forward(in), plain)) << "no grad: validation and generation never route";
    }
    m->train(false);
    EXPECT_TRUE(at::equal(m->forward(in).detach(), plain)) << "eval mode never routes";
}

TEST(WanTreadTest, ForceKeptTokensAlwaysGoThroughTheBlocks) {
    // A 0.9 route over every block keeps 48 - round(43.2) = 5 tokens, raised to the 16 force-kept
    // tokens of frame 0 (t = 0, what the Wan family force-keeps for TI2V): exactly frame 0 goes
    // through the blocks, the other 32 tokens leave them as they came in.
    const auto c = config(false);
    auto m = make(c);
    WanTransformerInputs in = inputs(c, true);
    in.routes = {route(0.9, 0, kLayers - 1)};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(4);
    in.force_keep = in.timestep.eq(0.0);
    sdk::TensorMap taps;
    m->forward(in, &taps);
    const at::Tensor x0 = taps.at("patch_embed_out").detach();
    const at::Tensor last = taps.at("blocks." + std::to_string(kLayers - 1) + ".out").detach();
    for (int64_t b = 0; b < 2; ++b) {
        const at::Tensor moved = (last[b] - x0[b]).abs().amax(-1) > 0;  // [48]
        EXPECT_TRUE(moved.narrow(0, 0, 16).all().item<bool>()) << "sample " << b;
        EXPECT_EQ(moved.narrow(0, 16, 32).sum().item<int64_t>(), 0) << "sample " << b;
    }
}

TEST(WanTreadTest, GradientsReachLoraInRoutedAndUnroutedBlocks) {
    const auto c = config(false);
    auto m = make(c);
    st::sdk::LoraConfig lc;
    lc.rank = 2;
    st::sdk::inject_lora(*m, {"to_q", "to_k", "to_v", "to_out.0"}, lc);
    st::sdk::freeze_all_but_lora(*m);
    for (auto& [name, t] : st::sdk::lora_parameters(*m))
        if (name.find("lora_B") != std::string::npos) {
            torch::NoGradGuard no_grad;
            t.normal_(0, 0.02);  // B = 0 would leave A without gradient
        }
    m->set_gradient_checkpointing(true, 2);
    WanTransformerInputs in = inputs(c);
    in.routes = {route(0.5, 1, 2)};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(8);
    m->forward(in).square().mean().backward();
    int64_t checked = 0;
    for (auto& [name, t] : st::sdk::lora_parameters(*m)) {
        ASSERT_TRUE(t.grad().defined()) << name;
        EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name;
        ++checked;
    }
    EXPECT_EQ(checked, kLayers * 8 * 2);  // attn1 + attn2 x 4 targets x (A, B) per block
}

TEST(WanTreadTest, BenchMeasuresTheRoutedPassNextToThePlainOneAndPrintsJson) {
    testing::internal::CaptureStdout();
    const int rc = run_wan_bench(
        {"--presets", "tiny", "--latent", "2x8x8", "--text-len", "8", "--steps", "1", "--tread_config",
         R"([{"selection_ratio": 0.5, "start_layer_idx": 0, "end_layer_idx": -1}])", "--json"});
    const std::string out = testing::internal::GetCapturedStdout();
    ASSERT_EQ(rc, 0) << out;
    std::string last = out.substr(0, out.find_last_not_of('\n') + 1);
    last = last.substr(last.find_last_of('\n') + 1);
    const auto j = nlohmann::json::parse(last);
    const auto& row = j.at("presets").at(0);
    EXPECT_EQ(row.at("preset"), "tiny");
    for (const char* key : {"fwd_s", "fwd_bwd_s", "peak_rss_mib"}) {
        EXPECT_GT(row.at(key).get<double>(), 0.0) << key;
        EXPECT_GT(row.at("tread").at(key).get<double>(), 0.0) << key;
    }
    EXPECT_THROW(run_wan_bench({"--presets", "tiny", "--tread_config", "{"}), st::Error);
}

}  // namespace
}  // namespace st::plugins::wan
