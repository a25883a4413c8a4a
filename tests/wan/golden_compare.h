// The MANIFEST elementwise tolerance rule shared by the Wan VAE parity tests:
// |actual - ref| <= atol + rtol * |ref| for every element, compared in float64.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace st::plugins::wan::test {

inline ::testing::AssertionResult close_to(const at::Tensor& actual, const at::Tensor& expected,
                                           const std::string& name, double atol, double rtol) {
    if (actual.sizes() != expected.sizes())
        return ::testing::AssertionFailure()
               << name << ": shape " << actual.sizes() << " vs expected " << expected.sizes();
    const at::Tensor diff = (actual.to(at::kDouble) - expected.to(at::kDouble)).abs();
    const at::Tensor excess = diff - (atol + rtol * expected.to(at::kDouble).abs());
    const double worst = excess.max().item<double>();
    if (worst > 0.0)
        return ::testing::AssertionFailure()
               << name << ": max |diff| " << diff.max().item<double>() << " exceeds atol+rtol*|ref| by "
               << worst << " (" << (excess > 0).sum().item<int64_t>() << " of " << diff.numel()
               << " elements)";
    std::printf("%s: max |diff| %.3g\n", name.c_str(), diff.max().item<double>());
    return ::testing::AssertionSuccess();
}

}  // namespace st::plugins::wan::test
