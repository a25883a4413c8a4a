// Golden fixtures in tests: their paths, reading one tensor, and the MANIFEST tolerance rule
// (|got - ref| <= atol + rtol * |ref| elementwise and max|got - ref| / max|ref| <= max_rel).
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "st/safetensors.h"

namespace st::test {

inline std::filesystem::path golden(const std::string& rel) {
    return std::filesystem::path(ST_TEST_GOLDEN_DIR) / rel;
}

inline at::Tensor load_tensor(const std::filesystem::path& file, const std::string& name) {
    return st::sdk::SafetensorsFile::open(file)->load(name);
}

struct Tolerance {
    double atol = 2e-4;
    double rtol = 1e-4;
    double max_rel = 1e-4;
};

inline ::testing::AssertionResult allclose_manifest(const at::Tensor& got_in, const at::Tensor& ref_in,
                                                    Tolerance tol = {}) {
    at::Tensor got = got_in.detach().to(at::kDouble), ref = ref_in.detach().to(at::kDouble);
    if (got.sizes() != ref.sizes())
        return ::testing::AssertionFailure() << "shape " << got.sizes() << " vs reference " << ref.sizes();
    at::Tensor diff = (got - ref).abs();
    const double max_abs = diff.max().item<double>();
    const double ref_max = ref.abs().max().item<double>();
    const int64_t bad = (diff > tol.atol + tol.rtol * ref.abs()).sum().item<int64_t>();
    const double rel = ref_max > 0 ? max_abs / ref_max : max_abs;
    if (bad > 0 || rel > tol.max_rel)
        return ::testing::AssertionFailure() << bad << " elements out of tolerance, max abs diff " << max_abs
                                             << ", max rel " << rel << " (ref max " << ref_max << ")";
    return ::testing::AssertionSuccess() << "max abs diff " << max_abs;
}

}  // namespace st::test
