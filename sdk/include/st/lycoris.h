// LyCORIS adapters for st::sdk::Linear (SimpleTuner's `lora_type: lycoris`): LoKr, LoHa and LoCon, with
// the shapes, initialisation, scale and tensor names of the LyCORIS project (lycoris/modules/lokr.py,
// loha.py, locon.py, functional/general.py `factorization`); the weight delta is rebuilt and applied as
// LyCORIS's default (non-bypass) forward does: y = W x + b + multiplier * dW x. LoCon's files
// (lora_down.weight / lora_up.weight / alpha) are plain LoRA files to every loader; loading one into a
// module that carries a LoCon adapter fills that adapter. docs/lora.md has the formulas.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace st::sdk {

/// LyCORIS's factorization(dimension, factor): (m, n) with m * n = dimension and m <= n; factor > 0
/// dividing dimension gives (min(factor, d/factor), max(...)); otherwise the most balanced split
/// with m <= factor (factor < 0: no limit).
std::pair<int64_t, int64_t> lycoris_factorization(int64_t dimension, int64_t factor = -1);

/// One module's LyCORIS settings (lycoris_config.json keys: algo, linear_dim, linear_alpha, factor,
/// full_matrix, decompose_both, rs_lora, use_scalar, rank_dropout, module_dropout; per module after
/// apply_preset's maps).
struct LycorisOptions {
    std::string algo = "lokr";  ///< "lokr" | "loha" | "locon" ("lora" is read as locon, as LyCORIS does)
    int64_t dim = 4;            ///< linear_dim (LoKr: rank of the low-rank w2, when it is low-rank)
    double alpha = 1.0;         ///< linear_alpha; 0 = dim
    int64_t factor = -1;
    bool full_matrix = false;
    bool decompose_both = false;
    /// rs_lora: scale = alpha / sqrt(dim) (rank-stabilised); LyCORIS then saves alpha * sqrt(dim), so
    /// a loader's alpha / dim gives the same scale. Refused when both LoKr factors are full (LyCORIS's
    /// scale sqrt(dim) would be read back as 1 by every loader).
    bool rs_lora = false;
    /// In training only (lycoris/modules/lokr.py, loha.py forward / get_weight): module_dropout is the
    /// probability that a forward skips the adapter (one uniform draw per forward), rank_dropout the
    /// probability that each output row of dW is zeroed (one draw per row; with rank_dropout_scale the
    /// kept rows are divided by the kept fraction). Drawn from the Linear's dropout generator.
    double rank_dropout = 0.0;
    double module_dropout = 0.0;
    bool rank_dropout_scale = false;
    /// use_scalar: a trainable 0-dim `scalar` (starting at 0) multiplies dW, and w2 (LoKr's lokr_w2 or
    /// lokr_w2_b; LoHa's hada_w2_a) starts random instead of zero. Files hold w1 (lokr_w1 / lokr_w1_a /
    /// hada_w1_a) times the scalar and no scalar; loading one into an adapter sets its scalar to 1.
    bool use_scalar = false;
};

/// The adapter's parameters, registered under LyCORIS's names (LoCon: `lora_down` [r, in], `lora_up`
/// [out, r], in files `lora_down.weight`, `lora_up.weight`): LoKr `lokr_w1` (or `lokr_w1_a`,
/// `lokr_w1_b`) and `lokr_w2` (or `lokr_w2_a`, `lokr_w2_b`); LoHa `hada_w1_a`, `hada_w1_b`,
/// `hada_w2_a`, `hada_w2_b`.
class LycorisAdapterImpl : public torch::nn::Cloneable<LycorisAdapterImpl> {
  public:
    /// Shapes from LyCORIS's rules for a Linear(in, out); every parameter zero until init_weights()
    /// or load(). st::Error for an unknown algo or dim < 1.
    LycorisAdapterImpl(int64_t in, int64_t out, LycorisOptions options);
    /// With the parameter shapes and scale given (what from_tensors() found in a file).
    LycorisAdapterImpl(int64_t in, int64_t out, LycorisOptions options,
                       std::map<std::string, std::vector<int64_t>> shapes, double scale, double saved_alpha);
    /// From a file's tensors (names as above) and its alpha: the algo and the full/low-rank parts
    /// follow the tensors; st::Error naming the tensor when a shape does not fit Linear(in, out).
    static std::shared_ptr<LycorisAdapterImpl> from_tensors(int64_t in, int64_t out,
                                                            const std::map<std::string, at::Tensor>& tensors,
                                                            std::optional<double> alpha,
                                                            const std::string& what);

    void reset() override;
    void pretty_print(std::ostream& stream) const override;
    /// LyCORIS's initialisation: LoKr w1 (and w2_a) Kaiming-uniform(a = sqrt(5)), w2 or w2_b zero; LoHa
    /// w1_b ~ N(0, 1), w1_a ~ N(0, 0.1), w2_b ~ N(0, 1), w2_a zero. dW = 0 at the start either way.
    void init_weights(uint64_t seed);

    /// scale * kron(w1, w2) (LoKr) or scale * (w1_a w1_b) * (w2_a w2_b) (LoHa), [out, in], in the
    /// parameters' dtype, in the autograd graph (times the scalar with use_scalar).
    at::Tensor delta_weight() const;
    /// The tensors a file holds, by LyCORIS's names (the scalar folded into w1, as LyCORIS saves).
    std::map<std::string, at::Tensor> file_tensors() const;
    /// alpha / dim (rs_lora: alpha / sqrt(dim)); LoKr with both factors full: 1 (LyCORIS then saves
    /// alpha = dim).
    double scale() const { return scale_; }
    /// The `alpha` LyCORIS saves beside the weights.
    double saved_alpha() const { return saved_alpha_; }
    const std::string& algo() const { return options_.algo; }
    const LycorisOptions& options() const { return options_; }
    /// Copies another adapter's values in place (same names and shapes, else st::Error).
    void copy_from(const LycorisAdapterImpl& other, const std::string& what);

  private:
    void plan_shapes();
    int64_t in_, out_;
    LycorisOptions options_;
    std::map<std::string, std::vector<int64_t>> shapes_;  ///< parameter name -> shape
    double scale_ = 1.0;
    double saved_alpha_ = 1.0;
};
TORCH_MODULE(LycorisAdapter);

}  // namespace st::sdk
