// LoRA for st: a Linear layer that can carry one low-rank adapter, injection by module-name
// suffix (SimpleTuner / PEFT semantics), and LoRA files in the formats users exchange.
//
// Who calls: model plugins build their attention / FFN projections from st::sdk::Linear (a drop-in
// replacement of torch::nn::Linear: same `weight`/`bias` names, same initialisation, same
// forward); the host injects adapters (`inject_lora`) for `model_type: lora`, trains only
// `lora_parameters`, saves them with `save_lora` and loads user files with `load_lora`
// (`st-host generate --lora FILE[:strength]`).
//
// Adapter math (PEFT `LoraLayer`, peft/tuners/lora/layer.py `Linear.forward`):
//   y = base(x) + multiplier * (alpha / rank) * B(A(dropout(x)))
// with A = `lora_A.weight` [rank, in] (Kaiming-uniform, a = sqrt(5), as PEFT) and
// B = `lora_B.weight` [out, rank] (zeros), so a fresh adapter leaves the output unchanged.
// Dropout applies in training mode only. `multiplier` is the user strength (1 in training).
//
// File formats (docs/lora.md; reference/lora-formats-and-performance.md §4):
//   diffusers  `transformer.<module>.lora_A.weight` [r, in], `.lora_B.weight` [out, r]; rank and alpha
//              in the safetensors metadata `lora_adapter_metadata` (PEFT LoraConfig JSON, keys
//              prefixed `transformer.` as diffusers' save_lora_weights writes them).
//   comfyui    `diffusion_model.<native module>.lora_A.weight` / `.lora_B.weight` + scalar fp32
//              `.alpha` per module (the native names come from the caller's name map).
// Read as well: native names with `lora_down`/`lora_up`, kohya `lora_unet_<module_with_underscores>`.
//
// LyCORIS (st/lycoris.h): a Linear carries a LoKr or LoHa adapter instead of a LoRA one
// (`add_lycoris`); saved with LyCORIS's tensor names: comfyui `diffusion_model.<native>.lokr_w1` ...
// `.alpha`, diffusers LyCORIS's own `lycoris_<module_with_underscores>.lokr_w1` ... `.alpha`; both
// read back (also `lycoris_` names of the native modules).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "st/base_weights.h"
#include "st/lycoris.h"
#include "st/tensors.h"

namespace st::sdk {

/// Adapter hyper-parameters (SimpleTuner `lora_rank`, `lora_alpha`, `lora_dropout`).
struct LoraConfig {
    int64_t rank = 16;
    /// nullopt: alpha = rank (SimpleTuner's and PEFT's default), i.e. scale 1.
    std::optional<double> alpha;
    double dropout = 0.0;
    /// Seeds the Kaiming-uniform init of lora_A. inject_lora mixes in a hash of each module name,
    /// so one module's init does not depend on which other modules are targeted.
    uint64_t seed = 0;

    double effective_alpha() const { return alpha ? *alpha : static_cast<double>(rank); }
};

/// One LoRA factor: a bias-free matrix registered as `weight` (PEFT names `lora_A.weight`,
/// `lora_B.weight`). Not a st::sdk::Linear, so injection never targets it.
class LoraFactorImpl : public torch::nn::Cloneable<LoraFactorImpl> {
  public:
    LoraFactorImpl(int64_t rows, int64_t cols);
    void reset() override;
    void pretty_print(std::ostream& stream) const override;
    at::Tensor weight;  ///< [rows, cols]

  private:
    int64_t rows_;
    int64_t cols_;
};
TORCH_MODULE(LoraFactor);

/// torch::nn::LinearOptions' subset we use.
struct LinearOptions {
    LinearOptions(int64_t in_features, int64_t out_features, bool with_bias = true)
        : in(in_features), out(out_features), bias(with_bias) {}
    int64_t in;
    int64_t out;
    bool bias;
};

/// Drop-in replacement of torch::nn::Linear (same parameter names `weight` [out, in] and `bias`
/// [out], same default initialisation from the global generator) that can carry one LoRA adapter
/// registered as the submodules `lora_A` and `lora_B`, so named_parameters() shows
/// `<path>.lora_A.weight` / `<path>.lora_B.weight`.
class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
  public:
    LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
    explicit LinearImpl(const LinearOptions& options);

    /// (Re)creates weight/bias with torch::nn::Linear's init, and the adapter when one is attached
    /// (used by clone()).
    void reset() override;
    /// torch::nn::Linear's init: weight kaiming_uniform(a = sqrt(5)), bias U(-1/sqrt(in), 1/sqrt(in)).
    void reset_parameters();
    void pretty_print(std::ostream& stream) const override;

    /// x [..., in] -> [..., out]: base(x) + multiplier * alpha/rank * B(A(dropout(x))).
    at::Tensor forward(const at::Tensor& x);

