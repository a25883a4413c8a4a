// S2V audio encoder and injector (see s2v_audio.h). Follows diffusers PR #12258
// transformer_wan_s2v.py CausalConv1d, MotionEncoder_tc, CausalAudioEncoder, AdaLayerNorm,
// AudioInjector and WanS2VTransformer3DModel.after_transformer_block @ 64044ecb05 (the same math as
// Wan-Video wan/modules/s2v/auxi_blocks.py and model_s2v.py).
#include "core/s2v_audio.h"

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace st::plugins::wan_s2v {
namespace {

constexpr double kAudioNormEps = 1e-6;  // MotionEncoder_tc LayerNorms
constexpr double kAdaNormEps = 1e-5;    // AdaLayerNorm's nn.LayerNorm default

at::Tensor plain_layer_norm(const at::Tensor& x, double eps) {
    return at::layer_norm(x, {x.size(-1)}, {}, {}, eps);
}

}  // namespace

// ---- causal conv ------------------------------------------------------------------------------

CausalConv1dImpl::CausalConv1dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
                                   int64_t stride)
    : kernel_size_(kernel_size) {
    conv = register_module(
        "conv",
        torch::nn::Conv1d(torch::nn::Conv1dOptions(in_channels, out_channels, kernel_size).stride(stride)));
}

at::Tensor CausalConv1dImpl::forward(const at::Tensor& x) {
    // x [B, C_in, T] -> [B, C_out, T'] (replicate-pad kernel-1 frames on the left)
    TORCH_CHECK(x.dim() == 3, "CausalConv1d: x must be [B, C, T], got ", x.sizes());
    return conv->forward(at::replication_pad1d(x, {kernel_size_ - 1, 0}));
}

// ---- motion encoder ---------------------------------------------------------------------------

S2VMotionEncoderImpl::S2VMotionEncoderImpl(int64_t in_dim, int64_t hidden_dim, int64_t num_tokens)
    : hidden_dim_(hidden_dim), num_tokens_(num_tokens) {
    conv1_local = register_module("conv1_local", CausalConv1d(in_dim, hidden_dim / 4 * num_tokens, 3, 1));
    conv1_global = register_module("conv1_global", CausalConv1d(in_dim, hidden_dim / 4, 3, 1));
    auto conv2_holder = register_module("conv2", std::make_shared<torch::nn::Module>());
    conv2 = conv2_holder->register_module("conv", CausalConv1d(hidden_dim / 4, hidden_dim / 2, 3, 2));
    auto conv3_holder = register_module("conv3", std::make_shared<torch::nn::Module>());
    conv3 = conv3_holder->register_module("conv", CausalConv1d(hidden_dim / 2, hidden_dim, 3, 2));
    final_linear = register_module("final_linear", torch::nn::Linear(hidden_dim, hidden_dim));
    padding_tokens = register_parameter("padding_tokens", at::zeros({1, 1, 1, hidden_dim}));
}

at::Tensor S2VMotionEncoderImpl::trunk(const at::Tensor& x) {
    // x [N, T, hidden/4] (conv1 output, channels last) -> [N, T', hidden]
    at::Tensor h = at::silu(plain_layer_norm(x, kAudioNormEps));
    h = conv2->forward(h.transpose(1, 2)).transpose(1, 2);
    h = at::silu(plain_layer_norm(h, kAudioNormEps));
    h = conv3->forward(h.transpose(1, 2)).transpose(1, 2);
    return at::silu(plain_layer_norm(h, kAudioNormEps));
}

