// Plugin discovery, checking, loading, and the registry of the components plugins provide.
#pragma once

#include <boost/dll/shared_library.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "plugins/manifest_reader.h"
#include "st/registrar.h"

namespace st::host {

/// One component as registered by a plugin.
struct ComponentEntry {
    std::string id;  ///< "kind.name@N"
    std::string kind;
    std::string name;
    int version = 1;
    std::string plugin_name;
    std::filesystem::path plugin_file;
    uint32_t plugin_abi_minor = 0;
    sdk::ComponentInfo info;
    sdk::ModelFactory model;
    sdk::OptimizerFactory optimizer;
    sdk::LrSchedulerFactory lr_scheduler;
    sdk::RegularizerFactory regularizer;
    sdk::DataBackendFactory data_backend;
    sdk::CommandSpec command;
    sdk::ForwardTool forward;
};

/// A file found in a plugin directory and what the host decided about it.
struct Candidate {
    std::filesystem::path file;
    std::string origin;  ///< "--plugin-dir", "ST_PLUGIN_PATH", "install"
    ManifestRead read;
    bool accepted = false;
    bool loaded = false;
    std::string reason;  ///< why refused (names the file and both sides)
};

/// Directories searched, in order: each --plugin-dir, then ST_PLUGIN_PATH entries (':'-separated),
/// then <dir of st-host>/../lib/st/plugins (unless include_install is false).
std::vector<std::pair<std::filesystem::path, std::string>> plugin_search_dirs(
    const std::vector<std::string>& cli_dirs, bool include_install = true);

class PluginRegistry {
  public:
    PluginRegistry();
    ~PluginRegistry();

    /// Reads and checks every candidate file (no plugin code runs), then loads the accepted ones
    /// and calls their entry points. Never throws for a bad plugin: it is refused with a reason.
    void discover(const std::vector<std::pair<std::filesystem::path, std::string>>& dirs);

    const std::vector<Candidate>& candidates() const { return candidates_; }
    const std::map<std::string, ComponentEntry>& components() const { return components_; }

    /// Exact id lookup; nullptr if absent.
    const ComponentEntry* find(const std::string& id) const;
    /// Highest version of kind.name; nullptr if absent.
    const ComponentEntry* find_latest(const std::string& kind, const std::string& name) const;
    std::vector<const ComponentEntry*> of_kind(const std::string& kind) const;
    std::vector<const ComponentEntry*> of_plugin(const std::string& plugin_name) const;
    /// Names of the accepted plugins.
    std::vector<std::string> plugin_names() const;

  private:
    void check(Candidate& c, std::map<std::string, std::string>& claimed_ids);
    void load(Candidate& c);
    std::vector<Candidate> candidates_;
    std::map<std::string, ComponentEntry> components_;
    std::vector<boost::dll::shared_library> libraries_;  ///< never unloaded during a run
};

}  // namespace st::host
