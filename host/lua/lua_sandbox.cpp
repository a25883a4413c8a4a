// The Lua state behind the hook engine: counting allocator, instruction budget, sandbox
// environments and read-only proxies. The two-phase model, the globals allow-list, the budget that
// pcall cannot swallow and the seeded PRNG follow Redis scripting (src/script_lua.c); the code is
// ours.
#include "lua/lua_sandbox.h"

#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "st/log.h"

namespace st::host::lua {
namespace {

// Registry keys (addresses are unique).
char kReadonlyKey;      // weak-keyed table: read-only proxy -> its name
char kBaseTemplateKey;  // allow-listed base functions
char kStringProxyKey;   // read-only view of the string library (shared by all scripts)
char kTableLibKey;
char kUtf8LibKey;
char kCoroutineLibKey;
char kOsLibKey;

// How often charge() asks the host whether a stop was requested, in instructions (the count hook
// asks at each of its calls).
constexpr int64_t kStopCheckInterval = 1 << 16;

// Once a budget or memory abort is flagged, allocations for error handling (messages,
// tracebacks) may exceed the cap by this much; no script code runs any more in that call.
constexpr size_t kAbortGrace = 1u << 20;

struct FailedAlloc {
    void* ptr = nullptr;
    size_t osize = 0;
    size_t nsize = 0;
};
thread_local FailedAlloc g_last_failure;

// Lua retries a failed allocation once after an emergency full collection; two failures of the
// same request in a row mean the script really holds more than the cap.
// Growth is also charged to the instruction budget (one instruction per kBytesPerUnit bytes): one
// VM instruction such as `s .. s` may copy megabytes. The allocator cannot raise an error, so the
// next count hook or charge() sees it.
void* counting_alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
    auto* rt = static_cast<Runtime*>(ud);
    if (ptr == nullptr) osize = 0;  // osize then encodes the object type, not a size
    if (nsize == 0) {
        std::free(ptr);
        rt->memory_used -= osize;
        return nullptr;
    }
    if (nsize > osize) {
        if (rt->in_call) {
            auto units = static_cast<int64_t>((nsize - osize) / kBytesPerUnit);
            if (__builtin_add_overflow(rt->instructions_used, units, &rt->instructions_used))
                rt->instructions_used = INT64_MAX;
        }
        size_t limit = rt->memory_limit + (rt->abort != Runtime::Abort::none ? kAbortGrace : 0);
        if (rt->memory_used + (nsize - osize) > limit) {
            FailedAlloc& last = g_last_failure;
            if (rt->in_call && last.ptr == ptr && last.osize == osize && last.nsize == nsize &&
                rt->abort == Runtime::Abort::none)
                rt->abort = Runtime::Abort::memory;
            last = {ptr, osize, nsize};
            return nullptr;
        }
        g_last_failure = {};
    }
    void* block = std::realloc(ptr, nsize);
    if (block == nullptr) return nullptr;
    rt->memory_used = rt->memory_used - osize + nsize;
    return block;
}

void set_where(Runtime& rt, lua_Debug& ar) {
    std::snprintf(rt.position, sizeof(rt.position), "%s:%d", ar.short_src, ar.currentline);
}

std::string limit_text(const Runtime& rt) {
    if (rt.abort == Runtime::Abort::budget)
        return fmt::format("instruction budget of {} exceeded (lua_instruction_budget)",
                           rt.instruction_budget);
    if (rt.abort == Runtime::Abort::interrupt)
        return fmt::format("stopped: {} arrived while the handler ran (the run is stopping)",
                           rt.interrupt_reason);
    return fmt::format("memory limit of {:.1f} MiB exceeded (lua_memory_limit_mb)",
                       static_cast<double>(rt.memory_limit) / (1 << 20));
}

// Raises the abort error again; composes its text on first use with the position of `L`'s caller.
[[noreturn]] void raise_abort(lua_State* L) {
    Runtime& rt = runtime(L);
    if (rt.abort_message.empty()) {
        luaL_where(L, 1);
        rt.abort_message = std::string(lua_tostring(L, -1)) + limit_text(rt);
        lua_pop(L, 1);
    }
    lua_pushlstring(L, rt.abort_message.data(), rt.abort_message.size());
    lua_error(L);
    std::abort();  // unreachable: lua_error throws
}

// Flags the abort of the current call when its budget is spent or a stop request arrived while it
// ran; a request already pending when the call began lets it run (on_checkpoint and on_train_end
// handlers after a SIGTERM).
bool limit_reached(Runtime& rt) {
    if (rt.stop_requested && !rt.stop_was_pending) {
        if (const char* why = rt.stop_requested()) {
            rt.abort = Runtime::Abort::interrupt;
            rt.interrupt_reason = why;
            return true;
        }
    }
    if (rt.instructions_used <= rt.instruction_budget) return false;
    rt.abort = Runtime::Abort::budget;
    return true;
}

// Next check: in kStopCheckInterval for the stop request, or just past the budget.
void schedule_check(Runtime& rt) {
    int64_t room = rt.instruction_budget - rt.instructions_used;  // >= 0 here
    if (room >= kStopCheckInterval)
        rt.next_check = rt.instructions_used + kStopCheckInterval;
    else
        rt.next_check = rt.instruction_budget == INT64_MAX ? INT64_MAX : rt.instruction_budget + 1;
}

void count_hook(lua_State* L, lua_Debug* ar) {
    Runtime& rt = runtime(L);
    if (!rt.in_call) return;
    lua_getinfo(L, "Sl", ar);
    if (rt.abort == Runtime::Abort::none) {
        set_where(rt, *ar);
        if (__builtin_add_overflow(rt.instructions_used, rt.hook_interval, &rt.instructions_used))
            rt.instructions_used = INT64_MAX;
        if (!limit_reached(rt)) return;
        rt.abort_message = fmt::format("{}: {}", rt.position, limit_text(rt));
    }
    raise_abort(L);
}

// pcall/xpcall as in lbaselib.c (same continuation, so yields across them still work), plus
// check_abort.
int finish_pcall(lua_State* L, int status, lua_KContext extra) {
    check_abort(L, status);
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - static_cast<int>(extra);
}

int sandbox_pcall(lua_State* L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

// Lua runs a message handler with hooks disabled when the error was raised inside a hook (as the
// budget error is): a user handler would then loop unchecked. So the user's handler (upvalue 1)
// only runs for ordinary errors.
int guarded_message_handler(lua_State* L) {
    if (runtime(L).abort != Runtime::Abort::none) return 1;  // the error object, unchanged
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

int sandbox_xpcall(lua_State* L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, guarded_message_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

// A coroutine killed by the budget error died inside a hook and keeps hooks disabled; closing it
// would run its __close metamethods unchecked. Such threads are remembered (weak keys) and never
// closed.
char kPoisonedKey;

bool poisoned(lua_State* L, int index) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kPoisonedKey);
    lua_pushvalue(L, index);
    bool p = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return p;
}

// coroutine.resume catches errors like pcall does; upvalue 1 is the original.
int sandbox_resume(lua_State* L) {
    lua_State* co = lua_tothread(L, 1);
    int n = lua_gettop(L);
    lua_pushvalue(L, 1);
    lua_insert(L, 1);  // a copy of the thread stays below the results, at index 1
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 2);
    lua_call(L, n, LUA_MULTRET);
    int status = co != nullptr ? lua_status(co) : LUA_OK;
    if (status != LUA_OK && status != LUA_YIELD && runtime(L).abort != Runtime::Abort::none) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &kPoisonedKey);
        lua_pushvalue(L, 1);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    check_abort(L, status);
    return lua_gettop(L) - 1;
}

