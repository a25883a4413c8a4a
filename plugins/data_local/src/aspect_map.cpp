#include "aspect_map.h"

#include <fmt/format.h>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::plugins::data_local {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "data.local";

bool valid_entry(const nlohmann::json& v) {
    return v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer() &&
           v[0].get<int64_t>() > 0 && v[1].get<int64_t>() > 0;
}
}  // namespace

std::string python_float_str(double v) {
    std::string s = fmt::format("{}", v);
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "1" -> "1.0"; inf/nan stay
    return s;
}

AspectResolutionMaps::AspectResolutionMaps(fs::path dir) : dir_(std::move(dir)) {}

fs::path AspectResolutionMaps::file_for(double megapixels) const {
    return dir_ / fmt::format("aspect_resolution_map-{}.json", python_float_str(megapixels));
}

AspectResolutionMaps::Map& AspectResolutionMaps::map_for(double megapixels) {
    auto [it, fresh] = maps_.try_emplace(megapixels);
    if (!fresh || dir_.empty()) return it->second;
    const fs::path file = file_for(megapixels);
    std::error_code ec;
    if (!fs::exists(file, ec)) return it->second;
    try {
        const auto j = sdk::parse_json_text(sdk::read_file(file), file.string(), kLog, "prepare");
        if (!j.is_object()) throw std::runtime_error("expected a JSON object of aspect -> [width, height]");
        for (const auto& [aspect, size] : j.items())
            if (!valid_entry(size))
                throw std::runtime_error(
                    fmt::format("'{}' is {}, expected [width, height] in pixels", aspect, size.dump()));
        it->second.entries = j;
        log::info(kLog, "bucket sizes memoised per aspect: {} ({} aspect(s), as SimpleTuner keeps them)",
                  file.string(), j.size());
    } catch (const std::exception& e) {
        it->second.readable = false;
        log::warn(kLog, "{} is ignored and left as it is: {}", file.string(), e.what());
    }
    return it->second;
}

Size AspectResolutionMaps::resolve(double megapixels, double aspect, Size computed) {
    Map& m = map_for(megapixels);
    const std::string key = python_float_str(aspect);
    if (const auto it = m.entries.find(key); it != m.entries.end())
        return {(*it)[0].get<int>(), (*it)[1].get<int>()};
    m.entries[key] = {computed.w, computed.h};
    m.changed = true;
    return computed;
}

std::vector<fs::path> AspectResolutionMaps::save() {
    std::vector<fs::path> written;
    if (dir_.empty()) return written;
    for (auto& [mp, m] : maps_) {
        if (!m.changed || !m.readable) continue;
        const fs::path file = file_for(mp);
        std::error_code ec;
        fs::create_directories(dir_, ec);
        sdk::write_file_atomic(file, m.entries.dump());
        m.changed = false;
        written.push_back(file);
    }
    return written;
}

}  // namespace st::plugins::data_local
