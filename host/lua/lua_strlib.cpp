// The string and utf8 library functions of st hooks whose work the count hook cannot see, charged
// to the instruction budget (charge()). A pathological pattern (`("a"):rep(5000):find(".-.-.-.-b")`)
// or string.rep("", math.maxinteger) ran for ever inside one C call, out of reach of the budget and
// of SIGTERM.
//
// Pattern matching follows Lua 5.4.4 lstrlib.c (https://github.com/lua/lua, tag v5.4.4, commit
// 5d708c3), section PATTERN MATCHING: the same matcher, messages and results, with one charge per
// matching step and per kBytesPerUnit bytes compared or scanned. Lua is Copyright (C) 1994-2022
// Lua.org, PUC-Rio, under the MIT license (the notice at the end of lua.h in that repository).
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstring>

#include "lua/lua_sandbox.h"

namespace st::host::lua {
namespace {

constexpr int kMaxCaptures = 32;  // LUA_MAXCAPTURES
constexpr ptrdiff_t kCapUnfinished = -1;
constexpr ptrdiff_t kCapPosition = -2;
constexpr int kMaxCCalls = 200;  // recursion depth of match (C stack)
constexpr char kEsc = '%';
constexpr const char* kSpecials = "^$*+?.([%-";

unsigned char uchar(char c) {
    return static_cast<unsigned char>(c);
}

int64_t bytes_units(size_t n) {
    return static_cast<int64_t>(n / kBytesPerUnit);
}

struct MatchState {
    const char* src_init;  // start of the subject
    const char* src_end;   // end ('\0') of the subject
    const char* p_end;     // end ('\0') of the pattern
    lua_State* L;
    int matchdepth;
    unsigned char level;  // captures, finished or not
    struct {
        const char* init;
        ptrdiff_t len;
    } capture[kMaxCaptures];
};

const char* match(MatchState* ms, const char* s, const char* p);

// memcmp(a, b, n) == 0, charging the bytes compared.
bool equal_charged(lua_State* L, const char* a, const char* b, size_t n) {
    constexpr size_t kChunk = 256;
    for (size_t done = 0; done < n; done += kChunk) {
        size_t k = std::min(kChunk, n - done);
        if (std::memcmp(a + done, b + done, k) != 0) {
            charge(L, bytes_units(done) + 1);
            return false;
        }
    }
    charge(L, bytes_units(n) + 1);
    return true;
}

int check_capture(MatchState* ms, int l) {
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == kCapUnfinished)
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

int capture_to_close(MatchState* ms) {
    int level = ms->level;
    for (level--; level >= 0; level--)
        if (ms->capture[level].len == kCapUnfinished) return level;
    return luaL_error(ms->L, "invalid pattern capture");
}

const char* classend(MatchState* ms, const char* p) {
    switch (*p++) {
        case kEsc: {
            if (p == ms->p_end) luaL_error(ms->L, "malformed pattern (ends with '%%')");
            return p + 1;
        }
        case '[': {
            const char* start = p;
            if (*p == '^') p++;
            do {  // look for a ']'
                if (p == ms->p_end) luaL_error(ms->L, "malformed pattern (missing ']')");
                if (*(p++) == kEsc && p < ms->p_end) p++;  // skip escapes (e.g. '%]')
            } while (*p != ']');
            charge(ms->L, bytes_units(static_cast<size_t>(p - start)));
            return p + 1;
        }
        default:
            return p;
    }
}

bool match_class(int c, int cl) {
    int res;
    switch (std::tolower(cl)) {
        case 'a':
            res = std::isalpha(c);
            break;
        case 'c':
            res = std::iscntrl(c);
            break;
        case 'd':
            res = std::isdigit(c);
            break;
        case 'g':
            res = std::isgraph(c);
            break;
        case 'l':
            res = std::islower(c);
            break;
        case 'p':
            res = std::ispunct(c);
            break;
        case 's':
            res = std::isspace(c);
            break;
        case 'u':
            res = std::isupper(c);
            break;
        case 'w':
            res = std::isalnum(c);
            break;
        case 'x':
            res = std::isxdigit(c);
            break;
        case 'z':
            res = (c == 0);
            break;  // deprecated option
        default:
            return cl == c;
    }
    return std::islower(cl) ? res != 0 : res == 0;
}

bool matchbracketclass(int c, const char* p, const char* ec) {
    bool sig = true;
    if (*(p + 1) == '^') {
        sig = false;
        p++;
    }
    while (++p < ec) {
        if (*p == kEsc) {
            p++;
            if (match_class(c, uchar(*p))) return sig;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p)) return sig;
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

bool singlematch(MatchState* ms, const char* s, const char* p, const char* ep) {
    if (s >= ms->src_end) return false;
    int c = uchar(*s);
    switch (*p) {
        case '.':
            return true;
        case kEsc:
            return match_class(c, uchar(*(p + 1)));
        case '[':
            charge(ms->L, bytes_units(static_cast<size_t>(ep - p)));
            return matchbracketclass(c, p, ep - 1);
        default:
            return uchar(*p) == c;
    }
}

const char* matchbalance(MatchState* ms, const char* s, const char* p) {
    if (p >= ms->p_end - 1) luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (*s != *p) return nullptr;
    const char* start = s;
    int b = *p;
    int e = *(p + 1);
    int cont = 1;
    while (++s < ms->src_end) {
        if (*s == e) {
            if (--cont == 0) {
                charge(ms->L, bytes_units(static_cast<size_t>(s - start)));
                return s + 1;
            }
        } else if (*s == b) {
            cont++;
        }
    }
    charge(ms->L, bytes_units(static_cast<size_t>(s - start)));
    return nullptr;  // the subject ends out of balance
}

const char* max_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
    ptrdiff_t i = 0;
    while (singlematch(ms, s + i, p, ep)) i++;
    charge(ms->L, i);
    while (i >= 0) {  // try the longest repetition first
        const char* res = match(ms, s + i, ep + 1);
        if (res) return res;
        i--;
    }
    return nullptr;
}

const char* min_expand(MatchState* ms, const char* s, const char* p, const char* ep) {
    for (;;) {
        const char* res = match(ms, s, ep + 1);
        if (res != nullptr) return res;
        if (!singlematch(ms, s, p, ep)) return nullptr;
        s++;  // one more repetition
    }
}

const char* start_capture(MatchState* ms, const char* s, const char* p, ptrdiff_t what) {
    int level = ms->level;
    if (level >= kMaxCaptures) luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = static_cast<unsigned char>(level + 1);
    const char* res = match(ms, s, p);
    if (res == nullptr) ms->level--;  // undo the capture
    return res;
}

const char* end_capture(MatchState* ms, const char* s, const char* p) {
    int l = capture_to_close(ms);
    ms->capture[l].len = s - ms->capture[l].init;
    const char* res = match(ms, s, p);
    if (res == nullptr) ms->capture[l].len = kCapUnfinished;
    return res;
}

const char* match_capture(MatchState* ms, const char* s, int l) {
    l = check_capture(ms, l);
    auto len = static_cast<size_t>(ms->capture[l].len);
    if (static_cast<size_t>(ms->src_end - s) >= len && equal_charged(ms->L, ms->capture[l].init, s, len))
        return s + len;
    return nullptr;
}

const char* match(MatchState* ms, const char* s, const char* p) {
    if (ms->matchdepth-- == 0) luaL_error(ms->L, "pattern too complex");
init:  // goto instead of tail recursion, as upstream
    charge(ms->L, 1);
    if (p != ms->p_end) {
        switch (*p) {
            case '(': {
                if (*(p + 1) == ')')
                    s = start_capture(ms, s, p + 2, kCapPosition);
                else
                    s = start_capture(ms, s, p + 1, kCapUnfinished);
                break;
            }
            case ')': {
                s = end_capture(ms, s, p + 1);
                break;
            }
            case '$': {
                if (p + 1 != ms->p_end) goto dflt;  // not the last char of the pattern
                s = (s == ms->src_end) ? s : nullptr;
                break;
            }
            case kEsc: {
                switch (*(p + 1)) {
                    case 'b': {  // balanced string
                        s = matchbalance(ms, s, p + 2);
                        if (s != nullptr) {
                            p += 4;
                            goto init;
                        }
                        break;
                    }
                    case 'f': {  // frontier
                        p += 2;
                        if (*p != '[') luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                        const char* ep = classend(ms, p);
                        char previous = (s == ms->src_init) ? '\0' : *(s - 1);
                        if (!matchbracketclass(uchar(previous), p, ep - 1) &&
                            matchbracketclass(uchar(*s), p, ep - 1)) {
                            p = ep;
                            goto init;
                        }
                        s = nullptr;
                        break;
                    }
                    case '0':
                    case '1':
                    case '2':
                    case '3':
                    case '4':
                    case '5':
                    case '6':
                    case '7':
                    case '8':
                    case '9': {  // back reference %0-%9
                        s = match_capture(ms, s, uchar(*(p + 1)));
                        if (s != nullptr) {
                            p += 2;
                            goto init;
                        }
                        break;
                    }
                    default:
                        goto dflt;
                }
                break;
            }
            default:
            dflt : {  // a pattern class plus an optional suffix
                const char* ep = classend(ms, p);
                if (!singlematch(ms, s, p, ep)) {
                    if (*ep == '*' || *ep == '?' || *ep == '-') {  // accepts empty
                        p = ep + 1;
                        goto init;
                    }
                    s = nullptr;  // '+' or no suffix
                } else {
                    switch (*ep) {
                        case '?': {
                            const char* res = match(ms, s + 1, ep + 1);
                            if (res != nullptr) {
                                s = res;
                            } else {
                                p = ep + 1;
                                goto init;
                            }
                            break;
                        }
                        case '+':
                            s++;  // one match already done
                            [[fallthrough]];
                        case '*':
                            s = max_expand(ms, s, p, ep);
                            break;
                        case '-':
                            s = min_expand(ms, s, p, ep);
                            break;
                        default:
                            s++;
                            p = ep;
                            goto init;
                    }
                }
                break;
            }
        }
    }
    ms->matchdepth++;
    return s;
}

// Plain search (lstrlib.c lmemfind), charging what memchr scans and memcmp compares.
const char* lmemfind(lua_State* L, const char* s1, size_t l1, const char* s2, size_t l2) {
    if (l2 == 0) return s1;
    if (l2 > l1) return nullptr;
    l2--;          // the first char is checked by memchr
    l1 = l1 - l2;  // s2 cannot start after that
    while (l1 > 0) {
        auto* init = static_cast<const char*>(std::memchr(s1, *s2, l1));
        if (init == nullptr) {
            charge(L, bytes_units(l1));
            return nullptr;
        }
        init++;
        charge(L, bytes_units(static_cast<size_t>(init - s1)));
        if (equal_charged(L, init, s2 + 1, l2)) return init - 1;
        l1 -= init - s1;
        s1 = init;
    }
    return nullptr;
}

size_t posrelat_i(lua_Integer pos, size_t len) {
    if (pos > 0) return static_cast<size_t>(pos);
    if (pos == 0) return 1;
    if (pos < -static_cast<lua_Integer>(len)) return 1;
    return len + static_cast<size_t>(pos) + 1;
}

ptrdiff_t get_onecapture(MatchState* ms, int i, const char* s, const char* e, const char** cap) {
    if (i >= ms->level) {
        if (i != 0) luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    }
    ptrdiff_t capl = ms->capture[i].len;
    *cap = ms->capture[i].init;
    if (capl == kCapUnfinished)
        luaL_error(ms->L, "unfinished capture");
    else if (capl == kCapPosition)
        lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
    return capl;
}

void push_onecapture(MatchState* ms, int i, const char* s, const char* e) {
    const char* cap;
    ptrdiff_t l = get_onecapture(ms, i, s, e, &cap);
    if (l != kCapPosition) lua_pushlstring(ms->L, cap, static_cast<size_t>(l));
}

int push_captures(MatchState* ms, const char* s, const char* e) {
    int nlevels = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, nlevels, "too many captures");
    for (int i = 0; i < nlevels; i++) push_onecapture(ms, i, s, e);
    return nlevels;
}

bool nospecials(const char* p, size_t l) {
    size_t upto = 0;
    do {
        if (std::strpbrk(p + upto, kSpecials)) return false;
        upto += std::strlen(p + upto) + 1;  // there may be more after a \0
    } while (upto <= l);
    return true;
}

void prepstate(MatchState* ms, lua_State* L, const char* s, size_t ls, const char* p, size_t lp) {
    ms->L = L;
    ms->matchdepth = kMaxCCalls;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
}

void reprepstate(MatchState* ms) {
    ms->level = 0;
}

int str_find_aux(lua_State* L, bool find) {
    size_t ls = 0, lp = 0;
    const char* s = luaL_checklstring(L, 1, &ls);
    const char* p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat_i(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    charge(L, bytes_units(lp) + 1);
    if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {  // plain search
        const char* s2 = lmemfind(L, s + init, ls - init, p, lp);
        if (s2) {
            lua_pushinteger(L, (s2 - s) + 1);
            lua_pushinteger(L, static_cast<lua_Integer>((s2 - s) + lp));
            return 2;
        }
    } else {
        MatchState ms;
        const char* s1 = s + init;
        bool anchor = (*p == '^');
        if (anchor) {
            p++;
            lp--;
        }
        prepstate(&ms, L, s, ls, p, lp);
        do {
            reprepstate(&ms);
            if (const char* res = match(&ms, s1, p)) {
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1);
                    lua_pushinteger(L, res - s);
                    return push_captures(&ms, nullptr, nullptr) + 2;
                }
                return push_captures(&ms, s1, res);
            }
        } while (s1++ < ms.src_end && !anchor);
    }
    luaL_pushfail(L);
    return 1;
}

