// Lua hook engine: user scripts that watch training events and ask for a narrow set of actions.
//
// Two phases, after Redis scripting (src/script_lua.c): each script runs once when the engine is
// built and registers handlers with `st.on(event, fn)` (register phase); afterwards the host fires
// events and the handlers run (run phase). Handlers never touch the trainer directly: actions
// (`st.stop()`, `st.save_checkpoint()`, ...) are queued and drained by the host between steps
// through `take_actions()`.
//
// Sandbox: each script gets a private environment built from an allow-list (base minus dofile and
// loadfile, text-only load, string minus dump, table, math seeded from the run seed, utf8,
// coroutine, os.clock/time/date). Every handler call (and every script load) runs under an
// instruction budget that pcall cannot swallow, and the whole state under a memory cap enforced
// by the allocator. The user guide is docs/lua-hooks.md.
//
// Not thread-safe: one thread owns the engine (the training loop). No Lua header is included here.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "st/options.h"

namespace st::host::lua {

/// What a failing handler does to the run (config key `lua_hook_error`). A handler fails when it
/// raises an error, exceeds the instruction budget or the memory cap, calls an action with a bad
/// argument (st.metric with a name that is not UTF-8), or leaves the event table without a JSON form
/// (a cycle, too deep, too large).
enum class HookErrorPolicy {
    stop,     ///< queue a stop marked as an error (the host writes a checkpoint, then exits non-zero)
    disable,  ///< remove the failing handler, log a warning, keep training
};

struct HookOptions {
    std::vector<std::filesystem::path> scripts;  ///< loaded in this order; handlers run in registration order
    nlohmann::json config;                       ///< resolved run config, exposed read-only as st.config
    uint64_t seed = 0;                           ///< seeds math.random (each script its own generator)
    int64_t instruction_budget = 50'000'000;     ///< per handler call (and per script load)
    size_t memory_limit_bytes = 64u << 20;       ///< whole Lua state
    HookErrorPolicy on_error = HookErrorPolicy::stop;
    /// The host's stop request (SIGINT/SIGTERM): returns its name while one is pending, else nullptr.
    /// A request that arrives while a handler runs ends that handler at the next budget check (every
    /// 1000 VM instructions, every 65536 counted instructions inside a library call); that is not a
    /// hook error and the handler stays registered. A request already pending when a handler starts does not
    /// stop it (on_checkpoint and on_train_end handlers still run). Called on the engine's thread; may be
    /// empty.
    std::function<const char*()> stop_requested;
};

/// Limits on what handlers hand to the host (the Lua state's own memory is capped separately).
constexpr size_t kMaxEventTableBytes = 16u << 20;  ///< an event table converted back to JSON
constexpr size_t kMaxMetricNameBytes = 256;        ///< st.metric names (valid UTF-8)
constexpr size_t kMaxMetricsPerEvent = 10'000;     ///< st.metric calls between two take_actions()

/// Requests queued by handlers since the last take_actions(); the host applies them between steps.
struct HookActions {
    bool stop = false;
    std::string stop_reason;  ///< from st.stop(reason?) or the error text under policy stop
    bool error = false;       ///< the stop comes from a hook failure (policy stop): the run exits non-zero
    bool save_checkpoint = false;
    bool validate_now = false;
    std::optional<double> lr_scale;                       ///< last st.set_lr_scale value (finite and > 0)
    std::vector<std::pair<std::string, double>> metrics;  ///< st.metric(name, value), in call order
};

class HookEngine {
  public:
    /// Creates the Lua state and loads each script (register phase). Throws st::Error naming the
    /// script and file:line on a syntax error, a runtime error, a sandbox violation, an exhausted
    /// budget or the memory cap while a script loads.
    explicit HookEngine(const HookOptions& options);
    ~HookEngine();
    HookEngine(const HookEngine&) = delete;
    HookEngine& operator=(const HookEngine&) = delete;

    /// Version of the Lua surface (`st.api_level`); grows when events, fields or actions are added.
    static int api_level();
    /// The event names st.on accepts, in lifecycle order.
    static const std::vector<std::string>& event_names();

    /// Whether at least one handler is registered for `event` (cheap; lets the host skip building
    /// a table nobody reads).
    bool has_handlers(const std::string& event) const;

    /// Runs every handler of `event` in registration order, all on one Lua table built from
    /// `table` (JSON object -> table, arrays -> sequences, null -> nil), and returns that table as
    /// the handlers left it (so on_validation_start handlers can edit or add `prompts`). Values
    /// with no JSON form (functions, coroutines) are dropped with a warning. A handler returning
    /// `true` is unregistered. The table is read back after each handler: one that leaves it without
    /// a JSON form has failed, and the next handlers get the table as it was before it. A failing
    /// handler is logged (script file, line, traceback) and removed; under policy stop a stop is
    /// queued with the message and `error` set. Never throws for script errors; throws st::Error
    /// when `event` is not a known event name (a host bug).
    nlohmann::json fire(const std::string& event, const nlohmann::json& table);

    /// Replaces `st.state` (a read-only view for scripts; nested tables read-only too).
    void set_state(const nlohmann::json& state);

    /// Returns and clears the queued actions.
    HookActions take_actions();

    /// Most recent handler error: "file:line: message" and a stack traceback.
    std::optional<std::string> last_error() const;

    /// Bytes currently allocated by the Lua state (for tests and diagnostics).
    size_t memory_used() const;

    class Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

/// Declarations of lua_hooks, lua_hook_error, lua_instruction_budget and lua_memory_limit_mb
/// (group "hooks"); the host adds them to its option table.
std::vector<sdk::OptionSpec> lua_option_specs();

/// Reads the keys of lua_option_specs() (and `seed`) from a resolved config. Relative script paths
/// resolve against `config_dir` (the config file's folder). Throws st::Error naming the key and
/// the path for a missing script, and the key and value for a bad budget, limit or policy.
HookOptions hook_options_from_config(const sdk::ConfigView& config, const std::filesystem::path& config_dir);

}  // namespace st::host::lua
