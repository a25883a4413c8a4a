// Where the configuration is when st-host is given no config file: SimpleTuner's rules
// (simpletuner/helpers/configuration/loader.py, json_file.py, toml_file.py, env_file.py), so a user's
// `config/` folder, `ENV` and `CONFIG_BACKEND` work unchanged:
//   1. config/config.env, then config/<ENV>/config.env, are read as shell assignments (`export K=V`,
//      `K+=V` appends) into the process environment (what SimpleTuner's train.sh sourced).
//   2. the environment name: SIMPLETUNER_ENVIRONMENT, SIMPLETUNER_ENV, ENV (unset or "default": none).
//   3. the backend: SIMPLETUNER_CONFIG_BACKEND, CONFIG_BACKEND, CONFIG_TYPE, else the first of
//      config/[<env>/]config.json, config.toml, config.env that exists (json when none does).
//   4. json: CONFIG_PATH (a folder: its config.json; a file), else <env> as a path (with a suffix: that
//      file; else <env>/config.json, config/<env>/config.json), else config/config.json.
//      toml: config/[<env>/]config.toml.
//   env: every setting is an environment variable (usually from config.env): SimpleTuner's
//      env_to_args_map turns them into settings, then TRAINER_EXTRA_ARGS (env_backend_arguments).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace st::host {

/// `K=V`, `export K=V`, `K+=V` lines of a config.env (quotes stripped, `#` comments and blank lines
/// skipped); values are word lists joined by one space, as SimpleTuner joins them. A malformed line is
/// reported in `warnings`. Missing file: empty.
std::map<std::string, std::string> parse_config_env(const std::filesystem::path& file,
                                                    std::vector<std::string>* warnings = nullptr);

struct DefaultConfig {
    std::filesystem::path path;  ///< empty when none was found
    std::string backend;         ///< json | toml | env (path: the config.env, which may be absent)
    std::string env;             ///< "default" when unset
    std::vector<std::filesystem::path> tried;
    std::vector<std::string> loaded_env_files;
};

/// Steps 1-4 above, relative to `cwd`. Sets the variables of the config.env files it reads.
/// st::Error for an unknown backend.
DefaultConfig find_default_config(const std::filesystem::path& cwd);

/// The env backend's settings as command-line settings (`--option=value`, SimpleTuner's
/// env_to_args_map: "true" sets a flag, "false" leaves it out), followed by TRAINER_EXTRA_ARGS split on
/// whitespace (it may use `--key value` or `--key=value`).
std::vector<std::string> env_backend_arguments();

}  // namespace st::host
