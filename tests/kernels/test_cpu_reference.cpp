// kernels/cpu (st/kernels.h) against ATen formulas, st::kit's RoPE and independent scalar references
// written here from the documented rules: the CPU side is both st's CPU path and the reference the
// CUDA kernels are compared with (test_cuda.cpp), so it is checked on its own first.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "st/kernels.h"
#include "st/kit/rope3d.h"

namespace {

float* f32(const at::Tensor& t) {
    return t.data_ptr<float>();
}

st_k_dtype kdtype(at::ScalarType t) {
    return t == at::kBFloat16 ? ST_K_BF16 : ST_K_F32;
}

// ---- 8-bit codes --------------------------------------------------------------------------------

std::vector<float> midpoints(int is_signed) {
    const float* v = st_k_q8_map(is_signed);
    std::vector<float> mids(255);
    for (int i = 0; i < 255; ++i) mids[i] = 0.5f * (v[i] + v[i + 1]);
    return mids;
}

// The rule written out: the nearest code is the number of midpoints <= x (ties to the lower code).
uint8_t search_code(const std::vector<float>& mids, float x) {
    return static_cast<uint8_t>(std::upper_bound(mids.begin(), mids.end(), x) - mids.begin());
}

float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

TEST(KernelsCpuTest, DynamicMapsAreBitsandbytesMaps) {
    for (int is_signed : {0, 1}) {
        const float* v = st_k_q8_map(is_signed);
        EXPECT_TRUE(std::is_sorted(v, v + 256));
        EXPECT_EQ(std::adjacent_find(v, v + 256), v + 256) << "codes must be distinct";
        EXPECT_EQ(v[255], 1.0f);
        EXPECT_EQ(v[0], is_signed ? -0.99296875f : 0.0f);
    }
    // Signed map: 0 and 1 are codes, the most negative code is -(0.1 + 0.9 * 63.5 / 64) = -0.99296875
    // (bitsandbytes has no -1), and the smallest positive one is 0.55e-6.
    const float* s = st_k_q8_map(1);
    EXPECT_FLOAT_EQ(s[0], -0.99296875f);
    EXPECT_NE(std::find(s, s + 256, 0.0f), s + 256);
    EXPECT_FLOAT_EQ(*std::upper_bound(s, s + 256, 0.0f), 0.55e-6f);
    // Unsigned map: 0 .. 1, smallest positive code (0.1 + 0.9 * 0.5 / 2) * 1e-6.
    const float* u = st_k_q8_map(0);
    EXPECT_FLOAT_EQ(u[1], 0.325e-6f);
}

TEST(KernelsCpuTest, TableQuantiserEqualsBinarySearchOnEveryFloatSampled) {
    for (int is_signed : {0, 1}) {
        const std::vector<float> mids = midpoints(is_signed);
        int64_t checked = 0;
        // Every 251st bit pattern over all 2^32 (all signs, exponents, NaNs and infinities)...
        for (uint64_t u = 0; u < (1ull << 32); u += 251) {
            const float x = from_bits(static_cast<uint32_t>(u));
            const uint8_t want = std::isnan(x) ? 255 : search_code(mids, x);
            ASSERT_EQ(st_k_q8_quantize(is_signed, x), want) << "signed " << is_signed << " bits " << u;
            ++checked;
        }
        // ...and every midpoint with its neighbours, where a wrong table entry would show.
        for (float m : mids) {
            for (float x : {std::nextafter(m, -1.0f), m, std::nextafter(m, 2.0f)}) {
                ASSERT_EQ(st_k_q8_quantize(is_signed, x), search_code(mids, x)) << x;
            }
        }
        EXPECT_GT(checked, 17000000);
        EXPECT_EQ(st_k_q8_quantize(is_signed, NAN), 255);
        EXPECT_EQ(st_k_q8_quantize(is_signed, INFINITY), 255);
        EXPECT_EQ(st_k_q8_quantize(is_signed, -INFINITY), 0);
    }
}

// ---- fused optimizer steps ------------------------------------------------------------------------

struct AdamHp {
    double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    st_k_adam_scalars scalars(int step) const {
        return {static_cast<float>(1.0 - lr * wd), static_cast<float>(b1),
                static_cast<float>(1.0 - b1),      static_cast<float>(b2),
                static_cast<float>(1.0 - b2),      static_cast<float>(std::sqrt(1.0 - std::pow(b2, step))),
                static_cast<float>(eps),           static_cast<float>(-lr / (1.0 - std::pow(b1, step)))};
    }
};

TEST(KernelsCpuTest, AdamWMatchesTorchAdamWOperationSequence) {
    at::manual_seed(1);
    const int64_t n = 5000;
    at::Tensor p = at::randn({n}), m = at::zeros({n}), v = at::zeros({n});
    at::Tensor rp = p.clone(), rm = m.clone(), rv = v.clone();
    const AdamHp hp;
    for (int step = 1; step <= 3; ++step) {
        at::Tensor g = at::randn({n});
        const st_k_adam_scalars s = hp.scalars(step);
        ASSERT_EQ(st_k_adamw_cpu(f32(p), f32(g), f32(m), f32(v), n, &s), ST_K_OK);
        // torch/optim/adamw.py _single_tensor_adamw
        rp.mul_(1.0 - hp.lr * hp.wd);
        rm.lerp_(g, 1.0 - hp.b1);
        rv.mul_(hp.b2).addcmul_(g, g, 1.0 - hp.b2);
        const double bc1 = 1.0 - std::pow(hp.b1, step), bc2 = 1.0 - std::pow(hp.b2, step);
        at::Tensor denom = (rv.sqrt() / std::sqrt(bc2)).add_(hp.eps);
        rp.addcdiv_(rm, denom, -hp.lr / bc1);
    }
    EXPECT_LT((p - rp).abs().max().item<double>(), 2e-6);
    EXPECT_LT((m - rm).abs().max().item<double>(), 1e-6);
    EXPECT_LT((v - rv).abs().max().item<double>(), 1e-6);
}

TEST(KernelsCpuTest, LionMatchesLionPytorchRule) {
    at::manual_seed(2);
    const int64_t n = 3000;
    at::Tensor p = at::randn({n}), m = at::randn({n}) * 0.1;
    at::Tensor rp = p.clone(), rm = m.clone();
    const double lr = 3e-3, b1 = 0.9, b2 = 0.99, wd = 0.05;
    const st_k_lion_scalars s{static_cast<float>(1.0 - lr * wd), 0.9f,
                              static_cast<float>(1.0 - b1),      0.99f,
                              static_cast<float>(1.0 - b2),      static_cast<float>(-lr)};
    for (int step = 0; step < 3; ++step) {
        at::Tensor g = at::randn({n});
        ASSERT_EQ(st_k_lion_cpu(f32(p), f32(g), f32(m), n, &s), ST_K_OK);
        // lion_pytorch update_fn
        rp.mul_(1.0 - lr * wd);
        rp.add_(rm.clone().mul_(b1).add_(g, 1.0 - b1).sign_(), -lr);
        rm.mul_(b2).add_(g, 1.0 - b2);
    }
    EXPECT_LT((p - rp).abs().max().item<double>(), 1e-6);
    EXPECT_LT((m - rm).abs().max().item<double>(), 1e-6);
}

// bitsandbytes' block-wise 2-state step written out plainly (dequantize, fp32 AdamW, absmax,
// nearest code by binary search).
void reference_adamw8bit(std::vector<float>& p, const std::vector<float>& g, std::vector<uint8_t>& mq,
                         std::vector<float>& ma, std::vector<uint8_t>& vq, std::vector<float>& va,
                         const st_k_adam_scalars& s) {
    const float* sv = st_k_q8_map(1);
    const float* uv = st_k_q8_map(0);
    const std::vector<float> smid = midpoints(1), umid = midpoints(0);
    const int64_t n = static_cast<int64_t>(p.size());
    for (int64_t start = 0, b = 0; start < n; start += 256, ++b) {
        const int64_t len = std::min<int64_t>(256, n - start);
        std::vector<float> mm(len), vv(len);
        float am = 0, av = 0;
        for (int64_t j = 0; j < len; ++j) {
            const int64_t i = start + j;
            const float mi = sv[mq[i]] * ma[b] * s.b1 + s.a1 * g[i];
            const float vi = uv[vq[i]] * va[b] * s.b2 + s.a2 * g[i] * g[i];
            const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
            p[i] = p[i] * s.decay + s.neg_step * mi / denom;
            mm[j] = mi;
            vv[j] = vi;
            am = std::max(am, std::fabs(mi));
            av = std::max(av, vi);
        }
        ma[b] = am;
        va[b] = av;
        for (int64_t j = 0; j < len; ++j) {
            mq[start + j] = search_code(smid, mm[j] * (am > 0 ? 1.0f / am : 0.0f));
            vq[start + j] = search_code(umid, vv[j] * (av > 0 ? 1.0f / av : 0.0f));
        }
    }
}

TEST(KernelsCpuTest, AdamW8bitEqualsTheBlockwiseRuleAndChunksIndependently) {
    at::manual_seed(3);
    const int64_t n = 3 * 256 + 17, blocks = 4;
    at::Tensor p0 = at::randn({n});
    std::vector<float> p(f32(p0), f32(p0) + n), rp = p, split_p = p;
    std::vector<uint8_t> mq(n, 0), vq(n, 0);
    std::vector<float> ma(blocks, 0.0f), va(blocks, 0.0f);
    std::vector<uint8_t> rmq = mq, rvq = vq, smq = mq, svq = vq;
    std::vector<float> rma = ma, rva = va, sma = ma, sva = va;
    const AdamHp hp;
    for (int step = 1; step <= 4; ++step) {
        at::Tensor gt = at::randn({n});
        const std::vector<float> g(f32(gt), f32(gt) + n);
        const st_k_adam_scalars s = hp.scalars(step);
        ASSERT_EQ(
            st_k_adamw8bit_cpu(p.data(), g.data(), {mq.data(), ma.data()}, {vq.data(), va.data()}, n, &s),
            ST_K_OK);
        reference_adamw8bit(rp, g, rmq, rma, rvq, rva, s);
        // The plugin runs block-aligned chunks on threads: two calls split at element 512.
        ASSERT_EQ(st_k_adamw8bit_cpu(split_p.data(), g.data(), {smq.data(), sma.data()},
                                     {svq.data(), sva.data()}, 512, &s),
                  ST_K_OK);
        ASSERT_EQ(st_k_adamw8bit_cpu(split_p.data() + 512, g.data() + 512, {smq.data() + 512, sma.data() + 2},
                                     {svq.data() + 512, sva.data() + 2}, n - 512, &s),
                  ST_K_OK);
    }
    EXPECT_EQ(p, rp);
    EXPECT_EQ(mq, rmq);
    EXPECT_EQ(vq, rvq);
    EXPECT_EQ(ma, rma);
    EXPECT_EQ(va, rva);
    EXPECT_EQ(split_p, p);
    EXPECT_EQ(smq, mq);
    EXPECT_EQ(svq, vq);
    // The codes moved away from their initial zeros (the test compares real updates).
    EXPECT_GT(std::count_if(mq.begin(), mq.end(), [first = mq[0]](uint8_t c) { return c != first; }), n / 2);
}

TEST(KernelsCpuTest, Lion8bitEqualsTheBlockwiseRule) {
    at::manual_seed(4);
    const int64_t n = 600;
    at::Tensor p0 = at::randn({n});
    std::vector<float> p(f32(p0), f32(p0) + n), rp = p;
    std::vector<uint8_t> mq(n, 0), rmq(n, 0);
    std::vector<float> ma(3, 0.0f), rma(3, 0.0f);
    const float* sv = st_k_q8_map(1);
    const std::vector<float> smid = midpoints(1);
    const st_k_lion_scalars s{0.999f, 0.9f, 0.1f, 0.99f, 0.01f, -1e-3f};
    for (int step = 0; step < 4; ++step) {
        at::Tensor gt = at::randn({n});
        const std::vector<float> g(f32(gt), f32(gt) + n);
        ASSERT_EQ(st_k_lion8bit_cpu(p.data(), g.data(), {mq.data(), ma.data()}, n, &s), ST_K_OK);
        for (int64_t start = 0, b = 0; start < n; start += 256, ++b) {
            const int64_t len = std::min<int64_t>(256, n - start);
            std::vector<float> mm(len);
            float am = 0;
            for (int64_t j = 0; j < len; ++j) {
                const int64_t i = start + j;
                const float mi = sv[rmq[i]] * rma[b];
                const float c = mi * s.b1 + s.a1 * g[i];
                rp[i] = rp[i] * s.decay + s.neg_lr * static_cast<float>((c > 0) - (c < 0));
                mm[j] = mi * s.b2 + s.a2 * g[i];
                am = std::max(am, std::fabs(mm[j]));
            }
            rma[b] = am;
            for (int64_t j = 0; j < len; ++j)
                rmq[start + j] = search_code(smid, mm[j] * (am > 0 ? 1.0f / am : 0.0f));
        }
    }
    EXPECT_EQ(p, rp);
    EXPECT_EQ(mq, rmq);
    EXPECT_EQ(ma, rma);
}

// ---- DiT kernels ----------------------------------------------------------------------------------

struct ModCase {
    st_k_norm norm;
    bool affine;
    bool per_token;
    at::ScalarType in, out;
};

TEST(KernelsCpuTest, ModulatedNormMatchesAtenFormula) {
    const int64_t B = 2, L = 5, C = 48;
    for (const ModCase mc : {ModCase{ST_K_LAYER_NORM, false, false, at::kFloat, at::kFloat},
                             ModCase{ST_K_LAYER_NORM, false, true, at::kFloat, at::kFloat},
                             ModCase{ST_K_LAYER_NORM, true, false, at::kBFloat16, at::kBFloat16},
                             ModCase{ST_K_RMS_NORM, true, true, at::kFloat, at::kBFloat16},
                             ModCase{ST_K_RMS_NORM, false, false, at::kBFloat16, at::kFloat}}) {
        at::manual_seed(5);
        at::Tensor x = (at::randn({B, L, C}) * 3 + 1).to(mc.in);
        at::Tensor w = mc.affine ? at::randn({C}) : at::Tensor();
        at::Tensor bias = mc.affine && mc.norm == ST_K_LAYER_NORM ? at::randn({C}) : at::Tensor();
        const int64_t mod_tokens = mc.per_token ? L : 1;
        at::Tensor shift = at::randn({B, mod_tokens, C}), scale = at::randn({B, mod_tokens, C}) * 0.5;
        at::Tensor y = at::empty({B, L, C}, at::TensorOptions().dtype(mc.out));
        const st_k_modnorm_args a{B * L,
                                  L,
                                  C,
                                  mc.norm,
                                  1e-6f,
                                  x.data_ptr(),
                                  kdtype(mc.in),
                                  w.defined() ? f32(w) : nullptr,
                                  bias.defined() ? f32(bias) : nullptr,
                                  f32(shift),
                                  f32(scale),
                                  mod_tokens,
                                  mc.per_token ? 1 : 0,
                                  y.data_ptr(),
                                  kdtype(mc.out)};
        ASSERT_EQ(st_k_modnorm_cpu(&a), ST_K_OK);
        at::Tensor xf = x.to(at::kFloat), n;
        if (mc.norm == ST_K_LAYER_NORM) {
            n = at::layer_norm(xf, {C}, w, bias, 1e-6);
        } else {
            n = xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-6);
            if (w.defined()) n = n * w;
        }
        at::Tensor want = (n * (1 + scale) + shift).to(mc.out).to(at::kFloat);
        const double tol = mc.out == at::kBFloat16 ? 0.0 : 2e-5;
        // bf16 output: the same float rounded once; allow one bf16 step where the float values
        // straddle a rounding boundary.
        at::Tensor diff = (y.to(at::kFloat) - want).abs();
        at::Tensor bound =
            mc.out == at::kBFloat16 ? want.abs() * (1.0 / 128) + 1e-6 : at::full_like(want, tol);
        EXPECT_TRUE((diff <= bound).all().item<bool>())
            << "norm " << mc.norm << " affine " << mc.affine << " max diff " << diff.max().item<double>();
    }
}

