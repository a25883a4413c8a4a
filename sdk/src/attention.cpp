// st::sdk::attention: scaled dot-product attention with a memory footprint linear in the sequence
// lengths.
//
// LibTorch 1.13 has no scaled_dot_product_attention. The chunked kernel here follows the
// FlashAttention-2 algorithm (Dao 2023, "FlashAttention-2", Algorithms 1 and 2) expressed with
// batched ATen matmuls instead of a fused kernel:
//   forward:  for each query chunk, stream over key chunks keeping a running max m, a running
//             normaliser l and an un-normalised accumulator; save logsumexp = m + log(l) per row.
//   backward: recompute every score chunk from q, k and the saved logsumexp
//             (P = exp(S - lse)), with Delta = rowsum(dO * O), dS = P * (dP - Delta).
// Only one [B*H, q_chunk, k_chunk] score block (and a few temporaries of that size) is alive at a
// time, so memory is O((Lq + Lk) * D + q_chunk * k_chunk) instead of O(Lq * Lk).
//
// Conventions shared with at::scaled_dot_product_attention (the LibTorch >= 2.1 path):
//   * causal is "top-left" aligned: query i attends keys j <= i (torch.tril(ones(Lq, Lk))).
//   * key_mask true = attend. Unlike SDPA (NaN), a query row with no valid key yields zeros and
//     zero gradients; both backends here implement that.
#include "st/attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "st/error.h"
#include "st/log.h"

