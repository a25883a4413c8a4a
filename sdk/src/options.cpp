#include "st/options.h"

#include "st/error.h"

namespace st::sdk {

const char* option_type_name(OptionType type) {
    switch (type) {
        case OptionType::boolean:
            return "boolean";
        case OptionType::integer:
            return "integer";
        case OptionType::number:
            return "number";
        case OptionType::string:
            return "string";
        case OptionType::json:
            return "JSON value";
        case OptionType::string_list:
            return "list of strings";
    }
    return "?";
}

OptionSpec opt_bool(std::string name, bool def, std::string help) {
    return OptionSpec{std::move(name), OptionType::boolean, def, std::move(help)};
}
std::string option_range_text(const OptionSpec& spec) {
    auto number = [&](double v) {
        return spec.type == OptionType::integer ? fmt::format("{}", static_cast<int64_t>(v))
                                                : fmt::format("{}", v);
    };
    return fmt::format("{}{}, {}{}", spec.min_value ? "[" : "(",
                       spec.min_value ? number(*spec.min_value) : "-inf",
                       spec.max_value ? number(*spec.max_value) : "inf", spec.max_value ? "]" : ")");
}

OptionSpec opt_int(std::string name, std::optional<int64_t> def, std::string help) {
    return OptionSpec{std::move(name), OptionType::integer, def ? nlohmann::json(*def) : nlohmann::json(),
                      std::move(help)};
}
OptionSpec opt_float(std::string name, std::optional<double> def, std::string help) {
    return OptionSpec{std::move(name), OptionType::number, def ? nlohmann::json(*def) : nlohmann::json(),
                      std::move(help)};
}
OptionSpec opt_string(std::string name, std::optional<std::string> def, std::string help,
                      std::vector<std::string> choices) {
    OptionSpec s{std::move(name), OptionType::string, def ? nlohmann::json(*def) : nlohmann::json(),
                 std::move(help)};
    s.choices = std::move(choices);
    return s;
}
OptionSpec opt_json(std::string name, std::string help) {
    return OptionSpec{std::move(name), OptionType::json, nlohmann::json(), std::move(help)};
}
OptionSpec opt_list(std::string name, std::string help) {
    return OptionSpec{std::move(name), OptionType::string_list, nlohmann::json(), std::move(help)};
}

ConfigView::ConfigView() : values_(std::make_shared<const nlohmann::json>(nlohmann::json::object())) {}
ConfigView::ConfigView(std::shared_ptr<const nlohmann::json> values) : values_(std::move(values)) {
    if (!values_) values_ = std::make_shared<const nlohmann::json>(nlohmann::json::object());
}

bool ConfigView::has(const std::string& key) const {
    auto it = values_->find(key);
    return it != values_->end() && !it->is_null();
}

const nlohmann::json& ConfigView::at(const std::string& key) const {
    auto it = values_->find(key);
    if (it == values_->end() || it->is_null())
        throw Error("config", "read", fmt::format("configuration key '{}' is not set", key));
    return *it;
}

static Error type_error(const std::string& key, const nlohmann::json& v, const char* expected) {
    return Error(
        "config", "read",
        fmt::format("configuration key '{}' has value {} but a {} was expected", key, v.dump(), expected));
}

bool ConfigView::get_bool(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_boolean()) throw type_error(key, v, "boolean");
    return v.get<bool>();
}
int64_t ConfigView::get_int(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_number_integer()) throw type_error(key, v, "whole number");
    return v.get<int64_t>();
}
double ConfigView::get_float(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_number()) throw type_error(key, v, "number");
    return v.get<double>();
}
std::string ConfigView::get_string(const std::string& key) const {
    const auto& v = at(key);
    if (!v.is_string()) throw type_error(key, v, "string");
    return v.get<std::string>();
}
std::vector<std::string> ConfigView::get_list(const std::string& key) const {
    const auto& v = at(key);
    if (v.is_string()) return {v.get<std::string>()};
    if (!v.is_array()) throw type_error(key, v, "list of strings");
    std::vector<std::string> out;
    for (const auto& e : v) {
        if (!e.is_string()) throw type_error(key, v, "list of strings");
        out.push_back(e.get<std::string>());
    }
    return out;
}
const nlohmann::json& ConfigView::get_json(const std::string& key) const {
    return at(key);
}

std::optional<int64_t> ConfigView::opt_int(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return get_int(key);
}
std::optional<double> ConfigView::opt_float(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return get_float(key);
}
std::optional<std::string> ConfigView::opt_string(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return get_string(key);
}

}  // namespace st::sdk
