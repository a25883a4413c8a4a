// model.wan_s2v@1 in process (WanS2VFamily on a make-model tiny pipeline): the Encoders half the data
// backend calls, predict as the trainer calls it (reference = first clean latent frame, 4 audio
// frames per latent frame, no motion), gradients, the ABI 1.1/1.2 methods, errors naming the tensor.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "hf_golden.h"
#include "s2v_family.h"
#include "st/bucket_alignment.h"
#include "st/error.h"

namespace {

namespace fs = std::filesystem;
using namespace st::plugins::wan_s2v;
using st::sdk::ConfigView;
using st::sdk::TensorMap;

ConfigView config_of(const nlohmann::json& j) {
    return ConfigView(std::make_shared<const nlohmann::json>(j));
}

class S2VFamilyTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        root_ = fs::path(ST_TEST_BINARY_DIR) / "tmp-s2v-family" / std::to_string(::getpid());
        fs::remove_all(root_);
        write_s2v_model("tiny", root_ / "model", 5);
    }
    static void TearDownTestSuite() { fs::remove_all(root_); }

    static std::unique_ptr<WanS2VFamily> loaded(bool training = true) {
        auto f = std::make_unique<WanS2VFamily>();
        st::sdk::ModelLoadRequest req;
        req.path = root_ / "model";
        req.config = config_of({{"gradient_checkpointing", true}});
        req.training = training;
        f->load(req);
        return f;
    }
    static fs::path root_;
};
fs::path S2VFamilyTest::root_;

// #23: enable_chunked_feed_forward was silently ignored by S2V; its blocks now chunk as Wan's do.
TEST_F(S2VFamilyTest, ChunkedFeedForwardKeysReachTheBlocks) {
    std::set<std::string> keys;
    for (const auto& spec : s2v_option_specs()) keys.insert(spec.name);
    for (const char* k : {"enable_chunked_feed_forward", "feed_forward_chunk_size", "feed_forward_chunk_dim"})
        EXPECT_TRUE(keys.count(k)) << k;
    WanS2VFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = root_ / "model";
    req.config = config_of({{"enable_chunked_feed_forward", true},
                            {"feed_forward_chunk_size", 64},
                            {"feed_forward_chunk_dim", 1}});
    f.load(req);
    int blocks = 0;
    for (const auto& item : f.trainable().named_modules()) {
        const auto* block =
            dynamic_cast<const st::plugins::wan::WanTransformerBlockImpl*>(item.value().get());
        if (block == nullptr) continue;
        ++blocks;
        EXPECT_TRUE(block->chunking.enabled) << item.key();
        EXPECT_EQ(block->chunking.chunk_size.value_or(-1), 64) << item.key();
        EXPECT_EQ(block->chunking.chunk_dim, 1) << item.key();
    }
    EXPECT_GT(blocks, 0);
}

TEST_F(S2VFamilyTest, ProbeAndMakeModelLayout) {
    WanS2VFamily f;
    const auto p = f.probe(root_ / "model");
    EXPECT_TRUE(p.loadable) << p.reason;
    EXPECT_NE(p.variant.find("diffusers pipeline"), std::string::npos) << p.variant;
    for (const char* part : {"model_index.json", "transformer/config.json", "audio_encoder/config.json",
                             "audio_encoder/model.safetensors", "vae/config.json", "text_encoder/config.json",
                             "tokenizer", "scheduler/scheduler_config.json"})
        EXPECT_TRUE(fs::exists(root_ / "model" / part)) << part;
    const auto bad = f.probe(root_);
    EXPECT_FALSE(bad.loadable);
    EXPECT_FALSE(bad.reason.empty());
}

