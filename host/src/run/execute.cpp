// execute_run(): what happens after set-up. The training loop is the trainer's (host/src/train/);
// until a build has one, the run stops after validating and says so.
#include "run/run_setup.h"
#include "st/log.h"

namespace st::host {

int execute_run(CommandContext&, RunSetup& setup) {
    log::error("host",
               "configuration is valid (see {}), but this build of st-host has no training loop yet: "
               "nothing was trained",
               (setup.output_dir / "config.resolved.json").string());
    return 3;
}

}  // namespace st::host
