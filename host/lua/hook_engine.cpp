// HookEngine: script loading (register phase), the `st` table, event dispatch (run phase) and the
// action queue. The sandbox itself lives in lua_sandbox.cpp.
#include "lua/hook_engine.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "lua/lua_sandbox.h"
#include "st/error.h"
#include "st/log.h"

namespace st::host::lua {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* kComponent = "host.lua";
constexpr int kApiLevel = 1;
// Error texts come from scripts: at most this much of one is logged or kept, bytes that are not
// UTF-8 shown escaped.
constexpr size_t kMaxMessageBytes = 8192;

std::string first_line(const std::string& text) {
    return text.substr(0, text.find('\n'));
}

// A memory error reaches the host as the bare "not enough memory" (no message handler runs for it),
// and a failing message handler as "error in error handling": name the limit that was hit instead.
std::string describe_failure(Runtime& rt, int status, std::string msg) {
    if (status == LUA_ERRMEM && rt.abort == Runtime::Abort::none) rt.abort = Runtime::Abort::memory;
    if (rt.abort != Runtime::Abort::none && status == LUA_ERRMEM) return abort_text(rt);
    if (rt.abort != Runtime::Abort::none && status == LUA_ERRERR) return abort_text(rt) + " (" + msg + ")";
    return msg;
}
}  // namespace

class HookEngine::Impl {
  public:
    struct Script {
        fs::path path;
        std::string name;       ///< file name, the chunk name in messages
        std::string component;  ///< "lua:<file name>"
        int st_hidden_ref = LUA_NOREF;
    };
    struct Handler {
        int64_t id = 0;
        size_t script = 0;
        std::string event;
        int fn_ref = LUA_NOREF;
        int line = 0;
        bool active = true;
    };

    explicit Impl(const HookOptions& options);
    ~Impl();

    lua_State* L() const { return state_.get(); }

    template <typename F>
    void protect(const char* what, F&& fn);
    void load_script(size_t index);
    json fire(const std::string& event, const json& table);
    void set_state(const json& state);
    void handler_failed(Handler& handler, const std::string& message);
    bool read_back(const std::string& event, int table_ref, const json& hint, json& out,
                   std::vector<std::string>& dropped, std::string& error);
    void engine_failed(const std::string& message);
    void prune();

    HookOptions options;
    Runtime rt;  // declared before state_: the allocator uses it until lua_close
    struct StateCloser {
        void operator()(lua_State* L) const { lua_close(L); }
    };
    std::unique_ptr<lua_State, StateCloser> state_;
    std::vector<Script> scripts;
    std::vector<Handler> handlers;
    int64_t next_id = 1;
    bool registering = false;
    bool firing = false;
    HookActions actions;
    std::optional<std::string> last_error;
    int config_ref = LUA_NOREF;
    int state_ref = LUA_NOREF;
};

namespace {

HookEngine::Impl& impl_of(lua_State* L) {
    return *static_cast<HookEngine::Impl*>(lua_touserdata(L, lua_upvalueindex(1)));
}
size_t script_of(lua_State* L) {
    return static_cast<size_t>(lua_tointeger(L, lua_upvalueindex(2)));
}

std::string known_events() {
    std::string out;
    for (const auto& e : HookEngine::event_names()) out += (out.empty() ? "" : ", ") + e;
    return out;
}

int st_on(lua_State* L) {
    auto& impl = impl_of(L);
    const char* event = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!impl.registering)
        return luaL_error(L,
                          "st.on: handlers are registered while the script loads (register phase), not "
                          "from a handler");
    const auto& names = HookEngine::event_names();
    if (std::find(names.begin(), names.end(), event) == names.end())
        return luaL_error(L, "st.on: unknown event '%s'; known events: %s", event, known_events().c_str());
    lua_Debug ar;
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">S", &ar);
    lua_pushvalue(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return guarded(L, [&] {
        HookEngine::Impl::Handler h;
        h.id = impl.next_id++;
        h.script = script_of(L);
        h.event = event;
        h.fn_ref = ref;
        h.line = ar.linedefined;
        impl.handlers.push_back(std::move(h));
        lua_pushinteger(L, impl.handlers.back().id);
        return 1;
    });
}

