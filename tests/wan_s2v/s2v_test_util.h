// Helpers shared by the Wan S2V transformer tests: golden inputs and the four golden run settings.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <string>

#include "core/s2v_checkpoint.h"
#include "core/s2v_transformer.h"
#include "test_transformer_util.h"

namespace st::plugins::wan_s2v::test {

using st::plugins::wan::test::allclose_manifest;
using st::plugins::wan::test::golden;
using st::plugins::wan::test::load_tensor;

inline at::Tensor golden_input(const std::string& name) {
    return load_tensor(golden("wan_s2v/inputs.safetensors"), name);
}

inline at::Tensor golden_output(const std::string& name) {
    return load_tensor(golden("wan_s2v/outputs.safetensors"), name);
}

/// The inputs of one golden output (MANIFEST wan_s2v, outputs table).
inline WanS2VInputs golden_case(const std::string& output) {
    WanS2VInputs in;
    in.hidden_states = golden_input("hidden_states");
    in.timestep = golden_input("timestep");
    in.encoder_hidden_states = golden_input("encoder_hidden_states");
    in.image_latents = golden_input("image_latents");
    in.pose_latents = golden_input("pose_latents");
    in.audio_embeds = golden_input("audio_embeds");
    const at::Tensor motion = golden_input("motion_latents");  // [1, 16, 19, 16, 16]
    in.add_last_motion = 2;
    if (output == "out_motion") {
        in.motion_frames = {73, 19};
        in.drop_motion_frames = false;
        in.motion_latents = motion;
    } else if (output == "out_motion_dropped") {
        in.motion_frames = {73, 19};
        in.drop_motion_frames = true;
        in.motion_latents = motion;
    } else if (output == "out_train_no_motion") {
        in.motion_frames = {17, 5};
        in.drop_motion_frames = true;
        in.motion_latents = at::zeros({1, 16, 0, 16, 16});
    } else if (output == "out_short_motion") {
        in.motion_frames = {17, 5};
        in.drop_motion_frames = false;
        in.motion_latents = motion.narrow(2, 14, 5);
    } else {
        throw std::invalid_argument("unknown golden output " + output);
    }
    return in;
}

inline LoadedS2VTransformer load_golden(const std::string& file = "") {
    S2VLoadOptions o;
    o.subfolder = "none";
    if (!file.empty()) o.config = WanS2VConfig::tiny();
    return load_s2v_transformer(file.empty() ? golden("wan_s2v") : golden("wan_s2v/" + file), o);
}

inline at::Tensor run(WanS2VTransformer3DModel& model, const WanS2VInputs& in,
                      st::sdk::TensorMap* inter = nullptr) {
    torch::NoGradGuard no_grad;
    return model->forward(in, inter);
}

}  // namespace st::plugins::wan_s2v::test