TEST_F(S2VFamilyTest, EncodersGiveWhatPredictTakes) {
    auto fp = loaded();
    WanS2VFamily& f = *fp;
    EXPECT_EQ(f.spatial_multiple(), 16);
    EXPECT_EQ(f.temporal_multiple(), 4);
    EXPECT_EQ(f.audio_sample_rate(), 16000);
    const auto inputs = f.sampling_inputs();
    ASSERT_EQ(inputs.size(), 2u);
    EXPECT_EQ(inputs[0].kind, st::sdk::MediaKind::image);
    EXPECT_EQ(inputs[1].kind, st::sdk::MediaKind::audio);
    EXPECT_EQ(f.sample_media(), std::vector<st::sdk::MediaKind>{st::sdk::MediaKind::audio});
    // Capabilities by id, as the host finds them.
    EXPECT_NE(st::sdk::find_capability<st::sdk::AudioConditioning>(f), nullptr);
    EXPECT_NE(st::sdk::find_capability<st::sdk::GuidancePolicy>(f), nullptr);
    EXPECT_NE(st::sdk::find_capability<st::sdk::ImageConditioning>(f), nullptr);
    EXPECT_EQ(st::sdk::find_capability<st::sdk::ExpertSchedule>(f), nullptr);
    const auto* align = st::sdk::find_capability<st::sdk::BucketAlignment>(f);
    ASSERT_NE(align, nullptr);
    EXPECT_EQ(align->bucket_alignment(), 32);
    EXPECT_TRUE(align->bucket_alignment_required());
    // The unconditional CFG branch (upstream audio_input * 0): negative text, silent audio, the same
    // reference image.
    const TensorMap cond{{"prompt_embeds", at::ones({1, 3, 2})},
                         {"audio_embeds", at::ones({1, 2, 3, 4})},
                         {"image_latents", at::ones({1, 16, 1, 2, 2})}};
    const TensorMap uncond = f.unconditional(cond, {{"prompt_embeds", at::zeros({1, 3, 2})}});
    EXPECT_TRUE(uncond.at("prompt_embeds").eq(0).all().item<bool>());
    EXPECT_TRUE(uncond.at("audio_embeds").eq(0).all().item<bool>());
    EXPECT_TRUE(uncond.at("image_latents").eq(1).all().item<bool>());
    auto gen = at::detail::createCPUGenerator(4);
    const at::Tensor pixels = at::rand({1, 3, 9, 32, 32}, gen) * 2 - 1;
    TensorMap video = f.encode_video(pixels);
    ASSERT_EQ(video.at("latents").sizes(), (std::vector<int64_t>{1, 16, 3, 4, 4}));
    ASSERT_EQ(video.at("image_latents").sizes(), (std::vector<int64_t>{1, 16, 1, 4, 4}));
    EXPECT_TRUE(video.at("image_latents").equal(video.at("latents").narrow(2, 0, 1)));
    // 9 frames at 16 fps = 0.5625 s of audio -> 4 audio frames per latent frame (12).
    const at::Tensor wave = at::sin(at::arange(9000, at::kFloat) * 0.05).unsqueeze(0);
    TensorMap audio = f.encode_audio(wave, 16.0, 9);
    const WanS2VConfig& cfg = f.checkpoint_info().config;
    ASSERT_EQ(audio.at("audio_embeds").sizes(),
              (std::vector<int64_t>{1, cfg.num_weighted_avg_layers, cfg.audio_dim, 12}));
    EXPECT_TRUE(at::isfinite(audio.at("audio_embeds")).all().item<bool>());
    // Batches are encoded sample by sample: the same as one at a time.
    TensorMap two = f.encode_audio(at::cat({wave, wave * 0.5}, 0), 16.0, 9);
    EXPECT_TRUE(at::allclose(two.at("audio_embeds")[0], audio.at("audio_embeds")[0]));
    TensorMap text = f.encode_text({"a person talking"});
    EXPECT_EQ(text.at("prompt_embeds").size(2), cfg.text_dim);

    st::sdk::PredictInputs in;
    in.noisy = at::randn({1, 16, 3, 4, 4}, gen);
    in.timesteps = at::full({1}, 700.0);
    in.conditioning = {{"prompt_embeds", text.at("prompt_embeds")},
                       {"audio_embeds", audio.at("audio_embeds")},
                       {"image_latents", video.at("image_latents")}};
    in.taps = {"blocks.1.out"};
    const auto out = f.predict(in);
    ASSERT_EQ(out.velocity.sizes(), in.noisy.sizes());
    EXPECT_EQ(out.taps.at("blocks.1.out").size(1), 3 * 2 * 2) << "taps hold the video tokens only";
    // The audio matters: silence changes the prediction.
    st::sdk::PredictInputs silent = in;
    silent.conditioning["audio_embeds"] = at::zeros_like(audio.at("audio_embeds"));
    EXPECT_FALSE(at::allclose(f.predict(silent).velocity, out.velocity));
    // Gradients reach the audio path and the injectors.
    torch::autograd::backward({out.velocity.square().mean()});
    int64_t with_grad = 0;
    for (const auto& p : f.trainable().named_parameters()) {
        if ((p.key().find("audio_injector") != std::string::npos ||
             p.key().find("causal_audio_encoder") != std::string::npos) &&
            p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0)
            ++with_grad;
    }
    EXPECT_GT(with_grad, 10);
}

