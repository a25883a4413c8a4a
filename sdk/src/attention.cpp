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
//
// Gemma-2 additions (SDK ABI 4.0; transformers models/gemma2/modeling_gemma2.py,
// eager_attention_forward and Gemma2DecoderLayer):
//   * soft-capping S' = c * tanh(S / c) of the scaled scores before any masking; the backward
//     multiplies dS' by dS'/dS = 1 - tanh^2(S / c) = 1 - (S' / c)^2.
//   * a sliding window with causal: key j is masked for query i when j <= i - window. Key chunks
//     entirely left of a query chunk's window are skipped, as causal skips those right of it.
//   * grouped-query attention: k/v with fewer heads are expanded to the query heads before the
//     kernel (repeat_kv); autograd sums the expanded gradients back over each group.
// SDPA has neither soft-capping nor a window, so the LibTorch >= 2.1 build runs the chunked kernel
// when either is set.
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

// What masks a score block, besides its position (shared by forward and backward).
struct MaskSpec {
    at::Tensor key_bias;  ///< [B, 1, Lk] additive (0 / -inf) or undefined
    int64_t b = 0, h = 0;
    bool causal = false;
    int64_t window = 0;    ///< > 0 only with causal
    double softcap = 0.0;  ///< 0 = off
};

// Masks one score block s [B*H, qn, kn] in place: key-mask bias, then the causal triangle and the
// window band (key j masked for query i when j > i, or j <= i - window).
void mask_block(at::Tensor& s, const MaskSpec& m, int64_t q0, int64_t qn, int64_t k0, int64_t kn) {
    if (m.key_bias.defined())
        s.view({m.b, m.h, qn, kn}).add_(m.key_bias.narrow(2, k0, kn).view({m.b, 1, 1, kn}));
    const bool triangle = m.causal && k0 + kn - 1 > q0;
    // Some key of the block lies at or before (last query of the chunk) - window.
    const bool band = m.window > 0 && k0 <= q0 + qn - 1 - m.window;
    if (!triangle && !band) return;
    const auto idx = at::TensorOptions().dtype(at::kLong).device(s.device());
    const at::Tensor rows = at::arange(q0, q0 + qn, idx).view({qn, 1});
    const at::Tensor cols = at::arange(k0, k0 + kn, idx).view({1, kn});
    at::Tensor masked = triangle ? cols > rows : at::zeros({qn, kn}, idx.dtype(at::kBool));
    if (band) masked = masked | (cols <= rows - m.window);
    s.masked_fill_(masked, -std::numeric_limits<double>::infinity());
}

// The key range [begin, end) a query chunk [q0, q0 + qn) can see: causal ends it after the last
// query, the window starts it at the first query's oldest visible key. Blocks outside are skipped.
std::pair<int64_t, int64_t> key_range(const MaskSpec& m, int64_t lk, int64_t q0, int64_t qn) {
    const int64_t end = m.causal ? std::min(lk, q0 + qn) : lk;
    const int64_t begin = m.window > 0 ? std::max<int64_t>(0, q0 - m.window + 1) : 0;
    return {begin, std::max(begin, end)};
}

struct ForwardResult {
    at::Tensor out;  ///< [B*H, Lq, D] compute dtype
    at::Tensor lse;  ///< [B*H, Lq] compute dtype; +inf on rows without a valid key
};