    /// Attaches an adapter (A Kaiming-uniform from `config.seed`, B zeros), on the device and in the
    /// dtype of `weight`. Throws st::Error when one is already attached or rank < 1.
    void add_lora(const LoraConfig& config);
    bool has_lora() const { return !lora_A.is_empty(); }
    int64_t lora_rank() const;  ///< throws without adapter
    double lora_alpha() const;  ///< throws without adapter
    void set_lora_alpha(double alpha);
    double lora_dropout() const { return lora_dropout_; }
    /// The generator of the dropout masks (the run's generator, saved with checkpoints); unset: ATen's
    /// default generator. A checkpointed block re-runs with the generator's state of its forward
    /// (st/kit/block_runner.h), so the recomputed masks are the forward's.
    void set_dropout_generator(std::optional<at::Generator> generator) {
        dropout_generator_ = std::move(generator);
    }
    /// The strength multiplier (1 by default; validation / generation strength). Throws while merged.
    void set_lora_scale(double multiplier);
    double lora_scale() const { return lora_multiplier_; }
    /// multiplier * alpha / rank.
    double lora_scaling() const;
    /// multiplier * alpha / rank * B @ A, [out, in], in float32.
    at::Tensor lora_delta() const;

    /// Folds the adapter into `weight` (forward then skips the LoRA branch) / takes it back out.
    /// Both are no-ops when already in that state; throw without adapter.
    void merge_lora();
    void unmerge_lora();
    bool lora_merged() const { return merged_; }

    /// weight and bias stop requiring gradients (the caller's choice; inject_lora does not freeze).
    void freeze_base();

    /// Attaches a LyCORIS adapter (registered as the submodule `lycoris`), initialised from `seed`,
    /// on the device and in the dtype of `weight`. st::Error when an adapter of either kind is attached.
    void add_lycoris(const LycorisOptions& options, uint64_t seed);
    /// Attaches `adapter` (loaded from a file), or copies its values into the attached one when the
    /// shapes agree (an optimizer holding the attached parameters keeps them).
    void set_lycoris(const std::shared_ptr<LycorisAdapterImpl>& adapter, const std::string& what);
    bool has_lycoris() const { return lycoris_ != nullptr; }
    LycorisAdapterImpl* lycoris() const { return lycoris_.get(); }
    /// Either kind of adapter.
    bool has_adapter() const { return has_lora() || has_lycoris(); }

    /// Installs the frozen base weight `w` [out, in] in stored form (st/base_weights.h): keep adopts
    /// `w` as it is (a view of a mapped file stays one), bf16 converts, int8 quantises (weight becomes
    /// int8 and weight_scale [out] fp32 is set); compute copies into weight's dtype (not stored).
    /// weight stops requiring grad. st::Error on a shape mismatch.
    void set_base_weight(const at::Tensor& w, BasePrecision precision);
    /// Whether weight is in stored form (forward rebuilds it in the input's dtype; never written).
    bool base_stored() const { return stored_; }
    /// The base weight in `dtype` (dequantised when int8), not a view of weight when stored.
    at::Tensor dense_weight(at::ScalarType dtype) const;
    /// Leaves stored form: weight becomes a writable dense copy in `dtype` (before an in-place change).
    void materialize(at::ScalarType dtype);
    /// The dtype this layer computes in (adapters are made in it): weight's dtype, or for a stored
    /// weight the dtype recorded by set_compute_dtype (that of the weight it replaced until then).
    at::ScalarType compute_dtype() const { return stored_ ? compute_dtype_ : weight.scalar_type(); }
    /// A dense weight is converted to `dtype`; a stored one keeps its form and records it. Bias too.
    void set_compute_dtype(at::ScalarType dtype);

    const LinearOptions& options() const { return options_; }

    at::Tensor weight;  ///< [out, in] (stored form: the file's dtype, bf16 or int8)
    /// [out] fp32 when weight is int8, else undefined. Not a registered buffer (it is made from the
    /// weight, never read from or written to a file): stored_linear moves it to the weight's device.
    at::Tensor weight_scale;
    at::Tensor bias;             ///< [out] or undefined
    LoraFactor lora_A{nullptr};  ///< [rank, in]
    LoraFactor lora_B{nullptr};  ///< [out, rank]

  private:
    void register_adapter(int64_t rank);
    LinearOptions options_;
    int64_t lora_rank_ = 0;
    double lora_alpha_ = 0.0;
    double lora_dropout_ = 0.0;
    std::optional<at::Generator> dropout_generator_;
    double lora_multiplier_ = 1.0;
    bool merged_ = false;
    double merged_scaling_ = 0.0;
    std::shared_ptr<LycorisAdapterImpl> lycoris_;
    bool stored_ = false;
    at::ScalarType compute_dtype_ = at::kFloat;
};
TORCH_MODULE(Linear);

/// Converts every parameter of `root` to `dtype_for(name)` (in place of its data, as set_data); the
/// stored base weight of an st::sdk::Linear keeps its form and the layer records the dtype as its
/// compute dtype instead.
void convert_parameters(torch::nn::Module& root,
                        const std::function<at::ScalarType(const std::string& name)>& dtype_for);

