// resolve_config(): file + CLI -> the resolved configuration, or one error listing every problem.
#include <fmt/format.h>

#include <set>

#include "config/options_table.h"
#include "st/error.h"

namespace st::host {

namespace {

const ForeignKey* find_foreign(const std::string& key) {
    for (const auto& f : simpletuner_foreign_keys())
        if (f.name == key) return &f;
    return nullptr;
}

bool json_in(const nlohmann::json& v, const std::vector<nlohmann::json>& list) {
    for (const auto& x : list) {
        if (x == v) return true;
        // "false" as a string is how SimpleTuner configs often spell an inert flag.
        if (x.is_boolean() && v.is_string() && v.get<std::string>() == (x.get<bool>() ? "true" : "false"))
            return true;
    }
    return false;
}

}  // namespace

ResolvedConfig resolve_config(const nlohmann::json& file_values, const std::vector<CliOverride>& cli,
                              const OptionTable& table) {
    ResolvedConfig out;
    std::vector<std::string> unknown, bad, unsupported;
    size_t unknown_unlisted = 0;
    const auto names = table.all_names();
    std::vector<std::string> suggestion_pool = names;
    for (const auto& f : simpletuner_foreign_keys()) suggestion_pool.push_back(f.name);

    // Raw values by canonical name, remembering where each came from (CLI wins over the file).
    std::map<std::string, std::pair<nlohmann::json, std::string>> raw;
    std::map<std::string, std::string> spelled;  // canonical -> how the user wrote it
    auto take = [&](const std::string& key, const nlohmann::json& value, const std::string& source) {
        if (const auto* spec = table.find(key)) {
            raw[spec->name] = {value, source};
            spelled[spec->name] = key;
            if (key != spec->name)
                out.notes.push_back(fmt::format("'{}' is the legacy name of '{}'; using it as '{}'", key,
                                                spec->name, spec->name));
            return;
        }
        if (const auto* f = find_foreign(key)) {
            if (f->any_value_inert || json_in(value, f->inert_values) || value.is_null()) {
                out.notes.push_back(
                    fmt::format("'{}' = {} has no effect in st: {}", key, value.dump(), f->reason));
            } else {
                unsupported.push_back(
                    fmt::format("  {} = {} ({}): {}", key, value.dump(), source, f->reason));
            }
            return;
        }
        // The first kMaxListed unknown keys are listed with a suggestion, the rest counted: each
        // suggestion compares the key with every name, and a hostile file may hold millions of keys.
        constexpr size_t kMaxListed = 50;
        if (unknown.size() == kMaxListed) {
            ++unknown_unlisted;
            return;
        }
        std::string near = closest_name(key, suggestion_pool);
        unknown.push_back(fmt::format("  '{}' ({}){}", key, source,
                                      near.empty() ? "" : fmt::format(": did you mean '{}'?", near)));
    };
    for (const auto& [k, v] : file_values.items()) take(k, v, "config file");
    for (const auto& o : cli) {
        const auto* spec = table.find(o.key);
        nlohmann::json v;
        if (!o.has_value) {
            if (spec && spec->type != sdk::OptionType::boolean) {
                bad.push_back(fmt::format("  --{} (command line) needs a value: expected {}", o.key,
                                          sdk::option_type_name(spec->type)));
                continue;
            }
            v = true;  // bare flag
        } else {
            v = o.value;
        }
        take(o.key, v, "command line");
    }

    // Convert and check every given value; fill defaults for the rest.
    nlohmann::json values = nlohmann::json::object();
    for (const auto& [name, spec] : table.specs()) {
        auto it = raw.find(name);
        if (it == raw.end()) {
            values[name] = spec.default_value;
            out.sources[name] = "default";
            continue;
        }
        nlohmann::json converted;
        std::string expected = convert_value(spec, it->second.first, &converted);
        if (!expected.empty()) {
            bad.push_back(fmt::format("  {} = {} ({}): expected {}", spelled[name], it->second.first.dump(),
                                      it->second.second, expected));
            continue;
        }
        for (const auto& u : unsupported_values()) {
            if (u.name == name && json_in(converted, u.values))
                unsupported.push_back(
                    fmt::format("  {} = {} ({}): {}", name, converted.dump(), it->second.second, u.reason));
        }
        values[name] = converted;
        out.sources[name] = it->second.second == "command line" ? "cli" : "file";
    }

    std::vector<std::string> parts;
    if (unknown_unlisted > 0) unknown.push_back(fmt::format("  ... and {} more", unknown_unlisted));
    if (!unknown.empty())
        parts.push_back(fmt::format("unknown configuration key{}:\n{}", unknown.size() > 1 ? "s" : "",
                                    fmt::join(unknown, "\n")));
    if (!bad.empty())
        parts.push_back(fmt::format("invalid value{}:\n{}", bad.size() > 1 ? "s" : "", fmt::join(bad, "\n")));
    if (!unsupported.empty())
        parts.push_back(
            fmt::format("SimpleTuner option{} that st does not support yet (remove {} or set {} to the "
                        "default):\n{}",
                        unsupported.size() > 1 ? "s" : "", unsupported.size() > 1 ? "them" : "it",
                        unsupported.size() > 1 ? "them" : "it", fmt::join(unsupported, "\n")));
    if (!parts.empty()) throw Error("host.config", "validate", fmt::format("{}", fmt::join(parts, "\n")));
    out.values = std::move(values);
    return out;
}

}  // namespace st::host
