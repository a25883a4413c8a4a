// Wav2Vec2 audio encoder of Wan 2.2 S2V (reference/models.md §9): the HF transformers
// `Wav2Vec2Model` with `feat_extract_norm="layer"` and `do_stable_layer_norm=True` (the
// wav2vec2-large-xlsr-53 family; S2V ships the English CTC fine-tune), registered under the HF
// names so that named_parameters() equals the bare-model checkpoint keys:
//   feature_extractor.conv_layers.{i}.conv.{weight,bias}, .layer_norm.{weight,bias}
//   feature_projection.layer_norm.{weight,bias}, feature_projection.projection.{weight,bias}
//   encoder.pos_conv_embed.conv.{weight_g,weight_v,bias}
//   encoder.layer_norm.{weight,bias}
//   encoder.layers.{i}.attention.{q_proj,k_proj,v_proj,out_proj}.{weight,bias}
//   encoder.layers.{i}.layer_norm.*, .feed_forward.{intermediate_dense,output_dense}.*,
//   encoder.layers.{i}.final_layer_norm.*
//   masked_spec_embed   (SpecAugment only; unused in eval, optional when loading)
// The ForCTC layout (`wav2vec2.` prefix, `lm_head.*` ignored) and the newer weight-norm names
// (`...conv.parametrizations.weight.original0/original1` = weight_g/weight_v) load too.
//
// Ports: transformers models/wav2vec2/modeling_wav2vec2.py (Wav2Vec2LayerNormConvLayer,
// Wav2Vec2FeatureEncoder, Wav2Vec2FeatureProjection, Wav2Vec2PositionalConvEmbedding,
// Wav2Vec2SamePadLayer, Wav2Vec2Attention, Wav2Vec2FeedForward,
// Wav2Vec2EncoderLayerStableLayerNorm, Wav2Vec2EncoderStableLayerNorm, Wav2Vec2Model),
// feature_extraction_wav2vec2.py (zero_mean_unit_var_norm), and Wan2.2 wan/modules/s2v/
// audio_encoder.py (linear_interpolation, get_sample_indices, AudioEncoder.get_audio_embed_bucket_fps)
// for the video-rate alignment.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/kit_names.h"
#include "st/kit/hf_attention.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan_s2v {

/// Sample rate every Wav2Vec2 checkpoint here expects (Wav2Vec2FeatureExtractor sampling_rate).
constexpr int64_t kWav2Vec2SampleRate = 16000;
/// Rate of the wav2vec2 hidden states as upstream treats them (hop 320 at 16 kHz).
constexpr double kWav2Vec2FeatureRate = 50.0;
/// Intermediate rate the upstream S2V code interpolates to before sampling video frames.
constexpr double kS2VAudioVideoRate = 30.0;
/// Variance floor of Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm.
constexpr double kWav2Vec2NormEps = 1e-7;

struct Wav2Vec2Config {
    int64_t hidden_size = 1024;
    int64_t num_hidden_layers = 24;
    int64_t num_attention_heads = 16;
    int64_t intermediate_size = 4096;
    std::string hidden_act = "gelu";          ///< only "gelu" (exact erf GELU)
    double layer_norm_eps = 1e-5;             ///< feature projection + encoder norms (conv norms use 1e-5)
    std::string feat_extract_norm = "layer";  ///< only "layer"
    bool do_stable_layer_norm = true;         ///< only true (pre-LN encoder)
    std::vector<int64_t> conv_dim{512, 512, 512, 512, 512, 512, 512};
    std::vector<int64_t> conv_kernel{10, 3, 3, 3, 3, 2, 2};
    std::vector<int64_t> conv_stride{5, 2, 2, 2, 2, 2, 2};
    bool conv_bias = true;
    std::string feat_extract_activation = "gelu";  ///< only "gelu"
    int64_t num_conv_pos_embeddings = 128;
    int64_t num_conv_pos_embedding_groups = 16;
    /// CTC vocabulary; only used by write_wav2vec2 for the (ignored) lm_head.
    int64_t vocab_size = 33;

    /// wav2vec2-large-xlsr-53(-english), the S2V audio encoder (models.md §9).
    static Wav2Vec2Config large_xlsr();
    /// Test size: hidden 32, 2 layers, 4 heads, intermediate 64, conv_dim [16]x4 with kernels
    /// [10,4,4,4] / strides [5,4,4,4] (hop 320 = 50 Hz like the real model, receptive field 325),
    /// positional conv k 8 (even: exercises the same-pad trim), groups 4, vocab 12.
    static Wav2Vec2Config tiny();

