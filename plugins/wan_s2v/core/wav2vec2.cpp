// Wav2Vec2 forward (HF transformers modeling_wav2vec2.py, layer feat-norm + stable layer norm),
// waveform normalisation and the upstream S2V video-rate alignment. See wav2vec2.h.
#include "core/wav2vec2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "st/attention.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {
namespace {

constexpr const char* kComponent = "model.wan_s2v.wav2vec2";

std::string shape_str(at::IntArrayRef sizes) {
    std::string out;
    for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
    return "[" + out + "]";
}

at::Tensor gelu_exact(const at::Tensor& x) {
    return at::gelu(x);  // exact erf GELU (transformers ACT2FN["gelu"])
}

}  // namespace

// --- modules ------------------------------------------------------------------------------------

Wav2Vec2ConvLayerImpl::Wav2Vec2ConvLayerImpl(const Wav2Vec2Config& config, int64_t layer_id) {
    const int64_t in = layer_id > 0 ? config.conv_dim[layer_id - 1] : 1;
    const int64_t out = config.conv_dim[layer_id];
    conv = register_module("conv",
                           torch::nn::Conv1d(torch::nn::Conv1dOptions(in, out, config.conv_kernel[layer_id])
                                                 .stride(config.conv_stride[layer_id])
                                                 .bias(config.conv_bias)));
    // nn.LayerNorm(out_conv_dim, elementwise_affine=True): default eps 1e-5, not config.layer_norm_eps.
    layer_norm =
        register_module("layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}).eps(1e-5)));
}

at::Tensor Wav2Vec2ConvLayerImpl::forward(const at::Tensor& x) {
    // [B, C_in, T_in] -> conv -> [B, C_out, T_out] -> LN over channels -> GELU
    at::Tensor h = conv->forward(x);
    h = layer_norm->forward(h.transpose(1, 2)).transpose(1, 2);
    return gelu_exact(h);
}

Wav2Vec2FeatureEncoderImpl::Wav2Vec2FeatureEncoderImpl(const Wav2Vec2Config& config) {
    conv_layers = register_module("conv_layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < static_cast<int64_t>(config.conv_dim.size()); ++i)
        conv_layers->push_back(Wav2Vec2ConvLayer(config, i));
}

at::Tensor Wav2Vec2FeatureEncoderImpl::forward(const at::Tensor& waveform) {
    // [B, N] -> [B, 1, N] -> conv stack -> [B, C, T]
    at::Tensor h = waveform.unsqueeze(1);
    for (const auto& layer : *conv_layers) h = layer->as<Wav2Vec2ConvLayerImpl>()->forward(h);
    return h;
}

Wav2Vec2FeatureProjectionImpl::Wav2Vec2FeatureProjectionImpl(const Wav2Vec2Config& config) {
    const int64_t c = config.conv_dim.back();
    layer_norm = register_module(
        "layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c}).eps(config.layer_norm_eps)));
    projection = register_module("projection", torch::nn::Linear(c, config.hidden_size));
}

at::Tensor Wav2Vec2FeatureProjectionImpl::forward(const at::Tensor& x) {
    // [B, T, C_conv] -> LN -> Linear -> [B, T, hidden]
    return projection->forward(layer_norm->forward(x));
}

std::pair<at::Tensor, at::Tensor> Wav2Vec2FeatureProjectionImpl::forward_with_features(const at::Tensor& x) {
    at::Tensor normed = layer_norm->forward(x);
    at::Tensor projected = projection->forward(normed);
    return {std::move(normed), std::move(projected)};
}

Wav2Vec2WeightNormConv1dImpl::Wav2Vec2WeightNormConv1dImpl(int64_t channels, int64_t kernel, int64_t groups)
    : kernel_(kernel), groups_(groups) {
    weight_g = register_parameter("weight_g", at::ones({1, 1, kernel}));
    weight_v = register_parameter("weight_v", at::randn({channels, channels / groups, kernel}) * 0.02);
    bias = register_parameter("bias", at::zeros({channels}));
}

at::Tensor Wav2Vec2WeightNormConv1dImpl::weight() const {
    // torch._weight_norm(v, g, dim=2): g * v / norm_except_dim(v, 2, dim=2).
    return weight_v * (weight_g / weight_v.pow(2).sum(at::IntArrayRef{0, 1}, /*keepdim=*/true).sqrt());
}

at::Tensor Wav2Vec2WeightNormConv1dImpl::forward(const at::Tensor& x) {
    return at::conv1d(x, weight(), bias, /*stride=*/{1}, /*padding=*/{kernel_ / 2}, /*dilation=*/{1},
                      groups_);
}

Wav2Vec2PositionalConvEmbeddingImpl::Wav2Vec2PositionalConvEmbeddingImpl(const Wav2Vec2Config& config)
    : num_pad_remove_(config.num_conv_pos_embeddings % 2 == 0 ? 1 : 0) {
    conv =
        register_module("conv", Wav2Vec2WeightNormConv1d(config.hidden_size, config.num_conv_pos_embeddings,
                                                         config.num_conv_pos_embedding_groups));
}

at::Tensor Wav2Vec2PositionalConvEmbeddingImpl::forward(const at::Tensor& x) {
    // [B, T, C] -> [B, C, T] -> conv (pad K/2) -> [B, C, T + 1 - K%2] -> drop the last step of an even
    // kernel (Wav2Vec2SamePadLayer) -> GELU -> [B, T, C]
    at::Tensor h = conv->forward(x.transpose(1, 2));
    if (num_pad_remove_ > 0) h = h.narrow(2, 0, h.size(2) - num_pad_remove_);
    return gelu_exact(h).transpose(1, 2);
}

Wav2Vec2FeedForwardImpl::Wav2Vec2FeedForwardImpl(const Wav2Vec2Config& config) {
    intermediate_dense = register_module("intermediate_dense",
                                         torch::nn::Linear(config.hidden_size, config.intermediate_size));
    output_dense =
        register_module("output_dense", torch::nn::Linear(config.intermediate_size, config.hidden_size));
}

at::Tensor Wav2Vec2FeedForwardImpl::forward(const at::Tensor& x) {
    return output_dense->forward(gelu_exact(intermediate_dense->forward(x)));
}

Wav2Vec2EncoderLayerImpl::Wav2Vec2EncoderLayerImpl(const Wav2Vec2Config& config) {
    const auto ln = torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps);
    attention = register_module(
        "attention", st::plugins::wan::HfSelfAttention(config.hidden_size, config.num_attention_heads));
    layer_norm = register_module("layer_norm", torch::nn::LayerNorm(ln));
    feed_forward = register_module("feed_forward", Wav2Vec2FeedForward(config));
    final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(ln));
}

at::Tensor Wav2Vec2EncoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& key_mask) {
    // Wav2Vec2EncoderLayerStableLayerNorm: [B, T, C] -> [B, T, C]
    at::Tensor h = x + attention->forward(layer_norm->forward(x), key_mask);
    return h + feed_forward->forward(final_layer_norm->forward(h));
}

