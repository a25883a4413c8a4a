// Strict weight loading: copy named tensors from a TensorSource into named parameters/buffers,
// through a key map, reporting every problem at once.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "st/base_weights.h"
#include "st/safetensors.h"

namespace torch::nn {
class Module;
}

namespace st::sdk {

struct LoadOptions {
    /// File name -> target name. Return nullopt to declare a file tensor deliberately ignored.
    /// Default: identity.
    std::function<std::optional<std::string>(const std::string&)> key_map;
    /// Target names allowed to be absent from the file (left as initialised).
    std::set<std::string> optional_targets;
    /// How many offenders of each kind the error lists before "... and N more".
    size_t max_listed = 10;
    /// Component used in errors ("model.wan@1").
    std::string component = "weights";
    /// Frozen base weights (st/base_weights.h; module overload only): the target "<path>.weight" of an
    /// st::sdk::Linear for which this gives a precision other than compute is installed with
    /// LinearImpl::set_base_weight from the source's view (zero-copy from a mapped file where the
    /// form allows) instead of being copied. Unset: everything is copied.
    std::function<BasePrecision(const std::string& module_path, int64_t in, int64_t out)> base_precision;
};

struct LoadReport {
    size_t loaded = 0;
    std::map<std::string, size_t> source_dtypes;  ///< "BF16" -> count, for the one-line log
};

/// Copies tensors into `targets` (name -> tensor to overwrite in place, keeping its dtype/device:
/// the file dtype is converted). Missing, unexpected and wrong-shape tensors are collected and
/// reported together in one st::Error (first offenders with expected vs actual shapes).
LoadReport load_strict(std::map<std::string, at::Tensor> targets, const TensorSource& source,
                       const LoadOptions& options = {});

/// Same, with the targets taken from module.named_parameters() + named_buffers().
LoadReport load_strict(torch::nn::Module& module, const TensorSource& source,
                       const LoadOptions& options = {});

/// named_parameters() + named_buffers() of a module as a map (recursive, checkpoint names).
std::map<std::string, at::Tensor> named_tensors(const torch::nn::Module& module);

}  // namespace st::sdk