#if defined(TORCH_VERSION_MAJOR) && \
    (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
#define ST_ATTENTION_USE_SDPA 1
#else
#define ST_ATTENTION_USE_SDPA 0
#endif

namespace st::sdk {
namespace {

constexpr const char* kComponent = "sdk.attention";

// Budget of one score block [B*H, q_chunk, k_chunk] in fp32 for automatic chunking. The backward
// holds about four blocks of that size at once (S/P, dP, dS and a product), so ~16 MiB per block
// keeps the working set of a call at a few tens of MB.
constexpr int64_t kAutoBlockBytes = 16ll * 1024 * 1024;
constexpr int64_t kAutoMaxKeyChunk = 1024;

struct ChunkPlan {
    int64_t q_chunk;
    int64_t k_chunk;
};

// Picks chunk sizes: explicit values win (clamped to the lengths); 0 = automatic.
ChunkPlan plan_chunks(int64_t bh, int64_t lq, int64_t lk, int64_t q_req, int64_t k_req) {
    const int64_t elems = kAutoBlockBytes / static_cast<int64_t>(sizeof(float));
    int64_t kc = k_req > 0 ? k_req : std::min<int64_t>(std::max<int64_t>(lk, 1), kAutoMaxKeyChunk);
    // Very many heads: shrink the key chunk too so one query row block still fits the budget.
    if (k_req <= 0 && bh * kc > elems) kc = std::max<int64_t>(1, elems / std::max<int64_t>(1, bh));
    kc = std::max<int64_t>(1, std::min(kc, std::max<int64_t>(lk, 1)));
    int64_t qc = q_req;
    if (qc <= 0) {
        qc = std::max<int64_t>(1, elems / std::max<int64_t>(1, bh * kc));
        if (qc >= 64) qc = qc / 64 * 64;  // keep GEMM row blocks aligned
    }
    qc = std::max<int64_t>(1, std::min(qc, std::max<int64_t>(lq, 1)));
    return {qc, kc};
}

// Additive key bias [B, 1, Lk] (0 = attend, -inf = masked) in the compute dtype, or undefined.
at::Tensor key_bias_from_mask(const at::Tensor& key_mask, int64_t b, int64_t lk, at::ScalarType ct) {
    if (!key_mask.defined()) return {};
    const at::Tensor keep = key_mask.to(at::kBool);
    at::Tensor bias = at::zeros({b, 1, lk}, keep.options().dtype(ct));
    bias.masked_fill_(keep.logical_not().view({b, 1, lk}), -std::numeric_limits<double>::infinity());
    return bias;
}

// Masks one score block s [B*H, qn, kn] in place: key-mask bias, then the causal triangle.
void mask_block(at::Tensor& s, const at::Tensor& key_bias, int64_t b, int64_t h, bool causal, int64_t q0,
                int64_t qn, int64_t k0, int64_t kn) {
    if (key_bias.defined()) s.view({b, h, qn, kn}).add_(key_bias.narrow(2, k0, kn).view({b, 1, 1, kn}));
    if (causal && k0 + kn - 1 > q0) {
        const auto idx = at::TensorOptions().dtype(at::kLong).device(s.device());
        const at::Tensor rows = at::arange(q0, q0 + qn, idx).view({qn, 1});
        const at::Tensor cols = at::arange(k0, k0 + kn, idx).view({1, kn});
        s.masked_fill_(cols > rows, -std::numeric_limits<double>::infinity());
    }
}

bool block_skipped_by_causal(bool causal, int64_t q0, int64_t qn, int64_t k0) {
    // Every key of the block is after the last query of the chunk.
    return causal && k0 > q0 + qn - 1;
}

struct ForwardResult {
    at::Tensor out;  ///< [B*H, Lq, D] compute dtype
    at::Tensor lse;  ///< [B*H, Lq] compute dtype; +inf on rows without a valid key
};

// q3 is already multiplied by the scale. q3 [BH, Lq, D], k3/v3 [BH, Lk, D] in the compute dtype.
ForwardResult chunked_forward(const at::Tensor& q3, const at::Tensor& k3, const at::Tensor& v3,
                              const at::Tensor& key_bias, int64_t b, int64_t h, bool causal,
                              const ChunkPlan& plan) {
    const int64_t bh = q3.size(0), lq = q3.size(1), lk = k3.size(1), dv = v3.size(2);
    const double inf = std::numeric_limits<double>::infinity();
    at::Tensor out = at::empty({bh, lq, dv}, q3.options());
    at::Tensor lse = at::empty({bh, lq}, q3.options());
    for (int64_t q0 = 0; q0 < lq; q0 += plan.q_chunk) {
        const int64_t qn = std::min(plan.q_chunk, lq - q0);
        const at::Tensor qc = q3.narrow(1, q0, qn);
        at::Tensor m = at::full({bh, qn}, -inf, q3.options());
        at::Tensor l = at::zeros({bh, qn}, q3.options());
        at::Tensor acc = at::zeros({bh, qn, dv}, q3.options());
        for (int64_t k0 = 0; k0 < lk; k0 += plan.k_chunk) {
            const int64_t kn = std::min(plan.k_chunk, lk - k0);
            if (block_skipped_by_causal(causal, q0, qn, k0)) break;
            at::Tensor s = at::bmm(qc, k3.narrow(1, k0, kn).transpose(1, 2));  // [BH, qn, kn]
            mask_block(s, key_bias, b, h, causal, q0, qn, k0, kn);
            const at::Tensor m_new = at::maximum(m, s.amax(2));
            // Rows whose keys so far are all masked keep m = -inf; shift them by 0 instead so
            // exp(-inf - (-inf)) never produces NaN.
            const at::Tensor m_safe = at::where(at::isinf(m_new), at::zeros_like(m_new), m_new);
            s.sub_(m_safe.unsqueeze(2)).exp_();  // s is now P~ (un-normalised probabilities)
            const at::Tensor corr = (m - m_safe).exp_();
            l.mul_(corr).add_(s.sum(2));
            acc.mul_(corr.unsqueeze(2));
            acc.baddbmm_(s, v3.narrow(1, k0, kn));
            m = m_new;
        }
        const at::Tensor empty_row = l.eq(0);
        out.narrow(1, q0, qn).copy_(acc / at::where(empty_row, at::ones_like(l), l).unsqueeze(2));
        // lse = m + log(l); +inf for rows without a valid key so exp(S - lse) = 0 in the backward.
        lse.narrow(1, q0, qn).copy_(at::where(empty_row, at::full_like(l, inf), m + l.log()));
    }
    return {out, lse};
}

struct BackwardResult {
    at::Tensor dq, dk, dv;  ///< compute dtype; dq is w.r.t. the unscaled q
};

BackwardResult chunked_backward(const at::Tensor& q3, const at::Tensor& k3, const at::Tensor& v3,
                                const at::Tensor& out3, const at::Tensor& lse, const at::Tensor& dout3,
                                const at::Tensor& key_bias, int64_t b, int64_t h, bool causal, double scale,
                                const ChunkPlan& plan) {
    const int64_t lq = q3.size(1), lk = k3.size(1);
    // Delta_i = sum_d dO_id * O_id = sum_j P_ij dP_ij (FlashAttention-2, Algorithm 2 line 4).
    const at::Tensor delta = (dout3 * out3).sum(2);  // [BH, Lq]
    at::Tensor dq = at::zeros_like(q3);
    at::Tensor dk = at::zeros_like(k3);
    at::Tensor dv = at::zeros_like(v3);
    for (int64_t q0 = 0; q0 < lq; q0 += plan.q_chunk) {
        const int64_t qn = std::min(plan.q_chunk, lq - q0);
        const at::Tensor qc = q3.narrow(1, q0, qn);
        const at::Tensor doc = dout3.narrow(1, q0, qn);
        const at::Tensor lse_c = lse.narrow(1, q0, qn).unsqueeze(2);
        const at::Tensor delta_c = delta.narrow(1, q0, qn).unsqueeze(2);
        at::Tensor dqc = dq.narrow(1, q0, qn);
        for (int64_t k0 = 0; k0 < lk; k0 += plan.k_chunk) {
            const int64_t kn = std::min(plan.k_chunk, lk - k0);
            if (block_skipped_by_causal(causal, q0, qn, k0)) break;
            const at::Tensor kc = k3.narrow(1, k0, kn);
            const at::Tensor vc = v3.narrow(1, k0, kn);
            at::Tensor p = at::bmm(qc, kc.transpose(1, 2));  // S [BH, qn, kn], q3 pre-scaled
            mask_block(p, key_bias, b, h, causal, q0, qn, k0, kn);
            p.sub_(lse_c).exp_();  // P = exp(S - lse)
            dv.narrow(1, k0, kn).baddbmm_(p.transpose(1, 2), doc);
            at::Tensor ds = at::bmm(doc, vc.transpose(1, 2));  // dP
            ds.sub_(delta_c).mul_(p);                          // dS = P * (dP - Delta)
            dqc.baddbmm_(ds, kc);
            dk.narrow(1, k0, kn).baddbmm_(ds.transpose(1, 2), qc);  // uses scaled q: dK = dS^T q s
        }
    }
    dq.mul_(scale);  // S = scale * q k^T  ->  dq = scale * dS k
    return {dq, dk, dv};
}

at::ScalarType compute_type(at::ScalarType t) {
    return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Custom autograd node: saves q, k, v, the output and the logsumexp (all linear in L).
class ChunkedAttentionFunction : public torch::autograd::Function<ChunkedAttentionFunction> {
  public:
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const c10::optional<at::Tensor>& key_bias_opt,
                              double scale, bool causal, int64_t q_chunk, int64_t k_chunk) {
        const auto ct = compute_type(q.scalar_type());
        const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
        const ChunkPlan plan{q_chunk, k_chunk};
        const at::Tensor key_bias = key_bias_opt.has_value() ? *key_bias_opt : at::Tensor();
        const at::Tensor q3 = q.to(ct).reshape({b * h, lq, q.size(3)}) * scale;
        const at::Tensor k3 = k.to(ct).reshape({b * h, lk, k.size(3)}).contiguous();
        const at::Tensor v3 = v.to(ct).reshape({b * h, lk, v.size(3)}).contiguous();
        ForwardResult r = chunked_forward(q3, k3, v3, key_bias, b, h, causal, plan);
        const at::Tensor out = r.out.view({b, h, lq, v.size(3)}).to(q.scalar_type());
        ctx->save_for_backward({q, k, v, out, r.lse});
        // The key bias is a constant (never requires grad); saved_data keeps it without a slot in
        // the autograd graph.
        if (key_bias.defined()) ctx->saved_data["key_bias"] = key_bias;
        ctx->saved_data["scale"] = scale;
        ctx->saved_data["causal"] = causal;
        ctx->saved_data["q_chunk"] = q_chunk;
        ctx->saved_data["k_chunk"] = k_chunk;
        return out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
        const at::Tensor key_bias =
            ctx->saved_data.count("key_bias") ? ctx->saved_data["key_bias"].toTensor() : at::Tensor();
        const double scale = ctx->saved_data["scale"].toDouble();
        const bool causal = ctx->saved_data["causal"].toBool();
        const ChunkPlan plan{ctx->saved_data["q_chunk"].toInt(), ctx->saved_data["k_chunk"].toInt()};
        const auto ct = compute_type(q.scalar_type());
        const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
        const int64_t d = q.size(3), dvd = v.size(3);
        const at::Tensor q3 = q.to(ct).reshape({b * h, lq, d}) * scale;
        const at::Tensor k3 = k.to(ct).reshape({b * h, lk, d}).contiguous();
        const at::Tensor v3 = v.to(ct).reshape({b * h, lk, dvd}).contiguous();
        const at::Tensor o3 = out.to(ct).reshape({b * h, lq, dvd});
        const at::Tensor do3 = grad_outputs[0].to(ct).reshape({b * h, lq, dvd});
        BackwardResult g = chunked_backward(q3, k3, v3, o3, lse, do3, key_bias, b, h, causal, scale, plan);
        return {g.dq.view(q.sizes()).to(q.scalar_type()),
                g.dk.view(k.sizes()).to(k.scalar_type()),
                g.dv.view(v.sizes()).to(v.scalar_type()),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor()};
    }
};

// sizeof(AttentionOptions) of SDK ABI 2.0, the oldest layout a plugin can pass. When a field is
// appended, this stays the 2.0 size and the new field is read only when o.struct_size covers it.
constexpr size_t kAttentionOptionsBaseSize = sizeof(AttentionOptions);

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& o) {
    if (o.struct_size < kAttentionOptionsBaseSize)
        fail(kComponent, "forward",
             "AttentionOptions.struct_size is {} but the SDK 2.0 layout has {} bytes: the caller set it by "
             "hand or was built against a foreign header",
             o.struct_size, kAttentionOptionsBaseSize);
    if (!q.defined() || !k.defined() || !v.defined())
        fail(kComponent, "forward", "q, k and v must all be defined tensors");
    if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
        fail(kComponent, "forward",
             "expected q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,Dv]; got q {}, k {}, v {}", q.sizes(), k.sizes(),
             v.sizes());
    if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || k.size(1) != q.size(1) ||
        v.size(1) != q.size(1) || k.size(3) != q.size(3) || v.size(2) != k.size(2))
        fail(kComponent, "forward",
             "shape mismatch: q {} k {} v {} (need equal B and H, k.D == q.D, v.Lk == k.Lk)", q.sizes(),
             k.sizes(), v.sizes());
    if (k.scalar_type() != q.scalar_type() || v.scalar_type() != q.scalar_type())
        fail(kComponent, "forward", "dtype mismatch: q {} k {} v {}", c10::toString(q.scalar_type()),
             c10::toString(k.scalar_type()), c10::toString(v.scalar_type()));
    if (!at::isFloatingType(q.scalar_type()))
        fail(kComponent, "forward", "q/k/v must be floating point, got {}", c10::toString(q.scalar_type()));
    if (k.device() != q.device() || v.device() != q.device())
        fail(kComponent, "forward", "q, k and v must be on the same device (q on {}, k on {}, v on {})",
             q.device().str(), k.device().str(), v.device().str());
    if (o.key_mask.defined()) {
        if (o.key_mask.dim() != 2 || o.key_mask.size(0) != q.size(0) || o.key_mask.size(1) != k.size(2))
            fail(kComponent, "forward", "key_mask must be [B, Lk] = [{}, {}], got {}", q.size(0), k.size(2),
                 o.key_mask.sizes());
    }
    if (o.scale && !std::isfinite(*o.scale))
        fail(kComponent, "forward", "scale must be finite, got {}", *o.scale);
    if (o.q_chunk < 0 || o.k_chunk < 0)
        fail(kComponent, "forward", "q_chunk/k_chunk must be >= 0 (0 = automatic), got {} / {}", o.q_chunk,
             o.k_chunk);
}

#if ST_ATTENTION_USE_SDPA
// LibTorch >= 2.1: the fused kernels. Rows without any valid key would be NaN in SDPA; they are
// given a harmless all-true mask and zeroed afterwards, so values and gradients match the chunked
// backend.
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const AttentionOptions& o, double scale) {
    const int64_t b = q.size(0), lq = q.size(2), lk = k.size(2);
    if (!o.key_mask.defined()) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, o.causal, scale);
    at::Tensor keep = o.key_mask.to(at::kBool).to(q.device()).view({b, 1, 1, lk});
    if (o.causal) {
        // Combined mask [B, 1, Lq, Lk] (only here: causal together with a key mask).
        const at::Tensor tri = at::ones({lq, lk}, keep.options()).tril();
        keep = keep & tri.view({1, 1, lq, lk});
    }
    const at::Tensor row_ok = keep.any(-1, /*keepdim=*/true);  // [B, 1, Lq or 1, 1]
    const at::Tensor safe = keep | row_ok.logical_not();
    at::Tensor out = at::scaled_dot_product_attention(q, k, v, safe, 0.0, false, scale);
    return out * row_ok.to(out.scalar_type());
}
#endif

}  // namespace

