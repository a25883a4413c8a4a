// Validator: prompts, settings and the validation renders during training (SimpleTuner
// training/validation.py Validation.run_validations + validation_video.py, inventory §6).
#include "validate/validator.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "media/video_writer.h"
#include "plugins/guard.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::host::validate {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLog = "host.validate";

fs::path resolve_path(const std::string& p, const fs::path& dir) {
    // Relative to the current directory (SimpleTuner runs from its root), else to the config file.
    fs::path path(p);
    return path.is_absolute() || dir.empty() || fs::exists(path) ? path : dir / path;
}

std::vector<int64_t> read_skip_layers(const nlohmann::json& v, std::vector<std::string>& problems) {
    // SimpleTuner stores a JSON string; a bare index is one layer (the reference silently drops it).
    std::vector<int64_t> out;
    if (v.is_null()) return out;
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (v.is_array()) {
        for (const auto& e : v) {
            if (!e.is_number_integer() || e.get<int64_t>() < 0) {
                problems.push_back(fmt::format(
                    "validation_guidance_skip_layers = {}: every entry must be a block index >= 0",
                    v.dump()));
                return {};
            }
            out.push_back(e.get<int64_t>());
        }
        return out;
    }
    problems.push_back(fmt::format(
        "validation_guidance_skip_layers = {}: expected a list of block indices such as [9]", v.dump()));
    return {};
}

}  // namespace

ValidationSettings ValidationSettings::read(const sdk::ConfigView& c, const fs::path& config_dir) {
    ValidationSettings s;
    std::vector<std::string> problems;
    s.step_interval = c.get_int("validation_step_interval");
    if (s.step_interval < 0)
        problems.push_back(fmt::format("validation_step_interval = {}: must be >= 0", s.step_interval));
    s.prompt = c.opt_string("validation_prompt");
    if (s.prompt && s.prompt->empty()) s.prompt.reset();
    s.negative_prompt = c.get_string("validation_negative_prompt");
    s.guidance = c.get_float("validation_guidance");
    s.guidance_2 = c.opt_float("validation_guidance_2");
    s.steps = c.get_int("validation_num_inference_steps");
    if (s.steps < 1)
        problems.push_back(fmt::format("validation_num_inference_steps = {}: must be >= 1", s.steps));
    s.frames = c.opt_int("validation_num_video_frames").value_or(81);
    if (s.frames < 1)
        problems.push_back(fmt::format("validation_num_video_frames = {}: must be >= 1", s.frames));
    if (s.frames > 81) {
        log::info(kLog, "validation_num_video_frames {} capped at 81 (as SimpleTuner does)", s.frames);
        s.frames = 81;
    }
    try {
        s.resolutions = parse_resolutions(c.get_string("validation_resolution"), "validation_resolution");
    } catch (const Error& e) {
        problems.push_back(e.what());
    }
    s.seed = c.opt_int("validation_seed");
    const int64_t fps = c.get_int("framerate");
    if (fps < 1 || fps > 240) problems.push_back(fmt::format("framerate = {}: must be in [1, 240]", fps));
    s.fps = static_cast<int>(fps);
    if (auto p = c.opt_string("user_prompt_library"); p && !p->empty())
        s.user_prompt_library = resolve_path(*p, config_dir);
    s.builtin_library = c.get_bool("validation_prompt_library");
    s.scheduler = c.opt_string("validation_noise_scheduler").value_or("");
    s.sampler.shift = c.opt_float("flow_schedule_shift").value_or(3.0);
    if (!(s.sampler.shift > 0))
        problems.push_back(
            fmt::format("flow_schedule_shift = {}: validation samplers need a shift > 0 (3.0 for Wan 480p)",
                        s.sampler.shift));
    s.ema_mode = c.get_string("ema_validation");
    if (c.has("validation_guidance_skip_layers"))
        s.skip_layers = read_skip_layers(c.get_json("validation_guidance_skip_layers"), problems);
    s.skip_start = c.get_float("validation_guidance_skip_layers_start");
    s.skip_stop = c.get_float("validation_guidance_skip_layers_stop");
    if (!s.skip_layers.empty() && !s.uses_cfg())
        problems.push_back(fmt::format(
            "validation_guidance_skip_layers is set but validation_guidance = {}: skip-layer guidance acts "
            "on the unconditional pass, which only runs with guidance > 1",
            s.guidance));
    if (auto p = c.opt_string("validation_image"); p && !p->empty()) s.image = resolve_path(*p, config_dir);
    if (auto p = c.opt_string("validation_audio"); p && !p->empty()) s.audio = resolve_path(*p, config_dir);
    s.using_datasets = c.get_bool("validation_using_datasets");
    s.eval_dataset_id = c.opt_string("eval_dataset_id");
    if (s.eval_dataset_id && s.eval_dataset_id->empty()) s.eval_dataset_id.reset();
    s.preview = c.get_bool("validation_preview");
    s.preview_steps = c.get_int("validation_preview_steps");
    if (s.preview_steps < 1)
        problems.push_back(fmt::format("validation_preview_steps = {}: must be >= 1", s.preview_steps));
    if (!problems.empty())
        fail(kLog, "config", "invalid validation settings:\n  {}",
             fmt::format("{}", fmt::join(problems, "\n  ")));
    return s;
}

