// The table library for st hooks with its loops charged to the instruction budget. The count hook
// never fires inside a C function, so upstream's table.move(a, 1, math.maxinteger - 1, 1, b) or a
// table.insert under a huge __len ran for ever as one instruction; these versions charge() the
// number of elements they will touch before touching them (sort: each comparison and swap).
//
// Follows Lua 5.4.4 ltablib.c (https://github.com/lua/lua, tag v5.4.4, commit 5d708c3): tinsert,
// tremove, tmove, tconcat, tunpack, sort, with upstream's behaviour and messages; table.pack stays
// upstream's. Lua is Copyright (C) 1994-2022 Lua.org, PUC-Rio, under the MIT license (the notice at
// the end of lua.h in that repository).
#include <climits>
#include <cstring>

#include "lua/lua_sandbox.h"

namespace st::host::lua {
namespace {

// Operations a value must support to stand in for a table (ltablib.c TAB_*).
constexpr int kTabR = 1;
constexpr int kTabW = 2;
constexpr int kTabL = 4;
constexpr int kTabRW = kTabR | kTabW;

bool check_field(lua_State* L, const char* key, int n) {
    lua_pushstring(L, key);
    return lua_rawget(L, -n) != LUA_TNIL;
}

// ltablib.c checktab: a table, or a value whose metatable has the metamethods `what` needs.
void check_tab(lua_State* L, int arg, int what) {
    if (lua_type(L, arg) == LUA_TTABLE) return;
    int n = 1;
    if (lua_getmetatable(L, arg) && (!(what & kTabR) || check_field(L, "__index", ++n)) &&
        (!(what & kTabW) || check_field(L, "__newindex", ++n)) &&
        (!(what & kTabL) || check_field(L, "__len", ++n)))
        lua_pop(L, n);
    else
        luaL_checktype(L, arg, LUA_TTABLE);
}

lua_Integer aux_getn(lua_State* L, int n, int what) {
    check_tab(L, n, what | kTabL);
    return luaL_len(L, n);
}

// Elements in [from, to] as a count that cannot overflow (0 when empty).
int64_t span(lua_Integer from, lua_Integer to) {
    if (to < from) return 0;
    lua_Unsigned n = static_cast<lua_Unsigned>(to) - static_cast<lua_Unsigned>(from);
    return n >= static_cast<lua_Unsigned>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(n) + 1;
}

int tab_insert(lua_State* L) {
    lua_Integer e = aux_getn(L, 1, kTabRW);
    e = luaL_intop(+, e, 1);  // first empty element
    lua_Integer pos = e;
    switch (lua_gettop(L)) {
        case 2:
            break;
        case 3: {
            pos = luaL_checkinteger(L, 2);
            luaL_argcheck(L, static_cast<lua_Unsigned>(pos) - 1u < static_cast<lua_Unsigned>(e), 2,
                          "position out of bounds");
            if (e > pos) charge(L, span(pos, e - 1));
            for (lua_Integer i = e; i > pos; i--) {  // move up elements
                lua_geti(L, 1, i - 1);
                lua_seti(L, 1, i);
            }
            break;
        }
        default:
            return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

int tab_remove(lua_State* L) {
    lua_Integer size = aux_getn(L, 1, kTabRW);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size)
        luaL_argcheck(L, static_cast<lua_Unsigned>(pos) - 1u <= static_cast<lua_Unsigned>(size), 1,
                      "position out of bounds");
    charge(L, span(pos, size));
    lua_geti(L, 1, pos);
    for (; pos < size; pos++) {
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

int tab_move(lua_State* L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1;  // destination table
    check_tab(L, 1, kTabR);
    check_tab(L, tt, kTabW);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        charge(L, n);
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer i = 0; i < n; i++) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else {
            for (lua_Integer i = n - 1; i >= 0; i--) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

void add_field(lua_State* L, luaL_Buffer* b, lua_Integer i) {
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'", luaL_typename(L, -1),
                   static_cast<LUAI_UACINT>(i));
    luaL_addvalue(b);
}

int tab_concat(lua_State* L) {
    luaL_Buffer b;
    lua_Integer last = aux_getn(L, 1, kTabR);
    size_t lsep = 0;
    const char* sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    charge(L, span(i, last));  // the bytes are charged as they are allocated
    luaL_buffinit(L, &b);
    for (; i < last; i++) {
        add_field(L, &b, i);
        luaL_addlstring(&b, sep, lsep);
    }
    if (i == last) add_field(L, &b, i);
    luaL_pushresult(&b);
    return 1;
}

int tab_unpack(lua_State* L) {
    lua_Integer i = luaL_optinteger(L, 2, 1);
    lua_Integer e = luaL_opt(L, luaL_checkinteger, 3, luaL_len(L, 1));
    if (i > e) return 0;
    lua_Unsigned n = static_cast<lua_Unsigned>(e) - static_cast<lua_Unsigned>(i);  // elements minus 1
    if (n >= static_cast<unsigned int>(INT_MAX) || !lua_checkstack(L, static_cast<int>(++n)))
        return luaL_error(L, "too many results to unpack");
    charge(L, static_cast<int64_t>(n));
    for (; i < e; i++) lua_geti(L, 1, i);
    lua_geti(L, 1, e);
    return static_cast<int>(n);
}

// ---- sort (ltablib.c: quicksort after Sedgewick, "Algorithms in MODULA-3") ----

using IdxT = unsigned int;
constexpr IdxT kRanLimit = 100u;  // arrays larger than this may use randomized pivots

// Upstream mixes clock() and time() into the pivot choice; a fixed mix of the bounds keeps runs
// reproducible (randomness comes from the run's seed only), and the budget bounds an adversarial
// input that still drives quicksort quadratic.
unsigned int randomize_pivot(IdxT lo, IdxT up) {
    uint64_t x = (static_cast<uint64_t>(lo) << 32 | up) * 0x9E3779B97F4A7C15ull;
    return static_cast<unsigned int>(x >> 32) | 1u;
}

void set2(lua_State* L, IdxT i, IdxT j) {
    charge(L, 1);
    lua_seti(L, 1, i);
    lua_seti(L, 1, j);
}

bool sort_comp(lua_State* L, int a, int b) {
    charge(L, 1);
    if (lua_isnil(L, 2)) return lua_compare(L, a, b, LUA_OPLT);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, a - 1);
    lua_pushvalue(L, b - 2);
    lua_call(L, 2, 1);
    bool res = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return res;
}

IdxT partition(lua_State* L, IdxT lo, IdxT up) {
    IdxT i = lo;
    IdxT j = up - 1;
    for (;;) {
        while ((void)lua_geti(L, 1, ++i), sort_comp(L, -1, -2)) {
            if (i == up - 1) luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        while ((void)lua_geti(L, 1, --j), sort_comp(L, -3, -1)) {
            if (j < i) luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        if (j < i) {
            lua_pop(L, 1);
            set2(L, up - 1, i);
            return i;
        }
        set2(L, i, j);
    }
}

IdxT choose_pivot(IdxT lo, IdxT up, unsigned int rnd) {
    IdxT r4 = (up - lo) / 4;
    return rnd % (r4 * 2) + (lo + r4);
}

void auxsort(lua_State* L, IdxT lo, IdxT up, unsigned int rnd) {
    while (lo < up) {
        lua_geti(L, 1, lo);
        lua_geti(L, 1, up);
        if (sort_comp(L, -1, -2))
            set2(L, lo, up);
        else
            lua_pop(L, 2);
        if (up - lo == 1) return;
        IdxT p = up - lo < kRanLimit || rnd == 0 ? (lo + up) / 2 : choose_pivot(lo, up, rnd);
        lua_geti(L, 1, p);
        lua_geti(L, 1, lo);
        if (sort_comp(L, -2, -1)) {
            set2(L, p, lo);
        } else {
            lua_pop(L, 1);
            lua_geti(L, 1, up);
            if (sort_comp(L, -1, -2))
                set2(L, p, up);
            else
                lua_pop(L, 2);
        }
        if (up - lo == 2) return;
        lua_geti(L, 1, p);
        lua_pushvalue(L, -1);
        lua_geti(L, 1, up - 1);
        set2(L, p, up - 1);
        p = partition(L, lo, up);
        IdxT n;
        if (p - lo < up - p) {
            auxsort(L, lo, p - 1, rnd);
            n = p - lo;
            lo = p + 1;
        } else {
            auxsort(L, p + 1, up, rnd);
            n = up - p;
            up = p - 1;
        }
        if ((up - lo) / 128 > n) rnd = randomize_pivot(lo, up);
    }
}

int tab_sort(lua_State* L) {
    lua_Integer n = aux_getn(L, 1, kTabRW);
    if (n > 1) {
        luaL_argcheck(L, n < INT_MAX, 1, "array too big");
        if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
        lua_settop(L, 2);
        auxsort(L, 1, static_cast<IdxT>(n), 0);
    }
    return 0;
}

}  // namespace

void bound_table_library(lua_State* L, int index) {
    index = lua_absindex(L, index);
    static const luaL_Reg kFunctions[] = {{"insert", tab_insert}, {"remove", tab_remove}, {"move", tab_move},
                                          {"concat", tab_concat}, {"unpack", tab_unpack}, {"sort", tab_sort}};
    for (const auto& [name, fn] : kFunctions) {
        lua_pushcfunction(L, fn);
        lua_setfield(L, index, name);
    }
}

}  // namespace st::host::lua