    /// Parses an HF Wav2Vec2Config JSON. Read keys: those of the fields above (+
    /// num_feat_extract_layers, checked against conv_dim). Rejected with an st::Error naming the
    /// key: feat_extract_norm != "layer", do_stable_layer_norm false, activations other than
    /// "gelu", model_type other than "wav2vec2", add_adapter true, adapter_attn_dim set. Other
    /// keys (dropouts, SpecAugment, CTC settings...) do not change the eval forward and are ignored.
    static Wav2Vec2Config from_json(const nlohmann::json& j, const std::string& origin = "config.json");
    static Wav2Vec2Config from_file(const std::filesystem::path& config_json);
    /// HF config.json in the field layout of the real checkpoint (loads with transformers).
    nlohmann::json to_json() const;
    /// Throws st::Error naming the first inconsistent field.
    void validate(const std::string& origin) const;

    int64_t num_hidden_states() const { return num_hidden_layers + 1; }
    /// Product of the conv strides (320 for the real model).
    int64_t hop_length() const;
    /// Samples seen by one output frame (400 for the real model).
    int64_t receptive_field() const;
    /// Frames the conv stack yields for `num_samples` samples (0 when too short).
    int64_t num_frames(int64_t num_samples) const;

    bool operator==(const Wav2Vec2Config&) const = default;
};

/// Conv1d -> LayerNorm over channels (eps 1e-5, nn.LayerNorm default) -> GELU.
class Wav2Vec2ConvLayerImpl : public torch::nn::Module {
  public:
    Wav2Vec2ConvLayerImpl(const Wav2Vec2Config& config, int64_t layer_id);
    at::Tensor forward(const at::Tensor& x);  ///< [B, C_in, T_in] -> [B, C_out, T_out]
    torch::nn::Conv1d conv{nullptr};
    torch::nn::LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(Wav2Vec2ConvLayer);

class Wav2Vec2FeatureEncoderImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeatureEncoderImpl(const Wav2Vec2Config& config);
    at::Tensor forward(const at::Tensor& waveform);  ///< [B, N] -> [B, conv_dim[-1], T]
    torch::nn::ModuleList conv_layers{nullptr};
};
TORCH_MODULE(Wav2Vec2FeatureEncoder);

class Wav2Vec2FeatureProjectionImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeatureProjectionImpl(const Wav2Vec2Config& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, T, conv_dim[-1]] -> [B, T, hidden]
    /// Also the LayerNorm output (HF's `extract_features`): {normed [B, T, C_conv], projected}.
    std::pair<at::Tensor, at::Tensor> forward_with_features(const at::Tensor& x);
    torch::nn::LayerNorm layer_norm{nullptr};
    torch::nn::Linear projection{nullptr};
};
TORCH_MODULE(Wav2Vec2FeatureProjection);

/// The grouped Conv1d of the positional embedding with torch weight_norm(dim=2) parameters:
/// weight = weight_g * weight_v / ||weight_v||, the norm taken over dims 0 and 1 for each kernel tap.
class Wav2Vec2WeightNormConv1dImpl : public torch::nn::Module {
  public:
    Wav2Vec2WeightNormConv1dImpl(int64_t channels, int64_t kernel, int64_t groups);
    at::Tensor weight() const;                ///< [C, C/groups, K]
    at::Tensor forward(const at::Tensor& x);  ///< [B, C, T] -> [B, C, T + 1 - K%2] (padding K/2)
    at::Tensor weight_g;                      ///< [1, 1, K]
    at::Tensor weight_v;                      ///< [C, C/groups, K]
    at::Tensor bias;                          ///< [C]

  private:
    int64_t kernel_;
    int64_t groups_;
};
TORCH_MODULE(Wav2Vec2WeightNormConv1d);

class Wav2Vec2PositionalConvEmbeddingImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2PositionalConvEmbeddingImpl(const Wav2Vec2Config& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, T, C] -> [B, T, C]
    Wav2Vec2WeightNormConv1d conv{nullptr};

  private:
    int64_t num_pad_remove_;  ///< Wav2Vec2SamePadLayer: 1 for an even kernel
};
TORCH_MODULE(Wav2Vec2PositionalConvEmbedding);