std::pair<at::Tensor, at::Tensor> S2VMotionEncoderImpl::forward(const at::Tensor& x_in) {
    // x [B, T, C] -> local [B, T', N + 1, hidden], global [B, T', 1, hidden]
    TORCH_CHECK(x_in.dim() == 3, "S2V audio encoder: x must be [B, T, C], got ", x_in.sizes());
    const int64_t b = x_in.size(0);
    at::Tensor x = x_in.transpose(1, 2);  // [B, C, T]
    // Local branch: N audio tokens per step, folded into the batch for the shared convs.
    at::Tensor local = conv1_local->forward(x);  // [B, N * hidden/4, T]
    local = local.unflatten(1, {num_tokens_, -1}).permute({0, 1, 3, 2}).flatten(0, 1);  // [B*N, T, hidden/4]
    local = trunk(local);                                                               // [B*N, T', hidden]
    local = local.unflatten(0, {b, num_tokens_}).permute({0, 2, 1, 3});                 // [B, T', N, hidden]
    at::Tensor pad = padding_tokens.to(local.scalar_type()).expand({b, local.size(1), 1, hidden_dim_});
    local = at::cat({local, pad}, 2);
    // Global branch (AdaLN input).
    at::Tensor global = trunk(conv1_global->forward(x).transpose(1, 2));  // [B, T', hidden]
    global = final_linear->forward(global).unsqueeze(2);                  // [B, T', 1, hidden]
    return {local, global};
}

// ---- causal audio encoder ---------------------------------------------------------------------

S2VCausalAudioEncoderImpl::S2VCausalAudioEncoderImpl(int64_t audio_dim, int64_t num_layers, int64_t out_dim,
                                                     int64_t num_tokens) {
    auto avg = register_module("weighted_avg", std::make_shared<torch::nn::Module>());
    weights = avg->register_parameter("weights", at::full({1, num_layers, 1, 1}, 0.01));
    encoder = register_module("encoder", S2VMotionEncoder(audio_dim, out_dim, num_tokens));
}

std::pair<at::Tensor, at::Tensor> S2VCausalAudioEncoderImpl::forward(const at::Tensor& features) {
    // features [B, L, C, T] -> local [B, T', 5, D], global [B, T', 1, D]; computed in the encoder's
    // dtype (float32: the module is in diffusers' _keep_in_fp32_modules).
    TORCH_CHECK(features.dim() == 4 && features.size(1) == weights.size(1),
                "S2V audio encoder: audio_embeds must be [B, ", weights.size(1), ", C, T], got ",
                features.sizes());
    at::Tensor f = features.to(weights.scalar_type());
    at::Tensor w = at::silu(weights);
    at::Tensor avg = ((f * w) / w.sum(1, /*keepdim=*/true)).sum(1);  // [B, C, T]
    return encoder->forward(avg.transpose(1, 2));
}

// ---- injector ---------------------------------------------------------------------------------

S2VAdaLayerNormImpl::S2VAdaLayerNormImpl(int64_t dim) {
    linear = register_module("linear", torch::nn::Linear(dim, 2 * dim));
}

at::Tensor S2VAdaLayerNormImpl::forward(const at::Tensor& x, const at::Tensor& g) {
    // x [N, S, D], g [N, D] -> [N, S, D]
    at::Tensor mod = linear->forward(at::silu(g.to(linear->weight.scalar_type()))).to(at::kFloat);
    auto parts = mod.chunk(2, 1);  // shift, scale: [N, D]
    at::Tensor y =
        plain_layer_norm(x.to(at::kFloat), kAdaNormEps) * (1 + parts[1].unsqueeze(1)) + parts[0].unsqueeze(1);
    return y.to(x.scalar_type());
}

S2VAudioInjectorImpl::S2VAudioInjectorImpl(const WanS2VConfig& c) {
    injector = register_module("injector", torch::nn::ModuleList());
    injector_adain_layers = register_module("injector_adain_layers", torch::nn::ModuleList());
    const int64_t d = c.inner_dim();
    for (const int64_t block : c.audio_inject_layers) {
        index_[block] = static_cast<int64_t>(injector->size());
        injector->push_back(st::plugins::wan::WanAttention(
            st::plugins::wan::WanAttentionOptions{d, c.num_attention_heads, c.eps, std::nullopt}));
        injector_adain_layers->push_back(S2VAdaLayerNorm(d));
    }
}

