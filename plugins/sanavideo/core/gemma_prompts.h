// Sana Video's prompt handling: captions -> Gemma-2 prompt embeddings, as diffusers
// src/diffusers/pipelines/sana_video/pipeline_sana_video.py does it
// (SanaVideoPipeline._get_gemma_prompt_embeds + the select_index of encode_prompt, clean_caption=False):
//   1. text = prompt.lower().strip()                                   (_text_preprocessing)
//   2. positive prompts: chi = "\n".join(complex_human_instruction), text = chi + text,
//      max_length = len(tokenizer.encode(chi)) + max_sequence_length - 2 (encode counts <bos>);
//      negative prompts (complex_human_instruction=False): max_length = max_sequence_length
//   3. tokenizer(padding="max_length", max_length, truncation=True, add_special_tokens=True), right padding
//   4. prompt_embeds = text_encoder(input_ids, attention_mask)[0]       ([B, max_length, hidden])
//   5. keep positions [0] + the last max_sequence_length - 1 of embeddings and mask
//      (select_index = [0] + range(-max_sequence_length + 1, 0))      -> [B, max_sequence_length, hidden]
// Facts: reference/models.md §6.4.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/gemma2.h"
#include "core/gemma_tokenizer.h"
#include "st/kit/tokenizer.h"

namespace st::plugins::sanavideo {

/// The default `complex_human_instruction` of SanaVideoPipeline.__call__ (8 lines, the last
/// "User Prompt: "), kept verbatim as data.
const std::vector<std::string>& sana_video_complex_human_instruction();

/// _text_preprocessing(clean_caption=False): Python's text.lower().strip().
std::string sana_preprocess_prompt(std::string_view prompt);

/// Steps 1-3 for a batch: the Gemma inputs [B, max_length] (int64 ids and mask). `chi` empty = no
/// instruction (negative prompts); otherwise its lines joined by "\n" prefix every prompt and
/// max_length = len(encode(chi)) + max_sequence_length - 2. st::Error when max_sequence_length < 1.
st::kit::TokenizedBatch tokenize_sana_prompts(const GemmaTokenizer& tokenizer,
                                              const std::vector<std::string>& prompts,
                                              int64_t max_sequence_length,
                                              const std::vector<std::string>& chi);

/// Positions kept by encode_prompt from a sequence of `length`: 0, then length - max_sequence_length + 1
/// .. length - 1 (max_sequence_length entries). st::Error when length < max_sequence_length.
std::vector<int64_t> sana_select_index(int64_t length, int64_t max_sequence_length);

struct SanaPromptEmbeds {
    at::Tensor prompt_embeds;          ///< [B, max_sequence_length, hidden], the encoder's dtype and device
    at::Tensor prompt_attention_mask;  ///< [B, max_sequence_length] int64 (1 = token), the encoder's device
};

/// Steps 1-5: prompts -> {prompt_embeds, prompt_attention_mask}. `with_chi`: true for prompts (the
/// pipeline's default), false for negative prompts; `chi` = the instruction lines used when with_chi
/// (default: sana_video_complex_human_instruction()). Runs the encoder in eval mode without grad.
/// Padded positions keep the encoder's output (as upstream: the mask travels along).
SanaPromptEmbeds encode_sana_prompts(
    const GemmaTokenizer& tokenizer, Gemma2Model& encoder, const std::vector<std::string>& prompts,
    bool with_chi, int64_t max_sequence_length = 300,
    const std::vector<std::string>& chi = sana_video_complex_human_instruction());

}  // namespace st::plugins::sanavideo
