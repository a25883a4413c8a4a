// Internal to libst_sdk: the small numeric helpers the sampler ports share (samplers.cpp,
// samplers_dpm.cpp). Not installed, not part of the SDK contract.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace st::sdk::sampler_math {

inline constexpr const char* kComponent = "sdk.samplers";

/// Flow shift: s * sigma / (1 + (s - 1) * sigma), evaluated in numpy's order.
inline double shift_sigma(double s, double sigma) {
    return s * sigma / (1.0 + (s - 1.0) * sigma);
}

inline double round_f32(double x) {
    return static_cast<double>(static_cast<float>(x));
}

/// numpy.linspace(start, stop, num) with endpoint: start + i * step, last element exactly `stop`.
inline std::vector<double> np_linspace(double start, double stop, int64_t num) {
    std::vector<double> y(static_cast<size_t>(num));
    if (num == 1) {
        y[0] = start;
        return y;
    }
    const double step = (stop - start) / static_cast<double>(num - 1);
    for (int64_t i = 0; i < num; ++i) y[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
    y.back() = stop;
    return y;
}

/// Tensor math runs in float32, or float64 for float64 samples.
inline at::ScalarType math_type(const at::Tensor& t) {
    return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

/// Flow-mode log-SNR: alpha = 1 - sigma, lambda = log(alpha) - log(sigma); +inf at sigma = 0.
inline double lambda_of(double sigma) {
    if (sigma <= 0.0) return std::numeric_limits<double>::infinity();
    return std::log(1.0 - sigma) - std::log(sigma);
}

}  // namespace st::sdk::sampler_math
