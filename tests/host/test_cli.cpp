// st-host end to end through its command line (the built binary, fixture plugins).
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "st/safetensors.h"

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = ST_TEST_FIXTURE_ROOT;

struct Result {
    int code = -1;
    std::string out;  ///< stdout and stderr together
};

/// `prefix` goes before the binary (e.g. "timeout 60").
Result run(const std::string& args, const std::string& prefix = "") {
    std::string cmd = std::string("ST_PLUGIN_PATH= ") + prefix + " " + ST_HOST_EXE +
                      " --no-install-plugins " + args + " 2>&1";
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected '" << part << "' in:\n" << text;
}

std::string dir(const std::string& c) {
    return "--plugin-dir " + (kRoot / c).string();
}

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("st_cli_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST(CliTest, HelpListsCommandsAndHostOptions) {
    auto r = run("--help");
    EXPECT_EQ(r.code, 0);
    expect_contains(r.out, "st-host plugins");
    expect_contains(r.out, "st-host inspect FILE_OR_DIR");
    expect_contains(r.out, "--output_dir <string>");
    expect_contains(r.out, "--plugin-dir DIR");
    // The keys of the training loop, validation, webhooks and Lua hooks, with their defaults.
    expect_contains(r.out, "--max_train_steps <integer>");
    expect_contains(r.out, "--checkpoints_total_limit <integer> [1, 1000000] (default 5)");
    expect_contains(r.out, "--validation_step_interval <integer>");
    expect_contains(r.out, "--webhook_config");
    expect_contains(r.out, "--lua_hooks");
    expect_contains(r.out, "--eval_steps_interval <integer>");
}

TEST(CliTest, HelpWithPluginAddsItsOptions) {
    auto r = run("--help --plugin fixture_model " + dir("model"));
    EXPECT_EQ(r.code, 0) << r.out;
    expect_contains(r.out, "Options of model.fixture@1");
    expect_contains(r.out, "--fixture_scale <number> (default 1.0)");
    expect_contains(r.out, "--fixture_mode <string> {a|b}");
}

TEST(CliTest, PluginsCommandShowsAcceptedAndRefusedWithReasons) {
    auto r = run("plugins " + dir("good") + " " + dir("bad_major") + " " + dir("not_a_library"));
    EXPECT_EQ(r.code, 0) << r.out;
    expect_contains(r.out, "st-good.so [--plugin-dir]: accepted");
    expect_contains(r.out, "component lr.fixture_good@1: fixture scheduler");
    expect_contains(r.out, "fingerprint gcc-");
    expect_contains(r.out, "st-bad_major.so [--plugin-dir]: refused:");
    expect_contains(r.out, "ABI major differs");
    expect_contains(r.out, "st-text.so [--plugin-dir]: refused:");
    expect_contains(r.out, "3 plugin file(s) found, 1 accepted, 2 refused");
}

TEST(CliTest, EnvironmentPluginPathIsSearched) {
    std::string cmd = std::string("ST_PLUGIN_PATH=") + (kRoot / "good").string() + " " + ST_HOST_EXE +
                      " --no-install-plugins plugins 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    pclose(p);
    expect_contains(out, "st-good.so [ST_PLUGIN_PATH]: accepted");
}

TEST(CliTest, RunValidatesConfigAndWritesResolvedConfig) {
    TempDir t;
    std::ofstream(t.path / "config.json")
        << R"({"model_family": "fixture", "fixture_scale": "2.5", "seed": 42,
        "output_dir": ")"
        << (t.path / "out").string() << R"("})";
    auto r = run(dir("model") + " " + (t.path / "config.json").string() + " --seed=7 --fixture_flag");
    // The resolved config is written before the trainer starts; the trainer then stops because the
    // fixture config names no model files.
    EXPECT_EQ(r.code, 1) << r.out;
    expect_contains(r.out, "pretrained_model_name_or_path is not set");
    expect_contains(r.out, "model family model.fixture@1 from plugin fixture_model");
    expect_contains(r.out, "BLAS:");
    expect_contains(r.out, "ATen intra-op threads: 1");
    expect_contains(r.out, "threads |");
    std::ifstream in(t.path / "out" / "config.resolved.json");
    ASSERT_TRUE(in.good());
    auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["seed"], 7);
    EXPECT_DOUBLE_EQ(j["fixture_scale"].get<double>(), 2.5);
    EXPECT_EQ(j["fixture_flag"], true);
    EXPECT_EQ(j["fixture_mode"], "a");
    EXPECT_TRUE(fs::exists(t.path / "out" / "run_info.json"));
}

