#include "plugins/registry.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "plugins/fingerprint.h"
#include "st/error.h"
#include "st/log.h"
#include "st/plugin.h"

namespace st::host {
namespace fs = std::filesystem;

namespace {

fs::path executable_dir() {
    std::error_code ec;
    auto exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : exe.parent_path();
}

/// Collects registrations of one plugin; committed to the registry only if the entry point
/// returns normally and everything the manifest lists was registered.
class HostRegistrar final : public sdk::Registrar {
  public:
    HostRegistrar(const Candidate& c, const std::map<std::string, ComponentEntry>& existing)
        : candidate_(c), existing_(existing), name_(c.read.manifest.plugin_name) {}

    void add_model(sdk::ComponentInfo info, sdk::ModelFactory f) override {
        entry("model", std::move(info)).model = std::move(f);
    }
    void add_optimizer(sdk::ComponentInfo info, sdk::OptimizerFactory f) override {
        entry("optim", std::move(info)).optimizer = std::move(f);
    }
    void add_lr_scheduler(sdk::ComponentInfo info, sdk::LrSchedulerFactory f) override {
        entry("lr", std::move(info)).lr_scheduler = std::move(f);
    }
    void add_regularizer(sdk::ComponentInfo info, sdk::RegularizerFactory f) override {
        entry("reg", std::move(info)).regularizer = std::move(f);
    }
    void add_data_backend(sdk::ComponentInfo info, sdk::DataBackendFactory f) override {
        entry("data", std::move(info)).data_backend = std::move(f);
    }
    void add_command(sdk::ComponentInfo info, sdk::CommandSpec c) override {
        if (!c.run) fail("registrar", "register", "command '{}' has no run function", info.id);
        entry("cmd", std::move(info)).command = std::move(c);
    }
    void add_forward_tool(sdk::ComponentInfo info, sdk::ForwardTool t) override {
        if (!t.run) fail("registrar", "register", "forward tool '{}' has no run function", info.id);
        entry("forward", std::move(info)).forward = std::move(t);
    }
    const std::string& plugin_name() const override { return name_; }

    std::map<std::string, ComponentEntry> staged;

  private:
    ComponentEntry& entry(const std::string& method_kind, sdk::ComponentInfo info) {
        ComponentEntry e;
        if (!sdk::parse_component_id(info.id, &e.kind, &e.name, &e.version))
            fail("registrar", "register", "component id '{}' is malformed: expected kind.name@N", info.id);
        if (e.kind != method_kind)
            fail("registrar", "register", "component '{}' registered as kind '{}' but its id says '{}'",
                 info.id, method_kind, e.kind);
        const auto& listed = candidate_.read.manifest.components;
        if (std::find(listed.begin(), listed.end(), info.id) == listed.end())
            fail("registrar", "register", "component '{}' is not listed in the plugin's manifest", info.id);
        if (staged.count(info.id)) fail("registrar", "register", "component '{}' registered twice", info.id);
        std::set<std::string> seen;
        for (auto& o : info.options) {
            if (o.name.empty())
                fail("registrar", "register", "component '{}' declares an option without a name", info.id);
            if (!seen.insert(o.name).second)
                fail("registrar", "register", "component '{}' declares option '{}' twice", info.id, o.name);
            o.owner = info.id;
        }
        e.id = info.id;
        e.plugin_name = name_;
        e.plugin_file = candidate_.file;
        e.plugin_abi_minor = candidate_.read.manifest.abi_minor;
        e.info = std::move(info);
        return staged[e.id] = std::move(e);
    }