Wav2Vec2EncoderImpl::Wav2Vec2EncoderImpl(const Wav2Vec2Config& config) {
    pos_conv_embed = register_module("pos_conv_embed", Wav2Vec2PositionalConvEmbedding(config));
    layer_norm = register_module(
        "layer_norm",
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size}).eps(config.layer_norm_eps)));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(Wav2Vec2EncoderLayer(config));
}

std::vector<at::Tensor> Wav2Vec2EncoderImpl::forward(const at::Tensor& x, const at::Tensor& frame_mask) {
    // Wav2Vec2EncoderStableLayerNorm.forward with output_hidden_states: [B, T, C] -> L+1 x [B, T, C].
    // With a mask, padded frames are zeroed before the positional conv (hidden_states[~mask] = 0) and
    // masked as keys in every layer; padded query frames still get outputs, as upstream.
    std::vector<at::Tensor> states;
    states.reserve(layers->size() + 1);
    const at::Tensor in = frame_mask.defined() ? x * frame_mask.unsqueeze(-1).to(x.scalar_type()) : x;
    at::Tensor h = in + pos_conv_embed->forward(in);
    for (const auto& layer : *layers) {
        states.push_back(h);
        h = layer->as<Wav2Vec2EncoderLayerImpl>()->forward(h, frame_mask);
    }
    states.push_back(layer_norm->forward(h));
    return states;
}