TEST(CliTest, DeeplyNestedJsonIsRefusedNotACrash) {
    // Issue 18: ~50k nested arrays overflowed the stack (SIGSEGV) when the config was copied or dumped.
    TempDir t;
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    std::ofstream(t.path / "value.json")
        << R"({"model_family": "fixture", "webhook_config": )" << deep << "}";
    auto r = run(dir("model") + " " + (t.path / "value.json").string());
    EXPECT_EQ(r.code, 1) << r.out;
    expect_contains(r.out, "nests JSON more than 128 levels deep");
    expect_contains(r.out, (t.path / "value.json").string());
    // A nested JSON string on the command line too (one argument may hold 128 KiB).
    std::ofstream(t.path / "plain.json") << R"({"model_family": "fixture"})";
    const std::string cli = std::string(30000, '[') + std::string(30000, ']');
    auto c = run(dir("model") + " " + (t.path / "plain.json").string() + " --tread_config '" + cli + "'");
    EXPECT_EQ(c.code, 1) << c.out.substr(0, 2000);
    expect_contains(c.out, "tread_config");
    expect_contains(c.out, "levels deep");
}

// Issue 18: absurd numbers ran, allocated without bound or printed as negative numbers; each is now
// refused before anything runs, with the key, the value and the allowed range.
TEST(CliTest, AbsurdNumbersAreRefusedWithTheirRange) {
    TempDir t;
    std::ofstream(t.path / "config.json")
        << R"({"model_family": "fixture", "train_batch_size": 9223372036854775808,
        "lora_rank": 1099511627776, "max_train_steps": 9223372036854775807, "num_threads": 0,
        "eval_steps_interval": -1, "learning_rate": "inf", "output_dir": ")"
        << (t.path / "out").string() << R"("})";
    auto r =
        run(dir("model") + " " + (t.path / "config.json").string() + " --gradient_accumulation_steps=-1");
    EXPECT_EQ(r.code, 1) << r.out;
    expect_contains(
        r.out, "train_batch_size = 9223372036854775808 (config file): expected a whole number in [1, 4096]");
    expect_contains(r.out, "lora_rank = 1099511627776 (config file): expected a whole number in [1, 65536]");
    expect_contains(
        r.out,
        "max_train_steps = 9223372036854775807 (config file): expected a whole number in [0, 1000000000]");
    expect_contains(r.out, "num_threads = 0 (config file): expected a whole number in [1, 1024]");
    expect_contains(r.out,
                    "eval_steps_interval = -1 (config file): expected a whole number in [0, 1000000000]");
    expect_contains(r.out, "learning_rate = \"inf\" (config file): expected a number");
    expect_contains(
        r.out, "gradient_accumulation_steps = \"-1\" (command line): expected a whole number in [1, 65536]");
    EXPECT_FALSE(fs::exists(t.path / "out" / "config.resolved.json"));
    // --help shows the ranges.
    auto h = run("--help");
    expect_contains(h.out, "--train_batch_size <integer> [1, 4096]");
}

// Issue 18: "1e999" failed with "number overflow" naming neither the file nor the key.
TEST(CliTest, NumberOverflowNamesTheFileLineAndKey) {
    TempDir t;
    std::ofstream(t.path / "config.json") << "{\"model_family\": \"fixture\",\n  \"learning_rate\": 1e999}";
    auto r = run(dir("model") + " " + (t.path / "config.json").string());
    EXPECT_EQ(r.code, 1) << r.out;
    expect_contains(r.out, (t.path / "config.json").string() + ": invalid JSON at line 2, column");
    expect_contains(r.out, "in 'learning_rate'");
    expect_contains(r.out, "number overflow");
}

