// SimpleTuner's feed-forward chunking keys for the Wan transformer blocks, shared by model.wan@1 and
// model.wan_s2v@1 (whose blocks are Wan blocks).
#pragma once

#include <string>
#include <vector>

#include "core/transformer.h"
#include "st/options.h"

namespace st::plugins::wan {

/// enable_chunked_feed_forward, feed_forward_chunk_size, feed_forward_chunk_dim.
std::vector<st::sdk::OptionSpec> feed_forward_chunking_option_specs();

/// The chunking a config asks for, as SimpleTuner reads it: the keys, else env
/// WAN_FEED_FORWARD_CHUNK_SIZE / WAN_FEED_FORWARD_CHUNK_DIM (a size > 0 there enables chunking by
/// itself); feed_forward_chunk_size <= 0 means automatic. Logs what was decided. st::Error naming the
/// key or variable for a malformed value.
FeedForwardChunking resolve_feed_forward_chunking(const st::sdk::ConfigView& config,
                                                  const std::string& component);

}  // namespace st::plugins::wan
