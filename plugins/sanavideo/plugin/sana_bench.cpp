// `st-host bench --plugin sanavideo`: transformer forward (no grad) and training forward / forward +
// backward (gradient checkpointing, as training runs) time and peak RSS per preset, with the
// pipeline's 300 caption tokens (a third of them padding, masked as in real batches).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "core/sana_transformer.h"
#include "sana_family.h"
#include "st/error.h"
#include "st/kit/bench_util.h"
#include "st/kit/diffusers_model.h"

namespace st::plugins::sanavideo {

namespace {

struct Row {
    std::string preset;
    int64_t params = 0, tokens = 0;
    double fwd_s = 0, rss_fwd = 0, train_fwd_s = 0, fwd_bwd_s = 0, rss_train = 0;
};

Row bench_preset(const std::string& preset, int64_t f, int64_t h, int64_t w, int64_t text_len, int steps) {
    using st::kit::now_s;
    Row r;
    r.preset = preset;
    const auto cfg = SanaVideoTransformerConfig::preset(preset);
    SanaVideoTransformer3DModel model(cfg);
    st::kit::randomize_parameters(*model, 0);
    for (const auto& p : model->parameters()) r.params += p.numel();
    auto gen = at::detail::createCPUGenerator(1);
    SanaTransformerInputs in;
    in.hidden_states = at::randn({1, cfg.in_channels, f, h, w}, gen);
    in.timestep = at::full({1}, 500.0);
    in.encoder_hidden_states = at::randn({1, text_len, cfg.caption_channels}, gen);
    in.encoder_attention_mask = at::zeros({1, text_len});
    in.encoder_attention_mask.narrow(1, 0, std::max<int64_t>(1, 2 * text_len / 3)).fill_(1.0);
    r.tokens = (f / cfg.patch_size[0]) * (h / cfg.patch_size[1]) * (w / cfg.patch_size[2]);
    {
        at::NoGradGuard no_grad;
        model->eval();
        model->forward(in);  // warm-up
        st::kit::reset_peak_rss();
        const double t0 = now_s();
        for (int i = 0; i < steps; ++i) model->forward(in);
        r.fwd_s = (now_s() - t0) / steps;
        r.rss_fwd = st::kit::peak_rss_mib();
    }
    model->train(true);
    model->set_gradient_checkpointing(true);
    auto pass = [&](bool backward) {
        const at::Tensor y = model->forward(in);
        if (backward) torch::autograd::backward({y.to(at::kFloat).square().mean()});
        model->zero_grad();
    };
    pass(true);  // warm-up
    double t0 = now_s();
    for (int i = 0; i < steps; ++i) pass(false);
    r.train_fwd_s = (now_s() - t0) / steps;
    st::kit::reset_peak_rss();
    t0 = now_s();
    for (int i = 0; i < steps; ++i) pass(true);
    r.fwd_bwd_s = (now_s() - t0) / steps;
    r.rss_train = st::kit::peak_rss_mib();
    return r;
}

}  // namespace

int run_sana_bench(const std::vector<std::string>& args) {
    std::vector<std::string> presets = {"tiny", "small"};
    int64_t f = 5, h = 30, w = 52, text_len = 300;
    int steps = 3;
    bool json_out = false;
    const char* usage =
        "st-host bench --plugin sanavideo [--presets tiny,small,2b-480p] [--latent FxHxW] [--text-len N] "
        "[--steps N] [--json]";
    for (size_t i = 0; i < args.size(); ++i) {
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) fail("bench.sanavideo", "cli", "{} needs a value ({})", args[i], usage);
            return args[++i];
        };
        const std::string a = args[i];
        if (a == "--presets") {
            presets = st::kit::split_list(value(), ',');
        } else if (a == "--latent") {
            const auto parts = st::kit::split_list(value(), 'x');
            if (parts.size() != 3) fail("bench.sanavideo", "cli", "--latent expects FxHxW, e.g. 5x30x52");
            f = std::stoll(parts[0]), h = std::stoll(parts[1]), w = std::stoll(parts[2]);
        } else if (a == "--text-len") {
            text_len = std::stoll(value());
        } else if (a == "--steps") {
            steps = std::stoi(value());
        } else if (a == "--json") {
            json_out = true;
        } else {
            fail("bench.sanavideo", "cli", "unknown argument '{}' (usage: {})", a, usage);
        }
    }
    if (steps < 1 || text_len < 1) fail("bench.sanavideo", "cli", "--steps and --text-len must be >= 1");
    std::printf(
        "## Sana Video transformer (latent %lldx%lldx%lld, text %lld tokens, %d timed steps, training passes "
        "with gradient checkpointing, %d threads)\n\n",
        (long long)f, (long long)h, (long long)w, (long long)text_len, steps, at::get_num_threads());
    std::printf(
        "| preset | params | video tokens | inference forward s | peak RSS MiB | training forward s | "
        "fwd+bwd s "
        "| fwd+bwd peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& p : presets) {
        const Row r = bench_preset(p, f, h, w, text_len, steps);
        std::printf("| %s | %.1fM | %lld | %.3f | %.0f | %.3f | %.3f | %.0f |\n", r.preset.c_str(),
                    r.params / 1e6, (long long)r.tokens, r.fwd_s, r.rss_fwd, r.train_fwd_s, r.fwd_bwd_s,
                    r.rss_train);
        std::fflush(stdout);
        rows.push_back({{"preset", r.preset},
                        {"params", r.params},
                        {"video_tokens", r.tokens},
                        {"inference_fwd_s", r.fwd_s},
                        {"inference_peak_rss_mib", r.rss_fwd},
                        {"fwd_s", r.train_fwd_s},
                        {"fwd_bwd_s", r.fwd_bwd_s},
                        {"peak_rss_mib", r.rss_train}});
    }
    if (json_out) {
        const nlohmann::json j = {{"bench", "sanavideo"},
                                  {"latent", {f, h, w}},
                                  {"text_len", text_len},
                                  {"steps", steps},
                                  {"presets", rows}};
        std::printf("%s\n", j.dump().c_str());
    }
    return 0;
}

}  // namespace st::plugins::sanavideo
