// The host's model adapter (host/src/plugins/model_handle.h) on the fixture model family: capabilities
// are found by id, a missing one is a clear error naming the capability and the plugin, and the
// defaults apply (no experts, no taps, the default unconditional branch). Also the fingerprint rule:
// a compiler patch-level difference is accepted, an ABI-relevant one is named.
#include <ATen/ATen.h>

#include <filesystem>

#include "plugins/fingerprint.h"
#include "plugins/model_handle.h"
#include "plugins/registry.h"
#include "st/error.h"
#include "st/version.h"

namespace fs = std::filesystem;
using st::host::ModelHandle;

namespace {

const fs::path kRoot = ST_TEST_FIXTURE_ROOT;

const st::host::ComponentEntry& fixture_model(st::host::PluginRegistry& reg) {
    ::unsetenv("ST_PLUGIN_PATH");
    reg.discover({{kRoot / "model", "--plugin-dir"}});
    const auto* e = reg.find("model.fixture@1");
    if (!e) throw std::runtime_error("fixture model plugin not loaded");
    return *e;
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

TEST(ModelHandleTest, CapabilitiesAreFoundByIdAndAMissingOneIsNamed) {
    st::host::PluginRegistry reg;
    ModelHandle model(fixture_model(reg));
    EXPECT_EQ(model.capability_list(), "tools@1");
    EXPECT_EQ(model.presets("st-host make-model"), std::vector<std::string>{"tiny"});
    const std::string audio = error_of([&] { model.encode_audio(at::zeros({1, 16000}), 16.0, 5); });
    EXPECT_NE(audio.find("does not offer capability 'audio_conditioning@1'"), std::string::npos) << audio;
    EXPECT_NE(audio.find("model.fixture@1"), std::string::npos) << audio;
    const std::string image = error_of([&] { model.encode_conditioning_image(at::zeros({1, 3, 8, 8}), 5); });
    EXPECT_NE(image.find("'image_conditioning@1'"), std::string::npos) << image;
    // Absent optional capabilities fall back to their defaults.
    EXPECT_FALSE(model.expert_boundary().has_value());
    EXPECT_TRUE(model.taps().empty());
    EXPECT_FALSE(model.routable_blocks().has_value());
    const st::sdk::TensorMap cond{{"prompt_embeds", at::ones({1, 2})}, {"image_latents", at::ones({1, 3})}};
    const auto uncond = model.unconditional(cond, {{"prompt_embeds", at::zeros({1, 2})}});
    EXPECT_TRUE(uncond.at("prompt_embeds").eq(0).all().item<bool>());
    EXPECT_TRUE(uncond.at("image_latents").eq(1).all().item<bool>());
    EXPECT_EQ(model.trainable_folder(), "transformer");
    EXPECT_TRUE(model.sampling_inputs().empty());
    EXPECT_FALSE(model.samples_from(st::sdk::MediaKind::image));
}

TEST(ModelHandleTest, DecodedLatentsOfTheWrongShapeAreNamed) {
    st::host::PluginRegistry reg;
    ModelHandle model(fixture_model(reg));
    EXPECT_EQ(model.decode_latents(at::zeros({1, 1, 2, 4, 4})).sizes(),
              (std::vector<int64_t>{1, 3, 2, 4, 4}));
    const std::string e = error_of([&] { model.decode_latents(at::zeros({1, 2, 4, 4})); });
    EXPECT_NE(e.find("expected [1, 3, F, H, W]"), std::string::npos) << e;
}

TEST(FingerprintTest, CompilerPatchLevelMayDifferButTheAbiMayNot) {
    const std::string host =
        "gcc-12.2.0;c++=202002L;cxx11abi=1;torch=1.13;cuda=0;json=3.11.2;toml++=3.3.0;fmt=90100";
    EXPECT_EQ(st::host::fingerprint_difference(host, host), "");
    EXPECT_EQ(
        st::host::fingerprint_difference(
            "gcc-12.3.1;c++=202002L;cxx11abi=1;torch=1.13;cuda=0;json=3.11.2;toml++=3.3.0;fmt=90100", host),
        "");
    EXPECT_NE(
        st::host::fingerprint_difference(
            "gcc-13.1.0;c++=202002L;cxx11abi=1;torch=1.13;cuda=0;json=3.11.2;toml++=3.3.0;fmt=90100", host)
            .find("compiler differs"),
        std::string::npos);
    for (const char* field : {"torch=2.4", "cuda=1", "cxx11abi=0", "c++=201703L", "json=3.11.3"}) {
        std::string plugin = host;
        const std::string key = std::string(field).substr(0, std::string(field).find('='));
        const size_t at = plugin.find(key + "=");
        plugin.replace(at, plugin.find(';', at) - at, field);
        const std::string diff = st::host::fingerprint_difference(plugin, host);
        EXPECT_NE(diff.find(key + " differs"), std::string::npos) << field << ": " << diff;
    }
    EXPECT_EQ(st::host::fingerprint_difference(ST_BUILD_FINGERPRINT, ST_BUILD_FINGERPRINT), "");
}
