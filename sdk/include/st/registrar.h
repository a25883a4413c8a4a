// The Registrar: what a plugin's entry point receives to register its components.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "st/data_backend.h"
#include "st/lr_scheduler.h"
#include "st/model.h"
#include "st/optimizer.h"
#include "st/options.h"
#include "st/regularizer.h"

namespace st::sdk {

/// Static description of a component, given at registration.
struct ComponentInfo {
    std::string id;                   ///< "kind.name@N", must be listed in the plugin's manifest
    std::string summary;              ///< one line for `st-host plugins` and --help
    std::vector<OptionSpec> options;  ///< config keys this component owns
};

/// A command-line tool a plugin adds to st-host (`st-host <name> ...`, e.g. extract-audio). `run`
/// gets the arguments after the command name and returns the process exit code; it may throw
/// st::Error (reported by the host with plugin, component and phase). Commands named
/// "bench-<what>" are also reachable as `st-host bench <what>`.
struct CommandSpec {
    std::string usage;  ///< one line, e.g. "st-host extract-audio --input-dir DIR --output-dir DIR"
    std::function<int(const std::vector<std::string>& args)> run;
};

/// Networks a plugin that is not a model family runs for `st-host forward --plugin P --component C`
/// (e.g. the CREPA plugin's DINOv2 teacher), so every network st loads is checkable against the
/// goldens of its upstream code. Component id "forward.<name>@N".
struct ForwardTool {
    std::vector<std::string> components;
    /// (model path, component, named inputs, the options resolved from the command line) -> outputs.
    std::function<TensorMap(const std::filesystem::path& model, const std::string& component,
                            const TensorMap& inputs, const ConfigView& config)>
        run;
};

/// Implemented by the host. Called by plugins only inside their entry point, on the main thread.
/// Every add_* throws st::Error if the id is malformed ("kind.name@N"), of the wrong kind for the
/// method, not listed in the manifest, registered twice, or if an option name is already owned
/// by someone else. Factories are stored and called later by the host (wrapped so that an
/// exception gains plugin, component and phase).
class Registrar {
  public:
    virtual ~Registrar();
    virtual void add_model(ComponentInfo info, ModelFactory factory) = 0;
    virtual void add_optimizer(ComponentInfo info, OptimizerFactory factory) = 0;
    virtual void add_lr_scheduler(ComponentInfo info, LrSchedulerFactory factory) = 0;
    virtual void add_regularizer(ComponentInfo info, RegularizerFactory factory) = 0;
    virtual void add_data_backend(ComponentInfo info, DataBackendFactory factory) = 0;
    /// A command: id "cmd.<command-name>@N".
    virtual void add_command(ComponentInfo info, CommandSpec command) = 0;
    /// Networks for `st-host forward` of a plugin without a model family: id "forward.<name>@N".
    virtual void add_forward_tool(ComponentInfo info, ForwardTool tool) = 0;
    /// Name and version of the plugin being registered (from its manifest).
    virtual const std::string& plugin_name() const = 0;
};

/// Splits "kind.name@N"; returns false if malformed (kind and name: [a-z0-9_-]+, N >= 1).
bool parse_component_id(const std::string& id, std::string* kind, std::string* name, int* version);

}  // namespace st::sdk
