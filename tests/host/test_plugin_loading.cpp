// Plugin discovery and the manifest checks: each refusal has a message naming the file and both
// sides, and no code of a refused plugin runs.
#include <cstdlib>
#include <filesystem>

#include "plugins/guard.h"
#include "plugins/registry.h"
#include "st/error.h"
#include "st/version.h"

namespace fs = std::filesystem;
using st::host::PluginRegistry;

namespace {

const fs::path kRoot = ST_TEST_FIXTURE_ROOT;

struct MarkerDir {
    fs::path dir;
    MarkerDir() {
        dir = fs::temp_directory_path() / ("st_marker_" + std::to_string(::getpid()));
        fs::create_directories(dir);
        ::setenv("ST_FIXTURE_MARKER_DIR", dir.c_str(), 1);
    }
    ~MarkerDir() {
        ::unsetenv("ST_FIXTURE_MARKER_DIR");
        fs::remove_all(dir);
    }
    bool ran(const std::string& name) const { return fs::exists(dir / (name + ".ran")); }
};

/// Registry over exactly one fixture case directory (ST_PLUGIN_PATH cleared, install dir empty).
std::unique_ptr<PluginRegistry> load_case(const std::string& c) {
    ::unsetenv("ST_PLUGIN_PATH");
    auto reg = std::make_unique<PluginRegistry>();
    reg->discover({{kRoot / c, "--plugin-dir"}});
    return reg;
}

const st::host::Candidate& only(const PluginRegistry& reg) {
    EXPECT_EQ(reg.candidates().size(), 1u);
    return reg.candidates().at(0);
}

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "expected to find '" << part << "' in:\n" << text;
}

}  // namespace

TEST(PluginLoadingTest, AcceptsGoodPluginAndRegistersItsComponent) {
    MarkerDir markers;
    auto reg = load_case("good");
    const auto& c = only(*reg);
    EXPECT_TRUE(c.accepted) << c.reason;
    EXPECT_TRUE(c.loaded);
    EXPECT_TRUE(markers.ran("good"));
    EXPECT_EQ(c.read.manifest.plugin_name, "good");
    EXPECT_EQ(c.read.manifest.fingerprint, ST_BUILD_FINGERPRINT);
    const auto* e = reg->find("lr.fixture_good@1");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->kind, "lr");
    EXPECT_EQ(e->name, "fixture_good");
    EXPECT_EQ(e->version, 1);
    ASSERT_EQ(e->info.options.size(), 1u);
    EXPECT_EQ(e->info.options[0].owner, "lr.fixture_good@1");
    auto sched = e->lr_scheduler(st::sdk::LrSchedulerInit{});
    EXPECT_DOUBLE_EQ(sched->lr(3, 1e-4), 5e-5);
    EXPECT_EQ(reg->find_latest("lr", "fixture_good"), e);
}

TEST(PluginLoadingTest, RefusesDifferentAbiMajorWithoutRunningPluginCode) {
    MarkerDir markers;
    auto reg = load_case("bad_major");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, (kRoot / "bad_major" / "st-bad_major.so").string());
    expect_contains(c.reason, "ABI major differs");
    expect_contains(c.reason, "ABI 99.0");
    expect_contains(c.reason, "this host has ABI " + std::to_string(ST_SDK_ABI_MAJOR) + ".");
    EXPECT_FALSE(markers.ran("bad_major")) << "a static constructor of a refused plugin ran";
    EXPECT_TRUE(reg->components().empty());
}

TEST(PluginLoadingTest, RefusesPluginBuiltAgainstNewerMinor) {
    MarkerDir markers;
    auto reg = load_case("newer_minor");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "st-newer_minor.so");
    expect_contains(c.reason, "newer SDK");
    expect_contains(c.reason,
                    "ABI " + std::to_string(ST_SDK_ABI_MAJOR) + "." + std::to_string(ST_SDK_ABI_MINOR + 1));
    expect_contains(c.reason, "this host (ABI " + std::to_string(ST_SDK_ABI_MAJOR) + "." +
                                  std::to_string(ST_SDK_ABI_MINOR) + ")");
    EXPECT_FALSE(markers.ran("newer_minor"));
}

