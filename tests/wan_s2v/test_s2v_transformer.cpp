// The Wan 2.2 S2V transformer: parity with the diffusers PR reference on the golden tiny model
// (tests/golden/wan_s2v, tolerance from MANIFEST.md), RoPE grids, batching, training (gradients,
// checkpointing), bf16, LoRA and skip-layer guidance.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <set>

#include "core/s2v_key_map.h"
#include "core/s2v_rope.h"
#include "core/transformer.h"
#include "s2v_test_util.h"
#include "st/error.h"
#include "st/lora.h"

namespace st::plugins::wan_s2v {
namespace {

using test::allclose_manifest;
using test::golden;
using test::golden_case;
using test::golden_output;
using test::load_golden;
using test::load_tensor;
using test::run;

// ---- parity -------------------------------------------------------------------------------------

TEST(WanS2VTransformerParityTest, AllFourGoldenOutputsMatchDiffusers) {
    auto loaded = load_golden();
    EXPECT_EQ(loaded.info.layout, KeyLayout::diffusers);
    for (const char* name : {"out_motion", "out_motion_dropped", "out_train_no_motion", "out_short_motion"}) {
        at::Tensor out = run(loaded.model, golden_case(name));
        const at::Tensor ref = golden_output(name);
        EXPECT_TRUE(allclose_manifest(out, ref)) << name;
        std::printf("%s: max |diff| %.3g (ref max %.3g)\n", name, (out - ref).abs().max().item<double>(),
                    ref.abs().max().item<double>());
    }
    // The cases are distinguishable (motion tokens, short motion and dropped motion all matter), so
    // each comparison above checks its own path.
    auto gap = [](const char* a, const char* b) {
        return (golden_output(a) - golden_output(b)).abs().max().item<double>();
    };
    EXPECT_GT(gap("out_motion", "out_motion_dropped"), 1e-2);
    EXPECT_GT(gap("out_motion", "out_short_motion"), 1e-2);
    EXPECT_GT(gap("out_short_motion", "out_train_no_motion"), 1e-2);
}

TEST(WanS2VTransformerParityTest, BlockIntermediatesMatchForOutMotion) {
    auto loaded = load_golden();
    st::sdk::TensorMap inter;
    run(loaded.model, golden_case("out_motion"), &inter);
    const auto f = golden("wan_s2v/intermediates.safetensors");
    for (int i = 0; i < 3; ++i) {
        const at::Tensor ref = load_tensor(f, "block_" + std::to_string(i) + "_out");
        ASSERT_EQ(ref.sizes(), (std::vector<int64_t>{1, 288, 24}));  // 128 noisy + 64 reference + 96 motion
        // diffusers records the block's output before its audio injector: our pre_injection tap.
        EXPECT_TRUE(allclose_manifest(inter.at("blocks." + std::to_string(i) + ".pre_injection"), ref))
            << "block " << i;
    }
    // blocks.N.out is after the injection (block 0 has an injector in the tiny model, block 1 none).
    EXPECT_GT((inter.at("blocks.0.out") - inter.at("blocks.0.pre_injection")).abs().max().item<double>(),
              1e-4);
    EXPECT_TRUE(at::equal(inter.at("blocks.1.out"), inter.at("blocks.1.pre_injection")));
    EXPECT_EQ(inter.at("audio_tokens").sizes(), (std::vector<int64_t>{2, 5, 24}));
    EXPECT_EQ(inter.at("timestep_proj").sizes(), (std::vector<int64_t>{1, 6, 2, 24}));
}

TEST(WanS2VTransformerParityTest, OriginalLayoutSingleFileGivesIdenticalOutputs) {
    auto diffusers = load_golden();
    auto original = load_golden("original_format.safetensors");
    EXPECT_EQ(original.info.layout, KeyLayout::original);
    EXPECT_EQ(original.info.tensor_count, 141u);
    for (const char* name : {"out_motion", "out_train_no_motion"}) {
        const auto in = golden_case(name);
        EXPECT_TRUE(at::equal(run(diffusers.model, in), run(original.model, in))) << name;
    }
}

TEST(WanS2VTransformerParityTest, TrainingConfigWithoutMotionEqualsDroppedMotion) {
    // Same kept audio windows, no motion tokens: the golden notes both outputs are equal.
    auto loaded = load_golden();
    at::Tensor a = run(loaded.model, golden_case("out_train_no_motion"));
    WanS2VInputs undefined_motion = golden_case("out_train_no_motion");
    undefined_motion.motion_latents = at::Tensor();
    EXPECT_TRUE(at::equal(a, run(loaded.model, undefined_motion)));
    EXPECT_TRUE(allclose_manifest(a, golden_output("out_motion_dropped")));
}

// ---- RoPE grids -------------------------------------------------------------------------------

TEST(WanS2VRopeTest, LinspaceTruncatesLikeNumpy) {
    // numpy.linspace(...).astype(int) values.
    EXPECT_EQ(linspace_int(0, 7, 4), (std::vector<int64_t>{0, 2, 4, 7}));
    EXPECT_EQ(linspace_int(19, 4, 4), (std::vector<int64_t>{19, 14, 9, 4}));
    EXPECT_EQ(linspace_int(0, 7, 2), (std::vector<int64_t>{0, 7}));
    EXPECT_EQ(linspace_int(3, 2, 1), (std::vector<int64_t>{3}));
    EXPECT_EQ(linspace_int(0, 59, 7), (std::vector<int64_t>{0, 9, 19, 29, 39, 49, 59}));
    EXPECT_TRUE(linspace_int(0, 5, 0).empty());
}

TEST(WanS2VRopeTest, FramePackGridsSitAtNegativeFrames) {
    // 16x16 latents: H' = 8. Buckets 1 / 2 / 16 frames at f = -1, -3, {-19, -14, -9, -4}.
    auto p1 = s2v_grid_positions({{-1, 0, 0}, {0, 8, 8}, {1, 8, 8}});
    EXPECT_EQ(p1.f, (std::vector<int64_t>{-1}));
    EXPECT_EQ(p1.h, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
    auto p2 = s2v_grid_positions({{-3, 0, 0}, {-2, 4, 4}, {2, 8, 8}});
    EXPECT_EQ(p2.f, (std::vector<int64_t>{-3}));
    EXPECT_EQ(p2.h, (std::vector<int64_t>{0, 2, 4, 7}));
    auto p4 = s2v_grid_positions({{-19, 0, 0}, {-15, 2, 2}, {16, 8, 8}});
    EXPECT_EQ(p4.f, (std::vector<int64_t>{-19, -14, -9, -4}));
    EXPECT_EQ(p4.w, (std::vector<int64_t>{0, 7}));
    auto ref = s2v_grid_positions(s2v_reference_grid(8, 8));
    EXPECT_EQ(ref.f, (std::vector<int64_t>{30}));
}

TEST(WanS2VRopeTest, NegativeFramesAreConjugatedAndNoisyGridMatchesWanCore) {
    const auto t = s2v_rope_tables(12, {s2v_noisy_grid(3, 4, 5)}, 1024);
    const auto w = st::plugins::wan::wan_rope_tables(12, 3, 4, 5, 1024);
    EXPECT_TRUE(at::equal(t.cos, w.cos));
    EXPECT_TRUE(at::equal(t.sin, w.sin));
    // f = -2 vs f = +2 (h = w = 0): same cos, opposite sin on the temporal pairs (the first 4 dims).
    const auto neg = s2v_rope_tables(12, {{{-2, 0, 0}, {-1, 1, 1}, {1, 1, 1}}}, 1024);
    const auto pos = s2v_rope_tables(12, {{{2, 0, 0}, {3, 1, 1}, {1, 1, 1}}}, 1024);
    EXPECT_TRUE(at::allclose(neg.cos, pos.cos));
    EXPECT_TRUE(at::allclose(neg.sin.narrow(1, 0, 4), -pos.sin.narrow(1, 0, 4)));
    EXPECT_THROW(s2v_rope_tables(12, {s2v_noisy_grid(40, 1, 1)}, 32), st::Error);
}

// ---- behaviour ----------------------------------------------------------------------------------

TEST(WanS2VTransformerTest, BatchOfTwoEqualsPerSampleRuns) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 7);
    for (const char* name : {"out_train_no_motion", "out_motion"}) {
        const WanS2VInputs one = golden_case(name);
        WanS2VInputs two = one;
        auto perturb = [](const at::Tensor& x) {
            return x.defined() ? at::cat({x, x.flip({-1}) * 0.5}, 0) : x;
        };
        two.hidden_states = perturb(one.hidden_states);
        two.encoder_hidden_states = perturb(one.encoder_hidden_states);
        two.image_latents = perturb(one.image_latents);
        two.pose_latents = perturb(one.pose_latents);
        two.audio_embeds = perturb(one.audio_embeds);
        two.motion_latents = perturb(one.motion_latents);
        two.timestep = at::cat({one.timestep, one.timestep * 0.3});
        const at::Tensor both = run(model, two);
        for (int64_t b = 0; b < 2; ++b) {
            WanS2VInputs single = two;
            for (at::Tensor* t :
                 {&single.hidden_states, &single.encoder_hidden_states, &single.image_latents,
                  &single.pose_latents, &single.audio_embeds, &single.motion_latents, &single.timestep})
                *t = t->narrow(0, b, 1);
            EXPECT_TRUE(at::allclose(both.narrow(0, b, 1), run(model, single), 1e-5, 1e-5))
                << name << " sample " << b;
        }
    }
}

TEST(WanS2VTransformerTest, WrongAudioLengthIsAClearError) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 1);
    WanS2VInputs in = golden_case("out_train_no_motion");
    in.audio_embeds = in.audio_embeds.narrow(3, 0, 2);  // T_lat frames instead of 4 * T_lat
    try {
        run(model, in);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("audio_embeds has 2 frames"), std::string::npos) << e.what();
    }
    in = golden_case("out_train_no_motion");
    in.audio_embeds = in.audio_embeds.narrow(1, 0, 5);  // 5 hidden states for a 25-layer config
    EXPECT_THROW(run(model, in), st::Error);
}

