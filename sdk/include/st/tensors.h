// Named tensor collections passed across the SDK boundary.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>

namespace st::sdk {

/// Tensors by name, ordered (file order and iteration order are stable).
using TensorMap = std::map<std::string, at::Tensor>;

/// Serializable state of a component (optimizer moments, EMA shadows, RNG states, ...): tensors by
/// name plus small JSON metadata. Saved by the host as one safetensors file whose metadata holds
/// `meta` serialized; so tensor names must be unique and `meta` must be plain JSON.
struct StateDict {
    TensorMap tensors;
    nlohmann::json meta = nlohmann::json::object();
};

}  // namespace st::sdk
