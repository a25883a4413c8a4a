// The default command: `st-host [--plugin NAME] CONFIG [--key value ...]`.
#include <fmt/format.h>

#include <filesystem>

#include "commands/commands.h"
#include "config/config_file.h"
#include "config/options_table.h"
#include "run/run_setup.h"
#include "st/error.h"
#include "st/files.h"
#include "st/log.h"

namespace st::host {
namespace fs = std::filesystem;

int cmd_run(CommandContext& ctx, const std::vector<std::string>& args) {
    RunSetup setup = prepare_run(ctx, args);
    return execute_run(ctx, setup);
}

}  // namespace st::host
