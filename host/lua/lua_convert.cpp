// JSON <-> Lua values for the hook engine: event tables (mutable), st.config/st.state (read-only
// proxies), and the way back for tables the handlers edited.
#include <fmt/core.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <utility>

#include "lua/lua_sandbox.h"
#include "st/error.h"

namespace st::host::lua {

namespace {

constexpr int kMaxDepth = kMaxJsonDepth;

// Length of the well-formed UTF-8 sequence at s[i] (Unicode 15, table 3-7), 0 if there is none.
size_t utf8_sequence(std::string_view s, size_t i) {
    auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
    unsigned c = at(0);
    if (c < 0x80) return 1;
    auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return at(k) >= lo && at(k) <= hi; };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;  // no overlong forms
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no surrogates
    if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;  // up to U+10FFFF
    return 0;
}

void push_scalar(lua_State* L, const nlohmann::json& v) {
    switch (v.type()) {
        case nlohmann::json::value_t::boolean:
            lua_pushboolean(L, v.get<bool>() ? 1 : 0);
            break;
        case nlohmann::json::value_t::number_integer:
            lua_pushinteger(L, v.get<int64_t>());
            break;
        case nlohmann::json::value_t::number_unsigned: {
            auto u = v.get<uint64_t>();
            if (u <= static_cast<uint64_t>(INT64_MAX))
                lua_pushinteger(L, static_cast<lua_Integer>(u));
            else
                lua_pushnumber(L, static_cast<lua_Number>(u));
            break;
        }
        case nlohmann::json::value_t::number_float:
            lua_pushnumber(L, v.get<double>());
            break;
        case nlohmann::json::value_t::string: {
            const auto& s = v.get_ref<const std::string&>();
            lua_pushlstring(L, s.data(), s.size());
            break;
        }
        default:
            lua_pushnil(L);
            break;  // null, binary
    }
}

void push_value(lua_State* L, const nlohmann::json& v, const std::string* name, int depth) {
    if (depth > kMaxDepth) luaL_error(L, "JSON nested deeper than %d levels", kMaxDepth);
    luaL_checkstack(L, 4, "JSON to Lua");
    if (v.is_object()) {
        lua_createtable(L, 0, static_cast<int>(v.size()));
        for (const auto& [key, item] : v.items()) {
            lua_pushlstring(L, key.data(), key.size());
            if (name != nullptr) {
                std::string child = *name + "." + key;
                push_value(L, item, &child, depth + 1);
            } else {
                push_value(L, item, nullptr, depth + 1);
            }
            lua_rawset(L, -3);
        }
    } else if (v.is_array()) {
        lua_createtable(L, static_cast<int>(v.size()), 0);
        for (size_t i = 0; i < v.size(); ++i) {
            if (name != nullptr) {
                std::string child = fmt::format("{}[{}]", *name, i + 1);
                push_value(L, v[i], &child, depth + 1);
            } else {
                push_value(L, v[i], nullptr, depth + 1);
            }
            lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
        }
    } else {
        push_scalar(L, v);
        return;
    }
    if (name != nullptr) {
        push_readonly_proxy(L, -1, *name);
        lua_remove(L, -2);
    }
}

// One conversion back to JSON: the tables on the path from the root (cycles) and the size so far.
struct ToJson {
    std::vector<std::string>& dropped;
    size_t max_bytes;
    size_t bytes = 0;
    std::vector<std::pair<const void*, std::string>> open;  // tables being converted, outermost first

    static std::string field(const std::string& path) {
        return path.empty() ? "the event table" : "field " + path;
    }

    void count(size_t n, const std::string& path) {
        bytes += n;
        if (bytes > max_bytes)
            fail("host.lua", "to JSON",
                 "{} makes the table larger than {} MiB (each value counts {} bytes plus its strings; "
                 "a table shared many times counts each time)",
                 field(path), max_bytes >> 20, kJsonValueBytes);
    }

    std::optional<nlohmann::json> value(lua_State* L, int idx, const nlohmann::json* hint,
                                        const std::string& path, int depth);
    std::optional<nlohmann::json> table(lua_State* L, int idx, const nlohmann::json* hint,
                                        const std::string& path, int depth);
};

std::optional<nlohmann::json> ToJson::value(lua_State* L, int idx, const nlohmann::json* hint,
                                            const std::string& path, int depth) {
    using nlohmann::json;
    count(kJsonValueBytes, path);
    switch (lua_type(L, idx)) {
        case LUA_TNIL:
            return json(nullptr);
        case LUA_TBOOLEAN:
            return json(lua_toboolean(L, idx) != 0);
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) return json(static_cast<int64_t>(lua_tointeger(L, idx)));
            return json(static_cast<double>(lua_tonumber(L, idx)));
        case LUA_TSTRING: {
            size_t len = 0;
            const char* s = lua_tolstring(L, idx, &len);
            count(len, path);
            if (!valid_utf8(std::string_view(s, len))) {
                dropped.push_back(path + " (string is not valid UTF-8)");
                return std::nullopt;
            }
            return json(std::string(s, len));
        }
        case LUA_TTABLE:
            break;
        default:
            dropped.push_back(fmt::format("{} ({})", path, luaL_typename(L, idx)));
            return std::nullopt;
    }
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 6, "Lua to JSON");
    if (readonly_name(L, idx) != nullptr) {  // a read-only view (st.config, ...): convert what it shows
        lua_getmetatable(L, idx);
        lua_getfield(L, -1, "__index");
        auto r = table(L, -1, hint, path, depth);
        lua_pop(L, 2);
        return r;
    }
    return table(L, idx, hint, path, depth);
}

