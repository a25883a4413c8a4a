// Lua hook engine (host/lua): events and tables, actions, read-only views, determinism, the sandbox
// (escapes, instruction budget, memory cap), error policy, options, and the example scripts of
// scripts/hooks/ driven with synthetic events.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "lua/hook_engine.h"
#include "st/error.h"
#include "st/log.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace st::host::lua;

namespace {

class LuaHooksTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               fmt::format("st_lua_{}_{}", getpid(),
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

    HookOptions options(std::vector<fs::path> scripts) {
        HookOptions o;
        o.scripts = std::move(scripts);
        o.config = json{{"learning_rate", 1e-4},
                        {"model", {{"name", "wan"}, {"blocks", 2}}},
                        {"validation_prompts", json::array({"a", "b"})}};
        o.seed = 42;
        o.instruction_budget = 2'000'000;
        o.memory_limit_bytes = 16u << 20;
        return o;
    }

    /// Loads `text` as the only script; returns the error text of the load (empty when it loads).
    std::string load_error(const std::string& text, const std::string& name = "probe.lua") {
        try {
            HookEngine engine(options({write(name, text)}));
        } catch (const st::Error& e) {
            return e.what();
        }
        return "";
    }

    static std::map<std::string, double> metrics(const HookActions& a) {
        std::map<std::string, double> m;
        for (const auto& [k, v] : a.metrics) m[k] = v;
        return m;
    }

    fs::path dir_;
};

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in:\n" << text;
}

// ---- events, tables, registration -------------------------------------------------------------

