// Checkpoints saved with torch.save() (.pth / .pt): a state dict read with LibTorch's zip-archive
// unpickler, presented as a TensorSource like a safetensors file. Used for DINOv2 hub checkpoints
// (CREPA) and original Sana Video releases (`SANA_Video_2B_480p.pth`, a dict with "state_dict").
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "st/safetensors.h"

namespace st::kit {

/// name -> tensor of a zip-format torch.save() file holding a state dict, or a dict holding one under
/// one of `nested_keys` (e.g. {"state_dict", "model"}). st::Errors (prefixed `component`) name the file
/// and say what was found instead (a legacy pre-1.6 pickle, a non-dict, a non-tensor entry).
std::map<std::string, at::Tensor> read_torch_state_dict(const std::filesystem::path& file,
                                                        const std::string& component,
                                                        const std::vector<std::string>& nested_keys = {});

/// A TensorSource over tensors already in memory (`label` names them in messages).
class MemoryTensorSource final : public sdk::TensorSource {
  public:
    MemoryTensorSource(std::map<std::string, at::Tensor> tensors, std::string label);
    std::string describe() const override { return label_; }
    std::vector<sdk::TensorInfo> infos() const override;
    bool contains(const std::string& name) const override { return tensors_.count(name) > 0; }
    at::Tensor load(const std::string& name) const override;
    std::map<std::string, std::string> metadata() const override { return {}; }

  private:
    std::map<std::string, at::Tensor> tensors_;
    std::string label_;
};

}  // namespace st::kit