void ValidationSettings::check_model(ModelHandle& model) const {
    if (!skip_layers.empty()) {
        const auto blocks = model.routable_blocks();
        if (!blocks)
            fail("host.validate", "setup",
                 "validation_guidance_skip_layers = [{}]: {} cannot skip blocks (it lacks the token_routing "
                 "capability); remove validation_guidance_skip_layers",
                 fmt::join(skip_layers, ", "), model.entry().id);
        for (int64_t layer : skip_layers)
            if (layer >= *blocks)
                fail(
                    "host.validate", "setup",
                    "validation_guidance_skip_layers = [{}]: block {} does not exist in {} (blocks 0 .. {}); "
                    "checked before caching so the run does not fail at its first validation",
                    fmt::join(skip_layers, ", "), layer, model.entry().id, *blocks - 1);
    }
    if (audio) {
        const auto inputs = model.sampling_inputs();
        if (std::none_of(inputs.begin(), inputs.end(),
                         [](const sdk::SamplingInput& i) { return i.kind == sdk::MediaKind::audio; }))
            fail("host.validate", "setup",
                 "validation_audio = {}: {} takes no audio; remove validation_audio or use an "
                 "audio-conditioned model family such as wan_s2v",
                 audio->string(), model.entry().id);
    }
    for (const auto& r : resolutions) {
        try {
            (void)model.latent_shape(frames, r.height, r.width);
        } catch (const Error& e) {
            fail("host.validate", "setup",
                 "validation_num_video_frames = {}, validation_resolution = {}: {} cannot render it ({}); "
                 "checked before caching so the run does not fail at its first validation",
                 frames, r.str(), model.entry().id, e.message());
        }
    }
}

void ValidationSettings::apply_model_defaults(ModelHandle& model) {
    const auto own = model.sampling_defaults();
    if (!own) {
        if (scheduler.empty()) scheduler = "euler";
        return;
    }
    const bool chosen = !scheduler.empty();
    if (!chosen) scheduler = own->scheduler;
    sampler = own->sampler;
    log::info(
        kLog,
        "validation sampler: {} with flow shift {} ({}: {} ships {}; flow_schedule_shift does not apply)",
        scheduler, sampler.shift, chosen ? "validation_noise_scheduler" : "the model's scheduler config",
        model.entry().id, own->scheduler);
}

SampleRequest ValidationSettings::request(const Resolution& size, uint64_t render_seed) const {
    SampleRequest req;
    req.frames = frames;
    req.size = size;
    req.steps = steps;
    req.guidance = guidance;
    req.guidance_2 = guidance_2;
    req.scheduler = scheduler.empty() ? std::string("euler") : scheduler;
    req.sampler = sampler;
    req.seed = render_seed;
    req.skip_layers = skip_layers;
    req.skip_start = skip_start;
    req.skip_stop = skip_stop;
    return req;
}

std::string safe_nickname(const std::string& nickname) {
    std::string out;
    for (char ch : nickname) {
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        ch == '-' || ch == '_' || ch == '.';
        out.push_back(ok ? ch : '_');
    }
    return out.empty() ? std::string("prompt") : out;
}

std::vector<Prompt> read_prompt_library(const fs::path& file, const std::string& default_negative) {
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(kLog, "config", "user_prompt_library '{}' cannot be read", file.string());
    nlohmann::json j;
    try {
        std::stringstream text;
        text << in.rdbuf();
        sdk::check_json_limits(text.str(), file.string(), kLog);
        j = nlohmann::json::parse(text.str());
    } catch (const std::exception& e) {
        fail(kLog, "config", "user_prompt_library '{}' is not valid JSON: {}", file.string(), e.what());
    }
    if (!j.is_object())
        fail(kLog, "config", "user_prompt_library '{}' must be a JSON object {{nickname: prompt}}, got {}",
             file.string(), j.type_name());
    const fs::path dir = file.parent_path();
    std::vector<Prompt> out;
    for (const auto& [nick, v] : j.items()) {
        Prompt p;
        p.nickname = nick;
        p.negative = default_negative;
        if (v.is_string()) {
            p.text = v.get<std::string>();
        } else if (v.is_object() && v.contains("prompt") && v["prompt"].is_string()) {
            for (const auto& [k, x] : v.items()) {
                if (!x.is_string())
                    fail(kLog, "config", "user_prompt_library '{}': entry '{}' field '{}' must be a string",
                         file.string(), nick, k);
                const std::string s = x.get<std::string>();
                if (k == "prompt")
                    p.text = s;
                else if (k == "negative_prompt")
                    p.negative = s;
                else if (k == "image")
                    p.image = resolve_path(s, dir);
                else if (k == "audio")
                    p.audio = resolve_path(s, dir);
                else
                    fail(kLog, "config",
                         "user_prompt_library '{}': entry '{}' has unknown field '{}' (known: prompt, "
                         "negative_prompt, image, audio)",
                         file.string(), nick, k);
            }
        } else {
            fail(kLog, "config",
                 "user_prompt_library '{}': entry '{}' must be a prompt string or an object with 'prompt'",
                 file.string(), nick);
        }
        out.push_back(std::move(p));
    }
    return out;
}

