// Small text helpers every component's messages use: shapes as "[2, 3, 4]" and "did you mean"
// suggestions for unknown keys and names.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <string>
#include <vector>

namespace st::sdk {

/// "[2, 3, 4]"; an empty shape is "[]".
std::string shape_str(at::IntArrayRef sizes);
/// The tensor's shape, or "undefined".
std::string shape_str(const at::Tensor& t);

/// Levenshtein distance (insertions, deletions, substitutions of bytes).
size_t edit_distance(const std::string& a, const std::string& b);

/// The name of `names` closest to `key` by edit distance; names that contain `key` or are contained
/// in it (abbreviations) count as closer. Ties: the alphabetically first. "" when `names` is empty.
std::string closest_name(const std::string& key, const std::vector<std::string>& names);

}  // namespace st::sdk
