// WanTransformer3DModel forward (patch embedding, conditioning, blocks, head, unpatchify), dtype
// policy, random init and the Wan 2.2 expert pair. Follows diffusers transformer_wan.py
// WanTransformer3DModel.forward @ 58eb52c080 (models.md §1.1-1.7, §2.3, §3).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>
#include <sstream>

#include "core/transformer.h"
#include "st/error.h"
#include "st/kit/block_offload.h"
#include "st/kit/block_runner.h"
#include "st/log.h"
#include "st/lora.h"

namespace st::plugins::wan {

WanTransformer3DModelImpl::WanTransformer3DModelImpl(WanTransformerConfig config)
    : config_(std::move(config)) {
    config_.validate();
    const int64_t d = config_.inner_dim();
    const auto& p = config_.patch_size;
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv3d(
            torch::nn::Conv3dOptions(config_.in_channels, d, {p[0], p[1], p[2]}).stride({p[0], p[1], p[2]})));
    condition_embedder = register_module("condition_embedder", WanConditionEmbedder(config_));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.num_layers; ++i) blocks->push_back(WanTransformerBlock(config_));
    proj_out = register_module("proj_out", torch::nn::Linear(d, config_.out_channels * p[0] * p[1] * p[2]));
    scale_shift_table =
        register_parameter("scale_shift_table", at::randn({1, 2, d}) / std::sqrt(static_cast<double>(d)));
}

at::ScalarType WanTransformer3DModelImpl::compute_dtype() const {
    return patch_embedding->weight.scalar_type();
}

bool WanTransformer3DModelImpl::keeps_fp32(const std::string& name) {
    // diffusers _keep_in_fp32_modules = [time_embedder, scale_shift_table, norm1, norm2, norm3],
    // matched against the dotted module path.
    std::stringstream ss(name);
    std::string part;
    while (std::getline(ss, part, '.')) {
        if (part == "time_embedder" || part == "scale_shift_table" || part == "norm1" || part == "norm2" ||
            part == "norm3")
            return true;
    }
    return false;
}

void WanTransformer3DModelImpl::set_compute_dtype(at::ScalarType dtype) {
    // Stored (frozen) base weights keep their form; their layers compute in the dtype.
    st::sdk::convert_parameters(
        *this, [dtype](const std::string& name) { return keeps_fp32(name) ? at::kFloat : dtype; });
}

void WanTransformer3DModelImpl::set_feed_forward_chunking(const FeedForwardChunking& chunking) {
    if (chunking.chunk_size && *chunking.chunk_size <= 0)
        fail("model.wan@1", "config", "feed_forward_chunk_size must be > 0, got {}", *chunking.chunk_size);
    for (size_t i = 0; i < blocks->size(); ++i) blocks->ptr<WanTransformerBlockImpl>(i)->chunking = chunking;
}