int st_off(lua_State* L) {
    auto& impl = impl_of(L);
    lua_Integer id = luaL_checkinteger(L, 1);
    size_t script = script_of(L);
    for (auto& h : impl.handlers) {
        if (h.id == id && h.active && h.script == script) {
            h.active = false;
            if (!impl.firing) impl.prune();
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

int st_stop(lua_State* L) {
    auto& impl = impl_of(L);
    size_t len = 0;
    const char* reason = luaL_optlstring(L, 1, nullptr, &len);
    return guarded(L, [&] {
        const auto& script = impl.scripts[script_of(L)];
        std::string text =
            reason != nullptr
                ? fmt::format("{} (st.stop from {})", printable({reason, len}, kMaxMessageBytes), script.name)
                : fmt::format("st.stop() from {}", script.name);
        log::info(script.component, "requested stop: {}", text);
        if (!impl.actions.stop) impl.actions.stop_reason = text;
        impl.actions.stop = true;
        return 0;
    });
}

int st_save_checkpoint(lua_State* L) {
    auto& impl = impl_of(L);
    impl.actions.save_checkpoint = true;
    return guarded(L, [&] {
        log::debug(impl.scripts[script_of(L)].component, "requested a checkpoint");
        return 0;
    });
}

int st_validate_now(lua_State* L) {
    auto& impl = impl_of(L);
    impl.actions.validate_now = true;
    return guarded(L, [&] {
        log::debug(impl.scripts[script_of(L)].component, "requested a validation");
        return 0;
    });
}

int st_set_lr_scale(lua_State* L) {
    auto& impl = impl_of(L);
    lua_Number x = luaL_checknumber(L, 1);
    if (!std::isfinite(x) || x <= 0)
        return luaL_error(L, "st.set_lr_scale: scale must be finite and > 0, got %f", static_cast<double>(x));
    impl.actions.lr_scale = static_cast<double>(x);
    return guarded(L, [&] {
        log::debug(impl.scripts[script_of(L)].component, "requested lr scale {}", x);
        return 0;
    });
}

int st_log(lua_State* L) {
    auto& impl = impl_of(L);
    const char* level_name = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    size_t len = 0;
    const char* msg = luaL_tolstring(L, 2, &len);
    return guarded(L, [&] {
        log::Level level = log::parse_level(level_name);
        if (level == log::Level::off)
            fail(kComponent, "st.log", "st.log: level 'off' is not a message level");
        if (log::enabled(level))
            log::write(level, impl.scripts[script_of(L)].component, std::string_view(msg, len));
        return 0;
    });
}

int st_metric(lua_State* L) {
    auto& impl = impl_of(L);
    size_t len = 0;
    const char* name = luaL_checklstring(L, 1, &len);
    lua_Number value = luaL_checknumber(L, 2);
    if (len == 0) return luaL_error(L, "st.metric: the name must not be empty");
    // The name becomes a key of metrics.jsonl, whose writer refuses what is not UTF-8.
    if (len > kMaxMetricNameBytes || !valid_utf8({name, len}))
        return luaL_error(L,
                          "st.metric: the name must be UTF-8 text of at most %d bytes, got '%s' (%d bytes)",
                          static_cast<int>(kMaxMetricNameBytes), printable({name, len}, 64).c_str(),
                          static_cast<int>(std::min<size_t>(len, INT32_MAX)));
    if (!std::isfinite(value))
        return luaL_error(L, "st.metric: value of '%s' must be finite, got %f", name,
                          static_cast<double>(value));
    if (impl.actions.metrics.size() >= kMaxMetricsPerEvent)
        return luaL_error(L, "st.metric: more than %d metrics in one event",
                          static_cast<int>(kMaxMetricsPerEvent));
    return guarded(L, [&] {
        impl.actions.metrics.emplace_back(std::string(name, len), static_cast<double>(value));
        return 0;
    });
}

// Builds the `st` table of one script: a read-only proxy over a hidden table that set_state updates.
void push_st_table(lua_State* L, HookEngine::Impl& impl, size_t index) {
    static const std::pair<const char*, lua_CFunction> kFunctions[] = {
        {"on", st_on},
        {"off", st_off},
        {"stop", st_stop},
        {"save_checkpoint", st_save_checkpoint},
        {"validate_now", st_validate_now},
        {"set_lr_scale", st_set_lr_scale},
        {"log", st_log},
        {"metric", st_metric},
    };
    lua_newtable(L);
    int hidden = lua_gettop(L);
    for (const auto& [name, fn] : kFunctions) {
        lua_pushlightuserdata(L, &impl);
        lua_pushinteger(L, static_cast<lua_Integer>(index));
        lua_pushcclosure(L, fn, 2);
        lua_setfield(L, hidden, name);
    }
    lua_pushinteger(L, kApiLevel);
    lua_setfield(L, hidden, "api_level");
    lua_rawgeti(L, LUA_REGISTRYINDEX, impl.config_ref);
    lua_setfield(L, hidden, "config");
    lua_rawgeti(L, LUA_REGISTRYINDEX, impl.state_ref);
    lua_setfield(L, hidden, "state");
    lua_pushvalue(L, hidden);
    impl.scripts[index].st_hidden_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    push_readonly_proxy(L, hidden, "st");
    lua_remove(L, hidden);
}

}  // namespace

template <typename F>
void HookEngine::Impl::protect(const char* what, F&& fn) {
    lua_State* L = this->L();
    lua_pushcfunction(L, [](lua_State* L) -> int {
        auto* f = static_cast<std::remove_reference_t<F>*>(lua_touserdata(L, 1));
        lua_settop(L, 0);
        return guarded(L, [&] {
            (*f)(L);
            return 0;
        });
    });
    lua_pushlightuserdata(L, &fn);
    int status = lua_pcall(L, 1, 0, 0);
    if (status != LUA_OK) {
        const char* msg = lua_tostring(L, -1);
        std::string text = msg != nullptr ? msg : "(no message)";
        lua_pop(L, 1);
        if (status == LUA_ERRMEM)
            text = fmt::format("memory limit of {:.1f} MiB reached (lua_memory_limit_mb)",
                               static_cast<double>(rt.memory_limit) / (1 << 20));
        fail(kComponent, what, "{}", text);
    }
}

HookEngine::Impl::Impl(const HookOptions& opts) : options(opts) {
    if (options.instruction_budget <= 0)
        fail(kComponent, "init", "lua_instruction_budget must be > 0, got {}", options.instruction_budget);
    rt.memory_limit = options.memory_limit_bytes;
    rt.instruction_budget = options.instruction_budget;
    rt.stop_requested = options.stop_requested;
    state_.reset(open_state(rt));
    if (!state_)
        fail(kComponent, "init", "cannot create a Lua state within the memory limit of {} bytes",
             options.memory_limit_bytes);
    protect("init", [&](lua_State* L) {
        push_readonly(L, options.config.is_null() ? json::object() : options.config, "st.config");
        config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        push_readonly(L, json::object(), "st.state");
        state_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    });
    for (const auto& path : options.scripts) {
        Script s;
        s.path = path;
        s.name = path.filename().string();
        s.component = "lua:" + s.name;
        scripts.push_back(std::move(s));
    }
    for (size_t i = 0; i < scripts.size(); ++i) load_script(i);
}

HookEngine::Impl::~Impl() = default;

void HookEngine::Impl::load_script(size_t index) {
    Script& script = scripts[index];
    std::ifstream in(script.path, std::ios::binary);
    if (!in) fail(kComponent, "load", "cannot read Lua hook script '{}'", script.path.string());
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string source = buffer.str();

    lua_State* L = this->L();
    int env_ref = LUA_NOREF;
    protect("load", [&](lua_State* L) {
        push_sandbox_env(L, options.seed, static_cast<int>(index) + 1, script.component);
        push_st_table(L, *this, index);
        lua_setfield(L, -2, "st");
        env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    });
    lua_pushcfunction(L, traceback_handler);
    int msgh = lua_gettop(L);
    std::string chunkname = "@" + script.name;
    // Text chunks only: a precompiled file is refused with "attempt to load a binary chunk".
    int status = luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t");
    if (status != LUA_OK) {
        std::string msg = lua_tostring(L, -1) != nullptr ? lua_tostring(L, -1) : "(no message)";
        lua_settop(L, msgh - 1);
        luaL_unref(L, LUA_REGISTRYINDEX, env_ref);
        fail(kComponent, "load", "Lua hook script '{}' does not compile: {}", script.path.string(), msg);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, env_ref);
    lua_setupvalue(L, -2, 1);  // the chunk's _ENV
    luaL_unref(L, LUA_REGISTRYINDEX, env_ref);

    size_t before = handlers.size();
    registering = true;
    begin_call(rt, script.name + ":1");
    status = lua_pcall(L, 0, 0, msgh);
    end_call(rt);
    registering = false;
    if (status != LUA_OK) {
        std::string msg = lua_tostring(L, -1) != nullptr ? lua_tostring(L, -1) : "(no message)";
        msg = describe_failure(rt, status, std::move(msg));
        lua_settop(L, msgh - 1);
        fail(kComponent, "load", "Lua hook script '{}' failed while loading (register phase): {}",
             script.path.string(), msg);
    }
    lua_settop(L, msgh - 1);
    std::string events;
    for (size_t i = before; i < handlers.size(); ++i)
        events += (events.empty() ? "" : ", ") + handlers[i].event;
    log::info(script.component, "loaded {}: {} handler(s){}{}", script.path.string(),
              handlers.size() - before, events.empty() ? "" : " on ", events);
}

void HookEngine::Impl::prune() {
    lua_State* L = this->L();
    for (const auto& h : handlers)
        if (!h.active) luaL_unref(L, LUA_REGISTRYINDEX, h.fn_ref);  // never allocates
    handlers.erase(
        std::remove_if(handlers.begin(), handlers.end(), [](const Handler& h) { return !h.active; }),
        handlers.end());
}

void HookEngine::Impl::handler_failed(Handler& handler, const std::string& message) {
    const Script& script = scripts[handler.script];
    std::string text = printable(message, kMaxMessageBytes);
    handler.active = false;
    log::error(script.component, "{} handler #{} (defined at {}:{}) failed: {}", handler.event, handler.id,
               script.name, handler.line, text);
    if (options.on_error == HookErrorPolicy::stop) {
        log::error(script.component, "stopping the run (lua_hook_error=stop); the handler is removed");
        if (!actions.error)
            actions.stop_reason =
                fmt::format("Lua hook error: {} ({} handler #{} of {}, defined at line {})", first_line(text),
                            handler.event, handler.id, script.name, handler.line);
        actions.stop = true;
        actions.error = true;
    } else {
        log::warn(script.component, "{} handler #{} removed (lua_hook_error=disable); training goes on",
                  handler.event, handler.id);
    }
    last_error = std::move(text);
}

void HookEngine::Impl::engine_failed(const std::string& message) {
    std::string text = printable(message, kMaxMessageBytes);
    log::error(kComponent, "{}", text);
    if (!actions.error) actions.stop_reason = fmt::format("Lua hook engine error: {}", first_line(text));
    actions.stop = true;
    actions.error = true;
    last_error = std::move(text);
}

// Converts the event table back to JSON into `out`. False with `error` set when the handlers left
// it without a JSON form (cycle, depth, size); throws st::Error when the conversion itself failed.
bool HookEngine::Impl::read_back(const std::string& event, int table_ref, const json& hint, json& out,
                                 std::vector<std::string>& dropped, std::string& error) {
    dropped.clear();
    protect("fire", [&](lua_State* L) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, table_ref);
        try {
            out = to_json(L, -1, &hint, dropped, kMaxEventTableBytes);
        } catch (const Error& e) {
            error = fmt::format("it left the {} table without a JSON form: {}", event, e.message());
        }
    });
    return error.empty();
}

