#include "core/ff_chunking.h"

#include <cstdlib>

#include "st/error.h"
#include "st/log.h"

namespace st::plugins::wan {

namespace {

std::optional<int64_t> env_int(const char* name, const std::string& component) {
    const char* env = std::getenv(name);
    if (env == nullptr || *env == '\0') return std::nullopt;
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end == env || *end != '\0')
        fail(component, "config", "env {} must be an integer, got '{}'", name, env);
    return v;
}

}  // namespace

std::vector<st::sdk::OptionSpec> feed_forward_chunking_option_specs() {
    using namespace st::sdk;
    std::vector<OptionSpec> specs;
    specs.push_back(opt_bool("enable_chunked_feed_forward", false,
                             "Run each block's FFN in pieces to save activation memory (output unchanged)."));
    specs.push_back(opt_int("feed_forward_chunk_size", std::nullopt,
                            "FFN piece size along feed_forward_chunk_dim (SimpleTuner's meaning); unset or "
                            "<= 0: env WAN_FEED_FORWARD_CHUNK_SIZE, else automatic (pieces of 2 samples when "
                            "the batch has >= 2, else the sequence in 4)."));
    specs.push_back(opt_int("feed_forward_chunk_dim", std::nullopt,
                            "Dimension feed_forward_chunk_size cuts: 0 = batch (SimpleTuner's default), 1 = "
                            "tokens; unset: env WAN_FEED_FORWARD_CHUNK_DIM, else 0.")
                        .range(0, 1));
    return specs;
}

FeedForwardChunking resolve_feed_forward_chunking(const st::sdk::ConfigView& config,
                                                  const std::string& component) {
    FeedForwardChunking c;
    c.enabled = config.has("enable_chunked_feed_forward") && config.get_bool("enable_chunked_feed_forward");
    std::optional<int64_t> size = config.opt_int("feed_forward_chunk_size");
    std::string size_from = "feed_forward_chunk_size";
    if (!size || *size <= 0) {
        size = env_int("WAN_FEED_FORWARD_CHUNK_SIZE", component);
        size_from = "env WAN_FEED_FORWARD_CHUNK_SIZE";
    }
    if (size && *size > 0) {
        c.chunk_size = size;
        if (!c.enabled && size_from != "feed_forward_chunk_size")
            st::log::info(component, "{}={} enables chunked feed-forward (as in SimpleTuner)", size_from,
                          *size);
        c.enabled = true;
    }
    const auto dim = config.opt_int("feed_forward_chunk_dim");
    c.chunk_dim = dim ? *dim : env_int("WAN_FEED_FORWARD_CHUNK_DIM", component).value_or(0);
    if (c.chunk_dim != 0 && c.chunk_dim != 1)
        fail(component, "config", "feed_forward_chunk_dim must be 0 (batch) or 1 (tokens), got {}",
             c.chunk_dim);
    if (c.enabled) {
        if (c.chunk_size)
            st::log::info(component, "chunked feed-forward: pieces of {} along the {} ({})", *c.chunk_size,
                          c.chunk_dim == 0 ? "batch" : "tokens", size_from);
        else
            st::log::info(
                component,
                "chunked feed-forward: automatic (pieces of 2 samples when the batch has >= 2, else "
                "the sequence in 4)");
    }
    return c;
}

}  // namespace st::plugins::wan
