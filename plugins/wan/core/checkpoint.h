// Locating, opening, loading and saving Wan transformers: diffusers pipeline folders
// (model_index.json + transformer/ [+ transformer_2/]), a transformer folder (config.json +
// diffusion_pytorch_model[.variant].safetensors or a sharded index), single original/ComfyUI files
// with or without the `model.diffusion_model.` prefix. fp32/bf16/fp16 on disk; strict.
// Also the SimpleTuner flavour table (which folder holds which Wan 2.2 expert).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/detect.h"
#include "core/transformer.h"
#include "st/base_weights.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan {

/// One SimpleTuner `model_flavour` of the wan family (inventory §1.3).
struct WanFlavour {
    std::string name;      ///< "t2v-480p-1.3b-2.1", "i2v-14b-2.2-high", ...
    std::string hub_repo;  ///< the Hugging Face repo SimpleTuner downloads (informational here)
    WanVariantKind kind;
    /// Transformer subfolder of the pipeline folder. Wan 2.2 experts: `transformer` holds the
    /// HIGH-noise expert and `transformer_2` the LOW-noise one (diffusers convention; SimpleTuner
    /// maps "-high" to transformer_2, which is inverted: see plugins/wan/README.md).
    std::string subfolder = "transformer";
    std::string peer_subfolder;            ///< the other expert ("" for single-transformer models)
    std::optional<double> boundary_ratio;  ///< expert switch (t >= ratio*1000 -> high)
    std::optional<double> flow_shift;      ///< SimpleTuner's override of flow_schedule_shift
    bool is_high_noise_expert = false;
};

const std::vector<WanFlavour>& wan_flavours();
std::vector<std::string> wan_flavour_names();
/// Throws st::Error listing the known names.
const WanFlavour& find_flavour(const std::string& name);

/// Where the transformer of a model lives.
/// Where the weights, config.json and model_index.json are (st::kit::locate_model).
using TransformerLocation = st::kit::ModelLocation;

/// `subfolder`: "transformer" / "transformer_2" inside a pipeline folder, or "" / "none" when
/// `path` is itself the transformer (folder or file). A pipeline folder without the subfolder,
/// a folder that is not Wan (model_index.json of another pipeline, no weights), a missing path
/// or a hub id (st never downloads) are st::Errors saying what was expected where.
/// `variant` ("bf16", "fp16") picks diffusion_pytorch_model.<variant>.safetensors.
TransformerLocation locate_transformer(const std::filesystem::path& path, const std::string& subfolder,
                                       const std::string& variant = "");
std::shared_ptr<st::sdk::TensorSource> open_transformer_weights(const TransformerLocation& location);

/// `boundary_ratio` of a pipeline's model_index.json (nullopt when absent or null).
std::optional<double> read_boundary_ratio(const std::filesystem::path& model_index_json);

struct TransformerLoadOptions {
    std::string subfolder = "transformer";
    std::string variant;
    at::ScalarType dtype = at::kFloat;  ///< compute dtype (fp32-kept modules stay fp32)
    at::Device device = at::kCPU;
    /// Frozen base weights (LoRA runs, inference): stored form of the Linear weights (st/base_weights.h).
    st::sdk::BaseWeightPlan base;
};

struct LoadedTransformer {
    WanTransformer3DModel model{nullptr};
    WanCheckpointInfo info;
    TransformerLocation location;
};

/// `plan` completed with the Wan rules of SimpleTuner's quantisation (helpers/training/quantisation
/// _quanto_model for model_family wan / wan_s2v): int8-quanto leaves norms, proj_out, embeddings,
/// ffn, scale/shift tables, time and condition embedders unquantised; int8-torchao takes every Linear
/// with sizes divisible by 16.
st::sdk::BaseWeightPlan wan_base_weight_plan(st::sdk::BaseWeightPlan plan);

/// Locates, detects (names + shapes; cross-checked against config.json when present), builds and
/// loads strictly (base weights in options.base's form, block groups offloaded to disk when it says
/// so). Logs the detected variant in one line.
LoadedTransformer load_transformer(const std::filesystem::path& path,
                                   const TransformerLoadOptions& options = {});

/// Writes `dir`/config.json and `dir`/diffusion_pytorch_model.safetensors (diffusers names,
/// tensors cast to `dtype` except the fp32-kept ones).
void save_transformer(WanTransformer3DModelImpl& model, const std::filesystem::path& dir,
                      at::ScalarType dtype = at::kFloat);

}  // namespace st::plugins::wan