    const Candidate& candidate_;
    const std::map<std::string, ComponentEntry>& existing_;
    std::string name_;
};

}  // namespace

std::vector<std::pair<fs::path, std::string>> plugin_search_dirs(const std::vector<std::string>& cli_dirs,
                                                                 bool include_install) {
    std::vector<std::pair<fs::path, std::string>> dirs;
    for (const auto& d : cli_dirs) dirs.emplace_back(d, "--plugin-dir");
    if (const char* env = std::getenv("ST_PLUGIN_PATH")) {
        std::string s(env);
        size_t start = 0;
        while (start <= s.size()) {
            size_t end = s.find(':', start);
            if (end == std::string::npos) end = s.size();
            if (end > start) dirs.emplace_back(s.substr(start, end - start), "ST_PLUGIN_PATH");
            start = end + 1;
        }
    }
#ifdef ST_PLUGIN_INSTALL_SUBDIR
    auto exe = executable_dir();
    if (include_install && !exe.empty())
        dirs.emplace_back((exe.parent_path() / ST_PLUGIN_INSTALL_SUBDIR).lexically_normal(), "install");
#endif
    return dirs;
}

PluginRegistry::PluginRegistry() = default;
PluginRegistry::~PluginRegistry() {
    // Components (and the factories' closures) must die before their libraries could go; the
    // libraries themselves stay mapped until the process exits (plugins are never unloaded: a
    // plugin may have registered LibTorch operators or thread-local state).
    components_.clear();
    static auto* keep_loaded = new std::vector<boost::dll::shared_library>();
    for (auto& lib : libraries_) keep_loaded->push_back(std::move(lib));
}

void PluginRegistry::discover(const std::vector<std::pair<fs::path, std::string>>& dirs) {
    std::set<fs::path> seen_files;
    for (const auto& [dir, origin] : dirs) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) {
            log::debug("host.plugins", "plugin directory {} ({}) does not exist", dir.string(), origin);
            continue;
        }
        std::vector<fs::path> files;
        for (const auto& de : fs::directory_iterator(dir, ec)) {
            if (de.path().extension() == ".so") files.push_back(de.path());
        }
        std::sort(files.begin(), files.end());
        for (const auto& f : files) {
            auto canon = fs::weakly_canonical(f, ec);
            if (!seen_files.insert(ec ? f : canon).second) continue;  // same file through two dirs
            Candidate c;
            c.file = f;
            c.origin = origin;
            candidates_.push_back(std::move(c));
        }
    }
    std::map<std::string, std::string> claimed;  // component id -> file that provides it
    for (auto& c : candidates_) check(c, claimed);
    for (auto& c : candidates_)
        if (c.accepted) load(c);
}

void PluginRegistry::check(Candidate& c, std::map<std::string, std::string>& claimed) {
    c.read = read_manifest(c.file);
    const auto& r = c.read;
    const auto& m = r.manifest;
    const std::string file = c.file.string();
    if (!r.is_shared_library) {
        c.reason = fmt::format("{}: {}", file, r.problem);
        return;
    }
    if (!r.has_manifest) {
        c.reason = fmt::format("{}: {}", file, r.problem);
        return;
    }
    if (m.abi_major != ST_SDK_ABI_MAJOR) {
        c.reason = fmt::format(
            "{}: SDK ABI major differs: plugin '{}' was built against ABI {}.{}, this host "
            "has ABI {}.{}; rebuild the plugin against this SDK",
            file, m.plugin_name, m.abi_major, m.abi_minor, ST_SDK_ABI_MAJOR, ST_SDK_ABI_MINOR);
        return;
    }
    if (m.abi_minor > ST_SDK_ABI_MINOR) {
        c.reason = fmt::format(
            "{}: plugin '{}' was built against a newer SDK (ABI {}.{}) than this host (ABI "
            "{}.{}); upgrade st-host or rebuild the plugin against this SDK",
            file, m.plugin_name, m.abi_major, m.abi_minor, ST_SDK_ABI_MAJOR, ST_SDK_ABI_MINOR);
        return;
    }
    if (const std::string diff = fingerprint_difference(m.fingerprint, ST_BUILD_FINGERPRINT); !diff.empty()) {
        c.reason = fmt::format(
            "{}: build fingerprint differs ({}): plugin '{}' has '{}', this host has '{}'; host and "
            "plugins must share the compiler's major version, C++ standard, libstdc++ ABI and LibTorch build",
            file, diff, m.plugin_name, m.fingerprint, ST_BUILD_FINGERPRINT);
        return;
    }
    if (!r.has_entry) {
        c.reason = fmt::format(
            "{}: entry symbol '{}' is missing (the plugin has a manifest but no "
            "ST_PLUGIN_ENTRY)",
            file, ST_ENTRY_SYMBOL);
        return;
    }
    if (m.plugin_name.empty()) {
        c.reason = fmt::format("{}: manifest has an empty plugin name", file);
        return;
    }
    for (const auto& id : m.components) {
        if (!sdk::parse_component_id(id, nullptr, nullptr, nullptr)) {
            c.reason = fmt::format("{}: manifest lists a malformed component id '{}' (expected kind.name@N)",
                                   file, id);
            return;
        }
    }
    for (const auto& id : m.components) {
        auto it = claimed.find(id);
        if (it != claimed.end()) {
            c.reason =
                fmt::format("{}: duplicate component id '{}': already provided by {}", file, id, it->second);
            return;
        }
    }
    for (const auto& id : m.components) claimed[id] = file;
    c.accepted = true;
}

