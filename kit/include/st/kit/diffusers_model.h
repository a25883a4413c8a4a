// A diffusers-style model on disk, the way every family's transformer is found, inspected, loaded and
// saved: a pipeline folder (model_index.json + one subfolder per network), a network folder
// (config.json + diffusion_pytorch_model[.<variant>].safetensors[.index.json]) or a single file (the
// original / ComfyUI layout, with a key prefix). st never downloads: a hub id gets a message saying how
// to fetch the folder.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "st/base_weights.h"
#include "st/kit/key_map.h"
#include "st/safetensors.h"

namespace torch::nn {
class Module;
}

namespace st::kit {

/// What a model path is asked to be, for locate_model().
struct ModelQuery {
    std::string component;  ///< error prefix ("model.wan@1")
    std::string what;       ///< "Wan transformer" (messages)
    /// Expected `_class_name` of the network's config.json ("WanTransformer3DModel"); "" = any.
    std::string config_class;
    /// Prefix of a pipeline's model_index.json `_class_name` ("Wan"); "" = any pipeline.
    std::string pipeline_prefix;
    /// Subfolder inside a pipeline ("transformer"); "" or "none": the path is the network itself.
    std::string subfolder = "transformer";
    /// "bf16", "fp16": diffusion_pytorch_model.<variant>.safetensors; "" = the plain name.
    std::string variant;
};

struct ModelLocation {
    std::filesystem::path weights;                     ///< .safetensors file or .safetensors.index.json
    std::optional<std::filesystem::path> config_json;  ///< the network's config.json, if any
    std::optional<std::filesystem::path> model_index;  ///< the pipeline's model_index.json, if any
    std::string subfolder;                             ///< the subfolder used ("" = none)
};

/// True for "Org/Name" (one slash, not a path that exists or starts like a path).
bool looks_like_hub_id(const std::string& path);
/// st::Error saying that `path` (the value of `key`) does not exist; for a hub id, how to download it.
[[noreturn]] void missing_model_path(const std::filesystem::path& path, const std::string& key,
                                     const std::string& component);
/// Sorted entries of a folder ("vae/" for folders), for messages.
std::vector<std::string> list_dir(const std::filesystem::path& dir);

/// Finds the weights (and config.json / model_index.json) of `path` as `query` describes. st::Errors
/// say what was expected where: a missing path or hub id, a pipeline of another family, a missing
/// subfolder (naming what the folder holds, and whether model_index.json lists it), a config.json
/// of another class, no or several weights files.
ModelLocation locate_model(const std::filesystem::path& path, const ModelQuery& query);
/// Opens the weights (a sharded index or one file); errors gain "while opening the <what> weights".
std::shared_ptr<sdk::TensorSource> open_model_weights(const ModelLocation& location, const std::string& what);

/// What a family's detector learns from a checkpoint's files besides its config.
struct CheckpointFacts {
    KeyLayout layout = KeyLayout::diffusers;
    std::string prefix;                    ///< stripped from every key ("" or "model.diffusion_model.")
    std::map<std::string, size_t> dtypes;  ///< on-disk dtype -> tensor count
    size_t tensor_count = 0;
    std::string variant;  ///< the family's variant name ("t2v-1.3b-2.1", "<kind> custom (...)")
    /// "<variant> (<layout> layout[, prefix 'p'], N tensors, BF16 xN; <config_line>)".
    std::string summary(const std::string& config_line) const;
    /// Counts the dtypes and tensors of `source`.
    void count(const sdk::TensorSource& source);
    /// A file key (with prefix, either layout) -> our (diffusers) name through `table`; a name the
    /// table does not know comes back unchanged, so strict loading reports it as unexpected.
    std::string to_ours(const std::string& file_key, const KeyMapTable& table) const;
    /// Our name -> the file's name (for messages about missing tensors).
    std::string to_file(const std::string& ours, const KeyMapTable& table) const;
};

/// The layout and prefix of `source` from marker tensors: the first of `prefixes` (plus "") under
/// which one of `diffusers_markers` or `original_markers` exists. st::Error naming the markers and
/// the first keys found when none does.
void detect_layout(const sdk::TensorSource& source, const std::vector<std::string>& prefixes,
                   const std::vector<std::string>& diffusers_markers,
                   const std::vector<std::string>& original_markers, const std::string& component,
                   const std::string& what, CheckpointFacts* facts);

/// Shapes of a checkpoint under our names, for recovering a config from names and shapes alone.
class ShapeTable {
  public:
    /// `mismatch`: the end of the message when a shape contradicts the others ("the weights fit no
    /// Wan flavour").
    ShapeTable(const sdk::TensorSource& source, const CheckpointFacts& facts, const KeyMapTable& table,
               std::string component, std::string what, std::string mismatch);
    bool has(const std::string& name) const { return shapes_.count(name) > 0; }
    /// The shape of `name`; st::Error naming it in the file's layout when missing, or when it has not
    /// `rank` dimensions (0 = any).
    const std::vector<int64_t>& need(const std::string& name, size_t rank = 0) const;
    /// st::Error when `name` has another shape (`why`: what needs it).
    void expect(const std::string& name, const std::vector<int64_t>& shape, const std::string& why) const;
    /// Distinct indices N of "<head>N." names, which must be 0..n-1 (st::Error otherwise).
    int64_t count_indexed(const std::string& head) const;
    const std::string& describe() const { return describe_; }

