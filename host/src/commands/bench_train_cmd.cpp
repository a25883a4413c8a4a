// st-host bench train --plugin NAME --preset tiny|small: the trainer's step time split into data,
// forward, backward, optimizer and host overhead, and the peak RSS, on a model made with the
// family's make-model preset and synthetic clips written with the FFmpeg libraries. Runs the real
// training path (config, data backend with caches, LoRA, optimizer, metrics) into a scratch folder.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "commands/commands.h"
#include "dist/launcher.h"
#include "media/video_writer.h"
#include "plugins/guard.h"
#include "plugins/model_handle.h"
#include "run/run_setup.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "system_info.h"
#include "train/regularizers.h"
#include "train/trainer.h"
#include "validate/validator.h"

namespace st::host {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

// A moving colour pattern, different per clip: [F, H, W, 3] uint8.
at::Tensor synthetic_clip(int64_t frames, int64_t h, int64_t w, int64_t index) {
    auto t = at::arange(frames, at::kFloat).view({frames, 1, 1, 1});
    auto y = at::linspace(0, 1, h).view({1, h, 1, 1});
    auto x = at::linspace(0, 1, w).view({1, 1, w, 1});
    auto c = at::tensor({1.0f, 2.0f, 3.0f}).view({1, 1, 1, 3});
    auto v = at::sin(6.28f * (x * (1 + index % 3) + y * (1 + index % 2) + t * 0.05f * (index + 1)) * c);
    return ((v * 0.5f + 0.5f) * 255.0f).round().clamp(0, 255).to(at::kByte).contiguous();
}

double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

struct StepTimes {
    std::vector<double> data, forward, backward, optimizer, host, total, allreduce;
};

StepTimes read_step_times(const fs::path& metrics, int64_t warmup) {
    StepTimes s;
    std::istringstream in(sdk::read_file(metrics));
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line);
        if (!j.contains("time") || ++n <= warmup) continue;
        const auto& t = j.at("time");
        s.data.push_back(t["data"]);
        s.forward.push_back(t["forward"]);
        s.backward.push_back(t["backward"]);
        s.optimizer.push_back(t["optimizer"]);
        s.host.push_back(t["host"]);
        s.total.push_back(t["total"]);
        s.allreduce.push_back(t.value("allreduce", 0.0));
    }
    return s;
}

nlohmann::json medians(const StepTimes& t) {
    return {{"data", percentile(t.data, 0.5)},         {"forward", percentile(t.forward, 0.5)},
            {"backward", percentile(t.backward, 0.5)}, {"optimizer", percentile(t.optimizer, 0.5)},
            {"host", percentile(t.host, 0.5)},         {"total", percentile(t.total, 0.5)}};
}

void print_times(const StepTimes& t, const std::string& label) {
    const double med_total = percentile(t.total, 0.5);
    auto row = [&](const char* name, const std::vector<double>& v) {
        const double med = percentile(v, 0.5);
        std::printf("  %-10s %9.4f s  %5.1f%%\n", name, med, med_total > 0 ? 100.0 * med / med_total : 0.0);
    };
    std::printf("median per step%s:\n", label.c_str());
    row("data", t.data);
    row("forward", t.forward);
    row("backward", t.backward);
    row("optimizer", t.optimizer);
    row("host", t.host);
    row("total", t.total);
    const double outside = percentile(t.data, 0.5) + percentile(t.host, 0.5);
    std::printf("outside forward/backward/optimizer: %.2f%% of the step\n",
                med_total > 0 ? 100.0 * outside / med_total : 0.0);
}

