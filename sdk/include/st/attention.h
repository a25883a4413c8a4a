// The one attention entry point of st. Every model calls this; the implementation is picked at
// build time: on LibTorch >= 2 the fused scaled_dot_product_attention, on 1.13 a chunked
// online-softmax kernel whose memory does not grow with Lq x Lk (forward and backward: the
// backward recomputes scores chunk by chunk instead of keeping them).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace st::sdk {

/// Plugin -> libst_sdk, and it grows: new fields are appended after the last one, and attention()
/// reads a field only when `struct_size` (set by the plugin's compiler, never by hand) covers it, so
/// a plugin built against an older SDK gets the older behaviour.
struct AttentionOptions {
    uint32_t struct_size = sizeof(AttentionOptions);
    std::optional<double> scale;  ///< default 1/sqrt(head_dim)
    /// Optional key mask [B, Lk] (true/1 = attend). Rows with no valid key produce zeros.
    at::Tensor key_mask;
    bool causal = false;
    /// Query/key chunk sizes of the chunked kernel (0 = automatic from a memory budget).
    int64_t q_chunk = 0;
    int64_t k_chunk = 0;
    // --- SDK ABI 4.0 (Gemma-2) -------------------------------------------------------------
    /// Logit soft-capping: scores <- softcap * tanh(scores / softcap), applied to the scaled
    /// scores BEFORE the key mask / causal / window masking (transformers Gemma-2 order). 0 = off;
    /// negative or non-finite is an st::Error.
    double softcap = 0;
    /// Sliding window, only together with `causal`: query i sees keys j with i - window < j <= i
    /// (itself and the previous window - 1 keys; transformers Gemma-2 masks k <= q - window).
    /// 0 = unlimited; negative, or > 0 without causal, is an st::Error.
    int64_t window = 0;
};

/// q [B,H,Lq,D], k/v [B,H_kv,Lk,D] -> [B,H,Lq,D]. Differentiable. Computes the softmax in float32
/// for half/bfloat16 inputs and returns the input dtype.
///
/// Grouped-query attention (SDK ABI >= 4.0): k and v may have fewer heads than q. H must be a
/// multiple of H_kv and kv head j serves the query heads j*g .. j*g+g-1 (g = H / H_kv), as
/// transformers' repeat_kv; gradients of k and v sum over their group.
///
/// Masks combine: key_mask, causal and window all apply; a query row left with no valid key yields
/// zeros (and zero gradients). transformers' eager attention instead averages v uniformly over all
/// keys on such a row (its additive mask is finfo.min, not -inf); with right padding that row is a
/// padding row and happens only when a padding run is longer than the window.
/// Throws st::Error on inconsistent shapes, dtypes, devices or options.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

/// Which implementation this build uses ("chunked-online-softmax" or "sdpa").
const char* attention_backend();

}  // namespace st::sdk
