// The shared tiny-config battery (STYLE.md point 10) for the Wan transformer: config, names,
// shapes, determinism, gradients, gradient checkpointing, chunked FFN, per-token timesteps,
// save/load round trip, config recovered from weights, taps.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/transformer.h"
#include "st/error.h"
#include "st/safetensors.h"
#include "test_transformer_util.h"

namespace st::plugins::wan {
namespace {

namespace fs = std::filesystem;

WanTransformerConfig tiny_i2v21() {
    WanTransformerConfig c = WanTransformerConfig::tiny();
    c.in_channels = 12;
    c.image_dim = 4;
    c.added_kv_proj_dim = 24;
    return c;
}

WanTransformer3DModel make(const WanTransformerConfig& c, uint64_t seed = 7) {
    WanTransformer3DModel m(c);
    randomize_parameters(*m, seed);
    return m;
}

WanTransformerInputs inputs(const WanTransformerConfig& c, int64_t batch = 1, uint64_t seed = 3) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    WanTransformerInputs in;
    in.hidden_states = at::randn({batch, c.in_channels, 3, 8, 8}, gen);
    in.timestep = at::full({batch}, 700.0);
    in.encoder_hidden_states = at::randn({batch, 16, c.text_dim}, gen);
    in.encoder_hidden_states.slice(1, 10).zero_();  // UMT5 padding rows
    if (c.image_dim) in.encoder_hidden_states_image = at::randn({batch, 5, *c.image_dim}, gen);
    return in;
}

fs::path temp_dir(const std::string& tag) {
    fs::path d = fs::temp_directory_path() / ("st_wan_tf_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

TEST(WanTransformerConfigTest, PresetsMatchReferenceTensorCounts) {
    EXPECT_EQ(WanTransformerConfig::t2v_1_3b().tensor_count(), 825);
    EXPECT_EQ(WanTransformerConfig::t2v_14b().tensor_count(), 1095);
    EXPECT_EQ(WanTransformerConfig::i2v_14b_21().tensor_count(), 1303);
    EXPECT_EQ(WanTransformerConfig::t2v_1_3b().inner_dim(), 1536);
    EXPECT_EQ(WanTransformerConfig::ti2v_5b().inner_dim(), 3072);
    EXPECT_EQ(WanTransformerConfig::small().inner_dim(), 512);
    EXPECT_EQ(WanTransformerConfig::small().num_layers, 8);
    EXPECT_EQ(WanTransformerConfig::preset("1.3b"), WanTransformerConfig{});
    EXPECT_THROW(WanTransformerConfig::preset("huge"), st::Error);
    for (const auto& c : {WanTransformerConfig::tiny(), tiny_i2v21()}) {
        WanTransformer3DModel m(c);
        EXPECT_EQ(static_cast<int64_t>(m->named_parameters().size()), c.tensor_count());
    }
}

TEST(WanTransformerConfigTest, JsonRoundTripIgnoresUnderscoreKeysAndRejectsUnknown) {
    auto golden_cfg = WanTransformerConfig::from_file(test::golden("wan_t2v/config.json"));
    EXPECT_EQ(golden_cfg, WanTransformerConfig::tiny());  // the file has _class_name, _diffusers_version
    EXPECT_EQ(WanTransformerConfig::from_json(tiny_i2v21().to_json()), tiny_i2v21());
    EXPECT_EQ(WanTransformerConfig::from_file(test::golden("wan_i2v21/config.json")), tiny_i2v21());
    auto j = WanTransformerConfig::tiny().to_json();
    j["num_heads"] = 3;
    try {
        WanTransformerConfig::from_json(j, "x/config.json");
        FAIL() << "unknown key accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("num_heads"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("x/config.json"), std::string::npos) << e.what();
    }
    j = WanTransformerConfig::tiny().to_json();
    j["attention_head_dim"] = 5;  // cannot be split for 3-D RoPE
    EXPECT_THROW(WanTransformerConfig::from_json(j), st::Error);
    j = WanTransformerConfig::tiny().to_json();
    j["image_dim"] = 4;  // without added_kv_proj_dim
    EXPECT_THROW(WanTransformerConfig::from_json(j), st::Error);
}

TEST(WanTransformerTest, ParameterNamesEqualDiffusersFileKeys) {
    for (const auto& [cfg, file] :
         {std::pair{WanTransformerConfig::tiny(), "wan_t2v/diffusion_pytorch_model.safetensors"},
          std::pair{tiny_i2v21(), "wan_i2v21/diffusion_pytorch_model.safetensors"}}) {
        WanTransformer3DModel m(cfg);
        std::set<std::string> ours, theirs;
        for (const auto& p : m->named_parameters()) ours.insert(p.key());
        for (const auto& i : st::sdk::SafetensorsFile::open(test::golden(file))->infos())
            theirs.insert(i.name);
        EXPECT_EQ(ours, theirs) << file;
    }
}

TEST(WanTransformerTest, OutputShapesFollowInput) {
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    torch::NoGradGuard ng;
    auto in = inputs(c, 2);
    EXPECT_EQ(m->forward(in).sizes(), in.hidden_states.sizes());
    in.hidden_states = at::randn({2, 4, 2, 4, 12});
    EXPECT_EQ(m->forward(in).sizes(), (std::vector<int64_t>{2, 4, 2, 4, 12}));
    in.hidden_states = at::randn({2, 4, 2, 5, 12});  // H not divisible by the patch
    EXPECT_ANY_THROW(m->forward(in));
    in.hidden_states = at::randn({2, 4, 2, 4, 128});  // 64 tokens along W > rope_max_seq_len 32
    EXPECT_THROW(m->forward(in), st::Error);
}

TEST(WanTransformerTest, DeterministicForSameSeed) {
    auto c = tiny_i2v21();
    auto a = make(c, 11), b = make(c, 11), d = make(c, 12);
    torch::NoGradGuard ng;
    auto in = inputs(c);
    at::Tensor ya = a->forward(in), yb = b->forward(in), yd = d->forward(in);
    EXPECT_TRUE(at::equal(ya, yb));
    EXPECT_TRUE(at::equal(ya, a->forward(in)));
    EXPECT_FALSE(at::allclose(ya, yd));
}

void expect_all_grads(const WanTransformerConfig& c, const at::Tensor& timestep = {}) {
    auto m = make(c);
    auto in = inputs(c, 2);
    if (timestep.defined()) in.timestep = timestep;
    m->forward(in).pow(2).mean().backward();
    for (const auto& p : m->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    }
}

TEST(WanTransformerTest, GradientsReachEveryParameter) {
    expect_all_grads(WanTransformerConfig::tiny());
    expect_all_grads(tiny_i2v21());
    // Per-token path (frame 0 at t = 0, as TI2V does).
    auto t = at::full({2, 48}, 600.0);
    t.slice(1, 0, 16).zero_();
    expect_all_grads(WanTransformerConfig::tiny(), t);
}

// Gradients of the input and every parameter with and without checkpointing.
void expect_checkpoint_identical(const WanTransformerConfig& c, const at::Tensor& timestep = {}) {
    auto plain = make(c, 5), ckpt = make(c, 5);
    ckpt->set_gradient_checkpointing(true);
    auto in1 = inputs(c, 2), in2 = inputs(c, 2);
    if (timestep.defined()) in1.timestep = in2.timestep = timestep;
    in1.hidden_states.requires_grad_(true);
    in2.hidden_states.requires_grad_(true);
    in1.encoder_hidden_states.requires_grad_(true);
    in2.encoder_hidden_states.requires_grad_(true);
    st::sdk::TensorMap taps;
    at::Tensor y1 = plain->forward(in1), y2 = ckpt->forward(in2, &taps);
    // The blocks really ran through the checkpoint node (no silent fallback to the plain path).
    ASSERT_TRUE(taps.at("blocks.0.out").grad_fn());
    EXPECT_NE(taps.at("blocks.0.out").grad_fn()->name().find("CheckpointFunction"), std::string::npos)
        << taps.at("blocks.0.out").grad_fn()->name();
    EXPECT_TRUE(at::allclose(y1, y2, 1e-6, 1e-6));
    at::Tensor w = at::randn(y1.sizes(), at::make_generator<at::CPUGeneratorImpl>(9));
    (y1 * w).sum().backward();
    (y2 * w).sum().backward();
    EXPECT_TRUE(at::allclose(in1.hidden_states.grad(), in2.hidden_states.grad(), 1e-6, 1e-6));
    EXPECT_TRUE(at::allclose(in1.encoder_hidden_states.grad(), in2.encoder_hidden_states.grad(), 1e-6, 1e-6));
    auto p1 = plain->named_parameters(), p2 = ckpt->named_parameters();
    for (const auto& p : p1) {
        const at::Tensor& g1 = p.value().grad();
        const at::Tensor& g2 = p2[p.key()].grad();
        ASSERT_TRUE(g2.defined()) << p.key();
        EXPECT_TRUE(at::allclose(g1, g2, 1e-6, 1e-6))
            << p.key() << " max diff " << (g1 - g2).abs().max().item<double>();
    }
}

TEST(WanTransformerTest, GradientCheckpointingGivesIdenticalGradients) {
    expect_checkpoint_identical(WanTransformerConfig::tiny());
    expect_checkpoint_identical(tiny_i2v21());
    auto t = at::full({2, 48}, 600.0);
    t.slice(1, 0, 16).zero_();
    expect_checkpoint_identical(WanTransformerConfig::tiny(), t);
}

TEST(WanTransformerTest, GradientCheckpointingWithFrozenBaseStillFeedsInputGrads) {
    // LoRA-style training: base weights frozen; gradients must still reach the input.
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    for (auto& p : m->parameters()) p.requires_grad_(false);
    m->blocks->ptr<WanTransformerBlockImpl>(1)->attn1->to_q->weight.requires_grad_(true);
    m->set_gradient_checkpointing(true);
    auto in = inputs(c);
    in.hidden_states.requires_grad_(true);
    m->forward(in).sum().backward();
    EXPECT_TRUE(in.hidden_states.grad().defined());
    EXPECT_TRUE(m->blocks->ptr<WanTransformerBlockImpl>(1)->attn1->to_q->weight.grad().defined());
    EXPECT_FALSE(m->blocks->ptr<WanTransformerBlockImpl>(0)->attn1->to_q->weight.grad().defined());
}

TEST(WanTransformerTest, ChunkedFeedForwardLeavesOutputUnchanged) {
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    torch::NoGradGuard ng;
    for (int64_t batch : {1, 2}) {  // auto: B=1 -> sequence in 4, B=2 -> batch in 2
        auto in = inputs(c, batch);
        m->set_feed_forward_chunking({});
        at::Tensor ref = m->forward(in);
        m->set_feed_forward_chunking({true, std::nullopt});
        EXPECT_TRUE(at::allclose(m->forward(in), ref, 1e-6, 1e-6)) << "auto, B=" << batch;
        m->set_feed_forward_chunking({true, 5, 1});  // 48 tokens in pieces of 5 (last one shorter)
        EXPECT_TRUE(at::allclose(m->forward(in), ref, 1e-6, 1e-6)) << "chunk 5 tokens, B=" << batch;
        m->set_feed_forward_chunking({true, 1, 0});  // one sample per piece
        EXPECT_TRUE(at::allclose(m->forward(in), ref, 1e-6, 1e-6)) << "chunk 1 sample, B=" << batch;
    }
    EXPECT_THROW(m->set_feed_forward_chunking({true, 0}), st::Error);
}

// #23: SimpleTuner's meaning of the chunking keys (simpletuner/helpers/models/wan/transformer.py):
// feed_forward_chunk_size counts along feed_forward_chunk_dim (0 = batch by default), so "2" never
// means 2-token pieces; auto is pieces of 2 samples when B >= 2, else the sequence in 4.
TEST(WanTransformerTest, FeedForwardPiecesFollowSimpleTunersMeaning) {
    auto pieces = [](const FeedForwardChunking& c, std::vector<int64_t> shape) {
        std::vector<std::vector<int64_t>> seen;
        const at::Tensor x = at::zeros(shape);
        const at::Tensor y = chunked_feed_forward(c, x, [&](const at::Tensor& p) {
            seen.push_back(p.sizes().vec());
            return p + 1;
        });
        EXPECT_TRUE(at::equal(y, x + 1));
        return seen;
    };
    using V = std::vector<std::vector<int64_t>>;
    EXPECT_EQ(pieces({}, {2, 8, 4}), (V{{2, 8, 4}}));  // off
    EXPECT_EQ(pieces({true, std::nullopt}, {6, 8, 4}), (V{{2, 8, 4}, {2, 8, 4}, {2, 8, 4}}));
    EXPECT_EQ(pieces({true, std::nullopt}, {3, 8, 4}), (V{{2, 8, 4}, {1, 8, 4}}));
    EXPECT_EQ(pieces({true, std::nullopt}, {1, 1950, 4}),
              (V{{1, 488, 4}, {1, 488, 4}, {1, 488, 4}, {1, 486, 4}}));
    // A size along the batch of 1 sample: nothing to cut (SimpleTuner: extent 1 is not chunked).
    EXPECT_EQ(pieces({true, 2, 0}, {1, 1950, 4}), (V{{1, 1950, 4}}));
    // A size >= the extent becomes extent / 2.
    EXPECT_EQ(pieces({true, 8, 0}, {4, 8, 4}), (V{{2, 8, 4}, {2, 8, 4}}));
    EXPECT_EQ(pieces({true, 512, 1}, {1, 1200, 4}), (V{{1, 512, 4}, {1, 512, 4}, {1, 176, 4}}));
}

TEST(WanTransformerTest, PerTokenConstantTimestepEqualsPerSample) {
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    torch::NoGradGuard ng;
    auto in = inputs(c, 2);
    at::Tensor ref = m->forward(in);
    in.timestep = at::full({2, 48}, 700.0);
    EXPECT_TRUE(at::allclose(m->forward(in), ref, 1e-5, 1e-5));
}

TEST(WanTransformerTest, Force21TimeEmbeddingCollapsesToFirstToken) {
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    torch::NoGradGuard ng;
    auto in = inputs(c);
    in.timestep = at::full({1, 48}, 800.0);
    in.timestep.slice(1, 0, 16).fill_(250.0);
    at::Tensor per_token = m->forward(in);
    m->set_force_2_1_time_embedding(true);
    at::Tensor forced = m->forward(in);
    auto in1 = in;
    in1.timestep = at::full({1}, 250.0);
    EXPECT_TRUE(at::allclose(forced, m->forward(in1), 1e-6, 1e-6));
    EXPECT_FALSE(at::allclose(forced, per_token, 1e-3, 1e-3));
}

TEST(WanTransformerTest, TapsPresentForEveryBlock) {
    auto c = WanTransformerConfig::tiny();
    auto m = make(c);
    torch::NoGradGuard ng;
    st::sdk::TensorMap taps;
    at::Tensor y = m->forward(inputs(c), &taps);
    for (int i = 0; i < c.num_layers; ++i) {
        ASSERT_TRUE(taps.count("blocks." + std::to_string(i) + ".out"));
        EXPECT_EQ(taps.at("blocks." + std::to_string(i) + ".out").sizes(), (std::vector<int64_t>{1, 48, 24}));
    }
    for (const char* k :
         {"patch_embed_out", "temb", "timestep_proj", "text_embedder_out", "rope_cos", "rope_sin"})
        EXPECT_TRUE(taps.count(k)) << k;
}

TEST(WanTransformerTest, SaveLoadRoundTripAndConfigRecoveredFromWeights) {
    for (const auto& c : {WanTransformerConfig::tiny(), tiny_i2v21()}) {
        auto m = make(c, 21);
        fs::path dir = temp_dir("roundtrip");
        save_transformer(*m, dir);
        auto src = st::sdk::SafetensorsFile::open(dir / "diffusion_pytorch_model.safetensors");
        EXPECT_EQ(WanTransformerConfig::detect_from_weights(*src), test::as_detected(c));
        auto loaded = load_transformer(dir, {.subfolder = "none"});
        EXPECT_EQ(loaded.model->config(), c);
        torch::NoGradGuard ng;
        auto in = inputs(c);
        EXPECT_TRUE(at::equal(loaded.model->forward(in), m->forward(in)));
        fs::remove_all(dir);
    }
}

TEST(WanTransformerTest, ExpertPairPicksByBoundary) {
    auto c = WanTransformerConfig::tiny();
    c.in_channels = 12;
    auto high = make(c, 1), low = make(c, 2);
    WanExpertPair pair(high, low, 0.875);
    EXPECT_EQ(pair.expert_for(875.0).ptr(), high.ptr());
    EXPECT_EQ(pair.expert_for(874.9).ptr(), low.ptr());
    torch::NoGradGuard ng;
    auto in = inputs(c);
    in.timestep = at::full({1}, 100.0);
    EXPECT_TRUE(at::equal(pair.forward(in), low->forward(in)));
    EXPECT_THROW(WanExpertPair(high, low, 1.5), st::Error);
}

}  // namespace
}  // namespace st::plugins::wan
