// The 8-bit dynamic code maps (values, midpoints) and the CPU nearest-code lookup table.
#pragma once

#include <stdint.h>

#include "../src/elementwise.h"

namespace st::kernels {

struct Q8Codes {
    float values[256];   ///< ascending
    float mids[255];     ///< midpoints of neighbours: code(x) = number of midpoints <= x
    uint8_t lut[65536];  ///< per top-16-bit float bin: number of midpoints <= the bin's smallest value
};

/// Built once (thread-safe static initialisation).
const Q8Codes& q8_codes(bool is_signed);

/// Nearest code of x: the bin's table entry, then the few midpoints inside the bin. Equal to
/// std::upper_bound(mids, mids + 255, x) - mids for every float, NaN included (255).
inline uint8_t q8_quantize(const Q8Codes& c, float x) {
    if (x != x) return 255;
    unsigned code = c.lut[float_bits(x) >> 16];
    while (code < 255 && c.mids[code] <= x) ++code;
    return static_cast<uint8_t>(code);
}

}  // namespace st::kernels
