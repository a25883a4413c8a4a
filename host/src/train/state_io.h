// sdk::StateDict <-> one safetensors file (tensors by name, `meta` as JSON in the metadata key
// "st_state_meta"), the form optimizer, EMA and RNG states take inside a checkpoint.
#pragma once

#include <filesystem>

#include "st/tensors.h"

namespace st::host::train {

void save_state_dict(const std::filesystem::path& path, const sdk::StateDict& state);
/// st::Error naming the file when it is missing or malformed.
sdk::StateDict load_state_dict(const std::filesystem::path& path);

}  // namespace st::host::train
