// HfSelfAttention (see hf_attention.h).
#include "st/kit/hf_attention.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "st/attention.h"

namespace st::kit {

HfSelfAttentionImpl::HfSelfAttentionImpl(int64_t hidden, int64_t num_heads) : num_heads_(num_heads) {
    TORCH_CHECK(num_heads > 0 && hidden % num_heads == 0, "hidden size ", hidden,
                " is not a multiple of the head count ", num_heads);
    q_proj = register_module("q_proj", torch::nn::Linear(hidden, hidden));
    k_proj = register_module("k_proj", torch::nn::Linear(hidden, hidden));
    v_proj = register_module("v_proj", torch::nn::Linear(hidden, hidden));
    out_proj = register_module("out_proj", torch::nn::Linear(hidden, hidden));
}

at::Tensor HfSelfAttentionImpl::forward(const at::Tensor& x, const at::Tensor& key_mask) {
    // transformers CLIPAttention / Wav2Vec2Attention.forward: [B, T, C] -> heads [B, H, T, C/H] ->
    // softmax(q k^T / sqrt(C/H)) v -> [B, T, C]. HF scales q before the product; the same up to rounding.
    const int64_t b = x.size(0), t = x.size(1), c = x.size(2);
    auto heads = [&](const at::Tensor& y) {
        return y.view({b, t, num_heads_, c / num_heads_}).transpose(1, 2);
    };
    st::sdk::AttentionOptions opts;
    if (key_mask.defined()) opts.key_mask = key_mask.to(at::kBool);
    const at::Tensor o = st::sdk::attention(heads(q_proj->forward(x)), heads(k_proj->forward(x)),
                                            heads(v_proj->forward(x)), opts);
    return out_proj->forward(o.transpose(1, 2).reshape({b, t, c}));
}

}  // namespace st::kit
