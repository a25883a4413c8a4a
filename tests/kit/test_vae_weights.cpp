// Wan 2.1 VAE weights and config: the real structure's key set, the original<->diffusers key table,
// config.json parsing, random-write/load round trip, gradients through encode and decode, and the
// error paths (wrong shape, missing/unexpected tensors, bad config, bad input shapes).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "st/error.h"
#include "st/kit/vae.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace fs = std::filesystem;
using namespace st::kit;

namespace {

const fs::path kDir = fs::path(ST_TEST_GOLDEN_DIR) / "wan_vae";

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "st_wan_vae_XXXXXX").string();
        path_ = ::mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

/// Runs `fn`, expects st::Error, and checks that its text contains every `needle`.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
    try {
        fn();
        ADD_FAILURE() << "expected st::Error";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        for (const auto& needle : needles)
            EXPECT_NE(what.find(needle), std::string::npos) << "'" << needle << "' not in: " << what;
    }
}

st::sdk::TensorMap read_all(const st::sdk::TensorSource& source) {
    st::sdk::TensorMap map;
    for (const auto& info : source.infos()) map.emplace(info.name, source.load(info.name));
    return map;
}

WanVAE golden_vae() {
    WanVAE vae(WanVAEConfig::from_file(kDir / "config.json"));
    vae.load(*st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors"));
    return vae;
}

TEST(WanVAEConfigTest, GoldenConfigParsesToTinyPreset) {
    const WanVAEConfig c = WanVAEConfig::from_file(kDir / "config.json");
    EXPECT_EQ(c.to_json(), WanVAEConfig::tiny().to_json());
    EXPECT_EQ(c.encoder_dims(), (std::vector<int64_t>{2, 2, 4, 8, 8}));
    EXPECT_EQ(c.decoder_dims(), (std::vector<int64_t>{8, 8, 8, 4, 2}));
    EXPECT_EQ(c.spatial_compression(), 8);
    // to_json round trip.
    EXPECT_EQ(WanVAEConfig::from_json(c.to_json()).to_json(), c.to_json());
}

TEST(WanVAEConfigTest, RejectsUnknownKeysBadTypesAndInconsistentValues) {
    nlohmann::json j = WanVAEConfig::tiny().to_json();
    j["_diffusers_version"] = "0.33.0";  // '_' keys are ignored
    EXPECT_NO_THROW(WanVAEConfig::from_json(j));
    auto with = [&](const std::string& key, nlohmann::json value) {
        nlohmann::json k = j;
        k[key] = std::move(value);
        return k;
    };
    expect_error([&] { WanVAEConfig::from_json(with("base_dimm", 3), "vae/config.json"); },
                 {"vae/config.json", "unknown key 'base_dimm'"});
    expect_error([&] { WanVAEConfig::from_json(with("z_dim", "16")); }, {"'z_dim'", "integer", "\"16\""});
    expect_error([&] { WanVAE(WanVAEConfig::from_json(with("patch_size", 2))); },
                 {"in/out_channels 3/3", "multiples of patch_size^2 = 4"});
    expect_error([&] { WanVAE(WanVAEConfig::from_json(with("scale_factor_spatial", 16))); },
                 {"scale_factor_spatial 16", "factor 8"});
    expect_error(
        [&] {
            WanVAE(WanVAEConfig::from_json(with("latents_std", {1.0, 2.0})));
        },
        {"latents_mean/latents_std", "2", "z_dim = 4"});
    expect_error([&] { WanVAE(WanVAEConfig::from_json(with("temperal_downsample", {true}))); },
                 {"temperal_downsample has 1 entries", "expected len(dim_mult) - 1 = 3"});
}

TEST(WanVAEWeightsTest, RealConfigHasTheReference194Tensors) {
    // models.md 7.1: 194 tensors, 126.9 M parameters (checked against the reference implementation).
    AutoencoderKLWanImpl real(WanVAEConfig::wan21());
    const auto params = real.named_parameters();
    EXPECT_EQ(params.size(), 194u);
    int64_t total = 0;
    for (const auto& p : params) total += p.value().numel();
    EXPECT_NEAR(static_cast<double>(total) / 1e6, 126.9, 0.05);
    EXPECT_EQ(params["encoder.conv_out.weight"].sizes(), (std::vector<int64_t>{32, 384, 3, 3, 3}));
    EXPECT_EQ(params["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"].sizes(),
              (std::vector<int64_t>{384, 192, 1, 1, 1}));
    EXPECT_EQ(params["decoder.up_blocks.0.upsamplers.0.time_conv.weight"].sizes(),
              (std::vector<int64_t>{768, 384, 3, 1, 1}));
}

TEST(WanVAEWeightsTest, ModuleNamesEqualGoldenFileKeysInBothLayouts) {
    WanVAE vae(WanVAEConfig::tiny());
    const auto diffusers = st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors");
    const auto original = st::sdk::SafetensorsFile::open(kDir / "original_format.safetensors");
    std::set<std::string> file_keys, module_keys;
    for (const auto& info : diffusers->infos()) file_keys.insert(info.name);
    const auto params = vae.module()->named_parameters();
    for (const auto& p : params) module_keys.insert(p.key());
    EXPECT_EQ(module_keys, file_keys);

    const auto map = wan_vae_original_key_map(*vae.module(), vae.config());
    std::set<std::string> mapped_keys;
    for (const auto& [orig, diff] : map) mapped_keys.insert(orig);
    std::set<std::string> original_keys;
    for (const auto& info : original->infos()) original_keys.insert(info.name);
    EXPECT_EQ(mapped_keys, original_keys);
    // Same tensors under both names (the golden's original file was produced with convert_vae()).
    for (const auto& [orig, diff] : map)
        EXPECT_TRUE(at::equal(original->load(orig), diffusers->load(diff))) << orig;
    EXPECT_EQ(
        wan_vae_diffusers_to_original("decoder.up_blocks.2.upsamplers.0.resample.1.weight", vae.config()),
        "decoder.upsamples.11.resample.1.weight");
    EXPECT_EQ(detect_wan_vae_layout(*diffusers), WanVAELayout::diffusers);
    EXPECT_EQ(detect_wan_vae_layout(*original), WanVAELayout::original);
}

TEST(WanVAEWeightsTest, WriteRandomThenLoadRoundTrip) {
    TempDir tmp;
    const WanVAEConfig config = WanVAEConfig::tiny();
    write_random_wan_vae(tmp.path() / "a", config, 7);
    write_random_wan_vae(tmp.path() / "b", config, 7);
    write_random_wan_vae(tmp.path() / "c", config, 8);

    WanVAE vae = WanVAE::from_directory(tmp.path() / "a");
    EXPECT_EQ(vae.config().to_json(), config.to_json());
    const auto a =
        read_all(*st::sdk::SafetensorsFile::open(tmp.path() / "a" / "diffusion_pytorch_model.safetensors"));
    const auto b =
        read_all(*st::sdk::SafetensorsFile::open(tmp.path() / "b" / "diffusion_pytorch_model.safetensors"));
    const auto c =
        read_all(*st::sdk::SafetensorsFile::open(tmp.path() / "c" / "diffusion_pytorch_model.safetensors"));
    ASSERT_EQ(a.size(), 194u);
    bool any_differs = false;
    const auto params = vae.module()->named_parameters();
    for (const auto& [name, tensor] : a) {
        EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
        EXPECT_TRUE(at::equal(params[name], tensor)) << "loaded " << name << " differs from the file";
        EXPECT_TRUE(at::equal(b.at(name), tensor)) << "same seed, different " << name;
        any_differs = any_differs || !at::equal(c.at(name), tensor);
    }
    EXPECT_TRUE(any_differs) << "seeds 7 and 8 gave identical weights";

    // The random model runs end to end with the documented shapes.
    at::NoGradGuard no_grad;
    const auto posterior = vae.encode(at::rand({1, 3, 5, 16, 24}) * 2 - 1);
    EXPECT_EQ(posterior.mean.sizes(), (std::vector<int64_t>{1, 4, 2, 2, 3}));
    EXPECT_TRUE(at::isfinite(posterior.mean).all().item<bool>());
    const at::Tensor video = vae.decode(posterior.mean);
    EXPECT_EQ(video.sizes(), (std::vector<int64_t>{1, 3, 5, 16, 24}));
}

TEST(WanVAEWeightsTest, GradientsReachEveryParameterThroughEncodeAndDecode) {
    WanVAE vae = golden_vae();
    at::manual_seed(0);
    // T=5 and 2 latent frames so the temporal convs of downsample3d / upsample3d run too.
    const at::Tensor video = (at::rand({1, 3, 5, 16, 16}) * 2 - 1).requires_grad_(true);
    const auto posterior = vae.encode(video);
    const at::Tensor decoded = vae.decode(at::randn({1, 4, 2, 2, 2}));
    const at::Tensor loss = posterior.mean.square().sum() + posterior.logvar.mean() + decoded.square().mean();
    loss.backward();
    ASSERT_TRUE(video.grad().defined());
    EXPECT_TRUE(at::isfinite(video.grad()).all().item<bool>());
    size_t checked = 0;
    for (const auto& p : vae.module()->named_parameters()) {
        const at::Tensor& g = p.value().grad();
        ASSERT_TRUE(g.defined()) << "no gradient for " << p.key();
        EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << "non-finite gradient for " << p.key();
        EXPECT_GT(g.abs().sum().item<double>(), 0.0) << "zero gradient for " << p.key();
        ++checked;
    }
    EXPECT_EQ(checked, 194u);
}

TEST(WanVAEWeightsTest, WrongShapedTensorIsReportedWithNameAndShapes) {
    TempDir tmp;
    auto tensors = read_all(*st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors"));
    tensors["decoder.conv_in.weight"] = at::zeros({8, 4, 1, 3, 3});
    st::sdk::save_safetensors(tmp.path() / "bad.safetensors", tensors);
    WanVAE vae(WanVAEConfig::tiny());
    const at::Tensor before = vae.module()->decoder->named_parameters()["conv_in.weight"].clone();
    expect_error([&] { vae.load(*st::sdk::SafetensorsFile::open(tmp.path() / "bad.safetensors")); },
                 {"bad.safetensors", "decoder.conv_in.weight", "expected [8, 4, 3, 3, 3] got [8, 4, 1, 3, 3]",
                  "Wan VAE"});
    EXPECT_TRUE(at::equal(before, vae.module()->decoder->named_parameters()["conv_in.weight"]));
}

TEST(WanVAEWeightsTest, MissingUnexpectedAndWrongLayoutAreErrors) {
    TempDir tmp;
    auto tensors = read_all(*st::sdk::SafetensorsFile::open(kDir / "diffusion_pytorch_model.safetensors"));
    tensors.erase("quant_conv.bias");
    tensors["encoder.extra.weight"] = at::zeros({2});
    st::sdk::save_safetensors(tmp.path() / "bad.safetensors", tensors);
    WanVAE vae(WanVAEConfig::tiny());
    expect_error([&] { vae.load(*st::sdk::SafetensorsFile::open(tmp.path() / "bad.safetensors")); },
                 {"missing", "quant_conv.bias", "unexpected", "encoder.extra.weight"});
    // Original names loaded as diffusers: all unexpected.
    expect_error([&] { vae.load(*st::sdk::SafetensorsFile::open(kDir / "original_format.safetensors")); },
                 {"194 unexpected", "decoder.conv1.weight", "hint: the file uses the original key names"});
    expect_error([&] { detect_wan_vae_layout(*st::sdk::SafetensorsFile::open(kDir / "inputs.safetensors")); },
                 {"inputs.safetensors", "not a Wan VAE checkpoint"});
    expect_error([&] { WanVAE::from_directory(tmp.path()); }, {"config.json", "missing"});
}

TEST(WanVAEWeightsTest, BadInputShapesAreErrors) {
    WanVAE vae(WanVAEConfig::tiny());
    at::NoGradGuard no_grad;
    expect_error([&] { vae.encode(at::zeros({1, 3, 4, 16, 16})); }, {"4 frames", "1 + 4k"});
    expect_error([&] { vae.encode(at::zeros({1, 4, 1, 16, 16})); }, {"[B, 3, T, H, W]", "[1, 4, 1, 16, 16]"});
    expect_error([&] { vae.encode(at::zeros({1, 3, 1, 12, 16})); }, {"12x16", "multiples of 8"});
    expect_error(
        [&] {
            vae.decode(at::zeros({1, 16, 1, 2, 2}));
        },
        {"[B, 4, F >= 1, h, w]", "[1, 16, 1, 2, 2]"});
}

}  // namespace
