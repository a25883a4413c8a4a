// The table of every declared configuration key (host + loaded components) and the resolver that
// turns a config file plus CLI overrides into the resolved configuration.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "config/config_file.h"
#include "st/options.h"
#include "st/text.h"

namespace st::host {

class OptionTable {
  public:
    /// Adds a declaration; throws st::Error if the name or an alias is already declared (naming
    /// both owners).
    void add(sdk::OptionSpec spec);
    const sdk::OptionSpec* find(const std::string& name_or_alias) const;
    const std::map<std::string, sdk::OptionSpec>& specs() const { return specs_; }
    std::vector<std::string> all_names() const;  ///< names and aliases

  private:
    std::map<std::string, sdk::OptionSpec> specs_;
    std::map<std::string, std::string> aliases_;  ///< alias -> name
};

/// The options the host itself owns (run-level keys).
std::vector<sdk::OptionSpec> host_options();
/// The training loop's keys (host/src/train/train_options.cpp).
std::vector<sdk::OptionSpec> trainer_options();

/// A SimpleTuner key st knows about but does not (yet) support, with the values that are harmless
/// (they ask for nothing st would have to do). A config that sets such a key to any other value is
/// refused, with every such key listed in one message.
struct ForeignKey {
    std::string name;
    std::vector<nlohmann::json> inert_values;  ///< empty + any_value_inert=false: any value refused
    bool any_value_inert = false;              ///< key has no effect in st whatever its value
    std::string reason;                        ///< shown to the user
};
const std::vector<ForeignKey>& simpletuner_foreign_keys();

/// Declared keys whose some values are not supported yet (e.g. lora_type=lycoris).
struct UnsupportedValue {
    std::string name;
    std::vector<nlohmann::json> values;
    std::string reason;
};
const std::vector<UnsupportedValue>& unsupported_values();

struct ResolvedConfig {
    nlohmann::json values;                       ///< every declared key, defaults filled, types normalised
    std::vector<std::string> notes;              ///< "key X has no effect in st: ..." lines for the log
    std::map<std::string, std::string> sources;  ///< key -> "default" | "file" | "cli"
};

/// Merges file values and CLI overrides (CLI wins), maps legacy aliases, converts and checks
/// types and choices. All problems are collected and thrown as one st::Error: unknown keys (with
/// the closest known key), wrong types/values (key, value, what was expected), and unsupported
/// SimpleTuner keys (listed together).
ResolvedConfig resolve_config(const nlohmann::json& file_values, const std::vector<CliOverride>& cli,
                              const OptionTable& table);

/// Converts one raw value for `spec`; returns an error text (empty on success).
std::string convert_value(const sdk::OptionSpec& spec, const nlohmann::json& raw, nlohmann::json* out);

/// Levenshtein distance, for "did you mean" suggestions.
using sdk::closest_name;
using sdk::edit_distance;

}  // namespace st::host
