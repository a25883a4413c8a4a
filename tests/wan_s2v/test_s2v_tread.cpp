// TREAD on the Wan 2.2 S2V transformer (SimpleTuner advertises it, its code path is broken; ours must
// be right): only noisy video tokens are routed, reference and motion tokens always take part, and
// each kept token's audio injection is its own frame's. Checked against an independent reference
// built here from the model's own blocks and its regular (all-tokens) audio injector, frame by frame.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "s2v_test_util.h"
#include "st/lora.h"
#include "st/routing.h"

namespace st::plugins::wan_s2v {
namespace {

using test::golden_case;

constexpr int64_t kPerFrame = 64;  // 16x16 latents, patch 2x2

// The golden case as a batch of two different samples.
WanS2VInputs batch_of_two(const std::string& name) {
    WanS2VInputs in = golden_case(name);
    auto twice = [](const at::Tensor& t, double scale) {
        return t.defined() ? at::cat({t, t * scale}, 0) : t;
    };
    in.hidden_states = twice(in.hidden_states, -0.7);
    in.timestep = at::tensor({in.timestep.item<float>(), 250.0f});
    in.encoder_hidden_states = twice(in.encoder_hidden_states, 0.5);
    in.image_latents = twice(in.image_latents, 0.9);
    in.pose_latents = twice(in.pose_latents, 1.1);
    in.audio_embeds = twice(in.audio_embeds, -1.0);
    in.motion_latents = twice(in.motion_latents, 0.8);
    return in;
}

sdk::TokenRoute route(double ratio, int64_t start, int64_t end) {
    sdk::TokenRoute r;
    r.selection_ratio = ratio;
    r.start = start;
    r.end = end;
    return r;
}

at::Tensor kept_for(uint64_t seed, int64_t batch, int64_t tokens, double ratio) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
    const at::Tensor score = at::rand({batch, tokens}, g);
    const int64_t k = tokens - static_cast<int64_t>(std::llround(static_cast<double>(tokens) * ratio));
    return std::get<0>(std::get<1>(score.sort(1)).narrow(1, 0, k).sort(1));
}

// The hidden states after the last block, with the route applied by hand per sample: kept noisy tokens
// + every reference/motion token through the routed blocks; each audio injection done frame by frame
// with the injector's regular forward on that frame's kept tokens.
at::Tensor reference(WanS2VTransformer3DModel& m, const WanS2VInputs& in, const sdk::TokenRoute& r,
                     const at::Tensor& kept) {
    torch::NoGradGuard no_grad;
    sdk::TensorMap inter;
    m->forward(in, &inter);
    const auto& c = m->config();
    const int64_t frames = in.hidden_states.size(2), L = frames * kPerFrame;
    const at::Tensor x_start = inter.at("blocks." + std::to_string(r.start - 1) + ".out");
    const at::Tensor ctx = inter.at("text_embedder_out"), tproj = inter.at("timestep_proj");
    const at::Tensor audio = inter.at("audio_tokens"), global = inter.at("audio_global");
    const at::Tensor cos = inter.at("rope_cos"), sin = inter.at("rope_sin");
    const int64_t n = x_start.size(1);
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < x_start.size(0); ++b) {
        const at::Tensor cb = ctx.narrow(0, b, 1), tb = tproj.narrow(0, b, 1);
        const at::Tensor ab = audio.narrow(0, b * frames, frames), gb = global.narrow(0, b * frames, frames);
        const int64_t k = kept.size(1);
        const at::Tensor idx = at::cat({kept[b], at::arange(L, n, at::kLong)});
        at::Tensor h = x_start.narrow(0, b, 1).index_select(1, idx);
        const wan::RopeTables rope{cos.index_select(0, idx), sin.index_select(0, idx)};
        for (int64_t i = r.start; i <= r.end; ++i) {
            h = s2v_block_forward(*m->blocks->ptr<wan::WanTransformerBlockImpl>(static_cast<size_t>(i)), h,
                                  cb, tb, c.zero_timestep ? k : 0, rope, c.eps);
            if (!m->audio_injector->has(i)) continue;
            const int64_t inj = m->audio_injector->index_of(i);
            for (int64_t f = 0; f < frames; ++f) {
                const at::Tensor sel = at::nonzero(at::div(kept[b], kPerFrame, "floor") == f).flatten();
                if (sel.numel() == 0) continue;
                const at::Tensor tokens = h.index_select(1, sel);
                const at::Tensor out = m->audio_injector->forward(inj, tokens, tokens.size(1),
                                                                  ab.narrow(0, f, 1), gb.narrow(0, f, 1));
                h = h.clone().index_copy_(1, sel, out);
            }
        }
        at::Tensor x = x_start.narrow(0, b, 1).clone().index_copy_(1, idx, h);
        for (int64_t i = r.end + 1; i < c.num_layers; ++i) {
            x = s2v_block_forward(*m->blocks->ptr<wan::WanTransformerBlockImpl>(static_cast<size_t>(i)), x,
                                  cb, tb, c.zero_timestep ? L : 0, wan::RopeTables{cos, sin}, c.eps);
            if (m->audio_injector->has(i))
                x = m->audio_injector->forward(m->audio_injector->index_of(i), x, L, ab, gb);
        }
        rows.push_back(x);
    }
    return at::cat(rows, 0);
}

