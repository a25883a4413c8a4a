// Tests of st::sdk::attention against a naive float64 softmax(q k^T * scale) v reference: values
// and gradients for several shapes, chunkings, masks and causal; bf16; finite differences; and a
// peak-memory check that the chunked kernel never materialises the Lq x Lk score matrix.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include "st/attention.h"
#include "st/error.h"

namespace {

using st::sdk::AttentionOptions;

// Naive reference in float64: scores [B,H,Lq,Lk], masked with -inf, softmax, rows without a valid
// key set to zero. Causal = top-left aligned (query i sees keys j <= i).
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionOptions& o) {
    const int64_t lq = q.size(2), lk = k.size(2);
    const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    at::Tensor s = at::matmul(q, k.transpose(-1, -2)) * scale;
    at::Tensor keep = at::ones({q.size(0), 1, lq, lk}, q.options().dtype(at::kBool));
    if (o.key_mask.defined()) keep = keep & o.key_mask.to(at::kBool).view({q.size(0), 1, 1, lk});
    if (o.causal) keep = keep & at::ones({lq, lk}, keep.options()).tril().view({1, 1, lq, lk});
    const at::Tensor row_ok = keep.any(-1, true);
    s = s.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
    // Rows with no valid key: softmax of all -inf is NaN; replace scores by 0 there and zero after.
    s = at::where(row_ok, s, at::zeros_like(s));
    return at::matmul(at::softmax(s, -1), v) * row_ok.to(q.scalar_type());
}

struct Case {
    int64_t b, h, lq, lk, d;
    int64_t q_chunk, k_chunk;
    bool causal;
    bool mask;
};

std::string describe(const Case& c) {
    return "B" + std::to_string(c.b) + " H" + std::to_string(c.h) + " Lq" + std::to_string(c.lq) + " Lk" +
           std::to_string(c.lk) + " D" + std::to_string(c.d) + " qc" + std::to_string(c.q_chunk) + " kc" +
           std::to_string(c.k_chunk) + (c.causal ? " causal" : "") + (c.mask ? " mask" : "");
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Key mask with a fully masked batch element when B > 1 (exercises the zero-row rule) and a
// ragged valid length otherwise.
at::Tensor make_mask(int64_t b, int64_t lk) {
    at::Tensor m = at::ones({b, lk}, at::kBool);
    for (int64_t i = 0; i < b; ++i) {
        const int64_t valid = (i == 1) ? 0 : std::max<int64_t>(1, lk - 3 * (i + 1));
        m[i].narrow(0, valid, lk - valid).fill_(false);
    }
    // A hole at key 0, not only a padded tail: with causal, query 0 of batch 0 sees no key.
    if (lk > 2) m[0][0] = false;
    return m;
}

void check_case(const Case& c, at::ScalarType dtype, double atol_out, double atol_grad) {
    SCOPED_TRACE(describe(c) + " " + c10::toString(dtype));
    at::manual_seed(1234 + c.lq * 7 + c.lk);
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    const at::Tensor q0 = at::randn({c.b, c.h, c.lq, c.d}, opt);
    const at::Tensor k0 = at::randn({c.b, c.h, c.lk, c.d}, opt);
    const at::Tensor v0 = at::randn({c.b, c.h, c.lk, c.d}, opt);
    const at::Tensor gout = at::randn({c.b, c.h, c.lq, c.d}, opt);
    AttentionOptions o;
    o.causal = c.causal;
    o.q_chunk = c.q_chunk;
    o.k_chunk = c.k_chunk;
    if (c.mask) o.key_mask = make_mask(c.b, c.lk);

    at::Tensor qr = q0.clone().requires_grad_(), kr = k0.clone().requires_grad_(),
               vr = v0.clone().requires_grad_();
    const at::Tensor ref = reference_attention(qr, kr, vr, o);
    const auto ref_grads = torch::autograd::grad({ref}, {qr, kr, vr}, {gout});

    at::Tensor q = q0.to(dtype).requires_grad_(), k = k0.to(dtype).requires_grad_(),
               v = v0.to(dtype).requires_grad_();
    const at::Tensor out = st::sdk::attention(q, k, v, o);
    ASSERT_EQ(out.scalar_type(), dtype);
    ASSERT_EQ(out.sizes(), ref.sizes());
    EXPECT_LE(max_abs_diff(out, ref), atol_out);
    const auto grads = torch::autograd::grad({out}, {q, k, v}, {gout.to(dtype)});
    const char* names[] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(grads[i].defined()) << names[i];
        EXPECT_EQ(grads[i].scalar_type(), dtype) << names[i];
        EXPECT_LE(max_abs_diff(grads[i], ref_grads[i]), atol_grad) << names[i];
    }

    // The no-grad path computes the same forward.
    at::NoGradGuard no_grad;
    const at::Tensor out_ng = st::sdk::attention(q0.to(dtype), k0.to(dtype), v0.to(dtype), o);
    EXPECT_LE(max_abs_diff(out_ng, out), 1e-12);
}

