// Gradient clipping helpers against torch.nn.utils semantics (computed by hand here).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "st/error.h"
#include "st/grad_clip.h"

namespace st::sdk {
namespace {

std::vector<at::Tensor> params_with_grads() {
    at::Tensor a = at::zeros({2, 2}).set_requires_grad(true);
    at::Tensor b = at::zeros({3}).set_requires_grad(true);
    at::Tensor c = at::zeros({4}).set_requires_grad(true);  // no grad: skipped
    a.mutable_grad() = at::tensor({3.0f, 0.0f, 0.0f, 4.0f}).view({2, 2});
    b.mutable_grad() = at::tensor({0.0f, -12.0f, 0.0f});
    return {a, b, c};
}

TEST(GradClipTest, NormIsGlobalL2AndScalesWithTorchEpsilon) {
    auto params = params_with_grads();
    EXPECT_DOUBLE_EQ(grad_norm(params), 13.0);  // sqrt(3^2 + 4^2 + 12^2)
    const double total = clip_grad_norm(params, 1.3);
    EXPECT_DOUBLE_EQ(total, 13.0);
    const float coef = static_cast<float>(1.3f / (13.0f + 1e-6f));
    EXPECT_FLOAT_EQ(params[0].grad()[0][0].item<float>(), 3.0f * coef);
    EXPECT_FLOAT_EQ(params[1].grad()[1].item<float>(), -12.0f * coef);
    EXPECT_NEAR(grad_norm(params), 1.3, 1e-6);
    EXPECT_FALSE(params[2].grad().defined());
}

TEST(GradClipTest, NormBelowThresholdIsUnchangedAndZeroDisables) {
    auto params = params_with_grads();
    EXPECT_DOUBLE_EQ(clip_grad_norm(params, 100.0), 13.0);
    EXPECT_FLOAT_EQ(params[1].grad()[1].item<float>(), -12.0f);
    EXPECT_DOUBLE_EQ(clip_grad_norm(params, 0.0), 13.0);
    EXPECT_FLOAT_EQ(params[1].grad()[1].item<float>(), -12.0f);
}

TEST(GradClipTest, ValueClampsEachElementAndReportsMaxAbs) {
    auto params = params_with_grads();
    EXPECT_DOUBLE_EQ(clip_grad_value(params, 3.5), 12.0);
    EXPECT_FLOAT_EQ(params[0].grad()[0][0].item<float>(), 3.0f);
    EXPECT_FLOAT_EQ(params[0].grad()[1][1].item<float>(), 3.5f);
    EXPECT_FLOAT_EQ(params[1].grad()[1].item<float>(), -3.5f);
    auto other = params_with_grads();
    EXPECT_DOUBLE_EQ(clip_grad_value(other, 0.0), 12.0);  // disabled
    EXPECT_FLOAT_EQ(other[1].grad()[1].item<float>(), -12.0f);
}

}  // namespace
}  // namespace st::sdk

TEST(GradClipTest, MethodByName) {
    auto p = at::zeros({2}).set_requires_grad(true);
    p.mutable_grad() = at::tensor({3.0f, -4.0f});
    EXPECT_DOUBLE_EQ(st::sdk::clip_gradients({p}, "value", 1.0), 4.0);
    EXPECT_FLOAT_EQ(p.grad()[1].item<float>(), -1.0f);
    p.mutable_grad() = at::tensor({3.0f, -4.0f});
    EXPECT_NEAR(st::sdk::clip_gradients({p}, "norm", 1.0), 5.0, 1e-6);
    EXPECT_THROW(st::sdk::clip_gradients({p}, "l1", 1.0), st::Error);
}
