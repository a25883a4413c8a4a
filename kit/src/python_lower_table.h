// Data table behind python_lower() (tokenizer_clean.cpp), generated from Python's Unicode database by
// python_lower_gen.py so the C++ lower-casing matches Python's str.lower().
#pragma once

#include <cstddef>
#include <cstdint>

namespace st::kit::detail {

/// Every `step`-th code point of [first, last] lowers to code point + delta. Sorted by `first`,
/// non-overlapping.
struct LowerRun {
    uint32_t first;
    uint32_t last;
    uint32_t step;
    int32_t delta;
};

extern const LowerRun kPythonLowerRuns[];
extern const size_t kPythonLowerRunCount;

}  // namespace st::kit::detail