int str_find(lua_State* L) {
    return str_find_aux(L, true);
}

int str_match(lua_State* L) {
    return str_find_aux(L, false);
}

struct GMatchState {
    const char* src;        // current position
    const char* p;          // pattern
    const char* lastmatch;  // end of the last match
    MatchState ms;
};

int gmatch_aux(lua_State* L) {
    auto* gm = static_cast<GMatchState*>(lua_touserdata(L, lua_upvalueindex(3)));
    gm->ms.L = L;
    for (const char* src = gm->src; src <= gm->ms.src_end; src++) {
        reprepstate(&gm->ms);
        const char* e = match(&gm->ms, src, gm->p);
        if (e != nullptr && e != gm->lastmatch) {
            gm->src = gm->lastmatch = e;
            return push_captures(&gm->ms, src, e);
        }
    }
    return 0;
}

int gmatch(lua_State* L) {
    size_t ls = 0, lp = 0;
    const char* s = luaL_checklstring(L, 1, &ls);
    const char* p = luaL_checklstring(L, 2, &lp);
    size_t init = posrelat_i(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);  // the strings stay alive as upvalues of the iterator
    auto* gm = static_cast<GMatchState*>(lua_newuserdatauv(L, sizeof(GMatchState), 0));
    if (init > ls) init = ls + 1;  // avoids overflows in s + init
    prepstate(&gm->ms, L, s, ls, p, lp);
    gm->src = s + init;
    gm->p = p;
    gm->lastmatch = nullptr;
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

void add_s(MatchState* ms, luaL_Buffer* b, const char* s, const char* e) {
    size_t l = 0;
    lua_State* L = ms->L;
    const char* news = lua_tolstring(L, 3, &l);
    charge(L, bytes_units(l));
    const char* p;
    while ((p = static_cast<const char*>(std::memchr(news, kEsc, l))) != nullptr) {
        luaL_addlstring(b, news, static_cast<size_t>(p - news));
        p++;  // skip ESC
        if (*p == kEsc) {
            luaL_addchar(b, *p);
        } else if (*p == '0') {
            luaL_addlstring(b, s, static_cast<size_t>(e - s));
        } else if (std::isdigit(uchar(*p))) {
            const char* cap;
            ptrdiff_t resl = get_onecapture(ms, *p - '1', s, e, &cap);
            if (resl == kCapPosition)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, cap, static_cast<size_t>(resl));
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", kEsc);
        }
        l -= static_cast<size_t>(p + 1 - news);
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

bool add_value(MatchState* ms, luaL_Buffer* b, const char* s, const char* e, int tr) {
    lua_State* L = ms->L;
    switch (tr) {
        case LUA_TFUNCTION: {
            lua_pushvalue(L, 3);
            int n = push_captures(ms, s, e);
            lua_call(L, n, 1);
            break;
        }
        case LUA_TTABLE: {
            push_onecapture(ms, 0, s, e);
            lua_gettable(L, 3);
            break;
        }
        default: {  // LUA_TNUMBER or LUA_TSTRING
            add_s(ms, b, s, e);
            return true;
        }
    }
    if (!lua_toboolean(L, -1)) {  // nil or false: keep the original text
        lua_pop(L, 1);
        luaL_addlstring(b, s, static_cast<size_t>(e - s));
        return false;
    }
    if (!lua_isstring(L, -1)) luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return true;
}

int str_gsub(lua_State* L) {
    size_t srcl = 0, lp = 0;
    const char* src = luaL_checklstring(L, 1, &srcl);
    const char* p = luaL_checklstring(L, 2, &lp);
    const char* lastmatch = nullptr;
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, static_cast<lua_Integer>(srcl) + 1);
    bool anchor = (*p == '^');
    lua_Integer n = 0;
    bool changed = false;
    MatchState ms;
    luaL_Buffer b;
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                     "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    prepstate(&ms, L, src, srcl, p, lp);
    while (n < max_s) {
        reprepstate(&ms);
        const char* e = match(&ms, src, p);
        if (e != nullptr && e != lastmatch) {
            n++;
            changed = add_value(&ms, &b, src, e, tr) || changed;
            src = lastmatch = e;
        } else if (src < ms.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) break;
    }
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, static_cast<size_t>(ms.src_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

// Calls the original (upvalue 1) with this call's arguments; returns its results.
int call_original(lua_State* L) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

// string.rep(s, n [, sep]): n copies in one call; with empty pieces upstream loops n times without
// allocating anything.
int str_rep(lua_State* L) {
    luaL_checkstring(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n > 0) charge(L, n);
    return call_original(L);
}

// Functions that scan their first argument and may push one value per byte (string.byte,
// utf8.len/codepoint/offset) or read it as a format (string.pack/packsize/unpack). Upvalue 2: bytes
// per instruction charged for the first argument.
int charged_by_length(lua_State* L) {
    if (lua_type(L, 1) == LUA_TSTRING) {
        auto per_unit = static_cast<size_t>(lua_tointeger(L, lua_upvalueindex(2)));
        charge(L, static_cast<int64_t>(lua_rawlen(L, 1) / per_unit));
    }
    int results = call_original(L);
    charge(L, results);
    return results;
}

void wrap(lua_State* L, int lib, const char* name, size_t bytes_per_unit) {
    lua_getfield(L, lib, name);
    lua_pushinteger(L, static_cast<lua_Integer>(bytes_per_unit));
    lua_pushcclosure(L, charged_by_length, 2);
    lua_setfield(L, lib, name);
}

}  // namespace

void bound_string_library(lua_State* L, int index) {
    index = lua_absindex(L, index);
    static const luaL_Reg kFunctions[] = {
        {"find", str_find}, {"match", str_match}, {"gmatch", gmatch}, {"gsub", str_gsub}};
    for (const auto& [name, fn] : kFunctions) {
        lua_pushcfunction(L, fn);
        lua_setfield(L, index, name);
    }
    lua_getfield(L, index, "rep");
    lua_pushcclosure(L, str_rep, 1);
    lua_setfield(L, index, "rep");
    wrap(L, index, "byte", kBytesPerUnit);
    for (const char* name : {"pack", "packsize", "unpack"}) wrap(L, index, name, 1);
}

void bound_utf8_library(lua_State* L, int index) {
    index = lua_absindex(L, index);
    for (const char* name : {"len", "codepoint", "offset"}) wrap(L, index, name, kBytesPerUnit);
}

}  // namespace st::host::lua
