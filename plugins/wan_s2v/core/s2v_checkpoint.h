// Locating, inspecting, loading and saving Wan 2.2 S2V transformers: a diffusers pipeline folder
// (model_index.json + transformer/), a transformer folder (config.json +
// diffusion_pytorch_model[.variant].safetensors or a sharded index), or a single original/ComfyUI
// file (optionally prefixed `model.diffusion_model.`). fp32/bf16/fp16 on disk; strict.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/key_map.h"
#include "core/s2v_config.h"
#include "core/s2v_transformer.h"
#include "st/kit/diffusers_model.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan_s2v {

using st::plugins::wan::KeyLayout;

/// The kit's CheckpointFacts plus the S2V config; variant: "s2v-14b-2.2" for the released shapes,
/// else "s2v custom (dim D, N layers)".
struct S2VCheckpointInfo : st::kit::CheckpointFacts {
    WanS2VConfig config;
    /// One line for the log: "s2v-14b-2.2 (original layout, 1260 tensors, BF16 x1260; dim ...)".
    std::string summary() const { return CheckpointFacts::summary(describe(config)); }
};

/// Reads names/shapes of `source` (no tensor data): layout, prefix and config (see
/// WanS2VConfig::detect_from_weights for what the weights cannot show). Throws st::Error when the
/// source is not an S2V transformer (naming the marker tensors and the first keys found).
S2VCheckpointInfo inspect_s2v_transformer(
    const st::sdk::TensorSource& source,
    const std::optional<std::vector<int64_t>>& audio_inject_layers_hint = std::nullopt);

/// The key map for st::sdk::load_strict: file name (with prefix, either layout) -> diffusers name.
/// A name outside the table is returned unchanged, so strict loading reports it as unexpected.
std::string s2v_to_diffusers_key(const std::string& file_name, const S2VCheckpointInfo& info);

/// Where the weights and config.json are (st::kit::locate_model).
using S2VTransformerLocation = st::kit::ModelLocation;

/// `path`: a pipeline folder (uses `subfolder`, default "transformer"), a transformer folder, a
/// weights file or a sharded index. "" / "none" subfolder: `path` is the transformer itself.
/// `variant` ("bf16", "fp16") picks diffusion_pytorch_model.<variant>.safetensors. Throws st::Error
/// saying what was expected where (never downloads).
S2VTransformerLocation locate_s2v_transformer(const std::filesystem::path& path,
                                              const std::string& subfolder = "transformer",
                                              const std::string& variant = "");

/// Opens the weights of `location` and inspects them; when `config` is given, or a config.json sits
/// beside the weights, its audio_inject_layers are used and its widths cross-checked against the
/// weights (st::Error naming both values on a mismatch), and info.config is that config. For probes
/// of any size (inspect_s2v_transformer alone needs the released injector layout).
S2VCheckpointInfo inspect_s2v_location(const S2VTransformerLocation& location,
                                       const std::optional<WanS2VConfig>& config = std::nullopt);

struct S2VLoadOptions {
    std::string subfolder = "transformer";
    std::string variant;
    at::ScalarType dtype = at::kFloat;  ///< compute dtype (fp32-kept modules stay fp32)
    at::Device device = at::kCPU;
    /// Frozen base weights (LoRA runs, inference): stored form of the Linear weights (st/base_weights.h,
    /// Wan's quanto rules), block groups offloaded to disk when it says so.
    st::sdk::BaseWeightPlan base;
    /// The config to build when no config.json sits beside the weights (single original files of
    /// non-released sizes: the injector positions are not in the weights). Cross-checked against
    /// the weights' shapes.
    std::optional<WanS2VConfig> config;
};

struct LoadedS2VTransformer {
    WanS2VTransformer3DModel model{nullptr};
    S2VCheckpointInfo info;
    S2VTransformerLocation location;
};

/// Locates, detects (names + shapes; cross-checked against config.json / options.config), builds
/// and loads strictly (missing, unexpected and wrong-shape tensors listed in one st::Error naming the
/// file). Logs the detected variant in one line.
LoadedS2VTransformer load_s2v_transformer(const std::filesystem::path& path,
                                          const S2VLoadOptions& options = {});

/// Writes `dir`/config.json and `dir`/diffusion_pytorch_model.safetensors (diffusers names, tensors
/// cast to `dtype` except the fp32-kept ones). Loadable by load_s2v_transformer and diffusers.
void save_s2v_transformer(WanS2VTransformer3DModelImpl& model, const std::filesystem::path& dir,
                          at::ScalarType dtype = at::kFloat);

/// A model with every parameter drawn deterministically from `seed` (st::plugins::wan::
/// randomize_parameters: the golden fixtures' scheme), in compute dtype `dtype`. For tests,
/// benchmarks and `make-model`.
WanS2VTransformer3DModel make_random_s2v_transformer(const WanS2VConfig& config, uint64_t seed,
                                                     at::ScalarType dtype = at::kFloat);

}  // namespace st::plugins::wan_s2v
