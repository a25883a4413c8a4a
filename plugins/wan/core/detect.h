// Variant detection of a Wan transformer checkpoint from tensor names and shapes only
// (stable-diffusion.cpp style detect_from_weights; diffusers single_file_utils for the rules).
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/key_map.h"
#include "st/kit/diffusers_model.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan {

/// Structural class of a Wan transformer (what the channel layout and branches say).
enum class WanVariantKind {
    t2v,       ///< in == out (16 for the released models)
    i2v_21,    ///< in == 2*out + 4, CLIP image branch (Wan 2.1 I2V)
    flf2v_21,  ///< as i2v_21 with the image position embedding
    i2v_22,    ///< in == 2*out + 4, no image branch (Wan 2.2 I2V-A14B expert)
    ti2v_22,   ///< 48-channel latents (Wan 2.2 TI2V 5B)
};
const char* variant_kind_name(WanVariantKind kind);

/// The kit's CheckpointFacts (layout, prefix, dtypes, tensor count, variant) plus the Wan config.
/// variant: "t2v-1.3b-2.1", "t2v-14b", "i2v-14b-2.1", "flf2v-14b-2.1", "i2v-a14b-2.2", "ti2v-5b-2.2",
/// or "<kind> custom (dim D, N layers)" for other sizes (tiny test models).
struct WanCheckpointInfo : st::kit::CheckpointFacts {
    WanTransformerConfig config;
    WanVariantKind kind = WanVariantKind::t2v;
    /// One line for the log: "t2v-1.3b-2.1 (diffusers layout, 825 tensors, BF16 x825; dim ...)".
    std::string summary() const { return CheckpointFacts::summary(describe(config)); }
};

/// Classifies a config (throws st::Error when its channel layout fits no Wan flavour).
WanVariantKind classify(const WanTransformerConfig& config);
std::string variant_name(const WanTransformerConfig& config);

/// Reads names/shapes of `source` (no tensor data) and recovers layout, prefix and config.
/// Throws st::Error when the source is not a Wan transformer (naming what is missing and the
/// first keys found) or when its shapes fit no Wan flavour (naming the tensor and both shapes).
WanCheckpointInfo inspect_transformer(const st::sdk::TensorSource& source);

/// The key map for st::sdk::load_strict: file name (with prefix, either layout) -> diffusers name.
/// A name outside the table is returned unchanged, so strict loading reports it as unexpected.
std::string to_diffusers_key(const std::string& file_name, const WanCheckpointInfo& info);

}  // namespace st::plugins::wan