json HookEngine::Impl::fire(const std::string& event, const json& table) {
    const auto& names = event_names();
    if (std::find(names.begin(), names.end(), event) == names.end())
        fail(kComponent, "fire", "unknown hook event '{}'; known events: {}", event, known_events());
    bool any = std::any_of(handlers.begin(), handlers.end(),
                           [&](const Handler& h) { return h.active && h.event == event; });
    if (!any) return table;

    lua_State* L = this->L();
    int table_ref = LUA_NOREF;
    auto push_table = [&](const json& value) {
        try {
            protect("fire", [&](lua_State* L) {
                push_json(L, value.is_null() ? json::object() : value);
                table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            });
        } catch (const Error& e) {
            engine_failed(fmt::format("could not build the {} table: {}", event, e.message()));
            return false;
        }
        return true;
    };
    if (!push_table(table)) return table;

    // The table as of the last handler that left it readable, and what that conversion dropped.
    json result = table;
    std::vector<std::string> dropped;
    firing = true;
    // st.on is refused while firing, so `handlers` does not grow; st.off only clears `active`.
    for (size_t i = 0; i < handlers.size(); ++i) {
        Handler& handler = handlers[i];
        if (!handler.active || handler.event != event) continue;
        const Script& script = scripts[handler.script];
        lua_pushcfunction(L, traceback_handler);
        int msgh = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, handler.fn_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, table_ref);
        begin_call(rt, fmt::format("{}:{}", script.name, handler.line));
        int status = lua_pcall(L, 1, 1, msgh);
        bool failed = false;
        if (status == LUA_OK) {
            end_call(rt);
            if (lua_isboolean(L, -1) && lua_toboolean(L, -1)) {
                handler.active = false;
                log::debug(script.component, "{} handler #{} unregistered itself", event, handler.id);
            }
        } else if (rt.abort == Runtime::Abort::interrupt) {
            // The run is stopping on the host's request: not the script's fault, and the handler stays.
            std::string text = abort_text(rt);
            end_call(rt);
            log::warn(script.component, "{} handler #{} (defined at {}:{}) {}", event, handler.id,
                      script.name, handler.line, text);
        } else {
            std::string msg = lua_tostring(L, -1) != nullptr ? lua_tostring(L, -1) : "(no message)";
            msg = describe_failure(rt, status, std::move(msg));
            end_call(rt);
            handler_failed(handler, msg);
            failed = true;
        }
        lua_settop(L, msgh - 1);

        // Read the table back after each handler, so the one that makes it unreadable (a cycle,
        // too deep, too large) is the one that fails, and the next handlers get the last good table.
        std::string error;
        try {
            json next;
            std::vector<std::string> next_dropped;
            if (read_back(event, table_ref, table, next, next_dropped, error)) {
                result = std::move(next);
                dropped = std::move(next_dropped);
                continue;
            }
        } catch (const Error& e) {
            error = fmt::format("the {} table could not be read back: {}", event, e.message());
        }
        if (failed)
            log::error(script.component, "{} handler #{}: {}", event, handler.id,
                       printable(error, kMaxMessageBytes));
        else
            handler_failed(handler, error);
        luaL_unref(L, LUA_REGISTRYINDEX, table_ref);
        table_ref = LUA_NOREF;
        if (!push_table(result)) break;
    }
    firing = false;

    for (const auto& d : dropped)
        log::warn(kComponent, "{}: field {} has no JSON form and is not returned to the host", event,
                  printable(d, kMaxMessageBytes));
    if (table_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, table_ref);
    prune();
    return result;
}

