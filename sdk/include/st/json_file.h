// Reading JSON documents (config.json, model_index.json, ...) with errors that name the file and the
// key: the file itself, and typed reads of its keys.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "st/error.h"

namespace st::sdk {

/// Parses the JSON document in `path`. Python's json module writes non-finite floats as the bare tokens
/// -Infinity, Infinity and NaN (diffusers scheduler configs: "lambda_min_clipped": -Infinity), which
/// JSON does not allow: they are read as the strings "-Infinity", "Infinity", "NaN", and json_as<double>
/// turns those back into numbers. st::Error(component, phase, ...) naming the path and the reason when
/// the file cannot be opened or is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& component,
                              const std::string& phase = "config");
/// The text with Python's bare non-finite tokens quoted (what read_json_file parses).
std::string quote_python_non_finite(const std::string& text);

/// Limits every JSON document st reads is held to before it is parsed: nlohmann::json copies, dumps and
/// compares recursively, so a document nested tens of thousands of levels deep would overflow the stack.
/// No real config, dataset list, checkpoint manifest or safetensors header comes close.
struct JsonLimits {
    size_t max_depth = 128;                ///< nested arrays / objects
    size_t max_bytes = size_t{256} << 20;  ///< 256 MiB
};

/// Scans `text` without recursion: st::Error(component, phase) naming `origin` and the limit when it
/// nests deeper than limits.max_depth or is longer than limits.max_bytes.
void check_json_limits(std::string_view text, const std::string& origin, const std::string& component,
                       const std::string& phase = "config", const JsonLimits& limits = {});

/// Where parsing `text` fails, for error messages: "line 3, column 17, in 'datasets[0].repeats'" (the
/// key path is left out at the top level; empty when the text parses). Numbers that overflow a double
/// (1e999) are reported here too, with the key that holds them.
std::string json_error_location(std::string_view text);

/// check_json_limits, then parses (Python's bare -Infinity / Infinity / NaN read as for read_json_file).
/// st::Error naming `origin` when the text is not valid JSON. What st uses for every JSON text that
/// comes from a file, the command line or a plugin.
nlohmann::json parse_json_text(std::string_view text, const std::string& origin, const std::string& component,
                               const std::string& phase = "config", const JsonLimits& limits = {});

namespace detail {
template <typename T>
struct IsVector : std::false_type {};
template <typename V, typename A>
struct IsVector<std::vector<V, A>> : std::true_type {};
}  // namespace detail

/// "an integer", "a number", "a string", "true or false", "a list of integers", ... for error messages.
template <typename T>
std::string json_type_name() {
    if constexpr (std::is_same_v<T, bool>) {
        return "true or false";
    } else if constexpr (std::is_integral_v<T>) {
        return "an integer";
    } else if constexpr (std::is_floating_point_v<T>) {
        return "a number";
    } else if constexpr (std::is_same_v<T, std::string>) {
        return "a string";
    } else if constexpr (std::is_same_v<T, std::vector<bool>>) {
        return "a list of true/false";
    } else if constexpr (detail::IsVector<T>::value) {
        const std::string inner = json_type_name<typename T::value_type>();
        return "a list of " + inner.substr(inner.find(' ') + 1) + "s";
    } else {
        return "another type";
    }
}

/// `value` (the value of `key` in the document `origin`) as T; st::Error(component, "config") naming
/// origin, key, the value and the expected type when it has another type. An integer key refuses a
/// fractional number (2.5 would silently become 2).
template <typename T>
T json_as(const nlohmann::json& value, const std::string& key, const std::string& origin,
          const std::string& component) {
    bool ok = true;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
        ok = value.is_number_integer() || value.is_number_unsigned();
    if constexpr (std::is_floating_point_v<T>) {
        if (value.is_string()) {
            const auto& s = value.get_ref<const std::string&>();
            if (s == "Infinity") return std::numeric_limits<T>::infinity();
            if (s == "-Infinity") return -std::numeric_limits<T>::infinity();
            if (s == "NaN") return std::numeric_limits<T>::quiet_NaN();
        }
    }
    if (ok) {
        try {
            return value.get<T>();
        } catch (const nlohmann::json::exception&) {
        }
    }
    fail(component, "config", "{}: key '{}' has value {}; expected {}", origin, key, value.dump(),
         json_type_name<T>());
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
