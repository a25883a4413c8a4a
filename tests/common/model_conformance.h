// The conformance battery every model family runs (STYLE.md 19, diffusers' model tester mixins): a
// typed GoogleTest suite instantiated once per family and preset with a small traits struct. It
// drives the family only through st::sdk::ModelFamily and its capabilities, the way the host and the
// data backend do: make-model writes a model in the real layout, probe accepts it, load is strict,
// a batch is built exactly as the data backend caches it (encode_video, encode_text, and the audio of
// sample_media through audio_conditioning@1), predict keeps the latent shape and is deterministic,
// gradients reach every trainable parameter, a LoRA survives a file round trip in the family's own
// names, and save_trainable writes a network that loads back to the same predictions.
//
// Traits (one struct per family and preset):
//   using Family = ...;                           // the st::sdk::ModelFamily implementation
//   static constexpr const char* kName = "...";   // scratch folder name
//   static constexpr const char* kPreset = "...";  // make-model preset
//   static nlohmann::json load_config();          // resolved-config keys the family reads at load
//   static std::filesystem::path weights_file(const std::filesystem::path& model);  // the trained network's
//   file static nlohmann::json reload_config(const std::filesystem::path& saved);  // load the saved network
//   instead
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/module.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>

#include "st/error.h"
#include "st/lora.h"
#include "st/model.h"
#include "st/safetensors.h"

namespace st_test {

namespace conformance {

namespace fs = std::filesystem;

inline st::sdk::ConfigView view(const nlohmann::json& j) {
    return st::sdk::ConfigView(std::make_shared<const nlohmann::json>(j));
}

inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

/// Frames and size of the test clip (Wan-style 4k+1 frames, multiples of 16).
constexpr int64_t kFrames = 5, kHeight = 32, kWidth = 32;

}  // namespace conformance

template <typename Traits>
class ModelConformanceTest : public ::testing::Test {
  protected:
    using Family = typename Traits::Family;

    static void SetUpTestSuite() {
        root_ = std::filesystem::path(ST_TEST_BINARY_DIR) / "tmp-conformance" /
                (std::string(Traits::kName) + "-" + std::to_string(::getpid()));
        std::filesystem::remove_all(root_);
        Family maker;
        tools(maker).make_model(Traits::kPreset, root_ / "model", 5);
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(root_); }

    static st::sdk::ModelTools& tools(Family& f) {
        auto* t = st::sdk::find_capability<st::sdk::ModelTools>(f);
        if (!t) throw std::runtime_error("the family offers no tools@1");
        return *t;
    }

    /// A freshly loaded family (fp32, CPU).
    static std::unique_ptr<Family> load(bool training, const nlohmann::json& extra = nlohmann::json::object(),
                                        const std::filesystem::path& model = {}) {
        nlohmann::json config = Traits::load_config();
        for (const auto& [k, v] : extra.items()) config[k] = v;
        auto f = std::make_unique<Family>();
        st::sdk::ModelLoadRequest req;
        req.path = model.empty() ? root_ / "model" : model;
        req.config = conformance::view(config);
        req.training = training;
        f->load(req);
        return f;
    }

    /// A batch of one clip as the data backend would cache it, and noisy latents for it.
    static st::sdk::PredictInputs batch(Family& f, uint64_t seed) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
        using conformance::kFrames, conformance::kHeight, conformance::kWidth;
        const at::Tensor pixels = at::rand({1, 3, kFrames, kHeight, kWidth}, gen) * 2 - 1;
        st::sdk::TensorMap enc = f.encode_video(pixels);
        const at::Tensor latents = enc.at("latents");
        std::vector<int64_t> want{1};
        for (int64_t d : f.latent_shape(kFrames, kHeight, kWidth)) want.push_back(d);
        EXPECT_EQ(latents.sizes(), at::IntArrayRef(want)) << "encode_video and latent_shape disagree";
        st::sdk::PredictInputs in;
        for (auto& [k, v] : enc)
            if (k != "latents") in.conditioning[k] = v;
        for (auto& [k, v] : f.encode_text({"a red ball bouncing on a table"})) in.conditioning[k] = v;
        const auto media = f.sample_media();
        if (std::find(media.begin(), media.end(), st::sdk::MediaKind::audio) != media.end()) {
            auto* audio = st::sdk::find_capability<st::sdk::AudioConditioning>(f);
            EXPECT_NE(audio, nullptr) << "samples carry audio but the family has no audio_conditioning@1";
            if (audio) {
                const int64_t n = kFrames * audio->audio_sample_rate() / 16;  // the clip at 16 fps
                const at::Tensor wave = at::sin(at::arange(n, at::kFloat) * 0.05).unsqueeze(0) * 0.5;
                for (auto& [k, v] : audio->encode_audio(wave, 16.0, kFrames)) in.conditioning[k] = v;
            }
        }
        in.noisy = at::randn(latents.sizes(), gen);
        in.timesteps = at::full({1}, 700.0);
        return in;
    }

    static std::filesystem::path root_;
};

template <typename Traits>
std::filesystem::path ModelConformanceTest<Traits>::root_;

TYPED_TEST_SUITE_P(ModelConformanceTest);

TYPED_TEST_P(ModelConformanceTest, MakeModelIsProbedAndForeignPathsAreRefusedWithoutThrowing) {
    typename TestFixture::Family f;
    auto& tools = TestFixture::tools(f);
    EXPECT_FALSE(tools.presets().empty());
    const auto ok = tools.probe(TestFixture::root_ / "model");
    EXPECT_TRUE(ok.loadable) << ok.reason;
    EXPECT_FALSE(ok.variant.empty());
    const std::filesystem::path empty = TestFixture::root_ / "empty";
    std::filesystem::create_directories(empty);
    st::sdk::ProbeResult bad;
    EXPECT_NO_THROW(bad = tools.probe(empty));
    EXPECT_FALSE(bad.loadable);
    EXPECT_FALSE(bad.reason.empty());
    EXPECT_NO_THROW(bad = tools.probe(TestFixture::root_ / "does-not-exist"));
    EXPECT_FALSE(bad.loadable);
}

