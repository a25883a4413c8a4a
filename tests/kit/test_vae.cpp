// Parity of the Wan 2.1 VAE with the diffusers AutoencoderKLWan golden (tests/golden/wan_vae, see
// PROVENANCE.md): encode (posterior mean / log-variance / normalised latents) at T=1 and T=9,
// decode at 1 and 3 latent frames, from both key layouts; plus causality of the chunked paths.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "st/error.h"
#include "st/kit/vae.h"
#include "st/safetensors.h"

#include "golden_compare.h"

namespace fs = std::filesystem;
using st::kit::WanVAE;
using st::kit::WanVAEConfig;
using st::kit::WanVAELayout;

namespace {

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "wan_vae";
// MANIFEST tolerance for wan_vae (fp32): |cpp - ref| <= atol + rtol * |ref|.
constexpr double kAtol = 2e-4;
constexpr double kRtol = 1e-4;

::testing::AssertionResult close_to(const at::Tensor& actual, const at::Tensor& expected,
                                    const std::string& name) {
    return st::plugins::wan::test::close_to(actual, expected, name, kAtol, kRtol);
}

class WanVAEGoldenTest : public ::testing::TestWithParam<WanVAELayout> {
  protected:
    void SetUp() override {
        inputs_ = st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors");
        outputs_ = st::sdk::SafetensorsFile::open(kDir / "outputs.safetensors");
    }
    WanVAE load_vae() {
        WanVAE vae(WanVAEConfig::from_file(kDir / "config.json"));
        const char* file = GetParam() == WanVAELayout::diffusers ? "diffusion_pytorch_model.safetensors"
                                                                 : "original_format.safetensors";
        vae.load(*st::sdk::SafetensorsFile::open(kDir / file), GetParam());
        return vae;
    }
    at::Tensor in(const std::string& name) { return inputs_->load(name).to(at::kFloat); }
    at::Tensor out(const std::string& name) { return outputs_->load(name).to(at::kFloat); }

    std::shared_ptr<st::sdk::SafetensorsFile> inputs_, outputs_;
};

TEST_P(WanVAEGoldenTest, EncodeMatchesReferenceAtT1AndT9) {
    WanVAE vae = load_vae();
    at::NoGradGuard no_grad;
    for (const std::string t : {"t1", "t9"}) {
        const auto posterior = vae.encode(in("video_" + t));
        EXPECT_TRUE(close_to(posterior.mean, out("posterior_mean_" + t), "posterior_mean_" + t));
        EXPECT_TRUE(close_to(posterior.logvar, out("posterior_logvar_" + t), "posterior_logvar_" + t));
        EXPECT_TRUE(close_to(posterior.mode(), out("posterior_mean_" + t), "mode_" + t));
        EXPECT_TRUE(close_to(vae.encode_normalized(in("video_" + t)), out("latents_normalized_" + t),
                             "latents_normalized_" + t));
    }
}

TEST_P(WanVAEGoldenTest, DecodeMatchesReferenceAt1And3LatentFrames) {
    WanVAE vae = load_vae();
    at::NoGradGuard no_grad;
    EXPECT_TRUE(close_to(vae.decode(in("latents_t1")), out("decoded_t1"), "decoded_t1"));
    const at::Tensor decoded = vae.decode(in("latents_t3"));
    EXPECT_EQ(decoded.sizes(), (std::vector<int64_t>{1, 3, 9, 16, 16}));
    EXPECT_TRUE(close_to(decoded, out("decoded_t3"), "decoded_t3"));
    // The reference clamps: some values sit exactly at the bounds, none beyond.
    EXPECT_LE(decoded.abs().max().item<double>(), 1.0);
}

TEST_P(WanVAEGoldenTest, DecodeNormalizedInvertsTheNormalisation) {
    WanVAE vae = load_vae();
    at::NoGradGuard no_grad;
    const at::Tensor raw = in("latents_t3");
    const at::Tensor normalized = vae.normalize_latents(raw);
    EXPECT_TRUE(close_to(vae.denormalize_latents(normalized), raw, "denormalize(normalize(z))"));
    EXPECT_TRUE(close_to(vae.decode_normalized(normalized), out("decoded_t3"), "decode_normalized"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, WanVAEGoldenTest,
                         ::testing::Values(WanVAELayout::diffusers, WanVAELayout::original),
                         [](const auto& info) { return std::string(st::kit::to_string(info.param)); });

TEST(WanVAETest, ChunkedEncodeIsCausal) {
    // Later frames never change earlier latents: encode(first 5 frames) == encode(9 frames)[:2].
    WanVAE vae(WanVAEConfig::from_file(kDir / "config.json"));
    vae.load(*st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors"));
    at::NoGradGuard no_grad;
    const at::Tensor video = st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors")->load("video_t9");
    const auto full = vae.encode(video);
    const auto head = vae.encode(video.narrow(2, 0, 5));
    EXPECT_TRUE(close_to(head.mean, full.mean.narrow(2, 0, 2), "causal encode mean"));
    EXPECT_TRUE(close_to(head.logvar, full.logvar.narrow(2, 0, 2), "causal encode logvar"));
}

TEST(WanVAETest, ChunkedDecodeIsCausalAndDeterministic) {
    WanVAE vae(WanVAEConfig::from_file(kDir / "config.json"));
    vae.load(*st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors"));
    at::NoGradGuard no_grad;
    const at::Tensor latents =
        st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors")->load("latents_t3");
    const at::Tensor full = vae.decode(latents);
    EXPECT_TRUE(at::equal(full, vae.decode(latents)));  // the cache is per call, no state leaks
    const at::Tensor head = vae.decode(latents.narrow(2, 0, 2));
    EXPECT_EQ(head.size(2), 5);
    EXPECT_TRUE(close_to(head, full.narrow(2, 0, 5), "causal decode"));
}

}  // namespace
