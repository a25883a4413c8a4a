// st-host bench train --plugin NAME --preset tiny|small: the trainer's step time split into data,
// forward, backward, optimizer and host overhead, and the peak RSS, on a model made with the
// family's make-model preset and synthetic clips written with the FFmpeg libraries. Runs the real
// training path (config, data backend with caches, LoRA, optimizer, metrics) into a scratch folder.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands/commands.h"
#include "media/video_writer.h"
#include "plugins/model_handle.h"
#include "run/run_setup.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
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

}  // namespace

int cmd_bench_train(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string preset = "tiny", out, mixed = "no";
    int64_t steps = 20, warmup = 3, frames = 17, resolution = 128, batch = 1;
    po::options_description desc("bench train");
    desc.add_options()("preset", po::value(&preset)->default_value("tiny"), "make-model preset")(
        "steps", po::value(&steps)->default_value(20), "measured optimizer steps (after --warmup)")(
        "warmup", po::value(&warmup)->default_value(3), "steps left out of the statistics")(
        "frames", po::value(&frames)->default_value(17), "frames per clip (4k+1)")(
        "resolution", po::value(&resolution)->default_value(128), "square clip side in pixels")(
        "batch", po::value(&batch)->default_value(1), "train_batch_size")(
        "mixed_precision", po::value(&mixed)->default_value("no"), "bf16 or no")(
        "out", po::value(&out), "scratch folder (default: a temporary one, removed afterwards)");
    auto extra = parse_command_flags(desc, args, "bench train");
    if (ctx.flags.plugin.empty())
        fail("host.bench", "train", "usage: st-host bench train --plugin NAME [--preset P]");
    const ComponentEntry& entry = model_component(ctx.plugins(), ctx.flags.plugin);
    const bool keep = !out.empty();
    fs::path dir =
        keep ? fs::path(out) : fs::temp_directory_path() / fmt::format("st-bench-train-{}", ::getpid());
    fs::create_directories(dir / "clips");

    bool with_audio = false;  // families whose samples carry audio (speech-to-video) get clips with audio
    {
        ModelHandle model(entry);
        model.make_model(preset, dir / "model", 1);
        const auto media = model.sample_media();
        with_audio = std::find(media.begin(), media.end(), sdk::MediaKind::audio) != media.end();
    }
    const int64_t clips = std::max<int64_t>(4, 2 * batch);
    for (int64_t i = 0; i < clips; ++i) {
        // A tone per clip (16 kHz, the clip's length) when the family needs audio.
        const int64_t n = frames * 1000;
        media::AudioTrack tone{
            at::sin(at::arange(n, at::kFloat) * (0.05 + 0.01 * static_cast<double>(i))) * 0.3, 16000};
        media::write_mp4(dir / "clips" / fmt::format("clip{}.mp4", i),
                         synthetic_clip(frames, resolution, resolution, i), 16, with_audio ? &tone : nullptr);
        sdk::write_file_atomic(dir / "clips" / fmt::format("clip{}.txt", i),
                               fmt::format("pattern number {}", i));
    }
    nlohmann::json datasets =
        nlohmann::json::array({{{"id", "bench"},
                                {"type", "local"},
                                {"dataset_type", "video"},
                                {"instance_data_dir", "clips"},
                                {"caption_strategy", "textfile"},
                                {"resolution", resolution},
                                {"resolution_type", "pixel"},
                                {"crop", true},
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
                             {"pretrained_model_name_or_path", (dir / "model").string()},
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
    std::vector<std::string> run_args = {(dir / "config.json").string()};
    run_args.insert(run_args.end(), extra.begin(), extra.end());
    RunSetup setup = prepare_run(ctx, run_args);
    const int code = train::run_training(ctx, setup);
    if (code != 0) fail("host.bench", "train", "the training run failed (exit code {})", code);

    std::vector<double> data, fwd, bwd, opt, host, total;
    std::istringstream in(sdk::read_file(dir / "output" / "metrics.jsonl"));
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
        if (line.empty() || ++n <= warmup) continue;
        auto t = nlohmann::json::parse(line).at("time");
        data.push_back(t["data"]);
        fwd.push_back(t["forward"]);
        bwd.push_back(t["backward"]);
        opt.push_back(t["optimizer"]);
        host.push_back(t["host"]);
        total.push_back(t["total"]);
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    const double med_total = percentile(total, 0.5);
    auto row = [&](const char* name, const std::vector<double>& v) {
        const double med = percentile(v, 0.5);
        std::printf("  %-10s %9.4f s  %5.1f%%\n", name, med, med_total > 0 ? 100.0 * med / med_total : 0.0);
    };
    std::printf(
        "bench train --plugin %s --preset %s: %lld steps (after %lld warm-up), batch %lld, %lld frames "
        "%lldx%lld, %s\n",
        ctx.flags.plugin.c_str(), preset.c_str(), static_cast<long long>(total.size()),
        static_cast<long long>(warmup), static_cast<long long>(batch), static_cast<long long>(frames),
        static_cast<long long>(resolution), static_cast<long long>(resolution),
        mixed == "bf16" ? "bf16" : "fp32");
    std::printf("median per step:\n");
    row("data", data);
    row("forward", fwd);
    row("backward", bwd);
    row("optimizer", opt);
    row("host", host);
    row("total", total);
    const double outside = percentile(data, 0.5) + percentile(host, 0.5);
    std::printf("outside forward/backward/optimizer: %.2f%% of the step\n",
                med_total > 0 ? 100.0 * outside / med_total : 0.0);
    std::printf("peak RSS: %.1f MiB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
    if (!keep) {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    return 0;
}

}  // namespace st::host
