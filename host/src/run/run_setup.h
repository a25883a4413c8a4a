// Everything before the first training step: config file + CLI -> validated configuration, model
// plugin selection, machine set-up, output directory and config.resolved.json.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "commands/commands.h"
#include "config/options_table.h"
#include "st/options.h"
#include "system_info.h"

namespace st::host {

struct RunSetup {
    std::filesystem::path config_path;
    ResolvedConfig resolved;
    sdk::ConfigView config;
    const ComponentEntry* model = nullptr;  ///< the model family component
    std::filesystem::path output_dir;
    SystemInfo system;
};

/// Builds the option table from the host and every loaded component.
OptionTable build_option_table(PluginRegistry& registry);

/// args: CONFIG followed by overrides. Throws st::Error with every configuration problem at once.
RunSetup prepare_run(CommandContext& ctx, const std::vector<std::string>& args);

/// Runs the configured job; returns the exit code.
int execute_run(CommandContext& ctx, RunSetup& setup);

}  // namespace st::host