// Issue 18: a FIFO or device given as a config or weights file blocked st-host forever.
TEST(CliTest, FifosAreRefusedNotWaitedOn) {
    TempDir t;
    ASSERT_EQ(::mkfifo((t.path / "config.json").c_str(), 0600), 0);
    ASSERT_EQ(::mkfifo((t.path / "model.safetensors").c_str(), 0600), 0);
    auto c = run(dir("model") + " " + (t.path / "config.json").string(), "timeout 60");
    EXPECT_EQ(c.code, 1) << c.out;
    expect_contains(c.out, "is a FIFO (named pipe), expected a config.json or config.toml file");
    auto w = run("inspect " + (t.path / "model.safetensors").string(), "timeout 60");
    EXPECT_EQ(w.code, 1) << w.out;
    expect_contains(w.out, "is not a regular file");
}

TEST(CliTest, RunWithTomlConfig) {
    TempDir t;
    std::ofstream(t.path / "config.toml")
        << "model_family = \"fixture\"\nfixture_mode = \"b\"\noutput_dir = \"" << (t.path / "out").string()
        << "\"\n";
    auto r = run(dir("model") + " " + (t.path / "config.toml").string());
    EXPECT_EQ(r.code, 1) << r.out;
    expect_contains(r.out, "pretrained_model_name_or_path is not set");
    auto j = nlohmann::json::parse(std::ifstream(t.path / "out" / "config.resolved.json"));
    EXPECT_EQ(j["fixture_mode"], "b");
}

TEST(CliTest, RunWithBadConfigFailsWithEveryProblem) {
    TempDir t;
    std::ofstream(t.path / "config.json")
        << R"({"model_family": "fixture", "fixture_scal": 2, "fixture_mode": "c"})";
    auto r = run(dir("model") + " " + (t.path / "config.json").string() + " --seed x");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "'fixture_scal' (config file): did you mean 'fixture_scale'?");
    expect_contains(r.out, "fixture_mode = \"c\" (config file): expected one of: a, b");
    expect_contains(r.out, "seed = \"x\" (command line): expected a whole number");
}

TEST(CliTest, RunWithUnknownPluginListsModelFamilies) {
    TempDir t;
    std::ofstream(t.path / "config.json") << "{}";
    auto r = run("--plugin nosuch " + dir("model") + " " + (t.path / "config.json").string());
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "no plugin named 'nosuch' was loaded");
    expect_contains(r.out, "fixture_model (model.fixture@1)");
}

TEST(CliTest, AFamilyNoPluginProvidesIsSaidBeforeItsValuesAreJudged) {
    // model_flavour's choices come from the family's plugin: without it, the missing plugin is the news.
    TempDir t;
    std::ofstream(t.path / "config.json") << R"({"model_family": "sanavideo", "model_flavour": "2b-480p"})";
    auto r = run(dir("model") + " " + (t.path / "config.json").string());
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out,
                    "model_family 'sanavideo' is not provided by any loaded plugin (is st-sanavideo.so "
                    "installed?");
    expect_contains(r.out, "loaded families: fixture");
    EXPECT_EQ(r.out.find("model_flavour"), std::string::npos) << r.out;
    // Chosen by --plugin: the missing plugin is named too (was: model_flavour's choices of no family).
    r = run(dir("model") + " --plugin sanavideo " + (t.path / "config.json").string());
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "no plugin named 'sanavideo' was loaded");
    EXPECT_EQ(r.out.find("model_flavour"), std::string::npos) << r.out;
    // Without model_family a flavour was judged against whichever family was picked.
    std::ofstream(t.path / "flavour_only.json") << R"({"model_flavour": "2b-480p"})";
    r = run(dir("model") + " " + (t.path / "flavour_only.json").string());
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "model_flavour is set but model_family is not: set model_family");
}

TEST(CliTest, APluginCommandWithoutItsPluginIsNamedAsACommand) {
    // The command of a plugin st ships names that plugin (it said only "neither a command ... nor a
    // config file"); an unknown word keeps the general message.
    auto r = run(dir("model") + " extract-audio --input-dir a --output-dir b");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out,
                    "'extract-audio' is a command of the plugin data_local (st-data_local.so), which is not "
                    "loaded (loaded plugins: ");
    r = run(dir("model") + " extract-nothing --input-dir a");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out,
                    "'extract-nothing' is neither a command of st-host or of a loaded plugin nor an existing "
                    "config file");
}