std::optional<nlohmann::json> ToJson::table(lua_State* L, int idx, const nlohmann::json* hint,
                                            const std::string& path, int depth) {
    using nlohmann::json;
    idx = lua_absindex(L, idx);
    const void* self = lua_topointer(L, idx);
    for (const auto& [t, where] : open)
        if (t == self)
            fail("host.lua", "to JSON", "{} is {} again (a cycle; JSON has no references)", field(path),
                 where.empty() ? "the event table itself" : "the table of field " + where);
    if (depth > kMaxDepth)
        fail("host.lua", "to JSON", "{} is nested deeper than {} levels", field(path), kMaxDepth);
    open.emplace_back(self, path);

    size_t count_keys = 0;
    lua_Integer max_index = 0;
    bool positive_integer_keys = true;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        ++count_keys;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1)
            max_index = std::max(max_index, lua_tointeger(L, -1));
        else
            positive_integer_keys = false;
    }
    bool hint_array = hint != nullptr && hint->is_array();
    // Sequences (holes allowed up to half) become arrays; an empty table keeps the kind it had.
    bool as_array = count_keys == 0
                        ? hint_array
                        : positive_integer_keys && static_cast<size_t>(max_index) <= 2 * count_keys + 1;
    json out;
    if (as_array) {
        out = json::array();
        for (lua_Integer i = 1; i <= max_index; ++i) {
            lua_rawgeti(L, idx, i);
            const json* h = hint_array && static_cast<size_t>(i) <= hint->size() ? &(*hint)[i - 1] : nullptr;
            auto v = value(L, -1, h, fmt::format("{}[{}]", path, i), depth + 1);
            out.push_back(v ? std::move(*v) : json(nullptr));
            lua_pop(L, 1);
        }
    } else {
        out = json::object();
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            std::string key;
            int kt = lua_type(L, -2);
            // Never lua_tolstring a non-string key during a traversal: it would change the key in place.
            if (kt == LUA_TSTRING) {
                size_t len = 0;
                const char* k = lua_tolstring(L, -2, &len);
                key.assign(k, len);
            } else if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
                key = std::to_string(lua_tointeger(L, -2));
            } else if (kt == LUA_TNUMBER) {
                key = fmt::format("{}", lua_tonumber(L, -2));
            } else {
                dropped.push_back(fmt::format("{} (key of type {})", path, luaL_typename(L, -2)));
                lua_pop(L, 1);
                continue;
            }
            std::string child = path.empty() ? key : path + "." + key;
            count(key.size(), child);
            if (!valid_utf8(key)) {
                dropped.push_back(child + " (key is not valid UTF-8)");
                lua_pop(L, 1);
                continue;
            }
            const json* h =
                hint != nullptr && hint->is_object() && hint->contains(key) ? &hint->at(key) : nullptr;
            auto v = value(L, -1, h, child, depth + 1);
            if (v) out[key] = std::move(*v);
            lua_pop(L, 1);
        }
    }
    open.pop_back();
    return out;
}

}  // namespace

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        size_t n = utf8_sequence(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string printable(std::string_view s, size_t max_bytes) {
    std::string out;
    size_t i = 0;
    while (i < s.size() && out.size() < max_bytes) {
        size_t n = utf8_sequence(s, i);
        if (n == 0) {
            out += fmt::format("\\x{:02x}", static_cast<unsigned char>(s[i]));
            n = 1;
        } else {
            out.append(s.substr(i, n));
        }
        i += n;
    }
    if (i < s.size()) out += fmt::format("... ({} more bytes)", s.size() - i);
    return out;
}

void push_readonly(lua_State* L, const nlohmann::json& value, const std::string& name) {
    push_value(L, value, &name, 0);
}

void push_json(lua_State* L, const nlohmann::json& value) {
    push_value(L, value, nullptr, 0);
}

nlohmann::json to_json(lua_State* L, int index, const nlohmann::json* hint, std::vector<std::string>& dropped,
                       size_t max_bytes) {
    ToJson conversion{dropped, max_bytes};
    auto v = conversion.value(L, index, hint, "", 0);
    return v ? std::move(*v) : nlohmann::json(nullptr);
}

}  // namespace st::host::lua
