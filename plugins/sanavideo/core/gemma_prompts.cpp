// Sana Video prompt handling (see gemma_prompts.h). Reference: huggingface/diffusers
// src/diffusers/pipelines/sana_video/pipeline_sana_video.py, SanaVideoPipeline._get_gemma_prompt_embeds,
// encode_prompt (select_index) and __call__ (the default complex_human_instruction).
#include "core/gemma_prompts.h"

#include <ATen/ATen.h>

#include "st/error.h"
#include "st/kit/python_text.h"

namespace st::plugins::sanavideo {
namespace {

constexpr const char* kComponent = "model.sanavideo.text";

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" : "") + lines[i];
    return out;
}

}  // namespace

const std::vector<std::string>& sana_video_complex_human_instruction() {
    // SanaVideoPipeline.__call__(complex_human_instruction=[...]) default, verbatim.
    static const std::vector<std::string> lines = {
        "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions "
        "suitable "
        "for video generation. Evaluate the level of detail in the user prompt:",
        "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, "
        "and "
        "temporal relationships to create vivid and dynamic scenes.",
        "- If the prompt is already detailed, refine and enhance the existing details slightly without "
        "overcomplicating.",
        "Here are examples of how to transform or refine prompts:",
        "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling into a curled "
        "position, peacefully falling asleep on a warm sunny windowsill, with gentle sunlight filtering "
        "through "
        "surrounding pots of blooming red flowers.",
        "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring "
        "glowing "
        "street lamps gradually lighting up, a diverse crowd of people in colorful clothing walking past, "
        "and a "
        "double-decker bus smoothly passing by towering glass skyscrapers.",
        "Please generate only the enhanced description for the prompt below and avoid including any "
        "additional "
        "commentary or evaluations:",
        "User Prompt: ",
    };
    return lines;
}

std::string sana_preprocess_prompt(std::string_view prompt) {
    return st::kit::python_strip(st::kit::python_lower(prompt));
}

st::kit::TokenizedBatch tokenize_sana_prompts(const GemmaTokenizer& tokenizer,
                                              const std::vector<std::string>& prompts,
                                              int64_t max_sequence_length,
                                              const std::vector<std::string>& chi) {
    if (max_sequence_length < 1)
        fail(kComponent, "encode", "max_sequence_length must be >= 1, got {}", max_sequence_length);
    std::vector<std::string> texts;
    texts.reserve(prompts.size());
    int64_t max_length = max_sequence_length;
    std::string prefix;
    if (!chi.empty()) {
        prefix = join_lines(chi);
        // len(self.tokenizer.encode(chi_prompt)): <bos> included.
        max_length = static_cast<int64_t>(tokenizer.encode(prefix).size()) + max_sequence_length - 2;
    }
    for (const auto& p : prompts) texts.push_back(prefix + sana_preprocess_prompt(p));
    return tokenizer(texts, max_length);
}

std::vector<int64_t> sana_select_index(int64_t length, int64_t max_sequence_length) {
    if (max_sequence_length < 1 || length < max_sequence_length)
        fail(kComponent, "encode", "cannot keep {} positions of a {}-token sequence", max_sequence_length,
             length);
    std::vector<int64_t> index{0};
    for (int64_t i = length - max_sequence_length + 1; i < length; ++i) index.push_back(i);
    return index;
}

// prompts -> prompt_embeds [B, msl, hidden], prompt_attention_mask [B, msl].
SanaPromptEmbeds encode_sana_prompts(const GemmaTokenizer& tokenizer, Gemma2Model& encoder,
                                     const std::vector<std::string>& prompts, bool with_chi,
                                     int64_t max_sequence_length, const std::vector<std::string>& chi) {
    if (prompts.empty()) fail(kComponent, "encode", "no prompts to encode");
    if (with_chi && chi.empty())
        fail(kComponent, "encode", "with_chi is set but the complex human instruction has no lines");
    const st::kit::TokenizedBatch batch = tokenize_sana_prompts(tokenizer, prompts, max_sequence_length,
                                                                with_chi ? chi : std::vector<std::string>{});
    const int64_t vocab = encoder->config().vocab_size;
    if (tokenizer.vocab_size() > vocab)
        fail(kComponent, "encode",
             "the tokenizer {} has {} pieces but the Gemma-2 encoder's vocabulary is {}",
             tokenizer.model_file().string(), tokenizer.vocab_size(), vocab);
    const at::Device device = encoder->embed_tokens->weight.device();
    const at::Tensor ids = batch.input_ids.to(device);
    const at::Tensor mask = batch.attention_mask.to(device);
    at::Tensor embeds;
    {
        at::NoGradGuard no_grad;
        encoder->eval();
        embeds = encoder->forward(ids, mask);  // [B, max_length, hidden]
    }
    const std::vector<int64_t> select = sana_select_index(ids.size(1), max_sequence_length);
    const at::Tensor index = at::tensor(select, at::TensorOptions().dtype(at::kLong)).to(device);
    return {embeds.index_select(1, index), mask.index_select(1, index)};
}

}  // namespace st::plugins::sanavideo
