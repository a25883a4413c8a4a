// Model family components (`model.<family>@N`, e.g. model.wan@1): everything st needs to know
// about one family of networks. The host never names a family: it only talks to these interfaces.
//
// The contract is a small core every family implements (ModelFamily: load, the trainable network,
// predict, the text/video encoders, latent geometry) plus optional capabilities, each its own small
// interface with a stable id, that the host asks for by id (Encoders::capability):
//
//   capability            id                     what it adds
//   ModelTools            "tools@1"              st-host probe / make-model / forward
//   ImageConditioning     "image_conditioning@1" an image encoded into predict() conditioning
//   AudioConditioning     "audio_conditioning@1" driving audio encoded into predict() conditioning
//   ExpertSchedule        "experts@1"            networks that hand over at a timestep (Wan 2.2 A14B)
//   TapProvider           "taps@1"               intermediate activations and their token geometry
//   GuidancePolicy        "guidance@1"           how the unconditional CFG branch is built
//   TokenRouting          "token_routing@1"      TREAD routes over its blocks (st/routing.h)
//   NoiseSchedule         "noise_schedule@1"     its own training sigmas and shipped sampler (Sana Video)
//   NegativePromptEncoding "negative_prompt@1"   negative prompts encoded unlike prompts (Sana Video)
//   BaseWeights           "base_weights@1"       stored (int8 / file dtype) frozen weights, disk offload
//
// A capability never changes once released: a new behaviour is a new interface with the next id
// ("taps@2"), which a family may offer next to the old one. The host's adapter
// (host/src/plugins/model_handle.h) is the only place that asks for capabilities and checks
// versions. Rules for the structs of this header: docs/plugins.md "ABI rules".
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "st/base_weights.h"

#include "st/options.h"
#include "st/routing.h"
#include "st/samplers.h"
#include "st/tensors.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {

/// Media a model consumes besides its captions. Datasets and sampling inputs are organised by kind,
/// never by family: the host feeds an `image` input from validation_image / a training video's first
/// frame, an `audio` input from validation_audio / a training clip's audio.
enum class MediaKind { video, image, audio };
/// "video", "image", "audio".
const char* media_kind_name(MediaKind kind);

/// The name of the encode_video() output that SimpleTuner's `conditioning_image_embeds` datasets keep
/// in their own folder (an image encoder's embedding of a clip's conditioning frame, e.g. Wan 2.1
/// I2V's CLIP tokens). Any family may produce it; data backends store it where the dataset says.
inline constexpr const char* kConditioningImageEmbeds = "image_embeds";

/// Base of every optional capability interface (see the table above).
class Capability {
  public:
    virtual ~Capability();
};

/// What a model family offers a data backend for caching, and the root of capability lookup.
/// Implemented by model plugins; called by the host and by data backends during prepare() on the
/// caller's thread (never concurrently). May throw st::Error.
class Encoders {
  public:
    virtual ~Encoders();
    /// Identifies everything that changes the encoded values (family, variant, VAE weights hash,
    /// text encoder hash, dtype). Part of every cache key: a new value invalidates old caches.
    virtual std::string cache_identity() const = 0;
    /// Pixel sizes must be multiples of this (VAE stride x patch size, e.g. 16 for Wan).
    virtual int spatial_multiple() const = 0;
    /// Frame counts must satisfy count % temporal_multiple == 1 (4 for Wan: 4k+1). 1 = any.
    virtual int temporal_multiple() const = 0;
    /// pixels [B,3,F,H,W] float in [-1,1] -> named latents (at least "latents" [B,C,F',H',W'],
    /// normalized as the model trains on them; conditioning the family derives from the clip, e.g.
    /// "conditioning_latents" or kConditioningImageEmbeds, may come with them).
    virtual TensorMap encode_video(const at::Tensor& pixels) = 0;
    /// captions -> named embeddings with a leading batch dim ("prompt_embeds" [B,L,D], ...).
    virtual TensorMap encode_text(const std::vector<std::string>& captions) = 0;
    /// Media each training sample must carry besides its video and caption, e.g. {audio} for
    /// speech-to-video: data backends pair that media with every clip and cache it through the
    /// matching capability (AudioConditioning::encode_audio). Callable before load(). Default: none.
    virtual std::vector<MediaKind> sample_media() const;
    /// The capability whose id is `id` ("tools@1", ...), or nullptr when this family (or the
    /// variant it loaded) lacks it. The returned object lives as long as this one. Default: none.
    /// Use find_capability<T>() rather than calling this directly.
    virtual Capability* capability(std::string_view id);
};

/// The capability T (one of the interfaces below) of `e`, or nullptr.
template <typename T>
T* find_capability(Encoders& e) {
    return dynamic_cast<T*>(e.capability(T::kId));
}