TEST(WanS2VTransformerTest, PoseAbsentEqualsZeroPose) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 2);
    WanS2VInputs in = golden_case("out_train_no_motion");
    in.pose_latents = at::zeros_like(in.pose_latents);
    const at::Tensor zero_pose = run(model, in);
    in.pose_latents = at::Tensor();
    EXPECT_TRUE(at::allclose(zero_pose, run(model, in), 1e-6, 1e-6));
}

TEST(WanS2VTransformerTest, SkipBlocksChangesTheOutputAndIsRangeChecked) {
    auto loaded = load_golden();
    WanS2VInputs in = golden_case("out_motion");
    const at::Tensor full = run(loaded.model, in);
    in.skip_blocks = {1};
    st::sdk::TensorMap inter;
    const at::Tensor skipped = run(loaded.model, in, &inter);
    EXPECT_GT((full - skipped).abs().max().item<double>(), 1e-3);
    EXPECT_TRUE(inter.count("blocks.1.out"));  // a skipped block still reports its (pass-through) tap
    in.skip_blocks = {3};
    EXPECT_THROW(run(loaded.model, in), st::Error);
}

TEST(WanS2VTransformerTest, Bf16ForwardIsCloseToFp32) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 3);
    const WanS2VInputs in = golden_case("out_motion");
    const at::Tensor ref = run(model, in);
    model->set_compute_dtype(at::kBFloat16);
    for (const auto& item : model->named_parameters()) {
        const bool fp32 = WanS2VTransformer3DModelImpl::keeps_fp32(item.key());
        EXPECT_EQ(item.value().scalar_type(), fp32 ? at::kFloat : at::kBFloat16) << item.key();
    }
    EXPECT_TRUE(WanS2VTransformer3DModelImpl::keeps_fp32(
        "condition_embedder.causal_audio_encoder.encoder.conv2.conv.conv.weight"));
    EXPECT_FALSE(WanS2VTransformer3DModelImpl::keeps_fp32("audio_injector.injector.0.norm_q.weight"));
    const at::Tensor out = run(model, in);
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    const double rel = (out.to(at::kFloat) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
    std::printf("bf16 vs fp32 max rel %.4f\n", rel);
    EXPECT_LT(rel, 0.05);
}

