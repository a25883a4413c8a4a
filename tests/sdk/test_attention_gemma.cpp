// Tests of what st::sdk::attention gained for Gemma-2 (SDK ABI 4.0): logit soft-capping, the causal
// sliding window, grouped-query attention (k/v with fewer heads), each alone and combined with a
// key mask and causal. Values and gradients (autograd through a naive float64 reference:
// transformers' repeat_kv, cap * tanh(s / cap) before the masks, window masking k <= q - window),
// finite differences through the soft-cap, the struct_size rule (an older layout never reads the new
// fields) and the option errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <limits>
#include <string>

#include "st/attention.h"
#include "st/error.h"

namespace {

using st::sdk::AttentionOptions;

// Naive reference in float64: repeat kv heads, scores * scale, soft-cap, masks (key mask, causal,
// window) with -inf, softmax, rows without a valid key set to zero.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionOptions& o) {
    const int64_t lq = q.size(2), lk = k.size(2), g = q.size(1) / k.size(1);
    const at::Tensor ke = k.repeat_interleave(g, 1), ve = v.repeat_interleave(g, 1);
    const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    at::Tensor s = at::matmul(q, ke.transpose(-1, -2)) * scale;
    if (o.softcap > 0) s = at::tanh(s / o.softcap) * o.softcap;
    at::Tensor keep = at::ones({q.size(0), 1, lq, lk}, q.options().dtype(at::kBool));
    if (o.key_mask.defined()) keep = keep & o.key_mask.to(at::kBool).view({q.size(0), 1, 1, lk});
    const at::Tensor rows = at::arange(lq, at::kLong).view({lq, 1});
    const at::Tensor cols = at::arange(lk, at::kLong).view({1, lk});
    if (o.causal) keep = keep & (cols <= rows).view({1, 1, lq, lk});
    if (o.window > 0) keep = keep & (cols > rows - o.window).view({1, 1, lq, lk});
    const at::Tensor row_ok = keep.any(-1, true);
    s = s.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
    s = at::where(row_ok, s, at::zeros_like(s));
    return at::matmul(at::softmax(s, -1), ve) * row_ok.to(q.scalar_type());
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

struct Case {
    const char* what;
    int64_t b, h, hkv, lq, lk, d;
    int64_t q_chunk, k_chunk;
    bool causal;
    int64_t window;
    double softcap;
    bool mask;
};

// Right padding (valid lengths lk, lk - 3, ...) plus a hole at key 1 of batch 0.
at::Tensor padding_mask(int64_t b, int64_t lk) {
    at::Tensor m = at::ones({b, lk}, at::kBool);
    for (int64_t i = 1; i < b; ++i) m[i].narrow(0, lk - 3 * i, 3 * i).fill_(false);
    if (lk > 3) m[0][1] = false;
    return m;
}

void check_case(const Case& c, at::ScalarType dtype, double atol_out, double atol_grad) {
    SCOPED_TRACE(std::string(c.what) + " " + c10::toString(dtype));
    at::manual_seed(77 + c.lq * 3 + c.lk + c.window);
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    // Scores of a few units so that the soft-cap (cap 2 or 3) is far from linear.
    const at::Tensor q0 = 2.0 * at::randn({c.b, c.h, c.lq, c.d}, opt);
    const at::Tensor k0 = 2.0 * at::randn({c.b, c.hkv, c.lk, c.d}, opt);
    const at::Tensor v0 = at::randn({c.b, c.hkv, c.lk, c.d}, opt);
    const at::Tensor gout = at::randn({c.b, c.h, c.lq, c.d}, opt);
    AttentionOptions o;
    o.causal = c.causal;
    o.window = c.window;
    o.softcap = c.softcap;
    o.q_chunk = c.q_chunk;
    o.k_chunk = c.k_chunk;
    if (c.mask) o.key_mask = padding_mask(c.b, c.lk);

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
        ASSERT_EQ(grads[i].sizes(), ref_grads[i].sizes()) << names[i];
        EXPECT_LE(max_abs_diff(grads[i], ref_grads[i]), atol_grad) << names[i];
    }
    at::NoGradGuard no_grad;
    const at::Tensor out_ng = st::sdk::attention(q0.to(dtype), k0.to(dtype), v0.to(dtype), o);
    EXPECT_LE(max_abs_diff(out_ng, out), 1e-12);
}

const Case kCases[] = {
    {"softcap", 2, 2, 2, 13, 17, 8, 4, 5, false, 0, 2.0, false},
    {"softcap + key mask", 3, 2, 2, 11, 11, 8, 3, 4, false, 0, 3.0, true},
    {"window 1 (self only)", 1, 2, 2, 9, 9, 4, 2, 2, true, 1, 0.0, false},
    {"window 4, chunks smaller than the window", 2, 2, 2, 23, 23, 8, 3, 2, true, 4, 0.0, false},
    {"window 6, chunks larger than the window", 2, 1, 1, 31, 31, 8, 16, 16, true, 6, 0.0, false},
    {"window longer than the sequence", 1, 2, 2, 10, 10, 8, 4, 4, true, 64, 0.0, false},
    {"window, Lq < Lk (top-left)", 1, 2, 2, 9, 19, 8, 2, 3, true, 3, 0.0, false},
    {"GQA 4:2", 2, 4, 2, 12, 15, 8, 5, 4, false, 0, 0.0, false},
    {"MQA 3:1 causal", 1, 3, 1, 14, 14, 8, 4, 4, true, 0, 0.0, false},
    {"key mask + causal, GQA", 3, 4, 2, 16, 16, 8, 4, 5, true, 0, 0.0, true},
    {"Gemma-2 sliding layer: all of it", 3, 4, 2, 16, 16, 16, 5, 3, true, 6, 4.0, true},
    {"Gemma-2 global layer", 3, 4, 2, 16, 16, 16, 0, 0, true, 0, 4.0, true},
};

}  // namespace