TEST_F(LuaHooksTest, StepEndDeliversItsTableAndValidationStartEditsPrompts) {
    auto s = write("events.lua", R"(
st.on("on_step_end", function(ev)
  st.metric("step", ev.step)
  st.metric("loss", ev.loss)
  st.metric("flow", ev.loss_terms.flow)
  st.metric("captions", #ev.captions)
  st.metric("t2", ev.timesteps[2])
  ev.seen = true
end)
st.on("on_validation_start", function(ev)
  ev.prompts[1] = ev.prompts[1] .. ", cinematic"
  table.insert(ev.prompts, "a new prompt")
end)
)");
    HookEngine engine(options({s}));
    EXPECT_TRUE(engine.has_handlers("on_step_end"));
    EXPECT_FALSE(engine.has_handlers("on_checkpoint"));
    json step = {{"step", 7},
                 {"epoch", 1},
                 {"loss", 0.25},
                 {"loss_terms", {{"flow", 0.2}, {"crepa", 0.05}}},
                 {"timesteps", {100, 900}},
                 {"captions", {"x", "y", "z"}},
                 {"bucket", "480x832x17"}};
    json back = engine.fire("on_step_end", step);
    auto m = metrics(engine.take_actions());
    EXPECT_EQ(m["step"], 7);
    EXPECT_DOUBLE_EQ(m["loss"], 0.25);
    EXPECT_DOUBLE_EQ(m["flow"], 0.2);
    EXPECT_EQ(m["captions"], 3);
    EXPECT_EQ(m["t2"], 900);
    json expected = step;
    expected["seen"] = true;
    EXPECT_EQ(back, expected);  // untouched fields round-trip exactly (ints stay ints)

    json v = engine.fire("on_validation_start", {{"prompts", {"a cat"}}, {"step", 100}});
    EXPECT_EQ(v["prompts"], json::array({"a cat, cinematic", "a new prompt"}));
    EXPECT_EQ(v["step"], 100);
    // Events without handlers hand the table back untouched.
    EXPECT_EQ(engine.fire("on_checkpoint", {{"path", "/x"}}), json({{"path", "/x"}}));
}

TEST_F(LuaHooksTest, HandlersRunInRegistrationOrderOnOneTable) {
    auto a = write("a.lua", R"(st.on("on_epoch_start", function(ev) ev.order = {"a"} end))");
    auto b = write("b.lua", R"(
st.on("on_epoch_start", function(ev) table.insert(ev.order, "b1") end)
st.on("on_epoch_start", function(ev) table.insert(ev.order, "b2") end))");
    HookEngine engine(options({a, b}));
    EXPECT_EQ(engine.fire("on_epoch_start", {{"epoch", 2}})["order"], json::array({"a", "b1", "b2"}));
}

TEST_F(LuaHooksTest, ValuesWithoutJsonFormAreDroppedAndEmptyArraysStayArrays) {
    auto s = write("drop.lua", R"(
st.on("on_validation_start", function(ev)
  ev.prompts = {}
  ev.fn = function() end
  ev.co = coroutine.create(function() end)
  ev.cfg = st.config.model
end))");
    HookEngine engine(options({s}));
    json v = engine.fire("on_validation_start", {{"prompts", {"a"}}});
    EXPECT_EQ(v["prompts"], json::array());
    EXPECT_FALSE(v.contains("fn"));
    EXPECT_FALSE(v.contains("co"));
    EXPECT_EQ(v["cfg"], json({{"name", "wan"}, {"blocks", 2}}));  // a read-only view converts to its contents
}

TEST_F(LuaHooksTest, ReturningTrueUnregistersAndOffRemoves) {
    auto s = write("once.lua", R"(
st.on("on_step_start", function(ev) st.metric("once", ev.step); return true end)
local id = st.on("on_step_end", function(ev) st.metric("end", ev.step) end)
st.on("on_train_end", function() st.metric("off", st.off(id) and 1 or 0) end)
)");
    HookEngine engine(options({s}));
    engine.fire("on_step_start", {{"step", 1}});
    engine.fire("on_step_start", {{"step", 2}});
    EXPECT_FALSE(engine.has_handlers("on_step_start"));
    auto a = engine.take_actions();
    ASSERT_EQ(a.metrics.size(), 1u);
    EXPECT_EQ(a.metrics[0].second, 1);
    engine.fire("on_train_end", json::object());
    EXPECT_EQ(metrics(engine.take_actions())["off"], 1);
    EXPECT_FALSE(engine.has_handlers("on_step_end"));
}

TEST_F(LuaHooksTest, RegistrationOnlyWhileLoadingAndOnlyKnownEvents) {
    std::string e = load_error("st.on('on_stepend', function() end)", "typo.lua");
    expect_contains(e, "typo.lua:1: st.on: unknown event 'on_stepend'");
    expect_contains(e, "known events: on_train_start, on_epoch_start, on_step_start, on_step_end");
    expect_contains(e, (dir_ / "typo.lua").string());

    auto s =
        write("late.lua", R"(st.on("on_step_end", function() st.on("on_step_end", function() end) end))");
    HookEngine engine(options({s}));
    engine.fire("on_step_end", {{"step", 1}});
    ASSERT_TRUE(engine.last_error().has_value());
    expect_contains(*engine.last_error(),
                    "late.lua:1: st.on: handlers are registered while the script loads");
    EXPECT_THROW(engine.fire("on_nothing", json::object()), st::Error);
}

// ---- actions -------------------------------------------------------------------------------------

TEST_F(LuaHooksTest, EveryActionSetsItsField) {
    auto s = write("act.lua", R"(
st.on("on_step_end", function(ev)
  st.save_checkpoint()
  st.validate_now()
  st.set_lr_scale(0.5)
  st.set_lr_scale(0.25)
  st.metric("a", 1.5)
  st.metric("b", 2)
  st.log("info", "hello from lua")
  print("printed", 1, true)
  st.stop("enough")
end))");
    fs::path log_file = dir_ / "log.txt";
    st::log::set_file(log_file.string());
    HookEngine engine(options({s}));
    EXPECT_EQ(HookEngine::api_level(), 1);
    HookActions none = engine.take_actions();
    EXPECT_FALSE(none.stop || none.save_checkpoint || none.validate_now || none.lr_scale ||
                 !none.metrics.empty());
    engine.fire("on_step_end", {{"step", 1}});
    st::log::set_file("");
    HookActions a = engine.take_actions();
    EXPECT_TRUE(a.stop);
    EXPECT_FALSE(a.error) << "st.stop() is a requested stop, not a failure";
    EXPECT_EQ(a.stop_reason, "enough (st.stop from act.lua)");
    EXPECT_TRUE(a.save_checkpoint);
    EXPECT_TRUE(a.validate_now);
    ASSERT_TRUE(a.lr_scale.has_value());
    EXPECT_EQ(*a.lr_scale, 0.25);
    ASSERT_EQ(a.metrics.size(), 2u);
    EXPECT_EQ(a.metrics[0], std::make_pair(std::string("a"), 1.5));
    EXPECT_EQ(a.metrics[1], std::make_pair(std::string("b"), 2.0));
    EXPECT_FALSE(engine.take_actions().stop);  // drained
    std::stringstream text;
    text << std::ifstream(log_file).rdbuf();
    expect_contains(text.str(), "[lua:act.lua] hello from lua");
    expect_contains(text.str(), "[lua:act.lua] printed\t1\ttrue");
}

TEST_F(LuaHooksTest, ActionArgumentsAreChecked) {
    for (const auto& [code, part] : std::vector<std::pair<std::string, std::string>>{
             {"st.set_lr_scale(0)", "scale must be finite and > 0"},
             {"st.set_lr_scale(-1)", "scale must be finite and > 0"},
             {"st.set_lr_scale(0/0)", "scale must be finite and > 0"},
             {"st.set_lr_scale(math.huge)", "scale must be finite and > 0"},
             {"st.metric('x', 0/0)", "value of 'x' must be finite"},
             {"st.metric('', 1)", "name must not be empty"},
             {"st.log('loud', 'x')", "loud"}}) {
        std::string e = load_error(code, "args.lua");
        expect_contains(e, "args.lua:1:");
        expect_contains(e, part);
    }
}

// ---- read-only views, determinism ------------------------------------------------------------

TEST_F(LuaHooksTest, ConfigAndStateAreReadableAndReadOnly) {
    auto s = write("ro.lua", R"(
st.on("on_step_end", function()
  st.metric("lr", st.config.learning_rate)
  st.metric("blocks", st.config.model.blocks)
  st.metric("nprompts", #st.config.validation_prompts)
  local n = 0
  for k, v in pairs(st.config) do n = n + 1 end
  for i, v in ipairs(st.config.validation_prompts) do n = n + 10 end
  st.metric("iterated", n)
  st.metric("state_step", st.state.step)
  st.metric("state_nested", st.state.ema.decay)
end))");
    HookEngine engine(options({s}));
    engine.set_state({{"step", 12}, {"ema", {{"decay", 0.999}}}});
    engine.fire("on_step_end", json::object());
    auto m = metrics(engine.take_actions());
    EXPECT_DOUBLE_EQ(m["lr"], 1e-4);
    EXPECT_EQ(m["blocks"], 2);
    EXPECT_EQ(m["nprompts"], 2);
    EXPECT_EQ(m["iterated"], 3 + 20);
    EXPECT_EQ(m["state_step"], 12);
    EXPECT_DOUBLE_EQ(m["state_nested"], 0.999);
    engine.set_state({{"step", 13}, {"ema", {{"decay", 0.5}}}});
    engine.fire("on_step_end", json::object());
    EXPECT_EQ(metrics(engine.take_actions())["state_step"], 13);

    for (const auto& [code, part] : std::vector<std::pair<std::string, std::string>>{
             {"st.config.learning_rate = 1", "st.config is read-only (attempt to set field 'learning_rate')"},
             {"st.config.model.name = 'x'", "st.config.model is read-only (attempt to set field 'name')"},
             {"st.config.validation_prompts[3] = 'x'", "st.config.validation_prompts is read-only"},
             {"table.insert(st.config.validation_prompts, 'x')", "st.config.validation_prompts is read-only"},
             {"rawset(st.config, 'x', 1)", "rawset: st.config is read-only"},
             {"rawset(st.config.model, 'x', 1)", "rawset: st.config.model is read-only"},
             {"st.state.step = 1", "st.state is read-only"},
             {"setmetatable(st.config, nil)", "cannot change a protected metatable"},
             {"st.api_level = 2", "st is read-only"},
             {"st.stop = nil", "st is read-only"},
             {"local f, t = pairs(st.config); t.x = 1", "st.config is read-only"}}) {
        std::string e = load_error(code, "ro.lua");
        expect_contains(e, "ro.lua:1:");
        expect_contains(e, part);
    }
}

TEST_F(LuaHooksTest, MathRandomIsDeterministicForASeed) {
    auto s = write("rng.lua", R"(
st.on("on_step_end", function()
  for i = 1, 4 do st.metric("r" .. i, math.random()) end
  st.metric("int", math.random(1, 1000000))
end))");
    auto draw = [&](uint64_t seed) {
        auto o = options({s});
        o.seed = seed;
        HookEngine engine(o);
        engine.fire("on_step_end", json::object());
        return engine.take_actions().metrics;
    };
    auto a = draw(7), b = draw(7), c = draw(8);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    std::string e = load_error("math.randomseed()", "seed.lua");
    expect_contains(e, "math.randomseed needs a seed");
    EXPECT_EQ(load_error("math.randomseed(3); assert(math.random(10) >= 1)"), "");
}

// ---- sandbox ---------------------------------------------------------------------------------------

TEST_F(LuaHooksTest, EverySandboxEscapeFailsWithAClearMessage) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"io.open('/etc/passwd')", "io is not available in st hooks"},
        {"local f = io", "io is not available in st hooks"},
        {"os.execute('true')", "os.execute is not available in st hooks"},
        {"os.exit(1)", "os.exit is not available"},
        {"os.getenv('HOME')", "os.getenv is not available"},
        {"os.remove('/tmp/x')", "os.remove is not available"},
        {"require('io')", "require is not available"},
        {"package.loaded.io.open('/etc/passwd')", "package is not available"},
        {"dofile('/etc/passwd')", "dofile is not available"},
        {"loadfile('/etc/passwd')", "loadfile is not available"},
        {"debug.getinfo(1)", "debug is not available"},
        {"string.dump(function() end)", "string.dump is not available"},
        {"load(string.dump(print))", "string.dump is not available"},
        {"load('\\27Lua\\84\\0')", "load: binary chunks are not allowed"},
        {"load('return 1', 'x', 'b')", "load: mode 'b' is not allowed"},
        {"load('return 1', 'x', 'bt')", "load: mode 'bt' is not allowed"},
        {"local done = false\n"
         "local f, err = load(function() if done then return nil end done = true return '\\27Lua' end)\n"
         "error(err)",
         "attempt to load a binary chunk"},
        {"load('return io.open')()", "io is not available"},
        {"coroutine.wrap(function() return os.execute end)()", "os.execute is not available"},
        {"getmetatable('').__index.upper = function() return 'pwned' end", "string is read-only"},
        {"getmetatable('').__index = {}", "the string metatable is read-only"},
        {"rawset(getmetatable('').__index, 'upper', print)", "rawset: string is read-only"},
        {"string.upper = nil", "string is read-only"},
        {"rawset(string, 'upper', print)", "rawset: string is read-only"},
        {"collectgarbage('stop')", "collectgarbage('stop') is not available"},
        {"collectgarbage()", "collectgarbage('collect') is not available"},
        {"setmetatable({}, {__gc = function() end})", "__gc metamethods are not available"},
    };
    for (const auto& [code, part] : cases) {
        SCOPED_TRACE(code);
        std::string e = load_error(code, "escape.lua");
        expect_contains(e, "escape.lua:");
        expect_contains(e, part);
    }
    // What stays: the script's own globals, text load into its own environment, string methods.
    EXPECT_EQ(load_error(R"(
x = 1
assert(load("return x")() == 1)
assert(load("return _G")() == _G)
assert(("abc"):upper() == "ABC" and string.format("%d", 3) == "3")
assert(type(os.clock()) == "number" and type(os.time()) == "number" and type(os.date("%Y")) == "string")
assert(collectgarbage("count") > 0)
assert(utf8.len("héllo") == 5 and table.concat({1, 2}, ",") == "1,2")
local t = setmetatable({}, {__index = function(_, k) return k .. "!" end})
assert(t.a == "a!")
)"),
              "");
}

