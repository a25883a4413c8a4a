// Config files (JSON/TOML), CLI overrides and validation messages.
#include <filesystem>
#include <fstream>

#include "config/config_file.h"
#include "config/default_config.h"
#include "config/options_table.h"
#include "st/error.h"

namespace fs = std::filesystem;
using namespace st::host;
using nlohmann::json;

namespace {

OptionTable table() {
    OptionTable t;
    for (auto& s : host_options()) t.add(s);
    auto lr = st::sdk::opt_float("learning_rate", 4e-7, "lr");
    lr.owner = "optim.test@1";
    t.add(lr);
    auto steps = st::sdk::opt_int("checkpoint_step_interval", 500, "interval");
    steps.aliases = {"checkpointing_steps"};
    steps.owner = "host";
    t.add(steps);
    t.add(st::sdk::opt_bool("use_ema", false, "ema"));
    t.add(st::sdk::opt_string("lr_scheduler", "constant_with_warmup", "sched",
                              {"constant", "cosine", "constant_with_warmup"}));
    t.add(st::sdk::opt_list("lua_hooks", "scripts"));
    t.add(st::sdk::opt_json("webhook_config", "hooks"));
    return t;
}

std::string error_of(const json& file, const std::vector<std::string>& cli) {
    try {
        resolve_config(file, parse_cli_overrides(cli), table());
    } catch (const st::Error& e) {
        return e.what();
    }
    return {};
}

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in:\n" << text;
}

fs::path write_temp(const std::string& name, const std::string& text) {
    auto p = fs::temp_directory_path() / (std::to_string(::getpid()) + "_" + name);
    std::ofstream(p) << text;
    return p;
}

}  // namespace

TEST(ConfigTest, DefaultsFilledAndTypesConverted) {
    auto r =
        resolve_config(json{{"learning_rate", "1e-4"}, {"use_ema", "true"}, {"seed", 42.0}}, {}, table());
    EXPECT_DOUBLE_EQ(r.values["learning_rate"].get<double>(), 1e-4);
    EXPECT_EQ(r.values["use_ema"], true);
    EXPECT_EQ(r.values["seed"], 42);
    EXPECT_TRUE(r.values["seed"].is_number_integer());
    EXPECT_EQ(r.values["output_dir"], "simpletuner-results");
    EXPECT_EQ(r.values["checkpoint_step_interval"], 500);
    EXPECT_EQ(r.sources["learning_rate"], "file");
    EXPECT_EQ(r.sources["output_dir"], "default");
}

TEST(ConfigTest, CliOverridesFileInEveryForm) {
    auto r = resolve_config(json{{"learning_rate", 1e-5}, {"seed", 1}, {"use_ema", true}},
                            parse_cli_overrides({"--learning_rate", "2e-4", "--seed=7", "--use_ema=false",
                                                 "--lua_hooks", "a.lua"}),
                            table());
    EXPECT_DOUBLE_EQ(r.values["learning_rate"].get<double>(), 2e-4);
    EXPECT_EQ(r.values["seed"], 7);
    EXPECT_EQ(r.values["use_ema"], false);
    EXPECT_EQ(r.values["lua_hooks"], json::array({"a.lua"}));
    EXPECT_EQ(r.sources["seed"], "cli");
}

TEST(ConfigTest, BareFlagSetsBooleanTrue) {
    auto r = resolve_config(json::object(), parse_cli_overrides({"--use_ema", "--seed", "3"}), table());
    EXPECT_EQ(r.values["use_ema"], true);
    EXPECT_EQ(r.values["seed"], 3);
}

TEST(ConfigTest, BareFlagOnNonBooleanIsAnError) {
    expect_contains(error_of(json::object(), {"--seed"}),
                    "--seed (command line) needs a value: expected integer");
}

TEST(ConfigTest, LeadingDashesInFileKeysAndLegacyAliases) {
    auto f = write_temp("dashes.json", R"({"--seed": 5, "checkpointing_steps": 250})");
    auto values = load_config_file(f);
    auto r = resolve_config(values, {}, table());
    EXPECT_EQ(r.values["seed"], 5);
    EXPECT_EQ(r.values["checkpoint_step_interval"], 250);
    ASSERT_FALSE(r.notes.empty());
    expect_contains(r.notes[0], "'checkpointing_steps' is the legacy name of 'checkpoint_step_interval'");
    fs::remove(f);
}

TEST(ConfigTest, TomlAndJsonGiveTheSameConfiguration) {
    auto j = write_temp("same.json",
                        R"({"learning_rate": 5e-5, "seed": 42, "use_ema": true, "output_dir": "out",
                            "lua_hooks": ["a.lua", "b.lua"], "webhook_config": {"webhook_type": "raw"}})");
    auto t = write_temp("same.toml", R"(learning_rate = 5e-5
seed = 42
use_ema = true
output_dir = "out"
lua_hooks = ["a.lua", "b.lua"]
[webhook_config]
webhook_type = "raw"
)");
    auto a = resolve_config(load_config_file(j), {}, table());
    auto b = resolve_config(load_config_file(t), {}, table());
    EXPECT_EQ(a.values, b.values);
    fs::remove(j);
    fs::remove(t);
}

