#include "run/run_setup.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <thread>

#include "config/config_file.h"
#include "config/hub_cache.h"
#include "dist/dist_env.h"
#include "lua/hook_engine.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"
#include "st/version.h"
#include "validate/validator.h"

namespace st::host {
namespace fs = std::filesystem;

OptionTable build_option_table(PluginRegistry& registry) {
    OptionTable table;
    for (auto& s : host_options()) table.add(s);
    for (auto& s : trainer_options()) table.add(s);
    for (auto& s : lua::lua_option_specs()) table.add(s);
    for (auto& s : validate::validation_options()) table.add(s);
    for (const auto& [id, e] : registry.components())
        for (const auto& s : e.info.options) table.add(s);
    return table;
}

RunSetup prepare_run(CommandContext& ctx, const std::vector<std::string>& args) {
    RunSetup s;
    s.config_path = args.at(0);
    std::vector<std::string> override_tokens(args.begin() + 1, args.end());
    auto& registry = ctx.plugins();
    if (!fs::exists(s.config_path) && !s.config_path.has_extension() && !s.config_path.has_parent_path()) {
        // `st-host extract-audio ...` without the plugin that provides the command lands here. The host
        // cannot ask a plugin it did not load for its commands, so those of the plugins st ships are
        // named here.
        static const std::map<std::string, std::string> kShippedPluginCommands = {
            {"extract-audio", "data_local"}};
        const std::string names = registry.plugin_names().empty()
                                      ? std::string("none")
                                      : fmt::format("{}", fmt::join(registry.plugin_names(), ", "));
        if (auto it = kShippedPluginCommands.find(s.config_path.string()); it != kShippedPluginCommands.end())
            fail("host.cli", "usage",
                 "'{}' is a command of the plugin {} (st-{}.so), which is not loaded (loaded plugins: {}; "
                 "st-host plugins lists what was found and why anything was refused; --plugin-dir or "
                 "ST_PLUGIN_PATH add folders to search)",
                 it->first, it->second, it->second, names);
        fail("host.cli", "usage",
             "'{}' is neither a command of st-host or of a loaded plugin nor an existing config file (loaded "
             "plugins: {}; st-host --help lists the commands, st-host plugins why a plugin was refused)",
             s.config_path.string(), names);
    }
    nlohmann::json file_values = load_config_file(s.config_path);
    auto overrides = parse_cli_overrides(override_tokens);
    {
        // The family decides which options exist (model_flavour's choices, ...): a family that no plugin
        // provides is said before any value is judged.
        std::optional<std::string> family;
        if (file_values.contains("model_family") && file_values["model_family"].is_string())
            family = file_values["model_family"].get<std::string>();
        for (const auto& o : overrides)
            if (o.key == "model_family" && o.has_value) family = o.value;
        // The same for --plugin: a plugin that is not loaded is named before its options are missed.
        if (!ctx.flags.plugin.empty()) (void)model_component(registry, ctx.flags.plugin);
        std::vector<std::string> known;
        for (const auto* e : registry.of_kind("model")) known.push_back(e->name);
        const bool flavour = file_values.contains("model_flavour") ||
                             std::any_of(overrides.begin(), overrides.end(),
                                         [](const auto& o) { return o.key == "model_flavour"; });
        // A flavour is a name within a family: without model_family its choices would be those of
        // whichever family got picked, not the one the user meant.
        if (ctx.flags.plugin.empty() && !family && flavour)
            fail("host.config", "validate",
                 "model_flavour is set but model_family is not: set model_family (SimpleTuner requires it "
                 "too) or pass --plugin NAME; loaded families: {}",
                 known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", ")));
        if (ctx.flags.plugin.empty() && family && !registry.find_latest("model", *family)) {
            fail("host.config", "validate",
                 "model_family '{}' is not provided by any loaded plugin (is st-{}.so installed? st-host "
                 "plugins "
                 "lists what was found and why anything was refused); loaded families: {}",
                 *family, *family,
                 known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", ")));
        }
    }

    // --log_level takes effect before plugins load, so their discovery can be traced.
    for (const auto& o : overrides)
        if (o.key == "log_level" && o.has_value) log::set_level(log::parse_level(o.value));
    if (file_values.contains("log_level") && file_values["log_level"].is_string())
        log::set_level(log::parse_level(file_values["log_level"].get<std::string>()));

    OptionTable table = build_option_table(registry);
    s.resolved = resolve_config(file_values, overrides, table);
    use_hub_cache_snapshots(s.resolved.values);  // "Org/Name" model paths already in the HF cache
    s.config = sdk::ConfigView(std::make_shared<const nlohmann::json>(s.resolved.values));
    log::set_level(log::parse_level(s.config.get_string("log_level")));
    dist::quiet_other_ranks();
    for (const auto& note : s.resolved.notes) log::info("host.config", "{}", note);

    // The model family: --plugin, or the plugin providing model.<model_family>.
    std::string plugin = ctx.flags.plugin;
    auto family = s.config.opt_string("model_family");
    if (plugin.empty() && family) {
        const auto* e = registry.find_latest("model", *family);
        if (!e)
            fail("host.config", "validate",
                 "model_family '{}' is not provided by any loaded plugin (see st-host plugins)", *family);
        plugin = e->plugin_name;
    }
    if (plugin.empty())
        fail("host.config", "validate",
             "no model family chosen: pass --plugin NAME or set model_family in {}", s.config_path.string());
    s.model = &model_component(registry, plugin);
    if (family && *family != s.model->name)
        fail("host.config", "validate",
             "model_family '{}' in {} disagrees with --plugin {} (which provides {})", *family,
             s.config_path.string(), plugin, s.model->id);
    log::info("host", "model family {} from plugin {} ({}), chosen by {}", s.model->id, s.model->plugin_name,
              s.model->plugin_file.string(), ctx.flags.plugin.empty() ? "model_family" : "--plugin");

    // Ranks of a data-parallel run share this machine's cores unless num_threads says otherwise.
    const dist::DistEnv dist_env = dist::read_dist_env();
    int threads = static_cast<int>(s.config.opt_int("num_threads").value_or(0));
    if (threads == 0 && dist_env.local_world_size > 1)
        threads =
            std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / dist_env.local_world_size);
    s.system = configure_threads_and_probe(threads);
    log_system_info(s.system);

    s.output_dir = s.config.get_string("output_dir");
    std::error_code ec;
    fs::create_directories(s.output_dir, ec);
    if (ec) fail("host", "setup", "cannot create output_dir '{}': {}", s.output_dir.string(), ec.message());
    if (dist_env.rank != 0) return s;  // rank 0 alone writes into output_dir
    nlohmann::json resolved = s.resolved.values;
    sdk::write_file_atomic(s.output_dir / "config.resolved.json", resolved.dump(2) + "\n");
    nlohmann::json info = {{"st_version", ST_SDK_VERSION_STRING},
                           {"fingerprint", ST_BUILD_FINGERPRINT},
                           {"config_file", fs::absolute(s.config_path).string()},
                           {"model_component", s.model->id},
                           {"sources", s.resolved.sources}};
    sdk::write_file_atomic(s.output_dir / "run_info.json", info.dump(2) + "\n");
    log::info("host", "resolved configuration written to {}",
              (s.output_dir / "config.resolved.json").string());
    return s;
}

}  // namespace st::host
