// Lua hook engine (host/lua) against hostile scripts (#18): library calls that used to run for ever
// inside one C function (lua_tablib.cpp, lua_strlib.cpp, allocations) are charged to the instruction
// budget, a stop request reaches a running handler, an event table that is cyclic, too deep or too
// large fails its handler instead of eating host memory, and st.metric refuses names the metrics
// writer cannot store. Cases that hung or ate memory before run in a child process with a deadline
// and a memory limit, so a regression fails here instead of hanging the suite or the machine.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "lua/hook_engine.h"
#include "st/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace st::host::lua;

namespace {

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in:\n" << text;
}

// The process's data size (heap and private mappings) in bytes, from /proc/self/status.
rlim_t data_size() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmData:", 0) == 0) return static_cast<rlim_t>(std::stoull(line.substr(7))) * 1024;
    return 0;
}

/// Runs `body` in a child process with `seconds` to finish and 1 GiB more data memory than it
/// starts with. gtest prints the child's failed expectations; its exit status carries them back.
void in_child(const std::function<void()>& body, unsigned seconds = 30) {
    const auto* result = ::testing::UnitTest::GetInstance()->current_test_info()->result();
    const int parts_before = result->total_part_count();
    std::fflush(nullptr);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::alarm(seconds);
        rlimit limit{data_size() + (rlim_t{1} << 30), RLIM_INFINITY};
        limit.rlim_max = limit.rlim_cur;
        ::setrlimit(RLIMIT_DATA, &limit);
        body();
        std::fflush(nullptr);
        bool failed = false;
        for (int i = parts_before; i < result->total_part_count(); ++i)
            failed |= result->GetTestPartResult(i).failed();
        ::_exit(failed ? 1 : 0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        ADD_FAILURE() << "the child died of signal " << WTERMSIG(status)
                      << (WTERMSIG(status) == SIGALRM ? " (it did not finish in time: a hang)" : "");
    else
        EXPECT_EQ(WEXITSTATUS(status), 0) << "expectations failed in the child (see above)";
}

class LuaLimitsTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               fmt::format("st_lua_limits_{}_{}", getpid(),
                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    fs::path write(const std::string& name, const std::string& text) {
        fs::path p = dir_ / name;
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }

    /// `body` as the on_step_end handler of `name` (the body starts on line 2), then a second
    /// handler that reports it ran.
    HookOptions handler(const std::string& name, const std::string& body) {
        HookOptions o;
        o.scripts = {write(name, "st.on('on_step_end', function(ev)\n" + body + "\nend)\n"),
                     write("after.lua",
                           "st.on('on_step_end', function(ev) st.metric('after', 1) ev.after = true end)\n")};
        o.seed = 1;
        o.instruction_budget = 2'000'000;
        o.memory_limit_bytes = 16u << 20;
        o.on_error = HookErrorPolicy::disable;
        return o;
    }

    static std::map<std::string, double> metrics(const HookActions& a) {
        std::map<std::string, double> m;
        for (const auto& [k, v] : a.metrics) m[k] = v;
        return m;
    }

    fs::path dir_;
};

// ---- library calls and the instruction budget ------------------------------------------------------

TEST_F(LuaLimitsTest, LibraryCallsThatRanForeverExhaustTheBudget) {
    const std::vector<std::string> bodies = {
        // #18: one C call, no VM instruction for the count hook
        "table.move({}, 1, math.maxinteger - 1, 1, {})",
        "string.find(string.rep('a', 5000), '.-.-.-.-.-.-.-b')",
        "string.match(string.rep('a', 5000), '(.-)(.-)(.-)(.-)(.-)(.-)b')",
        "for _ in string.gmatch(string.rep('a', 5000), '.-.-.-.-.-.-b') do end",
        "string.gsub(string.rep('a', 5000), '.-.-.-.-.-.-b', '')",
        "string.find(string.rep('a', 1 << 21), string.rep('a', 1 << 20) .. 'b', 1, true)",
        "string.rep('', math.maxinteger)",
        "string.rep('', math.maxinteger, '')",
        "table.insert(setmetatable({}, {__len = function() return math.maxinteger - 1 end}), 1, 'x')",
        "table.remove(setmetatable({}, {__len = function() return math.maxinteger - 1 end}), 1)",
        // cheap per call in VM instructions, expensive in C: loops of them used to run for hours
        "local t = {} for i = 1, 100000 do t[i] = '' end for i = 1, 1e9 do table.concat(t) end",
        "local t = {} for i = 1, 1e9 do table.unpack(t, 1, 100000) end",
        "local t = {} for i = 1, 3000 do t[i] = i end for i = 1, 1e9 do table.sort(t) end",
        "local s = string.rep('a', 1 << 20) for i = 1, 1e9 do utf8.len(s) end",
        "local s = string.rep('0', 1 << 22) for i = 1, 1e9 do tonumber(s) end",
        "local s = string.rep(' ', 1 << 22) for i = 1, 1e9 do load(s) end",
        "local s = string.rep('x', 1 << 22) while true do local t = s .. 'y' end",  // allocation
        // still not catchable by pcall
        "pcall(table.move, {}, 1, math.maxinteger - 1, 1, {}) st.metric('escaped', 1)",
        "pcall(string.find, string.rep('a', 5000), '.-.-.-.-.-.-.-b') st.metric('escaped', 1)",
    };
    for (const auto& body : bodies) {
        SCOPED_TRACE(body);
        in_child([&] {
            HookEngine engine(handler("lib.lua", body));
            engine.fire("on_step_end", json::object());
            HookActions a = engine.take_actions();
            ASSERT_TRUE(engine.last_error().has_value());
            expect_contains(*engine.last_error(),
                            "instruction budget of 2000000 exceeded (lua_instruction_budget)");
            expect_contains(*engine.last_error(), "lib.lua:");
            EXPECT_EQ(metrics(a).count("escaped"), 0u);
            EXPECT_EQ(metrics(a)["after"], 1);  // the next handler runs
        });
    }
}

TEST_F(LuaLimitsTest, ABudgetStopInsideALibraryCallNamesTheLineThatCalledIt) {
    in_child([&] {
        HookEngine engine(handler("line.lua", "local a = 1\ntable.move({}, 1, math.maxinteger - 1, 1, {})"));
        engine.fire("on_step_end", json::object());
        ASSERT_TRUE(engine.last_error().has_value());
        expect_contains(*engine.last_error(), "line.lua:3: instruction budget of 2000000 exceeded");
    });
}

TEST_F(LuaLimitsTest, BoundedLibraryFunctionsGiveUpstreamResults) {
    // The ported pattern matcher and table functions against what Lua 5.4 documents.
    auto o = handler("same.lua", R"lua(
local function eq(a, b) if a ~= b then error(tostring(a) .. " ~= " .. tostring(b), 2) end end
eq(select(2, string.find("hello world", "o w")), 7)
eq(string.find("hello", "l+"), 3)
eq(string.find("a.b", ".", 1, true), 2)
eq(string.find("a+b", "+", 1, true), 2)
eq(string.find("abc", "b", -1), nil)
eq(string.match("key = value", "(%w+)%s*=%s*(%w+)"), "key")
eq(select(2, string.match("key = value", "(%w+)%s*=%s*(%w+)")), "value")
eq(string.match("hello", "()ll()"), 3)
eq(string.match("THE (quick) fox", "%((%a+)%)"), "quick")
eq(string.match("f(a(b)c)d", "%b()"), "(a(b)c)")
eq(string.match("THE (quick) fox", "%f[%a]%a+", 5), "quick")
eq(string.match("abcabc", "(abc)%1"), "abc")
eq(string.match("  trim  ", "^%s*(.-)%s*$"), "trim")
eq(string.match("[x]", "[%[]"), "[")
eq(string.match("2024-01-02", "(%d+)-(%d+)-(%d+)$"), "2024")
eq(string.gsub("hello world", "o", "0"), "hell0 w0rld")
eq(select(2, string.gsub("hello world", "o", "0")), 2)
eq(string.gsub("abc", "%w", "%0%0"), "aabbcc")
eq(string.gsub("hello world", "(%w+)", "<%1>"), "<hello> <world>")
eq(string.gsub("$name is $age", "%$(%w+)", {name = "x", age = 3}), "x is 3")
eq(string.gsub("abc", "", "-"), "-a-b-c-")
eq(string.gsub("abc", ".", string.upper, 2), "ABc")
local words = {} for w in string.gmatch("one two  three", "%a+") do words[#words + 1] = w end
eq(table.concat(words, ","), "one,two,three")
local kv = {} for k, v in string.gmatch("a=1, b=2", "(%w+)=(%w+)") do kv[k] = v end
eq(kv.b, "2")
eq(select("#", string.byte("abc", 1, -1)), 3)
eq(string.rep("ab", 3, "-"), "ab-ab-ab")
eq(utf8.len("héllo"), 5)
eq(tonumber("ff", 16), 255)
eq(load("return 1 + 1")(), 2)
local parts = {"return ", "4"}
eq(load(function() return table.remove(parts, 1) end)(), 4)
local t = {1, 2, 3}
table.insert(t, 1, 0) eq(table.concat(t, ","), "0,1,2,3")
table.insert(t, 9) eq(t[5], 9)
eq(table.remove(t, 1), 0) eq(table.concat(t, ","), "1,2,3,9")
eq(table.remove(t), 9)
eq(table.concat(table.move({1, 2, 3}, 1, 3, 2), ","), "1,1,2,3")
eq(table.concat(table.move({1, 2, 3}, 2, 3, 1, {}), ","), "2,3")
eq(select("#", table.unpack({1, 2, 3})), 3)
local s = {5, 2, 8, 1, 9, 3} table.sort(s) eq(table.concat(s, ","), "1,2,3,5,8,9")
table.sort(s, function(a, b) return a > b end) eq(table.concat(s, ","), "9,8,5,3,2,1")
local big = {} for i = 1, 500 do big[i] = (i * 7919) % 500 end table.sort(big)
for i = 2, 500 do assert(big[i - 1] <= big[i]) end
eq(pcall(string.rep), false)
eq(select(2, pcall(string.find, "x", "[a")):match("malformed pattern %(missing ']'%)") ~= nil, true)
eq(select(2, pcall(table.insert, {}, 5, 1)):match("position out of bounds") ~= nil, true)
st.metric("ok", 1)
)lua");
    o.on_error = HookErrorPolicy::stop;
    HookEngine engine(o);
    engine.fire("on_step_end", json::object());
    EXPECT_FALSE(engine.last_error().has_value()) << *engine.last_error();
    EXPECT_EQ(metrics(engine.take_actions())["ok"], 1);
}

// ---- stop requests --------------------------------------------------------------------------------

TEST_F(LuaLimitsTest, AStopRequestEndsARunningHandlerWithoutAHookError) {
    for (const std::string body :
         {"while true do end", "string.find(string.rep('a', 5000), '.-.-.-.-.-.-.-b')",
          "pcall(function() while true do end end) st.metric('escaped', 1)"}) {
        SCOPED_TRACE(body);
        in_child([&] {
            auto o = handler("spin.lua", body);
            o.instruction_budget = int64_t{1} << 60;  // only the stop request can end it
            o.on_error = HookErrorPolicy::stop;
            int polls = 0;
            o.stop_requested = [&polls]() -> const char* { return ++polls > 5 ? "SIGTERM" : nullptr; };
            HookEngine engine(o);
            engine.fire("on_step_end", json::object());
            HookActions a = engine.take_actions();
            EXPECT_FALSE(engine.last_error().has_value()) << "not a hook error";
            EXPECT_FALSE(a.stop) << "the host stops on its own signal";
            EXPECT_EQ(metrics(a).count("escaped"), 0u);
            EXPECT_EQ(metrics(a)["after"], 1) << "a request pending when a handler starts lets it run";
            EXPECT_TRUE(engine.has_handlers("on_step_end"));
        });
    }
}

// ---- event tables back to JSON ------------------------------------------------------------------

TEST_F(LuaLimitsTest, AnEventTableWithoutAJsonFormFailsItsHandlerNotTheHost) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"local t = {} t[1] = t ev.x = t", "field x[1] is the table of field x again (a cycle"},
        {"local t = {} t[1] = t t[2] = t ev.x = t", "field x[1] is the table of field x again (a cycle"},
        {"ev.self = ev", "field self is the event table itself again"},
        {"ev.a = {b = {}} ev.a.b.c = ev.a", "field a.b.c is the table of field a again"},
        {"local t = {} ev.x = t for i = 1, 40 do t.a = {} t = t.a end", "is nested deeper than 32 levels"},
        // shared, not cyclic: 2^31 values for the host from a few KiB of Lua
        {"local a = {1} for i = 1, 30 do a = {a, a} end ev.x = a", "makes the table larger than 16 MiB"},
        {"local s = string.rep('x', 1 << 20) local t = {} for i = 1, 100 do t[i] = s end ev.x = t",
         "makes the table larger than 16 MiB"},
    };
    for (const auto& [body, part] : cases) {
        SCOPED_TRACE(body);
        in_child([&] {
            HookEngine engine(handler("cyc.lua", body));
            json in = {{"step", 3}, {"tags", {"a"}}};
            json out = engine.fire("on_step_end", in);
            ASSERT_TRUE(engine.last_error().has_value());
            expect_contains(*engine.last_error(), "left the on_step_end table without a JSON form");
            expect_contains(*engine.last_error(), part);
            // The next handler got the table as it was before the failing one.
            json expected = in;
            expected["after"] = true;
            EXPECT_EQ(out, expected);
            EXPECT_EQ(metrics(engine.take_actions())["after"], 1);
        });
    }
    // Under lua_hook_error=stop it stops the run as an error.
    in_child([&] {
        auto o = handler("cyc.lua", "ev.self = ev");
        o.on_error = HookErrorPolicy::stop;
        HookEngine engine(o);
        engine.fire("on_step_end", json::object());
        HookActions a = engine.take_actions();
        EXPECT_TRUE(a.stop);
        EXPECT_TRUE(a.error);
        expect_contains(a.stop_reason, "(on_step_end handler #1 of cyc.lua, defined at line 1)");
    });
}

