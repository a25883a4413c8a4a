// The Wan names of the kit's 3-D RoPE (st/kit/rope3d.h).
#include "core/rope.h"

namespace st::plugins::wan {

RopeTables wan_rope_tables(int64_t head_dim, int64_t frames, int64_t height, int64_t width,
                           int64_t max_seq_len, double theta) {
    return st::kit::rope3d_tables(head_dim, frames, height, width, max_seq_len, "model.wan@1", theta);
}

}  // namespace st::plugins::wan
