// st-host's command line: global flags, commands, and the run entry.
#pragma once

#include <string>
#include <vector>

namespace st::host {

/// Global flags shared by every command.
struct GlobalFlags {
    std::vector<std::string> plugin_dirs;  ///< --plugin-dir (repeatable)
    std::string plugin;                    ///< --plugin NAME
    bool no_install_plugins = false;       ///< --no-install-plugins: skip <prefix>/lib/st/plugins
    bool help = false;
    bool version = false;
    int nproc_per_node = 0;  ///< --nproc_per_node N (torchrun's flag): passed on as the config override
    std::vector<std::string> rest;  ///< command/config path and its arguments, in order
};

/// Parses argv (without argv[0]) with Boost.Program_options; unknown flags stay in `rest` for the
/// command (config overrides are not known before the plugins are loaded).
GlobalFlags parse_global_flags(const std::vector<std::string>& args);

/// The command line st-host was started with (argv[0] first): the --nproc_per_node launcher runs it
/// again for every rank.
const std::vector<std::string>& process_argv();

/// Runs st-host; returns the process exit code. Errors are printed here (the `main` edge).
int run_cli(int argc, char** argv);

}  // namespace st::host