TEST_F(LuaHooksTest, ScriptsCannotChangeWhatOtherScriptsSee) {
    auto evil = write("evil.lua", R"(
pcall(function() getmetatable("").__index.upper = function() return "pwned" end end)
pcall(function() string.upper = function() return "pwned" end end)
table.insert = function() error("pwned") end  -- its own copy only
math.random = function() return 4 end
leaked = "from evil")");
    auto good = write("good.lua", R"(
st.on("on_step_end", function(ev)
  ev.upper = ("abc"):upper()
  ev.upper2 = string.upper("abc")
  local t = {} table.insert(t, 1)
  ev.insert = #t
  ev.leaked = leaked == nil
  ev.random = math.random() ~= 4
end))");
    HookEngine engine(options({evil, good}));
    json v = engine.fire("on_step_end", json::object());
    EXPECT_EQ(v["upper"], "ABC");
    EXPECT_EQ(v["upper2"], "ABC");
    EXPECT_EQ(v["insert"], 1);
    EXPECT_EQ(v["leaked"], true);
    EXPECT_EQ(v["random"], true);
}

TEST_F(LuaHooksTest, InstructionBudgetStopsRunawayLoopsEvenInsidePcallAndCoroutines) {
    const std::vector<std::string> loops = {
        "while true do end",
        "pcall(function() while true do end end) st.metric('escaped', 1)",
        "while true do pcall(function() while true do end end) end",
        "xpcall(function() while true do end end, function(e) return e end) st.metric('escaped', 1)",
        "xpcall(function() while true do end end, function(e) while true do end end) st.metric('escaped', 1)",
        "pcall(pcall, function() while true do end end) st.metric('escaped', 1)",
        "coroutine.wrap(function() while true do end end)()",
        "coroutine.resume(coroutine.create(function() while true do end end)) st.metric('escaped', 1)",
        "pcall(coroutine.wrap(function() while true do end end)) st.metric('escaped', 1)",
        "local co = coroutine.create(function() while true do end end)\n"
        "coroutine.resume(co) coroutine.close(co) st.metric('escaped', 1)",
        "string.gsub(string.rep('a', 1000), 'a', function() while true do end end)",
        "local t = setmetatable({}, {__index = function() while true do end end}) local x = t.a",
        "error(setmetatable({}, {__tostring = function() while true do end end}))",
        // Message handlers and __close run where Lua may have hooks disabled: still stopped.
        "local co = coroutine.create(function()\n"
        "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
        "  while true do end end)\n"
        "coroutine.resume(co) st.metric('escaped', 1)",
        "coroutine.wrap(function()\n"
        "  local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
        "  while true do end end)()",
        "local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end",
    };
    for (const auto& body : loops) {
        SCOPED_TRACE(body);
        auto s = write("loop.lua", "st.on('on_step_end', function()\n" + body + "\nend)\n");
        auto o = options({s});
        o.instruction_budget = 200'000;
        HookEngine engine(o);
        engine.fire("on_step_end", json::object());
        HookActions a = engine.take_actions();
        EXPECT_TRUE(a.metrics.empty()) << "code after the loop ran";
        EXPECT_TRUE(a.stop);
        ASSERT_TRUE(engine.last_error().has_value());
        expect_contains(*engine.last_error(), "loop.lua:");
        expect_contains(*engine.last_error(),
                        "instruction budget of 200000 exceeded (lua_instruction_budget)");
        expect_contains(*engine.last_error(), "stack traceback");
    }
    // At load time too, with the script named.
    auto o = options({write("top.lua", "local n = 0\nwhile true do n = n + 1 end")});
    o.instruction_budget = 100'000;
    try {
        HookEngine engine(o);
        ADD_FAILURE() << "an endless script loaded";
    } catch (const st::Error& e) {
        expect_contains(e.what(), "top.lua:2: instruction budget of 100000 exceeded");
        expect_contains(e.what(), (dir_ / "top.lua").string());
    }
}

