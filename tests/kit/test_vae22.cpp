// Parity of the Wan 2.2 VAE (is_residual, 2x2 patchify) with the diffusers AutoencoderKLWan golden
// (tests/golden/wan_vae22, see PROVENANCE.md): encode at T=1 and T=5, decode at 1 and 2 latent
// frames, both key layouts; key set / key table; gradients reach every parameter.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <string>

#include "st/kit/vae.h"
#include "st/safetensors.h"

#include "golden_compare.h"

namespace fs = std::filesystem;
using namespace st::kit;

namespace {

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "wan_vae22";
// MANIFEST tolerance for wan_vae22 (fp32): |cpp - ref| <= atol + rtol * |ref|.
constexpr double kAtol = 2e-4;
constexpr double kRtol = 1e-4;

::testing::AssertionResult close_to(const at::Tensor& actual, const at::Tensor& expected,
                                    const std::string& name) {
    return st::plugins::wan::test::close_to(actual, expected, name, kAtol, kRtol);
}

WanVAE load_vae(WanVAELayout layout) {
    WanVAE vae(WanVAEConfig::from_file(kDir / "config.json"));
    const char* file = layout == WanVAELayout::diffusers ? "diffusion_pytorch_model.safetensors"
                                                         : "original_format.safetensors";
    vae.load(*st::sdk::SafetensorsFile::open(kDir / file), layout);
    return vae;
}

class WanVAE22GoldenTest : public ::testing::TestWithParam<WanVAELayout> {};

TEST_P(WanVAE22GoldenTest, EncodeAndDecodeMatchReference) {
    WanVAE vae = load_vae(GetParam());
    const auto inputs = st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors");
    const auto outputs = st::sdk::SafetensorsFile::open(kDir / "outputs.safetensors");
    at::NoGradGuard no_grad;
    for (const std::string t : {"t1", "t5"}) {
        const auto posterior = vae.encode(inputs->load("video_" + t));
        EXPECT_TRUE(close_to(posterior.mean, outputs->load("posterior_mean_" + t), "posterior_mean_" + t));
        EXPECT_TRUE(
            close_to(posterior.logvar, outputs->load("posterior_logvar_" + t), "posterior_logvar_" + t));
        EXPECT_TRUE(close_to(vae.normalize_latents(posterior.mean), outputs->load("latents_normalized_" + t),
                             "latents_normalized_" + t));
    }
    EXPECT_TRUE(close_to(vae.decode(inputs->load("latents_t1")), outputs->load("decoded_t1"), "decoded_t1"));
    const at::Tensor decoded = vae.decode(inputs->load("latents_t2"));
    EXPECT_EQ(decoded.sizes(), (std::vector<int64_t>{1, 3, 5, 32, 32}));
    EXPECT_TRUE(close_to(decoded, outputs->load("decoded_t2"), "decoded_t2"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, WanVAE22GoldenTest,
                         ::testing::Values(WanVAELayout::diffusers, WanVAELayout::original),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(WanVAE22Test, ConfigAndKeysMatchTheGoldenFiles) {
    const WanVAEConfig config = WanVAEConfig::from_file(kDir / "config.json");
    EXPECT_EQ(config.to_json(), WanVAEConfig::tiny22().to_json());
    EXPECT_EQ(config.spatial_compression(), 16);
    EXPECT_EQ(config.pixel_in_channels(), 3);
    EXPECT_EQ(WanVAEConfig::wan22().latents_mean.size(), 48u);
    WanVAE vae(config);
    const auto diffusers = st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors");
    const auto original = st::sdk::SafetensorsFile::open(kDir / "original_format.safetensors");
    std::set<std::string> file_keys, module_keys, original_keys, mapped_keys;
    for (const auto& info : diffusers->infos()) file_keys.insert(info.name);
    for (const auto& p : vae.module()->named_parameters()) module_keys.insert(p.key());
    EXPECT_EQ(module_keys.size(), 196u);
    EXPECT_EQ(module_keys, file_keys);
    const auto map = wan_vae_original_key_map(*vae.module(), config);
    for (const auto& info : original->infos()) original_keys.insert(info.name);
    for (const auto& [orig, diff] : map) {
        mapped_keys.insert(orig);
        EXPECT_TRUE(at::equal(original->load(orig), diffusers->load(diff))) << orig;
    }
    EXPECT_EQ(mapped_keys, original_keys);
}

TEST(WanVAE22Test, GradientsReachEveryParameterAndDecodeIsCausal) {
    WanVAE vae = load_vae(WanVAELayout::diffusers);
    at::manual_seed(0);
    const at::Tensor video = (at::rand({1, 3, 5, 32, 32}) * 2 - 1).requires_grad_(true);
    const at::Tensor latents = at::randn({1, 4, 2, 2, 2});
    const auto posterior = vae.encode(video);
    const at::Tensor decoded = vae.decode(latents);
    (posterior.mean.square().sum() + posterior.logvar.mean() + decoded.square().mean()).backward();
    EXPECT_TRUE(at::isfinite(video.grad()).all().item<bool>());
    for (const auto& p : vae.module()->named_parameters()) {
        const at::Tensor& g = p.value().grad();
        ASSERT_TRUE(g.defined()) << "no gradient for " << p.key();
        EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << p.key();
        EXPECT_GT(g.abs().sum().item<double>(), 0.0) << "zero gradient for " << p.key();
    }
    at::NoGradGuard no_grad;
    EXPECT_TRUE(
        close_to(vae.decode(latents.narrow(2, 0, 1)), decoded.detach().narrow(2, 0, 1), "causal decode"));
}

}  // namespace
