// WanS2VTransformer3DModel: conditioning (text, time with zero_timestep, audio, pose), token sequence
// noisy | reference | motion with its RoPE, segmented-modulation blocks, audio injectors, head.
// Follows diffusers PR #12258 transformer_wan_s2v.py WanS2VTransformer3DModel.forward /
// inject_motion / after_transformer_block and WanS2VTransformerBlock.forward @ 64044ecb05
// (models.md §5.4).
#include "core/s2v_transformer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/s2v_rope.h"
#include "st/error.h"
#include "st/kit/block_offload.h"
#include "st/kit/block_runner.h"
#include "st/lora.h"

namespace st::plugins::wan_s2v {
namespace wan = st::plugins::wan;
namespace {

constexpr const char* kComponent = "model.wan_s2v@1";

// Segment-wise affine modulation: rows [0, seg) use index 0 of shift/scale [B, 2, D], rows [seg, N)
// index 1. normed is float32 [B, N, D]; the result is float32.
at::Tensor modulate(const at::Tensor& normed, const at::Tensor& shift, const at::Tensor& scale, int64_t seg) {
    const int64_t n = normed.size(1);
    std::vector<at::Tensor> parts;
    if (seg > 0)
        parts.push_back(normed.narrow(1, 0, seg) * (1 + scale.narrow(1, 0, 1)) + shift.narrow(1, 0, 1));
    if (n > seg)
        parts.push_back(normed.narrow(1, seg, n - seg) * (1 + scale.narrow(1, 1, 1)) + shift.narrow(1, 1, 1));
    return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
}

// Segment-wise gate: y [B, N, D] (any dtype) times gate [B, 2, D] (float32) -> float32.
at::Tensor gated(const at::Tensor& y, const at::Tensor& gate, int64_t seg) {
    const at::Tensor yf = y.to(at::kFloat);
    const int64_t n = yf.size(1);
    std::vector<at::Tensor> parts;
    if (seg > 0) parts.push_back(yf.narrow(1, 0, seg) * gate.narrow(1, 0, 1));
    if (n > seg) parts.push_back(yf.narrow(1, seg, n - seg) * gate.narrow(1, 1, 1));
    return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
}

std::vector<at::Tensor> trainable(torch::nn::Module& m) {
    std::vector<at::Tensor> out;
    for (const auto& p : m.parameters())
        if (p.requires_grad()) out.push_back(p);
    return out;
}

}  // namespace

at::Tensor s2v_block_forward(wan::WanTransformerBlockImpl& block, const at::Tensor& x,
                             const at::Tensor& context, const at::Tensor& timestep_proj, int64_t segment,
                             const wan::RopeTables& rope, double eps) {
    // x [B, N, D], context [B, Lt, D], timestep_proj [B, 6, 2, D] -> [B, N, D]
    TORCH_CHECK(
        x.dim() == 3 && timestep_proj.dim() == 4 && timestep_proj.size(1) == 6 && timestep_proj.size(2) == 2,
        "S2V block: x must be [B, N, D] and timestep_proj [B, 6, 2, D], got ", x.sizes(), " and ",
        timestep_proj.sizes());
    const auto dt = x.scalar_type();
    const int64_t seg = std::clamp<int64_t>(segment, 0, x.size(1));
    // shift, scale, gate (attention), shift, scale, gate (FFN): each [B, 2, D] in float32.
    auto mod = (block.scale_shift_table.to(at::kFloat).unsqueeze(2) + timestep_proj.to(at::kFloat)).unbind(1);
    // 1. self-attention on the segment-modulated, non-affine LayerNorm
    at::Tensor nx = modulate(wan::fp32_layer_norm(x, {}, {}, eps), mod[0], mod[1], seg).to(dt);
    at::Tensor a = block.attn1->forward(nx, nx, {}, &rope);
    at::Tensor h = (x.to(at::kFloat) + gated(a, mod[2], seg)).to(dt);
    // 2. cross-attention to the text (affine LayerNorm, no gate, no modulation)
    nx = block.norm2.is_empty() ? h
                                : wan::fp32_layer_norm(h, block.norm2->weight, block.norm2->bias, eps).to(dt);
    h = h + block.attn2->forward(nx, context, {}, nullptr);
    // 3. feed-forward
    nx = modulate(wan::fp32_layer_norm(h, {}, {}, eps), mod[3], mod[4], seg).to(dt);
    at::Tensor f = block.feed_forward(nx);
    return (h.to(at::kFloat) + gated(f, mod[5], seg)).to(dt);
}

WanS2VConditionEmbedderImpl::WanS2VConditionEmbedderImpl(const WanS2VConfig& c) {
    const int64_t d = c.inner_dim();
    const auto& p = c.patch_size;
    time_embedder =
        register_module("time_embedder", wan::WanMLPEmbedder(c.freq_dim, d, /*gelu_tanh_act=*/false));
    time_proj = register_module("time_proj", torch::nn::Linear(d, 6 * d));
    text_embedder =
        register_module("text_embedder", wan::WanMLPEmbedder(c.text_dim, d, /*gelu_tanh_act=*/true));
    causal_audio_encoder =
        register_module("causal_audio_encoder",
                        S2VCausalAudioEncoder(c.audio_dim, c.num_weighted_avg_layers, d, /*num_tokens=*/4));
    pose_embedder = register_module(
        "pose_embedder",
        torch::nn::Conv3d(
            torch::nn::Conv3dOptions(c.pose_dim, d, {p[0], p[1], p[2]}).stride({p[0], p[1], p[2]})));
}

WanS2VTransformer3DModelImpl::WanS2VTransformer3DModelImpl(WanS2VConfig config) : config_(std::move(config)) {
    config_.validate();
    const wan::WanTransformerConfig wc = config_.to_wan_config();
    const int64_t d = config_.inner_dim();
    const auto& p = config_.patch_size;
    patch_embedding = register_module(
        "patch_embedding",
        torch::nn::Conv3d(
            torch::nn::Conv3dOptions(config_.in_channels, d, {p[0], p[1], p[2]}).stride({p[0], p[1], p[2]})));
    if (config_.enable_framepack)
        frame_packer = register_module("frame_packer", S2VFramePacker(d, config_.framepack_drop_mode));
    trainable_condition_mask = register_module("trainable_condition_mask", torch::nn::Embedding(3, d));
    condition_embedder = register_module("condition_embedder", WanS2VConditionEmbedder(config_));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < config_.num_layers; ++i) blocks->push_back(wan::WanTransformerBlock(wc));
    audio_injector = register_module("audio_injector", S2VAudioInjector(config_));
    proj_out = register_module("proj_out", torch::nn::Linear(d, config_.out_channels * p[0] * p[1] * p[2]));
    scale_shift_table =
        register_parameter("scale_shift_table", at::randn({1, 2, d}) / std::sqrt(static_cast<double>(d)));
}

