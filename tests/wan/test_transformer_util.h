// Helpers shared by the Wan transformer/loading tests: golden paths, tensor loading, the MANIFEST
// tolerance rule.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "../common/golden_tolerance.h"
#include "core/config.h"
#include "st/safetensors.h"

namespace st::plugins::wan {
/// Readable gtest output for config comparisons.
inline void PrintTo(const WanTransformerConfig& c, std::ostream* os) {
    *os << c.to_json().dump();
}
}  // namespace st::plugins::wan

namespace st::plugins::wan::test {

/// What detect_from_weights can know: everything except rope_max_seq_len (not in the weights).
inline WanTransformerConfig as_detected(WanTransformerConfig c) {
    c.rope_max_seq_len = WanTransformerConfig{}.rope_max_seq_len;
    return c;
}

using st::test::allclose_manifest;
using st::test::golden;
using st::test::load_tensor;
using st::test::Tolerance;

}  // namespace st::plugins::wan::test