const char* attention_backend() {
#if ST_ATTENTION_USE_SDPA
    return "sdpa";
#else
    return "chunked-online-softmax";
#endif
}

// q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] -> [B, H, Lq, Dv]
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options) {
    check_inputs(q, k, v, options);
    const double scale = options.scale ? *options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
#if ST_ATTENTION_USE_SDPA
    return sdpa_attention(q, k, v, options, scale);
#else
    const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
    const ChunkPlan plan = plan_chunks(b * h, lq, lk, options.q_chunk, options.k_chunk);
    log::trace(kComponent, "q {} k {} causal {} mask {}: q_chunk {} k_chunk {}", q.sizes(), k.sizes(),
               options.causal, options.key_mask.defined(), plan.q_chunk, plan.k_chunk);
    const auto ct = compute_type(q.scalar_type());
    at::Tensor key_bias = key_bias_from_mask(
        options.key_mask.defined() ? options.key_mask.to(q.device()) : at::Tensor(), b, lk, ct);
    const bool needs_grad =
        at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
    if (needs_grad)
        return ChunkedAttentionFunction::apply(
            q, k, v, key_bias.defined() ? c10::optional<at::Tensor>(key_bias) : c10::optional<at::Tensor>(),
            scale, options.causal, plan.q_chunk, plan.k_chunk);
    const at::Tensor q3 = q.to(ct).reshape({b * h, lq, q.size(3)}) * scale;
    const at::Tensor k3 = k.to(ct).reshape({b * h, lk, k.size(3)}).contiguous();
    const at::Tensor v3 = v.to(ct).reshape({b * h, lk, v.size(3)}).contiguous();
    ForwardResult r = chunked_forward(q3, k3, v3, key_bias, b, h, options.causal, plan);
    return r.out.view({b, h, lq, v.size(3)}).to(q.scalar_type());
#endif
}

}  // namespace st::sdk