std::vector<Prompt> builtin_prompt_library(const std::string& negative) {
    static const std::pair<const char*, const char*> kPrompts[] = {
        {"st_waves", "ocean waves rolling onto a sandy beach at sunset, slow camera pan"},
        {"st_city", "a busy city street at night with neon signs and passing cars, handheld camera"},
        {"st_cat", "a cat slowly turning its head toward the camera in warm window light"},
        {"st_forest", "sunlight through the trees of a misty forest, the camera moving forward"},
        {"st_dancer", "a dancer spinning in a white studio, full body, smooth motion"},
        {"st_rain", "rain drops falling on a window with blurred traffic lights behind it"},
    };
    std::vector<Prompt> out;
    for (const auto& [nick, text] : kPrompts)
        out.push_back({nick, text, negative, std::nullopt, std::nullopt});
    return out;
}

notify::Event preview_event(const fs::path& output_dir, int64_t step, const std::string& nickname,
                            int64_t sampling_step, const at::Tensor& frame_u8) {
    const fs::path dir = output_dir / "validation";
    fs::create_directories(dir);
    const fs::path file =
        dir / fmt::format("preview_step_{}_{}_{}.png", step, safe_nickname(nickname), sampling_step);
    media::write_png(file, frame_u8);
    notify::Event e;
    e.type = "validation.preview";
    e.message = fmt::format("validation preview: step {}, prompt '{}', sampling step {}", step, nickname,
                            sampling_step + 1);
    e.data = {{"step", step}, {"nickname", nickname}, {"sampling_step", sampling_step}};
    e.attachments = {file};
    e.raw_only = true;
    return e;
}

Validator::Validator(const sdk::ConfigView& config, fs::path config_dir, fs::path output_dir,
                     ModelHandle& model, uint64_t run_seed)
    : settings_(ValidationSettings::read(config, config_dir)),
      config_dir_(std::move(config_dir)),
      output_dir_(std::move(output_dir)),
      model_(model),
      seed_(settings_.seed ? static_cast<uint64_t>(*settings_.seed) : run_seed) {
    inputs_ = model_.sampling_inputs();
    settings_.apply_model_defaults(model_);
    if (enabled() && settings_.image && !needs(sdk::MediaKind::image))
        log::warn(kLog,
                  "validation_image {} is not used: the model ({}) takes no image (its sampling inputs: {})",
                  settings_.image->string(), model_.entry().id, describe_inputs(inputs_));
    if (enabled() && !inputs_.empty())
        log::info(kLog, "the model samples from text + {} (ModelFamily::sampling_inputs)",
                  describe_inputs(inputs_));
    if (enabled())
        log::info(
            kLog,
            "validation every {} steps: {} prompt(s) x {} resolution(s), {} frames, {} {} steps, guidance "
            "{}, seed {}, {} fps",
            settings_.step_interval, prompts().size(), settings_.resolutions.size(), settings_.frames,
            settings_.steps, settings_.scheduler, settings_.guidance, seed_, settings_.fps);
}

bool Validator::enabled() const {
    return settings_.step_interval > 0 &&
           (settings_.prompt || settings_.user_prompt_library || settings_.builtin_library);
}

bool Validator::due(int64_t step) const {
    return enabled() && step > 0 && step % settings_.step_interval == 0;
}

std::vector<Prompt> Validator::prompts() const {
    std::vector<Prompt> out;
    if (settings_.prompt)
        out.push_back(
            {"validation", *settings_.prompt, settings_.negative_prompt, std::nullopt, std::nullopt});
    if (settings_.user_prompt_library)
        for (auto& p : read_prompt_library(*settings_.user_prompt_library, settings_.negative_prompt))
            out.push_back(std::move(p));
    if (settings_.builtin_library)
        for (auto& p : builtin_prompt_library(settings_.negative_prompt)) out.push_back(std::move(p));
    return out;
}

