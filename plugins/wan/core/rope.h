// 3-D rotary position embedding of the Wan DiT: the family kit's (st/kit/rope3d.h), under the names
// the Wan and S2V code uses. models.md §1.4.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "st/kit/rope3d.h"

namespace st::plugins::wan {

using RopeTables = st::kit::RopeTables;

/// st::kit::rope3d_tables with errors from model.wan@1.
RopeTables wan_rope_tables(int64_t head_dim, int64_t frames, int64_t height, int64_t width,
                           int64_t max_seq_len, double theta = 10000.0);

/// st::kit::apply_rope3d.
inline at::Tensor apply_wan_rope(const at::Tensor& x, const RopeTables& tables) {
    return st::kit::apply_rope3d(x, tables);
}

}  // namespace st::plugins::wan
