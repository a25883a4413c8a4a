// st-host commands. Each command is one function with its own flags; `st-host --help` lists them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "plugins/registry.h"

namespace boost::program_options {
class options_description;
}

namespace st::host {

struct CommandContext {
    GlobalFlags flags;
    /// Discovers and loads plugins on first use (commands that need none never load any).
    PluginRegistry& plugins();

  private:
    std::unique_ptr<PluginRegistry> registry_;
};

struct CommandInfo {
    const char* name;
    const char* usage;
    const char* summary;
    int (*run)(CommandContext& ctx, const std::vector<std::string>& args);
};

const std::vector<CommandInfo>& commands();
/// The usage line of a built-in command (for error messages).
const char* command_usage(const std::string& name);

int cmd_plugins(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_inspect(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_forward(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_prepare(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_lr_curve(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_make_model(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_probe(CommandContext& ctx, const std::vector<std::string>& args);
/// st-host generate (commands/generate_cmd.cpp).
int cmd_generate(CommandContext& ctx, const std::vector<std::string>& args);
/// st-host bench generate: host commands named bench-WHAT answer `st-host bench WHAT` (cli.cpp).
int cmd_bench_generate(CommandContext& ctx, const std::vector<std::string>& args);
int cmd_bench_train(CommandContext& ctx, const std::vector<std::string>& args);
/// The default command: `st-host [--plugin NAME] CONFIG [--key value ...]`.
int cmd_run(CommandContext& ctx, const std::vector<std::string>& args);

/// Parses a command's own flags (declared in `desc`, bound to variables); returns the tokens it does
/// not know (configuration overrides, `--key value`). Throws st::Error naming the command and its
/// usage for a bad or missing flag.
std::vector<std::string> parse_command_flags(const boost::program_options::options_description& desc,
                                             const std::vector<std::string>& args,
                                             const std::string& command);

/// Prints --help: commands, global flags, every host option, and with --plugin X the options of
/// X's components.
void print_help(CommandContext& ctx);

/// Finds the model component of the plugin named `plugin` (exactly one model.* component);
/// throws st::Error listing the plugins that provide model families when absent.
const ComponentEntry& model_component(PluginRegistry& registry, const std::string& plugin);

}  // namespace st::host
