// st-host forward / make-model: tools that call one model family plugin directly.
#include <fmt/format.h>
#include <boost/program_options.hpp>

#include <cstdio>
#include <filesystem>
#include <optional>

#include "commands/commands.h"
#include "config/options_table.h"
#include "plugins/guard.h"
#include "plugins/model_handle.h"
#include "st/error.h"
#include "st/log.h"
#include "st/safetensors.h"

namespace st::host {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

std::string require_plugin(CommandContext& ctx, const char* cmd) {
    if (ctx.flags.plugin.empty())
        fail("host.cli", cmd, "--plugin NAME is required (the model family plugin, e.g. --plugin wan)");
    return ctx.flags.plugin;
}

/// Host options + the model component's options, resolved from CLI overrides only.
sdk::ConfigView resolve_overrides(const ComponentEntry& model, const std::vector<std::string>& extra) {
    OptionTable table;
    for (auto& s : host_options()) table.add(s);
    for (auto& s : model.info.options) table.add(s);
    auto resolved = resolve_config(nlohmann::json::object(), parse_cli_overrides(extra), table);
    return sdk::ConfigView(std::make_shared<const nlohmann::json>(resolved.values));
}

}  // namespace

namespace {

/// The plugin's forward tool component (forward.<name>@N), or nullptr.
const ComponentEntry* forward_tool(PluginRegistry& registry, const std::string& plugin) {
    for (const auto* e : registry.of_plugin(plugin))
        if (e->kind == "forward") return e;
    return nullptr;
}

}  // namespace

int cmd_forward(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string model_path, component, inputs, output;
    po::options_description desc("forward");
    desc.add_options()("model", po::value(&model_path)->required())(
        "component", po::value(&component)->required())("inputs", po::value(&inputs)->required())(
        "output", po::value(&output)->required());
    auto extra = parse_command_flags(desc, args, "forward");
    const std::string plugin = require_plugin(ctx, "forward");
    // A model family's components, or the networks of a plugin that is not one (forward.<name>@N).
    const ComponentEntry* tool = forward_tool(ctx.plugins(), plugin);
    const ComponentEntry& entry = tool ? *tool : model_component(ctx.plugins(), plugin);
    auto config = resolve_overrides(entry, extra);
    std::optional<ModelHandle> model;
    if (!tool) model.emplace(entry);
    const auto comps = tool ? tool->forward.components : model->forward_components("st-host forward");
    if (std::find(comps.begin(), comps.end(), component) == comps.end())
        fail("host.cli", "forward", "plugin '{}' has no component '{}'; it has: {}", entry.plugin_name,
             component, fmt::format("{}", fmt::join(comps, ", ")));
    auto src = sdk::open_tensor_source(inputs);
    sdk::TensorMap in;
    for (const auto& info : src->infos()) in[info.name] = src->load(info.name);
    log::info("host", "forward {} of {} on {} input tensor(s) from {}", component, model_path, in.size(),
              inputs);
    auto out = tool ? call_plugin(*tool, "forward",
                                  [&] { return tool->forward.run(model_path, component, in, config); })
                    : model->forward_component(model_path, component, in, config);
    sdk::save_safetensors(output, out, {{"st.component", component}, {"st.model", model_path}});
    log::info("host", "wrote {} output tensor(s) to {}", out.size(), output);
    return 0;
}

int cmd_probe(CommandContext& ctx, const std::vector<std::string>& args) {
    // Which model family can load PATH, and as what: every loaded family (or --plugin's) is asked.
    if (args.size() != 1) fail("host.cli", "probe", "usage: {}", command_usage("probe"));
    const fs::path path = args.front();
    if (!fs::exists(path)) fail("host.cli", "probe", "'{}' does not exist", path.string());
    std::vector<const ComponentEntry*> families;
    if (!ctx.flags.plugin.empty())
        families.push_back(&model_component(ctx.plugins(), ctx.flags.plugin));
    else
        families = ctx.plugins().of_kind("model");
    int loadable = 0;
    for (const auto* entry : families) {
        ModelHandle model(*entry);
        const sdk::ProbeResult r = model.probe(path, "st-host probe");
        if (r.loadable) ++loadable;
        std::printf("%s: %s\n", entry->id.c_str(),
                    r.loadable ? ("loadable: " + r.variant).c_str() : ("not loadable: " + r.reason).c_str());
    }
    std::fflush(stdout);
    if (loadable == 0) log::error("host", "no loaded model family can load '{}'", path.string());
    return loadable > 0 ? 0 : 1;
}

int cmd_make_model(CommandContext& ctx, const std::vector<std::string>& args) {
    std::string preset, out;
    uint64_t seed = 0;
    po::options_description desc("make-model");
    desc.add_options()("preset", po::value(&preset)->required())("out", po::value(&out)->required())(
        "seed", po::value(&seed)->default_value(0));
    if (auto extra = parse_command_flags(desc, args, "make-model"); !extra.empty())
        fail("host.cli", "make-model", "unexpected argument '{}' (usage: {})", extra.front(),
             command_usage("make-model"));
    const auto& entry = model_component(ctx.plugins(), require_plugin(ctx, "make-model"));
    ModelHandle model(entry);
    auto presets = model.presets("st-host make-model");
    if (std::find(presets.begin(), presets.end(), preset) == presets.end())
        fail("host.cli", "make-model", "plugin '{}' has no preset '{}'; presets: {}", entry.plugin_name,
             preset, fmt::format("{}", fmt::join(presets, ", ")));
    model.make_model(preset, out, seed);
    log::info("host", "wrote a random '{}' {} model (seed {}) to {}", preset, entry.plugin_name, seed, out);
    return 0;
}

}  // namespace st::host
