// Out-of-line virtual destructors and defaults of the SDK interfaces: gives each class one home
// (its vtable and typeinfo live in libst_sdk), so dynamic_cast and exceptions work across plugins.
#include <torch/nn/module.h>

#include <cctype>

#include "st/bucket_alignment.h"
#include "st/data_backend.h"
#include "st/error.h"
#include "st/lr_scheduler.h"
#include "st/model.h"
#include "st/optimizer.h"
#include "st/registrar.h"
#include "st/regularizer.h"
#include "st/safetensors.h"
#include "st/sharded_caching.h"

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
std::shared_ptr<SampleFeatureEncoder> Regularizer::sample_features() {
    return nullptr;
}
nlohmann::json Regularizer::state() const {
    return nullptr;
}
void Regularizer::restore(const nlohmann::json&) {}
SampleFeatureEncoder::~SampleFeatureEncoder() = default;

const char* media_kind_name(MediaKind kind) {
    switch (kind) {
        case MediaKind::video:
            return "video";
        case MediaKind::image:
            return "image";
        case MediaKind::audio:
            return "audio";
    }
    return "?";
}

Capability::~Capability() = default;
ModelTools::~ModelTools() = default;
ImageConditioning::~ImageConditioning() = default;
AudioConditioning::~AudioConditioning() = default;
ExpertSchedule::~ExpertSchedule() = default;
TapProvider::~TapProvider() = default;
GuidancePolicy::~GuidancePolicy() = default;
TokenRouting::~TokenRouting() = default;
NoiseSchedule::~NoiseSchedule() = default;
NegativePromptEncoding::~NegativePromptEncoding() = default;
BaseWeights::~BaseWeights() = default;
BucketAlignment::~BucketAlignment() = default;
ShardedCaching::~ShardedCaching() = default;

TensorMap default_unconditional(const TensorMap& conditional, const TensorMap& negative_text) {
    TensorMap m = conditional;
    for (const auto& [k, v] : negative_text) m[k] = v;
    return m;
}

Encoders::~Encoders() = default;
std::vector<MediaKind> Encoders::sample_media() const {
    return {};
}
Capability* Encoders::capability(std::string_view) {
    return nullptr;
}

DataBackend::~DataBackend() = default;
std::vector<Batch> DataBackend::eval_batches(int64_t, int64_t) {
    return {};
}
ModelFamily::~ModelFamily() = default;
std::string ModelFamily::trainable_folder() const {
    return "transformer";
}
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
std::vector<SamplingInput> ModelFamily::sampling_inputs() const {
    return {};
}
void ModelFamily::release_encoders() {}
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