/// Answer of ModelTools::probe(): can this family load the path, and which variant is it.
struct ProbeResult {
    bool loadable = false;
    std::string variant;  ///< e.g. "t2v-1.3b-2.1 (diffusers layout, bf16)"
    std::string reason;   ///< why not, when !loadable
};

/// Host -> plugin (may gain fields at the end in a minor version; see docs/plugins.md).
struct ModelLoadRequest {
    std::filesystem::path path;         ///< pretrained_model_name_or_path (resolved local path)
    ConfigView config;                  ///< resolved configuration (flavour, subfolders, dtype keys, ...)
    at::ScalarType dtype = at::kFloat;  ///< compute / weight dtype (mixed_precision)
    at::Device device = at::kCPU;
    bool training = true;  ///< false: inference only (no grads needed)
    /// gradient_checkpointing / gradient_checkpointing_interval (declared by the host once for every
    /// family): recompute every k-th block in backward instead of keeping its activations (k = 1: all).
    bool gradient_checkpointing = true;
    int64_t gradient_checkpointing_interval = 1;
};

/// Inputs of one velocity prediction (host -> plugin; may gain fields at the end in a minor
/// version). Shapes: noisy [B,C,F,H,W], timesteps [B] (sigma*1000) or per token [B,L];
/// `conditioning` carries the batch tensors (prompt_embeds, image/audio conditioning).
struct PredictInputs {
    at::Tensor noisy;
    at::Tensor timesteps;
    TensorMap conditioning;
    /// Activations to return (TapProvider::taps names). A family without taps@1 gets none.
    std::vector<std::string> taps;
    /// Transformer block indices to skip in this pass (skip-layer guidance on the unconditional
    /// branch). Empty: every block runs. A family that cannot skip blocks throws st::Error.
    std::vector<int64_t> skip_layers;
    /// TREAD routes for this pass (training steps only; the host never passes them to validation,
    /// evaluation or generation). Only for families with token_routing@1.
    std::vector<TokenRoute> routes;
    /// The run's generator (saved with checkpoints), set in training passes: every random draw of the
    /// pass (token selection; LoRA dropout draws from it too) comes from it, so resume stays exact. A
    /// family that checkpoints blocks re-runs them with its forward state (the kit's block runner does).
    std::optional<at::Generator> generator;
};

/// Result of one prediction (plugin -> host). It grows through its maps, never by new fields
/// before a major version: `taps` holds the requested activations, `extra` any further named output
/// a documented capability defines.
struct PredictOutput {
    at::Tensor velocity;  ///< [B,C_out,F,H,W], same layout as noisy
    TensorMap taps;       ///< requested activations by name
    TensorMap extra;
};

/// One input sampling must supply besides the prompt: a `name` for messages ("reference image",
/// "driving audio") and the kind of media it is fed from. An image is encoded through
/// ImageConditioning, audio through AudioConditioning.
struct SamplingInput {
    std::string name;
    MediaKind kind = MediaKind::image;
};

/// Our module path -> the family's native module path (same type as st/lora.h's LoraNameMap).
using LoraNameMap = std::function<std::string(const std::string&)>;

/// The core of a model family. All calls come from the host's trainer/validation thread. Methods
/// may throw st::Error.
class ModelFamily : public Encoders {
  public:
    ~ModelFamily() override;

    /// Loads all networks needed for training/inference. Strict: a missing, unexpected or
    /// wrongly shaped tensor is an error naming it. Logs the detected variant in one line.
    virtual void load(const ModelLoadRequest& request) = 0;
    /// The network being trained (after load()). Parameter names are the checkpoint's names.
    virtual torch::nn::Module& trainable() = 0;
    /// Folder name of the trained network in a release layout ("transformer" for diffusers
    /// pipelines): full fine-tunes are saved as `<output>/<folder>/`. Default "transformer".
    virtual std::string trainable_folder() const;
    /// Module-name suffixes LoRA targets by default (SimpleTuner's defaults for the family).
    virtual std::vector<std::string> default_lora_targets() const = 0;
    /// LoRA module names in the family's native layout (what ComfyUI and the original checkpoints
    /// use, e.g. Wan "blocks.0.self_attn.q" for our "blocks.0.attn1.to_q"). Default: empty function
    /// (no native names; LoRAs are then saved with our names only).
    virtual LoraNameMap lora_name_map() const;
    /// Writes the trained network after a full fine-tune in the family's release layout under `dir`
    /// (created; e.g. a diffusers `transformer/` folder: config.json + safetensors). Default: every
    /// parameter and buffer of trainable() by name in `dir/diffusion_pytorch_model.safetensors`.
    virtual void save_trainable(const std::filesystem::path& dir);
    /// Velocity prediction for a noisy batch.
    virtual PredictOutput predict(const PredictInputs& inputs) = 0;