at::Tensor WanTransformer3DModelImpl::forward(const WanTransformerInputs& in,
                                              st::sdk::TensorMap* intermediates) {
    // hidden_states [B, C_in, F, H, W], timestep [B] | [B, L], encoder_hidden_states [B, Lt, text_dim],
    // encoder_hidden_states_image [B, Li, image_dim] | undefined -> [B, C_out, F, H, W]
    const auto& hs = in.hidden_states;
    const auto& p = config_.patch_size;
    TORCH_CHECK(hs.dim() == 5 && hs.size(1) == config_.in_channels,
                "WanTransformer3DModel: hidden_states must be [B, ", config_.in_channels, ", F, H, W], got ",
                hs.sizes());
    const int64_t B = hs.size(0);
    TORCH_CHECK(hs.size(2) % p[0] == 0 && hs.size(3) % p[1] == 0 && hs.size(4) % p[2] == 0,
                "WanTransformer3DModel: latent grid ", hs.sizes(), " not divisible by the patch size");
    const int64_t fp = hs.size(2) / p[0], hp = hs.size(3) / p[1], wp = hs.size(4) / p[2];
    const int64_t L = fp * hp * wp, D = config_.inner_dim();
    TORCH_CHECK(in.encoder_hidden_states.dim() == 3 && in.encoder_hidden_states.size(0) == B &&
                    in.encoder_hidden_states.size(2) == config_.text_dim,
                "WanTransformer3DModel: encoder_hidden_states must be [", B, ", Lt, ", config_.text_dim,
                "], got ", in.encoder_hidden_states.sizes());
    const auto dt = compute_dtype();

    RopeTables rope = wan_rope_tables(config_.attention_head_dim, fp, hp, wp, config_.rope_max_seq_len);
    rope.cos = rope.cos.to(hs.device());
    rope.sin = rope.sin.to(hs.device());

    at::Tensor x = patch_embedding->forward(hs.to(dt)).flatten(2).transpose(1, 2);  // [B, L, D]

    at::Tensor t = in.timestep;
    if (t.dim() == 0) t = t.reshape({1}).expand({B});
    if (t.dim() == 2 && force_2_1_time_embedding_) t = t.select(1, 0);  // SimpleTuner: token 0's t
    const bool per_token = t.dim() == 2;
    TORCH_CHECK(t.size(0) == B && (!per_token || t.size(1) == L), "WanTransformer3DModel: timestep must be [",
                B, "] or [", B, ", ", L, "], got ", t.sizes());
    auto& ce = *condition_embedder;
    at::Tensor sinus = wan_timestep_sinusoid(t, config_.freq_dim);  // [B, 256] | [B, L, 256]
    at::Tensor temb =
        ce.time_embedder->forward(sinus.to(ce.time_embedder->linear_1->weight.scalar_type())).to(dt);
    at::Tensor tproj =
        ce.time_proj->forward(at::silu(temb)).unflatten(-1, {6, D});  // [B, 6, D] | [B, L, 6, D]
    at::Tensor context = ce.text_embedder->forward(in.encoder_hidden_states.to(dt));  // [B, Lt, D]
    at::Tensor image_context;
    if (in.encoder_hidden_states_image.defined()) {
        TORCH_CHECK(
            !ce.image_embedder.is_empty(),
            "WanTransformer3DModel: encoder_hidden_states_image given but the model has no image branch "
            "(image_dim is null)");
        image_context = ce.image_embedder->forward(in.encoder_hidden_states_image);
    } else {
        TORCH_CHECK(
            ce.image_embedder.is_empty(),
            "WanTransformer3DModel: this Wan 2.1 I2V model needs encoder_hidden_states_image [B, 257, ",
            *config_.image_dim, "]");
    }
    if (intermediates) {
        (*intermediates)["patch_embed_out"] = x;
        (*intermediates)["temb"] = temb;
        (*intermediates)["timestep_proj"] = tproj;
        (*intermediates)["text_embedder_out"] = context;
        (*intermediates)["rope_cos"] = rope.cos;
        (*intermediates)["rope_sin"] = rope.sin;
        if (image_context.defined()) (*intermediates)["image_embedder_out"] = image_context;
    }

    // The blocks, through the kit's runner: skip layers (skip-layer guidance: the listed blocks pass x
    // through unchanged), checkpointing, taps, TREAD routes. RoPE tables and per-token modulation travel
    // with the tokens; every token is a video token (text enters through cross-attention).
    std::vector<st::kit::TokenAligned> aligned{{rope.cos, 0, false}, {rope.sin, 0, false}};
    std::vector<at::Tensor> extras{context};
    if (per_token)
        aligned.push_back({tproj, 1, true});
    else
        extras.push_back(tproj);
    if (image_context.defined()) extras.push_back(image_context);
    st::kit::BlockRunOptions run;
    run.skip = in.skip_blocks;
    run.checkpoint = gradient_checkpointing_;
    run.checkpoint_interval = checkpoint_interval_;
    run.routes = in.routes;
    run.training = is_training();
    run.routable = L;
    run.force_keep = in.force_keep;
    run.generator = in.generator;
    if (intermediates)
        for (size_t i = 0; i < blocks->size(); ++i)
            run.taps.push_back("blocks." + std::to_string(i) + ".out");
    const bool has_image = image_context.defined();
    auto block_fn = [this, per_token, has_image, offload = offload_](
                        size_t i, const at::Tensor& h, const std::vector<at::Tensor>& al,
                        const std::vector<at::Tensor>& ex, const st::kit::RouteView&) {
        if (offload) offload->enter(i);
        const RopeTables r{al[0], al[1]};
        const at::Tensor& tp = per_token ? al[2] : ex[1];
        const at::Tensor img = has_image ? ex.back() : at::Tensor();
        return blocks->ptr<WanTransformerBlockImpl>(i)->forward(h, ex[0], img, tp, r);
    };
    auto block_params = [this](size_t i) {
        std::vector<at::Tensor> params;
        for (const auto& prm : blocks->ptr<WanTransformerBlockImpl>(i)->parameters())
            if (prm.requires_grad()) params.push_back(prm);
        return params;
    };
    x = st::kit::run_blocks(blocks->size(), block_fn, block_params, x, aligned, extras, run, intermediates);

    // Head: modulated non-affine LayerNorm (fp32), projection, unpatchify.
    at::Tensor shift, scale;
    if (per_token) {
        at::Tensor mod =
            scale_shift_table.to(at::kFloat).unsqueeze(0) + temb.to(at::kFloat).unsqueeze(2);  // [B, L, 2, D]
        shift = mod.select(2, 0);
        scale = mod.select(2, 1);
    } else {
        at::Tensor mod = scale_shift_table.to(at::kFloat) + temb.to(at::kFloat).unsqueeze(1);  // [B, 2, D]
        shift = mod.narrow(1, 0, 1);
        scale = mod.narrow(1, 1, 1);
    }
    x = (fp32_layer_norm(x, {}, {}, config_.eps) * (1 + scale) + shift).to(dt);
    x = proj_out->forward(x);  // [B, L, C_out * pt * ph * pw]
    x = x.reshape({B, fp, hp, wp, p[0], p[1], p[2], config_.out_channels});
    x = x.permute({0, 7, 1, 4, 2, 5, 3, 6});
    return x.reshape({B, config_.out_channels, fp * p[0], hp * p[1], wp * p[2]});
}

