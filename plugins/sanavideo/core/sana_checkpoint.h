// Locating, opening, detecting, loading and saving Sana Video transformers: diffusers pipeline
// folders (model_index.json + transformer/), a transformer folder (config.json +
// diffusion_pytorch_model[.variant].safetensors or a sharded index), and single files in the
// original layout (`SANA_Video_2B_480p.pth`, a torch.save() dict with "state_dict", or a .safetensors;
// optionally prefixed). Every layout is presented to the loader under the diffusers names: the original
// fused `attn.qkv` and `cross_attn.kv_linear` are split, and a [1, 2, D] `scale_shift_table` (some
// HF uploads) is squeezed to [2, D]. Strict. Facts: models.md §6.2.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/sana_config.h"
#include "core/sana_transformer.h"
#include "st/kit/diffusers_model.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::sanavideo {

/// What the files of a transformer are.
struct SanaCheckpointInfo {
    SanaVideoTransformerConfig config;
    st::kit::CheckpointFacts facts;  ///< layout and prefix of the file, dtypes, tensor count
    bool squeezed_scale_shift_table = false;
    /// "sana-video-2b-480p (diffusers layout, 496 tensors, BF16 x496; dim 2240 (20x112), ...)".
    std::string summary() const;
};

/// `subfolder` "transformer" inside a pipeline, or ""/"none" when `path` is the transformer itself.
st::kit::ModelLocation locate_sana_transformer(const std::filesystem::path& path,
                                               const std::string& subfolder, const std::string& variant = "");

/// Opens the weights at `location` as a TensorSource with diffusers names only (see the file comment)
/// and describes them in `info` (config detected from names and shapes, cross-checked against
/// config.json when there is one). st::Errors name the file and what was expected.
std::shared_ptr<st::sdk::TensorSource> open_sana_transformer(const st::kit::ModelLocation& location,
                                                             SanaCheckpointInfo* info);

/// Original name (prefix stripped) of the diffusers tensor `name`, for messages and tests
/// ("blocks.3.attn.qkv.weight [1/3]").
std::string sana_original_name(const std::string& diffusers_name);

struct SanaLoadOptions {
    std::string subfolder = "transformer";
    std::string variant;
    at::ScalarType dtype = at::kFloat;
    at::Device device = at::kCPU;
};

struct LoadedSanaTransformer {
    SanaVideoTransformer3DModel model{nullptr};
    SanaCheckpointInfo info;
    st::kit::ModelLocation location;
};

/// Locates, detects, builds and loads strictly; logs the variant in one line.
LoadedSanaTransformer load_sana_transformer(const std::filesystem::path& path,
                                            const SanaLoadOptions& options = {});

/// Writes `dir`/config.json and `dir`/diffusion_pytorch_model.safetensors (diffusers names; cast to
/// `dtype` except the fp32-kept tensors): the folder diffusers' SanaVideoTransformer3DModel loads.
void save_sana_transformer(SanaVideoTransformer3DModelImpl& model, const std::filesystem::path& dir,
                           at::ScalarType dtype = at::kFloat);

}  // namespace st::plugins::sanavideo