Wav2Vec2ModelImpl::Wav2Vec2ModelImpl(const Wav2Vec2Config& config) : config_(config) {
    config_.validate("Wav2Vec2Model");
    feature_extractor = register_module("feature_extractor", Wav2Vec2FeatureEncoder(config_));
    feature_projection = register_module("feature_projection", Wav2Vec2FeatureProjection(config_));
    encoder = register_module("encoder", Wav2Vec2Encoder(config_));
    masked_spec_embed = register_parameter("masked_spec_embed", at::rand({config_.hidden_size}));
}

std::vector<at::Tensor> Wav2Vec2ModelImpl::forward(const at::Tensor& waveform) {
    return run(waveform).hidden_states;
}

Wav2Vec2ModelImpl::Outputs Wav2Vec2ModelImpl::run(const at::Tensor& waveform,
                                                  const at::Tensor& attention_mask) {
    // Wav2Vec2Model.forward (eval): [B, N] -> conv stack [B, C, T] -> [B, T, C] -> projection
    // [B, T, hidden] -> encoder -> num_hidden_layers + 1 states [B, T, hidden].
    TORCH_CHECK(waveform.dim() == 2, "Wav2Vec2Model expects a waveform [B, N], got ", waveform.sizes());
    if (config_.num_frames(waveform.size(1)) < 1)
        fail(kComponent, "forward",
             "waveform of {} samples is shorter than the receptive field of {} samples", waveform.size(1),
             config_.receptive_field());
    const at::Tensor features = feature_extractor->forward(waveform).transpose(1, 2);
    Outputs out;
    if (attention_mask.defined()) {
        // _get_feature_vector_attention_mask: frames t < the conv output length of each clip's samples.
        if (attention_mask.sizes() != waveform.sizes())
            fail(kComponent, "forward", "attention_mask {} must have the shape of the input {}",
                 c10::str(attention_mask.sizes()), c10::str(waveform.sizes()));
        const at::Tensor lengths = attention_mask.to(at::kLong).sum(-1).cpu();
        std::vector<int64_t> frames(static_cast<size_t>(waveform.size(0)));
        for (int64_t b = 0; b < waveform.size(0); ++b)
            frames[static_cast<size_t>(b)] = config_.num_frames(lengths[b].item<int64_t>());
        const auto opts = at::TensorOptions().dtype(at::kLong).device(features.device());
        out.frame_mask =
            at::arange(features.size(1), opts).unsqueeze(0).lt(at::tensor(frames, opts).unsqueeze(1));
    }
    auto [normed, projected] = feature_projection->forward_with_features(features);
    out.extract_features = std::move(normed);
    out.hidden_states = encoder->forward(projected, out.frame_mask);
    return out;
}

// --- audio pipeline -----------------------------------------------------------------------------

at::Tensor normalize_waveform(const at::Tensor& x) {
    // feature_extraction_wav2vec2.py zero_mean_unit_var_norm: (x - x.mean()) / sqrt(x.var() + 1e-7),
    // numpy var = population variance (ddof 0).
    TORCH_CHECK(x.dim() == 1 || x.dim() == 2, "normalize_waveform expects [N] or [B, N], got ", x.sizes());
    if (x.size(-1) == 0) fail(kComponent, "normalize", "empty waveform");
    const at::Tensor d = x.to(at::kDouble);
    const at::Tensor mean = d.mean(-1, /*keepdim=*/true);
    const at::Tensor var = (d - mean).pow(2).mean(-1, /*keepdim=*/true);
    return ((d - mean) / (var + kWav2Vec2NormEps).sqrt()).to(x.scalar_type());
}