/// Seconds to decode one cached batch of latents with the model's VAE and run every enabled
/// regularizer's feature encoder on the pixels (nullopt when none caches features).
std::optional<double> teacher_path_seconds(CommandContext& ctx, const ComponentEntry& entry,
                                           const fs::path& dir, const std::vector<std::string>& run_args,
                                           int64_t batch, int64_t frames, int64_t resolution) {
    RunSetup setup = prepare_run(ctx, run_args);
    ModelHandle model(entry);
    sdk::ModelLoadRequest req;
    req.path = setup.config.get_string("pretrained_model_name_or_path");
    req.config = setup.config;
    req.training = false;
    model.load(req);
    const auto regs = train::build_regularizers(ctx.plugins(), setup.config, model, at::kCPU, 1);
    const auto features = train::sample_features(regs);
    if (features.empty()) return std::nullopt;
    // The latents of one synthetic clip, as the cache holds them (encoded by the model's VAE).
    at::NoGradGuard no_grad;
    const at::Tensor clip = synthetic_clip(frames, resolution, resolution, 0);
    const at::Tensor pixels_in = clip.permute({3, 0, 1, 2}).to(at::kFloat).div(127.5).sub(1.0).unsqueeze(0);
    const at::Tensor one =
        call_plugin(entry, "encode_video", [&] { return model.family().encode_video(pixels_in); })
            .at("latents")
            .to(at::kFloat);
    const at::Tensor latents = one.expand({batch, -1, -1, -1, -1}).contiguous();
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor pixels = model.decode_latents(latents);
    for (const auto& f : features) f->encode(pixels, {{"latents", latents}});
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int cmd_bench_train(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string preset = "tiny", out, mixed = "no", model_path;
    int64_t steps = 20, warmup = 3, frames = 17, resolution = 128, width = 0, batch = 1;
    bool json = false;
    po::options_description desc("bench train");
    desc.add_options()("preset", po::value(&preset)->default_value("tiny"), "make-model preset")(
        "steps", po::value(&steps)->default_value(20), "measured optimizer steps (after --warmup)")(
        "warmup", po::value(&warmup)->default_value(3), "steps left out of the statistics")(
        "frames", po::value(&frames)->default_value(17), "frames per clip (4k+1)")(
        "resolution", po::value(&resolution)->default_value(128),
        "clip height in pixels (and width unless --width)")("width", po::value(&width)->default_value(0),
                                                            "clip width in pixels (0: square clips)")(
        "batch", po::value(&batch)->default_value(1), "train_batch_size")(
        "mixed_precision", po::value(&mixed)->default_value("no"), "bf16 or no")(
        "out", po::value(&out),
        "scratch folder (default: a temporary one, removed afterwards); an existing one is reused with its "
        "clips and caches (same --frames / --resolution)")(
        "model", po::value(&model_path),
        "an existing model folder to train instead of making one with --preset (large presets: make it "
        "once with st-host make-model)")("json", po::bool_switch(&json),
                                         "also print the numbers as one JSON line");
    auto extra = parse_command_flags(desc, args, "bench train");
    // --nproc_per_node N (a global flag, passed on as an override): also measure N launched ranks.
    int64_t nproc = 1;
    for (size_t i = 0; i + 1 < extra.size(); ++i)
        if (extra[i] == "--nproc_per_node") {
            nproc = std::stoll(extra[i + 1]);
            extra.erase(extra.begin() + static_cast<std::ptrdiff_t>(i),
                        extra.begin() + static_cast<std::ptrdiff_t>(i) + 2);
            break;
        }
    if (ctx.flags.plugin.empty())
        fail("host.bench", "train", "usage: st-host bench train --plugin NAME [--preset P]");
    if (width <= 0) width = resolution;
    const ComponentEntry& entry = model_component(ctx.plugins(), ctx.flags.plugin);
    const bool keep = !out.empty();
    fs::path dir =
        keep ? fs::path(out) : fs::temp_directory_path() / fmt::format("st-bench-train-{}", ::getpid());
    fs::create_directories(dir / "clips");

    bool with_audio = false;  // families whose samples carry audio (speech-to-video) get clips with audio
    const fs::path model_dir = model_path.empty() ? dir / "model" : fs::path(model_path);
    {
        ModelHandle model(entry);
        if (model_path.empty()) model.make_model(preset, model_dir, 1);
        const auto media = model.sample_media();
        with_audio = std::find(media.begin(), media.end(), sdk::MediaKind::audio) != media.end();
    }
    const int64_t clips = std::max<int64_t>(4, 2 * batch * nproc);
    for (int64_t i = 0; i < clips; ++i) {
        // A kept --out folder is reused as it is: its clips (and so its caches) stay valid.
        if (keep && fs::exists(dir / "clips" / fmt::format("clip{}.mp4", i)) &&
            fs::exists(dir / "clips" / fmt::format("clip{}.txt", i)))
            continue;
        // A tone per clip (16 kHz, the clip's length) when the family needs audio.
        const int64_t n = frames * 1000;
        media::AudioTrack tone{
            at::sin(at::arange(n, at::kFloat) * (0.05 + 0.01 * static_cast<double>(i))) * 0.3, 16000};
        media::write_mp4(dir / "clips" / fmt::format("clip{}.mp4", i),
                         synthetic_clip(frames, resolution, width, i), 16, with_audio ? &tone : nullptr);
        sdk::write_file_atomic(dir / "clips" / fmt::format("clip{}.txt", i),
                               fmt::format("pattern number {}", i));
    }
    nlohmann::json datasets =
        nlohmann::json::array({{{"id", "bench"},
                                {"type", "local"},
                                {"dataset_type", "video"},
                                {"instance_data_dir", "clips"},
                                {"caption_strategy", "textfile"},
                                // pixel resolution = the shorter side: a WxH clip keeps its size
                                {"resolution", std::min(resolution, width)},
                                {"resolution_type", "pixel"},
                                {"crop", width == resolution},
                                {"crop_aspect", "square"},
                                {"video", {{"num_frames", frames}, {"min_frames", frames}}},
                                {"cache_dir_vae", "cache/vae"}},
                               {{"id", "text"},
                                {"type", "local"},
                                {"dataset_type", "text_embeds"},
                                {"default", true},
                                {"cache_dir", "cache/text"}}});
    sdk::write_file_atomic(dir / "multidatabackend.json", datasets.dump(2));
    nlohmann::json config = {{"model_family", entry.name},
                             {"pretrained_model_name_or_path", model_dir.string()},
                             {"data_backend_config", (dir / "multidatabackend.json").string()},
                             {"output_dir", (dir / "output").string()},
                             {"model_type", "lora"},
                             {"lora_rank", 16},
                             {"train_batch_size", batch},
                             {"max_train_steps", steps + warmup},
                             {"learning_rate", 1e-4},
                             {"optimizer", "adamw"},
                             {"lr_scheduler", "constant"},
                             {"mixed_precision", mixed},
                             {"checkpoint_step_interval", 1000000},
                             {"resume_from_checkpoint", "none"},
                             {"seed", 1}};
    sdk::write_file_atomic(dir / "config.json", config.dump(2));

    // Regularizers enabled by the overrides (e.g. --crepa_enabled true) are measured against a run
    // without them, in this process, on the same caches: the overhead is their share of the step.
    std::vector<std::string> run_args = {(dir / "config.json").string()};
    run_args.insert(run_args.end(), extra.begin(), extra.end());
    std::vector<std::string> enabled;
    {
        RunSetup probe = prepare_run(ctx, run_args);
        for (const auto* e : ctx.plugins().of_kind("reg")) {
            const std::string key = e->name + "_enabled";
            if (probe.config.has(key) && probe.config.get_bool(key)) enabled.push_back(key);
        }
    }
    auto measure = [&](const std::string& output, bool without) {
        std::vector<std::string> a = run_args;
        a.insert(a.end(), {"--output_dir", (dir / output).string()});
        if (without)
            for (const auto& k : enabled) a.insert(a.end(), {"--" + k, "false"});
        RunSetup setup = prepare_run(ctx, a);
        const int code = train::run_training(ctx, setup);
        if (code != 0) fail("host.bench", "train", "the training run failed (exit code {})", code);
        return read_step_times(dir / output / "metrics.jsonl", warmup);
    };
    std::optional<StepTimes> base;
    if (!enabled.empty()) base = measure("output-without", true);
    const StepTimes t = measure("output", false);

    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    const double med_total = percentile(t.total, 0.5);
    std::printf(
        "bench train --plugin %s --preset %s: %lld steps (after %lld warm-up), batch %lld, %lld frames "
        "%lldx%lld, %s\n",
        ctx.flags.plugin.c_str(), preset.c_str(), static_cast<long long>(t.total.size()),
        static_cast<long long>(warmup), static_cast<long long>(batch), static_cast<long long>(frames),
        static_cast<long long>(width), static_cast<long long>(resolution), mixed == "bf16" ? "bf16" : "fp32");
    print_times(t, base ? " (with " + fmt::format("{}", fmt::join(enabled, ", ")) + ")" : std::string());
    nlohmann::json report = {{"plugin", ctx.flags.plugin},
                             {"preset", preset},
                             {"steps", t.total.size()},
                             {"batch", batch},
                             {"frames", frames},
                             {"resolution", resolution},
                             {"width", width},
                             {"median", medians(t)}};
    if (base) {
        print_times(*base, " (without)");
        const double b = percentile(base->total, 0.5);
        const double overhead = b > 0 ? 100.0 * (med_total - b) / b : 0.0;
        std::printf("regularizer overhead: %+.1f%% of the step (%.4f s -> %.4f s)\n", overhead, b, med_total);
        report["without"] = medians(*base);
        report["regularizers"] = enabled;
        report["overhead_percent"] = overhead;
        // What recomputing the teacher's inputs every step would cost (SimpleTuner decodes the clean
        // latents with the VAE and runs the teacher on every step): timed on one cached batch.
        if (auto per_step = teacher_path_seconds(ctx, entry, dir, run_args, batch, frames, resolution)) {
            std::printf(
                "decode + teacher every step instead (SimpleTuner's path): %.4f s = %+.1f%% of the step\n",
                *per_step, b > 0 ? 100.0 * *per_step / b : 0.0);
            report["decode_and_teacher_per_step"] = *per_step;
        }
    }
    if (nproc > 1) {
        // The same run as N ranks (st-host --nproc_per_node N in a child process), each with batch
        // `batch`: a global batch of N x batch per step.
        std::vector<std::string> a;
        if (ctx.flags.no_install_plugins) a.push_back("--no-install-plugins");
        for (const auto& d : ctx.flags.plugin_dirs) a.insert(a.end(), {"--plugin-dir", d});
        a.insert(a.end(), {"--plugin", ctx.flags.plugin});
        a.insert(a.end(), run_args.begin(), run_args.end());
        a.insert(a.end(), {"--output_dir", (dir / "output-ranks").string(), "--nproc_per_node",
                           std::to_string(nproc), "--log_level", "warning"});
        if (const int code = dist::run_self(a); code != 0)
            fail("host.bench", "train", "the {}-rank run failed (exit code {})", nproc, code);
        const StepTimes d = read_step_times(dir / "output-ranks" / "metrics.jsonl", warmup);
        print_times(d, fmt::format(" with {} ranks (batch {} each, global {})", nproc, batch, nproc * batch));
        const double one = percentile(t.total, 0.5), many = percentile(d.total, 0.5);
        const double wait = percentile(d.allreduce, 0.5);
        std::printf("  all-reduce wait %.4f s per step (%.1f%% of the step; the rest overlapped backward)\n",
                    wait, many > 0 ? 100.0 * wait / many : 0.0);
        const double sps_one = one > 0 ? static_cast<double>(batch) / one : 0.0;
        const double sps_many = many > 0 ? static_cast<double>(nproc * batch) / many : 0.0;
        std::printf("samples/s: 1 rank %.3f, %lld ranks %.3f (x%.2f)\n", sps_one,
                    static_cast<long long>(nproc), sps_many, sps_one > 0 ? sps_many / sps_one : 0.0);
        nlohmann::json r = medians(d);
        r["allreduce"] = wait;
        report["ranks"] = {{"nproc_per_node", nproc},
                           {"median", r},
                           {"samples_per_s", sps_many},
                           {"samples_per_s_one_rank", sps_one},
                           {"speedup", sps_one > 0 ? sps_many / sps_one : 0.0}};
    }
    std::printf("peak RSS: %.1f MiB (training steps only: %.1f MiB)\n",
                static_cast<double>(ru.ru_maxrss) / 1024.0, rss_peak_mib());
    report["peak_rss_mib"] = static_cast<double>(ru.ru_maxrss) / 1024.0;
    // The trainer starts a new peak once loading and caching are done (encoders released).
    report["training_peak_rss_mib"] = rss_peak_mib();
    if (json) std::printf("%s\n", report.dump().c_str());
    if (!keep) {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    return 0;
}

}  // namespace st::host