int sandbox_close(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTHREAD);
    if (poisoned(L, 1)) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "coroutine was stopped by the instruction budget or the memory limit");
        return 2;
    }
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    check_abort(L, LUA_OK);
    return lua_gettop(L);
}

// coroutine.wrap over the sandboxed resume (upvalue 2), so an aborted coroutine is never closed.
// Upvalue 1: the thread.
int wrapped_call(lua_State* L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_rotate(L, 1, 2);
    lua_call(L, n + 1, LUA_MULTRET);
    if (!lua_toboolean(L, 1)) {  // propagate the error with the caller's position, as lcorolib does
        lua_settop(L, 2);
        if (lua_type(L, 2) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    return lua_gettop(L) - 1;
}

int sandbox_wrap(lua_State* L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State* co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, wrapped_call, 2);
    return 1;
}

int sandbox_rawset(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (const char* name = readonly_name(L, 1)) return luaL_error(L, "rawset: %s is read-only", name);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

int sandbox_setmetatable(lua_State* L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L,
                              "setmetatable: __gc metamethods are not available in st hooks (finalizers "
                              "would run outside the instruction budget)");
        lua_pop(L, 1);
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

// The reader function of load(fn) (upvalue 1), charging the pieces it returns: the compiler reads
// them inside one library call.
int charged_reader(lua_State* L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 0, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
        charge(L, static_cast<int64_t>(lua_rawlen(L, -1) / kBytesPerUnit) + 1);
    return 1;
}

// load(chunk [, chunkname [, mode [, env]]]): text only; env defaults to the script's own
// environment (upvalue 1), never to the real global table. Upvalue 2 is the original load.
int sandbox_load(lua_State* L) {
    int n = lua_gettop(L);
    size_t len = 0;
    const char* chunk = lua_tolstring(L, 1, &len);
    if (chunk != nullptr && len > 0 && chunk[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "load: binary chunks are not allowed in st hooks (text only)");
    const char* mode = luaL_optstring(L, 3, "t");
    if (std::strcmp(mode, "t") != 0)
        return luaL_error(
            L, "load: mode '%s' is not allowed in st hooks (binary chunks are refused; use 't')", mode);
    lua_settop(L, 4);
    if (chunk != nullptr) {
        charge(L, static_cast<int64_t>(len / kBytesPerUnit) + 1);
    } else if (lua_type(L, 1) == LUA_TFUNCTION) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, charged_reader, 1);
        lua_replace(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (n >= 4)
        lua_pushvalue(L, 4);
    else
        lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 4, 2);
    check_abort(L, LUA_OK);  // load catches errors of the reader, the budget's too
    return 2;
}

// tonumber(s [, base]) scans all of a string in one call. Upvalue 1: the original.
int sandbox_tonumber(lua_State* L) {
    if (lua_type(L, 1) == LUA_TSTRING) charge(L, static_cast<int64_t>(lua_rawlen(L, 1) / kBytesPerUnit));
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

// print(...) -> st::log info under "lua:<script>" (upvalue 1); libraries never write to stdout.
int sandbox_print(lua_State* L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; ++i) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, nullptr);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len = 0;
    const char* text = lua_tolstring(L, -1, &len);
    return guarded(L, [&] {
        log::info(lua_tostring(L, lua_upvalueindex(1)), "{}", std::string_view(text, len));
        return 0;
    });
}

int sandbox_collectgarbage(lua_State* L) {
    const char* option = luaL_optstring(L, 1, "collect");
    if (std::strcmp(option, "count") != 0)
        return luaL_error(L, "collectgarbage('%s') is not available in st hooks; only 'count' is", option);
    lua_pushnumber(L, static_cast<lua_Number>(runtime(L).memory_used) / 1024.0);
    return 1;
}

// math.randomseed(x [, y]) with an explicit seed only: runs are reproducible. Upvalue 1: original.
int sandbox_randomseed(lua_State* L) {
    if (lua_isnoneornil(L, 1))
        return luaL_error(
            L, "math.randomseed needs a seed in st hooks (math.random is seeded from the run seed)");
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

// __index of an environment / of os / of the string library: names removed by the sandbox raise a
// clear error instead of reading as nil. Upvalue 1: prefix ("", "os.", "string.").
int forbidden_index(lua_State* L) {
    static const char* const kForbidden[] = {
        "io",      "require", "package",   "debug", "dofile",  "loadfile", "loadstring", "module",
        "setfenv", "getfenv", "newproxy",  "warn",  "execute", "exit",     "getenv",     "remove",
        "rename",  "tmpname", "setlocale", "dump",  "popen",   "loadlib",  "searchpath"};
    const char* key = lua_tostring(L, 2);
    if (key != nullptr && lua_type(L, 2) == LUA_TSTRING) {
        for (const char* name : kForbidden)
            if (std::strcmp(key, name) == 0)
                return luaL_error(L, "%s%s is not available in st hooks (sandbox; see docs/lua-hooks.md)",
                                  lua_tostring(L, lua_upvalueindex(1)), key);
    }
    return 0;
}

void set_forbidden_metatable(lua_State* L, int index, const char* prefix) {
    index = lua_absindex(L, index);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, prefix);
    lua_pushcclosure(L, forbidden_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, index);
}

int readonly_newindex(lua_State* L) {
    const char* name = lua_tostring(L, lua_upvalueindex(1));
    luaL_tolstring(L, 2, nullptr);
    return luaL_error(L, "%s is read-only (attempt to set field '%s')", name, lua_tostring(L, -1));
}

int readonly_len(lua_State* L) {
    lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, lua_upvalueindex(1))));
    return 1;
}