int64_t video_rate_length(int64_t frames_50hz) {
    // linear_interpolation: output_len = int(seq_len * output_fps), seq_len = T / float(input_fps).
    // The same double operations in the same order, so the truncation agrees bit for bit.
    return static_cast<int64_t>(static_cast<double>(frames_50hz) / kWav2Vec2FeatureRate * kS2VAudioVideoRate);
}

std::vector<int64_t> video_frame_indices(int64_t length_30hz, double fps, int64_t frames) {
    // get_audio_embed_bucket_fps(m=0) -> get_sample_indices(original_fps=30, target_fps=fps,
    // num_sample=n, fixed_start=0): time_points = np.linspace(0, n/fps, n, endpoint=False), i.e.
    // i*(n/fps/n); index = np.round(t*30) (round half to EVEN), clipped to the padded length; an index
    // >= the real 30 Hz length gives a zero feature. The exact value i*30/fps is used here: for an
    // integer fps the index is computed in integers with ties to even (identical to upstream for the
    // pipeline's 16 fps, and for every fps without exact .5 ties such as 25 or 30); otherwise
    // nearbyint(i/fps*30) in double. Upstream's float step can move an exact tie (e.g. 24 fps,
    // i = 2 -> 2.5) by an ulp to either side depending on n; we take the tie rule.
    std::vector<int64_t> out(static_cast<size_t>(frames));
    const bool integral = fps == std::floor(fps) && fps <= 1e6;
    const auto ifps = static_cast<int64_t>(fps);
    for (int64_t i = 0; i < frames; ++i) {
        int64_t index;
        if (integral) {
            const int64_t num = i * static_cast<int64_t>(kS2VAudioVideoRate);
            int64_t q = num / ifps;
            const int64_t r2 = 2 * (num % ifps);
            if (r2 > ifps || (r2 == ifps && (q % 2 == 1))) ++q;
            index = q;
        } else {
            index = static_cast<int64_t>(std::nearbyint(static_cast<double>(i) / fps * kS2VAudioVideoRate));
        }
        out[static_cast<size_t>(i)] = index < length_30hz ? index : -1;
    }
    return out;
}