TEST(ConfigTest, UnknownKeyNamesClosestKnownKey) {
    auto e = error_of(json{{"learning_rat", 1e-4}}, {});
    expect_contains(e, "unknown configuration key");
    expect_contains(e, "'learning_rat' (config file): did you mean 'learning_rate'?");
    expect_contains(error_of(json::object(), {"--outptu_dir", "x"}), "did you mean 'output_dir'?");
}

// Hostile files (issue 18): every suggestion compares a key with every known name, so a file of a
// million unknown keys, or one key of megabytes, took minutes. The first 50 unknown keys are listed
// with a suggestion, the rest counted; a suggestion compares a key's first 256 bytes.
TEST(ConfigTest, ManyOrHugeUnknownKeysAreAnsweredQuickly) {
    json many = json::object();
    for (int i = 0; i < 200000; ++i) many["unknown_key_" + std::to_string(i)] = i;
    const std::string e = error_of(many, {});
    expect_contains(e, "'unknown_key_0' (config file): did you mean");
    expect_contains(e, "... and 199950 more");
    EXPECT_EQ(e.find("unknown_key_199999"), std::string::npos);
    const std::string huge = "learning_rate" + std::string(5'000'000, 'x');
    expect_contains(error_of(json{{huge, 1}}, {}), "did you mean 'learning_rate'?");
}

TEST(ConfigTest, WrongTypeNamesKeyValueAndExpectation) {
    auto e =
        error_of(json{{"seed", "forty-two"}, {"use_ema", "maybe"}, {"learning_rate", json::array()}}, {});
    expect_contains(e, "seed = \"forty-two\" (config file): expected a whole number");
    expect_contains(e, "use_ema = \"maybe\" (config file): expected true or false");
    expect_contains(e, "learning_rate = [] (config file): expected a number");
    expect_contains(error_of(json{{"seed", 1.5}}, {}), "expected a whole number");
}

TEST(ConfigTest, ChoiceErrorListsChoices) {
    auto e = error_of(json{{"lr_scheduler", "cosine_annealing"}}, {});
    expect_contains(e, "lr_scheduler = \"cosine_annealing\"");
    expect_contains(e, "expected one of: constant, cosine, constant_with_warmup");
}

TEST(ConfigTest, UnsupportedSimpleTunerKeysAreListedTogether) {
    auto e = error_of(json{{"fsdp_enable", true}, {"use_dora", true}, {"ramtorch", true}}, {});
    expect_contains(e, "SimpleTuner options that st does not support yet");
    expect_contains(e, "fsdp_enable");
    expect_contains(e, "use_dora = true");
    expect_contains(e, "ramtorch = true");
}

TEST(ConfigTest, InertSimpleTunerKeysAreAcceptedWithANote) {
    // push_to_hub "true" as the quickstarts write it: st uploads nothing and says so.
    auto r = resolve_config(json{{"push_to_hub", "true"},
                                 {"attention_mechanism", "sageattention"},
                                 {"offload_during_startup", true}},
                            {}, table());
    ASSERT_EQ(r.notes.size(), 3u);
    std::string all = r.notes[0] + r.notes[1] + r.notes[2];
    expect_contains(all, "'attention_mechanism' = \"sageattention\" has no effect in st");
    expect_contains(all, "'push_to_hub'");
}

TEST(ConfigTest, AllProblemsReportedInOneError) {
    auto e = error_of(json{{"learning_rat", 1}, {"seed", "x"}, {"fsdp_enable", true}}, {});
    expect_contains(e, "unknown configuration key");
    expect_contains(e, "invalid value");
    expect_contains(e, "does not support yet");
}

TEST(ConfigTest, JsonOptionParsesJsonStrings) {
    auto r = resolve_config(json::object(),
                            parse_cli_overrides({"--webhook_config", R"({"webhook_type":"raw"})"}), table());
    EXPECT_EQ(r.values["webhook_config"]["webhook_type"], "raw");
    r = resolve_config(json::object(), parse_cli_overrides({"--lua_hooks", R"(["a.lua","b.lua"])"}), table());
    EXPECT_EQ(r.values["lua_hooks"], json::array({"a.lua", "b.lua"}));
}

