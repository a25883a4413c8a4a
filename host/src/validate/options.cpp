// Validation configuration keys: SimpleTuner's names and defaults (inventory §1.2 table and §6);
// where st differs, the help says so and docs/validation.md lists it.
#include <fmt/format.h>

#include "st/error.h"
#include "validate/validator.h"

namespace st::host::validate {

std::vector<sdk::OptionSpec> validation_options() {
    using namespace sdk;
    std::vector<OptionSpec> o;
    auto add = [&](OptionSpec s, std::vector<std::string> aliases = {}) {
        s.group = "validation";
        s.aliases = std::move(aliases);
        o.push_back(std::move(s));
    };
    add(opt_int("validation_step_interval", 100,
                "Render the validation prompts every N optimizer steps (needs a prompt; 0 disables).")
            .range(0, 1e9),
        {"validation_steps"});
    add(opt_string("validation_prompt", std::nullopt,
                   "Main validation prompt (file nickname 'validation'). Unset and no prompt library: "
                   "no validation."));
    add(opt_string("validation_negative_prompt", "blurry, cropped, ugly",
                   "Negative prompt: the unconditional branch of classifier-free guidance."));
    add(opt_float("validation_guidance", 7.5,
                  "Classifier-free guidance scale; <= 1 renders one conditional pass per step (no negative "
                  "prompt). SimpleTuner's Wan quickstart uses 5.2."));
    add(opt_float("validation_guidance_2", std::nullopt,
                  "Wan 2.2 with both experts loaded (wan_validation_load_other_stage): the guidance scale of "
                  "the low-noise expert's steps (diffusers guidance_scale_2); unset = validation_guidance."));
    add(opt_int("validation_num_inference_steps", 30, "Sampling steps per validation video.")
            .range(1, 10000));
    add(opt_int("validation_num_video_frames", std::nullopt,
                "Frames per validation video (4k+1 for Wan); unset = 81. Capped at 81 as SimpleTuner does.")
            .range(1, 100000));
    add(opt_string("validation_resolution", "256",
                   "WxH or a single edge (square), or a comma list of either (e.g. 832x480,480x832): one "
                   "video per prompt and resolution."));
    add(opt_int("validation_seed", std::nullopt,
                "Seed of the initial noise (CPU generator, reproducible across devices); unset = the run "
                "seed, or 0."));
    add(opt_int("framerate", 15,
                "Frames per second of the written validation videos (SimpleTuner: 15 for Wan and S2V when "
                "unset).")
            .range(1, 1000));
    add(opt_string("user_prompt_library", std::nullopt,
                   "JSON file {nickname: prompt} or {nickname: {prompt, negative_prompt, image}} rendered "
                   "at each validation; the nickname names the files."));
    add(opt_bool("validation_prompt_library", false, "Also render st's built-in prompt library."));
    add(opt_string(
        "validation_noise_scheduler", std::nullopt,
        "Validation sampler: euler (= flow_match_euler, what SimpleTuner actually uses for Wan), "
        "unipc (the Wan Diffusers repos' shipped scheduler, order 2, bh2) or dpmsolver++ (= dpm++, "
        "DPM-Solver++ 2M midpoint, Sana Video's shipped scheduler), with flow_schedule_shift. Unset: "
        "the model's shipped sampler for families with their own schedule (Sana Video: its "
        "scheduler_config.json, shift included), else euler.",
        {"euler", "flow_match_euler", "unipc", "dpmsolver++", "dpm++", "dpmsolver_multistep"}));
    add(opt_string("ema_validation", "comparison",
                   "With use_ema: none = trained weights only, ema_only = EMA weights only, comparison = "
                   "both (EMA files suffixed _ema).",
                   {"none", "ema_only", "comparison"}));
    add(opt_json("validation_guidance_skip_layers",
                 "Skip-layer guidance: transformer block indices (a list, or one index) skipped in the "
                 "unconditional pass while the step fraction is in [start, stop). Needs guidance > 1."));
    add(opt_float("validation_guidance_skip_layers_start", 0.01,
                  "Skip-layer guidance starts at this fraction of the sampling steps."));
    add(opt_float("validation_guidance_skip_layers_stop", 0.2,
                  "Skip-layer guidance stops before this fraction of the sampling steps."));
    add(opt_string("validation_image", std::nullopt,
                   "Image-to-video models: the conditioning image; speech-to-video: the reference image (an "
                   "image file, or a video whose first frame is used) for prompts without their own."));
    add(opt_bool("validation_using_datasets", false,
                 "Take the conditioning/reference image (and S2V driving audio) of prompts without their own "
                 "from a dataset sample even when validation_image / validation_audio are set (SimpleTuner's "
                 "dataset-driven image-to-video validation). Without those keys a dataset sample is used "
                 "anyway."));
    add(opt_string("eval_dataset_id", std::nullopt,
                   "Dataset id (a training or a dataset_type eval dataset) whose first sample provides the "
                   "validation image / reference and audio. Unset: the first training sample."));
    add(opt_string("validation_audio", std::nullopt,
                   "Speech-to-video models (wan_s2v): the driving audio (any file with an audio stream) for "
                   "prompts without their own; its first validation_num_video_frames / framerate seconds "
                   "are used and muxed into the mp4. Unset: a training sample's audio."));
    add(opt_bool("validation_preview", false,
                 "Send intermediate frames (the x0 estimate decoded by the model's VAE, first frame) while "
                 "sampling; needs webhook_config."));
    add(opt_int("validation_preview_steps", 1, "With validation_preview: every N sampling steps."));
    add(opt_json(
        "webhook_config",
        "Webhooks: {\"webhook_type\": \"discord\", \"webhook_url\": ...} or {\"webhook_type\": "
        "\"raw\", \"callback_url\": ...}, a list of them, or a path to a JSON file (docs/webhooks.md)."));
    return o;
}

}  // namespace st::host::validate