TEST_F(LuaLimitsTest, SharedTablesThatAreNotCyclesStillConvert) {
    HookEngine engine(handler("share.lua", "local t = {1, 2} ev.a = t ev.b = {t, t} ev.c = st.config"));
    json out = engine.fire("on_step_end", json::object());
    EXPECT_FALSE(engine.last_error().has_value());
    EXPECT_EQ(out["a"], json({1, 2}));
    EXPECT_EQ(out["b"], json({{1, 2}, {1, 2}}));
}

// ---- actions --------------------------------------------------------------------------------------

TEST_F(LuaLimitsTest, MetricNamesMustBeUtf8AndBounded) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"st.metric(string.char(255), 1)", "got '\\xff' (1 bytes)"},
        {"st.metric('loss' .. string.char(0xc0, 0x80), 1)", "got 'loss\\xc0\\x80'"},  // overlong NUL
        {"st.metric(string.char(0xed, 0xa0, 0x80), 1)", "got '\\xed\\xa0\\x80'"},     // a surrogate
        {"st.metric(string.rep('m', 257), 1)", "(257 bytes)"},
    };
    for (const auto& [body, part] : cases) {
        SCOPED_TRACE(body);
        auto o = handler("metric.lua", body);
        o.on_error = HookErrorPolicy::stop;
        HookEngine engine(o);
        engine.fire("on_step_end", json::object());
        HookActions a = engine.take_actions();
        ASSERT_TRUE(engine.last_error().has_value());
        expect_contains(*engine.last_error(), "metric.lua:2: st.metric: ");
        expect_contains(*engine.last_error(), part);
        EXPECT_TRUE(a.stop);
        EXPECT_TRUE(a.error);
        expect_contains(a.stop_reason, "on_step_end handler #1 of metric.lua");
        for (const auto& [name, v] : a.metrics) EXPECT_EQ(name, "after") << "a refused metric was queued";
    }
    // At most kMaxMetricsPerEvent per event, the handler that asks for more fails.
    auto o = handler("many.lua", "for i = 1, 10001 do st.metric('m', i) end");
    o.scripts.pop_back();
    o.on_error = HookErrorPolicy::stop;
    HookEngine many(o);
    many.fire("on_step_end", json::object());
    ASSERT_TRUE(many.last_error().has_value());
    expect_contains(*many.last_error(), "many.lua:2: st.metric: more than 10000 metrics in one event");
    EXPECT_TRUE(many.take_actions().error);
    // What is accepted: any UTF-8 up to 256 bytes.
    HookEngine engine(handler("ok.lua", "st.metric('lösung/ß', 1) st.metric(string.rep('m', 256), 2)"));
    engine.fire("on_step_end", json::object());
    EXPECT_FALSE(engine.last_error().has_value());
    EXPECT_EQ(metrics(engine.take_actions())["lösung/ß"], 1);
}

TEST_F(LuaLimitsTest, ErrorTextFromScriptsIsEscapedAndBounded) {
    auto o = handler("text.lua", "error(string.char(255) .. string.rep('x', 100000))");
    HookEngine engine(o);
    engine.fire("on_step_end", json::object());
    ASSERT_TRUE(engine.last_error().has_value());
    expect_contains(*engine.last_error(), "text.lua:2: \\xffxxx");
    expect_contains(*engine.last_error(), "more bytes)");
    EXPECT_LT(engine.last_error()->size(), 10000u);
    auto s = handler("reason.lua", "st.stop(string.char(255))");
    HookEngine stopper(s);
    stopper.fire("on_step_end", json::object());
    HookActions a = stopper.take_actions();
    EXPECT_TRUE(a.stop);
    EXPECT_FALSE(a.error) << "st.stop() is a requested stop";
    EXPECT_EQ(a.stop_reason, "\\xff (st.stop from reason.lua)");
}

}  // namespace
