// model.wan@1 runs the model conformance battery (tests/common/model_conformance.h) for its T2V, Wan 2.2
// I2V and Wan 2.1 I2V (CLIP branch) layouts.
#include "../common/model_conformance.h"
#include "wan_family.h"

namespace {

namespace fs = std::filesystem;

struct WanTraitsBase {
    using Family = st::plugins::wan::WanFamily;
    static nlohmann::json load_config() { return nlohmann::json::object(); }
    static fs::path weights_file(const fs::path& model) {
        return model / "transformer" / "diffusion_pytorch_model.safetensors";
    }
    static nlohmann::json reload_config(const fs::path& saved) {
        return {{"pretrained_transformer_model_name_or_path", saved.string()},
                {"pretrained_transformer_subfolder", "none"}};
    }
    static bool gradient_expected(const std::string&) { return true; }
};
struct WanT2V : WanTraitsBase {
    static constexpr const char* kName = "wan-tiny";
    static constexpr const char* kPreset = "tiny";
};
struct WanI2V22 : WanTraitsBase {
    static constexpr const char* kName = "wan-tiny-i2v";
    static constexpr const char* kPreset = "tiny-i2v";
};
struct WanI2V21 : WanTraitsBase {
    static constexpr const char* kName = "wan-tiny-i2v21";
    static constexpr const char* kPreset = "tiny-i2v21";
    static nlohmann::json load_config() { return {{"model_flavour", "i2v-14b-2.1"}}; }
};

using WanLayouts = ::testing::Types<WanT2V, WanI2V22, WanI2V21>;

}  // namespace

namespace st_test {
INSTANTIATE_TYPED_TEST_SUITE_P(Wan, ModelConformanceTest, WanLayouts);
}