int readonly_next(lua_State* L) {
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1)) != 0) return 2;
    lua_pushnil(L);
    return 1;
}

// __pairs hands out an iterator over the hidden table, never the hidden table itself.
int readonly_pairs(lua_State* L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, readonly_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void copy_table(lua_State* L, int from) {
    from = lua_absindex(L, from);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, from) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

void keep_fields(lua_State* L, int from, std::initializer_list<const char*> names) {
    from = lua_absindex(L, from);
    lua_newtable(L);
    for (const char* name : names) {
        lua_getfield(L, from, name);
        lua_setfield(L, -2, name);
    }
}

int init_state(lua_State* L) {
    lua_newtable(L);  // weak-keyed registry of read-only proxies
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kReadonlyKey);

    // Base library: open into the real global table, keep the allow-list, then replace the real
    // global table by an empty one (it is only the fallback env of lua_load, which we never use).
    luaL_requiref(L, "_G", luaopen_base, 0);
    keep_fields(L, -1,
                {"assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
                 "select", "tonumber", "tostring", "type", "_VERSION", "load"});
    lua_pushcfunction(L, sandbox_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, sandbox_xpcall);
    lua_setfield(L, -2, "xpcall");
    lua_pushcfunction(L, sandbox_rawset);
    lua_setfield(L, -2, "rawset");
    lua_pushcfunction(L, sandbox_setmetatable);
    lua_setfield(L, -2, "setmetatable");
    lua_pushcfunction(L, sandbox_collectgarbage);
    lua_setfield(L, -2, "collectgarbage");
    lua_getfield(L, -1, "tonumber");
    lua_pushcclosure(L, sandbox_tonumber, 1);
    lua_setfield(L, -2, "tonumber");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kBaseTemplateKey);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);

    // String library: one table shared through the string metatable, so scripts see it through a
    // read-only proxy (also as getmetatable("").__index), without dump.
    luaL_requiref(L, "string", luaopen_string, 0);
    int strlib = lua_gettop(L);
    lua_pushnil(L);
    lua_setfield(L, strlib, "dump");
    bound_string_library(L, strlib);
    set_forbidden_metatable(L, strlib, "string.");
    push_readonly_proxy(L, strlib, "string");
    int proxy = lua_gettop(L);
    lua_pushvalue(L, proxy);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kStringProxyKey);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    int string_mt = lua_gettop(L);
    lua_pushvalue(L, proxy);
    lua_setfield(L, string_mt, "__index");
    lua_createtable(L, 0, 1);  // what getmetatable("") returns: a read-only {__index = string}
    lua_pushvalue(L, proxy);
    lua_setfield(L, -2, "__index");
    push_readonly_proxy(L, -1, "the string metatable");
    lua_setfield(L, string_mt, "__metatable");
    lua_settop(L, 0);

    luaL_requiref(L, "table", luaopen_table, 0);
    bound_table_library(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kTableLibKey);
    luaL_requiref(L, "utf8", luaopen_utf8, 0);
    bound_utf8_library(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kUtf8LibKey);
    luaL_requiref(L, "coroutine", luaopen_coroutine, 0);
    int co = lua_gettop(L);
    lua_newtable(L);  // weak-keyed set of threads killed by an abort
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kPoisonedKey);
    lua_getfield(L, co, "resume");
    lua_pushcclosure(L, sandbox_resume, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, co, "resume");
    lua_pushcclosure(L, sandbox_wrap, 1);
    lua_setfield(L, co, "wrap");
    lua_getfield(L, co, "close");
    lua_pushcclosure(L, sandbox_close, 1);
    lua_setfield(L, co, "close");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kCoroutineLibKey);
    luaL_requiref(L, "os", luaopen_os, 0);
    keep_fields(L, -1, {"clock", "time", "date"});
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kOsLibKey);
    lua_settop(L, 0);
    // The loaded-modules table still references the full os library; scripts cannot reach the
    // registry, but drop it anyway so nothing outside the templates survives.
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    return 0;
}

}  // namespace

