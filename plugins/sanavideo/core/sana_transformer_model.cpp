// SanaVideoTransformer3DModel forward (patch embedding, time and caption embedding, blocks through the
// kit's block runner, modulated head, unpatchify) and its dtype policy. Follows diffusers
// transformer_sana_video.py SanaVideoTransformer3DModel.forward @ 58eb52c080 (models.md §6.3).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

#include "core/sana_transformer.h"
#include "st/error.h"
#include "st/kit/block_runner.h"

namespace st::plugins::sanavideo {

SanaVideoTransformer3DModelImpl::SanaVideoTransformer3DModelImpl(SanaVideoTransformerConfig config)
    : config_(std::move(config)) {
    config_.validate();
    const int64_t d = config_.inner_dim();
    const auto& p = config_.patch_size;
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv3d(
            torch::nn::Conv3dOptions(config_.in_channels, d, {p[0], p[1], p[2]}).stride({p[0], p[1], p[2]})));
    time_embed = register_module("time_embed", SanaTimeEmbed(d));
    caption_projection =
        register_module("caption_projection", SanaMLP(config_.caption_channels, d, /*gelu_tanh=*/true));
    caption_norm = register_module("caption_norm", SanaRMSNorm(d, 1e-5));
    transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.num_layers; ++i)
        transformer_blocks->push_back(SanaVideoTransformerBlock(config_));
    scale_shift_table =
        register_parameter("scale_shift_table", at::randn({2, d}) / std::sqrt(static_cast<double>(d)));
    proj_out = register_module("proj_out", torch::nn::Linear(d, config_.out_channels * p[0] * p[1] * p[2]));
}

at::ScalarType SanaVideoTransformer3DModelImpl::compute_dtype() const {
    return patch_embedding->weight.scalar_type();
}

bool SanaVideoTransformer3DModelImpl::keeps_fp32(const std::string&) {
    // diffusers' SanaVideoTransformer3DModel keeps no module in fp32 (no _keep_in_fp32_modules): a bf16
    // model is bf16 throughout, which SimpleTuner's adamw_bf16 full fine-tune relies on. The modulation
    // and the norms are still computed in fp32 by forward().
    return false;
}

void SanaVideoTransformer3DModelImpl::set_compute_dtype(at::ScalarType dtype) {
    torch::NoGradGuard no_grad;
    for (auto& item : named_parameters(/*recurse=*/true)) {
        const at::ScalarType target = keeps_fp32(item.key()) ? at::kFloat : dtype;
        if (item.value().scalar_type() != target) item.value().set_data(item.value().to(target));
    }
}

