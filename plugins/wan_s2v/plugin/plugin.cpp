// The `wan_s2v` plugin (st-wan_s2v.so): the only exporting file. Registers model.wan_s2v@1
// (WanS2VFamily, plugins/wan_s2v/plugin/s2v_family.h) with the config keys it reads, and the
// `st-host bench --plugin wan_s2v` command.
#include <memory>

#include "s2v_family.h"
#include "st/plugin.h"
#include "st/registrar.h"

ST_PLUGIN("wan_s2v", "0.1.0", "model.wan_s2v@1", "cmd.bench-wan_s2v@1")

ST_PLUGIN_ENTRY(registrar) {
    using namespace st::plugins::wan_s2v;
    st::sdk::ComponentInfo info;
    info.id = kS2VComponentId;
    info.summary = s2v_component_summary();
    info.options = s2v_option_specs();
    registrar.add_model(std::move(info), [] { return std::make_unique<WanS2VFamily>(); });
    st::sdk::ComponentInfo bench{
        "cmd.bench-wan_s2v@1",
        "S2V training step time and peak RSS with and without the audio cache, audio "
        "encoding time per second of audio",
        {}};
    registrar.add_command(std::move(bench),
                          {"st-host bench --plugin wan_s2v [--preset small] [--steps 3] [--frames 17] "
                           "[--resolution 128x128]",
                           [](const std::vector<std::string>& args) { return run_s2v_bench(args); }});
}