const sdk::TensorMap& Validator::embeddings(const std::string& text, bool negative) {
    // Negative prompts may be encoded differently (negative_prompt@1): cached under their own key.
    const std::string key = (negative ? "n:" : "p:") + text;
    auto it = text_cache_.find(key);
    if (it != text_cache_.end()) return it->second;
    auto emb = negative ? model_.encode_negative_text({text}) : model_.encode_text({text});
    return text_cache_.emplace(key, std::move(emb)).first->second;
}

size_t Validator::encode_prompts(const std::vector<Prompt>& prompts) {
    const size_t before = text_cache_.size();
    for (const auto& p : prompts) {
        embeddings(p.text);
        if (settings_.uses_cfg()) embeddings(p.negative, true);
    }
    const size_t added = text_cache_.size() - before;
    if (added > 0) {
        log::info(kLog, "encoded {} validation text(s); kept for the whole run", added);
        model_.release_encoders();
    }
    return added;
}

void Validator::render(int64_t step, const Prompt& prompt, const std::string& suffix,
                       const PreviewFn& preview, Output& out) {
    const fs::path dir = output_dir_ / "validation";
    fs::create_directories(dir);
    const bool several = settings_.resolutions.size() > 1;
    const auto audio = audio_for(prompt);
    const DrivingAudio* driving = audio ? &driving_audio(audio->first, audio->second) : nullptr;
    for (const auto& res : settings_.resolutions) {
        SampleRequest req = settings_.request(res, seed_);
        req.positive = embeddings(prompt.text);
        if (settings_.uses_cfg()) req.negative = embeddings(prompt.negative, true);
        if (const auto image = image_for(prompt)) {
            const at::Tensor cond = conditioning_image(read_first_frame(*image), res);
            for (auto& [k, v] : model_.encode_conditioning_image(cond, settings_.frames)) req.inputs[k] = v;
        }
        if (driving)
            for (const auto& [k, v] : driving->features) req.inputs[k] = v;
        req.progress_label = fmt::format("validation '{}' {}", prompt.nickname, res.str());
        req.should_stop = should_stop_;
        if (preview && settings_.preview) {
            req.on_step = [&](int64_t i, const at::Tensor&, const at::Tensor& x0) {
                if ((i + 1) % settings_.preview_steps != 0) return;
                const at::Tensor first = x0.narrow(2, 0, 1);
                const at::Tensor px = model_.decode_latents(first);
                preview(prompt.nickname, i, media::frames_to_uint8(px).select(0, 0));
            };
        }
        const std::string stem = fmt::format("step_{}_{}{}{}", step, safe_nickname(prompt.nickname),
                                             several ? "_" + res.str() : std::string(), suffix);
        const at::Tensor video = sample_video(model_, req);
        const at::Tensor frames = media::frames_to_uint8(video);
        media::AudioTrack track{driving ? driving->samples : at::Tensor(),
                                driving ? driving->sample_rate : 0};
        media::write_mp4(dir / (stem + ".mp4"), frames, settings_.fps, driving ? &track : nullptr);
        media::write_png(dir / (stem + ".png"), frames.select(0, 0));
        out.files.push_back(dir / (stem + ".mp4"));
        out.files.push_back(dir / (stem + ".png"));
        log::info(kLog, "step {}: wrote {} ({} frames {} at {} fps)", step, (dir / (stem + ".mp4")).string(),
                  frames.size(0), res.str(), settings_.fps);
    }
}

Validator::Output Validator::run(int64_t step, const std::vector<Prompt>& prompts, const SwapEma& swap_ema,
                                 const PreviewFn& preview) {
    const auto start = std::chrono::steady_clock::now();
    Output out;
    torch::nn::Module& net = model_.trainable();
    const bool was_training = net.is_training();
    net.eval();
    at::NoGradGuard no_grad;
    // Restores train mode (and the trained weights after an EMA swap) whether or not a render throws.
    bool ema_in = false;
    struct Restore {
        torch::nn::Module& net;
        bool training;
        const SwapEma& swap;
        bool& ema_in;
        ~Restore() {
            if (ema_in && swap) swap();
            if (training) net.train();
        }
    } restore{net, was_training, swap_ema, ema_in};

    encode_prompts(prompts);
    const std::string mode = swap_ema ? settings_.ema_mode : std::string("none");
    if (mode != "ema_only")
        for (const auto& p : prompts) render(step, p, "", preview, out);
    if (mode == "ema_only" || mode == "comparison") {
        swap_ema();
        ema_in = true;
        for (const auto& p : prompts) render(step, p, mode == "comparison" ? "_ema" : "", preview, out);
        ema_in = false;
        swap_ema();
    }
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log::info(kLog, "step {}: validation wrote {} file(s) in {:.1f} s (ema_validation {})", step,
              out.files.size(), out.seconds, mode);
    return out;
}

}  // namespace st::host::validate