    /// Shape of the latents predict() works on for a video of `frames` x `height` x `width` pixels
    /// ([C, F', H', W'], no batch dim).
    virtual std::vector<int64_t> latent_shape(int64_t frames, int64_t height, int64_t width) const = 0;
    /// latents [B, C, F', H', W'] (normalised like the training latents) -> pixels [B, 3, F, H, W] in
    /// [-1, 1], float32 on the CPU.
    virtual at::Tensor decode_latents(const at::Tensor& latents) = 0;
    /// What sampling (validation, `st-host generate`) must supply besides the prompt, for the loaded
    /// variant (after load()). A render lacking a required input is refused with a message naming it.
    /// Default: none (text only).
    virtual std::vector<SamplingInput> sampling_inputs() const;
    /// Frees networks only needed for caching (text encoder, VAE encoder, audio encoder) once the
    /// caches are complete; they are loaded again on demand. Default: nothing.
    virtual void release_encoders();
};

// ---- capabilities ----------------------------------------------------------------------------------

/// Tools that need no load(): `st-host probe | make-model | forward`.
class ModelTools : public Capability {
  public:
    static constexpr const char* kId = "tools@1";
    ~ModelTools() override;
    /// Whether `path` (a diffusers folder, a single file, ...) is a checkpoint of this family.
    /// Must not throw for foreign paths: return loadable=false with a reason.
    virtual ProbeResult probe(const std::filesystem::path& path) const = 0;
    /// Presets for `st-host make-model` ("tiny", "small", ...).
    virtual std::vector<std::string> presets() const = 0;
    /// Writes a randomly initialised model in the family's real on-disk layout.
    virtual void make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) = 0;
    /// Component names for `st-host forward` ("transformer", "vae_encode", ...): every network the
    /// family loads should be one, so each is checkable against its upstream goldens.
    virtual std::vector<std::string> forward_components() const = 0;
    /// Runs one component of the model at `model` on named inputs; returns named outputs.
    virtual TensorMap forward_component(const std::filesystem::path& model, const std::string& component,
                                        const TensorMap& inputs, const ConfigView& config) = 0;
};

/// Image conditioning (image-to-video, reference images): feeds sampling inputs of kind image.
class ImageConditioning : public Capability {
  public:
    static constexpr const char* kId = "image_conditioning@1";
    ~ImageConditioning() override;
    /// image [B, 3, H, W] in [-1, 1] that starts (or anchors) a video of `frames` pixel frames ->
    /// named tensors predict() takes (e.g. "conditioning_latents"). After load().
    virtual TensorMap encode_conditioning_image(const at::Tensor& image, int64_t frames) = 0;
};

/// Audio conditioning (speech-to-video): feeds sampling inputs of kind audio and caches the audio
/// of training samples (Encoders::sample_media).
class AudioConditioning : public Capability {
  public:
    static constexpr const char* kId = "audio_conditioning@1";
    ~AudioConditioning() override;
    /// Sample rate encode_audio() takes (mono).
    virtual int audio_sample_rate() const = 0;
    /// waveform [B, samples] mono at audio_sample_rate(), fps of the video it belongs to, number of
    /// video frames -> named audio features with a leading batch dim.
    virtual TensorMap encode_audio(const at::Tensor& waveform, double fps, int64_t frames) = 0;
};

/// Several networks that denoise different timestep ranges (Wan 2.2 A14B high/low-noise experts).
class ExpertSchedule : public Capability {
  public:
    static constexpr const char* kId = "experts@1";
    ~ExpertSchedule() override;
    /// Model-input timestep (sigma x 1000) at which sampling hands over from the first network to
    /// the second (diffusers `boundary_ratio x num_train_timesteps`): the first denoises t >=
    /// boundary, the second t < boundary. Samplers apply `validation_guidance_2` (diffusers
    /// `guidance_scale_2`) to the second's steps. nullopt: one network is loaded, so one guidance
    /// scale applies. After load().
    virtual std::optional<double> expert_boundary() const = 0;
};

/// Where a tap's tokens sit: activations [B, L, hidden_size] whose tokens
/// [video_offset, video_offset + F'*H'*W') are the video grid in (frame, row, column) order.
struct TapGeometry {
    int64_t hidden_size = 0;
    std::array<int64_t, 3> grid{0, 0, 0};  ///< [F', H', W'] tokens
    int64_t video_offset = 0;
};

