// st::kit's CUDA DiT calls (kit/include/st/kit/cuda_dit.h) against the ATen formulas they replace.
// Label `gpu`: the comparisons need an ST_CUDA build and a device and skip otherwise; on every build
// the CPU-tensor rules are checked (never taken for CPU tensors; a clear error without CUDA).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "st/error.h"
#include "st/kit/cuda_dit.h"
#include "st/kit/rope3d.h"

namespace {

bool have_cuda_kernels() {
    return at::hasCUDA() &&
           st::kit::cuda_dit_available(at::zeros({1}, at::TensorOptions().device(at::kCUDA)));
}

TEST(KitCudaDitTest, CpuTensorsKeepTheAtenPath) {
    EXPECT_FALSE(st::kit::cuda_dit_available(at::zeros({2, 3})));
    EXPECT_FALSE(st::kit::cuda_dit_available(at::Tensor()));
#if !(defined(ST_WITH_CUDA) && ST_WITH_CUDA)
    EXPECT_THROW(st::kit::modulated_layer_norm_cuda(at::zeros({1, 1, 4}), at::zeros({1, 1, 4}),
                                                    at::zeros({1, 1, 4}), 1e-6, at::kFloat),
                 st::Error);
#endif
}

TEST(KitCudaDitTest, RopeMatchesAtenWithGradient) {
    if (!have_cuda_kernels()) GTEST_SKIP() << "needs an ST_CUDA build and a CUDA device";
    const auto t = st::kit::rope3d_tables(64, 2, 4, 6, 1024, "test");
    at::manual_seed(1);
    at::Tensor x = at::randn({2, 48, 3, 64}).to(at::kCUDA).set_requires_grad(true);
    at::Tensor got = st::kit::apply_rope3d(x, t);  // takes the kernel
    at::Tensor go = at::randn_like(got);
    at::Tensor gx = torch::autograd::grad({got}, {x}, {go})[0];
    at::Tensor xc = x.detach().cpu().set_requires_grad(true);
    at::Tensor want = st::kit::apply_rope3d(xc, t);  // the ATen formula on the CPU
    at::Tensor wx = torch::autograd::grad({want}, {xc}, {go.cpu()})[0];
    EXPECT_LT((got.detach().cpu() - want.detach()).abs().max().item<double>(), 1e-5);
    EXPECT_LT((gx.cpu() - wx).abs().max().item<double>(), 1e-5);
}

TEST(KitCudaDitTest, ModulatedNormAndGatedResidualMatchAten) {
    if (!have_cuda_kernels()) GTEST_SKIP() << "needs an ST_CUDA build and a CUDA device";
    at::manual_seed(2);
    const auto cuda = at::TensorOptions().device(at::kCUDA);
    at::Tensor x = at::randn({2, 10, 256}, cuda).to(at::kBFloat16);
    at::Tensor shift = at::randn({2, 1, 256}, cuda), scale = at::randn({2, 1, 256}, cuda) * 0.2;
    at::Tensor y = st::kit::modulated_layer_norm_cuda(x, shift, scale, 1e-6, at::kBFloat16);
    at::Tensor want = (at::layer_norm(x.to(at::kFloat), {256}, {}, {}, 1e-6) * (1 + scale) + shift);
    EXPECT_TRUE(((y.to(at::kFloat) - want).abs() <= want.abs() / 128 + 1e-3).all().item<bool>());
    at::Tensor f = at::randn({2, 10, 256}, cuda).to(at::kBFloat16);
    at::Tensor r = st::kit::gated_residual_cuda(x, f, shift);
    EXPECT_TRUE(r.equal((x.to(at::kFloat) + f.to(at::kFloat) * shift).to(at::kBFloat16)));
}

}  // namespace