// q3 is already multiplied by the scale. q3 [BH, Lq, D], k3/v3 [BH, Lk, D] in the compute dtype.
ForwardResult chunked_forward(const at::Tensor& q3, const at::Tensor& k3, const at::Tensor& v3,
                              const MaskSpec& mask, const ChunkPlan& plan) {
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
        const auto [k_begin, k_end] = key_range(mask, lk, q0, qn);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += plan.k_chunk) {
            const int64_t kn = std::min(plan.k_chunk, k_end - k0);
            at::Tensor s = at::bmm(qc, k3.narrow(1, k0, kn).transpose(1, 2));  // [BH, qn, kn]
            if (mask.softcap > 0) s.div_(mask.softcap).tanh_().mul_(mask.softcap);
            mask_block(s, mask, q0, qn, k0, kn);
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
                                const MaskSpec& mask, double scale, const ChunkPlan& plan) {
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
        const auto [k_begin, k_end] = key_range(mask, lk, q0, qn);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += plan.k_chunk) {
            const int64_t kn = std::min(plan.k_chunk, k_end - k0);
            const at::Tensor kc = k3.narrow(1, k0, kn);
            const at::Tensor vc = v3.narrow(1, k0, kn);
            at::Tensor p = at::bmm(qc, kc.transpose(1, 2));  // S [BH, qn, kn], q3 pre-scaled
            at::Tensor cap_grad;                             // dS'/dS = 1 - tanh^2(S / c)
            if (mask.softcap > 0) {
                p.div_(mask.softcap).tanh_();
                cap_grad = 1.0 - p * p;
                p.mul_(mask.softcap);
            }
            mask_block(p, mask, q0, qn, k0, kn);
            p.sub_(lse_c).exp_();  // P = exp(S' - lse)
            dv.narrow(1, k0, kn).baddbmm_(p.transpose(1, 2), doc);
            at::Tensor ds = at::bmm(doc, vc.transpose(1, 2));  // dP
            ds.sub_(delta_c).mul_(p);                          // dS' = P * (dP - Delta)
            if (cap_grad.defined()) ds.mul_(cap_grad);         // dS = dS' * (1 - tanh^2)
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
                              double scale, bool causal, int64_t window, double softcap, int64_t q_chunk,
                              int64_t k_chunk) {
        const auto ct = compute_type(q.scalar_type());
        const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
        const ChunkPlan plan{q_chunk, k_chunk};
        const MaskSpec mask{
            key_bias_opt.has_value() ? *key_bias_opt : at::Tensor(), b, h, causal, window, softcap};
        const at::Tensor q3 = q.to(ct).reshape({b * h, lq, q.size(3)}) * scale;
        const at::Tensor k3 = k.to(ct).reshape({b * h, lk, k.size(3)}).contiguous();
        const at::Tensor v3 = v.to(ct).reshape({b * h, lk, v.size(3)}).contiguous();
        ForwardResult r = chunked_forward(q3, k3, v3, mask, plan);
        const at::Tensor out = r.out.view({b, h, lq, v.size(3)}).to(q.scalar_type());
        ctx->save_for_backward({q, k, v, out, r.lse});
        // The key bias is a constant (never requires grad); saved_data keeps it without a slot in
        // the autograd graph.
        if (mask.key_bias.defined()) ctx->saved_data["key_bias"] = mask.key_bias;
        ctx->saved_data["scale"] = scale;
        ctx->saved_data["causal"] = causal;
        ctx->saved_data["window"] = window;
        ctx->saved_data["softcap"] = softcap;
        ctx->saved_data["q_chunk"] = q_chunk;
        ctx->saved_data["k_chunk"] = k_chunk;
        return out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
        const double scale = ctx->saved_data["scale"].toDouble();
        const ChunkPlan plan{ctx->saved_data["q_chunk"].toInt(), ctx->saved_data["k_chunk"].toInt()};
        const auto ct = compute_type(q.scalar_type());
        const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
        const MaskSpec mask{
            ctx->saved_data.count("key_bias") ? ctx->saved_data["key_bias"].toTensor() : at::Tensor(),
            b,
            h,
            ctx->saved_data["causal"].toBool(),
            ctx->saved_data["window"].toInt(),
            ctx->saved_data["softcap"].toDouble()};
        const int64_t d = q.size(3), dvd = v.size(3);
        const at::Tensor q3 = q.to(ct).reshape({b * h, lq, d}) * scale;
        const at::Tensor k3 = k.to(ct).reshape({b * h, lk, d}).contiguous();
        const at::Tensor v3 = v.to(ct).reshape({b * h, lk, dvd}).contiguous();
        const at::Tensor o3 = out.to(ct).reshape({b * h, lq, dvd});
        const at::Tensor do3 = grad_outputs[0].to(ct).reshape({b * h, lq, dvd});
        BackwardResult g = chunked_backward(q3, k3, v3, o3, lse, do3, mask, scale, plan);
        return {g.dq.view(q.sizes()).to(q.scalar_type()),
                g.dk.view(k.sizes()).to(k.scalar_type()),
                g.dv.view(v.sizes()).to(v.scalar_type()),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor(),
                at::Tensor()};
    }
};

// The layouts of AttentionOptions a plugin may pass, oldest first; each is a prefix of the current
// struct. A field is read only when o.struct_size covers the layout that introduced it.
struct AttentionOptionsAbi2_0 {  // SDK ABI 2.0 .. 3.0
    uint32_t struct_size;
    std::optional<double> scale;
    at::Tensor key_mask;
    bool causal;
    int64_t q_chunk;
    int64_t k_chunk;
};
struct AttentionOptionsAbi4_0 {  // + softcap, window
    uint32_t struct_size;
    std::optional<double> scale;
    at::Tensor key_mask;
    bool causal;
    int64_t q_chunk;
    int64_t k_chunk;
    double softcap;
    int64_t window;
};
constexpr size_t kAttentionOptionsBaseSize = sizeof(AttentionOptionsAbi2_0);
static_assert(sizeof(AttentionOptionsAbi4_0) == sizeof(AttentionOptions),
              "AttentionOptions grew: add its layout above and read the new field by struct_size");

