// Internal to host/lua: the Lua state, its resource limits and the sandboxed environments.
//
// Lua here is Debian's C++ build (liblua5.4-c++): lua_error throws a C++ exception, so C++
// destructors run when a Lua error unwinds through our C functions. C functions called by Lua must
// still turn C++ exceptions into Lua errors (see `guarded`), because Lua maps foreign exceptions to
// an unusable status.
#pragma once

#include <lua.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace st::host::lua {

/// Resource accounting of one Lua state, shared by the allocator, the count hook and the pcall
/// wrappers. Lives in the engine; the state finds it through lua_getextraspace.
struct Runtime {
    enum class Abort { none, budget, memory };

    size_t memory_used = 0;
    size_t memory_limit = 0;
    int64_t instruction_budget = 0;
    int64_t instructions_used = 0;
    int hook_interval = 1000;  ///< instructions between two count hooks
    bool in_call = false;      ///< a budgeted call (script load or handler) is running
    Abort abort = Abort::none;
    std::string abort_message;  ///< "file:line: instruction budget of N exceeded (...)"
    char position[128] = {};    ///< "file:line" at the last count hook of the current call
    lua_State* L = nullptr;
};

/// Opens a state with the counting allocator and the budget hook. The standard libraries are
/// loaded into private templates (registry), the real global table is left empty and the string
/// metatable is made read-only. Returns nullptr when the state cannot be created.
lua_State* open_state(Runtime& rt);
Runtime& runtime(lua_State* L);

/// Starts a budgeted call: resets the counter, clears the abort flag, collects garbage left by the
/// previous call. Must be followed by end_call().
/// `where` ("script.lua:12") is the position reported for a memory error before the first count hook.
void begin_call(Runtime& rt, const std::string& where);
void end_call(Runtime& rt);
/// The text of the abort of the current/last call ("file:line: instruction budget of N exceeded
/// (lua_instruction_budget)"), for when the error that reached the host lost it.
std::string abort_text(const Runtime& rt);

/// Pushes a new sandbox environment for one script: allow-listed globals, its own math with its own
/// generator seeded from (seed, script_index), print routed to st::log under `log_component`.
void push_sandbox_env(lua_State* L, uint64_t seed, int script_index, const std::string& log_component);

/// Pushes a read-only proxy of the table at `index` (its fields are not copied): writes, rawset and
/// setmetatable fail naming `name`; pairs, ipairs and # work.
void push_readonly_proxy(lua_State* L, int index, const std::string& name);
/// The name of the read-only proxy at `index` ("st.config"), or nullptr for any other value.
const char* readonly_name(lua_State* L, int index);

// JSON conversions (lua_convert.cpp).

/// Pushes a read-only view of `value` (objects and arrays become read-only proxies whose nested
/// tables are read-only too). `name` ("st.config") appears in the error a write produces.
void push_readonly(lua_State* L, const nlohmann::json& value, const std::string& name);
/// Pushes `value` as plain mutable Lua values.
void push_json(lua_State* L, const nlohmann::json& value);
/// Converts the value at `index` back to JSON. `hint` is the JSON this value was built from (keeps
/// empty arrays arrays); values without a JSON form are skipped and their paths appended to
/// `dropped`.
nlohmann::json to_json(lua_State* L, int index, const nlohmann::json* hint,
                       std::vector<std::string>& dropped);

/// Message handler for lua_pcall: message plus stack traceback.
int traceback_handler(lua_State* L);

/// Runs `fn` (a Lua C function body) and converts a std::exception into a Lua error. Lua's own
/// errors are not std::exception and pass through.
template <typename F>
int guarded(lua_State* L, F&& fn) {
    std::string message;
    try {
        return fn();
    } catch (const std::exception& e) {
        message = e.what();
    }
    lua_pushlstring(L, message.data(), message.size());
    return lua_error(L);
}

}  // namespace st::host::lua
