#include "train/regularizers.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

#include <set>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/log.h"
#include "st/safetensors.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.train";
constexpr const char* kFile = "regularizers.safetensors";
}  // namespace

std::vector<ActiveRegularizer> build_regularizers(PluginRegistry& registry, const sdk::ConfigView& config,
                                                  ModelHandle& model, at::Device device, uint64_t seed) {
    std::vector<ActiveRegularizer> out;
    std::set<std::string> names;
    for (const auto* e : registry.of_kind("reg")) {
        const std::string key = e->name + "_enabled";
        if (names.count(e->name) || !config.has(key) || !config.get_bool(key)) continue;
        const ComponentEntry* latest = registry.find_latest("reg", e->name);
        names.insert(e->name);
        const auto offered = model.taps();
        sdk::RegularizerInit init;
        init.config = config;
        init.device = device;
        init.seed = seed;
        for (const auto& t : offered) {
            try {
                init.tap_dims[t] = model.tap_geometry(t, model.latent_shape(1, 16 * 4, 16 * 4)).hidden_size;
            } catch (const Error&) {
                // A tap without a video grid (text tokens): not offered to regularizers.
            }
        }
        ActiveRegularizer a;
        a.entry = latest;
        a.reg = call_plugin(*latest, "create", [&] { return latest->regularizer(init); });
        a.taps = call_plugin(*latest, "taps", [&] { return a.reg->taps(); });
        for (const auto& t : a.taps)
            if (!init.tap_dims.count(t))
                fail(kLog, "setup", "{} needs the model's activations '{}', which {} does not offer{}",
                     latest->id, t, model.entry().id,
                     offered.empty() ? std::string(" (it has no taps@1 capability)")
                                     : fmt::format(" (it offers {} taps, blocks.0.out .. )", offered.size()));
        a.features = call_plugin(*latest, "sample_features", [&] { return a.reg->sample_features(); });
        for (auto& [module_name, module] : call_plugin(*latest, "modules", [&] { return a.reg->modules(); }))
            for (const auto& p : module->named_parameters())
                a.params.emplace_back(fmt::format("reg.{}.{}.{}", e->name, module_name, p.key()), p.value());
        log::info(
            kLog, "{} enabled ({} set): taps {}, {} trainable tensors{}", latest->id, key,
            fmt::format("{}", fmt::join(a.taps, ", ")), a.params.size(),
            a.features ? fmt::format(", caches '{}' features per clip", a.features->name()) : std::string());
        out.push_back(std::move(a));
    }
    return out;
}

std::vector<std::shared_ptr<sdk::SampleFeatureEncoder>> sample_features(
    const std::vector<ActiveRegularizer>& regs) {
    std::vector<std::shared_ptr<sdk::SampleFeatureEncoder>> v;
    for (const auto& r : regs)
        if (r.features) v.push_back(r.features);
    return v;
}

nlohmann::json save_regularizers(const std::vector<ActiveRegularizer>& regs, const fs::path& dir) {
    nlohmann::json states = nlohmann::json::object();
    if (regs.empty()) return states;
    sdk::TensorMap tensors;
    for (const auto& r : regs) {
        for (const auto& [n, t] : r.params) tensors[n] = t.detach().to(at::kCPU);
        states[r.entry->id] = call_plugin(*r.entry, "state", [&] { return r.reg->state(); });
    }
    sdk::save_safetensors(dir / kFile, tensors);
    return states;
}

void restore_regularizers(std::vector<ActiveRegularizer>& regs, const fs::path& dir,
                          const nlohmann::json& states) {
    if (regs.empty()) return;
    if (!fs::exists(dir / kFile))
        fail(kLog, "resume",
             "{} has no {}: it was written without {}; set resume_from_checkpoint none to start over",
             dir.string(), kFile, regs.front().entry->id);
    auto src = sdk::SafetensorsFile::open(dir / kFile);
    torch::NoGradGuard no_grad;
    for (auto& r : regs) {
        for (auto& [n, t] : r.params) {
            if (!src->contains(n))
                fail(kLog, "resume", "{} lacks '{}' of {}", src->describe(), n, r.entry->id);
            at::Tensor v = src->load(n);
            if (v.sizes() != t.sizes())
                fail(kLog, "resume", "{}: '{}' is {} but {} has {}", src->describe(), n, c10::str(v.sizes()),
                     r.entry->id, c10::str(t.sizes()));
            t.detach().copy_(v);
        }
        const nlohmann::json s = states.is_object() && states.contains(r.entry->id) ? states.at(r.entry->id)
                                                                                    : nlohmann::json(nullptr);
        if (s.is_null() && !r.reg->state().is_null())
            fail(kLog, "resume", "{} has no state of {} in training_state.json", dir.string(), r.entry->id);
        call_plugin(*r.entry, "restore", [&] { r.reg->restore(s); });
    }
}

}  // namespace st::host::train
