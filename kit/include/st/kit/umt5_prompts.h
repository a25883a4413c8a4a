// Prompts -> the UMT5 prompt embeddings the Wan pipelines condition on: tokenize to the encoder's
// text_len (right padding), encode, zero the rows after each prompt (diffusers WanPipeline
// _get_t5_prompt_embeds). For every family whose text encoder is UMT5 (Wan, Wan S2V, third parties).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <vector>

#include "st/kit/tokenizer.h"
#include "st/kit/umt5.h"

namespace st::kit {

/// captions -> prompt_embeds [B, text_len, d_model] on the CPU, under no-grad. st::Error(component)
/// when the tokenizer produces an id beyond the encoder's vocabulary (a tokenizer of another model).
at::Tensor encode_umt5_prompts(UMT5Encoder& encoder, const UMT5Tokenizer& tokenizer,
                               const std::vector<std::string>& captions, at::Device device,
                               const std::string& component);

}  // namespace st::kit
