// `st-host bench --plugin wan_s2v`: what an S2V training step costs on this machine, with the audio
// features read from the cache (st's default) and encoded every step (SimpleTuner's S2V path), the
// audio encoder's speed per second of audio, and peak RSS. Random weights of a make-model preset.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>

#include "core/bench.h"
#include "core/transformer.h"
#include "s2v_family.h"
#include "st/error.h"
#include "st/routing.h"

namespace st::plugins::wan_s2v {

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

using st::plugins::wan::peak_rss_mib;
using st::plugins::wan::reset_peak_rss;

struct Args {
    std::string preset = "small";
    int steps = 3;
    int64_t frames = 17, width = 128, height = 128;
    double seconds = 10.0;
    bool large_audio = false;
    nlohmann::json tread;  ///< --tread_config: also measure the step with these routes
    bool json = false;     ///< --json: one JSON object on the last line
};

Args parse(const std::vector<std::string>& args) {
    Args a;
    const char* usage =
        "st-host bench --plugin wan_s2v [--preset tiny|small] [--steps N] [--frames 4k+1] [--resolution WxH] "
        "[--audio-seconds S] [--large-audio] [--tread_config JSON] [--json]";
    for (size_t i = 0; i < args.size(); ++i) {
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size())
                fail("bench.wan_s2v", "cli", "{} needs a value (usage: {})", args[i], usage);
            return args[++i];
        };
        const std::string k = args[i];
        if (k == "--preset" || k == "--presets") {
            a.preset = value();
        } else if (k == "--steps") {
            a.steps = std::stoi(value());
        } else if (k == "--frames") {
            a.frames = std::stoll(value());
        } else if (k == "--resolution") {
            const std::string v = value();
            const auto x = v.find('x');
            if (x == std::string::npos) fail("bench.wan_s2v", "cli", "--resolution expects WxH, got '{}'", v);
            a.width = std::stoll(v.substr(0, x));
            a.height = std::stoll(v.substr(x + 1));
        } else if (k == "--audio-seconds") {
            a.seconds = std::stod(value());
        } else if (k == "--large-audio") {
            a.large_audio = true;
        } else if (k == "--tread_config" || k == "--tread-config") {
            const std::string v = value();
            try {
                a.tread = nlohmann::json::parse(v);
            } catch (const std::exception& e) {
                fail("bench.wan_s2v", "cli", "--tread_config is not JSON: {}", e.what());
            }
            if (a.tread.is_array()) a.tread = nlohmann::json{{"routes", a.tread}};
        } else if (k == "--json") {
            a.json = true;
        } else {
            fail("bench.wan_s2v", "cli", "unknown argument '{}' (usage: {})", k, usage);
        }
    }
    if (a.steps < 1 || a.frames < 1 || (a.frames - 1) % 4 != 0 || a.width % 16 != 0 || a.height % 16 != 0)
        fail("bench.wan_s2v", "cli", "need steps >= 1, 4k+1 frames and sides that are multiples of 16");
    return a;
}

// Seconds of encoding per second of audio for one encoder, measured on `seconds` of noise.
double audio_rate(Wav2Vec2AudioEncoder& enc, double seconds) {
    auto gen = at::detail::createCPUGenerator(3);
    const at::Tensor wave = at::randn({static_cast<int64_t>(seconds * 16000)}, gen) * 0.1;
    const int64_t frames = 4 * static_cast<int64_t>(seconds * 16.0 / 4.0) + 1;
    enc.encode(wave.narrow(0, 0, 16000), 16.0, 17, 20);  // warm-up
    const double t0 = now_s();
    enc.encode(wave, 16.0, frames, audio_frames_for(frames));
    return (now_s() - t0) / seconds;
}

}  // namespace

