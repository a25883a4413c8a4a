// Key names of the Wan 2.2 S2V transformer in its two on-disk layouts, in one tested table
// (models.md §5.2, verified by the golden fixture): diffusers PR #12258 (`WanS2VTransformer3DModel`,
// our module names) and original Wan-Video / ComfyUI (`WanModel_S2V`, optionally prefixed
// `model.diffusion_model.`; note the original's 'casual_audio_encoder' spelling). The shared Wan
// names (blocks, embedders, head) come from plugins/wan/core/key_map.h. The PR's own converter
// table is wrong and is not used.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "st/kit/key_map.h"

namespace st::plugins::wan_s2v {

/// The S2V key table (falls back to the Wan DiT's for the names they share).
const st::kit::KeyMapTable& s2v_key_table();

/// Original tensor name (prefix already stripped) -> diffusers name; nullopt when the name is not
/// an S2V transformer tensor.
std::optional<std::string> s2v_original_to_diffusers(const std::string& name);
/// Diffusers tensor name -> original name; nullopt when the name is not an S2V transformer tensor.
std::optional<std::string> s2v_diffusers_to_original(const std::string& name);

/// Module paths (no `.weight`/`.bias`), for LoRA files in the native/ComfyUI naming:
/// `blocks.3.attn1.to_out.0` <-> `blocks.3.self_attn.o`, `audio_injector.injector.1.to_q` <->
/// `audio_injector.injector.1.q`, `condition_embedder.pose_embedder` <-> `cond_encoder`, ...
/// nullopt: not a module of the S2V transformer.
std::optional<std::string> s2v_lora_module_to_native(const std::string& diffusers_module);
std::optional<std::string> s2v_lora_module_to_diffusers(const std::string& native_module);

/// Marker tensors that identify an S2V checkpoint in each layout (prefix stripped).
inline constexpr const char* kS2VDiffusersMarker =
    "condition_embedder.causal_audio_encoder.weighted_avg.weights";
inline constexpr const char* kS2VOriginalMarker = "casual_audio_encoder.weights";

}  // namespace st::plugins::wan_s2v
