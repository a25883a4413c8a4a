// The `sanavideo` plugin (st-sanavideo.so): the only exporting file. Registers model.sanavideo@1
// (SanaVideoFamily, plugins/sanavideo/plugin/sana_family.h) with the config keys it reads, and the
// `st-host bench --plugin sanavideo` command.
#include <memory>

#include "sana_family.h"
#include "st/plugin.h"
#include "st/registrar.h"

ST_PLUGIN("sanavideo", "0.1.0", "model.sanavideo@1", "cmd.bench-sanavideo@1")

ST_PLUGIN_ENTRY(registrar) {
    using namespace st::plugins::sanavideo;
    st::sdk::ComponentInfo info;
    info.id = kSanaComponentId;
    info.summary = sana_component_summary();
    info.options = sana_option_specs();
    registrar.add_model(std::move(info), [] { return std::make_unique<SanaVideoFamily>(); });
    st::sdk::ComponentInfo bench{
        "cmd.bench-sanavideo@1", "transformer forward / forward+backward time and peak RSS per preset", {}};
    registrar.add_command(
        std::move(bench),
        {"st-host bench --plugin sanavideo [--presets tiny,small] [--latent FxHxW] [--json]",
         [](const std::vector<std::string>& args) { return run_sana_bench(args); }});
}