TEST(KernelsCpuTest, GatedResidualMatchesWanBlockFormula) {
    const int64_t B = 2, L = 3, C = 16;
    at::manual_seed(6);
    at::Tensor x = at::randn({B, L, C}).to(at::kBFloat16), f = at::randn({B, L, C}).to(at::kBFloat16);
    at::Tensor gate = at::randn({B, 1, C});
    at::Tensor out = at::empty_like(x);
    const st_k_gated_residual_args a{B * L,     L, C, x.data_ptr(),   ST_K_BF16, f.data_ptr(), ST_K_BF16,
                                     f32(gate), 1, 0, out.data_ptr(), ST_K_BF16};
    ASSERT_EQ(st_k_gated_residual_cpu(&a), ST_K_OK);
    at::Tensor want = (x.to(at::kFloat) + f.to(at::kFloat) * gate).to(at::kBFloat16);
    EXPECT_TRUE(at::equal(out, want));
}

TEST(KernelsCpuTest, RopeMatchesKitRope3dAndInverseUndoesIt) {
    const int64_t B = 2, F = 2, H = 3, W = 4, heads = 2, D = 12, L = F * H * W;
    const st::kit::RopeTables t = st::kit::rope3d_tables(D, F, H, W, 1024, "test");
    at::manual_seed(7);
    at::Tensor x = at::randn({B, L, heads, D});
    at::Tensor want = st::kit::apply_rope3d(x, t);
    at::Tensor cs = t.cos.contiguous(), sn = t.sin.contiguous();
    at::Tensor out = at::empty_like(x);
    st_k_rope_args a{B,       L,       heads, D, x.data_ptr(),   ST_K_F32,
                     f32(cs), f32(sn), 0,     0, out.data_ptr(), ST_K_F32};
    ASSERT_EQ(st_k_rope_cpu(&a), ST_K_OK);
    EXPECT_LT((out - want).abs().max().item<double>(), 1e-6);
    // Per-sample tables [B, L, D] (after TREAD routing): sample 1 gets the tables reversed in L.
    at::Tensor cs_b = at::stack({cs, cs.flip(0)}).contiguous(),
               sn_b = at::stack({sn, sn.flip(0)}).contiguous();
    at::Tensor want_b = st::kit::apply_rope3d(x, st::kit::RopeTables{cs_b, sn_b});
    st_k_rope_args ab = a;
    ab.cos = f32(cs_b);
    ab.sin = f32(sn_b);
    ab.table_batch_stride = L * D;
    ASSERT_EQ(st_k_rope_cpu(&ab), ST_K_OK);
    EXPECT_LT((out - want_b).abs().max().item<double>(), 1e-6);
    // inverse (the backward) undoes the rotation, in place.
    st_k_rope_args inv = ab;
    inv.x = out.data_ptr();
    inv.inverse = 1;
    ASSERT_EQ(st_k_rope_cpu(&inv), ST_K_OK);
    EXPECT_LT((out - x).abs().max().item<double>(), 1e-5);
    // bf16 in and out: ATen's rotation of the same bf16 input, rounded once.
    at::Tensor xb = x.to(at::kBFloat16), ob = at::empty_like(xb);
    st_k_rope_args abf = a;
    abf.x = xb.data_ptr();
    abf.x_dtype = ST_K_BF16;
    abf.out = ob.data_ptr();
    abf.out_dtype = ST_K_BF16;
    ASSERT_EQ(st_k_rope_cpu(&abf), ST_K_OK);
    at::Tensor wb = st::kit::apply_rope3d(xb, t).to(at::kFloat);
    EXPECT_TRUE(((ob.to(at::kFloat) - wb).abs() <= wb.abs() / 128 + 1e-6).all().item<bool>());
}