at::Tensor SanaVideoTransformer3DModelImpl::forward(const SanaTransformerInputs& in,
                                                    st::sdk::TensorMap* intermediates) {
    // hidden_states [B, C_in, F, H, W], timestep [B] | [B, L] | [B, 1, F', H', W'], encoder_hidden_states
    // [B, Lt, caption_channels], encoder_attention_mask [B, Lt] | undefined -> [B, C_out, F, H, W]
    const auto& hs = in.hidden_states;
    const auto& p = config_.patch_size;
    const char* who = kSanaComponentId;
    if (hs.dim() != 5 || hs.size(1) != config_.in_channels)
        fail(who, "forward", "hidden_states must be [B, {}, F, H, W], got {}", config_.in_channels,
             c10::str(hs.sizes()));
    const int64_t B = hs.size(0);
    if (hs.size(2) % p[0] != 0 || hs.size(3) % p[1] != 0 || hs.size(4) % p[2] != 0)
        fail(who, "forward", "latent grid {} is not divisible by the patch size [{}, {}, {}]",
             c10::str(hs.sizes()), p[0], p[1], p[2]);
    const std::array<int64_t, 3> grid{hs.size(2) / p[0], hs.size(3) / p[1], hs.size(4) / p[2]};
    const int64_t L = grid[0] * grid[1] * grid[2], D = config_.inner_dim();
    const auto& text = in.encoder_hidden_states;
    if (text.dim() != 3 || text.size(0) != B || text.size(2) != config_.caption_channels)
        fail(who, "forward", "encoder_hidden_states must be [{}, Lt, {}], got {}", B,
             config_.caption_channels, text.defined() ? c10::str(text.sizes()) : std::string("undefined"));
    const auto& mask = in.encoder_attention_mask;
    if (mask.defined() && (mask.dim() != 2 || mask.size(0) != B || mask.size(1) != text.size(1)))
        fail(who, "forward", "encoder_attention_mask must be [{}, {}], got {}", B, text.size(1),
             c10::str(mask.sizes()));
    if (!in.routes.empty())
        fail(who, "forward",
             "TREAD routes are not supported by Sana Video: its feed-forward convolves the full latent grid");
    const auto dt = compute_dtype();

    st::kit::RopeTables rope = st::kit::rope3d_tables(config_.attention_head_dim, grid[0], grid[1], grid[2],
                                                      config_.rope_max_seq_len, who);
    rope.cos = rope.cos.to(hs.device());
    rope.sin = rope.sin.to(hs.device());

    at::Tensor x = patch_embedding->forward(hs.to(dt)).flatten(2).transpose(1, 2);  // [B, L, D]

    // Timesteps: [B], or per token ([B, L], or the I2V pipeline's [B, 1, F', H', W'] flattened).
    at::Tensor t = in.timestep;
    if (t.dim() == 0) t = t.reshape({1}).expand({B});
    if (t.dim() > 2) t = t.reshape({B, -1});
    const bool per_token = t.dim() == 2;
    if (t.size(0) != B || (per_token && t.size(1) != L))
        fail(who, "forward", "timestep must be [{}] or per token [{}, {}], got {}", B, B, L,
             c10::str(in.timestep.sizes()));
    auto& te = *time_embed;
    at::Tensor sinus = sana_timestep_sinusoid(t, 256);  // [B, 256] | [B, L, 256]
    at::Tensor temb =
        te.timestep_embedder->forward(sinus.to(te.timestep_embedder->linear_1->weight.scalar_type()));
    at::Tensor tproj = te.linear->forward(at::silu(temb)).unflatten(-1, {6, D});  // [B, 6, D] | [B, L, 6, D]

    at::Tensor context = caption_norm->forward(caption_projection->forward(text.to(dt)));  // [B, Lt, D]
    // No mask: every caption row is attended (an all-true mask, so the block inputs stay defined).
    at::Tensor key_mask = mask.defined() ? mask.to(hs.device()).gt(0.5)
                                         : at::ones({B, text.size(1)},
                                                    at::TensorOptions().dtype(at::kBool).device(hs.device()));
    if (intermediates) {
        (*intermediates)["patch_embed_out"] = x;
        (*intermediates)["time_embed_6D"] = tproj.flatten(-2);
        (*intermediates)["embedded_timestep"] = temb;
        (*intermediates)["caption_tokens"] = context;
        (*intermediates)["rope_cos"] = rope.cos;
        (*intermediates)["rope_sin"] = rope.sin;
    }

    // The blocks through the kit's runner (skip layers, checkpointing, taps); never routed.
    std::vector<st::kit::TokenAligned> aligned{{rope.cos, 0, false}, {rope.sin, 0, false}};
    std::vector<at::Tensor> extras{context, key_mask};
    if (per_token)
        aligned.push_back({tproj, 1, true});
    else
        extras.push_back(tproj);
    st::kit::BlockRunOptions run;
    run.skip = in.skip_blocks;
    run.checkpoint = gradient_checkpointing_;
    run.checkpoint_interval = checkpoint_interval_;
    run.training = is_training();
    run.routable = L;
    run.generator = in.generator;
    if (intermediates)
        for (size_t i = 0; i < transformer_blocks->size(); ++i)
            run.taps.push_back("blocks." + std::to_string(i) + ".out");
    auto block_fn = [this, per_token, grid](size_t i, const at::Tensor& h, const std::vector<at::Tensor>& al,
                                            const std::vector<at::Tensor>& ex, const st::kit::RouteView&) {
        const st::kit::RopeTables r{al[0], al[1]};
        const at::Tensor& tp = per_token ? al[2] : ex[2];
        return transformer_blocks->ptr<SanaVideoTransformerBlockImpl>(i)->forward(h, tp, ex[0], ex[1], r,
                                                                                  grid);
    };
    auto block_params = [this](size_t i) {
        std::vector<at::Tensor> params;
        for (const auto& prm : transformer_blocks->ptr<SanaVideoTransformerBlockImpl>(i)->parameters())
            if (prm.requires_grad()) params.push_back(prm);
        return params;
    };
    x = st::kit::run_blocks(transformer_blocks->size(), block_fn, block_params, x, aligned, extras, run,
                            intermediates);

    // Head: shift, scale = table + embedded timestep (per token when t is); LayerNorm; proj; unpatchify.
    at::Tensor shift, scale;
    if (per_token) {
        at::Tensor mod = scale_shift_table.to(at::kFloat).unsqueeze(0).unsqueeze(0) +
                         temb.to(at::kFloat).unsqueeze(2);  // [B, L, 2, D]
        shift = mod.select(2, 0);
        scale = mod.select(2, 1);
    } else {
        at::Tensor mod = scale_shift_table.to(at::kFloat).unsqueeze(0) + temb.to(at::kFloat).unsqueeze(1);
        shift = mod.narrow(1, 0, 1);
        scale = mod.narrow(1, 1, 1);
    }
    x = (at::layer_norm(x.to(at::kFloat), {D}, {}, {}, 1e-6) * (1 + scale) + shift).to(dt);
    x = proj_out->forward(x);
    x = x.reshape({B, grid[0], grid[1], grid[2], p[0], p[1], p[2], config_.out_channels});
    x = x.permute({0, 7, 1, 4, 2, 5, 3, 6});
    return x.reshape({B, config_.out_channels, grid[0] * p[0], grid[1] * p[1], grid[2] * p[2]});
}

}  // namespace st::plugins::sanavideo
