// SanaTextEncoder (see sana_text.h): Gemma-2 + Gemma tokenizer, loaded on first use, and the Sana Video
// pipeline's prompt handling (core/gemma_prompts.h) with SimpleTuner's options (models/sanavideo/
// model.py _encode_prompts: the motion score suffix and the instruction only on non-negative prompts).
#include "sana_text.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "core/gemma2.h"
#include "core/gemma2_weights.h"
#include "core/gemma_prompts.h"
#include "core/gemma_tokenizer.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;

namespace {

const fs::path& require_part(const fs::path& p, const SanaModelPaths& paths, const char* what,
                             const char* expected) {
    if (p.empty())
        fail(kSanaComponentId, "load", "no {} found for '{}': expected a SanaVideoPipeline folder with {}",
             what, paths.root.string(), expected);
    return p;
}

}  // namespace

struct SanaTextEncoder::Impl {
    SanaModelPaths paths;
    at::ScalarType dtype;
    at::Device device;
    int64_t caption_channels;
    SanaPromptOptions options;
    Gemma2Model encoder{nullptr};
    std::optional<GemmaTokenizer> tokenizer;

    void ensure() {
        if (!tokenizer)
            tokenizer.emplace(GemmaTokenizer::load(
                require_part(paths.tokenizer, paths, "Gemma tokenizer", "tokenizer/tokenizer.model")));
        if (encoder) return;
        encoder = load_gemma2(require_part(paths.text_encoder, paths, "Gemma-2 text encoder",
                                           "text_encoder/ (Gemma2Model: config.json + model.safetensors)"),
                              dtype, device);
        if (encoder->config().hidden_size != caption_channels)
            fail(kSanaComponentId, "load",
                 "the text encoder {} has hidden_size {} but the transformer expects caption_channels {}",
                 paths.text_encoder.string(), encoder->config().hidden_size, caption_channels);
        if (tokenizer->vocab_size() > encoder->config().vocab_size)
            fail(kSanaComponentId, "load",
                 "the tokenizer {} has {} pieces but the text encoder's vocab_size is {}",
                 tokenizer->model_file().string(), tokenizer->vocab_size(), encoder->config().vocab_size);
    }
};

SanaTextEncoder::SanaTextEncoder(const SanaModelPaths& paths, at::ScalarType dtype, at::Device device,
                                 int64_t caption_channels, SanaPromptOptions options)
    : impl_(std::make_unique<Impl>(
          Impl{paths, dtype, device, caption_channels, options, Gemma2Model(nullptr), {}})) {}

SanaTextEncoder::~SanaTextEncoder() = default;

st::sdk::TensorMap SanaTextEncoder::encode(const std::vector<std::string>& captions, bool negative) {
    // captions -> prompt_embeds [B, 300, hidden] (float32 CPU), prompt_attention_mask [B, 300] int64
    impl_->ensure();
    std::vector<std::string> texts = captions;
    if (!negative && impl_->options.motion_score)
        for (auto& t : texts) t = fmt::format("{} motion score: {}.", t, *impl_->options.motion_score);
    const bool chi = !negative && impl_->options.complex_human_instruction;
    torch::NoGradGuard no_grad;
    const SanaPromptEmbeds e = encode_sana_prompts(*impl_->tokenizer, impl_->encoder, texts, chi,
                                                   impl_->options.max_sequence_length);
    return {{"prompt_embeds", e.prompt_embeds.to(at::kCPU).to(at::kFloat)},
            {"prompt_attention_mask", e.prompt_attention_mask.to(at::kCPU)}};
}

st::sdk::TensorMap run_gemma_component(const SanaModelPaths& paths, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask) {
    Gemma2Model m =
        load_gemma2(require_part(paths.text_encoder, paths, "Gemma-2 text encoder", "text_encoder/"));
    torch::NoGradGuard no_grad;
    const Gemma2Output o =
        m->run(input_ids.to(at::kLong), attention_mask.to(at::kLong), /*output_hidden_states=*/true);
    st::sdk::TensorMap out{{"last_hidden_state", o.last_hidden_state}};
    for (size_t i = 0; i < o.hidden_states.size(); ++i)
        out["hidden_states_" + std::to_string(i)] = o.hidden_states[i];
    return out;
}

}  // namespace st::plugins::sanavideo