int run_s2v_bench(const std::vector<std::string>& raw) {
    const Args a = parse(raw);
    const S2VPreset spec = s2v_preset(a.preset);
    WanS2VTransformer3DModel model(spec.transformer);
    st::plugins::wan::randomize_parameters(*model, 0);
    model->set_gradient_checkpointing(true);
    Wav2Vec2Model w2v(spec.audio);
    st::plugins::wan::randomize_parameters(*w2v, 1);
    Wav2Vec2AudioEncoder audio(w2v);
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();

    const int64_t t = 1 + (a.frames - 1) / 4, h = a.height / 8, w = a.width / 8;
    auto gen = at::detail::createCPUGenerator(1);
    const double clip_seconds = static_cast<double>(a.frames) / 16.0;
    const at::Tensor wave = at::randn({static_cast<int64_t>(clip_seconds * 16000)}, gen) * 0.1;
    WanS2VInputs in;
    in.hidden_states = at::randn({1, spec.transformer.in_channels, t, h, w}, gen);
    in.timestep = at::full({1}, 500.0);
    in.encoder_hidden_states = at::randn({1, 512, spec.transformer.text_dim}, gen);
    in.image_latents = at::randn({1, spec.transformer.in_channels, 1, h, w}, gen);
    in.audio_embeds = audio.encode(wave, 16.0, a.frames, audio_frames_for(a.frames)).unsqueeze(0);

    auto step = [&](bool encode_audio, bool backward = true) {
        if (encode_audio)
            in.audio_embeds = audio.encode(wave, 16.0, a.frames, audio_frames_for(a.frames)).unsqueeze(0);
        const at::Tensor y = model->forward(in);
        if (backward) torch::autograd::backward({y.to(at::kFloat).square().mean()});
        model->zero_grad();
    };
    // The training forward alone, then forward + backward, audio features from the cache.
    auto measure = [&]() {
        nlohmann::json m;
        step(false);  // warm-up
        double t0 = now_s();
        for (int i = 0; i < a.steps; ++i) step(false, false);
        m["fwd_s"] = (now_s() - t0) / a.steps;
        reset_peak_rss();
        t0 = now_s();
        for (int i = 0; i < a.steps; ++i) step(false);
        m["fwd_bwd_s"] = (now_s() - t0) / a.steps;
        m["peak_rss_mib"] = peak_rss_mib();
        return m;
    };
    const nlohmann::json plain = measure();
    const double cached = plain["fwd_bwd_s"].get<double>();
    const double rss_cached = plain["peak_rss_mib"].get<double>();
    nlohmann::json routed;
    if (!a.tread.is_null()) {
        in.routes = st::sdk::parse_tread_config(a.tread, spec.transformer.num_layers, "--tread_config");
        in.generator = at::detail::createCPUGenerator(7);
        routed = measure();
        in.routes.clear();
    }
    reset_peak_rss();
    const double t0 = now_s();
    for (int i = 0; i < a.steps; ++i) step(true);
    const double uncached = (now_s() - t0) / a.steps;
    const double rss_uncached = peak_rss_mib();
    const double per_second = audio_rate(audio, a.seconds);

    std::printf(
        "wan_s2v bench: preset %s (%s, %.1f M params), %lld frames %lldx%lld (latent %lldx%lldx%lld), "
        "%d steps, fp32, gradient checkpointing\n",
        a.preset.c_str(), describe(spec.transformer).c_str(), static_cast<double>(params) / 1e6,
        static_cast<long long>(a.frames), static_cast<long long>(a.width), static_cast<long long>(a.height),
        static_cast<long long>(t), static_cast<long long>(h), static_cast<long long>(w), a.steps);
    std::printf("%-34s %10s %12s\n", "training step (forward + backward)", "s/step", "peak RSS MiB");
    std::printf("%-34s %10.3f %12.0f\n", "audio features from the cache", cached, rss_cached);
    std::printf("%-34s %10.3f %12.0f\n", "audio encoded every step", uncached, rss_uncached);
    std::printf("audio encoder (%s, %lld x %lld layers): %.4f s per second of audio (%.0f s of audio)\n",
                a.preset.c_str(), static_cast<long long>(spec.audio.hidden_size),
                static_cast<long long>(spec.audio.num_hidden_layers), per_second, a.seconds);
    if (!routed.is_null())
        std::printf("%-34s %10.3f %12.0f  (%.2fx faster fwd+bwd; forward %.3f s vs %.3f s)\n",
                    "TREAD, audio from the cache", routed["fwd_bwd_s"].get<double>(),
                    routed["peak_rss_mib"].get<double>(), cached / routed["fwd_bwd_s"].get<double>(),
                    routed["fwd_s"].get<double>(), plain["fwd_s"].get<double>());
    if (a.large_audio) {
        Wav2Vec2Model large(Wav2Vec2Config::large_xlsr());
        st::plugins::wan::randomize_parameters(*large, 2);
        Wav2Vec2AudioEncoder enc(large);
        std::printf(
            "audio encoder (wav2vec2-large-xlsr-53 size, random weights): %.4f s per second of audio\n",
            audio_rate(enc, a.seconds));
    }
    if (a.json) {
        nlohmann::json row = plain;
        row["preset"] = a.preset;
        row["params"] = params;
        row["audio_encoded_every_step_fwd_bwd_s"] = uncached;
        row["audio_encoder_s_per_audio_s"] = per_second;
        if (!routed.is_null()) {
            row["tread"] = routed;
            row["tread_fwd_bwd_speedup"] = cached / routed["fwd_bwd_s"].get<double>();
        }
        const nlohmann::json j = {
            {"bench", "wan_s2v"}, {"frames", a.frames},      {"resolution", {a.width, a.height}},
            {"steps", a.steps},   {"tread_config", a.tread}, {"presets", nlohmann::json::array({row})}};
        std::printf("%s\n", j.dump().c_str());
    }
    return 0;
}

}  // namespace st::plugins::wan_s2v