// ---- training -----------------------------------------------------------------------------------

std::map<std::string, at::Tensor> grads_of(WanS2VTransformer3DModel& model, const WanS2VInputs& in) {
    model->zero_grad();
    model->forward(in).pow(2).mean().backward();
    std::map<std::string, at::Tensor> g;
    for (const auto& item : model->named_parameters())
        if (item.value().grad().defined()) g[item.key()] = item.value().grad().clone();
    return g;
}

TEST(WanS2VTransformerTest, TrainingConfigGradientsReachEveryUsedParameter) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 4);
    const WanS2VInputs in = golden_case("out_train_no_motion");  // [17, 5], drop, 0 motion frames
    const auto g = grads_of(model, in);
    for (const auto& item : model->named_parameters()) {
        const std::string& name = item.key();
        if (name.rfind("frame_packer.", 0) == 0) {
            EXPECT_FALSE(g.count(name)) << name << " got a gradient although motion is dropped";
            continue;
        }
        ASSERT_TRUE(g.count(name)) << name << " got no gradient";
        EXPECT_GT(g.at(name).abs().sum().item<double>(), 0.0) << name;
    }
    for (const char* must :
         {"condition_embedder.causal_audio_encoder.weighted_avg.weights",
          "condition_embedder.causal_audio_encoder.encoder.conv1_global.conv.weight",
          "condition_embedder.causal_audio_encoder.encoder.padding_tokens",
          "audio_injector.injector.1.to_k.weight", "audio_injector.injector_adain_layers.0.linear.weight",
          "condition_embedder.pose_embedder.weight", "trainable_condition_mask.weight"})
        EXPECT_TRUE(g.count(must)) << must;
    // With motion the frame packer trains too.
    const auto gm = grads_of(model, golden_case("out_motion"));
    EXPECT_TRUE(gm.count("frame_packer.proj_4x.weight"));
}