at::ScalarType WanS2VTransformer3DModelImpl::compute_dtype() const {
    return patch_embedding->weight.scalar_type();
}

bool WanS2VTransformer3DModelImpl::keeps_fp32(const std::string& name) {
    std::stringstream ss(name);
    std::string part;
    while (std::getline(ss, part, '.')) {
        if (part == "time_embedder" || part == "scale_shift_table" || part == "norm1" || part == "norm2" ||
            part == "norm3" || part == "causal_audio_encoder")
            return true;
    }
    return false;
}

void WanS2VTransformer3DModelImpl::set_compute_dtype(at::ScalarType dtype) {
    // Stored (frozen) base weights keep their form; their layers compute in the dtype.
    st::sdk::convert_parameters(
        *this, [dtype](const std::string& name) { return keeps_fp32(name) ? at::kFloat : dtype; });
}

void WanS2VTransformer3DModelImpl::set_feed_forward_chunking(const wan::FeedForwardChunking& chunking) {
    if (chunking.chunk_size && *chunking.chunk_size <= 0)
        fail(kComponent, "config", "feed_forward_chunk_size must be > 0, got {}", *chunking.chunk_size);
    for (size_t i = 0; i < blocks->size(); ++i)
        blocks->ptr<wan::WanTransformerBlockImpl>(i)->chunking = chunking;
}