void check_limits(lua_State* L) {
    Runtime& rt = runtime(L);
    if (!rt.in_call) {
        rt.next_check = INT64_MAX;
        return;
    }
    if (rt.abort == Runtime::Abort::none) {
        if (!limit_reached(rt)) {
            schedule_check(rt);
            return;
        }
        // The Lua line that called the library function; a library function called by another one
        // (pcall(string.rep, ...)) has none, then the last count hook's position stands in.
        luaL_where(L, 1);
        std::string where = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (where.empty() && rt.position[0] != '\0') where = std::string(rt.position) + ": ";
        rt.abort_message = where + limit_text(rt);
    }
    raise_abort(L);
}

// After a protected call returns inside the sandbox: a budget, memory or stop abort must not be
// caught.
void check_abort(lua_State* L, int status) {
    Runtime& rt = runtime(L);
    if (!rt.in_call) return;
    if (status == LUA_ERRMEM && rt.abort == Runtime::Abort::none) rt.abort = Runtime::Abort::memory;
    if (rt.abort != Runtime::Abort::none) raise_abort(L);
}

const char* readonly_name(lua_State* L, int index) {
    if (!lua_istable(L, index)) return nullptr;
    index = lua_absindex(L, index);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kReadonlyKey);
    lua_pushvalue(L, index);
    lua_rawget(L, -2);
    const char* name = lua_tostring(L, -1);  // kept alive by the weak table while the proxy lives
    lua_pop(L, 2);
    return name;
}

