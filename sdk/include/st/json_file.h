// Reading JSON documents (config.json, model_index.json, ...) with errors that name the file and the
// key: the file itself, and typed reads of its keys.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "st/error.h"

namespace st::sdk {

/// Parses the JSON document in `path`. st::Error(component, phase, ...) naming the path and the
/// reason when the file cannot be opened or is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& component,
                              const std::string& phase = "config");

/// `value` (the value of `key` in the document `origin`) as T; st::Error(component, "config") naming
/// origin, key and the value when it has another type.
template <typename T>
T json_as(const nlohmann::json& value, const std::string& key, const std::string& origin,
          const std::string& component) {
    try {
        return value.get<T>();
    } catch (const nlohmann::json::exception&) {
        fail(component, "config", "{}: key '{}' has value {} of the wrong type", origin, key, value.dump());
    }
}

/// j[key] as T, or `fallback` when the key is absent or null; the same error as json_as otherwise.
template <typename T>
T json_value_or(const nlohmann::json& j, const std::string& key, T fallback, const std::string& origin,
                const std::string& component) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    return json_as<T>(*it, key, origin, component);
}

}  // namespace st::sdk
