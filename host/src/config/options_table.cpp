#include "config/options_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "st/error.h"
#include "st/json_file.h"

namespace st::host {

void OptionTable::add(sdk::OptionSpec spec) {
    // Model families built on one library (wan and wan_s2v share the Wan pipeline keys and
    // model_flavour) may declare the same key; only one family runs, and it reads the key itself. Two
    // model.* declarations of one type are merged: the choices are united, a default they disagree on
    // becomes "unset" (each family then applies its own), the first help text is shown.
    if (auto it = specs_.find(spec.name); it != specs_.end()) {
        sdk::OptionSpec& had = it->second;
        const bool models = had.owner.rfind("model.", 0) == 0 && spec.owner.rfind("model.", 0) == 0;
        if (models && had.type == spec.type && had.aliases == spec.aliases) {
            if (had.choices.empty() || spec.choices.empty()) {
                had.choices.clear();
            } else {
                for (const auto& c : spec.choices)
                    if (std::find(had.choices.begin(), had.choices.end(), c) == had.choices.end())
                        had.choices.push_back(c);
            }
            if (had.default_value != spec.default_value) had.default_value = nullptr;
            had.owner += "," + spec.owner;
            return;
        }
    }
    auto clash = [&](const std::string& n) -> std::string {
        if (auto it = specs_.find(n); it != specs_.end()) return it->second.owner;
        if (auto it = aliases_.find(n); it != aliases_.end()) return specs_.at(it->second).owner;
        return {};
    };
    for (const auto& n : [&] {
             auto v = spec.aliases;
             v.push_back(spec.name);
             return v;
         }()) {
        if (auto owner = clash(n); !owner.empty())
            fail("host.config", "declare", "option '{}' is declared by both '{}' and '{}'", n, owner,
                 spec.owner.empty() ? "host" : spec.owner);
    }
    if (spec.owner.empty()) spec.owner = "host";
    for (const auto& a : spec.aliases) aliases_[a] = spec.name;
    std::string name = spec.name;
    specs_[name] = std::move(spec);
}

const sdk::OptionSpec* OptionTable::find(const std::string& n) const {
    if (auto it = specs_.find(n); it != specs_.end()) return &it->second;
    if (auto it = aliases_.find(n); it != aliases_.end()) return &specs_.at(it->second);
    return nullptr;
}

std::vector<std::string> OptionTable::all_names() const {
    std::vector<std::string> v;
    for (const auto& [n, s] : specs_) v.push_back(n);
    for (const auto& [a, n] : aliases_) v.push_back(a);
    return v;
}

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

bool parse_bool_text(const std::string& t, bool* out) {
    auto s = lower(t);
    if (s == "true" || s == "1" || s == "yes" || s == "on") return *out = true, true;
    if (s == "false" || s == "0" || s == "no" || s == "off") return *out = false, true;
    return false;
}

bool parse_number_text(const std::string& t, double* out) {
    if (t.empty()) return false;
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(t.c_str(), &end);
    if (end != t.c_str() + t.size() || errno == ERANGE || !std::isfinite(v)) return false;
    *out = v;
    return true;
}

// "" when `v` is inside the option's range, else what was expected.
std::string check_range(const sdk::OptionSpec& spec, double v, const char* kind) {
    if ((spec.min_value && v < *spec.min_value) || (spec.max_value && v > *spec.max_value))
        return fmt::format("{} in {}", kind, sdk::option_range_text(spec));
    return {};
}

std::string convert_number(const sdk::OptionSpec& spec, const nlohmann::json& raw, nlohmann::json* out);

}  // namespace

std::string convert_value(const sdk::OptionSpec& spec, const nlohmann::json& raw, nlohmann::json* out) {
    using sdk::OptionType;
    if (raw.is_null()) {
        *out = nullptr;
        return {};
    }
    switch (spec.type) {
        case OptionType::boolean: {
            if (raw.is_boolean()) return *out = raw, std::string();
            bool b;
            if (raw.is_string() && parse_bool_text(raw.get<std::string>(), &b))
                return *out = b, std::string();
            if (raw.is_number_integer() && (raw.get<int64_t>() == 0 || raw.get<int64_t>() == 1))
                return *out = raw.get<int64_t>() == 1, std::string();
            return "true or false";
        }
        case OptionType::integer:
        case OptionType::number:
            return convert_number(spec, raw, out);
        case OptionType::string: {
            std::string s;
            if (raw.is_string())
                s = raw.get<std::string>();
            else if (raw.is_number() || raw.is_boolean())
                s = raw.dump();
            else
                return "a string";
            if (!spec.choices.empty() &&
                std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end())
                return fmt::format("one of: {}", fmt::join(spec.choices, ", "));
            return *out = s, std::string();
        }
        case OptionType::json: {
            if (raw.is_string()) {
                const auto& s = raw.get_ref<const std::string&>();
                auto first = s.find_first_not_of(" \t\r\n");
                if (first != std::string::npos && (s[first] == '{' || s[first] == '[')) {
                    try {
                        sdk::check_json_limits(s, spec.name, "host.config");
                        return *out = nlohmann::json::parse(s), std::string();
                    } catch (const nlohmann::json::parse_error& e) {
                        return fmt::format("valid JSON ({})", e.what());
                    }
                }
            }
            return *out = raw, std::string();
        }
        case OptionType::string_list: {
            if (raw.is_string()) {
                const auto& s = raw.get_ref<const std::string&>();
                if (!s.empty() && s.front() == '[') {
                    try {
                        sdk::check_json_limits(s, spec.name, "host.config");
                        auto j = nlohmann::json::parse(s);
                        return convert_value(spec, j, out);
                    } catch (const nlohmann::json::parse_error&) {
                        return "a list of strings (the value starts with '[' but is not valid JSON)";
                    }
                }
                return *out = nlohmann::json::array({s}), std::string();
            }
            if (!raw.is_array()) return "a list of strings";
            nlohmann::json arr = nlohmann::json::array();
            for (const auto& e : raw) {
                if (e.is_string())
                    arr.push_back(e);
                else if (e.is_number())
                    arr.push_back(e.dump());
                else
                    return "a list of strings";
            }
            return *out = arr, std::string();
        }
    }
    return "a valid value";
}

namespace {

std::string convert_number(const sdk::OptionSpec& spec, const nlohmann::json& raw, nlohmann::json* out) {
    if (spec.type == sdk::OptionType::integer) {
        const char* kind = "a whole number";
        if (raw.is_number_unsigned() &&
            raw.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            return fmt::format(
                "{} in {}", kind,
                spec.min_value || spec.max_value ? sdk::option_range_text(spec) : "[-2^63, 2^63-1]");
        if (raw.is_number_integer()) {
            const int64_t v = raw.get<int64_t>();
            if (auto e = check_range(spec, static_cast<double>(v), kind); !e.empty()) return e;
            return *out = v, std::string();
        }
        double d;
        if (raw.is_number_float())
            d = raw.get<double>();
        else if (!(raw.is_string() && parse_number_text(raw.get<std::string>(), &d)))
            return kind;
        if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9.0e15) return kind;
        if (auto e = check_range(spec, d, kind); !e.empty()) return e;
        return *out = static_cast<int64_t>(d), std::string();
    }
    const char* kind = "a finite number";
    double d;
    if (raw.is_number())
        d = raw.get<double>();
    else if (!(raw.is_string() && parse_number_text(raw.get<std::string>(), &d)))
        return "a number";
    if (!std::isfinite(d)) return kind;
    if (auto e = check_range(spec, d, "a number"); !e.empty()) return e;
    return *out = d, std::string();
}

}  // namespace

}  // namespace st::host
