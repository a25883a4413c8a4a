#include "st/kit/fields.h"

#include "st/text.h"

namespace st::kit::detail {

void unknown_key(const std::string& component, const std::string& what, const std::string& source,
                 const std::string& key, const nlohmann::json& value, const std::vector<std::string>& known) {
    fail(component, "config", "{}: unknown key '{}' in a {} (value {}; closest known key '{}')", source, key,
         what, value.dump(), sdk::closest_name(key, known));
}

void unexpected_value(const std::string& component, const std::string& source, const std::string& key,
                      const nlohmann::json& value, const std::vector<nlohmann::json>& allowed,
                      const std::string& why) {
    auto text = [](const nlohmann::json& v) {
        return v.is_string() ? "'" + v.get<std::string>() + "'" : v.dump();
    };
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : " or ") + text(a);
    fail(component, "config", "{}: {} {} is not supported: {} (expected {})", source, key, text(value), why,
         list);
}

void wrong_length(const std::string& component, const std::string& source, const std::string& key, size_t n,
                  const nlohmann::json& value) {
    fail(component, "config", "{}: key '{}' must have {} entries, got {}", source, key, n, value.dump());
}

}  // namespace st::kit::detail