/// Intermediate activations predict() can return (regularizers such as CREPA align them).
class TapProvider : public Capability {
  public:
    static constexpr const char* kId = "taps@1";
    ~TapProvider() override;
    /// Tap names ("blocks.8.out", ...); "blocks.N.out" is the hidden state after block N has done
    /// everything it does.
    virtual std::vector<std::string> taps() const = 0;
    /// Geometry of `tap` for latents of `latent_shape` ([C, F', H', W']). After load().
    virtual TapGeometry tap_geometry(const std::string& tap,
                                     const std::vector<int64_t>& latent_shape) const = 0;
};

/// The rule without a GuidancePolicy: the conditional tensors with every tensor the negative
/// prompt's encode_text() produced put in place of the prompt's (image conditioning is kept on
/// both branches, as diffusers' image-to-video pipelines do).
TensorMap default_unconditional(const TensorMap& conditional, const TensorMap& negative_text);

/// How the unconditional branch of classifier-free guidance is built, for families whose rule
/// differs from default_unconditional (Wan S2V: the driving audio features times 0).
class GuidancePolicy : public Capability {
  public:
    static constexpr const char* kId = "guidance@1";
    ~GuidancePolicy() override;
    /// `conditional`: the prompt's embeddings merged with every sampling input's encoding;
    /// `negative_text`: encode_text() of the negative prompt -> the unconditional branch's
    /// conditioning.
    virtual TensorMap unconditional(const TensorMap& conditional, const TensorMap& negative_text) const = 0;
};

/// TREAD token routing over the family's transformer blocks: predict() honours PredictInputs::routes.
class TokenRouting : public Capability {
  public:
    static constexpr const char* kId = "token_routing@1";
    ~TokenRouting() override;
    /// Number of transformer blocks the routes index (after load()).
    virtual int64_t routable_blocks() const = 0;
};

/// The sampler a model ships (its scheduler/scheduler_config.json) and its reference pipeline's call
/// defaults, which `st-host generate` uses when neither a flag nor the config file sets them
/// (validation keeps SimpleTuner's validation_* defaults, as SimpleTuner does).
struct SamplingDefaults {
    std::string scheduler;  ///< a make_sampler() name ("dpmsolver++", "unipc", "euler")
    SamplerConfig sampler;  ///< including its flow shift
    std::optional<double> guidance;
    std::optional<int64_t> steps;
    std::optional<int64_t> frames;
};

/// A family whose training noise schedule and sampler are fixed by its release rather than by
/// SimpleTuner's flow_schedule_* keys (Sana Video: SimpleTuner forces flow_schedule_shift off and
/// draws from the scheduler's own sigma table). The host then ignores flow_schedule_shift,
/// flow_schedule_auto_shift and flow_use_uniform_schedule for training and logs why, and validation /
/// `st-host generate` sample with sampling_defaults() (its shift included) unless
/// validation_noise_scheduler is set.
class NoiseSchedule : public Capability {
  public:
    static constexpr const char* kId = "noise_schedule@1";
    ~NoiseSchedule() override;
    /// `batch` training sigmas in (0, 1] ([batch] float32, CPU), drawn only from `generator`.
    virtual at::Tensor sample_training_sigmas(int64_t batch, at::Generator generator) const = 0;
    /// One line for the log: how sigmas are drawn.
    virtual std::string training_schedule_summary() const = 0;
    /// After load().
    virtual SamplingDefaults sampling_defaults() const = 0;
};

/// A family whose pipeline encodes the negative prompt of classifier-free guidance differently from
/// prompts (Sana Video: without the complex human instruction and the motion score). Validation and
/// `st-host generate` then encode negative prompts through it; without it, through encode_text().
class NegativePromptEncoding : public Capability {
  public:
    static constexpr const char* kId = "negative_prompt@1";
    ~NegativePromptEncoding() override;
    /// negative prompts -> the same tensors encode_text() returns. After load().
    virtual TensorMap encode_negative_text(const std::vector<std::string>& negatives) = 0;
};

/// Frozen base weights in a stored form and block offload to disk (SimpleTuner's base_model_precision
/// and group_offload_*; st/base_weights.h). The host calls set_base_weights() before load() in LoRA
/// runs; the family stores its transformer's Linear weights as planned (filling plan.int8_exclude with
/// its own list for int8-quanto, plan.int8_multiple for int8-torchao) and offloads block groups when
/// plan.offload_dir is set. Without this capability only the default plan is accepted.
class BaseWeights : public Capability {
  public:
    static constexpr const char* kId = "base_weights@1";
    ~BaseWeights() override;
    virtual void set_base_weights(const BaseWeightPlan& plan) = 0;
};

using ModelFactory = std::function<std::unique_ptr<ModelFamily>()>;

}  // namespace st::sdk