TEST(ConfigTest, BadFilesGiveClearErrors) {
    auto missing = fs::temp_directory_path() / "st_no_such_config.json";
    try {
        load_config_file(missing);
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "st_no_such_config.json");
        expect_contains(e.what(), "does not exist");
    }
    auto bad_json = write_temp("bad.json", "{\"seed\": 1,,}");
    try {
        load_config_file(bad_json);
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "bad.json");
        expect_contains(e.what(), "invalid JSON");
    }
    auto bad_toml = write_temp("bad.toml", "seed = = 1\n");
    try {
        load_config_file(bad_toml);
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "bad.toml:1:");
        expect_contains(e.what(), "invalid TOML");
    }
    auto not_object = write_temp("list.json", "[1, 2]");
    try {
        load_config_file(not_object);
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "top level must be an object");
    }
    fs::remove(bad_json);
    fs::remove(bad_toml);
    fs::remove(not_object);
}

TEST(ConfigTest, DuplicateDeclarationNamesBothOwners) {
    OptionTable t;
    auto a = st::sdk::opt_int("x", 1, "a");
    a.owner = "optim.a@1";
    t.add(a);
    auto b = st::sdk::opt_int("x", 2, "b");
    b.owner = "optim.b@1";
    try {
        t.add(b);
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "option 'x' is declared by both 'optim.a@1' and 'optim.b@1'");
    }
}

TEST(ConfigTest, ModelFamiliesShareAKeyWithMergedChoices) {
    // wan and wan_s2v both declare the Wan pipeline keys and model_flavour (one family runs).
    OptionTable t;
    auto a = st::sdk::opt_string("pretrained_vae_model_name_or_path", std::nullopt, "from wan");
    a.owner = "model.wan@1";
    t.add(a);
    auto b = st::sdk::opt_string("pretrained_vae_model_name_or_path", std::nullopt, "from s2v");
    b.owner = "model.wan_s2v@1";
    EXPECT_NO_THROW(t.add(b));
    ASSERT_NE(t.find("pretrained_vae_model_name_or_path"), nullptr);
    EXPECT_EQ(t.find("pretrained_vae_model_name_or_path")->help, "from wan");
    auto f1 = st::sdk::opt_string("model_flavour", std::string("t2v"), "wan", {"t2v", "i2v"});
    f1.owner = "model.wan@1";
    t.add(f1);
    auto f2 = st::sdk::opt_string("model_flavour", std::string("s2v"), "s2v", {"s2v"});
    f2.owner = "model.wan_s2v@1";
    t.add(f2);
    const auto* f = t.find("model_flavour");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->choices, (std::vector<std::string>{"t2v", "i2v", "s2v"}));
    EXPECT_TRUE(f->default_value.is_null()) << "disagreeing defaults become unset";
    // ... but never a host key, a non-model component's key, or a different type.
    auto h = st::sdk::opt_int("seed", 1, "host");
    t.add(h);
    auto h2 = st::sdk::opt_int("seed", 1, "plugin");
    h2.owner = "model.wan_s2v@1";
    EXPECT_THROW(t.add(h2), st::Error);
    auto o1 = st::sdk::opt_int("y", 1, "a");
    o1.owner = "optim.a@1";
    t.add(o1);
    auto o2 = st::sdk::opt_int("y", 1, "b");
    o2.owner = "optim.b@1";
    EXPECT_THROW(t.add(o2), st::Error);
    auto c = st::sdk::opt_int("pretrained_vae_model_name_or_path", 3, "other type");
    c.owner = "model.other@1";
    EXPECT_THROW(t.add(c), st::Error);
}

TEST(ConfigTest, StrayPositionalArgumentIsAnError) {
    try {
        parse_cli_overrides({"--seed", "1", "2"});
        FAIL();
    } catch (const st::Error& e) {
        expect_contains(e.what(), "unexpected argument '2'");
    }
}

// #23: config.env as SimpleTuner's env_file.parse_env_file reads it.
TEST(ConfigTest, ConfigEnvFilesAreReadAsSimpleTunerReadsThem) {
    auto file =
        write_temp("config.env",
                   "# comment\n\nexport ENV=lora\nTRAINER_EXTRA_ARGS=\"--seed 3\"\n"
                   "TRAINER_EXTRA_ARGS+='--lora_rank 8'\nMODEL_NAME = 'Wan-AI/x'\nnot an assignment\n");
    std::vector<std::string> warnings;
    const auto vars = parse_config_env(file, &warnings);
    EXPECT_EQ(vars.at("ENV"), "lora");
    EXPECT_EQ(vars.at("TRAINER_EXTRA_ARGS"), "--seed 3 --lora_rank 8");
    EXPECT_EQ(vars.at("MODEL_NAME"), "Wan-AI/x");
    EXPECT_EQ(vars.size(), 3u);
    ASSERT_EQ(warnings.size(), 1u);
    expect_contains(warnings[0], ":7: skipped");
    EXPECT_TRUE(parse_config_env(file.string() + ".absent").empty());
    fs::remove(file);
}