void PluginRegistry::load(Candidate& c) {
    const std::string file = c.file.string();
    try {
        boost::dll::shared_library lib(c.file.string(),
                                       boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
        auto& entry = lib.get<st_plugin_entry_fn>(ST_ENTRY_SYMBOL);
        HostRegistrar reg(c, components_);
        try {
            entry(reg);
        } catch (const Error& e) {
            throw e.with_context(
                fmt::format("in the entry point of plugin '{}' ({})", reg.plugin_name(), file));
        } catch (const std::exception& e) {
            throw Error(
                "host.plugins", "register",
                fmt::format("entry point of plugin '{}' ({}) threw: {}", reg.plugin_name(), file, e.what()));
        }
        for (const auto& id : c.read.manifest.components) {
            if (!reg.staged.count(id))
                fail("host.plugins", "register",
                     "plugin '{}' ({}) lists component '{}' in its manifest but did not "
                     "register it",
                     reg.plugin_name(), file, id);
        }
        for (auto& [id, e] : reg.staged) components_[id] = std::move(e);
        libraries_.push_back(std::move(lib));
        c.loaded = true;
    } catch (const Error& e) {
        c.accepted = false;
        c.reason = fmt::format("{}: {}", file, e.what());
    } catch (const std::exception& e) {
        c.accepted = false;
        c.reason = fmt::format("{}: cannot be loaded: {}", file, e.what());
    }
    if (!c.accepted) log::warn("host.plugins", "refused {}", c.reason);
}

const ComponentEntry* PluginRegistry::find(const std::string& id) const {
    auto it = components_.find(id);
    return it == components_.end() ? nullptr : &it->second;
}

const ComponentEntry* PluginRegistry::find_latest(const std::string& kind, const std::string& name) const {
    const ComponentEntry* best = nullptr;
    for (const auto& [id, e] : components_)
        if (e.kind == kind && e.name == name && (!best || e.version > best->version)) best = &e;
    return best;
}

std::vector<const ComponentEntry*> PluginRegistry::of_kind(const std::string& kind) const {
    std::vector<const ComponentEntry*> out;
    for (const auto& [id, e] : components_)
        if (e.kind == kind) out.push_back(&e);
    return out;
}

std::vector<const ComponentEntry*> PluginRegistry::of_plugin(const std::string& plugin) const {
    std::vector<const ComponentEntry*> out;
    for (const auto& [id, e] : components_)
        if (e.plugin_name == plugin) out.push_back(&e);
    return out;
}

std::vector<std::string> PluginRegistry::plugin_names() const {
    std::vector<std::string> out;
    for (const auto& c : candidates_)
        if (c.loaded) out.push_back(c.read.manifest.plugin_name);
    return out;
}

}  // namespace st::host