const Case kCases[] = {
    {1, 1, 1, 1, 4, 0, 0, false, false},    // degenerate single token
    {2, 3, 17, 17, 8, 0, 0, false, false},  // automatic chunking (single block)
    {2, 2, 13, 29, 8, 4, 5, false, false},  // Lq != Lk, odd lengths, many chunks
    {1, 2, 31, 7, 16, 3, 2, false, false},  // Lq > Lk, tiny chunks
    {2, 2, 19, 23, 8, 1, 1, false, true},   // 1x1 chunks with key mask
    {3, 2, 11, 14, 8, 4, 3, false, true},   // mask: batch 1 fully masked -> zeros
    {2, 2, 21, 21, 8, 5, 4, true, false},   // causal square
    {1, 3, 9, 26, 8, 2, 7, true, false},    // causal Lq < Lk (top-left)
    {1, 1, 26, 9, 8, 7, 2, true, false},    // causal Lq > Lk
    {3, 2, 15, 15, 8, 4, 4, true, true},    // causal + mask (row 0 of batch 0 has no key)
};

TEST(AttentionTest, MatchesFloat64ReferenceInFloat64) {
    for (const Case& c : kCases) check_case(c, at::kDouble, 1e-12, 1e-11);
}

TEST(AttentionTest, MatchesFloat64ReferenceInFloat32) {
    for (const Case& c : kCases) check_case(c, at::kFloat, 2e-5, 1e-4);
}

TEST(AttentionTest, BFloat16AccumulatesInFloat32) {
    // Inputs are rounded to bf16 (~3 significant digits); the error budget is the output rounding
    // plus the input rounding propagated, not an accumulation error growing with L.
    check_case({2, 2, 37, 45, 16, 8, 16, false, true}, at::kBFloat16, 4e-2, 1e-1);
    check_case({1, 2, 64, 64, 16, 0, 0, true, false}, at::kBFloat16, 4e-2, 1e-1);
}

TEST(AttentionTest, ChunkingDoesNotChangeTheResult) {
    at::manual_seed(7);
    const at::Tensor q = at::randn({2, 2, 50, 8}), k = at::randn({2, 2, 70, 8}), v = at::randn({2, 2, 70, 8});
    AttentionOptions whole;
    whole.q_chunk = 50;
    whole.k_chunk = 70;
    const at::Tensor ref = st::sdk::attention(q, k, v, whole);
    for (int64_t qc : {1, 7, 64}) {
        for (int64_t kc : {1, 9, 100}) {
            AttentionOptions o;
            o.q_chunk = qc;
            o.k_chunk = kc;
            EXPECT_LE(max_abs_diff(st::sdk::attention(q, k, v, o), ref), 2e-6) << qc << "x" << kc;
        }
    }
}

TEST(AttentionTest, AcceptsNonContiguousHeadsLayout) {
    // Models project to [B, L, H, D] and transpose to [B, H, L, D] without copying.
    at::manual_seed(9);
    const at::Tensor q = at::randn({2, 11, 3, 8}, at::kDouble).transpose(1, 2);
    const at::Tensor k = at::randn({2, 13, 3, 8}, at::kDouble).transpose(1, 2);
    const at::Tensor v = at::randn({2, 13, 3, 8}, at::kDouble).transpose(1, 2);
    ASSERT_FALSE(q.is_contiguous());
    AttentionOptions o;
    o.q_chunk = 4;
    o.k_chunk = 5;
    o.key_mask = make_mask(2, 13);
    EXPECT_LE(max_abs_diff(st::sdk::attention(q, k, v, o), reference_attention(q, k, v, o)), 1e-12);
}

TEST(AttentionTest, ExplicitScaleIsUsed) {
    at::manual_seed(3);
    const at::Tensor q = at::randn({1, 2, 6, 4}, at::kDouble), k = at::randn({1, 2, 9, 4}, at::kDouble),
                     v = at::randn({1, 2, 9, 4}, at::kDouble);
    AttentionOptions o;
    o.scale = 0.37;
    o.k_chunk = 4;
    EXPECT_LE(max_abs_diff(st::sdk::attention(q, k, v, o), reference_attention(q, k, v, o)), 1e-12);
    AttentionOptions d;
    EXPECT_GT(max_abs_diff(st::sdk::attention(q, k, v, o), st::sdk::attention(q, k, v, d)), 1e-3);
}