namespace {
int panic_handler(lua_State* L) {
    const char* msg = lua_tostring(L, -1);
    log::error("host.lua", "unprotected Lua error (aborting): {}", msg != nullptr ? msg : "(no message)");
    return 0;  // Lua then calls abort()
}
}  // namespace

lua_State* open_state(Runtime& rt) {
    lua_State* L = lua_newstate(counting_alloc, &rt);
    if (L == nullptr) return nullptr;
    *static_cast<Runtime**>(lua_getextraspace(L)) = &rt;
    rt.L = L;
    lua_atpanic(L, panic_handler);
    lua_pushcfunction(L, init_state);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        lua_close(L);
        rt.L = nullptr;
        return nullptr;
    }
    return L;
}

void begin_call(Runtime& rt, const std::string& where) {
    rt.instructions_used = 0;
    rt.abort = Runtime::Abort::none;
    rt.abort_message.clear();
    std::snprintf(rt.position, sizeof(rt.position), "%s", where.c_str());
    rt.stop_was_pending = rt.stop_requested && rt.stop_requested() != nullptr;
    rt.interrupt_reason.clear();
    rt.in_call = true;
    g_last_failure = {};
    rt.hook_interval = static_cast<int>(std::clamp<int64_t>(rt.instruction_budget, 1, 1000));
    schedule_check(rt);
    lua_sethook(rt.L, count_hook, LUA_MASKCOUNT, rt.hook_interval);
}

