// execute_run(): what happens after set-up: the training job (host/src/train/).
#include "run/run_setup.h"
#include "train/trainer.h"

namespace st::host {

int execute_run(CommandContext& ctx, RunSetup& setup) {
    return train::run_training(ctx, setup);
}

}  // namespace st::host
