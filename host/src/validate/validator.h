// Validation renders during training (SimpleTuner training/validation.py, inventory §6): every
// validation_step_interval steps each prompt is rendered at each validation_resolution through
// sample_video() and written to output_dir/validation/step_<N>_<nickname>.mp4 (+ a first-frame PNG).
//
// Who calls: the trainer (host/src/train) creates one Validator after the model is loaded and calls
// run() when due(step). The configuration keys are declared by validation_options() (docs/validation.md).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "notify/webhook.h"
#include "plugins/model_handle.h"
#include "st/model.h"
#include "st/options.h"
#include "validate/sampling.h"

namespace st::host::validate {

/// Every validation key (SimpleTuner's names and defaults; docs/validation.md).
std::vector<sdk::OptionSpec> validation_options();

struct Prompt {
    std::string nickname;  ///< file-name stem part ("validation" for validation_prompt)
    std::string text;
    std::string negative;
    std::optional<std::filesystem::path> image;  ///< image-to-video conditioning (image or video file)
    /// speech-to-video driving audio (any file with an audio stream); its first `frames / fps`
    /// seconds drive the render and are muxed into the mp4
    std::optional<std::filesystem::path> audio;
};

/// A training sample the validator takes its image and audio sampling inputs from when the model
/// needs them (ModelFamily::sampling_inputs of kind image / audio) and neither the prompt entry nor
/// validation_image / validation_audio gives them (SimpleTuner retrieve_validation_s2v_samples: the
/// first frame of a training video and that video's audio).
struct ReferenceSample {
    std::string id;
    std::filesystem::path video;                 ///< the sample's media file
    std::optional<std::filesystem::path> audio;  ///< its audio source (the video itself when auto-split)
    double audio_start = 0.0;                    ///< seconds on the audio file's timeline
};

/// The render settings read from the configuration (validation_* keys, framerate, flow_schedule_shift).
struct ValidationSettings {
    int64_t step_interval = 0;
    std::optional<std::string> prompt;
    std::string negative_prompt;
    double guidance = 7.5;
    /// Guidance of the steps below the model's expert boundary (experts@1: the second network).
    std::optional<double> guidance_2;
    int64_t steps = 30;
    int64_t frames = 81;
    std::vector<Resolution> resolutions;
    std::optional<int64_t> seed;
    int fps = 15;
    std::optional<std::filesystem::path> user_prompt_library;
    bool builtin_library = false;
    /// validation_noise_scheduler; "" = unset: the model's shipped sampler (noise_schedule@1), else euler
    /// (resolved by apply_model_defaults).
    std::string scheduler;
    /// The sampler's configuration; its shift is flow_schedule_shift (3.0 when unset) unless the model
    /// ships its own schedule.
    sdk::SamplerConfig sampler;
    std::string ema_mode = "comparison";  ///< none | ema_only | comparison
    std::vector<int64_t> skip_layers;
    double skip_start = 0.01;
    double skip_stop = 0.2;
    std::optional<std::filesystem::path> image;
    std::optional<std::filesystem::path> audio;
    bool using_datasets = false;                 ///< validation_using_datasets
    std::optional<std::string> eval_dataset_id;  ///< dataset of the reference sample
    bool preview = false;
    int64_t preview_steps = 1;

    /// After the model is loaded: a family with its own schedule (noise_schedule@1) gives the sampler
    /// configuration (its flow shift; flow_schedule_shift does not apply, as in SimpleTuner) and, when
    /// validation_noise_scheduler is unset, the sampler itself; otherwise an unset scheduler is euler.
    /// Logs what was decided.
    void apply_model_defaults(ModelHandle& model);
    /// Right after the model is loaded, before caching or training: st::Error naming the key, its
    /// value and what `model` allows when a render could never run (a skip layer beyond its blocks,
    /// frames or a resolution its latent grid cannot hold), so no run fails at its first validation.
    void check_model(ModelHandle& model) const;

    /// Reads and checks the keys; relative paths are resolved against `config_dir`. Throws st::Error
    /// naming each bad key.
    static ValidationSettings read(const sdk::ConfigView& config, const std::filesystem::path& config_dir);
    /// A SampleRequest for one render at `size` with these settings (embeddings, image conditioning
    /// and callbacks left for the caller).
    SampleRequest request(const Resolution& size, uint64_t seed) const;
    /// Whether any step runs classifier-free guidance (so the negative prompt is needed).
    bool uses_cfg() const { return guidance > 1.0 || guidance_2.value_or(guidance) > 1.0; }
};

/// A file-name-safe nickname: letters, digits, '-', '_' and '.' kept, anything else becomes '_'.
std::string safe_nickname(const std::string& nickname);

/// SimpleTuner-style user_prompt_library: {"nickname": "prompt"} or {"nickname": {"prompt": ...,
/// "negative_prompt": ..., "image": ..., "audio": ...}}; paths relative to the library file.
/// `default_negative` fills entries without their own. Throws st::Error naming the file and entry.
std::vector<Prompt> read_prompt_library(const std::filesystem::path& file,
                                        const std::string& default_negative);

/// st's built-in prompt library (validation_prompt_library: true): short motion prompts.
std::vector<Prompt> builtin_prompt_library(const std::string& negative);

/// The webhook event of one validation preview (what the trainer sends from Validator::run's preview
/// callback): writes `frame_u8` [H, W, 3] to output_dir/validation/preview_step_<N>_<nickname>_<k>.png
/// and returns a raw-only "validation.preview" event (SimpleTuner sends previews to raw targets)
/// carrying it, with data {step, nickname, sampling_step}. The file stays for the background sender.
notify::Event preview_event(const std::filesystem::path& output_dir, int64_t step,
                            const std::string& nickname, int64_t sampling_step, const at::Tensor& frame_u8);

/// The driving audio of one render (a sampling input of kind audio), encoded by the model.
struct DrivingAudio {
    sdk::TensorMap features;  ///< AudioConditioning::encode_audio() output
    at::Tensor samples;       ///< float [N] mono at the model's audio rate, muxed into the mp4
    int sample_rate = 0;
};

/// Reads `frames / fps` seconds of `file` from `start` at the model's audio sample rate and encodes
/// them (warns when the file ends before the render does: silence after it).
DrivingAudio encode_driving_audio(ModelHandle& model, const std::filesystem::path& file, double start,
                                  int64_t frames, int fps);

/// "reference image (image)" list of the sampling inputs, for messages; "text only" when empty.
std::string describe_inputs(const std::vector<sdk::SamplingInput>& inputs);

class Validator {
  public:
    /// `config_dir`: directory of the config file (relative paths). `run_seed`: used when
    /// validation_seed is unset. Reads and checks every key at once (throws st::Error).
    Validator(const sdk::ConfigView& config, std::filesystem::path config_dir,
              std::filesystem::path output_dir, ModelHandle& model, uint64_t run_seed = 0);

