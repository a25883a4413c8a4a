// sample_latents / sample_video: the denoising loop shared by validation and st-host generate.
// Follows diffusers pipelines/wan/pipeline_wan.py WanPipeline.__call__ (prepare_latents, the loop with
// guidance, decode) with the SDK samplers in place of the diffusers schedulers.
#include "validate/sampling.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "st/error.h"
#include "st/log.h"

namespace st::host::validate {

namespace {

constexpr const char* kLog = "host.validate";

int64_t parse_positive(const std::string& text, const std::string& key, const std::string& entry) {
    size_t used = 0;
    int64_t v = 0;
    try {
        v = std::stoll(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || v <= 0)
        fail(kLog, "config", "{}: '{}' is not WxH or a single edge in pixels (e.g. 832x480 or 480)", key,
             entry);
    return v;
}

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

sdk::TensorMap merged(const sdk::TensorMap& a, const sdk::TensorMap& b) {
    sdk::TensorMap m = a;
    for (const auto& [k, v] : b) m[k] = v;
    return m;
}

}  // namespace

std::string Resolution::str() const {
    return fmt::format("{}x{}", width, height);
}

std::vector<Resolution> parse_resolutions(const std::string& text, const std::string& key) {
    std::vector<Resolution> out;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = text.find(',', start);
        const std::string entry =
            trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (entry.empty()) fail(kLog, "config", "{} = '{}': empty entry in the list", key, text);
        const size_t x = entry.find_first_of("xX");
        Resolution r;
        if (x == std::string::npos) {
            r.width = r.height = parse_positive(entry, key, entry);
        } else {
            r.width = parse_positive(entry.substr(0, x), key, entry);
            r.height = parse_positive(entry.substr(x + 1), key, entry);
        }
        out.push_back(r);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

bool skip_layers_active(int64_t step, int64_t steps, double start, double stop) {
    const double f = static_cast<double>(step) / static_cast<double>(steps);
    return f >= start && f < stop;
}

at::Tensor sample_latents(ModelHandle& model, const SampleRequest& req) {
    // noise [1, C, F', H', W'] -> latents [1, C, F', H', W'] (float32, CPU)
    if (req.steps < 1) fail(kLog, "sample", "the number of sampling steps must be >= 1, got {}", req.steps);
    if (req.positive.empty()) fail(kLog, "sample", "the prompt's text embeddings (encode_text) are missing");
    const std::optional<double> boundary = model.expert_boundary();
    const double guidance_low = boundary ? req.guidance_2.value_or(req.guidance) : req.guidance;
    const bool cfg = req.guidance > 1.0 || guidance_low > 1.0;
    if (cfg && req.negative.empty())
        fail(kLog, "sample", "guidance {} > 1 needs the negative prompt's embeddings",
             std::max(req.guidance, guidance_low));
    if (!req.skip_layers.empty() && !cfg)
        fail(kLog, "sample",
             "skip-layer guidance (layers {}) acts on the unconditional pass and needs guidance > 1, got {}",
             fmt::format("{}", fmt::join(req.skip_layers, ",")), req.guidance);

    at::NoGradGuard no_grad;
    const auto shape = model.latent_shape(req.frames, req.size.height, req.size.width);
    std::vector<int64_t> full{1};
    full.insert(full.end(), shape.begin(), shape.end());
    // The noise is drawn on the CPU (the same video for a seed on every device, as diffusers does with
    // a CPU generator), then the whole loop stays on the model's device.
    const at::Device device = model.device();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(req.seed);
    at::Tensor x = at::randn(full, gen, at::TensorOptions().dtype(at::kFloat)).to(device);

    auto sampler = sdk::make_sampler(req.scheduler, req.sampler);
    sampler->set_timesteps(req.steps);
    if (boundary) {
        int64_t high = 0;
        for (double t : sampler->timesteps()) high += t >= *boundary ? 1 : 0;
        log::info(kLog,
                  "expert boundary t = {}: {} step(s) at t >= {} with guidance {}, {} below with guidance {}",
                  *boundary, high, *boundary, req.guidance, sampler->num_steps() - high, guidance_low);
    } else if (req.guidance_2 && *req.guidance_2 != req.guidance) {
        log::info(kLog, "guidance_2 {} unused: the model samples with one network (no expert boundary)",
                  *req.guidance_2);
    }
    sdk::TensorMap cond = merged(req.positive, req.inputs);
    sdk::TensorMap uncond = cfg ? model.unconditional(cond, req.negative) : sdk::TensorMap{};
    for (auto* m : {&cond, &uncond})
        for (auto& [name, t] : *m) t = t.to(device);
    auto velocity = [&](const sdk::TensorMap& conditioning, const at::Tensor& t,
                        const std::vector<int64_t>& skip) {
        sdk::PredictInputs in;
        in.noisy = x;
        in.timesteps = t;
        in.conditioning = conditioning;
        in.skip_layers = skip;
        return model.predict(in).velocity.to(at::kFloat);
    };
    std::optional<log::Progress> progress;
    if (!req.progress_label.empty())
        progress.emplace("host.validate", req.progress_label, sampler->num_steps(), "steps");
    for (int64_t i = 0; i < sampler->num_steps(); ++i) {
        if (req.should_stop && req.should_stop())
            throw SamplingStopped(
                fmt::format("sampling stopped before step {} of {}", i + 1, sampler->num_steps()));
        const double sigma = sampler->sigmas()[static_cast<size_t>(i)];
        const at::Tensor t = at::full({1}, sampler->timesteps()[static_cast<size_t>(i)],
                                      at::TensorOptions().dtype(at::kFloat).device(device));
        const double timestep = sampler->timesteps()[static_cast<size_t>(i)];
        const double g = (boundary && timestep < *boundary) ? guidance_low : req.guidance;
        at::Tensor v = velocity(cond, t, {});
        if (g > 1.0) {
            const bool slg =
                !req.skip_layers.empty() && skip_layers_active(i, req.steps, req.skip_start, req.skip_stop);
            v = sdk::cfg_combine(velocity(uncond, t, slg ? req.skip_layers : std::vector<int64_t>{}), v, g);
        }
        const at::Tensor x0 = x - sigma * v;
        x = sampler->step(v, i, x);
        if (req.on_step) req.on_step(i, x, x0);
        if (progress) progress->advance();
    }
    return x;
}

at::Tensor sample_video(ModelHandle& model, const SampleRequest& req) {
    // -> [3, F, H, W] in [-1, 1]
    const at::Tensor latents = sample_latents(model, req);
    at::NoGradGuard no_grad;
    return model.decode_latents(latents).select(0, 0).to(at::kFloat).clamp(-1.0, 1.0);
}

at::Tensor conditioning_image(const at::Tensor& frame_u8, const Resolution& size) {
    // [H, W, 3] uint8 -> [1, 3, size.height, size.width] float in [-1, 1]
    if (frame_u8.dim() != 3 || frame_u8.size(2) != 3)
        fail(kLog, "image", "expected an RGB frame [H, W, 3], got {}", c10::str(frame_u8.sizes()));
    at::Tensor x = frame_u8.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat) / 127.5 - 1.0;
    const double h = static_cast<double>(x.size(2)), w = static_cast<double>(x.size(3));
    const double scale = std::max(static_cast<double>(size.width) / w, static_cast<double>(size.height) / h);
    const int64_t nh = std::max<int64_t>(size.height, static_cast<int64_t>(std::ceil(h * scale - 1e-6)));
    const int64_t nw = std::max<int64_t>(size.width, static_cast<int64_t>(std::ceil(w * scale - 1e-6)));
    if (nh != x.size(2) || nw != x.size(3))
        x = at::_upsample_bilinear2d_aa(x, {nh, nw}, /*align_corners=*/false);
    const int64_t top = (nh - size.height) / 2, left = (nw - size.width) / 2;
    return x.narrow(2, top, size.height).narrow(3, left, size.width).clamp(-1.0, 1.0).contiguous();
}

}  // namespace st::host::validate
