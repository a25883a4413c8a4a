// The `wan` plugin (st-wan.so): the only exporting file. Registers model.wan@1 (WanFamily,
// plugins/wan/plugin/wan_family.h) with the config keys it owns.
#include <memory>

#include "core/bench.h"
#include "st/plugin.h"
#include "st/registrar.h"
#include "wan_family.h"

ST_PLUGIN("wan", "0.1.0", "model.wan@1", "cmd.bench-wan@1")

ST_PLUGIN_ENTRY(registrar) {
    using namespace st::plugins::wan;
    st::sdk::ComponentInfo info;
    info.id = kWanComponentId;
    info.summary = wan_component_summary();
    info.options = wan_option_specs();
    registrar.add_model(std::move(info), [] { return std::make_unique<WanFamily>(); });
    st::sdk::ComponentInfo bench{
        "cmd.bench-wan@1",
        "transformer forward / forward+backward time and peak RSS per preset, attention "
        "peak memory at long sequences",
        {}};
    registrar.add_command(std::move(bench),
                          {"st-host bench --plugin wan [--presets tiny,small,1.3b] [--latent FxHxW] "
                           "[--attention-tokens 8192,32768]",
                           [](const std::vector<std::string>& args) { return run_wan_bench(args); }});
}
