#include "st/kit/umt5_prompts.h"

#include <torch/csrc/autograd/grad_mode.h>

#include "st/error.h"

namespace st::kit {

at::Tensor encode_umt5_prompts(UMT5Encoder& encoder, const UMT5Tokenizer& tokenizer,
                               const std::vector<std::string>& captions, at::Device device,
                               const std::string& component) {
    // captions -> prompt_embeds [B, text_len (512), d_model]: the first seq_len rows, zeros after
    const TokenizedBatch batch = tokenizer(captions, encoder->config().text_len);
    const int64_t max_id = batch.input_ids.numel() ? batch.input_ids.max().item<int64_t>() : 0;
    if (max_id >= encoder->config().vocab_size)
        fail(component, "encode_text", "tokenizer {} produced id {} but the text encoder vocab is {}",
             tokenizer.model_file().string(), max_id, encoder->config().vocab_size);
    torch::NoGradGuard no_grad;
    const UMT5Output r = encoder->encode_prompts(batch.input_ids.to(device), batch.attention_mask.to(device));
    return r.prompt_embeds.to(at::kCPU);
}

}  // namespace st::kit