TEST(S2VTreadTest, RoutedForwardEqualsTheIndependentReference) {
    // tiny: 3 blocks, audio injectors after blocks 0 and 2; the route covers blocks 1 .. 2.
    for (const char* name : {"out_train_no_motion", "out_motion"}) {
        auto m = make_random_s2v_transformer(WanS2VConfig::tiny(), 11);
        m->train(true);
        WanS2VInputs in = batch_of_two(name);
        const auto r = route(0.6, 1, 2);
        const at::Tensor ref = reference(m, in, r, kept_for(29, 2, 128, 0.6));
        in.routes = {r};
        in.generator = at::make_generator<at::CPUGeneratorImpl>(29);
        sdk::TensorMap taps;
        m->forward(in, &taps);
        const at::Tensor got = taps.at("blocks.2.out").detach();
        ASSERT_EQ(got.sizes(), ref.sizes()) << name;
        EXPECT_TRUE(at::allclose(got, ref, 1e-5, 1e-5)) << name << ": max diff " << (got - ref).abs().max();
    }
}

TEST(S2VTreadTest, RatioZeroIsBitIdenticalAndNoGradNeverRoutes) {
    auto m = make_random_s2v_transformer(WanS2VConfig::tiny(), 12);
    m->train(true);
    WanS2VInputs in = batch_of_two("out_motion");
    const at::Tensor plain = m->forward(in).detach();
    in.routes = {route(0.0, 0, 2)};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(1);
    EXPECT_TRUE(at::equal(m->forward(in).detach(), plain));
    in.routes = {route(0.5, 0, 2)};
    EXPECT_FALSE(at::allclose(m->forward(in).detach(), plain, 1e-4, 1e-4));
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(m->forward(in), plain));
}

TEST(S2VTreadTest, GradientsReachLoraInBlocksAndInjectorsInsideAndOutsideTheRoute) {
    auto m = make_random_s2v_transformer(WanS2VConfig::tiny(), 13);
    m->train(true);
    st::sdk::LoraConfig lc;
    lc.rank = 2;
    st::sdk::inject_lora(*m, {"to_q", "to_k", "to_v", "to_out.0"}, lc);
    st::sdk::freeze_all_but_lora(*m);
    for (auto& [name, t] : st::sdk::lora_parameters(*m))
        if (name.find("lora_B") != std::string::npos) {
            torch::NoGradGuard no_grad;
            t.normal_(0, 0.02);
        }
    m->set_gradient_checkpointing(true);
    WanS2VInputs in = batch_of_two("out_train_no_motion");
    in.routes = {route(0.5, 1, 2)};
    in.generator = at::make_generator<at::CPUGeneratorImpl>(3);
    m->forward(in).square().mean().backward();
    int64_t checked = 0;
    for (auto& [name, t] : st::sdk::lora_parameters(*m)) {
        ASSERT_TRUE(t.grad().defined()) << name;
        EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name;
        ++checked;
    }
    EXPECT_EQ(checked, (3 * 2 + 2) * 4 * 2);  // attn1 + attn2 per block, 2 injectors; A and B
}

}  // namespace
}  // namespace st::plugins::wan_s2v
