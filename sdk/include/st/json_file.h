// Reading a JSON file (config.json, model_index.json, ...) with an error that names the file.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace st::sdk {

/// Parses the JSON document in `path`. st::Error(component, phase, ...) naming the path and the
/// reason when the file cannot be opened or is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& component,
                              const std::string& phase = "config");

}  // namespace st::sdk