TEST(KernelsCpuTest, BadArgumentsAreRefused) {
    float buf[8] = {};
    st_k_rope_args odd{1, 1, 1, 3, buf, ST_K_F32, buf, buf, 0, 0, buf, ST_K_F32};
    EXPECT_EQ(st_k_rope_cpu(&odd), ST_K_BAD_ARGUMENT);
    st_k_modnorm_args mn{};
    mn.rows = 3;
    mn.tokens = 2;  // 3 rows are not whole samples of 2 tokens
    mn.channels = 1;
    mn.x = buf;
    mn.y = buf;
    EXPECT_EQ(st_k_modnorm_cpu(&mn), ST_K_BAD_ARGUMENT);
    EXPECT_EQ(st_k_modnorm_cpu(nullptr), ST_K_BAD_ARGUMENT);
    const st_k_adam_scalars s{};
    EXPECT_EQ(st_k_adamw_cpu(nullptr, buf, buf, buf, 4, &s), ST_K_BAD_ARGUMENT);
    EXPECT_EQ(st_k_adamw_cpu(buf, buf, buf, buf, 0, &s), ST_K_OK);  // empty is fine
    EXPECT_STREQ(st_k_status_name(ST_K_BAD_ARGUMENT), "bad argument");
}

}  // namespace
