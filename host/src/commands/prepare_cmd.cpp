// st-host prepare CONFIG: discovery + caching only, then a summary (samples per bucket, frames,
// audio, every skipped file with its reason). Training runs the same step first.
#include <cstdio>

#include "commands/commands.h"
#include "plugins/model_handle.h"
#include "run/data_setup.h"
#include "run/run_setup.h"
#include "st/error.h"
#include "st/log.h"
#include "st/model_path.h"
#include "train/regularizers.h"

namespace st::host {

int cmd_prepare(CommandContext& ctx, const std::vector<std::string>& args) {
    if (args.empty())
        fail("host.cli", "prepare", "usage: st-host prepare [--plugin NAME] CONFIG [--key value ...]");
    RunSetup setup = prepare_run(ctx, args);
    const auto& entry = *setup.model;
    ModelHandle model(entry);
    auto path = setup.config.opt_string("pretrained_model_name_or_path");
    if (!path)
        fail("host.config", "validate",
             "pretrained_model_name_or_path is not set: caching needs the model's VAE and "
             "text encoder");
    // Whether a path that does not exist is an error is the family's call (a test family needs no
    // files); a hub id never is a model.
    if (sdk::looks_like_hub_id(*path) && !std::filesystem::exists(*path))
        sdk::missing_model_path(*path, "pretrained_model_name_or_path", "host.config", "validate");
    sdk::ModelLoadRequest req;
    req.path = *path;
    req.config = setup.config;
    req.training = false;
    model.load(req);
    // Regularizers that cache per-sample features (CREPA's teacher) cache them now too.
    const auto regs = train::build_regularizers(ctx.plugins(), setup.config, model, at::kCPU, 0);
    auto backends = open_data_backends(ctx, setup, model.sample_media(), train::sample_features(regs));
    prepare_data_backends(backends, &model.family());
    std::printf("%s", format_prepare_summary(backends).c_str());
    if (const auto empty = empty_datasets(backends); !empty.empty()) {
        for (const auto& e : empty) log::error("host.data", "{}", e);
        return 1;
    }
    return 0;
}

}  // namespace st::host