TEST_F(S2VFamilyTest, PredictNamesMissingConditioning) {
    auto fp = loaded(false);
    WanS2VFamily& f = *fp;
    st::sdk::PredictInputs in;
    in.noisy = at::randn({1, 16, 2, 4, 4});
    in.timesteps = at::full({1}, 500.0);
    in.conditioning = {{"prompt_embeds", at::randn({1, 8, f.checkpoint_info().config.text_dim})}};
    try {
        f.predict(in);
        FAIL() << "no audio_embeds";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("audio_embeds"), std::string::npos) << e.what();
    }
    const auto& cfg = f.checkpoint_info().config;
    in.conditioning["audio_embeds"] = at::randn({1, cfg.num_weighted_avg_layers, cfg.audio_dim, 8});
    try {
        f.predict(in);
        FAIL() << "no image_latents";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("image_latents"), std::string::npos) << e.what();
    }
    in.conditioning["audio_embeds"] = at::randn({1, cfg.num_weighted_avg_layers, cfg.audio_dim, 5});
    in.conditioning["image_latents"] = at::randn({1, 16, 1, 4, 4});
    EXPECT_THROW(f.predict(in), st::Error) << "5 audio frames for 2 latent frames (needs 8)";
    EXPECT_THROW(f.encode_audio(at::zeros({1, 16000}), 16.0, 10), st::Error) << "10 is not 4k+1";
}

TEST_F(S2VFamilyTest, NativeLoraNamesLatentShapeAndReferenceImage) {
    // (LoRA file and save_trainable round trips: the conformance battery, test_plugin_conformance.cpp)
    auto fp = loaded(false);
    WanS2VFamily& f = *fp;
    const auto names = f.lora_name_map();
    EXPECT_EQ(names("blocks.0.attn1.to_q"), "blocks.0.self_attn.q");
    EXPECT_EQ(names("audio_injector.injector.1.to_out.0"), "audio_injector.injector.1.o");
    EXPECT_EQ(f.latent_shape(17, 64, 48), (std::vector<int64_t>{16, 5, 8, 6}));
    EXPECT_THROW(f.latent_shape(17, 40, 48), st::Error);
    // The reference image: a one-frame video through the VAE.
    const TensorMap ref = f.encode_conditioning_image(at::zeros({1, 3, 32, 32}), 17);
    EXPECT_EQ(ref.at("image_latents").sizes(), (std::vector<int64_t>{1, 16, 1, 4, 4}));
    EXPECT_EQ(f.decode_latents(at::zeros({1, 16, 2, 4, 4})).sizes(), (std::vector<int64_t>{1, 3, 5, 32, 32}));
}

TEST_F(S2VFamilyTest, FlavourAndMissingAudioEncoderAreClearErrors) {
    WanS2VFamily f;
    st::sdk::ModelLoadRequest req;
    req.path = root_ / "model";
    req.config = config_of({{"model_flavour", "t2v-480p-1.3b-2.1"}});
    try {
        f.load(req);
        FAIL();
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("s2v-14b-2.2"), std::string::npos) << e.what();
    }
    req.config = config_of({{"pretrained_audio_encoder_model_name_or_path", (root_ / "nowhere").string()}});
    EXPECT_THROW(f.load(req), st::Error);
}

}  // namespace

namespace {

using st::plugins::wan::test::expect_hf_parity;
using st::plugins::wan::test::host_forward;

TensorMap load_all(const fs::path& file) {
    auto src = st::sdk::open_tensor_source(file);
    TensorMap m;
    for (const auto& i : src->infos()) m[i.name] = src->load(i.name);
    return m;
}

TEST(S2VHfGoldenTest, AudioEncoderComponentMatchesTransformersWav2Vec2Model) {
    // tests/golden/hf_wav2vec2: transformers Wav2Vec2Model(input_values [, attention_mask],
    // output_hidden_states=True); run A without a mask, run B a padded batch with its mask.
    const fs::path dir = fs::path(ST_TEST_GOLDEN_DIR) / "hf_wav2vec2";
    const TensorMap in = load_all(dir / "inputs.safetensors");
    const TensorMap ref = load_all(dir / "outputs.safetensors");
    for (const std::string run : {"a", "b"}) {
        TensorMap inputs{{"input_values", in.at("input_values_" + run)}};
        if (run == "b") inputs["attention_mask"] = in.at("attention_mask_b");
        const TensorMap out = host_forward("wan_s2v", dir, "audio_encoder", inputs, "wav2vec2_" + run);
        std::map<std::string, std::string> names{{"last_hidden_state", run + "_last_hidden_state"},
                                                 {"extract_features", run + "_extract_features"}};
        for (int i = 0; i <= 3; ++i)
            names["hidden_states_" + std::to_string(i)] = run + "_hidden_states_" + std::to_string(i);
        if (run == "b") names["frame_mask"] = "b_frame_mask";
        expect_hf_parity(out, ref, names);
    }
}

}  // namespace
