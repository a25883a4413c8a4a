// execute_run(): what happens after set-up: the training job (host/src/train/), or, with
// --nproc_per_node N outside a launcher, the launch of N ranks that each run it (host/src/dist/).
#include <algorithm>

#include "cli.h"
#include "dist/dist_env.h"
#include "dist/launch_config.h"
#include "dist/launcher.h"
#include "run/run_setup.h"
#include "st/log.h"
#include "train/trainer.h"

namespace st::host {

int execute_run(CommandContext& ctx, RunSetup& setup) {
    const dist::LaunchConfig launch = dist::read_launch_config(setup.config);
    const dist::DistEnv env = dist::read_dist_env();
    if (!env.launched() && launch.world_size() > 1) {
        // A rank that ignores SIGTERM is killed after at most 30 s (sooner with a short timeout).
        return dist::launch_ranks(launch, process_argv(),
                                  static_cast<int>(std::min<int64_t>(30, launch.timeout_s)));
    }
    if (env.launched() && launch.world_size() > 1 && launch.world_size() != env.world_size)
        log::warn("host.dist", "{} = {} ranks is ignored: the launcher started WORLD_SIZE={}", launch.source,
                  launch.world_size(), env.world_size);
    return train::run_training(ctx, setup);
}

}  // namespace st::host
