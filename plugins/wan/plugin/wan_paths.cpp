// model.wan@1: the option table, where the sub-networks of a model live (pipeline folder,
// component folders, pretrained_* overrides), the feed-forward chunking decision, VAE loading.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "core/ff_chunking.h"
#include "core/kit_names.h"
#include "st/error.h"
#include "st/files.h"
#include "st/kit/umt5_config.h"
#include "st/log.h"
#include "wan_family.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::ConfigView;

namespace {

constexpr const char* kLog = "model.wan";

std::string cfg_string(const ConfigView& config, const std::string& key, const std::string& def) {
    return config.has(key) ? config.get_string(key) : def;
}

}  // namespace

std::vector<st::sdk::OptionSpec> wan_option_specs() {
    using namespace st::sdk;
    std::vector<OptionSpec> specs;
    specs.push_back(
        opt_string("model_flavour", std::string("t2v-480p-1.3b-2.1"),
                   "Wan flavour (SimpleTuner names); picks the transformer subfolder of Wan 2.2 expert "
                   "flavours and their boundary. The weights themselves decide the architecture.",
                   wan_flavour_names()));
    for (auto& spec : pipeline_option_specs()) specs.push_back(std::move(spec));
    specs.push_back(
        opt_bool("wan_force_2_1_time_embedding", false,
                 "Use the per-sample (token 0) timestep instead of per-token timesteps (Wan 2.1 path)."));
    specs.push_back(
        opt_bool("wan_validation_load_other_stage", false,
                 "Wan 2.2 expert flavours: also load the peer expert for validation and switch at the "
                 "boundary (the peer is frozen and only used without gradients)."));
    for (auto& spec : feed_forward_chunking_option_specs()) specs.push_back(std::move(spec));
    for (auto& s : specs) s.group = "model";
    return specs;
}

std::string wan_component_summary() {
    return "Wan 2.1/2.2 video DiT + Wan VAE + UMT5 (make-model presets on disk: tiny ~0.7 MB, small ~0.2 GB, "
           "1.3b ~3.2 GB = real bf16 transformer + real VAE + a narrow 2-layer UMT5, not the 22 GB umt5-xxl; "
           "14b ~29 GB, the same with the 14B transformer)";
}

WanModelPaths resolve_model_paths(const fs::path& model, const ConfigView& config) {
    WanModelPaths p = resolve_pipeline_paths(model, config, kWanComponentId);
    const std::string flavour_name = cfg_string(config, "model_flavour", "t2v-480p-1.3b-2.1");
    const WanFlavour& flavour = find_flavour(flavour_name);
    // SimpleTuner's default subfolder "transformer" is replaced by the flavour's (Wan 2.2 experts)
    // when the transformer path is a pipeline.
    if (p.transformer_subfolder == "transformer" && flavour.subfolder != "transformer" &&
        is_pipeline_folder(p.transformer)) {
        st::log::info(kLog, "model_flavour {}: transformer subfolder '{}' (peer '{}')", flavour.name,
                      flavour.subfolder, flavour.peer_subfolder);
        p.transformer_subfolder = flavour.subfolder;
    }
    if (!flavour.peer_subfolder.empty() && is_pipeline_folder(p.transformer))
        p.peer_subfolder = flavour.peer_subfolder;
    return p;
}

}  // namespace st::plugins::wan
