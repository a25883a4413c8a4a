#include "bench.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <nlohmann/json.hpp>

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "config.h"
#include "st/attention.h"
#include "st/error.h"
#include "st/kit/bench_util.h"
#include "st/routing.h"
#include "transformer.h"

namespace st::plugins::wan {
namespace {

using st::kit::now_s;
std::vector<std::string> split(const std::string& s, char sep) {
    return st::kit::split_list(s, sep);
}

// One training-pass measurement: the forward with grad (routes apply), forward + backward with
// gradient checkpointing, peak RSS of the latter.
struct Pass {
    double fwd_s = 0, fwd_bwd_s = 0, rss = 0;
};

struct Row {
    std::string preset;
    int64_t params = 0;
    int64_t tokens = 0;
    double fwd_s = 0, rss_fwd = 0;  // inference forward (no grad)
    Pass train, tread;              // tread: only with --tread_config
};

Pass measure_training(WanTransformer3DModel& model, WanTransformerInputs& in, int steps) {
    Pass p;
    auto pass = [&](bool backward) {
        const at::Tensor y = model->forward(in);
        if (backward) torch::autograd::backward({y.to(at::kFloat).square().mean()});
        model->zero_grad();
    };
    pass(true);  // warm-up
    double t0 = now_s();
    for (int i = 0; i < steps; ++i) pass(false);
    p.fwd_s = (now_s() - t0) / steps;
    reset_peak_rss();
    t0 = now_s();
    for (int i = 0; i < steps; ++i) pass(true);
    p.fwd_bwd_s = (now_s() - t0) / steps;
    p.rss = peak_rss_mib();
    return p;
}

Row bench_transformer(const std::string& preset, int64_t f, int64_t h, int64_t w, int64_t text_len, int steps,
                      const nlohmann::json& tread) {
    Row r;
    r.preset = preset;
    auto cfg = WanTransformerConfig::preset(preset);
    WanTransformer3DModel model(cfg);
    randomize_parameters(*model, 0);
    for (const auto& p : model->parameters()) r.params += p.numel();
    auto gen = at::detail::createCPUGenerator(1);
    WanTransformerInputs in;
    in.hidden_states = at::randn({1, cfg.in_channels, f, h, w}, gen);
    in.timestep = at::full({1}, 500.0);
    in.encoder_hidden_states = at::randn({1, text_len, cfg.text_dim}, gen);
    r.tokens = f * (h / 2) * (w / 2);
    {
        at::NoGradGuard no_grad;
        model->forward(in);  // warm-up
        reset_peak_rss();
        double t0 = now_s();
        for (int i = 0; i < steps; ++i) model->forward(in);
        r.fwd_s = (now_s() - t0) / steps;
        r.rss_fwd = peak_rss_mib();
    }
    model->train(true);
    model->set_gradient_checkpointing(true);
    r.train = measure_training(model, in, steps);
    if (!tread.is_null()) {
        in.routes = st::sdk::parse_tread_config(tread, cfg.num_layers, "--tread_config");
        in.generator = at::detail::createCPUGenerator(7);
        r.tread = measure_training(model, in, steps);
    }
    return r;
}

nlohmann::json pass_json(const Pass& p) {
    return {{"fwd_s", p.fwd_s}, {"fwd_bwd_s", p.fwd_bwd_s}, {"peak_rss_mib", p.rss}};
}

}  // namespace

int run_wan_bench(const std::vector<std::string>& args) {
    std::vector<std::string> presets = {"tiny", "small"};
    int64_t f = 2, h = 16, w = 16, text_len = 512;
    int steps = 3, heads = 2;
    nlohmann::json tread;
    bool json_out = false;
    std::vector<int64_t> attention_tokens = {8192, 32768};
    for (size_t i = 0; i < args.size(); ++i) {
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) throw Error("bench.wan", "cli", args[i] + " needs a value");
            return args[++i];
        };
        const std::string a = args[i];
        if (a == "--presets")
            presets = split(value(), ',');
        else if (a == "--latent") {
            auto parts = split(value(), 'x');
            if (parts.size() != 3) throw Error("bench.wan", "cli", "--latent expects FxHxW, e.g. 2x16x16");
            f = std::stoll(parts[0]), h = std::stoll(parts[1]), w = std::stoll(parts[2]);
        } else if (a == "--text-len")
            text_len = std::stoll(value());
        else if (a == "--steps")
            steps = std::stoi(value());
        else if (a == "--attention-heads")
            heads = std::stoi(value());
        else if (a == "--tread_config" || a == "--tread-config") {
            const std::string v = value();
            try {
                tread = nlohmann::json::parse(v);
            } catch (const std::exception& e) {
                throw Error("bench.wan", "cli", "--tread_config is not JSON: " + std::string(e.what()));
            }
            if (tread.is_array()) tread = nlohmann::json{{"routes", tread}};  // the routes list alone
        } else if (a == "--json")
            json_out = true;
        else if (a == "--attention-tokens") {
            attention_tokens.clear();
            for (const auto& t : split(value(), ',')) attention_tokens.push_back(std::stoll(t));
        } else
            throw Error("bench.wan", "cli",
                        "unknown argument '" + a +
                            "' (usage: st-host bench wan [--presets tiny,small,1.3b] "
                            "[--latent FxHxW] [--text-len N] [--steps N] [--attention-tokens 8192,32768] "
                            "[--attention-heads H] [--tread_config JSON] [--json])");
    }
    std::printf(
        "## Wan transformer (latent %lldx%lldx%lld, text %lld tokens, %d timed steps, training passes with "
        "gradient checkpointing, %d threads)\n\n",
        (long long)f, (long long)h, (long long)w, (long long)text_len, steps, at::get_num_threads());
    if (!tread.is_null()) std::printf("TREAD: %s\n\n", tread.dump().c_str());
    std::printf(
        "| preset | params | video tokens | inference forward s | peak RSS MiB | training forward s | "
        "fwd+bwd s | "
        "fwd+bwd peak RSS MiB |%s\n",
        tread.is_null() ? ""
                        : " TREAD forward s | TREAD fwd+bwd s | TREAD peak RSS MiB | fwd+bwd speed-up |");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|%s\n",
                tread.is_null() ? "" : "---:|---:|---:|---:|");
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& p : presets) {
        auto r = bench_transformer(p, f, h, w, text_len, steps, tread);
        std::printf("| %s | %.1fM | %lld | %.3f | %.0f | %.3f | %.3f | %.0f |", r.preset.c_str(),
                    r.params / 1e6, (long long)r.tokens, r.fwd_s, r.rss_fwd, r.train.fwd_s, r.train.fwd_bwd_s,
                    r.train.rss);
        nlohmann::json row = pass_json(r.train);
        row["preset"] = r.preset;
        row["params"] = r.params;
        row["video_tokens"] = r.tokens;
        row["inference_fwd_s"] = r.fwd_s;
        if (!tread.is_null()) {
            const double speedup = r.train.fwd_bwd_s / r.tread.fwd_bwd_s;
            std::printf(" %.3f | %.3f | %.0f | %.2fx |", r.tread.fwd_s, r.tread.fwd_bwd_s, r.tread.rss,
                        speedup);
            row["tread"] = pass_json(r.tread);
            row["tread_fwd_bwd_speedup"] = speedup;
        }
        std::printf("\n");
        std::fflush(stdout);
        rows.push_back(std::move(row));
    }
    if (json_out) {
        // One JSON object on the last line (scripts read that line); the attention table is skipped.
        const nlohmann::json j = {{"bench", "wan"}, {"latent", {f, h, w}},   {"text_len", text_len},
                                  {"steps", steps}, {"tread_config", tread}, {"presets", rows}};
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("\n## Attention (st::sdk::attention, %s; B=1, H=%d, D=128, forward+backward)\n\n",
                st::sdk::attention_backend(), heads);
    std::printf(
        "| tokens | peak RSS increase MiB | full score matrix would be MiB | s |\n|---:|---:|---:|---:|\n");
    for (int64_t L : attention_tokens) {
        auto gen = at::detail::createCPUGenerator(2);
        auto q = at::randn({1, heads, L, 128}, gen).requires_grad_(true);
        auto k = at::randn({1, heads, L, 128}, gen).requires_grad_(true);
        auto v = at::randn({1, heads, L, 128}, gen).requires_grad_(true);
        reset_peak_rss();
        double base = peak_rss_mib();
        double t0 = now_s();
        auto o = st::sdk::attention(q, k, v);
        torch::autograd::backward({o.sum()});
        double secs = now_s() - t0;
        double peak = peak_rss_mib() - base;
        double full = static_cast<double>(heads) * L * L * 4 / (1024.0 * 1024.0);
        std::printf("| %lld | %.0f | %.0f | %.2f |\n", (long long)L, peak, full, secs);
        std::fflush(stdout);
    }
    return 0;
}

}  // namespace st::plugins::wan
