#include "cli.h"

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include <cstdio>
#include <filesystem>

#include "commands/commands.h"
#include "config/default_config.h"
#include "dist/dist_env.h"
#include "plugins/guard.h"
#include "st/error.h"
#include "st/log.h"
#include "st/version.h"
#include "system_info.h"

namespace st::host {
namespace po = boost::program_options;

GlobalFlags parse_global_flags(const std::vector<std::string>& args) {
    GlobalFlags g;
    po::options_description desc("global");
    desc.add_options()("help,h", po::bool_switch(&g.help))(
        "no-install-plugins", po::bool_switch(&g.no_install_plugins))("version", po::bool_switch(&g.version))(
        "plugin", po::value<std::string>(&g.plugin))(
        "plugin-dir", po::value<std::vector<std::string>>(&g.plugin_dirs))("nproc_per_node",
                                                                           po::value<int>(&g.nproc_per_node));
    try {
        auto parsed = po::command_line_parser(args).options(desc).allow_unregistered().run();
        po::variables_map vm;
        po::store(parsed, vm);
        po::notify(vm);
        g.rest = po::collect_unrecognized(parsed.options, po::include_positional);
        // torchrun's spelling before the config file: the same as the config key (after it).
        if (g.nproc_per_node != 0) {
            g.rest.push_back("--nproc_per_node");
            g.rest.push_back(std::to_string(g.nproc_per_node));
        }
    } catch (const po::error& e) {
        throw Error("host.cli", "parse", e.what());
    }
    return g;
}

PluginRegistry& CommandContext::plugins() {
    if (!registry_) {
        registry_ = std::make_unique<PluginRegistry>();
        registry_->discover(plugin_search_dirs(flags.plugin_dirs, !flags.no_install_plugins));
    }
    return *registry_;
}

namespace {

/// `st-host <name> ...` for commands plugins registered (cmd.<name>@N); `st-host bench <what>`
/// maps to cmd.bench-<what>. Only a first token that is not a file triggers plugin discovery.
bool run_plugin_command(CommandContext& ctx, const std::string& first, std::vector<std::string> rest,
                        int* code) {
    if (first.rfind("--", 0) == 0 || first.find('.') != std::string::npos ||
        first.find('/') != std::string::npos)
        return false;
    std::string name = first;
    if (first == "bench") {
        // `st-host bench --plugin wan [...]` runs that plugin's benchmark; `st-host bench WHAT [...]` any
        // other.
        if (!rest.empty() && rest.front().rfind("--", 0) != 0) {
            name = "bench-" + rest.front();
            rest.erase(rest.begin());
        } else if (!ctx.flags.plugin.empty()) {
            name = "bench-" + ctx.flags.plugin;
        } else {
            throw Error("host.cli", "bench",
                        "usage: st-host bench WHAT [...] or st-host bench --plugin NAME [...]");
        }
    }
    const auto* e = ctx.plugins().find_latest("cmd", name);
    if (!e) {
        if (first == "bench") {
            std::vector<std::string> known;
            for (const auto* c : ctx.plugins().of_kind("cmd"))
                if (c->name.rfind("bench-", 0) == 0) known.push_back(c->name.substr(6));
            throw Error(
                "host.cli", "bench",
                fmt::format("no benchmark '{}'; available: {}", name.substr(6),
                            known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", "))));
        }
        return false;
    }
    *code = call_plugin(*e, "run", [&] { return e->command.run(rest); });
    return true;
}

}  // namespace

namespace {
std::vector<std::string> g_argv;
}

const std::vector<std::string>& process_argv() {
    return g_argv;
}

int run_cli(int argc, char** argv) {
    g_argv.assign(argv, argv + argc);
    std::vector<std::string> args(argv + 1, argv + argc);
    try {
        CommandContext ctx;
        ctx.flags = parse_global_flags(args);
        dist::quiet_other_ranks();
        // Every command runs with all cores unless a run's num_threads says otherwise.
        configure_threads_and_probe(0);
        if (ctx.flags.version) {
            std::printf("st-host %s (SDK ABI %d.%d)\nfingerprint: %s\n", ST_SDK_VERSION_STRING,
                        ST_SDK_ABI_MAJOR, ST_SDK_ABI_MINOR, ST_BUILD_FINGERPRINT);
            return 0;
        }
        // `st-host generate --help` / `st-host bench generate --help`: that command's own flags.
        if (ctx.flags.help && !ctx.flags.rest.empty()) {
            std::string name = ctx.flags.rest.front();
            if (name == "bench" && ctx.flags.rest.size() > 1) name = "bench-" + ctx.flags.rest[1];
            if (name == "generate") return cmd_generate(ctx, {"--help"});
            if (name == "bench-generate") return cmd_bench_generate(ctx, {"--help"});
        }
        // No config file named: SimpleTuner's config/ folder rules (ENV, CONFIG_BACKEND, config.env).
        if (!ctx.flags.help && (ctx.flags.rest.empty() || ctx.flags.rest.front().rfind("--", 0) == 0)) {
            const DefaultConfig d = find_default_config(std::filesystem::current_path());
            if (!d.path.empty()) {
                log::info("st-host",
                          "no config file given: using {} (SimpleTuner's rules: ENV {}, backend {}{})",
                          d.path.string(), d.env, d.backend,
                          d.loaded_env_files.empty()
                              ? std::string()
                              : fmt::format(", environment from {}", fmt::join(d.loaded_env_files, ", ")));
                std::vector<std::string> args{d.path.string()};
                if (d.backend == "env") {
                    const auto env_args = env_backend_arguments();
                    log::info("st-host",
                              "env backend: {} argument(s) from environment variables and "
                              "TRAINER_EXTRA_ARGS: {}",
                              env_args.size(), fmt::join(env_args, " "));
                    args.insert(args.end(), env_args.begin(), env_args.end());
                }
                args.insert(args.end(), ctx.flags.rest.begin(), ctx.flags.rest.end());
                return cmd_run(ctx, args);
            }
            std::vector<std::string> tried;
            for (const auto& t : d.tried) tried.push_back(t.string());
            if (!ctx.flags.rest.empty())
                throw Error("host.cli", "parse",
                            fmt::format("expected a command or a config file before '{}', and no default "
                                        "configuration exists (tried {}); see st-host --help",
                                        ctx.flags.rest.front(), fmt::join(tried, ", ")));
        }
        if (ctx.flags.help || ctx.flags.rest.empty()) {
            print_help(ctx);
            return ctx.flags.help ? 0 : 2;
        }
        const std::string first = ctx.flags.rest.front();
        std::vector<std::string> rest(ctx.flags.rest.begin() + 1, ctx.flags.rest.end());
        for (const auto& c : commands())
            if (first == c.name) return c.run(ctx, rest);
        // Host benchmarks (bench-generate) answer `st-host bench WHAT` before plugin commands.
        if (first == "bench" && !rest.empty())
            for (const auto& c : commands())
                if ("bench-" + rest.front() == c.name)
                    return c.run(ctx, std::vector<std::string>(rest.begin() + 1, rest.end()));
        if (int code; run_plugin_command(ctx, first, rest, &code)) return code;
        return cmd_run(ctx, ctx.flags.rest);
    } catch (const Error& e) {
        log::error("st-host", "{}", e.what());
        return 1;
    } catch (const std::exception& e) {
        log::error("st-host", "unexpected error: {}", e.what());
        return 1;
    }
}

}  // namespace st::host
