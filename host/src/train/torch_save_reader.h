// Files written by torch.save() in the zip format (accelerate's optimizer.bin): the pickle in
// `<archive>/data.pkl` run by a small unpickler of the opcodes torch.save emits (protocols 2 to 4),
// tensors rebuilt from `<archive>/data/<key>` (torch._utils._rebuild_tensor_v2). Written because
// LibTorch 1.13's own unpickler (torch::pickle_load) rejects the APPEND opcode, which Python's pickle
// uses for every one-element list, e.g. the param_groups of an optimizer with one group.
#pragma once

#include <ATen/core/ivalue.h>

#include <filesystem>
#include <string>

namespace st::host::train {

/// The object a torch.save() file holds, as an IValue: dicts (also OrderedDict) as GenericDict, lists
/// as GenericList, tuples, str, int, float, bool, None and tensors (CPU). st::Error (prefixed
/// `component`) naming the file for a legacy (non-zip) file, an opcode or a global st does not read.
c10::IValue read_torch_save(const std::filesystem::path& file, const std::string& component);

}  // namespace st::host::train