TEST_F(LuaHooksTest, ACoroutineStoppedByTheBudgetIsNeverClosedLater) {
    // Its __close would run with hooks disabled (it died inside the budget hook): close refuses.
    auto s = write("co.lua", R"(
st.on("on_step_start", function()
  co = coroutine.create(function()
    local x <close> = setmetatable({}, {__close = function() while true do end end})
    while true do end
  end)
  coroutine.resume(co)
end)
st.on("on_step_end", function()
  local ok, err = coroutine.close(co)
  st.metric("closed", ok and 1 or 0)
  st.metric("message", err:find("stopped by the instruction budget") and 1 or 0)
end))");
    auto o = options({s});
    o.instruction_budget = 100'000;
    o.on_error = HookErrorPolicy::disable;
    HookEngine engine(o);
    engine.fire("on_step_start", json::object());
    expect_contains(*engine.last_error(), "instruction budget of 100000 exceeded");
    engine.fire("on_step_end", json::object());
    auto m = metrics(engine.take_actions());
    EXPECT_EQ(m["closed"], 0);
    EXPECT_EQ(m["message"], 1);
}

TEST_F(LuaHooksTest, InstructionBudgetIsPerCall) {
    // ~60k instructions per call under a 200k budget: fine however many calls.
    auto s = write("work.lua", R"(
st.on("on_step_end", function(ev) local x = 0 for i = 1, 20000 do x = x + i end ev.x = x end))");
    auto o = options({s});
    o.instruction_budget = 200'000;
    HookEngine engine(o);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(engine.fire("on_step_end", json::object())["x"], 200010000);
    EXPECT_FALSE(engine.last_error().has_value());
    EXPECT_FALSE(engine.take_actions().stop);
}

