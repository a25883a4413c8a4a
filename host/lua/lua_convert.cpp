// JSON <-> Lua values for the hook engine: event tables (mutable), st.config/st.state (read-only
// proxies), and the way back for tables the handlers edited.
#include <fmt/core.h>

#include <algorithm>
#include <optional>
#include <string_view>

#include "lua/lua_sandbox.h"

namespace st::host::lua {

namespace {

constexpr int kMaxDepth = 32;

bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t n = 0;
        if (c >= 0x80) {
            if ((c >> 5) == 0x6)
                n = 1;
            else if ((c >> 4) == 0xE)
                n = 2;
            else if ((c >> 3) == 0x1E)
                n = 3;
            else
                return false;
        }
        if (i + n >= s.size()) return false;
        for (size_t k = 1; k <= n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
        i += n + 1;
    }
    return true;
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

std::optional<nlohmann::json> to_json_at(lua_State* L, int idx, const nlohmann::json* hint,
                                         std::vector<std::string>& dropped, const std::string& path,
                                         int depth) {
    using nlohmann::json;
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
    if (depth > kMaxDepth) {
        dropped.push_back(fmt::format("{} (nested deeper than {} levels)", path, kMaxDepth));
        return std::nullopt;
    }
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 6, "Lua to JSON");
    if (readonly_name(L, idx) != nullptr) {  // a read-only view (st.config, ...): convert what it shows
        lua_getmetatable(L, idx);
        lua_getfield(L, -1, "__index");
        auto r = to_json_at(L, -1, hint, dropped, path, depth + 1);
        lua_pop(L, 2);
        return r;
    }
    size_t count = 0;
    lua_Integer max_index = 0;
    bool positive_integer_keys = true;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        ++count;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1)
            max_index = std::max(max_index, lua_tointeger(L, -1));
        else
            positive_integer_keys = false;
    }
    bool hint_array = hint != nullptr && hint->is_array();
    // Sequences (holes allowed up to half) become arrays; an empty table keeps the kind it had.
    bool as_array =
        count == 0 ? hint_array : positive_integer_keys && static_cast<size_t>(max_index) <= 2 * count + 1;
    if (as_array) {
        json out = json::array();
        for (lua_Integer i = 1; i <= max_index; ++i) {
            lua_rawgeti(L, idx, i);
            const json* h = hint_array && static_cast<size_t>(i) <= hint->size() ? &(*hint)[i - 1] : nullptr;
            auto v = to_json_at(L, -1, h, dropped, fmt::format("{}[{}]", path, i), depth + 1);
            out.push_back(v ? std::move(*v) : json(nullptr));
            lua_pop(L, 1);
        }
        return out;
    }
    json out = json::object();
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
        const json* h =
            hint != nullptr && hint->is_object() && hint->contains(key) ? &hint->at(key) : nullptr;
        auto v = to_json_at(L, -1, h, dropped, path.empty() ? key : path + "." + key, depth + 1);
        if (v) out[key] = std::move(*v);
        lua_pop(L, 1);
    }
    return out;
}

}  // namespace

void push_readonly(lua_State* L, const nlohmann::json& value, const std::string& name) {
    push_value(L, value, &name, 0);
}

void push_json(lua_State* L, const nlohmann::json& value) {
    push_value(L, value, nullptr, 0);
}

nlohmann::json to_json(lua_State* L, int index, const nlohmann::json* hint,
                       std::vector<std::string>& dropped) {
    auto v = to_json_at(L, index, hint, dropped, "", 0);
    return v ? std::move(*v) : nlohmann::json(nullptr);
}

}  // namespace st::host::lua
