// st-host plugins: every candidate file, accepted or refused and why.
#include <fmt/format.h>

#include <cstdio>

#include "commands/commands.h"
#include "st/error.h"

namespace st::host {

int cmd_plugins(CommandContext& ctx, const std::vector<std::string>& args) {
    if (!args.empty())
        fail("host.cli", "plugins", "unexpected argument '{}' (usage: st-host plugins [--plugin-dir DIR])",
             args.front());
    auto& reg = ctx.plugins();
    const auto dirs = plugin_search_dirs(ctx.flags.plugin_dirs, !ctx.flags.no_install_plugins);
    std::printf("Plugin search path:\n");
    for (const auto& [d, origin] : dirs) std::printf("  %s (%s)\n", d.string().c_str(), origin.c_str());
    std::printf("\n");
    size_t accepted = 0;
    for (const auto& c : reg.candidates()) {
        const auto& m = c.read.manifest;
        if (c.accepted) {
            ++accepted;
            std::printf("%s [%s]: accepted\n", c.file.string().c_str(), c.origin.c_str());
        } else {
            std::printf("%s [%s]: refused: %s\n", c.file.string().c_str(), c.origin.c_str(),
                        c.reason.c_str());
        }
        if (c.read.has_manifest) {
            std::printf("  plugin %s %s, SDK ABI %u.%u\n  fingerprint %s\n", m.plugin_name.c_str(),
                        m.plugin_version.c_str(), m.abi_major, m.abi_minor, m.fingerprint.c_str());
            for (const auto& id : m.components) {
                const auto* e = reg.find(id);
                bool mine = e && e->plugin_file == c.file;
                std::printf(
                    "  component %s%s\n", id.c_str(),
                    mine && !e->info.summary.empty() ? fmt::format(": {}", e->info.summary).c_str() : "");
            }
        }
    }
    std::printf("\n%zu plugin file(s) found, %zu accepted, %zu refused\n", reg.candidates().size(), accepted,
                reg.candidates().size() - accepted);
    return 0;
}

}  // namespace st::host