// The options as this SDK reads them: fields beyond the caller's struct_size take their defaults.
struct ResolvedOptions {
    double softcap = 0.0;
    int64_t window = 0;
};

ResolvedOptions resolve(const AttentionOptions& o) {
    ResolvedOptions r;
    if (o.struct_size >= sizeof(AttentionOptionsAbi4_0)) {
        r.softcap = o.softcap;
        r.window = o.window;
    }
    return r;
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionOptions& o,
                  const ResolvedOptions& r) {
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
    if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || v.size(1) != k.size(1) || k.size(1) < 1 ||
        q.size(1) % k.size(1) != 0 || k.size(3) != q.size(3) || v.size(2) != k.size(2))
        fail(kComponent, "forward",
             "shape mismatch: q {} k {} v {} (need equal B, k and v with the same heads H_kv dividing q's H, "
             "k.D == q.D, v.Lk == k.Lk)",
             q.sizes(), k.sizes(), v.sizes());
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
    if (!std::isfinite(r.softcap) || r.softcap < 0)
        fail(kComponent, "forward", "softcap must be finite and >= 0 (0 = off), got {}", r.softcap);
    if (r.window < 0) fail(kComponent, "forward", "window must be >= 0 (0 = unlimited), got {}", r.window);
    if (r.window > 0 && !o.causal)
        fail(kComponent, "forward",
             "window {} needs causal = true (the window is the last keys up to the query)", r.window);
}

// Grouped-query attention: [B, H_kv, L, D] -> [B, H, L, D], kv head j repeated for query heads
// j*g .. j*g+g-1 (transformers repeat_kv). Differentiable (the backward sums over each group).
at::Tensor expand_kv_heads(const at::Tensor& t, int64_t heads) {
    const int64_t hkv = t.size(1);
    if (hkv == heads) return t;
    return t.unsqueeze(2)
        .expand({t.size(0), hkv, heads / hkv, t.size(2), t.size(3)})
        .reshape({t.size(0), heads, t.size(2), t.size(3)});
}

// The chunked kernel (the only backend on LibTorch 1.13; on >= 2.1 for soft-capping / windows).
// k, v already have q's heads.
at::Tensor chunked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionOptions& options, const ResolvedOptions& r, double scale) {
    const int64_t b = q.size(0), h = q.size(1), lq = q.size(2), lk = k.size(2);
    const ChunkPlan plan = plan_chunks(b * h, lq, lk, options.q_chunk, options.k_chunk);
    log::trace(kComponent, "q {} k {} causal {} window {} softcap {} mask {}: q_chunk {} k_chunk {}",
               q.sizes(), k.sizes(), options.causal, r.window, r.softcap, options.key_mask.defined(),
               plan.q_chunk, plan.k_chunk);
    const auto ct = compute_type(q.scalar_type());
    at::Tensor key_bias = key_bias_from_mask(
        options.key_mask.defined() ? options.key_mask.to(q.device()) : at::Tensor(), b, lk, ct);
    const bool needs_grad =
        at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
    if (needs_grad)
        return ChunkedAttentionFunction::apply(
            q, k, v, key_bias.defined() ? c10::optional<at::Tensor>(key_bias) : c10::optional<at::Tensor>(),
            scale, options.causal, r.window, r.softcap, plan.q_chunk, plan.k_chunk);
    const at::Tensor q3 = q.to(ct).reshape({b * h, lq, q.size(3)}) * scale;
    const at::Tensor k3 = k.to(ct).reshape({b * h, lk, k.size(3)}).contiguous();
    const at::Tensor v3 = v.to(ct).reshape({b * h, lk, v.size(3)}).contiguous();
    const MaskSpec mask{key_bias, b, h, options.causal, r.window, r.softcap};
    ForwardResult res = chunked_forward(q3, k3, v3, mask, plan);
    return res.out.view({b, h, lq, v.size(3)}).to(q.scalar_type());
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

// q [B, H, Lq, D], k [B, H_kv, Lk, D], v [B, H_kv, Lk, Dv] -> [B, H, Lq, Dv]
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options) {
    const ResolvedOptions r = resolve(options);
    check_inputs(q, k, v, options, r);
    const double scale = options.scale ? *options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    const at::Tensor ke = expand_kv_heads(k, q.size(1));
    const at::Tensor ve = expand_kv_heads(v, q.size(1));
#if ST_ATTENTION_USE_SDPA
    if (r.softcap == 0.0 && r.window == 0) return sdpa_attention(q, ke, ve, options, scale);
#endif
    return chunked_attention(q, ke, ve, options, r, scale);
}

}  // namespace st::sdk
