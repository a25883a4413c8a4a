// torch.save() state dicts as TensorSources (st/kit/torch_pickle.h).
#include "st/kit/torch_pickle.h"

#include <torch/serialize.h>

#include <fstream>
#include <iterator>

#include "st/error.h"
#include "st/files.h"

namespace st::kit {

namespace fs = std::filesystem;

namespace {

std::map<std::string, at::Tensor> tensors_of(const c10::IValue& value, const fs::path& file,
                                             const std::string& component) {
    std::map<std::string, at::Tensor> out;
    for (const auto& kv : value.toGenericDict()) {
        if (!kv.key().isString() || !kv.value().isTensor())
            fail(component, "load", "'{}': the state dict has a non-tensor entry{}", file.string(),
                 kv.key().isString() ? " '" + kv.key().toStringRef() + "'" : std::string());
        out[kv.key().toStringRef()] = kv.value().toTensor();
    }
    return out;
}

}  // namespace

std::map<std::string, at::Tensor> read_torch_state_dict(const fs::path& file, const std::string& component,
                                                        const std::vector<std::string>& nested_keys) {
    sdk::require_regular_file(file, "a torch.save() weights file", component);
    std::ifstream in(file, std::ios::binary);
    if (!in) fail(component, "load", "cannot open '{}'", file.string());
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() < 4 || bytes[0] != 'P' || bytes[1] != 'K')
        fail(component, "load",
             "'{}' is not a zip-format torch.save() file (legacy pickles of torch < 1.6 are not read: "
             "re-save it with torch >= 1.6 or convert it to .safetensors)",
             file.string());
    c10::IValue value;
    try {
        value = torch::pickle_load(bytes);
    } catch (const std::exception& e) {
        fail(component, "load", "'{}' could not be unpickled: {}", file.string(), e.what());
    }
    if (!value.isGenericDict())
        fail(component, "load", "'{}' holds a {}, not a state dict", file.string(), value.tagKind());
    const auto dict = value.toGenericDict();
    for (const auto& key : nested_keys) {
        auto it = dict.find(c10::IValue(key));
        if (it != dict.end() && it->value().isGenericDict()) return tensors_of(it->value(), file, component);
    }
    return tensors_of(value, file, component);
}

MemoryTensorSource::MemoryTensorSource(std::map<std::string, at::Tensor> tensors, std::string label)
    : tensors_(std::move(tensors)), label_(std::move(label)) {}

std::vector<sdk::TensorInfo> MemoryTensorSource::infos() const {
    std::vector<sdk::TensorInfo> v;
    for (const auto& [n, t] : tensors_) {
        sdk::TensorInfo i;
        i.name = n;
        i.dtype = sdk::scalar_to_safetensors_dtype(t.scalar_type());
        i.shape = t.sizes().vec();
        v.push_back(std::move(i));
    }
    return v;
}

at::Tensor MemoryTensorSource::load(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("st::kit", "load", "{} has no tensor '{}'", label_, name);
    return it->second;
}

}  // namespace st::kit