TEST_F(LuaHooksTest, MemoryCapStopsHogsAndTheEngineRecovers) {
    const std::vector<std::string> hogs = {
        "local s = string.rep('x', 64 * 1024 * 1024)",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
        "local t = {} for i = 1, 1e9 do t[#t + 1] = tostring(i) .. 'padding padding' end",
        "pcall(string.rep, 'x', 64 * 1024 * 1024) st.metric('escaped', 1)",
        "pcall(function() local t = {} for i = 1, 1e9 do t[i] = {i} end end) st.metric('escaped', 1)",
        "local s = 'x' while true do s = s .. s end",
        "coroutine.resume(coroutine.create(function() local s = string.rep('x', 1 << 26) end)) "
        "st.metric('escaped', 1)",
    };
    for (const auto& body : hogs) {
        SCOPED_TRACE(body);
        auto hog = write("hog.lua", "st.on('on_step_end', function()\n" + body + "\nend)\n");
        auto ok = write("ok.lua", "st.on('on_step_end', function() st.metric('ok', 1) end)\n");
        auto o = options({hog, ok});
        o.memory_limit_bytes = 8u << 20;
        o.instruction_budget = 1'000'000'000;
        o.on_error = HookErrorPolicy::disable;
        HookEngine engine(o);
        engine.fire("on_step_end", json::object());
        HookActions a = engine.take_actions();
        ASSERT_TRUE(engine.last_error().has_value());
        expect_contains(*engine.last_error(), "memory limit of 8.0 MiB exceeded (lua_memory_limit_mb)");
        expect_contains(*engine.last_error(), "hog.lua:");
        EXPECT_EQ(metrics(a).count("escaped"), 0u);
        EXPECT_EQ(metrics(a)["ok"], 1);  // the next handler still runs
        EXPECT_FALSE(a.stop);
        EXPECT_LT(engine.memory_used(), 2u << 20);  // the hog's garbage is collected
        engine.fire("on_step_end", json::object());
        EXPECT_EQ(metrics(engine.take_actions())["ok"], 1);
    }
}

