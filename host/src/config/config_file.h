// Reading config files (JSON or TOML, SimpleTuner's flat key space) and raw CLI overrides.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace st::host {

/// Loads `config.json` or `config.toml` (chosen by extension; other extensions: JSON, then TOML).
/// Keys may carry SimpleTuner's leading "--". Throws st::Error naming the file, and the line and
/// column of a syntax error.
nlohmann::json load_config_file(const std::filesystem::path& path);

/// Parses a TOML document into JSON (tables become objects, arrays arrays, dates strings).
nlohmann::json toml_to_json(const std::string& text, const std::string& source_name);

/// One `--key value` / `--key=value` / bare `--flag` from the command line. `value` is empty
/// and `has_value` false for a bare flag whose next token is another flag or absent; the
/// resolver decides (knowing the option's type) whether a bare flag is a boolean true.
struct CliOverride {
    std::string key;
    std::string value;
    bool has_value = false;
    bool inline_value = false;  ///< written as --key=value
};

/// Splits raw tokens (after the config path) into overrides. A token that does not start with
/// "--" and follows a flag is that flag's value. Throws st::Error for a stray positional token.
std::vector<CliOverride> parse_cli_overrides(const std::vector<std::string>& tokens);

}  // namespace st::host
