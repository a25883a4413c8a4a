// Target config_file: a run's config file, read the way `st-host config.json` reads it
// (load_config_file: JSON, or TOML for *.toml, SimpleTuner's leading dashes) and then resolved
// against the host's and the training loop's declared keys (types, choices, ranges, aliases,
// SimpleTuner keys st does not support). Each input is read once as config.json and once as
// config.toml, so one corpus serves both parsers.
#include <vector>

#include "config/config_file.h"
#include "config/options_table.h"
#include "harness.h"
#include "st/error.h"

namespace st::fuzz {

namespace {

const host::OptionTable& option_table() {
    static const host::OptionTable table = [] {
        host::OptionTable t;
        for (auto& spec : host::host_options()) t.add(std::move(spec));
        for (auto& spec : host::trainer_options()) t.add(std::move(spec));
        return t;
    }();
    return table;
}

void load_and_resolve(const std::filesystem::path& path) {
    const nlohmann::json values = host::load_config_file(path);
    if (!values.is_object())
        invariant_failed("load_config_file returned a " + std::string(values.type_name()));
    const host::ResolvedConfig resolved = host::resolve_config(values, {}, option_table());
    for (const auto& [name, spec] : option_table().specs()) {
        if (!resolved.values.contains(name))
            invariant_failed("resolved config lacks the declared key " + name);
    }
}

}  // namespace

void config_file(std::string_view input) {
    try {
        load_and_resolve(write_scratch("config.json", input));
    } catch (const Error&) {
        // Refused as JSON; the same text is still read as TOML below.
    }
    load_and_resolve(write_scratch("config.toml", input));
}

}  // namespace st::fuzz

ST_FUZZ_ENTRY(st::fuzz::config_file)