// ---- errors --------------------------------------------------------------------------------------

TEST_F(LuaHooksTest, ErrorPolicyStopQueuesAStopWithFileLineAndTraceback) {
    auto s = write("bad.lua", R"(local function helper(x)
  error("boom " .. x)
end
st.on("on_step_end", function(ev) helper(ev.step) end)
st.on("on_step_end", function(ev) st.metric("second", 1) end)
)");
    HookEngine engine(options({s}));
    engine.fire("on_step_end", {{"step", 3}});
    HookActions a = engine.take_actions();
    EXPECT_TRUE(a.stop);
    EXPECT_TRUE(a.error) << "the host exits non-zero";
    expect_contains(a.stop_reason, "Lua hook error: bad.lua:2: boom 3");
    expect_contains(a.stop_reason, "(on_step_end handler #1 of bad.lua, defined at line 4)");
    ASSERT_TRUE(engine.last_error().has_value());
    expect_contains(*engine.last_error(), "bad.lua:2: boom 3");
    expect_contains(*engine.last_error(), "stack traceback:");
    expect_contains(*engine.last_error(), "bad.lua:2: in ");
    expect_contains(*engine.last_error(), "bad.lua:4: in function <bad.lua:4>");
    EXPECT_EQ(metrics(a)["second"], 1);
    // The failing handler is gone, the other one stays.
    engine.fire("on_step_end", {{"step", 4}});
    a = engine.take_actions();
    EXPECT_FALSE(a.stop);
    EXPECT_EQ(metrics(a)["second"], 1);
}

