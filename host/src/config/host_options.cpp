// Configuration keys owned by the host itself (SimpleTuner's names and defaults where it has them).
#include <thread>

#include "config/options_table.h"

namespace st::host {

std::vector<sdk::OptionSpec> host_options() {
    using namespace sdk;
    std::vector<OptionSpec> o;
    auto add = [&](OptionSpec s, const char* group) {
        s.group = group;
        o.push_back(std::move(s));
    };
    add(opt_string(
            "model_family", std::nullopt,
            "Model family to train (wan, wan_s2v, sanavideo). Selects the model plugin when --plugin is "
            "not given; must agree with --plugin when both are."),
        "model");
    add(opt_string(
            "pretrained_model_name_or_path", std::nullopt,
            "Local directory or file of the base model (a diffusers folder or a single checkpoint file). "
            "Hub ids are not downloaded: put the files on disk and give their path."),
        "model");
    add(opt_string("output_dir", "simpletuner-results",
                   "Run directory: resolved config, logs, metrics, checkpoints and validation media."),
        "run");
    add(opt_int("seed", std::nullopt,
                "Seed of every random generator of the run (none: a random seed is drawn "
                "and logged)."),
        "run");
    add(opt_int("train_batch_size", 4,
                "Samples per micro-batch (SimpleTuner default 4). Buckets smaller than train_batch_size x "
                "gradient_accumulation_steps are pruned by the data backend.")
            .range(1, 4096),
        "data");
    add(opt_int("gradient_accumulation_steps", 1, "Micro-batches per optimizer step.").range(1, 65536),
        "data");
    add(opt_string("device", "auto",
                   "Where the run computes: auto (the first CUDA device, or LOCAL_RANK's in a distributed "
                   "run, when this build and machine have one; else the CPU), cpu, cuda or cuda:N. The log "
                   "says which and why."),
        "run");
    add(opt_string("log_level", "info", "Log verbosity.", {"trace", "debug", "info", "warning", "error"}),
        "run");
    add(opt_int("num_threads", std::nullopt,
                "Threads of the BLAS pool that runs the matrix products (default: all cores of the machine). "
                "ATen's own "
                "intra-op pool stays at 1: nested ATen/BLAS parallelism oversubscribes the cores.")
            .range(1, 1024),
        "run");
    return o;
}

}  // namespace st::host