    /// A prompt exists and validation_step_interval > 0.
    bool enabled() const;
    /// enabled() and step % validation_step_interval == 0 (step > 0).
    bool due(int64_t step) const;
    /// validation_prompt ("validation") + user_prompt_library entries (+ the built-in library when
    /// validation_prompt_library is true), in that order.
    std::vector<Prompt> prompts() const;
    const ValidationSettings& settings() const { return settings_; }

    struct Output {
        std::vector<std::filesystem::path> files;  ///< mp4 and png paths, in render order
        double seconds = 0;
    };
    using SwapEma = std::function<void()>;
    /// (prompt nickname, sampling step index, decoded first frame uint8 [H, W, 3]).
    using PreviewFn = std::function<void(const std::string&, int64_t, const at::Tensor&)>;

    /// Renders each prompt x resolution into output_dir/validation/step_<N>_<nickname>[_<WxH> when
    /// several resolutions].mp4 + .png. ema_validation none: `swap_ema` never called; ema_only: called
    /// before and after; comparison: renders twice, the EMA files suffixed _ema. An empty `swap_ema`
    /// (no EMA in this run) renders the trained weights once. Runs under NoGradGuard with the model in
    /// eval mode (train mode restored after). `preview` (with validation_preview) is called every
    /// validation_preview_steps sampling steps.
    /// A SamplingStopped from `should_stop` (see set_stop_check) ends the run early: the EMA is swapped
    /// back and train mode restored, and the exception reaches the caller.
    Output run(int64_t step, const std::vector<Prompt>& prompts, const SwapEma& swap_ema,
               const PreviewFn& preview = {});

    /// Asked before every sampling step of every render (the trainer passes its stop signal).
    void set_stop_check(std::function<bool()> should_stop) { should_stop_ = std::move(should_stop); }

    /// Encodes the text (and, with guidance > 1, the negative prompt) of every prompt not encoded yet
    /// and keeps the embeddings for the whole run (they do not change during training). run() calls it
    /// too; call it before ModelFamily::release_encoders() to avoid loading the text encoder again.
    /// When it had to encode something it calls release_encoders() afterwards, so a validation never
    /// leaves the text encoder loaded. Returns the number of texts encoded.
    size_t encode_prompts(const std::vector<Prompt>& prompts);

    /// What the model needs besides text (ModelFamily::sampling_inputs).
    const std::vector<sdk::SamplingInput>& sampling_inputs() const { return inputs_; }
    /// Whether the model needs a sampling input of `kind`.
    bool needs(sdk::MediaKind kind) const;
    /// Whether some prompt would have no image or audio the model needs without a reference sample.
    bool needs_reference_sample() const;
    void set_reference_sample(ReferenceSample sample);
    const std::optional<ReferenceSample>& reference_sample() const { return reference_; }

  private:
    std::function<bool()> should_stop_;
    const DrivingAudio& driving_audio(const std::filesystem::path& file, double start);
    /// The image / audio of `prompt` (its own, the settings', then the reference sample's).
    std::optional<std::filesystem::path> image_for(const Prompt& prompt) const;
    std::optional<std::pair<std::filesystem::path, double>> audio_for(const Prompt& prompt) const;

    /// The encoding of a prompt (negative: through the family's negative-prompt encoding when it has one),
    /// cached for the whole run.
    const sdk::TensorMap& embeddings(const std::string& text, bool negative = false);
    void render(int64_t step, const Prompt& prompt, const std::string& suffix, const PreviewFn& preview,
                Output& out);

    ValidationSettings settings_;
    std::filesystem::path config_dir_;
    std::filesystem::path output_dir_;
    ModelHandle& model_;
    uint64_t seed_;
    std::map<std::string, sdk::TensorMap> text_cache_;  ///< prompt text -> encode_text() output
    std::vector<sdk::SamplingInput> inputs_;            ///< sampling_inputs() of the model
    std::optional<ReferenceSample> reference_;
    std::map<std::string, DrivingAudio> audio_cache_;  ///< "file|start" -> features + samples
};

}  // namespace st::host::validate
