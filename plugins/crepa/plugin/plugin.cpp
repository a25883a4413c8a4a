// The `crepa` plugin: reg.crepa@1 (the regularizer, enabled by crepa_enabled) and forward.crepa@1
// (`st-host forward --plugin crepa --component dinov2`: the teacher on its own, for parity checks).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdio>

#include "core/crepa.h"
#include "st/error.h"
#include "st/plugin.h"
#include "st/registrar.h"

ST_PLUGIN("crepa", "1.0.0", "reg.crepa@1", "forward.crepa@1", "cmd.make-dinov2@1")

namespace {

st::sdk::TensorMap forward_dinov2(const std::filesystem::path& model, const std::string& component,
                                  const st::sdk::TensorMap& inputs) {
    // images [B, 3, H, W] (ImageNet-normalised) -> x_norm_clstoken, x_norm_patchtokens, pos_embed
    auto it = inputs.find("images");
    if (it == inputs.end())
        st::fail("forward.crepa@1", "forward", "component '{}' needs an 'images' tensor [B, 3, H, W]",
                 component);
    torch::NoGradGuard no_grad;
    auto dino = st::plugins::crepa::load_dinov2(model);
    const auto f = dino->forward_features(it->second.to(at::kFloat));
    return {{"x_norm_clstoken", f.cls.contiguous()},
            {"x_norm_patchtokens", f.patch.contiguous()},
            {"pos_embed", f.pos.contiguous()}};
}

int make_dinov2(const std::vector<std::string>& args) {
    // st-host make-dinov2 --preset NAME --out DIR [--seed N]
    std::string preset, out;
    uint64_t seed = 0;
    for (size_t i = 0; i + 1 < args.size(); i += 2) {
        if (args[i] == "--preset")
            preset = args[i + 1];
        else if (args[i] == "--out")
            out = args[i + 1];
        else if (args[i] == "--seed")
            seed = std::stoull(args[i + 1]);
        else
            st::fail("cmd.make-dinov2@1", "args", "unknown argument '{}'", args[i]);
    }
    if (preset.empty() || out.empty() || args.size() % 2 != 0)
        st::fail("cmd.make-dinov2@1", "args",
                 "usage: st-host make-dinov2 --preset NAME --out DIR [--seed N]");
    st::plugins::crepa::save_random_dinov2(out, st::plugins::crepa::dinov2_preset(preset), seed);
    std::printf("wrote a random %s teacher to %s\n", preset.c_str(), out.c_str());
    return 0;
}

}  // namespace

ST_PLUGIN_ENTRY(registrar) {
    namespace c = st::plugins::crepa;
    registrar.add_regularizer(
        {"reg.crepa@1",
         "CREPA: align a block's hidden state with a frozen DINOv2's cached features of the clean frames "
         "(SimpleTuner's crepa_* keys)",
         c::crepa_options()},
        [](const st::sdk::RegularizerInit& init) { return std::make_unique<c::CrepaRegularizer>(init); });
    st::sdk::ForwardTool tool;
    tool.components = {"dinov2"};
    tool.run = [](const std::filesystem::path& model, const std::string& component,
                  const st::sdk::TensorMap& in,
                  const st::sdk::ConfigView&) { return forward_dinov2(model, component, in); };
    registrar.add_command(
        {"cmd.make-dinov2@1", "write a random DINOv2 with a hub model's shapes (benchmarks)", {}},
        {"st-host make-dinov2 --preset dinov2_vits14|dinov2_vitb14|dinov2_vitl14|dinov2_vitg14[_reg]|tiny "
         "--out DIR [--seed N]",
         make_dinov2});
    registrar.add_forward_tool({"forward.crepa@1", "the CREPA teacher (DINOv2 forward_features)", {}},
                               std::move(tool));
}