void end_call(Runtime& rt) {
    bool aborted = rt.abort != Runtime::Abort::none;
    rt.in_call = false;
    // Whatever an aborted call built is garbage now; give the memory back before the next call.
    if (aborted) lua_gc(rt.L, LUA_GCCOLLECT);
}

std::string abort_text(const Runtime& rt) {
    if (!rt.abort_message.empty()) return rt.abort_message;
    // The position of the last count hook (or the handler's first line): the failing allocation
    // itself cannot be located once Lua has unwound.
    if (rt.abort == Runtime::Abort::memory && rt.position[0] != '\0')
        return fmt::format("{}: {} (position approximate: last budget check)", rt.position, limit_text(rt));
    return rt.position[0] != '\0' ? fmt::format("{}: {}", rt.position, limit_text(rt)) : limit_text(rt);
}

void push_sandbox_env(lua_State* L, uint64_t seed, int script_index, const std::string& log_component) {
    luaL_checkstack(L, 8, "sandbox environment");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kBaseTemplateKey);
    copy_table(L, -1);
    lua_remove(L, -2);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");

    lua_pushvalue(L, env);
    lua_getfield(L, env, "load");
    lua_pushcclosure(L, sandbox_load, 2);
    lua_setfield(L, env, "load");
    lua_pushlstring(L, log_component.data(), log_component.size());
    lua_pushcclosure(L, sandbox_print, 1);
    lua_setfield(L, env, "print");

    lua_rawgetp(L, LUA_REGISTRYINDEX, &kStringProxyKey);
    lua_setfield(L, env, "string");
    // Private copies: a script may change its own table/utf8/coroutine/os functions, never another's.
    const std::pair<const char*, const char*> libs[] = {{"table", &kTableLibKey},
                                                        {"utf8", &kUtf8LibKey},
                                                        {"coroutine", &kCoroutineLibKey},
                                                        {"os", &kOsLibKey}};
    for (const auto& [name, key] : libs) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, key);
        copy_table(L, -1);
        lua_remove(L, -2);
        if (std::strcmp(name, "os") == 0) set_forbidden_metatable(L, -1, "os.");
        lua_setfield(L, env, name);
    }

    // Each script its own generator, seeded from (run seed, script index).
    lua_pushcfunction(L, luaopen_math);
    lua_call(L, 0, 1);
    int math = lua_gettop(L);
    lua_getfield(L, math, "randomseed");
    lua_pushinteger(L, static_cast<lua_Integer>(seed));
    lua_pushinteger(L, script_index);
    lua_call(L, 2, 0);
    lua_getfield(L, math, "randomseed");
    lua_pushcclosure(L, sandbox_randomseed, 1);
    lua_setfield(L, math, "randomseed");
    lua_setfield(L, env, "math");

    set_forbidden_metatable(L, env, "");
}

void push_readonly_proxy(lua_State* L, int index, const std::string& name) {
    index = lua_absindex(L, index);
    luaL_checkstack(L, 6, "read-only proxy");
    lua_createtable(L, 0, 0);
    int proxy = lua_gettop(L);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, index);
    lua_setfield(L, -2, "__index");
    lua_pushlstring(L, name.data(), name.size());
    lua_pushcclosure(L, readonly_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, index);
    lua_pushcclosure(L, readonly_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushvalue(L, index);
    lua_pushcclosure(L, readonly_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only table");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, proxy);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kReadonlyKey);
    lua_pushvalue(L, proxy);
    lua_pushlstring(L, name.data(), name.size());
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

int traceback_handler(lua_State* L) {
    const char* msg = lua_tostring(L, 1);
    if (msg == nullptr) {
        // No user code (__tostring) after an abort: hooks may be disabled in here (see above).
        bool aborted = runtime(L).abort != Runtime::Abort::none;
        if (!aborted && luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

}  // namespace st::host::lua
