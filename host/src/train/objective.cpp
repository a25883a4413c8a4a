#include "train/objective.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "plugins/guard.h"
#include "st/error.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.train";
}

Objective::Objective(ModelHandle& model, sdk::FlowSigmaOptions sigmas, at::Device device)
    : model_(model), sigmas_(std::move(sigmas)), device_(device) {}

const at::Tensor& Objective::latents_of(const sdk::Batch& batch) {
    auto it = batch.tensors.find("latents");
    if (it == batch.tensors.end())
        fail(kLog, "step", "the data backend's batch has no 'latents' tensor (bucket {})",
             batch.samples.empty() ? std::string("?") : batch.samples.front().bucket);
    return it->second;
}

sdk::PredictInputs Objective::inputs(const sdk::Batch& batch, const sdk::FlowMatchingBatch& fm) const {
    sdk::PredictInputs in;
    in.noisy = fm.noisy.to(device_);
    in.timesteps = fm.timesteps.to(device_);
    for (const auto& [name, t] : batch.tensors) {
        if (name == "latents") continue;
        bool feature = false;
        for (const auto& r : regs_)
            if (r.features && name.rfind(r.features->name() + ".", 0) == 0) feature = true;
        if (!feature) in.conditioning[name] = t.to(device_);
    }
    return in;
}

ObjectiveResult Objective::training_loss(const sdk::Batch& batch, at::Generator& generator, int64_t step,
                                         int64_t total_steps, int64_t shard_offset, int64_t global_batch) {
    // latents [B, C, F, H, W] -> noisy, target; velocity = model(noisy, sigma * 1000, conditioning)
    const at::Tensor latents = latents_of(batch).to(at::kFloat);
    const int64_t b = latents.size(0);
    const int64_t g = global_batch > 0 ? global_batch : b;
    if (shard_offset < 0 || shard_offset + b > g)
        fail(kLog, "step", "batch slice [{}, {}) lies outside the global batch of {}", shard_offset,
             shard_offset + b, g);
    std::vector<int64_t> global_shape = latents.sizes().vec();
    global_shape[0] = g;
    const at::Tensor noise =
        at::randn(global_shape, generator, latents.options()).narrow(0, shard_offset, b).contiguous();
    // A family with its own noise schedule (noise_schedule@1) draws the sigmas; else SimpleTuner's
    // flow_schedule_* options decide.
    const std::optional<at::Tensor> own = model_.family_training_sigmas(g, generator);
    const at::Tensor all_sigmas = own ? *own : sdk::sample_flow_sigmas(g, sigmas_, global_shape, generator);
    const at::Tensor sigmas = all_sigmas.narrow(0, shard_offset, b);
    const auto fm = sdk::make_flow_matching_batch(latents, noise, sigmas);
    sdk::PredictInputs in = inputs(batch, fm);
    in.routes = routes_;
    in.generator = generator;
    for (const auto& reg : regs_)
        for (const auto& t : reg.taps)
            if (std::find(in.taps.begin(), in.taps.end(), t) == in.taps.end()) in.taps.push_back(t);
    const auto out = model_.predict(in);
    ObjectiveResult r;
    r.terms["flow_matching"] = sdk::flow_matching_loss(out.velocity, fm.target.to(device_));
    r.loss = r.terms["flow_matching"];
    r.timesteps = g == b ? fm.timesteps : all_sigmas.to(at::kFloat) * 1000.0;
    if (regs_.empty()) return r;
    const std::vector<int64_t> shape = latents.sizes().slice(1).vec();
    for (auto& reg : regs_) {
        sdk::RegularizerInputs ri;
        ri.step = step;
        ri.total_steps = total_steps;
        for (const auto& t : reg.taps) {
            auto it = out.taps.find(t);
            if (it == out.taps.end())
                fail(kLog, "step", "{} did not return the activations '{}' that {} needs", model_.entry().id,
                     t, reg.entry->id);
            ri.taps[t] = it->second;
            ri.geometry[t] = model_.tap_geometry(t, shape);
        }
        for (const auto& [name, t] : batch.tensors) ri.batch[name] = t.to(device_);
        ri.sigmas = sigmas.to(device_);
        auto o = call_plugin(*reg.entry, "compute", [&] { return reg.reg->compute(ri); });
        for (auto& [name, term] : o.terms) {
            if (r.terms.count(name))
                fail(kLog, "step", "{} returned the loss term '{}', which another term already has",
                     reg.entry->id, name);
            r.loss = r.loss + term;
            r.terms[name] = term;
        }
        for (const auto& [name, v] : o.metrics) r.metrics[name] = v;
    }
    return r;
}

double Objective::eval_loss(const sdk::Batch& batch, const at::Tensor& noise, double sigma) {
    const at::Tensor latents = latents_of(batch).to(at::kFloat);
    const at::Tensor sigmas = at::full({latents.size(0)}, sigma, at::kFloat);
    const auto fm = sdk::make_flow_matching_batch(latents, noise, sigmas);
    const auto out = model_.predict(inputs(batch, fm));
    return sdk::flow_matching_loss(out.velocity, fm.target.to(device_)).item<double>();
}

}  // namespace st::host::train
