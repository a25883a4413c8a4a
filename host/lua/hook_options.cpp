// Configuration keys of the Lua hook engine and their translation into HookOptions.
#include <fmt/core.h>

#include "lua/hook_engine.h"
#include "st/error.h"

namespace st::host::lua {

namespace fs = std::filesystem;

std::vector<sdk::OptionSpec> lua_option_specs() {
    using namespace sdk;
    std::vector<OptionSpec> o;
    auto add = [&](OptionSpec s) {
        s.group = "hooks";
        o.push_back(std::move(s));
    };
    add(opt_list(
        "lua_hooks",
        "Lua hook scripts (one path or a list), loaded in order at the start of training; relative paths "
        "resolve against the config file's folder. See docs/lua-hooks.md."));
    add(opt_string("lua_hook_error", "stop",
                   "What a failing Lua handler does: stop (write a checkpoint, then end the run with exit "
                   "code 1) or disable (remove that handler, log a warning, keep training).",
                   {"stop", "disable"}));
    add(opt_int(
        "lua_instruction_budget", 50'000'000,
        "Lua VM instructions one handler call (or one script load) may run before it is stopped; pcall "
        "cannot catch this."));
    add(opt_int("lua_memory_limit_mb", 64, "Memory cap of the Lua state of the hooks, in MiB.")
            .range(1, 65536));
    return o;
}

HookOptions hook_options_from_config(const sdk::ConfigView& config, const fs::path& config_dir) {
    HookOptions out;
    if (config.has("lua_hooks")) {
        for (const auto& entry : config.get_list("lua_hooks")) {
            fs::path path(entry);
            if (path.empty()) fail("host.lua", "config", "lua_hooks: empty script path");
            fs::path resolved = path.is_absolute() ? path : (config_dir / path).lexically_normal();
            std::error_code ec;
            if (!fs::is_regular_file(resolved, ec))
                fail("host.lua", "config", "lua_hooks: script '{}' not found (looked for '{}'{})", entry,
                     resolved.string(),
                     path.is_absolute()
                         ? ""
                         : fmt::format(", relative to the config folder '{}'", config_dir.string()));
            out.scripts.push_back(resolved);
        }
    }
    out.config = config.all();
    out.seed = static_cast<uint64_t>(config.opt_int("seed").value_or(0));
    if (auto budget = config.opt_int("lua_instruction_budget")) {
        if (*budget <= 0) fail("host.lua", "config", "lua_instruction_budget must be > 0, got {}", *budget);
        out.instruction_budget = *budget;
    }
    if (auto mb = config.opt_int("lua_memory_limit_mb")) {
        if (*mb <= 0 || *mb > (1 << 20))
            fail("host.lua", "config", "lua_memory_limit_mb must be between 1 and 1048576, got {}", *mb);
        out.memory_limit_bytes = static_cast<size_t>(*mb) << 20;
    }
    if (auto policy = config.opt_string("lua_hook_error")) {
        if (*policy == "stop")
            out.on_error = HookErrorPolicy::stop;
        else if (*policy == "disable")
            out.on_error = HookErrorPolicy::disable;
        else
            fail("host.lua", "config", "lua_hook_error must be 'stop' or 'disable', got '{}'", *policy);
    }
    return out;
}

}  // namespace st::host::lua
