// Finding a Hugging Face transformers checkpoint on disk (config.json + safetensors weights), shared
// by the encoders that come from transformers: the CLIP image encoder (Wan 2.1 I2V) and Wav2Vec2 (S2V).
#pragma once

#include <filesystem>
#include <string>

namespace st::kit {

/// Where a transformers checkpoint's files are.
struct HfCheckpointFiles {
    std::filesystem::path config_json;
    /// What to open with sdk::open_tensor_source: the folder's model.safetensors.index.json or
    /// model.safetensors when present (transformers' SAFE_WEIGHTS_NAME, so other .safetensors files in
    /// the folder are never taken for the weights), else `path` as given.
    std::filesystem::path weights;
};

/// `path` is a folder holding config.json and *.safetensors (or a sharded index), or a .safetensors
/// file with config.json next to it: returns that config.json and the weights. st::Error (component
/// `component`, phase "load") when `path` does not exist, has no config.json, or is a PyTorch pickle (.bin
/// .pt .pth .ckpt, also a folder holding only pickles); the pickle message ends with `pickle_hint` (how to
/// convert or what to use instead). `what` names the checkpoint in messages ("CLIP image encoder").
HfCheckpointFiles locate_hf_checkpoint(const std::filesystem::path& path, const std::string& component,
                                       const std::string& what, const std::string& pickle_hint);

}  // namespace st::kit