class Wav2Vec2FeedForwardImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeedForwardImpl(const Wav2Vec2Config& config);
    at::Tensor forward(const at::Tensor& x);  ///< [B, T, C] -> [B, T, C]
    torch::nn::Linear intermediate_dense{nullptr}, output_dense{nullptr};
};
TORCH_MODULE(Wav2Vec2FeedForward);

/// Pre-LN layer: h += attn(LN(h)); h += FFN(final_LN(h)).
class Wav2Vec2EncoderLayerImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2EncoderLayerImpl(const Wav2Vec2Config& config);
    /// [B, T, C] -> [B, T, C]; key_mask [B, T] bool (padded frames false) or undefined.
    at::Tensor forward(const at::Tensor& x, const at::Tensor& key_mask = {});
    st::plugins::wan::HfSelfAttention attention{nullptr};
    torch::nn::LayerNorm layer_norm{nullptr};
    Wav2Vec2FeedForward feed_forward{nullptr};
    torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(Wav2Vec2EncoderLayer);

class Wav2Vec2EncoderImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2EncoderImpl(const Wav2Vec2Config& config);
    /// [B, T, C] projected features -> num_hidden_layers + 1 states [B, T, C] (see Wav2Vec2Model).
    /// frame_mask [B, T] bool: padded frames are zeroed before the positional conv and are no keys.
    std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& frame_mask = {});
    Wav2Vec2PositionalConvEmbedding pos_conv_embed{nullptr};
    torch::nn::LayerNorm layer_norm{nullptr};
    torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(Wav2Vec2Encoder);

class Wav2Vec2ModelImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2ModelImpl(const Wav2Vec2Config& config);

    /// waveform [B, N] (16 kHz, already normalised, see normalize_waveform) -> the
    /// num_hidden_layers + 1 hidden states [B, T, hidden] of HF `output_hidden_states=True`:
    /// [0] = projection + positional conv (no LN), [i] = input of layer i+1, [last] = the final
    /// encoder LayerNorm of the last layer's output (= last_hidden_state). T = num_frames(N).
    /// Eval semantics (no SpecAugment, no dropout, no LayerDrop) whatever the training flag.
    std::vector<at::Tensor> forward(const at::Tensor& waveform);

    /// Everything HF Wav2Vec2Model.forward(input_values, attention_mask, output_hidden_states=True)
    /// returns: `attention_mask` [B, N] (1 = sample, 0 = right padding) or undefined.
    struct Outputs {
        std::vector<at::Tensor> hidden_states;  ///< as forward()
        at::Tensor extract_features;  ///< [B, T, conv_dim[-1]]: feature_projection's LayerNorm output
        at::Tensor frame_mask;        ///< [B, T] bool (conv output lengths); undefined without a mask
    };
    Outputs run(const at::Tensor& input_values, const at::Tensor& attention_mask = {});

    const Wav2Vec2Config& config() const { return config_; }

    Wav2Vec2FeatureEncoder feature_extractor{nullptr};
    Wav2Vec2FeatureProjection feature_projection{nullptr};
    Wav2Vec2Encoder encoder{nullptr};
    at::Tensor masked_spec_embed;  ///< [hidden]

  private:
    Wav2Vec2Config config_;
};
TORCH_MODULE(Wav2Vec2Model);

// --- weights ------------------------------------------------------------------------------------

/// How a checkpoint names its tensors (detected from the names, never from the file name).
struct Wav2Vec2Layout {
    bool ctc_prefix = false;                ///< `wav2vec2.` prefix (Wav2Vec2ForCTC and friends)
    bool parametrized_weight_norm = false;  ///< `parametrizations.weight.original0/1` names
    int64_t ignored_tensors = 0;            ///< lm_head.* (CTC head) tensors skipped
    std::string describe() const;           ///< "Wav2Vec2ForCTC (prefix 'wav2vec2.', ...)"
};

/// Detects the layout; throws st::Error naming the source when it is no Wav2Vec2 checkpoint.
Wav2Vec2Layout detect_wav2vec2_layout(const st::sdk::TensorSource& source);

/// A file name -> the Wav2Vec2Model parameter name (prefix stripped, parametrization names mapped);
/// nullopt for tensors deliberately ignored (lm_head.*). Other names pass through unchanged.
std::optional<std::string> wav2vec2_canonical_key(const std::string& file_key);

