// Option declarations and the read-only view of the resolved configuration.
//
// Every configuration key (SimpleTuner's names) is declared exactly once, by the host or by the
// component that owns it, with its type, default and help. The host uses the declarations for
// `--help`, for validating config files and CLI flags, and to fill defaults; components read their
// values through a `ConfigView` of the resolved configuration.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace st::sdk {

enum class OptionType {
    boolean,      ///< true/false; also "true"/"false"/"1"/"0"/"yes"/"no"/"on"/"off" strings, bare CLI flag
    integer,      ///< whole number (a JSON number without fraction or a numeric string)
    number,       ///< floating point (also accepts integers and numeric strings)
    string,       ///< free text (numbers are converted to their text)
    json,         ///< any JSON value; a string is parsed as JSON when it looks like an object or list
    string_list,  ///< list of strings; a single string becomes a one-element list
};

const char* option_type_name(OptionType type);

struct OptionSpec {
    std::string name;  ///< SimpleTuner key, e.g. "learning_rate"
    OptionType type = OptionType::string;
    nlohmann::json default_value;      ///< null = "not set"
    std::string help;                  ///< one or two sentences; shown by --help
    std::vector<std::string> choices;  ///< allowed values for string options (empty = any)
    std::vector<std::string> aliases;  ///< legacy names accepted for this key
    std::string owner;                 ///< filled by the registrar: "host" or a component id
    std::string group;                 ///< --help section ("training", "validation", ...)
    /// Inclusive bounds of an integer or number option (unset = unbounded on that side). The host
    /// refuses a value outside them, naming the key, the value and the range; --help shows them.
    /// Number options are always finite (inf/nan are refused whatever the bounds).
    std::optional<double> min_value;
    std::optional<double> max_value;

    /// Builder: `opt_int("train_batch_size", 4, "...").range(1, 4096)`.
    OptionSpec& range(std::optional<double> lo, std::optional<double> hi) {
        min_value = lo;
        max_value = hi;
        return *this;
    }
};

/// "[1, 4096]", "[0, inf)": the allowed range of an integer or number option, for messages and --help.
std::string option_range_text(const OptionSpec& spec);

/// Builder helpers so declarations read as one line each.
OptionSpec opt_bool(std::string name, bool def, std::string help);
OptionSpec opt_int(std::string name, std::optional<int64_t> def, std::string help);
OptionSpec opt_float(std::string name, std::optional<double> def, std::string help);
OptionSpec opt_string(std::string name, std::optional<std::string> def, std::string help,
                      std::vector<std::string> choices = {});
OptionSpec opt_json(std::string name, std::string help);
OptionSpec opt_list(std::string name, std::string help);

/// Read-only typed access to the resolved configuration (all keys present, defaults filled, types
/// already validated by the host). Getters throw st::Error naming the key when it is missing or has
/// the wrong type. Cheap to copy (shares the underlying json).
class ConfigView {
  public:
    ConfigView();
    explicit ConfigView(std::shared_ptr<const nlohmann::json> values);

    bool has(const std::string& key) const;  ///< present and not null
    bool get_bool(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    double get_float(const std::string& key) const;
    std::string get_string(const std::string& key) const;
    std::vector<std::string> get_list(const std::string& key) const;
    const nlohmann::json& get_json(const std::string& key) const;

    std::optional<int64_t> opt_int(const std::string& key) const;
    std::optional<double> opt_float(const std::string& key) const;
    std::optional<std::string> opt_string(const std::string& key) const;

    const nlohmann::json& all() const { return *values_; }

  private:
    const nlohmann::json& at(const std::string& key) const;
    std::shared_ptr<const nlohmann::json> values_;
};

}  // namespace st::sdk
