// Frozen base weights in the form a run asks for (SimpleTuner's `base_model_precision`): the weights
// of a LoRA run's base Linear layers never change, so they may stay in the file's dtype (memory-
// mapped, zero-copy) or be stored int8, and are turned into the compute dtype only for the matmul.
//
//   precision   stored as                                       SimpleTuner values
//   compute     a parameter in the compute dtype (a copy)       (full training; the default before)
//   keep        the file's tensor as it is (a view of the        no_change (default), bf16 on a bf16
//               mapped file when aligned: no copy, no RSS         file
//               until read, pages the kernel may drop)
//   bf16        bfloat16 (converted once when the file is not)  bf16
//   fp32        float32 (converted once)                        fp32 (st's own value: a full-precision
//                                                               base for comparisons)
//   int8        int8 + one fp32 scale per output channel:        int8-quanto, int8-torchao
//               scale = max|w_row| / 127, q = round(w / scale)
//
// The matmul of a stored weight (stored_linear) rebuilds the dense weight in the input's dtype for
// the forward and again in backward, instead of letting autograd keep it: a stored weight costs its
// stored bytes, whatever the checkpointing. Only inputs (and a bias that needs it) get gradients.
//
// Which Linear layers int8 covers follows SimpleTuner: quanto excludes a family's sensitive modules
// (Wan: norms, proj_out, embeddings, ffn, condition_embedder, ...), torchao takes every Linear whose
// sizes are multiples of 16; the others are stored `keep`.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace st::sdk {

enum class BasePrecision { compute, keep, bf16, int8, fp32 };

/// "compute" | "keep" | "bf16" | "int8" | "fp32".
const char* base_precision_name(BasePrecision p);

/// What a run asks of its frozen base weights (host -> family, st/model.h BaseWeights capability).
struct BaseWeightPlan {
    BasePrecision precision = BasePrecision::compute;
    /// The SimpleTuner value it came from ("int8-quanto", "no_change", ...), for logs and module choice.
    std::string source_value;
    /// Patterns (fnmatch, on dotted module paths) of Linear layers int8 leaves in `keep` form.
    std::vector<std::string> int8_exclude;
    /// int8 only Linear layers whose in and out sizes are multiples of this (torchao: 16); 1: all.
    int64_t int8_multiple = 1;
    /// group_offload_to_disk_path: block groups' stored weights are written there and read back
    /// from disk as the blocks run (their pages dropped after), bounding resident memory. Empty: off.
    std::filesystem::path offload_dir;
    int64_t blocks_per_group = 1;  ///< group_offload_blocks_per_group
    /// group_offload_use_stream: prefetch the next group while the current one runs.
    bool prefetch = true;

    bool is_default() const { return precision == BasePrecision::compute && offload_dir.empty(); }
};

/// SimpleTuner's base_model_precision value -> plan (no_change -> keep; bf16; int8-quanto with its Wan
/// exclusions given by the caller; int8-torchao). st::Error listing the supported values otherwise.
BasePrecision parse_base_precision(const std::string& value, const std::string& key = "base_model_precision");

/// The precision `plan` gives the Linear at `module_path` of size in x out (int8 falls back to keep for
/// excluded or odd-sized layers).
BasePrecision base_precision_for(const BaseWeightPlan& plan, const std::string& module_path, int64_t in,
                                 int64_t out);

/// While one is alive on this thread, st::sdk::Linear leaves its weight uninitialised (at::empty: no
/// memory is touched), for models a strict load fills right after construction.
class DeferredInit {
  public:
    DeferredInit();
    ~DeferredInit();
    DeferredInit(const DeferredInit&) = delete;
    DeferredInit& operator=(const DeferredInit&) = delete;
    static bool active();

  private:
    bool previous_;
};

/// w [out, in] (any float dtype) -> q int8 [out, in], scale float32 [out] (max |row| / 127; rows of
/// zeros get scale 1). Round half to even, as torch.round.
struct Int8Weight {
    at::Tensor q;
    at::Tensor scale;
};
Int8Weight quantize_int8(const at::Tensor& w);
/// q * scale[:, None] in `dtype`.
at::Tensor dequantize_int8(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype);

/// x [..., in] @ dense(w)^T + bias, dense(w) = w in x's dtype (int8: dequantised with `scale`), rebuilt
/// in backward rather than saved. Gradients: x, and bias when it requires grad; never w.
at::Tensor stored_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale,
                         const at::Tensor& bias);

}  // namespace st::sdk