TEST(PluginLoadingTest, RefusesDifferentFingerprintShowingBoth) {
    MarkerDir markers;
    auto reg = load_case("bad_fingerprint");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "st-bad_fingerprint.so");
    expect_contains(c.reason, "fingerprint differs");
    expect_contains(c.reason, "gcc-0.0.0,c++=201703L");
    expect_contains(c.reason, ST_BUILD_FINGERPRINT);
    EXPECT_FALSE(markers.ran("bad_fingerprint"));
}

TEST(PluginLoadingTest, RefusesMissingEntrySymbol) {
    MarkerDir markers;
    auto reg = load_case("no_entry");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "st-no_entry.so");
    expect_contains(c.reason, "entry symbol 'st_plugin_entry_v1' is missing");
    EXPECT_FALSE(markers.ran("no_entry"));
}

TEST(PluginLoadingTest, RefusesFileThatIsNotASharedLibrary) {
    auto reg = load_case("not_a_library");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "st-text.so");
    expect_contains(c.reason, "not a shared library");
}

TEST(PluginLoadingTest, RefusesRelocatableObjectNamedSo) {
    auto reg = load_case("not_shared");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "st-object.so");
    expect_contains(c.reason, "not a shared library (ELF type");
}

TEST(PluginLoadingTest, RefusesDuplicateComponentIdNamingBothFiles) {
    MarkerDir markers;
    auto reg = load_case("dup");
    ASSERT_EQ(reg->candidates().size(), 2u);
    const auto& a = reg->candidates()[0];
    const auto& b = reg->candidates()[1];
    EXPECT_TRUE(a.accepted) << a.reason;
    EXPECT_FALSE(b.accepted);
    expect_contains(b.reason, "st-dup_b.so");
    expect_contains(b.reason, "duplicate component id 'lr.dupe@1'");
    expect_contains(b.reason, "st-dup_a.so");
    EXPECT_FALSE(markers.ran("dup_b"));
    ASSERT_NE(reg->find("lr.dupe@1"), nullptr);
    EXPECT_EQ(reg->find("lr.dupe@1")->plugin_name, "dup_a");
}

TEST(PluginLoadingTest, EntryPointErrorRefusesPluginWithItsMessage) {
    auto reg = load_case("entry_throws");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "entry point refuses on purpose");
    expect_contains(c.reason, "entry_throws");
    EXPECT_TRUE(reg->components().empty());
}

TEST(PluginLoadingTest, ComponentNotInManifestIsRefused) {
    auto reg = load_case("unlisted");
    const auto& c = only(*reg);
    EXPECT_FALSE(c.accepted);
    expect_contains(c.reason, "lr.not_in_manifest@1");
    expect_contains(c.reason, "not listed in the plugin's manifest");
    EXPECT_TRUE(reg->components().empty());
}

TEST(PluginLoadingTest, PluginExceptionGainsPluginComponentAndPhase) {
    auto reg = load_case("good");
    const auto* e = reg->find("lr.fixture_good@1");
    ASSERT_NE(e, nullptr);
    auto sched = e->lr_scheduler(st::sdk::LrSchedulerInit{});
    try {
        st::host::call_plugin(*e, "lr", [&] { return sched->lr(-1, 1.0); });
        FAIL() << "expected an exception";
    } catch (const st::Error& err) {
        std::string what = err.what();
        expect_contains(what, "negative step -1");
        expect_contains(what, "plugin 'good'");
        expect_contains(what, "component 'lr.fixture_good@1'");
        expect_contains(what, "phase 'lr'");
    }
}

TEST(PluginLoadingTest, SearchPathOrderIsCliThenEnvThenInstall) {
    ::setenv("ST_PLUGIN_PATH", "/a:/b", 1);
    auto dirs = st::host::plugin_search_dirs({"/cli1", "/cli2"});
    ::unsetenv("ST_PLUGIN_PATH");
    ASSERT_GE(dirs.size(), 5u);
    EXPECT_EQ(dirs[0].first, "/cli1");
    EXPECT_EQ(dirs[1].first, "/cli2");
    EXPECT_EQ(dirs[2].first, "/a");
    EXPECT_EQ(dirs[2].second, "ST_PLUGIN_PATH");
    EXPECT_EQ(dirs[3].first, "/b");
    EXPECT_EQ(dirs[4].second, "install");
    EXPECT_EQ(dirs[4].first.filename(), "plugins");
}