TEST_F(LuaHooksTest, ErrorPolicyDisableRemovesTheHandlerAndGoesOn) {
    auto s = write("flaky.lua", R"(
st.on("on_step_end", function(ev) if ev.step == 2 then local t = nil; return t.x end st.metric("flaky", ev.step) end)
)");
    auto o = options({s});
    o.on_error = HookErrorPolicy::disable;
    HookEngine engine(o);
    engine.fire("on_step_end", {{"step", 1}});
    engine.fire("on_step_end", {{"step", 2}});
    engine.fire("on_step_end", {{"step", 3}});
    HookActions a = engine.take_actions();
    EXPECT_FALSE(a.stop);
    EXPECT_FALSE(a.error);
    ASSERT_EQ(a.metrics.size(), 1u);  // step 1 only: removed at step 2
    EXPECT_FALSE(engine.has_handlers("on_step_end"));
    expect_contains(*engine.last_error(), "flaky.lua:2: attempt to index a nil value (local 't')");
}

TEST_F(LuaHooksTest, LoadErrorsNameTheScriptAndLine) {
    expect_contains(load_error("local x = 1\nlocal y = = 2\n", "syntax.lua"), "syntax.lua:2:");
    expect_contains(load_error("local x = 1\nlocal y = = 2\n", "syntax.lua"), "does not compile");
    std::string e = load_error("local x = 1\nerror('at load')\n", "runtime.lua");
    expect_contains(e, "runtime.lua:2: at load");
    expect_contains(e, "stack traceback");
    expect_contains(e, (dir_ / "runtime.lua").string());
    expect_contains(load_error(std::string("\x1bLua\x54\x00 binary", 12), "binary.lua"), "binary chunk");
    HookOptions o = options({dir_ / "missing.lua"});
    EXPECT_THROW(HookEngine engine(o), st::Error);
}

// ---- options -------------------------------------------------------------------------------------

TEST_F(LuaHooksTest, OptionsResolveScriptsAndValidateValues) {
    auto specs = lua_option_specs();
    std::map<std::string, st::sdk::OptionSpec> by_name;
    for (const auto& s : specs) by_name[s.name] = s;
    ASSERT_EQ(by_name.size(), 4u);
    EXPECT_EQ(by_name["lua_hooks"].type, st::sdk::OptionType::string_list);
    EXPECT_EQ(by_name["lua_hook_error"].default_value, "stop");
    EXPECT_EQ(by_name["lua_instruction_budget"].default_value, 50'000'000);
    EXPECT_EQ(by_name["lua_memory_limit_mb"].default_value, 64);

    write("rel.lua", "-- empty\n");
    fs::create_directories(dir_ / "sub");
    auto abs = write("sub/abs.lua", "-- empty\n");
    auto view = [](json j) { return st::sdk::ConfigView(std::make_shared<const json>(std::move(j))); };
    auto o = hook_options_from_config(view({{"lua_hooks", {"rel.lua", abs.string()}},
                                            {"lua_hook_error", "disable"},
                                            {"lua_instruction_budget", 1000},
                                            {"lua_memory_limit_mb", 3},
                                            {"seed", 9}}),
                                      dir_);
    ASSERT_EQ(o.scripts.size(), 2u);
    EXPECT_EQ(o.scripts[0], dir_ / "rel.lua");
    EXPECT_EQ(o.scripts[1], abs);
    EXPECT_EQ(o.on_error, HookErrorPolicy::disable);
    EXPECT_EQ(o.instruction_budget, 1000);
    EXPECT_EQ(o.memory_limit_bytes, 3u << 20);
    EXPECT_EQ(o.seed, 9u);
    EXPECT_EQ(o.config["lua_hook_error"], "disable");

    try {
        hook_options_from_config(view({{"lua_hooks", {"nope.lua"}}}), dir_);
        ADD_FAILURE() << "missing script accepted";
    } catch (const st::Error& e) {
        expect_contains(e.what(), "lua_hooks: script 'nope.lua' not found");
        expect_contains(e.what(), (dir_ / "nope.lua").string());
    }
    EXPECT_THROW(hook_options_from_config(view({{"lua_instruction_budget", 0}}), dir_), st::Error);
    EXPECT_THROW(hook_options_from_config(view({{"lua_memory_limit_mb", -1}}), dir_), st::Error);
    EXPECT_THROW(hook_options_from_config(view({{"lua_hook_error", "ignore"}}), dir_), st::Error);
    auto none = hook_options_from_config(view(json::object()), dir_);
    EXPECT_TRUE(none.scripts.empty());
    EXPECT_EQ(none.on_error, HookErrorPolicy::stop);
}

// ---- the examples of scripts/hooks -------------------------------------------------------------

