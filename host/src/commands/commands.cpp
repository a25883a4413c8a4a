#include "commands/commands.h"

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include <cstdio>
#include <cstdlib>

#include "config/options_table.h"
#include "lua/hook_engine.h"
#include "st/error.h"
#include "validate/validator.h"

namespace st::host {

const std::vector<CommandInfo>& commands() {
    static const std::vector<CommandInfo> c = {
        {"plugins", "st-host plugins [--plugin-dir DIR ...]",
         "List every candidate plugin file: accepted or refused and why, its components and fingerprint.",
         cmd_plugins},
        {"inspect", "st-host inspect FILE_OR_DIR",
         "List the tensors of a safetensors file, sharded checkpoint or model folder: names, dtypes, shapes, "
         "totals and metadata.",
         cmd_inspect},
        {"forward",
         "st-host forward --plugin NAME --model PATH --component C --inputs IN.safetensors --output "
         "OUT.safetensors [--key value ...]",
         "Run one component of a model (transformer, vae_encode, vae_decode, text_encoder, ...) on named "
         "tensors.",
         cmd_forward},
        {"probe", "st-host probe [--plugin NAME] PATH",
         "Ask every loaded model family (or --plugin's) whether it can load PATH (a pipeline folder, a "
         "network folder or a single file) and as which variant; exit 1 when none can.",
         cmd_probe},
        {"make-model", "st-host make-model --plugin NAME --preset PRESET --out DIR [--seed N]",
         "Write a randomly initialised model of a family in its real on-disk layout (for tests, demos, "
         "benchmarks).",
         cmd_make_model},
        {"generate",
         "st-host generate --plugin NAME --model PATH [--lora FILE[:strength] ...] --prompt TEXT "
         "[--negative_prompt TEXT] [--image FILE] --frames N --resolution WxH --steps N --guidance G --seed "
         "S "
         "[--scheduler euler|unipc|dpmsolver++] [--flow_shift S] [--mixed_precision bf16|no] [--config FILE] "
         "--out "
         "FILE.mp4",
         "Render one video (mp4 + first-frame png) with the validation sampling path; generate --help lists "
         "every flag.",
         cmd_generate},
        {"bench-generate",
         "st-host bench generate --plugin NAME [--preset small | --model PATH] [--frames N] [--resolution "
         "WxH] [--steps N] [--mixed_precision bf16|no]",
         "Seconds per denoising step with and without CFG, and VAE decode time per frame.",
         cmd_bench_generate},
        {"bench-train",
         "st-host bench train --plugin NAME [--preset tiny|small|1.3b|14b] [--steps N] [--frames N] "
         "[--resolution PX] "
         "[--batch N] [--mixed_precision bf16|no] [--model PATH] [--out DIR] [--json] [--key value ...]",
         "Trainer step time split into data, forward, backward, optimizer and host overhead, and peak RSS. "
         "Overrides that enable a regularizer (--crepa_enabled true) also time a run without it and "
         "SimpleTuner's decode + teacher path.",
         cmd_bench_train},
        {"prepare", "st-host prepare [--plugin NAME] CONFIG [--key value ...]",
         "Discover and cache the datasets of CONFIG (latents, text embeddings, audio features) and print a "
         "summary: samples per bucket, audio, every skipped file with its reason.",
         cmd_prepare},
        {"lr-curve",
         "st-host lr-curve --scheduler NAME --learning_rate LR --steps N [--warmup N] [--cycles C] [--power "
         "P] "
         "[--lr_end E] [--every K] [--key value ...]",
         "Print the learning rate an LR scheduler component gives at each step.", cmd_lr_curve},
    };
    return c;
}

const char* command_usage(const std::string& name) {
    for (const auto& c : commands())
        if (name == c.name) return c.usage;
    return "st-host --help";
}

std::vector<std::string> parse_command_flags(const boost::program_options::options_description& desc,
                                             const std::vector<std::string>& args,
                                             const std::string& command) {
    namespace po = boost::program_options;
    try {
        auto parsed = po::command_line_parser(args).options(desc).allow_unregistered().run();
        po::variables_map vm;
        po::store(parsed, vm);
        po::notify(vm);
        return po::collect_unrecognized(parsed.options, po::include_positional);
    } catch (const po::error& e) {
        fail("host.cli", command, "{} (usage: {})", e.what(), command_usage(command));
    }
}

const ComponentEntry& model_component(PluginRegistry& registry, const std::string& plugin) {
    auto mine = registry.of_plugin(plugin);
    const ComponentEntry* model = nullptr;
    for (const auto* e : mine)
        if (e->kind == "model") model = e;
    if (model) return *model;
    std::vector<std::string> families;
    for (const auto* e : registry.of_kind("model"))
        families.push_back(fmt::format("{} ({})", e->plugin_name, e->id));
    if (mine.empty())
        fail("host", "plugin",
             "no plugin named '{}' was loaded; plugins with model families: {} (see st-host "
             "plugins)",
             plugin, families.empty() ? std::string("none") : fmt::format("{}", fmt::join(families, ", ")));
    fail("host", "plugin", "plugin '{}' has no model family component; plugins with model families: {}",
         plugin, families.empty() ? std::string("none") : fmt::format("{}", fmt::join(families, ", ")));
}

namespace {

void print_option(const sdk::OptionSpec& s) {
    std::string def = s.default_value.is_null() ? "unset" : s.default_value.dump();
    std::string choices = s.choices.empty() ? "" : fmt::format(" {{{}}}", fmt::join(s.choices, "|"));
    if (s.min_value || s.max_value) choices += " " + sdk::option_range_text(s);
    std::printf("  --%s <%s>%s (default %s)\n      %s\n", s.name.c_str(), sdk::option_type_name(s.type),
                choices.c_str(), def.c_str(), s.help.c_str());
    if (!s.aliases.empty())
        std::printf("      also accepted as: %s\n", fmt::format("{}", fmt::join(s.aliases, ", ")).c_str());
}

}  // namespace

void print_help(CommandContext& ctx) {
    std::printf(
        "st-host: fine-tune video diffusion models (LoRA or full) with SimpleTuner's configuration keys.\n\n"
        "Usage:\n"
        "  st-host [--plugin NAME] CONFIG [--key value | --key=value | --flag ...]\n"
        "      Train with CONFIG (config.json or config.toml, SimpleTuner's keys). Command-line flags\n"
        "      override the file; a bare flag sets a boolean option to true. Without CONFIG, SimpleTuner's\n"
        "      rules find it: config/config.env and config/$ENV/config.env are read into the environment,\n"
        "      then config/[$ENV/]config.json or .toml (CONFIG_BACKEND json|toml, CONFIG_PATH) is used.\n");
    for (const auto& c : commands()) std::printf("  %s\n      %s\n", c.usage, c.summary);
    // Commands added by plugins (extract-audio, bench-*, ...).
    for (const auto* e : ctx.plugins().of_kind("cmd"))
        std::printf("  %s\n      %s (plugin %s)\n", e->command.usage.c_str(), e->info.summary.c_str(),
                    e->plugin_name.c_str());
    std::printf(
        "\nGlobal flags:\n"
        "  --plugin NAME       the model family plugin to use (e.g. wan, wan_s2v); also adds its options to "
        "--help\n"
        "  --plugin-dir DIR    search DIR for plugins first (repeatable); then $ST_PLUGIN_PATH "
        "(':'-separated),\n"
        "                      then <prefix>/lib/st/plugins next to st-host\n"
        "  --no-install-plugins  search only --plugin-dir and $ST_PLUGIN_PATH\n"
        "  --nproc_per_node N  train on N data-parallel ranks started here (torchrun's flag; the same as "
        "the\n"
        "                      config key; docs/distributed.md); under torchrun st-host is one rank\n"
        "  --help, -h          this text; with --plugin NAME also that plugin's options\n"
        "  --version           versions and the build fingerprint plugins must match\n\n"
        "Host options (config keys):\n");
    for (const auto& s : host_options()) print_option(s);
    std::printf("\nTraining options (config keys; docs/training.md):\n");
    for (const auto& s : trainer_options()) print_option(s);
    std::printf("\nValidation and webhook options (config keys; docs/validation.md, docs/webhooks.md):\n");
    for (const auto& s : validate::validation_options()) print_option(s);
    std::printf("\nLua hook options (config keys; docs/lua-hooks.md):\n");
    for (const auto& s : lua::lua_option_specs()) print_option(s);
    if (!ctx.flags.plugin.empty()) {
        auto& reg = ctx.plugins();
        auto comps = reg.of_plugin(ctx.flags.plugin);
        if (comps.empty()) {
            std::printf("\nNo plugin named '%s' was loaded (see st-host plugins).\n",
                        ctx.flags.plugin.c_str());
            return;
        }
        for (const auto* e : comps) {
            std::printf("\nOptions of %s (plugin %s): %s\n", e->id.c_str(), e->plugin_name.c_str(),
                        e->info.summary.c_str());
            if (e->info.options.empty()) std::printf("  (none)\n");
            for (const auto& s : e->info.options) print_option(s);
        }
    }
}

}  // namespace st::host