TYPED_TEST_P(ModelConformanceTest, LoadIsStrictAboutMissingAndUnexpectedTensors) {
    namespace fs = std::filesystem;
    const fs::path copy = TestFixture::root_ / "strict";
    fs::remove_all(copy);
    fs::copy(TestFixture::root_ / "model", copy, fs::copy_options::recursive);
    const fs::path file = TypeParam::weights_file(copy);
    auto src = st::sdk::SafetensorsFile::open(file);
    st::sdk::TensorMap all;
    for (const auto& i : src->infos()) all[i.name] = src->load(i.name);
    src.reset();
    ASSERT_GT(all.size(), 2u);
    const std::string dropped = std::prev(all.end())->first;
    st::sdk::TensorMap missing = all;
    missing.erase(dropped);
    st::sdk::save_safetensors(file, missing);
    const std::string e1 = conformance::error_of([&] { TestFixture::load(false, {}, copy); });
    EXPECT_NE(e1.find(dropped), std::string::npos) << "a missing tensor must be named: " << e1;
    st::sdk::TensorMap extra = all;
    extra["blocks.0.not_a_tensor.weight"] = at::zeros({2});
    st::sdk::save_safetensors(file, extra);
    const std::string e2 = conformance::error_of([&] { TestFixture::load(false, {}, copy); });
    EXPECT_NE(e2.find("not_a_tensor"), std::string::npos) << "an unexpected tensor must be named: " << e2;
    fs::remove_all(copy);
}

TYPED_TEST_P(ModelConformanceTest, PredictKeepsTheLatentShapeIsDeterministicAndTrainsEveryParameter) {
    auto f = TestFixture::load(true);
    EXPECT_FALSE(f->cache_identity().empty());
    EXPECT_EQ(f->cache_identity(), f->cache_identity());
    const auto in = TestFixture::batch(*f, 1);
    const at::Tensor v = f->predict(in).velocity;
    ASSERT_EQ(v.sizes(), in.noisy.sizes());
    EXPECT_TRUE(v.isfinite().all().item<bool>());
    {
        at::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(f->predict(in).velocity, v.detach())) << "predict must be deterministic";
    }
    torch::autograd::backward({v.square().mean()});
    for (const auto& p : f->trainable().named_parameters()) {
        if (!TypeParam::gradient_expected(p.key())) continue;
        EXPECT_TRUE(p.value().grad().defined()) << p.key() << " gets no gradient";
    }
    // decode_latents gives pixels of the clip's size.
    const at::Tensor px = f->decode_latents(in.noisy);
    EXPECT_EQ(px.sizes(),
              (std::vector<int64_t>{1, 3, conformance::kFrames, conformance::kHeight, conformance::kWidth}));
}

TYPED_TEST_P(ModelConformanceTest, LoraFileRoundTripInTheFamilysOwnNames) {
    auto f = TestFixture::load(false);
    st::sdk::LoraConfig lc;
    lc.rank = 2;
    lc.seed = 3;
    const auto injected = st::sdk::inject_lora(f->trainable(), f->default_lora_targets(), lc);
    ASSERT_FALSE(injected.empty());
    {
        at::NoGradGuard no_grad;
        auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
        for (auto& [name, t] : st::sdk::lora_parameters(f->trainable()))
            if (name.find("lora_B") != std::string::npos) t.copy_(at::randn(t.sizes(), gen) * 0.1);
    }
    const auto in = TestFixture::batch(*f, 2);
    at::NoGradGuard no_grad;
    const at::Tensor want = f->predict(in).velocity;
    const auto names = f->lora_name_map();
    const std::filesystem::path file = TestFixture::root_ / "lora.safetensors";
    st::sdk::save_lora(file, f->trainable(),
                       names ? st::sdk::LoraFormat::comfyui : st::sdk::LoraFormat::diffusers, names);
    auto g = TestFixture::load(false);
    const auto loaded = st::sdk::load_lora(file, g->trainable(), 1.0, g->lora_name_map(), /*merge=*/false);
    EXPECT_EQ(loaded.size(), injected.size());
    EXPECT_TRUE(at::allclose(g->predict(in).velocity, want, 1e-5, 1e-6));
}

TYPED_TEST_P(ModelConformanceTest, SavedTrainableNetworkLoadsBackToTheSamePredictions) {
    auto f = TestFixture::load(false);
    {
        at::NoGradGuard no_grad;
        for (auto& p : f->trainable().parameters()) p.add_(0.01);  // not the make-model weights
    }
    const std::filesystem::path saved = TestFixture::root_ / "saved" / f->trainable_folder();
    f->save_trainable(saved);
    auto g = TestFixture::load(false, TypeParam::reload_config(saved));
    const auto in = TestFixture::batch(*f, 3);
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::allclose(g->predict(in).velocity, f->predict(in).velocity, 1e-6, 1e-7));
}

REGISTER_TYPED_TEST_SUITE_P(ModelConformanceTest, MakeModelIsProbedAndForeignPathsAreRefusedWithoutThrowing,
                            LoadIsStrictAboutMissingAndUnexpectedTensors,
                            PredictKeepsTheLatentShapeIsDeterministicAndTrainsEveryParameter,
                            LoraFileRoundTripInTheFamilysOwnNames,
                            SavedTrainableNetworkLoadsBackToTheSamePredictions);

}  // namespace st_test