fs::path example(const std::string& name) {
    return fs::path(ST_TEST_SOURCE_DIR) / "scripts" / "hooks" / name;
}

TEST_F(LuaHooksTest, ExampleEarlyStopPlateauStopsAfterPatienceSteps) {
    HookEngine engine(options({example("early_stop_plateau.lua")}));
    int step = 0;
    for (; step < 1000; ++step) {  // improving: no stop
        engine.fire("on_step_end", {{"step", step}, {"loss", 1.0 / (1.0 + 0.01 * step)}});
        ASSERT_FALSE(engine.take_actions().stop) << step;
    }
    const int plateau_start = step;
    int stop_step = -1;
    for (; step < 3000 && stop_step < 0; ++step) {
        engine.fire("on_step_end", {{"step", step}, {"loss", 0.5}});  // flat, above the best EMA
        HookActions a = engine.take_actions();
        if (a.stop) {
            stop_step = step;
            expect_contains(a.stop_reason, "loss plateau: no EMA improvement for 500 steps");
        }
    }
    // 500 steps after the last improvement, which is at most a few steps before the plateau.
    ASSERT_GE(stop_step, 0);
    EXPECT_GE(stop_step - plateau_start, 490);
    EXPECT_LE(stop_step - plateau_start, 500);
    EXPECT_FALSE(engine.has_handlers("on_step_end"));  // it unregisters after asking once
}

TEST_F(LuaHooksTest, ExampleLrSpikeScaledownHalvesOnSpikesWithCooldown) {
    HookEngine engine(options({example("lr_spike_scaledown.lua")}));
    auto step = [&](int s, double loss) {
        engine.fire("on_step_end", {{"step", s}, {"loss", loss}});
        return engine.take_actions();
    };
    for (int s = 0; s < 60; ++s) EXPECT_FALSE(step(s, 0.1).lr_scale.has_value());
    HookActions a = step(60, 1.0);  // 10x the mean
    ASSERT_TRUE(a.lr_scale.has_value());
    EXPECT_EQ(*a.lr_scale, 0.5);
    EXPECT_EQ(metrics(a)["lr_scale"], 0.5);
    EXPECT_FALSE(step(61, 1.0).lr_scale.has_value());  // cooldown
    for (int s = 62; s < 200; ++s) step(s, 0.1);
    EXPECT_FALSE(step(200, 0.25).lr_scale.has_value());  // 2.5x: below the threshold
    a = step(201, 1.0);
    ASSERT_TRUE(a.lr_scale.has_value());
    EXPECT_EQ(*a.lr_scale, 0.25);
}

TEST_F(LuaHooksTest, ExampleRotateValidationPromptsCyclesThroughItsList) {
    HookEngine engine(options({example("rotate_validation_prompts.lua")}));
    std::vector<std::string> added;
    for (int i = 0; i < 4; ++i) {
        json v = engine.fire("on_validation_start", {{"prompts", {"base prompt"}}, {"step", i * 100}});
        ASSERT_EQ(v["prompts"].size(), 2u);
        EXPECT_EQ(v["prompts"][0], "base prompt");
        added.push_back(v["prompts"][1]);
    }
    EXPECT_NE(added[0], added[1]);
    EXPECT_NE(added[1], added[2]);
    EXPECT_EQ(added[3], added[0]);  // three prompts, then around again
    expect_contains(added[0], "red fox");
}

TEST_F(LuaHooksTest, ExampleExtraMetricsWritesEmaMinAndRate) {
    HookEngine engine(options({example("extra_metrics.lua")}));
    const std::vector<double> losses = {0.5, 0.3, 0.4, 0.2};
    double ema = 0;
    std::map<std::string, double> m;
    for (size_t i = 0; i < losses.size(); ++i) {
        ema = i == 0 ? losses[i] : 0.99 * ema + 0.01 * losses[i];
        engine.fire("on_step_end",
                    {{"step", i}, {"loss", losses[i]}, {"grad_norm", 2.0}, {"step_time", 0.25}});
        m = metrics(engine.take_actions());
        EXPECT_NEAR(m["loss_ema"], ema, 1e-12);
    }
    EXPECT_DOUBLE_EQ(m["loss_min"], 0.2);
    EXPECT_DOUBLE_EQ(m["grad_norm_ema"], 2.0);
    EXPECT_DOUBLE_EQ(m["steps_per_second"], 4.0);
}

}  // namespace