void HookEngine::Impl::set_state(const json& state) {
    try {
        protect("state", [&](lua_State* L) {
            push_readonly(L, state.is_null() ? json::object() : state, "st.state");
            lua_rawseti(L, LUA_REGISTRYINDEX, state_ref);
            for (const auto& s : scripts) {
                if (s.st_hidden_ref == LUA_NOREF) continue;
                lua_rawgeti(L, LUA_REGISTRYINDEX, s.st_hidden_ref);
                lua_rawgeti(L, LUA_REGISTRYINDEX, state_ref);
                lua_setfield(L, -2, "state");
                lua_pop(L, 1);
            }
        });
    } catch (const Error& e) {
        engine_failed(fmt::format("could not update st.state: {}", e.message()));
    }
}

HookEngine::HookEngine(const HookOptions& options) : impl_(std::make_unique<Impl>(options)) {}
HookEngine::~HookEngine() = default;

int HookEngine::api_level() {
    return kApiLevel;
}

const std::vector<std::string>& HookEngine::event_names() {
    static const std::vector<std::string> kEvents = {
        "on_train_start",    "on_epoch_start", "on_step_start", "on_step_end",  "on_validation_start",
        "on_validation_end", "on_evaluation",  "on_checkpoint", "on_train_end", "on_error"};
    return kEvents;
}

bool HookEngine::has_handlers(const std::string& event) const {
    return std::any_of(impl_->handlers.begin(), impl_->handlers.end(),
                       [&](const Impl::Handler& h) { return h.active && h.event == event; });
}

json HookEngine::fire(const std::string& event, const json& table) {
    return impl_->fire(event, table);
}

void HookEngine::set_state(const json& state) {
    impl_->set_state(state);
}

HookActions HookEngine::take_actions() {
    return std::exchange(impl_->actions, HookActions{});
}

std::optional<std::string> HookEngine::last_error() const {
    return impl_->last_error;
}

size_t HookEngine::memory_used() const {
    return impl_->rt.memory_used;
}

}  // namespace st::host::lua
