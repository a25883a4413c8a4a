// parse_tread_config / describe_routes (see routing.h).
#include "st/routing.h"

#include <fmt/format.h>

#include "st/error.h"
#include "st/json_file.h"

namespace st::sdk {

namespace {
constexpr const char* kComponent = "tread";
}

std::vector<TokenRoute> parse_tread_config(const nlohmann::json& config, int64_t num_blocks,
                                           const std::string& source) {
    std::vector<TokenRoute> out;
    if (config.is_null()) return out;
    if (!config.is_object() || !config.contains("routes") || !config["routes"].is_array())
        fail(kComponent, "config",
             "{}: expected {{\"routes\": [{{\"selection_ratio\", \"start_layer_idx\", "
             "\"end_layer_idx\"}}, ...]}}, got {}",
             source, config.dump());
    for (const auto& [key, v] : config.items())
        if (key != "routes")
            fail(kComponent, "config", "{}: unknown key '{}' (only \"routes\")", source, key);
    int64_t i = 0;
    for (const auto& r : config["routes"]) {
        const std::string where = fmt::format("{} route {}", source, i);
        if (!r.is_object()) fail(kComponent, "config", "{}: must be an object, got {}", where, r.dump());
        for (const auto& [key, v] : r.items())
            if (key != "selection_ratio" && key != "start_layer_idx" && key != "end_layer_idx" &&
                key != "selection")
                fail(kComponent, "config",
                     "{}: unknown key '{}' (selection_ratio, start_layer_idx, end_layer_idx, selection)",
                     where, key);
        for (const char* need : {"selection_ratio", "start_layer_idx", "end_layer_idx"})
            if (!r.contains(need)) fail(kComponent, "config", "{}: '{}' is missing", where, need);
        TokenRoute t;
        t.selection_ratio = json_as<double>(r["selection_ratio"], "selection_ratio", where, kComponent);
        if (!(t.selection_ratio >= 0.0 && t.selection_ratio < 1.0))
            fail(kComponent, "config",
                 "{}: selection_ratio {} is outside [0, 1) (the fraction of tokens dropped)", where,
                 t.selection_ratio);
        auto layer = [&](const char* key) {
            const int64_t v = json_as<int64_t>(r[key], key, where, kComponent);
            const int64_t abs = v < 0 ? num_blocks + v : v;
            if (abs < 0 || abs >= num_blocks)
                fail(kComponent, "config",
                     "{}: {} {} is out of range for a model of {} blocks (valid: {} .. {})", where, key, v,
                     num_blocks, -num_blocks, num_blocks - 1);
            return abs;
        };
        t.start = layer("start_layer_idx");
        t.end = layer("end_layer_idx");
        if (t.end < t.start)
            fail(kComponent, "config", "{}: end_layer_idx (block {}) is before start_layer_idx (block {})",
                 where, t.end, t.start);
        const std::string sel = json_value_or<std::string>(r, "selection", "random", where, kComponent);
        if (sel == "l1")
            t.selection = TokenRoute::Selection::l1;
        else if (sel != "random")
            fail(kComponent, "config", "{}: selection '{}' is not random or l1", where, sel);
        if (!out.empty() && t.start <= out.back().end)
            fail(kComponent, "config",
                 "{}: blocks {} .. {} overlap or precede route {} (blocks {} .. {}); routes must "
                 "be ordered and not overlap",
                 where, t.start, t.end, i - 1, out.back().start, out.back().end);
        out.push_back(t);
        ++i;
    }
    return out;
}

std::string describe_routes(const std::vector<TokenRoute>& routes) {
    std::string out;
    for (size_t i = 0; i < routes.size(); ++i) {
        const auto& r = routes[i];
        out += fmt::format("{}route {}: {:.0f}% of the video tokens skip blocks {} .. {} ({})", i ? "; " : "",
                           i, r.selection_ratio * 100.0, r.start, r.end,
                           r.selection == TokenRoute::Selection::l1 ? "largest L1 norms kept" : "random");
    }
    return out.empty() ? std::string("no routes") : out;
}

}  // namespace st::sdk