TEST(AttentionGemmaTest, MatchesFloat64ReferenceInFloat64) {
    for (const Case& c : kCases) check_case(c, at::kDouble, 1e-12, 1e-11);
}

TEST(AttentionGemmaTest, MatchesFloat64ReferenceInFloat32) {
    for (const Case& c : kCases) check_case(c, at::kFloat, 2e-5, 1e-4);
}

TEST(AttentionGemmaTest, BFloat16AccumulatesInFloat32) {
    check_case(kCases[10], at::kBFloat16, 5e-2, 2e-1);
}

// Central finite differences through the soft-cap's derivative (1 - tanh^2) and the window.
TEST(AttentionGemmaTest, SoftcapGradientsMatchFiniteDifferences) {
    at::manual_seed(21);
    const auto opt = at::TensorOptions().dtype(at::kDouble);
    at::Tensor q = (2.0 * at::randn({1, 2, 6, 3}, opt)).requires_grad_();
    at::Tensor k = (2.0 * at::randn({1, 1, 6, 3}, opt)).requires_grad_();
    at::Tensor v = at::randn({1, 1, 6, 3}, opt).requires_grad_();
    const at::Tensor w = at::randn({1, 2, 6, 3}, opt);
    AttentionOptions o;
    o.q_chunk = 2;
    o.k_chunk = 3;
    o.causal = true;
    o.window = 3;
    o.softcap = 1.5;
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

TEST(AttentionGemmaTest, EachOptionChangesTheResult) {
    at::manual_seed(5);
    const at::Tensor q = 2.0 * at::randn({1, 2, 12, 8}, at::kDouble);
    const at::Tensor k = 2.0 * at::randn({1, 2, 12, 8}, at::kDouble);
    const at::Tensor v = at::randn({1, 2, 12, 8}, at::kDouble);
    AttentionOptions base;
    base.causal = true;
    const at::Tensor plain = st::sdk::attention(q, k, v, base);
    AttentionOptions capped = base;
    capped.softcap = 1.0;
    EXPECT_GT(max_abs_diff(st::sdk::attention(q, k, v, capped), plain), 1e-2);
    AttentionOptions windowed = base;
    windowed.window = 3;
    const at::Tensor w = st::sdk::attention(q, k, v, windowed);
    EXPECT_GT(max_abs_diff(w, plain), 1e-2);
    // The first `window` queries see no key outside the window: their rows are unchanged.
    EXPECT_LE(max_abs_diff(w.narrow(2, 0, 3), plain.narrow(2, 0, 3)), 1e-12);
}

// A plugin built against SDK 2.0 .. 3.0 passes the shorter struct: the new fields are not read,
// whatever bytes lie beyond it.
TEST(AttentionGemmaTest, OlderStructSizeIgnoresNewFields) {
    at::manual_seed(8);
    const at::Tensor q = 2.0 * at::randn({1, 2, 10, 8}, at::kDouble);
    const at::Tensor k = 2.0 * at::randn({1, 2, 10, 8}, at::kDouble);
    const at::Tensor v = at::randn({1, 2, 10, 8}, at::kDouble);
    AttentionOptions old_layout;
    old_layout.causal = true;
    old_layout.softcap = 1.0;
    old_layout.window = 2;
    old_layout.struct_size = static_cast<uint32_t>(offsetof(AttentionOptions, softcap));
    AttentionOptions plain;
    plain.causal = true;
    EXPECT_LE(max_abs_diff(st::sdk::attention(q, k, v, old_layout), st::sdk::attention(q, k, v, plain)),
              1e-12);
    AttentionOptions current = old_layout;
    current.struct_size = sizeof(AttentionOptions);
    EXPECT_GT(max_abs_diff(st::sdk::attention(q, k, v, current), st::sdk::attention(q, k, v, plain)), 1e-3);
}

TEST(AttentionGemmaTest, RejectsBadOptionsAndHeadCounts) {
    const at::Tensor q = at::zeros({1, 4, 5, 8});
    auto message = [](const auto& fn) {
        try {
            fn();
        } catch (const st::Error& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    // 4 query heads cannot be served by 3 kv heads; k and v must agree.
    EXPECT_NE(message([&] {
                  st::sdk::attention(q, at::zeros({1, 3, 5, 8}), at::zeros({1, 3, 5, 8}));
              }).find("H_kv"),
              std::string::npos);
    EXPECT_THROW(st::sdk::attention(q, at::zeros({1, 2, 5, 8}), at::zeros({1, 1, 5, 8})), st::Error);
    const at::Tensor k = at::zeros({1, 2, 5, 8});
    AttentionOptions window_without_causal;
    window_without_causal.window = 3;
    EXPECT_NE(message([&] { st::sdk::attention(q, k, k, window_without_causal); }).find("causal"),
              std::string::npos);
    AttentionOptions negative_window;
    negative_window.causal = true;
    negative_window.window = -1;
    EXPECT_NE(message([&] { st::sdk::attention(q, k, k, negative_window); }).find("window"),
              std::string::npos);
    AttentionOptions bad_cap;
    bad_cap.softcap = -2.0;
    EXPECT_NE(message([&] { st::sdk::attention(q, k, k, bad_cap); }).find("softcap"), std::string::npos);
    bad_cap.softcap = std::numeric_limits<double>::infinity();
    EXPECT_THROW(st::sdk::attention(q, k, k, bad_cap), st::Error);
}
