// bitsandbytes' dynamic code maps and the table-driven nearest-code quantiser (st/kernels.h).
#include "q8_codes.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace st::kernels {
namespace {

// bitsandbytes functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for
// exponent i in 0..6, 2^i (signed, mirrored) or 2^(i+1) (unsigned) linear fractions between 0.1 and
// 1 scaled by 10^(i-6), plus 0 and 1. Built in double, stored as float.
void build_values(bool is_signed, float* values) {
    std::vector<double> data;
    for (int i = 0; i < 7; ++i) {
        const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        const double scale = std::pow(10.0, -6 + i);
        for (int k = 0; k + 1 < items; ++k) {
            const double lo = 0.1 + 0.9 * k / (items - 1);
            const double hi = 0.1 + 0.9 * (k + 1) / (items - 1);
            const double mean = (lo + hi) / 2.0;
            data.push_back(scale * mean);
            if (is_signed) data.push_back(-scale * mean);
        }
    }
    data.push_back(0.0);
    data.push_back(1.0);
    std::sort(data.begin(), data.end());
    for (size_t i = 0; i < 256; ++i) values[i] = static_cast<float>(data.at(i));
}

// Smallest (most negative) float whose top 16 bits are `bin`; NaN for bins holding only NaNs.
float bin_minimum(uint32_t bin) {
    const bool negative = (bin & 0x8000u) != 0;
    const uint32_t exponent = (bin >> 7) & 0xffu;
    if (exponent == 0xffu) {
        // +inf (positive bin 0x7f80) or -inf (negative bin 0xff80) start their bins; the rest are NaN.
        if ((bin & 0x7fu) != 0) return NAN;
        return negative ? -INFINITY : INFINITY;
    }
    // Positive bins grow with the low bits, negative bins shrink: the minimum is at the low end of
    // a positive bin and at the high end of a negative one.
    return bits_float(negative ? (bin << 16) | 0xffffu : bin << 16);
}

Q8Codes build(bool is_signed) {
    Q8Codes c{};
    build_values(is_signed, c.values);
    for (int i = 0; i < 255; ++i) c.mids[i] = 0.5f * (c.values[i] + c.values[i + 1]);
    for (uint32_t bin = 0; bin < 65536u; ++bin) {
        const float lo = bin_minimum(bin);
        // count of midpoints <= lo (std::upper_bound); NaN-only bins are never read (NaN is caught
        // before the table), fill them with the NaN answer.
        c.lut[bin] =
            std::isnan(lo) ? 255 : static_cast<uint8_t>(std::upper_bound(c.mids, c.mids + 255, lo) - c.mids);
    }
    return c;
}

}  // namespace

const Q8Codes& q8_codes(bool is_signed) {
    static const Q8Codes kSigned = build(true);
    static const Q8Codes kUnsigned = build(false);
    return is_signed ? kSigned : kUnsigned;
}

}  // namespace st::kernels

extern "C" const float* st_k_q8_map(int is_signed) {
    return st::kernels::q8_codes(is_signed != 0).values;
}

extern "C" uint8_t st_k_q8_quantize(int is_signed, float x) {
    return st::kernels::q8_quantize(st::kernels::q8_codes(is_signed != 0), x);
}
