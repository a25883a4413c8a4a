// model.wan_s2v@1 runs the model conformance battery (tests/common/model_conformance.h); its batches
// carry the driving audio through audio_conditioning@1, as the data backend caches them.
#include "../common/model_conformance.h"
#include "s2v_family.h"

namespace {

namespace fs = std::filesystem;

struct S2VTiny {
    using Family = st::plugins::wan_s2v::WanS2VFamily;
    static constexpr const char* kName = "s2v-tiny";
    static constexpr const char* kPreset = "tiny";
    static nlohmann::json load_config() { return nlohmann::json::object(); }
    static fs::path weights_file(const fs::path& model) {
        return model / "transformer" / "diffusion_pytorch_model.safetensors";
    }
    static nlohmann::json reload_config(const fs::path& saved) {
        return {{"pretrained_transformer_model_name_or_path", saved.string()},
                {"pretrained_transformer_subfolder", "none"}};
    }
    // A training batch has no motion latents (FramePack, used when continuing a video) and no pose
    // latents: those branches get no gradient, as in the reference trainer.
    static bool gradient_expected(const std::string& p) {
        return p.rfind("frame_packer.", 0) != 0 && p.find("pose_embedder") == std::string::npos;
    }
};

}  // namespace

namespace st_test {
INSTANTIATE_TYPED_TEST_SUITE_P(WanS2V, ModelConformanceTest, ::testing::Types<S2VTiny>);
}