at::Tensor features_at_video_rate(const std::vector<at::Tensor>& hidden_states, double fps, int64_t frames,
                                  int64_t out_frames) {
    // L x [T50, C] (or [1, T50, C]) -> [L, T50, C] -> interpolate to 30 Hz [L, T30, C] -> pick one
    // 30 Hz row per video frame -> [L, C, out_frames]
    if (hidden_states.empty()) fail(kComponent, "align", "no hidden states given");
    if (!(fps > 0.0) || !std::isfinite(fps)) fail(kComponent, "align", "fps must be positive, got {}", fps);
    if (frames < 1) fail(kComponent, "align", "frames must be >= 1, got {}", frames);
    if (out_frames < frames)
        fail(kComponent, "align", "out_frames ({}) must be >= frames ({})", out_frames, frames);
    std::vector<at::Tensor> rows;
    rows.reserve(hidden_states.size());
    for (size_t l = 0; l < hidden_states.size(); ++l) {
        at::Tensor s = hidden_states[l];
        if (s.dim() == 3) {
            if (s.size(0) != 1)
                fail(kComponent, "align", "hidden state {} has batch size {}; align one utterance at a time",
                     l, s.size(0));
            s = s.squeeze(0);
        }
        if (s.dim() != 2 || (!rows.empty() && s.sizes() != rows[0].sizes()))
            fail(kComponent, "align", "hidden state {} has shape {}, expected [T, C] like state 0", l,
                 shape_str(hidden_states[l].sizes()));
        rows.push_back(s);
    }
    const at::Tensor stacked = at::stack(rows);  // [L, T50, C]
    const int64_t t50 = stacked.size(1);
    const int64_t t30 = video_rate_length(t50);
    if (t30 < 1)
        fail(kComponent, "align",
             "{} wav2vec2 frames ({:.3f} s) give no 30 Hz frame; the audio must last at least 1/30 s", t50,
             static_cast<double>(t50) / kWav2Vec2FeatureRate);
    // linear_interpolation: F.interpolate(features [1, C, T], size=T30, mode='linear', align_corners=True)
    // on the channels-first layout; here the L states are the batch.
    const at::Tensor at30 =
        at::upsample_linear1d(stacked.transpose(1, 2), at::IntArrayRef{t30}, /*align_corners=*/true,
                              c10::optional<double>());  // [L, C, T30]
    const std::vector<int64_t> idx = video_frame_indices(t30, fps, frames);
    std::vector<int64_t> gather(static_cast<size_t>(out_frames));
    int64_t beyond = 0;
    for (int64_t i = 0; i < out_frames; ++i) {
        const int64_t j = idx[static_cast<size_t>(std::min(i, frames - 1))];
        gather[static_cast<size_t>(i)] = j < 0 ? t30 : j;  // row t30 = the appended zero row
        if (i < frames && j < 0) ++beyond;
    }
    if (beyond > 0)
        st::log::debug(kComponent,
                       "{} of {} video frames at {} fps lie beyond the audio ({} frames at 30 Hz): zeros",
                       beyond, frames, fps, t30);
    const at::Tensor padded = at::cat({at30, at::zeros({at30.size(0), at30.size(1), 1}, at30.options())}, 2);
    const at::Tensor index = at::tensor(gather, at::TensorOptions().dtype(at::kLong)).to(padded.device());
    return padded.index_select(2, index);
}

// --- encoder ------------------------------------------------------------------------------------

Wav2Vec2AudioEncoder::Wav2Vec2AudioEncoder(Wav2Vec2Model model) : model_(std::move(model)) {
    if (!model_) fail(kComponent, "init", "Wav2Vec2AudioEncoder needs a model");
    model_->to(at::kFloat);
    model_->eval();
    for (auto& p : model_->parameters()) p.set_requires_grad(false);
}

Wav2Vec2AudioEncoder Wav2Vec2AudioEncoder::load(const std::filesystem::path& path) {
    return Wav2Vec2AudioEncoder(load_wav2vec2(path));
}

std::vector<at::Tensor> Wav2Vec2AudioEncoder::hidden_states(const at::Tensor& waveform) {
    // [N] raw 16 kHz -> normalised [1, N] fp32 -> num_hidden_states x [1, T, hidden]
    if (waveform.dim() != 1)
        fail(kComponent, "encode", "expected a mono waveform [N], got shape {}", shape_str(waveform.sizes()));
    const int64_t field = config().receptive_field();
    if (waveform.size(0) < field)
        fail(kComponent, "encode",
             "waveform of {} samples ({:.4f} s) is shorter than the receptive field of {} "
             "samples",
             waveform.size(0), static_cast<double>(waveform.size(0)) / kWav2Vec2SampleRate, field);
    at::NoGradGuard guard;  // not InferenceMode: the S2V transformer saves audio_embeds for backward
    const at::Device device = model_->masked_spec_embed.device();
    const at::Tensor x = normalize_waveform(waveform.to(at::kFloat)).to(device).unsqueeze(0);
    return model_->forward(x);
}

at::Tensor Wav2Vec2AudioEncoder::encode(const at::Tensor& waveform, double fps, int64_t frames,
                                        int64_t out_frames) {
    const std::vector<at::Tensor> states = hidden_states(waveform);
    at::NoGradGuard guard;  // not InferenceMode: the S2V transformer saves audio_embeds for backward
    return features_at_video_rate(states, fps, frames, out_frames);
}

}  // namespace st::plugins::wan_s2v