TEST(WanS2VTransformerTest, GradientCheckpointingGivesTheSameGradients) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 5);
    const WanS2VInputs in = golden_case("out_short_motion");
    const auto plain = grads_of(model, in);
    model->set_gradient_checkpointing(true);
    const auto ckpt = grads_of(model, in);
    ASSERT_EQ(plain.size(), ckpt.size());
    for (const auto& [name, grad] : plain) {
        ASSERT_TRUE(ckpt.count(name)) << name;
        EXPECT_TRUE(at::allclose(grad, ckpt.at(name), 1e-5, 1e-6)) << name;
    }
}

TEST(WanS2VTransformerTest, Bf16TrainingStepBackpropagatesFiniteGradients) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 6, at::kBFloat16);
    model->set_gradient_checkpointing(true);
    const auto g = grads_of(model, golden_case("out_train_no_motion"));
    EXPECT_FALSE(g.empty());
    for (const auto& item : model->named_parameters()) {
        if (!g.count(item.key())) continue;
        EXPECT_EQ(g.at(item.key()).scalar_type(), item.value().scalar_type()) << item.key();
        EXPECT_TRUE(at::isfinite(g.at(item.key())).all().item<bool>()) << item.key();
    }
    EXPECT_EQ(g.at("condition_embedder.causal_audio_encoder.weighted_avg.weights").scalar_type(), at::kFloat);
    EXPECT_EQ(g.at("audio_injector.injector.0.to_q.weight").scalar_type(), at::kBFloat16);
}

TEST(WanS2VTransformerTest, FeedForwardChunkingLeavesTheOutputUnchanged) {
    auto model = make_random_s2v_transformer(WanS2VConfig::tiny(), 8);
    const WanS2VInputs in = golden_case("out_motion");
    const at::Tensor ref = run(model, in);
    model->set_feed_forward_chunking({true, std::nullopt});
    EXPECT_TRUE(at::allclose(run(model, in), ref, 1e-5, 1e-6));
}

// ---- LoRA ---------------------------------------------------------------------------------------

TEST(WanS2VTransformerTest, LoraTargetsHitBlocksAndAudioInjectors) {
    auto loaded = load_golden();
    auto& model = loaded.model;
    const WanS2VInputs in = golden_case("out_motion");
    const at::Tensor base = run(model, in);
    st::sdk::LoraConfig lc;
    lc.rank = 2;
    const auto paths = st::sdk::inject_lora(*model, {"to_q", "to_k", "to_v", "to_out.0"}, lc);
    EXPECT_EQ(paths.size(), (3u * 2u + 2u) * 4u);  // attn1 + attn2 per block, 2 injectors
    const std::set<std::string> injected(paths.begin(), paths.end());
    EXPECT_TRUE(injected.count("audio_injector.injector.1.to_out.0"));
    EXPECT_TRUE(injected.count("blocks.2.attn2.to_v"));
    EXPECT_TRUE(at::equal(run(model, in), base));  // lora_B starts at zero
    {
        torch::NoGradGuard no_grad;
        for (auto& item : st::sdk::lora_parameters(*model))
            if (item.first.find("audio_injector.") == 0 && item.first.find("lora_B") != std::string::npos)
                item.second.normal_(0, 0.1);
    }
    EXPECT_GT((run(model, in) - base).abs().max().item<double>(), 1e-4);
    // ComfyUI export names through the S2V key map.
    std::map<std::string, std::string> meta;
    const auto sd = st::sdk::lora_state_dict(
        *model, st::sdk::LoraFormat::comfyui,
        [](const std::string& m) { return s2v_lora_module_to_native(m).value_or(""); }, &meta);
    EXPECT_TRUE(sd.count("diffusion_model.audio_injector.injector.0.q.lora_A.weight"));
    EXPECT_TRUE(sd.count("diffusion_model.blocks.0.self_attn.o.lora_B.weight"));
}

}  // namespace
}  // namespace st::plugins::wan_s2v