// ---- the Wan 2.2 expert pair ---------------------------------------------------------------------

WanExpertPair::WanExpertPair(WanTransformer3DModel high, WanTransformer3DModel low, double boundary_ratio)
    : high_(std::move(high)), low_(std::move(low)), boundary_ratio_(boundary_ratio) {
    if (!(boundary_ratio > 0.0 && boundary_ratio < 1.0))
        fail("model.wan@1", "config", "boundary_ratio must be in (0, 1), got {}", boundary_ratio);
}

WanTransformer3DModel& WanExpertPair::expert_for(double timestep) {
    return is_high(timestep) ? high_ : low_;
}

at::Tensor WanExpertPair::forward(const WanTransformerInputs& inputs) {
    // hidden_states [B, C_in, F, H, W], timestep [B] | [B, L] -> [B, C_out, F, H, W]
    at::Tensor t = inputs.timestep.to(at::kDouble);
    const double lo = t.min().item<double>(), hi = t.max().item<double>();
    if (is_high(lo) != is_high(hi))
        fail("model.wan@1", "forward",
             "timesteps {} .. {} straddle the expert boundary {} (= boundary_ratio {} x 1000): run the "
             "samples "
             "of each expert separately",
             lo, hi, boundary_ratio_ * 1000.0, boundary_ratio_);
    return expert_for(hi)->forward(inputs);
}

}  // namespace st::plugins::wan
