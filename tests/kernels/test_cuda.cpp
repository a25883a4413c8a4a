// kernels/cuda against kernels/cpu (st/kernels.h) on random inputs, each op in the dtypes and layouts
// st uses. Label `gpu`: without a CUDA driver or device every case skips (GTEST_SKIP), so the suite
// passes on CPU-only machines, where it still proves the CUDA library links.
#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "st/kernels.h"

namespace {

#define ST_REQUIRE_GPU()                                                              \
    do {                                                                              \
        if (st_k_cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: skipped"; \
    } while (0)

// A device copy of a host tensor's bytes, copied back on demand.
class DeviceCopy {
  public:
    explicit DeviceCopy(const at::Tensor& host) : bytes_(host.numel() * host.element_size()) {
        EXPECT_EQ(cudaMalloc(&ptr_, bytes_ ? bytes_ : 1), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(ptr_, host.data_ptr(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~DeviceCopy() { cudaFree(ptr_); }
    DeviceCopy(const DeviceCopy&) = delete;
    DeviceCopy& operator=(const DeviceCopy&) = delete;
    template <typename T = void>
    T* get() const {
        return static_cast<T*>(ptr_);
    }
    at::Tensor to_host(const at::Tensor& like) const {
        at::Tensor out = at::empty_like(like);
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(out.data_ptr(), ptr_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }

  private:
    size_t bytes_;
    void* ptr_ = nullptr;
};

float* f32(const at::Tensor& t) {
    return t.data_ptr<float>();
}

TEST(KernelsCudaTest, AdamWAndLionEqualCpuBitForBit) {
    ST_REQUIRE_GPU();
    at::manual_seed(1);
    const int64_t n = 100003;
    at::Tensor p = at::randn({n}), g = at::randn({n}), m = at::randn({n}) * 0.1, v = at::rand({n}) * 0.01;
    DeviceCopy dp(p), dg(g), dm(m), dv(v);
    const st_k_adam_scalars s{0.999f, 0.9f, 0.1f, 0.999f, 0.001f, 0.0447f, 1e-8f, -0.01f};
    ASSERT_EQ(
        st_k_adamw_cuda(dp.get<float>(), dg.get<float>(), dm.get<float>(), dv.get<float>(), n, &s, nullptr),
        ST_K_OK);
    ASSERT_EQ(st_k_adamw_cpu(f32(p), f32(g), f32(m), f32(v), n, &s), ST_K_OK);
    EXPECT_TRUE(at::equal(dp.to_host(p), p));
    EXPECT_TRUE(at::equal(dm.to_host(m), m));
    EXPECT_TRUE(at::equal(dv.to_host(v), v));

    const st_k_lion_scalars ls{0.999f, 0.9f, 0.1f, 0.99f, 0.01f, -1e-3f};
    ASSERT_EQ(st_k_lion_cuda(dp.get<float>(), dg.get<float>(), dm.get<float>(), n, &ls, nullptr), ST_K_OK);
    ASSERT_EQ(st_k_lion_cpu(f32(p), f32(g), f32(m), n, &ls), ST_K_OK);
    EXPECT_TRUE(at::equal(dp.to_host(p), p));
    EXPECT_TRUE(at::equal(dm.to_host(m), m));
}

TEST(KernelsCudaTest, EightBitStepsEqualCpu) {
    ST_REQUIRE_GPU();
    at::manual_seed(2);
    const int64_t n = 40 * 256 + 77, blocks = 41;
    at::Tensor p = at::randn({n}), mq = at::zeros({n}, at::kByte), vq = at::zeros({n}, at::kByte);
    at::Tensor ma = at::zeros({blocks}), va = at::zeros({blocks});
    DeviceCopy dp(p), dmq(mq), dvq(vq), dma(ma), dva(va);
    for (int step = 1; step <= 3; ++step) {
        at::Tensor g = at::randn({n});
        DeviceCopy dg(g);
        const st_k_adam_scalars s{0.999f, 0.9f, 0.1f, 0.999f, 0.001f, 0.04f * step, 1e-8f, -0.01f};
        ASSERT_EQ(
            st_k_adamw8bit_cuda(dp.get<float>(), dg.get<float>(), {dmq.get<uint8_t>(), dma.get<float>()},
                                {dvq.get<uint8_t>(), dva.get<float>()}, n, &s, nullptr),
            ST_K_OK);
        ASSERT_EQ(st_k_adamw8bit_cpu(f32(p), f32(g), {mq.data_ptr<uint8_t>(), f32(ma)},
                                     {vq.data_ptr<uint8_t>(), f32(va)}, n, &s),
                  ST_K_OK);
    }
    EXPECT_TRUE(at::equal(dp.to_host(p), p));
    EXPECT_TRUE(at::equal(dmq.to_host(mq), mq));
    EXPECT_TRUE(at::equal(dvq.to_host(vq), vq));
    EXPECT_TRUE(at::equal(dma.to_host(ma), ma));
    EXPECT_TRUE(at::equal(dva.to_host(va), va));

    at::Tensor lq = at::zeros({n}, at::kByte), la = at::zeros({blocks});
    DeviceCopy dlq(lq), dla(la);
    const st_k_lion_scalars ls{0.999f, 0.9f, 0.1f, 0.99f, 0.01f, -1e-3f};
    for (int step = 0; step < 3; ++step) {
        at::Tensor g = at::randn({n});
        DeviceCopy dg(g);
        ASSERT_EQ(st_k_lion8bit_cuda(dp.get<float>(), dg.get<float>(), {dlq.get<uint8_t>(), dla.get<float>()},
                                     n, &ls, nullptr),
                  ST_K_OK);
        ASSERT_EQ(st_k_lion8bit_cpu(f32(p), f32(g), {lq.data_ptr<uint8_t>(), f32(la)}, n, &ls), ST_K_OK);
    }
    EXPECT_TRUE(at::equal(dp.to_host(p), p));
    EXPECT_TRUE(at::equal(dlq.to_host(lq), lq));
    EXPECT_TRUE(at::equal(dla.to_host(la), la));
}

TEST(KernelsCudaTest, ModulatedNormMatchesCpu) {
    ST_REQUIRE_GPU();
    const int64_t B = 2, L = 33, C = 1536;
    for (st_k_norm norm : {ST_K_LAYER_NORM, ST_K_RMS_NORM}) {
        for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
            at::manual_seed(3);
            at::Tensor x = (at::randn({B, L, C}) * 2 + 0.5).to(dt);
            at::Tensor w = at::randn({C}), shift = at::randn({B, L, C}), scale = at::randn({B, L, C}) * 0.3;
            at::Tensor y = at::empty_like(x);
            DeviceCopy dx(x), dw(w), dsh(shift), dsc(scale), dy(y);
            const st_k_dtype kd = dt == at::kBFloat16 ? ST_K_BF16 : ST_K_F32;
            st_k_modnorm_args a{B * L,
                                L,
                                C,
                                norm,
                                1e-6f,
                                dx.get(),
                                kd,
                                dw.get<float>(),
                                nullptr,
                                dsh.get<float>(),
                                dsc.get<float>(),
                                L,
                                1,
                                dy.get(),
                                kd};
            ASSERT_EQ(st_k_modnorm_cuda(&a, nullptr), ST_K_OK);
            a.x = x.data_ptr();
            a.weight = f32(w);
            a.shift = f32(shift);
            a.scale = f32(scale);
            a.y = y.data_ptr();
            ASSERT_EQ(st_k_modnorm_cpu(&a), ST_K_OK);
            const at::Tensor got = dy.to_host(y).to(at::kFloat), want = y.to(at::kFloat);
            const double rel = dt == at::kBFloat16 ? 1.0 / 128 : 1e-5;
            EXPECT_TRUE(((got - want).abs() <= want.abs() * rel + 1e-5).all().item<bool>())
                << "norm " << norm << " max diff " << (got - want).abs().max().item<double>();
        }
    }
}

TEST(KernelsCudaTest, GatedResidualAndRopeMatchCpu) {
    ST_REQUIRE_GPU();
    at::manual_seed(4);
    const int64_t B = 2, L = 40, heads = 4, D = 64;
    at::Tensor x = at::randn({B, L, heads * D}).to(at::kBFloat16), f = at::randn({B, L, heads * D});
    at::Tensor gate = at::randn({B, 1, heads * D}), out = at::empty_like(x);
    DeviceCopy dx(x), df(f), dgate(gate), dout(out);
    st_k_gated_residual_args ga{B * L,     L,        heads * D,  dx.get(),
                                ST_K_BF16, df.get(), ST_K_F32,   dgate.get<float>(),
                                1,         0,        dout.get(), ST_K_BF16};
    ASSERT_EQ(st_k_gated_residual_cuda(&ga, nullptr), ST_K_OK);
    ga.x = x.data_ptr();
    ga.f = f.data_ptr();
    ga.gate = f32(gate);
    ga.out = out.data_ptr();
    ASSERT_EQ(st_k_gated_residual_cpu(&ga), ST_K_OK);
    EXPECT_TRUE(at::equal(dout.to_host(out), out));

    at::Tensor q = at::randn({B, L, heads, D}), ang = at::rand({B, L, D}) * 6.28;
    at::Tensor cs = ang.cos().contiguous(), sn = ang.sin().contiguous(), ro = at::empty_like(q);
    DeviceCopy dq(q), dcs(cs), dsn(sn), dro(ro);
    st_k_rope_args ra{B,     L, heads,     D,       dq.get(), ST_K_F32, dcs.get<float>(), dsn.get<float>(),
                      L * D, 0, dro.get(), ST_K_F32};
    ASSERT_EQ(st_k_rope_cuda(&ra, nullptr), ST_K_OK);
    ra.x = q.data_ptr();
    ra.cos = f32(cs);
    ra.sin = f32(sn);
    ra.out = ro.data_ptr();
    ASSERT_EQ(st_k_rope_cpu(&ra), ST_K_OK);
    EXPECT_LT((dro.to_host(ro) - ro).abs().max().item<double>(), 1e-6);
}

TEST(KernelsCudaTest, DeviceCountIsZeroOrMoreWithoutError) {
    // Runs everywhere: on a machine without a driver the count is 0, never an error.
    EXPECT_GE(st_k_cuda_device_count(), 0);
}

}  // namespace
