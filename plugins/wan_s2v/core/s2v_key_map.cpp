// The diffusers <-> original S2V key table (models.md §5.2). Module-level pairs: a tensor name is
// <module>.<weight|bias>, except the whole-tensor pairs. Names shared with the Wan DiT go through
// plugins/wan/core/key_map.h.
#include "core/s2v_key_map.h"

#include "core/key_map.h"

namespace st::plugins::wan_s2v {

// Names shared with the Wan DiT (blocks, time/text embedders, patch embedding, head, modulation
// tables) come from its table.
const st::kit::KeyMapTable& s2v_key_table() {
    static const st::kit::KeyMapTable table =
        st::kit::KeyMapTable()
            .modules({{"trainable_cond_mask", "trainable_condition_mask"},
                      {"cond_encoder", "condition_embedder.pose_embedder"},
                      {"casual_audio_encoder.encoder.conv1_local.conv",
                       "condition_embedder.causal_audio_encoder.encoder.conv1_local.conv"},
                      {"casual_audio_encoder.encoder.conv1_global.conv",
                       "condition_embedder.causal_audio_encoder.encoder.conv1_global.conv"},
                      // diffusers nests conv2/conv3 one level deeper than the original.
                      {"casual_audio_encoder.encoder.conv2.conv",
                       "condition_embedder.causal_audio_encoder.encoder.conv2.conv.conv"},
                      {"casual_audio_encoder.encoder.conv3.conv",
                       "condition_embedder.causal_audio_encoder.encoder.conv3.conv.conv"},
                      {"casual_audio_encoder.encoder.final_linear",
                       "condition_embedder.causal_audio_encoder.encoder.final_linear"},
                      {"frame_packer.proj", "frame_packer.proj"},
                      {"frame_packer.proj_2x", "frame_packer.proj_2x"},
                      {"frame_packer.proj_4x", "frame_packer.proj_4x"}})
            .tensors({{"casual_audio_encoder.weights",
                       "condition_embedder.causal_audio_encoder.weighted_avg.weights"},
                      {"casual_audio_encoder.encoder.padding_tokens",
                       "condition_embedder.causal_audio_encoder.encoder.padding_tokens"}})
            .indexed_modules("audio_injector.injector.", {{"q", "to_q"},
                                                          {"k", "to_k"},
                                                          {"v", "to_v"},
                                                          {"o", "to_out.0"},
                                                          {"norm_q", "norm_q"},
                                                          {"norm_k", "norm_k"}})
            .indexed_modules("audio_injector.injector_adain_layers.", {{"linear", "linear"}})
            .fallback(&st::plugins::wan::wan_key_table());
    return table;
}

std::optional<std::string> s2v_original_to_diffusers(const std::string& name) {
    return s2v_key_table().tensor(name, true);
}

std::optional<std::string> s2v_diffusers_to_original(const std::string& name) {
    return s2v_key_table().tensor(name, false);
}

std::optional<std::string> s2v_lora_module_to_native(const std::string& m) {
    return s2v_key_table().module(m, false);
}

std::optional<std::string> s2v_lora_module_to_diffusers(const std::string& m) {
    return s2v_key_table().module(m, true);
}

}  // namespace st::plugins::wan_s2v