/// Strictly loads any accepted layout into `model` (missing, unexpected or wrongly shaped tensors
/// are one st::Error naming them and the file; masked_spec_embed may be absent). Logs the layout
/// in one line. Returns the detected layout.
Wav2Vec2Layout load_wav2vec2_weights(Wav2Vec2Model& model, const st::sdk::TensorSource& source);

/// Builds and loads a model in fp32, eval mode, from
///  - a folder with config.json and model.safetensors (or a sharded *.safetensors.index.json),
///  - a .safetensors file (or index json) with config.json in the same folder.
/// A folder/file holding only pytorch_model.bin (or any pickle) is an st::Error asking to convert.
Wav2Vec2Model load_wav2vec2(const std::filesystem::path& path);

/// Writes a random model in the HF Wav2Vec2ForCTC layout (the S2V `audio_encoder` /
/// wav2vec2-large-xlsr-53-english files): `dir`/config.json + `dir`/model.safetensors with the
/// `wav2vec2.` prefix, weight_g/weight_v names and an lm_head [vocab_size, hidden] + bias; fp32,
/// deterministic for a seed. Init: convs/linears normal(0, 1/sqrt(fan_in)), norms 1 + 0.1 noise,
/// biases 0.1 noise, weight_g sqrt(hidden/K) (1 + 0.1 noise) so every branch matters.
void write_wav2vec2(const Wav2Vec2Config& config, const std::filesystem::path& dir, uint64_t seed);

// --- audio pipeline -----------------------------------------------------------------------------

/// Wav2Vec2FeatureExtractor(do_normalize=True): (x - mean) / sqrt(var + 1e-7) over the last dim,
/// population variance, computed in float64 and returned in x's dtype. x [N] or [B, N].
at::Tensor normalize_waveform(const at::Tensor& x);

/// Length of the 30 Hz sequence for T 50 Hz frames: int(T / 50 * 30) in double, as upstream.
int64_t video_rate_length(int64_t frames_50hz);

/// For video frames 0..frames-1 at `fps`, the 30 Hz feature index each takes, or -1 when it lies
/// beyond the `length_30hz` available frames (upstream fills those with zeros).
std::vector<int64_t> video_frame_indices(int64_t length_30hz, double fps, int64_t frames);

/// Aligns the wav2vec2 hidden states to the video frame rate the upstream way
/// (Wan2.2 wan/modules/s2v/audio_encoder.py: AudioEncoder.extract_audio_feat ->
/// linear_interpolation, then get_audio_embed_bucket_fps with m=0; see the .cpp for the exact
/// rounding). hidden_states: L tensors [T, C] or [1, T, C] at 50 Hz (normally 25). Returns
/// [L, C, out_frames] (float32 or the states' dtype): frames [0, frames) are the upstream video-rate
/// features (zeros where the video outlasts the audio); frames [frames, out_frames) repeat frame
/// frames-1 — that padding is ours: S2V consumes 4*T_latent audio frames, 3 more than the
/// 4k+1 video frames (models.md §5.5). Throws st::Error when frames < 1, out_frames < frames,
/// fps <= 0, or the audio is shorter than one 30 Hz frame.
at::Tensor features_at_video_rate(const std::vector<at::Tensor>& hidden_states, double fps, int64_t frames,
                                  int64_t out_frames);

/// Waveform -> S2V audio_embeds. Owns an fp32 eval model; calls run under no-grad.
class Wav2Vec2AudioEncoder {
  public:
    explicit Wav2Vec2AudioEncoder(Wav2Vec2Model model);
    /// load_wav2vec2(path) wrapped.
    static Wav2Vec2AudioEncoder load(const std::filesystem::path& path);

    /// waveform [N] mono 16 kHz (raw, any scale) -> normalise -> model -> num_hidden_states
    /// tensors [1, T, hidden] on the model's device. Throws st::Error when N < receptive_field.
    std::vector<at::Tensor> hidden_states(const at::Tensor& waveform);

    /// waveform [N] -> [num_hidden_states, hidden, out_frames] float32 on the model's device:
    /// hidden_states() then features_at_video_rate(states, fps, frames, out_frames).
    at::Tensor encode(const at::Tensor& waveform, double fps, int64_t frames, int64_t out_frames);

    Wav2Vec2Model& model() { return model_; }
    const Wav2Vec2Config& config() const { return model_->config(); }

  private:
    Wav2Vec2Model model_;
};

}  // namespace st::plugins::wan_s2v