  private:
    const CheckpointFacts& facts_;
    const KeyMapTable& table_;
    std::string component_, what_, mismatch_, describe_;
    std::map<std::string, std::vector<int64_t>> shapes_;
};

/// The largest of {128, 64, 32, 16, 12, 8} dividing `dim` (released DiTs use 128), else dim.
int64_t guess_head_dim(int64_t dim);

/// Strictly loads `module` from `source` (names mapped by facts + table). Errors name the missing,
/// unexpected or wrongly shaped tensors and gain "while loading the <what> <variant> from <file>".
/// `base`: the st::sdk::Linear weights are installed in the plan's stored form (st/base_weights.h).
void load_weights(torch::nn::Module& module, const sdk::TensorSource& source, const CheckpointFacts& facts,
                  const KeyMapTable& table, const std::string& component, const std::string& what,
                  const sdk::BaseWeightPlan& base = {});

/// ", base weights: 240 int8, 160 BFloat16 (stored)" for the load log line; "" when none is stored.
std::string describe_base_weights(torch::nn::Module& module, const sdk::BaseWeightPlan& base);

/// Writes `dir`/config.json (`config`) and `dir`/diffusion_pytorch_model.safetensors: every parameter
/// of `module` by name on the CPU, cast to `dtype` unless `keep_fp32(name)`.
void save_model(const torch::nn::Module& module, const std::filesystem::path& dir,
                const nlohmann::json& config, at::ScalarType dtype,
                const std::function<bool(const std::string&)>& keep_fp32, const std::string& component);

/// Fills every parameter of `module` deterministically from `seed` with values that make every
/// branch matter (the golden fixtures' scheme): matrices N(0, 1/fan_in), biases 0.1 N, norm weights
/// 1 + 0.1 N, modulation tables / position embeddings 0.3 N. For make-model presets and tests.
void randomize_parameters(torch::nn::Module& module, uint64_t seed);

/// What randomize_parameters + save_model write, without ever holding the model: the parameters of
/// `module` (which may be built under sdk::DeferredInit, its Linear weights never touched) are drawn one
/// by one, in the same order and with the same values, cast like save_model, and written in shards of
/// at most `shard_bytes` (diffusion_pytorch_model-0000k-of-0000n.safetensors + the .index.json
/// diffusers writes; one plain file when everything fits). Peak memory: one shard.
void write_random_model(const torch::nn::Module& module, const std::filesystem::path& dir,
                        const nlohmann::json& config, at::ScalarType dtype,
                        const std::function<bool(const std::string&)>& keep_fp32, uint64_t seed,
                        uint64_t shard_bytes, const std::string& component);

/// A cheap identity of a model folder (or file) for cache keys: names, sizes and mtimes of its files
/// and the text of its config.json, hashed ("none" for an empty path). Changes when the weights do.
std::string component_fingerprint(const std::filesystem::path& path);

}  // namespace st::kit