// Central finite differences on a small float64 problem: dL/dx for L = sum(out * w).
TEST(AttentionTest, GradientsMatchFiniteDifferences) {
    at::manual_seed(11);
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    at::Tensor q = at::randn({2, 1, 5, 3}, opt).requires_grad_();
    at::Tensor k = at::randn({2, 1, 6, 3}, opt).requires_grad_();
    at::Tensor v = at::randn({2, 1, 6, 3}, opt).requires_grad_();
    const at::Tensor w = at::randn({2, 1, 5, 3}, opt);
    AttentionOptions o;
    o.q_chunk = 2;
    o.k_chunk = 4;
    o.causal = true;
    o.key_mask = at::tensor({1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0}, at::kInt).view({2, 6}).to(at::kBool);
    const auto grads = torch::autograd::grad({(st::sdk::attention(q, k, v, o) * w).sum()}, {q, k, v});
    at::NoGradGuard no_grad;
    const double eps = 1e-6;
    at::Tensor inputs[] = {q, k, v};
    for (int t = 0; t < 3; ++t) {
        at::Tensor flat = inputs[t].view(-1);
        const at::Tensor g = grads[t].reshape(-1);
        for (int64_t i = 0; i < flat.numel(); ++i) {
            const double x = flat[i].item<double>();
            flat[i] = x + eps;
            const double up = (st::sdk::attention(q, k, v, o) * w).sum().item<double>();
            flat[i] = x - eps;
            const double down = (st::sdk::attention(q, k, v, o) * w).sum().item<double>();
            flat[i] = x;
            EXPECT_NEAR(g[i].item<double>(), (up - down) / (2 * eps), 1e-7) << "input " << t << " elem " << i;
        }
    }
}

TEST(AttentionTest, RejectsBadShapes) {
    const at::Tensor q = at::zeros({1, 2, 4, 8}), k = at::zeros({1, 2, 5, 8});
    EXPECT_THROW(st::sdk::attention(q, k, at::zeros({1, 2, 6, 8})), st::Error);
    EXPECT_THROW(st::sdk::attention(q, at::zeros({1, 2, 5, 4}), at::zeros({1, 2, 5, 4})), st::Error);
    EXPECT_THROW(st::sdk::attention(q.view({2, 4, 8}), k, k), st::Error);
    AttentionOptions o;
    o.key_mask = at::ones({1, 4}, at::kBool);
    try {
        st::sdk::attention(q, k, k, o);
        FAIL() << "expected st::Error";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("key_mask"), std::string::npos) << e.what();
    }
    EXPECT_THROW(st::sdk::attention(q, k.to(at::kDouble), k), st::Error);
}

TEST(AttentionTest, ReportsBackend) {
    EXPECT_STREQ(st::sdk::attention_backend(), "chunked-online-softmax");
}

// Peak resident memory (VmHWM, kB) of this process; reset to the current RSS by writing "5" to
// /proc/self/clear_refs (Linux >= 4.0).
long read_status_kb(const std::string& key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
    return -1;
}

// Not a timing test: forward + backward at L = 8192 must stay far below the 256 MiB that one fp32
// 8192 x 8192 score matrix would take (a naive implementation needs several of them).
TEST(AttentionTest, PeakMemoryIsLinearInSequenceLength) {
    constexpr int64_t L = 8192, D = 64;
    at::manual_seed(5);
    at::Tensor q = at::randn({1, 1, L, D}).requires_grad_();
    at::Tensor k = at::randn({1, 1, L, D}).requires_grad_();
    at::Tensor v = at::randn({1, 1, L, D}).requires_grad_();
    const at::Tensor gout = at::randn({1, 1, L, D});
    {
        std::ofstream reset("/proc/self/clear_refs");
        reset << "5";
        reset.close();
        ASSERT_TRUE(reset.good()) << "cannot reset the peak RSS through /proc/self/clear_refs";
    }
    const long rss_before = read_status_kb("VmRSS");
    const long hwm_reset = read_status_kb("VmHWM");
    ASSERT_GT(rss_before, 0);
    ASSERT_LE(hwm_reset, rss_before + 1024) << "VmHWM was not reset";
    AttentionOptions o;
    o.q_chunk = 512;
    o.k_chunk = 512;
    o.causal = true;  // halves the work; the memory bound is the same
    const at::Tensor out = st::sdk::attention(q, k, v, o);
    const auto grads = torch::autograd::grad({out}, {q, k, v}, {gout});
    const long growth_kb = read_status_kb("VmHWM") - rss_before;
    const double growth_mib = growth_kb / 1024.0;
    const double scores_mib = L * L * 4.0 / (1024.0 * 1024.0);  // 256 MiB
    RecordProperty("peak_growth_mib", std::to_string(growth_mib));
    EXPECT_LT(growth_mib, scores_mib / 4) << "peak RSS grew by " << growth_mib << " MiB";
    // Sanity of the numbers at that size: output rows are convex combinations of v rows.
    EXPECT_TRUE(at::isfinite(out).all().item<bool>());
    EXPECT_TRUE(at::isfinite(grads[0]).all().item<bool>());
    EXPECT_LE(out.abs().max().item<float>(), v.abs().max().item<float>() + 1e-4);
}

}  // namespace
