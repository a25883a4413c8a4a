// Key names of the Wan transformer in its two on-disk layouts, in one tested table
// (models.md §2.2): diffusers (`WanTransformer3DModel`, our module names) and original
// Wan-Video / ComfyUI (`WanModel`, optionally prefixed `model.diffusion_model.`).
// The same table maps LoRA target modules (`blocks.N.attn1.to_q` <-> `blocks.N.self_attn.q`).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/kit_names.h"
#include "st/kit/key_map.h"

namespace st::plugins::wan {

/// The Wan DiT's table (st::kit::KeyMapTable); other Wan-based families fall back to it.
const st::kit::KeyMapTable& wan_key_table();

/// Prefixes single-file checkpoints put in front of every key (ComfyUI / kijai / musubi).
const std::vector<std::string>& wan_checkpoint_prefixes();

/// Original tensor name (prefix already stripped) -> diffusers name; nullopt when the name is
/// not a Wan transformer tensor. Names without a layout difference map to themselves.
std::optional<std::string> original_to_diffusers(const std::string& name);
/// Diffusers tensor name -> original name; nullopt when the name is not a Wan transformer tensor.
std::optional<std::string> diffusers_to_original(const std::string& name);

/// Module paths (no `.weight`/`.bias`), for LoRA targets: `blocks.3.attn1.to_out.0` <->
/// `blocks.3.self_attn.o`, `blocks.3.ffn.net.0.proj` <-> `blocks.3.ffn.0`, and the global
/// linears (`condition_embedder.time_proj` <-> `time_projection.1`, ...). nullopt: not a module
/// of the Wan transformer.
std::optional<std::string> lora_module_to_native(const std::string& diffusers_module);
std::optional<std::string> lora_module_to_diffusers(const std::string& native_module);

/// The Linear layers of block `index` in diffusers naming (8 attention + 2 FFN, plus the 2 image
/// branch ones when `image_branch`).
std::vector<std::string> block_linear_modules(int index, bool image_branch);

}  // namespace st::plugins::wan
