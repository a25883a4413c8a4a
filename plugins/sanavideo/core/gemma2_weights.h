// Gemma-2 checkpoints: layouts, strict loading from a transformers folder, and the random writer for
// tests and make-model presets. Layouts (detected from the names, never from the file name):
//   Gemma2Model           embed_tokens.weight, layers.{i}..., norm.weight (diffusers' text_encoder/)
//   Gemma2ForCausalLM     the same under `model.`, plus lm_head.weight when not tied (ignored)
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/gemma2.h"
#include "core/gemma2_config.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::sanavideo {

struct Gemma2Layout {
    bool model_prefix = false;     ///< `model.` prefix (Gemma2ForCausalLM saves)
    int64_t ignored_tensors = 0;   ///< lm_head.* tensors skipped
    std::string describe() const;  ///< "Gemma2ForCausalLM (prefix 'model.', 1 lm_head tensor ignored)"
};

/// Detects the layout by the embedding name; st::Error naming the source when it has neither
/// `embed_tokens.weight` nor `model.embed_tokens.weight`.
Gemma2Layout detect_gemma2_layout(const st::sdk::TensorSource& source);

/// A file name -> the Gemma2Model parameter name (`model.` stripped); nullopt for lm_head.* (ignored).
std::optional<std::string> gemma2_canonical_key(const std::string& file_key);

/// Strictly loads either layout into `model` (missing, unexpected or wrongly shaped tensors are one
/// st::Error naming them and the file; a name without the layout's prefix is reported as unexpected).
/// The file dtype is converted to the parameters'. Returns the layout (logged in one line).
Gemma2Layout load_gemma2_weights(Gemma2Model& model, const st::sdk::TensorSource& source);

/// Builds a model in `dtype` on `device` (built there directly: no float32 copy of a 2B model) and
/// loads it, in eval mode, from
///  - a folder with config.json and model.safetensors or model.safetensors.index.json (a pipeline's
///    text_encoder/),
///  - a .safetensors file (or index json) with config.json next to it.
/// Pickles (pytorch_model.bin, ...) are an st::Error asking to convert them.
Gemma2Model load_gemma2(const std::filesystem::path& path, at::ScalarType dtype = at::kFloat,
                        at::Device device = at::kCPU);

/// Writes a random Gemma2Model folder (config.json + model.safetensors, Gemma2Model names, float32),
/// deterministic for a seed, that transformers' Gemma2Model.from_pretrained loads. Init: embeddings
/// normal(0, 1/sqrt(hidden)) (unit scale after the sqrt(hidden) normaliser), projections
/// normal(0, 1/sqrt(fan_in)), norm weights normal(0, 0.1) (zero-centred: scale 1 + noise).
void write_random_gemma2(const std::filesystem::path& dir, const Gemma2Config& config, uint64_t seed);

}  // namespace st::plugins::sanavideo
