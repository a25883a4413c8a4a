// The CREPA teacher: DINOv2 forward_features and interpolate_pos_encoding against the goldens made by
// facebookresearch/dinov2 itself (tests/golden/dinov2), from the hub .pth, the .safetensors and the
// folder layouts, through `st-host forward --plugin crepa --component dinov2`; finding hub names in
// the torch-hub cache and the errors for what st cannot load.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../common/host_process.h"
#include "core/dinov2.h"
#include "st/error.h"
#include "st/safetensors.h"

namespace fs = std::filesystem;
using namespace st::plugins::crepa;

namespace {

const fs::path kGolden = fs::path(ST_TEST_GOLDEN_DIR) / "dinov2";

at::Tensor golden(const std::string& file, const std::string& name) {
    return st::sdk::SafetensorsFile::open(kGolden / file)->load(name);
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    const at::Tensor diff = (got - want).abs();
    const at::Tensor tol = 1e-4 + 1e-4 * want.abs();
    EXPECT_TRUE((diff <= tol).all().item<bool>()) << what << ": max |diff| " << diff.max().item<double>();
}

fs::path scratch(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("st_test_dinov2_" + std::to_string(::getpid())) / name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

class DinoGolden : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(DinoGolden, MatchesUpstreamForwardFeaturesAndInterpolation) {
    const auto& [style, file] = GetParam();
    const fs::path path = file.empty() ? kGolden / style : kGolden / style / file;
    DinoV2 model = load_dinov2(path);
    at::NoGradGuard no_grad;
    for (int i = 0; i < 2; ++i) {
        const std::string n = std::to_string(i);
        const auto f = model->forward_features(golden("inputs.safetensors", "images_" + n));
        expect_close(f.cls, golden("outputs.safetensors", style + "_x_norm_clstoken_" + n),
                     style + " cls " + n);
        expect_close(f.patch, golden("outputs.safetensors", style + "_x_norm_patchtokens_" + n),
                     style + " patch " + n);
        expect_close(f.pos, golden("outputs.safetensors", style + "_pos_embed_" + n), style + " pos " + n);
    }
}

INSTANTIATE_TEST_SUITE_P(Layouts, DinoGolden,
                         ::testing::Combine(::testing::Values("vitg_style", "vits_style"),
                                            ::testing::Values("", "model.safetensors", "dinov2_hub.pth")));

TEST(Dinov2, ArchitectureIsReadFromTheWeightsWithoutConfig) {
    // A hub .pth alone (no config.json): SwiGLU, depth, patch and grid from the shapes; heads from
    // config.json only (the hub convention D/64 gives 1 head here, so the golden's 2 heads differ).
    const fs::path d = scratch("bare");
    fs::copy_file(kGolden / "vitg_style" / "dinov2_hub.pth", d / "dinov2_vitg14_pretrain.pth");
    DinoV2 model = load_dinov2(d / "dinov2_vitg14_pretrain.pth");
    const DinoConfig& c = model->config();
    EXPECT_TRUE(c.swiglu);
    EXPECT_EQ(c.depth, 2);
    EXPECT_EQ(c.patch_size, 2);
    EXPECT_EQ(c.img_size, 8);
    EXPECT_EQ(c.ffn_hidden, 48);
    EXPECT_EQ(c.num_heads, 1);
    EXPECT_DOUBLE_EQ(c.interpolate_offset, 0.1);
}

TEST(Dinov2, HubNamesAreFoundInTheTorchHubCacheAndMissingOnesSayWhereToPutThem) {
    const fs::path home = scratch("torch_home");
    ::setenv("TORCH_HOME", home.c_str(), 1);
    const std::string missing = error_of([] { locate_crepa_encoder("dinov2_g"); });
    EXPECT_NE(missing.find((home / "hub" / "checkpoints" / "dinov2_vitg14_pretrain.pth").string()),
              std::string::npos)
        << missing;
    EXPECT_NE(missing.find("downloads nothing"), std::string::npos) << missing;
    fs::create_directories(home / "hub" / "checkpoints");
    fs::copy_file(kGolden / "vits_style" / "dinov2_hub.pth",
                  home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth");
    EXPECT_EQ(locate_crepa_encoder("dino_v2_s"), home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth");
    const std::string reg = error_of([] { locate_crepa_encoder("dinov2_vitl14_reg"); });
    EXPECT_NE(reg.find("dinov2_vitl14_reg4_pretrain.pth"), std::string::npos) << reg;
    ::unsetenv("TORCH_HOME");
    const std::string qwen = error_of([] { locate_crepa_encoder("qwen3_vl"); });
    EXPECT_NE(qwen.find("Qwen-VL"), std::string::npos) << qwen;
    EXPECT_EQ(locate_crepa_encoder((kGolden / "vits_style").string()), kGolden / "vits_style");
}

TEST(Dinov2, StrictLoadingNamesTheOffendingTensorAndFile) {
    const fs::path d = scratch("broken");
    auto src = st::sdk::SafetensorsFile::open(kGolden / "vits_style" / "model.safetensors");
    st::sdk::TensorMap t;
    for (const auto& i : src->infos())
        if (i.name != "norm.bias") t[i.name] = src->load(i.name);
    st::sdk::save_safetensors(d / "model.safetensors", t);
    const std::string e = error_of([&] { load_dinov2(d / "model.safetensors"); });
    EXPECT_NE(e.find("norm.bias"), std::string::npos) << e;
    EXPECT_NE(e.find((d / "model.safetensors").string()), std::string::npos) << e;
    std::ofstream(d / "legacy.pth") << "not a zip";
    const std::string legacy = error_of([&] { load_dinov2(d / "legacy.pth"); });
    EXPECT_NE(legacy.find("zip-format"), std::string::npos) << legacy;
}

TEST(Dinov2, StHostForwardRunsTheTeacher) {
    const fs::path d = scratch("forward");
    st::sdk::save_safetensors(d / "in.safetensors", {{"images", golden("inputs.safetensors", "images_1")}});
    const auto r =
        st_test::shell(st_test::host_prefix() + "forward --plugin crepa --component dinov2 --model '" +
                       (kGolden / "vitg_style").string() + "' --inputs '" + (d / "in.safetensors").string() +
                       "' --output '" + (d / "out.safetensors").string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    auto out = st::sdk::SafetensorsFile::open(d / "out.safetensors");
    expect_close(out->load("x_norm_patchtokens"),
                 golden("outputs.safetensors", "vitg_style_x_norm_patchtokens_1"), "forward patch");
    expect_close(out->load("x_norm_clstoken"), golden("outputs.safetensors", "vitg_style_x_norm_clstoken_1"),
                 "forward cls");
    const auto bad = st_test::shell(st_test::host_prefix() +
                                    "forward --plugin crepa --component vae --model x "
                                    "--inputs x --output x");
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.out.find("has no component 'vae'; it has: dinov2"), std::string::npos) << bad.out;
}

TEST(Dinov2, MakeDinov2WritesARandomTeacherWithTheHubShapes) {
    const fs::path d = scratch("made");
    const auto r = st_test::shell(st_test::host_prefix() + "make-dinov2 --preset tiny --seed 3 --out '" +
                                  d.string() + "'");
    ASSERT_EQ(r.code, 0) << r.out;
    DinoV2 model = load_dinov2(d);
    EXPECT_EQ(model->config().embed_dim, 16);
    EXPECT_EQ(model->config().num_heads, 2);
    at::NoGradGuard no_grad;
    const auto f = model->forward_features(at::randn({1, 3, 8, 8}));
    EXPECT_TRUE(at::isfinite(f.patch).all().item<bool>());
    const DinoConfig g = dinov2_preset("dinov2_vitg14_reg");
    EXPECT_EQ(g.embed_dim, 1536);
    EXPECT_EQ(g.depth, 40);
    EXPECT_TRUE(g.swiglu);
    EXPECT_EQ(g.ffn_hidden, 4096);
    EXPECT_EQ(g.num_register_tokens, 4);
    const auto bad =
        st_test::shell(st_test::host_prefix() + "make-dinov2 --preset vitz --out '" + d.string() + "'");
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.out.find("unknown DINOv2 'vitz'"), std::string::npos) << bad.out;
}