/// How many st::sdk::Linear base weights under `root` are in each form ("dense", "int8", "BFloat16"
/// for a stored bf16 weight, ...), for the one-line log.
std::map<std::string, int64_t> count_base_precisions(torch::nn::Module& root);

/// Every st::sdk::Linear under `root` by dotted module path (root itself is "").
std::vector<std::pair<std::string, LinearImpl*>> linear_modules(torch::nn::Module& root);

/// Whether `module_path` ends with `suffix` on a dot boundary ("blocks.0.attn1.to_out.0" ends with
/// "to_out.0" and "attn1.to_out.0", not with "out.0"). PEFT's target_modules rule.
bool module_matches_suffix(const std::string& module_path, const std::string& suffix);

/// Adds an adapter to every st::sdk::Linear whose path matches one of `target_suffixes`; returns the
/// injected paths in module order. Throws st::Error naming the suffixes when nothing matched, or
/// when a matched module already carries an adapter.
std::vector<std::string> inject_lora(torch::nn::Module& root, const std::vector<std::string>& target_suffixes,
                                     const LoraConfig& config);

/// Adds a LyCORIS adapter to every st::sdk::Linear for which `choose(path)` gives options (each
/// initialised from `seed` and the path); returns the injected paths in module order (maybe none).
std::vector<std::string> inject_lycoris(
    torch::nn::Module& root, const std::function<std::optional<LycorisOptions>(const std::string&)>& choose,
    uint64_t seed);

/// Only the adapter parameters (`<path>.lora_A.weight`, `<path>.lora_B.weight`, LyCORIS adapters'
/// `<path>.lycoris.<lokr_w1, ...>`), by name.
TensorMap lora_parameters(torch::nn::Module& root);

/// requires_grad false on every parameter except the adapters'. Returns the number left trainable.
int64_t freeze_all_but_lora(torch::nn::Module& root);

/// Every adapter under `root` draws its dropout masks from `generator` (see set_dropout_generator).
void set_lora_dropout_generator(torch::nn::Module& root, std::optional<at::Generator> generator);

/// Sets the strength multiplier of every adapter under `root`.
void set_lora_scale(torch::nn::Module& root, double multiplier);

// ---- files (sdk/src/lora_format.cpp) -------------------------------------------------------------

enum class LoraFormat { diffusers, comfyui };
/// "diffusers" | "comfyui" (SimpleTuner's `lora_format` values); throws st::Error otherwise.
LoraFormat parse_lora_format(const std::string& name);
const char* lora_format_name(LoraFormat format);

/// Our module path ("blocks.0.attn1.to_q") -> the model's native module path ("blocks.0.self_attn.q");
/// an empty result means "no native name". An empty std::function means identity. Supplied by the
/// model plugin (the SDK knows no model).
using LoraNameMap = std::function<std::string(const std::string&)>;

/// Writes the adapters under `root` to `path` (atomic, st::sdk::save_safetensors), weights in
/// their training dtype, alphas as fp32 scalars. diffusers: every adapter must share one rank and
/// alpha (they are written once, in the metadata). comfyui: modules named through `to_native`
/// (a module without a native name is an error). `metadata` is added to the file's metadata.
/// Throws st::Error when `root` has no adapter. Returns the number of tensors written.
size_t save_lora(const std::filesystem::path& path, torch::nn::Module& root, LoraFormat format,
                 const LoraNameMap& to_native = {}, const std::map<std::string, std::string>& metadata = {});

/// The tensors save_lora would write (no file), with the metadata to write beside them.
TensorMap lora_state_dict(torch::nn::Module& root, LoraFormat format, const LoraNameMap& to_native,
                          std::map<std::string, std::string>* metadata);

/// Loads a LoRA file into `root`. Accepted keys (any mix):
///   `transformer.<module>.lora_A.weight|lora_B.weight` (alpha from `lora_adapter_metadata`,
///   else alpha = rank); `diffusion_model.<module>.{lora_A,lora_B,lora_down,lora_up}.weight` and
///   `.alpha` (module: native name through `to_native`, or our name); kohya
///   `lora_unet_<module with '_' for '.'>.{lora_down,lora_up}.weight` + `.alpha`; PEFT's
///   `.default` adapter infix. Scale = strength * alpha / rank (diffusers folds the same alpha/rank).
/// merge false: attaches an adapter to each named module (or overwrites an attached one of the
/// same rank) with multiplier `strength`. merge true: adds strength*alpha/rank*B@A into the base
/// weights (several files can be stacked that way). Unknown or unmatched keys -> st::Error listing
/// the first offenders; a shape mismatch -> st::Error with both shapes. Returns the module paths.
std::vector<std::string> load_lora(const std::filesystem::path& path, torch::nn::Module& root,
                                   double strength = 1.0, const LoraNameMap& to_native = {},
                                   bool merge = false);

}  // namespace st::sdk
