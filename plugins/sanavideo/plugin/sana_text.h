// The text side of model.sanavideo@1: the Gemma-2 encoder (text_encoder/) and Gemma tokenizer
// (tokenizer/) of a Sana Video pipeline, loaded on first use, with the pipeline's prompt handling
// (core/gemma_prompts.h): lower-case + strip, the complex human instruction on prompts (never on
// negative prompts), SimpleTuner's optional motion score suffix, [B, 300, 2304] embeddings + mask.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sana_family.h"
#include "st/tensors.h"

namespace st::plugins::sanavideo {

struct SanaPromptOptions {
    bool complex_human_instruction = true;  ///< sana_complex_human_instruction
    std::optional<int64_t> motion_score;    ///< sana_motion_score: " motion score: N." appended to prompts
    int64_t max_sequence_length = 300;      ///< the pipeline's max_sequence_length
};

class SanaTextEncoder {
  public:
    /// Loads nothing yet; `caption_channels`: what the transformer expects (a mismatching encoder is an
    /// st::Error naming both).
    SanaTextEncoder(const SanaModelPaths& paths, at::ScalarType dtype, at::Device device,
                    int64_t caption_channels, SanaPromptOptions options);
    ~SanaTextEncoder();
    /// captions -> {"prompt_embeds" [B, L, hidden], "prompt_attention_mask" [B, L]} on the CPU (L = 300).
    st::sdk::TensorMap encode(const std::vector<std::string>& captions, bool negative);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// `st-host forward --component text_encoder`: Gemma2Model(input_ids, attention_mask) ->
/// last_hidden_state and hidden_states_<i> (the embedding output, each layer, the final norm).
st::sdk::TensorMap run_gemma_component(const SanaModelPaths& paths, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask);

}  // namespace st::plugins::sanavideo
