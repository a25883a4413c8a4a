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
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace st::host::lua {

/// Resource accounting of one Lua state, shared by the allocator, the count hook and the pcall
/// wrappers. Lives in the engine; the state finds it through lua_getextraspace.
struct Runtime {
    /// Why the current call is being stopped: `interrupt` is a stop request of the host (SIGTERM)
    /// that arrived while the call ran.
    enum class Abort { none, budget, memory, interrupt };

    size_t memory_used = 0;
    size_t memory_limit = 0;
    /// VM instructions plus the work of library functions measured in instructions (see charge()).
    int64_t instruction_budget = 0;
    int64_t instructions_used = 0;
    int64_t next_check = 0;    ///< instructions_used at which charge() looks at the limits again
    int hook_interval = 1000;  ///< instructions between two count hooks
    bool in_call = false;      ///< a budgeted call (script load or handler) is running
    Abort abort = Abort::none;
    std::string abort_message;  ///< "file:line: instruction budget of N exceeded (...)"
    char position[128] = {};    ///< "file:line" at the last count hook of the current call
    /// The host's stop request: its name ("SIGTERM") while one is pending, else nullptr. Polled at
    /// the budget checks; may be empty.
    std::function<const char*()> stop_requested;
    bool stop_was_pending = false;  ///< a stop request was pending when the call began: not an interrupt
    std::string interrupt_reason;   ///< what stop_requested() returned for Abort::interrupt
    lua_State* L = nullptr;
};

/// Work done by library functions is counted in instructions: one per element a table function
/// touches or pattern-matching step, one per kBytesPerUnit bytes allocated, copied or scanned.
constexpr int64_t kBytesPerUnit = 16;

/// Opens a state with the counting allocator and the budget hook. The standard libraries are
/// loaded into private templates (registry), the real global table is left empty and the string
/// metatable is made read-only. Returns nullptr when the state cannot be created.
lua_State* open_state(Runtime& rt);
inline Runtime& runtime(lua_State* L) {
    return **static_cast<Runtime**>(lua_getextraspace(L));
}

/// Slow path of charge(): raises the abort error when the budget is spent or a stop request
/// arrived during the call, else schedules the next check.
void check_limits(lua_State* L);

/// Counts `units` (>= 0) of work done inside a C library function against the instruction budget
/// of the running call. The count hook cannot interrupt C code, so every library function whose
/// work is not bounded by its arguments' size calls this before or while it works (lua_tablib.cpp,
/// lua_strlib.cpp). Raises the abort error, which pcall cannot catch; call only from C functions
/// that Lua called.
inline void charge(lua_State* L, int64_t units) {
    Runtime& rt = runtime(L);
    if (__builtin_add_overflow(rt.instructions_used, units, &rt.instructions_used))
        rt.instructions_used = INT64_MAX;
    if (rt.instructions_used >= rt.next_check) check_limits(L);
}

/// Raises the abort error of the current call again if there is one (after a protected call inside
/// the sandbox returned: load, pcall).
void check_abort(lua_State* L, int status);

/// Starts a budgeted call: resets the counter, clears the abort flag, collects garbage left by the
/// previous call. Must be followed by end_call().
/// `where` ("script.lua:12") is the position reported for a memory error before the first count hook.
void begin_call(Runtime& rt, const std::string& where);
void end_call(Runtime& rt);
/// The text of the abort of the current/last call ("file:line: instruction budget of N exceeded
/// (lua_instruction_budget)"), for when the error that reached the host lost it.
std::string abort_text(const Runtime& rt);

/// Replaces the library functions whose work the count hook cannot see by bounded versions that
/// charge() it: table.insert/remove/move/concat/unpack/sort (lua_tablib.cpp); string.find/match/
/// gmatch/gsub/rep/byte and utf8.len/codepoint/offset (lua_strlib.cpp). Each takes the library
/// table at `index` and replaces its fields in place.
void bound_table_library(lua_State* L, int index);
void bound_string_library(lua_State* L, int index);
void bound_utf8_library(lua_State* L, int index);

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
/// empty arrays arrays); values without a JSON form (functions, strings that are not UTF-8) are
/// skipped and their paths appended to `dropped`. Throws st::Error naming the field for a table
/// that contains itself (a cycle), nesting deeper than kMaxJsonDepth, or a result larger than
/// `max_bytes` (each value counts kJsonValueBytes plus the bytes of its strings and keys, so
/// tables shared many times cannot multiply into host memory). Call under protection (it uses the
/// Lua API).
constexpr int kMaxJsonDepth = 32;
constexpr size_t kJsonValueBytes = 32;
nlohmann::json to_json(lua_State* L, int index, const nlohmann::json* hint, std::vector<std::string>& dropped,
                       size_t max_bytes);

/// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF):
/// what nlohmann::json accepts when it writes a string.
bool valid_utf8(std::string_view s);
/// `s` for a log line or an error message: bytes that are not UTF-8 shown as \xNN, at most
/// `max_bytes` of it followed by "... (N more bytes)".
std::string printable(std::string_view s, size_t max_bytes);

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