at::Tensor WanS2VTransformer3DModelImpl::forward(const WanS2VInputs& in, st::sdk::TensorMap* intermediates) {
    // hidden_states [B, C_in, T, H, W], timestep [B], encoder_hidden_states [B, Lt, text_dim],
    // image_latents [B, C_in, 1, Hr, Wr], motion_latents [B, 16, M, Hm, Wm] | undefined,
    // pose_latents [B, pose_dim, T, H, W] | undefined, audio_embeds [B, L_w2v, audio_dim, Ta]
    // -> [B, C_out, T, H, W]
    const auto& c = config_;
    const auto& hs = in.hidden_states;
    const auto& p = c.patch_size;
    if (hs.dim() != 5 || hs.size(1) != c.in_channels)
        fail(kComponent, "forward", "hidden_states must be [B, {}, T, H, W], got {}", c.in_channels,
             c10::str(hs.sizes()));
    const int64_t B = hs.size(0);
    if (hs.size(2) % p[0] != 0 || hs.size(3) % p[1] != 0 || hs.size(4) % p[2] != 0)
        fail(kComponent, "forward", "latent grid {} is not divisible by the patch size",
             c10::str(hs.sizes()));
    const int64_t fp = hs.size(2) / p[0], hp = hs.size(3) / p[1], wp = hs.size(4) / p[2];
    const int64_t L = fp * hp * wp, D = c.inner_dim();
    auto check_shape = [&](const at::Tensor& t, const char* name, std::vector<int64_t> expect) {
        bool ok = t.defined() && t.dim() == static_cast<int64_t>(expect.size());
        for (size_t i = 0; ok && i < expect.size(); ++i)
            ok = expect[i] < 0 || t.size(static_cast<int64_t>(i)) == expect[i];
        if (!ok)
            fail(kComponent, "forward", "{} must be {} (-1 = any), got {}", name,
                 c10::str(at::IntArrayRef(expect)),
                 t.defined() ? c10::str(t.sizes()) : std::string("undefined"));
    };
    check_shape(in.encoder_hidden_states, "encoder_hidden_states", {B, -1, c.text_dim});
    check_shape(in.image_latents, "image_latents", {B, c.in_channels, 1, -1, -1});
    check_shape(in.audio_embeds, "audio_embeds", {B, c.num_weighted_avg_layers, c.audio_dim, -1});
    if (in.pose_latents.defined())
        check_shape(in.pose_latents, "pose_latents", {B, c.pose_dim, hs.size(2), hs.size(3), hs.size(4)});
    const int64_t mf_pixel = in.motion_frames[0], mf_latent = in.motion_frames[1];
    if (mf_pixel < 0 || mf_latent < 0)
        fail(kComponent, "forward", "motion_frames must be >= 0, got [{}, {}]", mf_pixel, mf_latent);
    const auto dt = compute_dtype();

    // Noisy tokens (+ pose) and reference tokens. Without pose latents the pose embedding of zeros
    // is its bias alone.
    auto& ce = *condition_embedder;
    at::Tensor x = patch_embedding->forward(hs.to(dt));  // [B, D, F', H', W']
    if (in.pose_latents.defined())
        x = x + ce.pose_embedder->forward(in.pose_latents.to(dt));
    else
        x = x + ce.pose_embedder->bias.to(dt).view({1, D, 1, 1, 1});
    x = x.flatten(2).transpose(1, 2);  // [B, L, D]
    const at::Tensor ref_grid = patch_embedding->forward(in.image_latents.to(dt));
    const at::Tensor ref = ref_grid.flatten(2).transpose(1, 2);  // [B, Lr, D]
    std::vector<S2VRopeGrid> grids{s2v_noisy_grid(fp, hp, wp),
                                   s2v_reference_grid(ref_grid.size(3), ref_grid.size(4))};
    std::vector<at::Tensor> seq{x, ref};

    // Motion tokens (pipeline chunks > 0; none when dropped).
    at::Tensor motion_tokens;
    if (!in.drop_motion_frames && in.motion_latents.defined()) {
        const auto& m = in.motion_latents;
        check_shape(m, "motion_latents",
                    {B, frame_packer.is_empty() ? c.in_channels : kMotionChannels, -1, -1, -1});
        if (!frame_packer.is_empty()) {
            const int64_t add_last = (c.add_last_motion ? 1 : 0) * in.add_last_motion;
            FramePackOutput packed = frame_packer->forward(m, add_last);
            motion_tokens = packed.tokens;
            grids.insert(grids.end(), packed.grids.begin(), packed.grids.end());
        } else if (m.size(2) > 0) {
            // diffusers process_motion: shared patch embedding at frames -M .. -1 (mirrored).
            const at::Tensor mg = patch_embedding->forward(m.to(dt));  // [B, D, M', Hm', Wm']
            const int64_t mf = mg.size(2), mh = mg.size(3), mw = mg.size(4);
            motion_tokens = mg.flatten(2).transpose(1, 2);
            grids.push_back({{-mf, 0, 0}, {0, mh, mw}, {mf, mh, mw}});
        }
    }
    if (motion_tokens.defined()) seq.push_back(motion_tokens);
    x = at::cat(seq, 1);  // [B, N, D]
    const int64_t N = x.size(1);
    {
        // trainable_condition_mask: row 0 noisy, 1 reference, 2 motion tokens.
        const at::Tensor rows = trainable_condition_mask->weight.to(dt);
        std::vector<at::Tensor> mask{rows[0].expand({L, D}), rows[1].expand({ref.size(1), D})};
        if (motion_tokens.defined()) mask.push_back(rows[2].expand({motion_tokens.size(1), D}));
        x = x + at::cat(mask, 0).unsqueeze(0);
    }

    // Time: t for the noisy tokens and (zero_timestep) t = 0 for reference + motion tokens.
    at::Tensor t = in.timestep;
    if (!t.defined() || t.dim() > 1) fail(kComponent, "forward", "timestep must be [B] or a scalar");
    if (t.dim() == 0) t = t.reshape({1}).expand({B});
    if (t.size(0) != B) fail(kComponent, "forward", "timestep has {} entries for batch {}", t.size(0), B);
    t = t.to(at::kFloat);
    if (c.zero_timestep) t = at::cat({t, at::zeros({1}, t.options())});
    at::Tensor temb_all = ce.time_embedder->forward(
        wan::wan_timestep_sinusoid(t, c.freq_dim).to(ce.time_embedder->linear_1->weight.scalar_type()));
    temb_all = temb_all.to(dt);
    const at::Tensor proj_all =
        ce.time_proj->forward(at::silu(temb_all)).unflatten(1, {6, D});  // [B(+1), 6, D]
    const at::Tensor temb = temb_all.narrow(0, 0, B);
    // [B, 6, 2, D]: index 0 modulates the noisy tokens (the first L, or the kept ones under TREAD), index 1
    // (zero_timestep) the reference and motion tokens.
    at::Tensor tproj;
    if (c.zero_timestep) {
        tproj = at::stack({proj_all.narrow(0, 0, B), proj_all.narrow(0, B, 1).expand({B, 6, D})}, 2);
    } else {
        tproj = proj_all.unsqueeze(2).expand({B, 6, 2, D});
    }
    const at::Tensor context = ce.text_embedder->forward(in.encoder_hidden_states.to(dt));  // [B, Lt, D]

    // Audio: frame 0 repeated motion_frames[0] times in front, causal encoder, drop the first
    // motion_frames[1] groups -> one group of 5 tokens (+ a global vector) per latent frame.
    const at::Tensor& audio_in = in.audio_embeds;
    if (audio_in.size(3) < 1) fail(kComponent, "forward", "audio_embeds has no frames");
    const at::Tensor audio = at::cat(
        {audio_in.narrow(3, 0, 1).expand({B, audio_in.size(1), audio_in.size(2), mf_pixel}), audio_in}, 3);
    auto [local, global] = ce.causal_audio_encoder->forward(audio);  // [B, T', 5, D], [B, T', 1, D]
    const int64_t groups = local.size(1) - mf_latent;
    if (groups != fp)
        fail(
            kComponent, "forward",
            "audio_embeds has {} frames: with motion_frames [{}, {}] the audio encoder yields {} groups "
            "after "
            "dropping {}, but the latents have {} frames (feed 4 audio frames per latent frame at the 16 fps "
            "video rate)",
            audio_in.size(3), mf_pixel, mf_latent, local.size(1), mf_latent, fp);
    const at::Tensor audio_tokens = local.narrow(1, mf_latent, fp).flatten(0, 1).to(dt);  // [B*F', 5, D]
    const at::Tensor audio_global =
        global.narrow(1, mf_latent, fp).flatten(0, 1).select(1, 0).to(dt);  // [B*F', D]

    wan::RopeTables rope = s2v_rope_tables(c.attention_head_dim, grids, c.rope_max_seq_len);
    rope.cos = rope.cos.to(hs.device());
    rope.sin = rope.sin.to(hs.device());
    if (rope.cos.size(0) != N)
        fail(kComponent, "forward", "internal: {} RoPE positions for {} tokens", rope.cos.size(0), N);
    if (intermediates) {
        (*intermediates)["patch_embed_out"] = seq[0];
        (*intermediates)["temb"] = temb;
        (*intermediates)["timestep_proj"] = tproj;
        (*intermediates)["text_embedder_out"] = context;
        (*intermediates)["audio_tokens"] = audio_tokens;
        (*intermediates)["audio_global"] = audio_global;
        (*intermediates)["rope_cos"] = rope.cos;
        (*intermediates)["rope_sin"] = rope.sin;
    }

    // The blocks, through the kit's runner; each block is the Wan block on [noisy | reference | motion]
    // tokens followed by its audio injector (taps blocks.N.out: after the injection; the block alone is
    // recorded as blocks.N.pre_injection when every token is there). TREAD routes only the noisy tokens:
    // reference and motion tokens always take part.
    std::vector<st::kit::TokenAligned> aligned{{rope.cos, 0, false}, {rope.sin, 0, false}};
    const std::vector<at::Tensor> extras{context, tproj, audio_tokens, audio_global};
    // Skip-layer guidance skips the block, not its audio injector (the runner's skip would skip both).
    std::vector<bool> skip(blocks->size(), false);
    for (const int64_t b : in.skip_blocks) {
        if (b < 0 || b >= static_cast<int64_t>(blocks->size()))
            fail(kComponent, "forward", "skip layer {} is out of range: this transformer has blocks 0 .. {}",
                 b, static_cast<int64_t>(blocks->size()) - 1);
        skip[static_cast<size_t>(b)] = true;
    }
    st::kit::BlockRunOptions run;
    run.checkpoint = gradient_checkpointing_;
    run.checkpoint_interval = checkpoint_interval_;
    run.routes = in.routes;
    run.training = is_training();
    run.routable = L;
    run.generator = in.generator;
    if (intermediates)
        for (size_t i = 0; i < blocks->size(); ++i)
            run.taps.push_back("blocks." + std::to_string(i) + ".out");
    const double eps = c.eps;
    const bool zero_t = c.zero_timestep;
    const int64_t per_frame = hp * wp;
    // Captures by value only: checkpointing re-runs it in backward, after this forward returned.
    auto block_fn = [this, eps, zero_t, per_frame, L, intermediates, skip, offload = offload_](
                        size_t i, const at::Tensor& h, const std::vector<at::Tensor>& al,
                        const std::vector<at::Tensor>& ex, const st::kit::RouteView& view) {
        if (offload && !skip[i]) offload->enter(i);
        const wan::RopeTables r{al[0], al[1]};
        const bool routed = view.kept.defined() && view.front < L;
        const at::Tensor y = skip[i] ? h
                                     : s2v_block_forward(*blocks->ptr<wan::WanTransformerBlockImpl>(i), h,
                                                         ex[0], ex[1], zero_t ? view.front : 0, r, eps);
        if (intermediates && !routed && !torch::autograd::GradMode::is_enabled())
            (*intermediates)["blocks." + std::to_string(i) + ".pre_injection"] = y;
        const int64_t bi = static_cast<int64_t>(i);
        if (!audio_injector->has(bi)) return y;
        const int64_t k = audio_injector->index_of(bi);
        return routed ? audio_injector->forward_routed(k, y, view.kept, per_frame, ex[2], ex[3])
                      : audio_injector->forward(k, y, L, ex[2], ex[3]);
    };
    auto block_params = [this](size_t i) {
        std::vector<at::Tensor> params = trainable(*blocks->ptr<wan::WanTransformerBlockImpl>(i));
        const int64_t bi = static_cast<int64_t>(i);
        if (audio_injector->has(bi)) {
            const auto k = static_cast<size_t>(audio_injector->index_of(bi));
            for (const auto& p : trainable(*audio_injector->injector[k])) params.push_back(p);
            for (const auto& p : trainable(*audio_injector->injector_adain_layers[k])) params.push_back(p);
        }
        return params;
    };
    x = st::kit::run_blocks(blocks->size(), block_fn, block_params, x, aligned, extras, run, intermediates);

    // Head on the noisy tokens: modulated non-affine LayerNorm (fp32) with temb(t), unpatchify.
    x = x.narrow(1, 0, L);
    const at::Tensor mod = scale_shift_table.to(at::kFloat) + temb.to(at::kFloat).unsqueeze(1);  // [B, 2, D]
    x = (wan::fp32_layer_norm(x, {}, {}, c.eps) * (1 + mod.narrow(1, 1, 1)) + mod.narrow(1, 0, 1)).to(dt);
    x = proj_out->forward(x);  // [B, L, C_out * pt * ph * pw]
    x = x.reshape({B, fp, hp, wp, p[0], p[1], p[2], c.out_channels});
    x = x.permute({0, 7, 1, 4, 2, 5, 3, 6});
    return x.reshape({B, c.out_channels, fp * p[0], hp * p[1], wp * p[2]});
}

}  // namespace st::plugins::wan_s2v
