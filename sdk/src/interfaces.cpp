// Out-of-line virtual destructors and defaults of the SDK interfaces: gives each class one home
// (its vtable and typeinfo live in libst_sdk), so dynamic_cast and exceptions work across plugins.
#include <torch/nn/module.h>

#include <cctype>

#include "st/data_backend.h"
#include "st/error.h"
#include "st/lr_scheduler.h"
#include "st/model.h"
#include "st/optimizer.h"
#include "st/registrar.h"
#include "st/regularizer.h"
#include "st/safetensors.h"

namespace st::sdk {

Optimizer::~Optimizer() = default;
void Optimizer::zero_grad() {
    for (const auto& p : params()) {
        if (p.param.defined() && p.param.grad().defined()) p.param.mutable_grad() = at::Tensor();
    }
}

LrScheduler::~LrScheduler() = default;
Regularizer::~Regularizer() = default;
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> Regularizer::modules() {
    return {};
}

Encoders::~Encoders() = default;
TensorMap Encoders::encode_audio(const at::Tensor&, double, int64_t) {
    throw Error("encoders", "encode_audio", "this model family has no audio conditioning");
}
int Encoders::audio_sample_rate() const {
    return 16000;
}

DataBackend::~DataBackend() = default;
std::vector<Batch> DataBackend::eval_batches(int64_t, int64_t) {
    return {};
}
ModelFamily::~ModelFamily() = default;
LoraNameMap ModelFamily::lora_name_map() const {
    return {};
}
void ModelFamily::save_trainable(const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    TensorMap tensors;
    for (const auto& item : trainable().named_parameters()) tensors[item.key()] = item.value().detach();
    for (const auto& item : trainable().named_buffers()) tensors[item.key()] = item.value().detach();
    save_safetensors(dir / "diffusion_pytorch_model.safetensors", tensors);
}
std::vector<int64_t> ModelFamily::latent_shape(int64_t, int64_t, int64_t) const {
    throw Error("model", "latent_shape", "this model family does not describe its latent shape");
}
at::Tensor ModelFamily::decode_latents(const at::Tensor&) {
    throw Error("model", "decode_latents", "this model family cannot decode latents to pixels");
}
TensorMap ModelFamily::encode_conditioning_image(const at::Tensor&, int64_t) {
    throw Error("model", "encode_conditioning_image", "this model family has no image conditioning");
}
void ModelFamily::release_encoders() {}
std::vector<std::string> ModelFamily::sampling_inputs() const {
    return {};
}
std::optional<double> ModelFamily::expert_boundary() const {
    return std::nullopt;
}
Registrar::~Registrar() = default;

static bool valid_token(const std::string& s) {
    if (s.empty()) return false;
    for (char c : s) {
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool parse_component_id(const std::string& id, std::string* kind, std::string* name, int* version) {
    auto dot = id.find('.');
    auto at = id.rfind('@');
    if (dot == std::string::npos || at == std::string::npos || at < dot) return false;
    std::string k = id.substr(0, dot), n = id.substr(dot + 1, at - dot - 1), v = id.substr(at + 1);
    if (!valid_token(k) || !valid_token(n) || v.empty() || v.size() > 6) return false;
    for (char c : v)
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    int ver = std::stoi(v);
    if (ver < 1) return false;
    if (kind) *kind = k;
    if (name) *name = n;
    if (version) *version = ver;
    return true;
}

}  // namespace st::sdk