TEST(CliTest, MakeModelForwardAndInspect) {
    TempDir t;
    auto model = (t.path / "m").string();
    auto r = run("make-model --plugin fixture_model " + dir("model") + " --preset tiny --out " + model +
                 " --seed 3");
    ASSERT_EQ(r.code, 0) << r.out;
    auto x = at::ones({2, 4});
    st::sdk::save_safetensors(t.path / "in.safetensors", {{"x", x}});
    auto out = (t.path / "out.safetensors").string();
    r = run("forward --plugin fixture_model " + dir("model") + " --model " + model +
            " --component linear --inputs " + (t.path / "in.safetensors").string() + " --output " + out +
            " --fixture_scale 2");
    ASSERT_EQ(r.code, 0) << r.out;
    auto src = st::sdk::SafetensorsFile::open(out);
    auto w = st::sdk::SafetensorsFile::open(fs::path(model) / "fixture_model.safetensors");
    auto expected = (at::matmul(x, w->load("weight").t()) + w->load("bias")) * 2;
    EXPECT_TRUE(at::allclose(src->load("y"), expected));
    // A LibTorch shape error inside the plugin reaches the user with context and no C++ backtrace.
    st::sdk::save_safetensors(t.path / "bad.safetensors", {{"x", at::ones({2, 5})}});
    r = run("forward --plugin fixture_model " + dir("model") + " --model " + model +
            " --component linear --inputs " + (t.path / "bad.safetensors").string() + " --output " + out);
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "component 'model.fixture@1', phase 'forward'");
    EXPECT_EQ(r.out.find("Exception raised from"), std::string::npos) << r.out;
    r = run("inspect " + out);
    EXPECT_EQ(r.code, 0) << r.out;
    expect_contains(r.out, "y");
    expect_contains(r.out, "F32   [2, 3]");
    expect_contains(r.out, "total: 1 tensors, 6 elements");
    expect_contains(r.out, "st.component: linear");
    r = run("forward --plugin fixture_model " + dir("model") + " --model " + model +
            " --component nope --inputs x --output y");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "has no component 'nope'; it has: linear");
}

TEST(CliTest, InspectOfMissingFileIsAClearError) {
    auto r = run("inspect /nonexistent/file.safetensors");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "'/nonexistent/file.safetensors' does not exist");
}

TEST(CliTest, PluginCommandsRunAndReportErrorsWithContext) {
    auto r = run(dir("model") + " fixture-echo a b");
    EXPECT_EQ(r.code, 2) << r.out;
    expect_contains(r.out, "echo:a\necho:b");
    r = run(dir("model") + " fixture-echo fail");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "asked to fail");
    expect_contains(r.out, "component 'cmd.fixture-echo@1', phase 'run'");
    r = run(dir("model") + " bench fixture");
    EXPECT_EQ(r.code, 0) << r.out;
    expect_contains(r.out, "bench ran");
    r = run("--plugin fixture " + dir("model") + " bench --flag");
    EXPECT_EQ(r.code, 0) << r.out;
    expect_contains(r.out, "bench ran");
    r = run(dir("model") + " bench nothing");
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "no benchmark 'nothing'; available: fixture");
    r = run("--help " + dir("model"));
    expect_contains(r.out, "st-host fixture-echo ARGS...");
}