at::Tensor S2VAudioInjectorImpl::forward(int64_t k, const at::Tensor& x, int64_t noisy_tokens,
                                         const at::Tensor& audio, const at::Tensor& global) {
    // x [B, N, D]; audio [B*F, A, D]; global [B*F, D] -> [B, N, D]. Each latent frame's H'W' noisy
    // tokens attend to that frame's A audio tokens only.
    const int64_t b = x.size(0);
    const int64_t frames = audio.size(0) / b;
    TORCH_CHECK(frames * b == audio.size(0) && noisy_tokens % frames == 0,
                "S2V audio injector: ", audio.size(0), " audio groups do not split ", noisy_tokens,
                " noisy tokens of batch ", b);
    at::Tensor noisy = x.narrow(1, 0, noisy_tokens);
    at::Tensor per_frame = noisy.unflatten(1, {frames, -1}).flatten(0, 1);  // [B*F, S, D]
    at::Tensor h =
        injector_adain_layers->ptr<S2VAdaLayerNormImpl>(static_cast<size_t>(k))->forward(per_frame, global);
    at::Tensor r = injector->ptr<st::plugins::wan::WanAttentionImpl>(static_cast<size_t>(k))
                       ->forward(h, audio.to(h.scalar_type()), {}, nullptr);
    r = r.unflatten(0, {b, frames}).flatten(1, 2);  // [B, L, D]
    at::Tensor out = noisy + r;
    if (x.size(1) == noisy_tokens) return out;
    return at::cat({out, x.narrow(1, noisy_tokens, x.size(1) - noisy_tokens)}, 1);
}

at::Tensor S2VAudioInjectorImpl::forward_routed(int64_t k, const at::Tensor& x, const at::Tensor& kept,
                                                int64_t tokens_per_frame, const at::Tensor& audio,
                                                const at::Tensor& global) {
    // x [B, N, D] (K kept noisy tokens first); kept [B, K]; audio [B*F, A, D]; global [B*F, D]
    const int64_t b = x.size(0), n = kept.size(1), d = x.size(2);
    const int64_t frames = audio.size(0) / b, a = audio.size(1);
    // Row of each kept token's frame in the [B*F] audio groups.
    const at::Tensor row =
        (at::div(kept, tokens_per_frame, "floor") + at::arange(b, kept.options()).unsqueeze(1) * frames)
            .flatten();  // [B*K]
    const at::Tensor noisy = x.narrow(1, 0, n);
    // AdaLayerNorm per token with its frame's global vector (one-token groups: the same math).
    const at::Tensor h = injector_adain_layers->ptr<S2VAdaLayerNormImpl>(static_cast<size_t>(k))
                             ->forward(noisy.reshape({b * n, 1, d}), global.index_select(0, row))
                             .view({b, n, d});
    // Cross-attention of each token to its frame's audio tokens: q [B, K, H, e] vs k/v [B, K, A, H, e].
    auto& attn = *injector->ptr<st::plugins::wan::WanAttentionImpl>(static_cast<size_t>(k));
    const int64_t heads = attn.heads(), e = d / heads;
    const at::Tensor ctx = audio.to(h.scalar_type());
    const at::Tensor q = attn.norm_q->forward(attn.to_q->forward(h)).unflatten(2, {heads, e});
    const at::Tensor kk =
        attn.norm_k->forward(attn.to_k->forward(ctx)).index_select(0, row).view({b, n, a, heads, e});
    const at::Tensor vv = attn.to_v->forward(ctx).index_select(0, row).view({b, n, a, heads, e});
    // Softmax in float32, as st::sdk::attention does for half dtypes.
    const at::Tensor scores = at::einsum("bkhe,bkahe->bkha", {q.to(at::kFloat), kk.to(at::kFloat)}) /
                              std::sqrt(static_cast<double>(e));
    const at::Tensor o = at::einsum("bkha,bkahe->bkhe", {scores.softmax(-1), vv.to(at::kFloat)});
    const at::Tensor r = attn.to_out[0]->as<st::sdk::LinearImpl>()->forward(o.flatten(2).to(q.scalar_type()));
    const at::Tensor out = noisy + r;
    if (x.size(1) == n) return out;
    return at::cat({out, x.narrow(1, n, x.size(1) - n)}, 1);
}

}  // namespace st::plugins::wan_s2v
