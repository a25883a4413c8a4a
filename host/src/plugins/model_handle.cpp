#include "plugins/model_handle.h"

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/log.h"

namespace st::host {

namespace {
constexpr const char* kLog = "host.model";
}

ModelHandle::ModelHandle(const ComponentEntry& entry) : entry_(entry) {
    if (!entry.model) fail(kLog, "create", "component {} is not a model family", entry.id);
    family_ = call_plugin(entry_, "create", [&] { return entry_.model(); });
    if (!family_)
        fail(kLog, "create", "{}: the plugin '{}' returned no model family", entry.id, entry.plugin_name);
}

ModelHandle::~ModelHandle() = default;

template <typename T>
T* ModelHandle::find() {
    sdk::Capability* raw = call_plugin(entry_, "capability", [&] { return family_->capability(T::kId); });
    if (!raw) return nullptr;
    T* typed = dynamic_cast<T*>(raw);
    if (!typed)
        fail(kLog, "capability",
             "plugin '{}' ({}) answered capability '{}' with an object of another interface; the plugin is "
             "broken",
             entry_.plugin_name, entry_.plugin_file.string(), T::kId);
    return typed;
}

template <typename T>
T& ModelHandle::require(const std::string& what) {
    if (T* c = find<T>()) return *c;
    fail(kLog, "capability", "{}: the model family {} (plugin '{}') does not offer capability '{}'", what,
         entry_.id, entry_.plugin_name, T::kId);
}

void ModelHandle::load(const sdk::ModelLoadRequest& request) {
    call_plugin(entry_, "load", [&] { family_->load(request); });
    device_ = request.device;
}

torch::nn::Module& ModelHandle::trainable() {
    return call_plugin(entry_, "trainable", [&]() -> torch::nn::Module& { return family_->trainable(); });
}

std::string ModelHandle::trainable_folder() const {
    std::string folder = call_plugin(entry_, "trainable_folder", [&] { return family_->trainable_folder(); });
    if (folder.empty() || folder.find('/') != std::string::npos || folder == "." || folder == "..")
        fail(kLog, "trainable_folder",
             "plugin '{}' names the trained network's folder '{}': expected a plain name", entry_.plugin_name,
             folder);
    return folder;
}

std::vector<std::string> ModelHandle::default_lora_targets() const {
    return call_plugin(entry_, "default_lora_targets", [&] { return family_->default_lora_targets(); });
}

sdk::LoraNameMap ModelHandle::lora_name_map() const {
    return call_plugin(entry_, "lora_name_map", [&] { return family_->lora_name_map(); });
}

void ModelHandle::save_trainable(const std::filesystem::path& dir) {
    call_plugin(entry_, "save_trainable", [&] { family_->save_trainable(dir); });
}

sdk::PredictOutput ModelHandle::predict(const sdk::PredictInputs& inputs) {
    return call_plugin(entry_, "predict", [&] { return family_->predict(inputs); });
}

sdk::TensorMap ModelHandle::encode_text(const std::vector<std::string>& captions) {
    return call_plugin(entry_, "encode_text", [&] { return family_->encode_text(captions); });
}

std::vector<int64_t> ModelHandle::latent_shape(int64_t frames, int64_t height, int64_t width) const {
    return call_plugin(entry_, "latent_shape", [&] { return family_->latent_shape(frames, height, width); });
}

at::Tensor ModelHandle::decode_latents(const at::Tensor& latents) {
    at::Tensor video =
        call_plugin(entry_, "decode_latents", [&] { return family_->decode_latents(latents); });
    if (!video.defined() || video.dim() != 5 || video.size(1) != 3 || video.size(0) != latents.size(0))
        fail(kLog, "decode_latents", "plugin '{}' decoded latents {} to {}, expected [{}, 3, F, H, W]",
             entry_.plugin_name, c10::str(latents.sizes()),
             video.defined() ? c10::str(video.sizes()) : std::string("an undefined tensor"), latents.size(0));
    return video;
}

std::vector<sdk::SamplingInput> ModelHandle::sampling_inputs() const {
    return call_plugin(entry_, "sampling_inputs", [&] { return family_->sampling_inputs(); });
}

bool ModelHandle::samples_from(sdk::MediaKind kind) const {
    const auto inputs = sampling_inputs();
    return std::any_of(inputs.begin(), inputs.end(),
                       [&](const sdk::SamplingInput& i) { return i.kind == kind; });
}

std::vector<sdk::MediaKind> ModelHandle::sample_media() const {
    return call_plugin(entry_, "sample_media", [&] { return family_->sample_media(); });
}

void ModelHandle::release_encoders() {
    call_plugin(entry_, "release_encoders", [&] { family_->release_encoders(); });
}

sdk::ProbeResult ModelHandle::probe(const std::filesystem::path& path, const std::string& command) {
    auto& t = require<sdk::ModelTools>(command);
    return call_plugin(entry_, "probe", [&] { return t.probe(path); });
}

std::vector<std::string> ModelHandle::presets(const std::string& command) {
    auto& t = require<sdk::ModelTools>(command);
    return call_plugin(entry_, "presets", [&] { return t.presets(); });
}

void ModelHandle::make_model(const std::string& preset, const std::filesystem::path& out, uint64_t seed) {
    auto& t = require<sdk::ModelTools>("st-host make-model");
    call_plugin(entry_, "make_model", [&] { t.make_model(preset, out, seed); });
}

std::vector<std::string> ModelHandle::forward_components(const std::string& command) {
    auto& t = require<sdk::ModelTools>(command);
    return call_plugin(entry_, "forward_components", [&] { return t.forward_components(); });
}

sdk::TensorMap ModelHandle::forward_component(const std::filesystem::path& model,
                                              const std::string& component, const sdk::TensorMap& inputs,
                                              const sdk::ConfigView& config) {
    auto& t = require<sdk::ModelTools>("st-host forward");
    return call_plugin(entry_, "forward",
                       [&] { return t.forward_component(model, component, inputs, config); });
}

sdk::TensorMap ModelHandle::encode_conditioning_image(const at::Tensor& image, int64_t frames) {
    auto& c = require<sdk::ImageConditioning>("image conditioning");
    return call_plugin(entry_, "encode_conditioning_image",
                       [&] { return c.encode_conditioning_image(image, frames); });
}

int ModelHandle::audio_sample_rate() {
    auto& c = require<sdk::AudioConditioning>("audio conditioning");
    return call_plugin(entry_, "audio_sample_rate", [&] { return c.audio_sample_rate(); });
}

sdk::TensorMap ModelHandle::encode_audio(const at::Tensor& waveform, double fps, int64_t frames) {
    auto& c = require<sdk::AudioConditioning>("audio conditioning");
    return call_plugin(entry_, "encode_audio", [&] { return c.encode_audio(waveform, fps, frames); });
}

std::optional<double> ModelHandle::expert_boundary() {
    auto* c = find<sdk::ExpertSchedule>();
    if (!c) return std::nullopt;
    return call_plugin(entry_, "expert_boundary", [&] { return c->expert_boundary(); });
}

std::vector<std::string> ModelHandle::taps() {
    auto* c = find<sdk::TapProvider>();
    if (!c) return {};
    return call_plugin(entry_, "taps", [&] { return c->taps(); });
}

sdk::TapGeometry ModelHandle::tap_geometry(const std::string& tap, const std::vector<int64_t>& latent_shape) {
    auto& c = require<sdk::TapProvider>("taps");
    return call_plugin(entry_, "tap_geometry", [&] { return c.tap_geometry(tap, latent_shape); });
}

std::optional<int64_t> ModelHandle::routable_blocks() {
    auto* c = find<sdk::TokenRouting>();
    if (!c) return std::nullopt;
    return call_plugin(entry_, "routable_blocks", [&] { return c->routable_blocks(); });
}

sdk::TensorMap ModelHandle::unconditional(const sdk::TensorMap& conditional,
                                          const sdk::TensorMap& negative_text) {
    auto* c = find<sdk::GuidancePolicy>();
    if (!c) return sdk::default_unconditional(conditional, negative_text);
    return call_plugin(entry_, "unconditional", [&] { return c->unconditional(conditional, negative_text); });
}

sdk::TensorMap ModelHandle::encode_negative_text(const std::vector<std::string>& negatives) {
    auto* c = find<sdk::NegativePromptEncoding>();
    if (!c) return encode_text(negatives);
    return call_plugin(entry_, "encode_negative_text", [&] { return c->encode_negative_text(negatives); });
}

std::optional<at::Tensor> ModelHandle::family_training_sigmas(int64_t batch, at::Generator generator) {
    auto* c = find<sdk::NoiseSchedule>();
    if (!c) return std::nullopt;
    at::Tensor s = call_plugin(entry_, "sample_training_sigmas",
                               [&] { return c->sample_training_sigmas(batch, generator); });
    if (!s.defined() || s.dim() != 1 || s.size(0) != batch)
        fail(entry_.id, "sample_training_sigmas", "returned {} sigmas, expected [{}]",
             s.defined() ? c10::str(s.sizes()) : std::string("undefined"), batch);
    return s.to(at::kFloat);
}

std::optional<std::string> ModelHandle::training_schedule_summary() {
    auto* c = find<sdk::NoiseSchedule>();
    if (!c) return std::nullopt;
    return call_plugin(entry_, "training_schedule_summary", [&] { return c->training_schedule_summary(); });
}

std::optional<sdk::SamplingDefaults> ModelHandle::sampling_defaults() {
    auto* c = find<sdk::NoiseSchedule>();
    if (!c) return std::nullopt;
    return call_plugin(entry_, "sampling_defaults", [&] { return c->sampling_defaults(); });
}

void ModelHandle::set_base_weights(const sdk::BaseWeightPlan& plan) {
    auto* c = find<sdk::BaseWeights>();
    if (!c) {
        // Without the capability the weights are copied into the compute dtype, which is what no_change
        // and bf16 (with mixed_precision bf16) mean; anything else cannot be honoured.
        const bool plain = plan.offload_dir.empty() && (plan.precision == sdk::BasePrecision::compute ||
                                                        plan.precision == sdk::BasePrecision::keep ||
                                                        plan.precision == sdk::BasePrecision::bf16);
        if (!plain)
            fail(entry_.id, "setup",
                 "{} does not store base weights in another form or offload blocks (base_model_precision {}, "
                 "group_offload_to_disk_path '{}'): use base_model_precision no_change or bf16 without group "
                 "offload",
                 entry_.id, plan.source_value, plan.offload_dir.string());
        if (plan.precision == sdk::BasePrecision::bf16)
            st::log::info(entry_.id,
                          "base_model_precision bf16: {} keeps its weights in the compute dtype "
                          "(mixed_precision)",
                          entry_.id);
        return;
    }
    call_plugin(entry_, "set_base_weights", [&] { c->set_base_weights(plan); });
}

std::string ModelHandle::capability_list() {
    std::vector<std::string> ids;
    if (find<sdk::ModelTools>()) ids.push_back(sdk::ModelTools::kId);
    if (find<sdk::ImageConditioning>()) ids.push_back(sdk::ImageConditioning::kId);
    if (find<sdk::AudioConditioning>()) ids.push_back(sdk::AudioConditioning::kId);
    if (find<sdk::ExpertSchedule>()) ids.push_back(sdk::ExpertSchedule::kId);
    if (find<sdk::TapProvider>()) ids.push_back(sdk::TapProvider::kId);
    if (find<sdk::GuidancePolicy>()) ids.push_back(sdk::GuidancePolicy::kId);
    if (find<sdk::TokenRouting>()) ids.push_back(sdk::TokenRouting::kId);
    if (find<sdk::NoiseSchedule>()) ids.push_back(sdk::NoiseSchedule::kId);
    if (find<sdk::NegativePromptEncoding>()) ids.push_back(sdk::NegativePromptEncoding::kId);
    if (find<sdk::BaseWeights>()) ids.push_back(sdk::BaseWeights::kId);
    return ids.empty() ? std::string("none") : fmt::format("{}", fmt::join(ids, ", "));
}

}  // namespace st::host
