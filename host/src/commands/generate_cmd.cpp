// st-host generate: render one video from a model (+ LoRA files) through the validation sampling path
// (validate/sampling.h), and st-host bench generate: seconds per denoising step with and without
// classifier-free guidance and VAE decode time per frame.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands/commands.h"
#include "config/config_file.h"
#include "config/hub_cache.h"
#include "media/video_writer.h"
#include "plugins/model_handle.h"
#include "run/run_device.h"
#include "run/run_setup.h"
#include "st/error.h"
#include "st/log.h"
#include "st/lora.h"
#include "st/model_path.h"
#include "system_info.h"
#include "validate/validator.h"

namespace st::host {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kLog = "host.generate";

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

struct LoraSpec {
    fs::path file;
    double strength = 1.0;
};

/// "FILE" or "FILE:STRENGTH" (the last ':' when what follows is a number).
LoraSpec parse_lora_spec(const std::string& s) {
    LoraSpec l{s, 1.0};
    const size_t colon = s.rfind(':');
    if (colon != std::string::npos && colon + 1 < s.size()) {
        const std::string tail = s.substr(colon + 1);
        size_t used = 0;
        double v = 0;
        try {
            v = std::stod(tail, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == tail.size()) {
            l.file = s.substr(0, colon);
            l.strength = v;
        }
    }
    if (!fs::exists(l.file))
        fail("host.cli", "generate", "--lora {}: file '{}' does not exist", s, l.file.string());
    return l;
}

std::string require_plugin(CommandContext& ctx, const char* cmd) {
    if (ctx.flags.plugin.empty())
        fail("host.cli", cmd, "--plugin NAME is required (the model family plugin, e.g. --plugin wan)");
    return ctx.flags.plugin;
}

at::ScalarType parse_precision(const std::string& mp, const char* cmd) {
    if (mp == "bf16") return at::kBFloat16;
    if (mp == "no" || mp == "fp32") return at::kFloat;
    fail("host.cli", cmd, "--mixed_precision {}: expected bf16 or no (fp32)", mp);
}

std::unique_ptr<ModelHandle> load_for_inference(const ComponentEntry& entry, const fs::path& model_arg,
                                                const sdk::ConfigView& config, at::ScalarType dtype) {
    fs::path path = model_arg;
    std::error_code ec;
    if (!fs::exists(path, ec))
        if (auto snap = hf_cache_snapshot(path.string())) {
            log::info(kLog, "--model '{}': using the local Hugging Face cache snapshot {}", path.string(),
                      snap->string());
            path = *snap;
        }
    sdk::require_model_path(path, "--model", "host.cli", "generate");
    auto model = std::make_unique<ModelHandle>(entry);
    sdk::ModelLoadRequest req;
    req.path = path;
    req.config = config;
    req.dtype = dtype;
    const RunDevice run = pick_run_device(config.get_string("device"));
    configure_run_device(run);
    req.device = run.device;
    req.training = false;
    model->load(req);
    model->trainable().eval();
    log::info(kLog, "loaded {} on {} in {}", path.string(), req.device.str(), c10::toString(dtype));
    return model;
}

/// Progress for long renders: one line per step (rate and ETA).
std::function<void(int64_t, const at::Tensor&, const at::Tensor&)> progress(int64_t steps) {
    auto start = std::make_shared<Clock::time_point>(Clock::now());
    return [start, steps](int64_t i, const at::Tensor&, const at::Tensor&) {
        const double el = seconds_since(*start);
        const double per = el / static_cast<double>(i + 1);
        log::info(kLog, "step {}/{}  {:.2f} s/step  ETA {:.0f} s", i + 1, steps, per,
                  per * static_cast<double>(steps - i - 1));
    };
}

}  // namespace

int cmd_generate(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string model_path, prompt, negative, image, audio, resolution, out, mixed_precision, scheduler,
        config_file;
    std::vector<std::string> loras;
    int64_t frames = 0, steps = 0, seed = 0, fps = 0;
    double guidance = 0, guidance_2 = 0, flow_shift = 0;
    bool help = false;
    po::options_description desc("st-host generate --plugin NAME (options)");
    desc.add_options()("help", po::bool_switch(&help), "this text")(
        "model", po::value(&model_path),
        "model folder or file (default: pretrained_model_name_or_path of --config)")(
        "lora", po::value(&loras)->composing(),
        "LoRA file to apply, FILE or FILE:STRENGTH (default strength 1); repeatable, folded into the weights "
        "in "
        "order. Formats: diffusers, comfyui, kohya")("prompt", po::value(&prompt), "the prompt (required)")(
        "negative_prompt", po::value(&negative),
        "negative prompt for classifier-free guidance (default: validation_negative_prompt)")(
        "image", po::value(&image),
        "image-to-video: conditioning image (or a video whose first frame is used)")(
        "audio", po::value(&audio),
        "speech-to-video driving audio (any file with an audio stream; its first frames/fps seconds are used "
        "and "
        "muxed into the mp4)")("frames", po::value(&frames),
                               "number of frames (Wan: 4k+1; default validation_num_video_frames, else the "
                               "model's pipeline default or 81)")("resolution", po::value(&resolution),
                                                                  "WxH (default validation_resolution)")(
        "steps", po::value(&steps),
        "sampling steps (default validation_num_inference_steps, else the model's pipeline default: Sana "
        "Video 50)")("guidance", po::value(&guidance),
                     "CFG scale; <= 1 disables CFG (default validation_guidance, else the model's pipeline "
                     "default: Sana Video 6)")(
        "guidance_2", po::value(&guidance_2),
        "Wan 2.2 with both experts (--wan_validation_load_other_stage true): CFG scale of the low-noise "
        "expert's steps (default validation_guidance_2, else --guidance)")(
        "seed", po::value(&seed), "seed of the initial noise (default validation_seed, else 0)")(
        "scheduler", po::value(&scheduler),
        "euler | flow_match_euler | unipc | dpmsolver++ (default validation_noise_scheduler)")(
        "flow_shift", po::value(&flow_shift),
        "flow shift of the sampler (default flow_schedule_shift, 3.0; a model with its own schedule, e.g. "
        "Sana Video: its scheduler_config.json's)")("fps", po::value(&fps),
                                                    "frames per second of the mp4 (default framerate, 15)")(
        "mixed_precision", po::value(&mixed_precision),
        "bf16 | no (default mixed_precision of --config, bf16)")(
        "config", po::value(&config_file),
        "config file (SimpleTuner keys: model_flavour, validation_*, ...) read before the flags")(
        "out", po::value(&out), "output .mp4 (a first-frame .png is written beside it; required)");
    auto extra = parse_command_flags(desc, args, "generate");
    if (help) {
        std::cout << "usage: " << command_usage("generate") << "\n"
                  << desc
                  << "  --KEY VALUE           any other configuration key (e.g. "
                     "--validation_guidance_skip_layers '[1]')\n";
        return 0;
    }
    if (prompt.empty())
        fail("host.cli", "generate", "--prompt is required (usage: {})", command_usage("generate"));
    if (out.empty())
        fail("host.cli", "generate", "--out FILE.mp4 is required (usage: {})", command_usage("generate"));
    const auto& entry = model_component(ctx.plugins(), require_plugin(ctx, "generate"));

    // The flags become configuration overrides, so generation reads exactly what validation reads.
    std::vector<std::string> tokens = extra;
    auto set = [&](const char* key, const std::string& v) {
        tokens.push_back(std::string("--") + key);
        tokens.push_back(v);
    };
    po::variables_map vm;  // which flags were given (parse_command_flags already checked them)
    po::store(po::command_line_parser(args).options(desc).allow_unregistered().run(), vm);
    if (vm.count("frames")) set("validation_num_video_frames", std::to_string(frames));
    if (vm.count("resolution")) set("validation_resolution", resolution);
    if (vm.count("steps")) set("validation_num_inference_steps", std::to_string(steps));
    if (vm.count("guidance")) set("validation_guidance", fmt::format("{}", guidance));
    if (vm.count("guidance_2")) set("validation_guidance_2", fmt::format("{}", guidance_2));
    if (vm.count("seed")) set("validation_seed", std::to_string(seed));
    if (vm.count("scheduler")) set("validation_noise_scheduler", scheduler);
    if (vm.count("flow_shift")) set("flow_schedule_shift", fmt::format("{}", flow_shift));
    if (vm.count("fps")) set("framerate", std::to_string(fps));
    if (vm.count("mixed_precision")) set("mixed_precision", mixed_precision);
    if (vm.count("negative_prompt")) set("validation_negative_prompt", negative);
    if (!image.empty()) set("validation_image", fs::absolute(image).string());
    if (!audio.empty()) set("validation_audio", fs::absolute(audio).string());
    nlohmann::json file_values =
        config_file.empty() ? nlohmann::json::object() : load_config_file(config_file);
    const fs::path config_dir =
        config_file.empty() ? fs::current_path() : fs::absolute(config_file).parent_path();
    auto resolved =
        resolve_config(file_values, parse_cli_overrides(tokens), build_option_table(ctx.plugins()));
    for (const auto& note : resolved.notes) log::info("host.config", "{}", note);
    sdk::ConfigView config(std::make_shared<const nlohmann::json>(resolved.values));
    auto settings = validate::ValidationSettings::read(config, config_dir);
    if (settings.resolutions.size() != 1)
        fail("host.cli", "generate", "--resolution: one WxH, got {} resolutions",
             settings.resolutions.size());
    if (model_path.empty()) model_path = config.opt_string("pretrained_model_name_or_path").value_or("");
    if (model_path.empty())
        fail("host.cli", "generate",
             "--model PATH is required (or pretrained_model_name_or_path in --config)");

    const auto dtype = parse_precision(config.get_string("mixed_precision"), "generate");
    auto model = load_for_inference(entry, model_path, config, dtype);
    settings.apply_model_defaults(*model);
    if (const auto own = model->sampling_defaults()) {
        // The model's pipeline defaults for what neither a flag nor the config file sets.
        auto given = [&](const std::string& key) {
            if (file_values.contains(key)) return true;
            for (const auto& t : tokens)
                if (t == "--" + key || t.rfind("--" + key + "=", 0) == 0) return true;
            return false;
        };
        std::vector<std::string> used;
        if (own->guidance && !given("validation_guidance")) {
            settings.guidance = *own->guidance;
            used.push_back(fmt::format("guidance {}", settings.guidance));
        }
        if (own->steps && !given("validation_num_inference_steps")) {
            settings.steps = *own->steps;
            used.push_back(fmt::format("{} steps", settings.steps));
        }
        if (own->frames && !given("validation_num_video_frames")) {
            settings.frames = *own->frames;
            used.push_back(fmt::format("{} frames", settings.frames));
        }
        if (!used.empty())
            log::info(
                kLog,
                "the model's pipeline defaults: {} (set --guidance / --steps / --frames to change them)",
                fmt::join(used, ", "));
    }
    if (vm.count("flow_shift") && settings.sampler.shift != flow_shift) {
        // An explicit --flow_shift wins over a model's own schedule too.
        settings.sampler.shift = flow_shift;
        log::info(kLog, "--flow_shift {}: the sampler's shift", flow_shift);
    }
    at::NoGradGuard no_grad;
    if (!loras.empty()) {
        const sdk::LoraNameMap names = model->lora_name_map();
        for (const auto& spec : loras) {
            const LoraSpec l = parse_lora_spec(spec);
            auto mods = sdk::load_lora(l.file, model->trainable(), l.strength, names, /*merge=*/true);
            log::info(kLog, "LoRA {} at strength {}: {} module(s) folded into the weights", l.file.string(),
                      l.strength, mods.size());
        }
    }
    const validate::Resolution res = settings.resolutions.front();
    validate::SampleRequest req = settings.request(res, static_cast<uint64_t>(settings.seed.value_or(0)));
    req.positive = model->encode_text({prompt});
    if (settings.uses_cfg()) req.negative = model->encode_negative_text({settings.negative_prompt});
    const auto inputs = model->sampling_inputs();
    const bool wants_image = model->samples_from(sdk::MediaKind::image);
    const bool wants_audio = model->samples_from(sdk::MediaKind::audio);
    if (settings.image && !wants_image)
        fail("host.cli", "generate", "--image {}: the model ({}) takes no image (its sampling inputs: {})",
             settings.image->string(), entry.id, validate::describe_inputs(inputs));
    if (!settings.image && wants_image)
        fail("host.cli", "generate", "the model ({}) samples from {}: pass --image FILE", entry.id,
             validate::describe_inputs(inputs));
    if (settings.audio && !wants_audio)
        fail("host.cli", "generate", "--audio {}: the model ({}) takes no audio (its sampling inputs: {})",
             settings.audio->string(), entry.id, validate::describe_inputs(inputs));
    if (!settings.audio && wants_audio)
        fail("host.cli", "generate", "the model ({}) samples from {}: pass --audio FILE (the driving audio)",
             entry.id, validate::describe_inputs(inputs));
    // Skip layers and frames x resolution against the model (the pipeline's frames included), before
    // any sampling step.
    settings.check_model(*model);
    if (settings.image) {
        const at::Tensor cond =
            validate::conditioning_image(validate::read_first_frame(*settings.image), res);
        for (auto& [k, v] : model->encode_conditioning_image(cond, settings.frames)) req.inputs[k] = v;
    }
    std::optional<validate::DrivingAudio> driving;
    if (settings.audio) {
        driving = validate::encode_driving_audio(*model, *settings.audio, 0.0, settings.frames, settings.fps);
        for (const auto& [k, v] : driving->features) req.inputs[k] = v;
    }
    req.on_step = progress(req.steps);
    log::info(kLog, "rendering {} frames at {} with {} {} steps, guidance {}, seed {}", req.frames, res.str(),
              req.steps, req.scheduler, req.guidance, req.seed);
    const auto t0 = Clock::now();
    const at::Tensor video = validate::sample_video(*model, req);
    const at::Tensor u8 = media::frames_to_uint8(video);
    const fs::path out_path(out);
    if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
    media::AudioTrack track{driving ? driving->samples : at::Tensor(), driving ? driving->sample_rate : 0};
    media::write_mp4(out_path, u8, settings.fps, driving ? &track : nullptr);
    media::write_png(fs::path(out_path).replace_extension(".png"), u8.select(0, 0));
    log::info(kLog, "wrote {} and {} ({} frames, {:.1f} s)", out_path.string(),
              fs::path(out_path).replace_extension(".png").string(), u8.size(0), seconds_since(t0));
    return 0;
}

int cmd_bench_generate(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string preset = "small", model_path, resolution = "128x128", mixed_precision = "no";
    int64_t frames = 17, steps = 3;
    bool help = false;
    po::options_description desc("st-host bench generate --plugin NAME (options)");
    desc.add_options()("help", po::bool_switch(&help), "this text")(
        "preset", po::value(&preset)->default_value(preset),
        "make-model preset to benchmark (written to a temp dir)")(
        "model", po::value(&model_path), "benchmark this model folder instead of a preset")(
        "frames", po::value(&frames)->default_value(frames), "frames per video")(
        "resolution", po::value(&resolution)->default_value(resolution), "WxH")(
        "steps", po::value(&steps)->default_value(steps),
        "timed denoising steps per mode (after one warm-up)")(
        "mixed_precision", po::value(&mixed_precision)->default_value(mixed_precision), "bf16 | no");
    if (auto extra = parse_command_flags(desc, args, "bench-generate"); !extra.empty())
        fail("host.cli", "bench-generate", "unexpected argument '{}'", extra.front());
    if (help) {
        std::cout << "usage: " << command_usage("bench-generate") << "\n" << desc;
        return 0;
    }
    const auto& entry = model_component(ctx.plugins(), require_plugin(ctx, "bench generate"));
    const auto res = validate::parse_resolutions(resolution, "--resolution");
    fs::path tmp;
    if (model_path.empty()) {
        tmp = fs::temp_directory_path() / fmt::format("st-bench-generate-{}", ::getpid());
        ModelHandle(entry).make_model(preset, tmp, 0);
        model_path = tmp.string();
    }
    struct Cleanup {
        fs::path dir;
        ~Cleanup() {
            std::error_code ec;
            if (!dir.empty()) fs::remove_all(dir, ec);
        }
    } cleanup{tmp};
    OptionTable table = build_option_table(ctx.plugins());
    auto resolved = resolve_config(nlohmann::json::object(), {}, table);
    sdk::ConfigView config(std::make_shared<const nlohmann::json>(resolved.values));
    auto model =
        load_for_inference(entry, model_path, config, parse_precision(mixed_precision, "bench-generate"));
    at::NoGradGuard no_grad;
    validate::SampleRequest req;
    req.frames = frames;
    req.size = res.front();
    req.positive = model->encode_text({"a cat in the rain"});
    req.negative = model->encode_negative_text({"blurry"});
    auto per_step = [&](double guidance) {
        req.guidance = guidance;
        req.steps = 1;
        validate::sample_latents(*model, req);  // warm-up
        req.steps = steps;
        const auto t0 = Clock::now();
        at::Tensor lat = validate::sample_latents(*model, req);
        return std::make_pair(seconds_since(t0) / static_cast<double>(steps), lat);
    };
    const auto [no_cfg, latents] = per_step(1.0);
    const auto [cfg, unused] = per_step(5.0);
    model->decode_latents(latents);  // warm-up
    const auto t0 = Clock::now();
    const at::Tensor video = model->decode_latents(latents);
    const double decode = seconds_since(t0) / static_cast<double>(video.size(2));
    const SystemInfo sys = configure_threads_and_probe(0);  // what run_cli set up (idempotent)
    std::printf(
        "bench generate: plugin %s, model %s, %lld frames at %s, mixed_precision %s, %d core(s), %s %d "
        "thread(s)\n",
        entry.plugin_name.c_str(), tmp.empty() ? model_path.c_str() : ("preset " + preset).c_str(),
        static_cast<long long>(frames), res.front().str().c_str(), mixed_precision.c_str(), sys.cores,
        sys.blas_kind.c_str(), sys.blas_threads);
    std::printf("  denoising step, no CFG : %8.3f s\n", no_cfg);
    std::printf("  denoising step, CFG    : %8.3f s\n", cfg);
    std::printf("  VAE decode per frame   : %8.3f s\n", decode);
    return 0;
}

}  // namespace st::host