// #23: SimpleTuner users start training from the folder that holds config/, without naming the file;
// ENV, CONFIG_BACKEND, CONFIG_PATH and config/config.env pick it as SimpleTuner does.
TEST(CliTest, WithoutAConfigFileSimpleTunersConfigFolderRulesApply) {
    TempDir t;
    auto write_config = [&](const fs::path& rel, const std::string& mode) {
        fs::create_directories((t.path / rel).parent_path());
        if (rel.extension() == ".toml")
            std::ofstream(t.path / rel)
                << "model_family = \"fixture\"\nfixture_mode = \"" << mode << "\"\noutput_dir = \""
                << (t.path / ("out_" + mode)).string() << "\"\n";
        else
            std::ofstream(t.path / rel)
                << R"({"model_family": "fixture", "fixture_mode": ")" << mode << R"(", "output_dir": ")"
                << (t.path / ("out_" + mode)).string() << R"("})";
    };
    auto mode_of = [&](const std::string& mode) {
        std::ifstream in(t.path / ("out_" + mode) / "config.resolved.json");
        return in.good() ? nlohmann::json::parse(in)["fixture_mode"].get<std::string>() : std::string("none");
    };
    const std::string cd = "cd '" + t.path.string() + "' && ";
    const std::string clean =
        "env -u ENV -u SIMPLETUNER_ENV -u SIMPLETUNER_ENVIRONMENT -u CONFIG_BACKEND "
        "-u SIMPLETUNER_CONFIG_BACKEND -u CONFIG_TYPE -u CONFIG_PATH ST_PLUGIN_PATH= ";
    write_config("config/config.json", "a");
    auto r = run(dir("model") + " --seed 3", cd + clean);
    EXPECT_EQ(r.code, 1) << r.out;  // the fixture names no model files; the config was read
    expect_contains(r.out, "no config file given: using " + (t.path / "config/config.json").string());
    EXPECT_EQ(mode_of("a"), "a");
    // ENV selects config/<env>/config.json; config/config.env can set ENV.
    write_config("config/lora/config.json", "b");
    r = run(dir("model"), cd + clean + "ENV=lora");
    EXPECT_EQ(mode_of("b"), "b") << r.out;
    fs::remove_all(t.path / "out_b");
    std::ofstream(t.path / "config/config.env") << "# SimpleTuner's env file\nexport ENV=lora\n";
    r = run(dir("model"), cd + clean);
    EXPECT_EQ(mode_of("b"), "b") << r.out;
    expect_contains(r.out, "environment from config/config.env");
    fs::remove(t.path / "config/config.env");
    // CONFIG_BACKEND=toml reads config/config.toml; CONFIG_PATH names a file.
    write_config("config/config.toml", "b");
    fs::remove_all(t.path / "out_b");
    r = run(dir("model"), cd + clean + "CONFIG_BACKEND=toml");
    EXPECT_EQ(mode_of("b"), "b") << r.out;
    write_config("elsewhere/mine.json", "a");
    fs::remove_all(t.path / "out_a");
    r = run(dir("model"), cd + clean + "CONFIG_PATH=elsewhere/mine.json");
    EXPECT_EQ(mode_of("a"), "a") << r.out;
    // The env backend: SimpleTuner's variables (env_to_args_map) from config/config.env, then
    // TRAINER_EXTRA_ARGS (which win, coming later); "false" leaves a flag out.
    std::ofstream(t.path / "config/config.env")
        << "export CONFIG_BACKEND=env\nMODEL_FAMILY=fixture\nTRAINING_SEED=5\nOUTPUT_DIR="
        << (t.path / "out_b").string()
        << "\nUSE_EMA=false\nexport TRAINER_EXTRA_ARGS=\"--fixture_mode=b\"\nTRAINER_EXTRA_ARGS+=\"--seed "
           "3\"\n";
    fs::remove_all(t.path / "out_b");
    r = run(dir("model"),
            cd + "env -u MODEL_FAMILY -u TRAINING_SEED -u OUTPUT_DIR -u TRAINER_EXTRA_ARGS " + clean);
    EXPECT_EQ(mode_of("b"), "b") << r.out;
    expect_contains(r.out,
                    "env backend: 6 argument(s) from environment variables and TRAINER_EXTRA_ARGS: "
                    "--seed=5 --output_dir=");
    {
        std::ifstream in(t.path / "out_b" / "config.resolved.json");
        ASSERT_TRUE(in.good()) << r.out;
        const auto resolved = nlohmann::json::parse(in);
        EXPECT_EQ(resolved["seed"], 3) << "TRAINER_EXTRA_ARGS come last";
        EXPECT_EQ(resolved["model_family"], "fixture");
    }
    fs::remove(t.path / "config/config.env");
    // Nothing there: the flags alone are an error naming what was tried.
    fs::remove_all(t.path / "config");
    r = run(dir("model") + " --seed 3", cd + clean);
    EXPECT_EQ(r.code, 1);
    expect_contains(r.out, "no default configuration exists (tried config/config.json)");
}
