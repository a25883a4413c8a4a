#include "config/default_config.h"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "st/error.h"
#include "st/files.h"

namespace st::host {

namespace fs = std::filesystem;

namespace {

std::string trim(const std::string& s) {
    const size_t a = s.find_first_not_of(" \t\r\n");
    if (a == std::string::npos) return {};
    return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

std::string unquote(std::string v) {
    if (v.size() >= 2 && ((v.front() == '"' && v.back() == '"') || (v.front() == '\'' && v.back() == '\'')))
        v = v.substr(1, v.size() - 2);
    return v;
}

std::string join_words(const std::string& v) {
    std::istringstream in(v);
    std::string word, out;
    while (in >> word) out += (out.empty() ? "" : " ") + word;
    return out;
}

std::string env_or(std::initializer_list<const char*> names, const std::string& fallback) {
    for (const char* n : names)
        if (const char* v = std::getenv(n); v != nullptr && *v != '\0') return v;
    return fallback;
}

bool is_file(const fs::path& p) {
    std::error_code ec;
    return fs::is_regular_file(p, ec);
}

}  // namespace

std::map<std::string, std::string> parse_config_env(const fs::path& file,
                                                    std::vector<std::string>* warnings) {
    std::map<std::string, std::string> out;
    if (!is_file(file)) return out;
    std::istringstream in(sdk::read_file(file));
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
        ++number;
        line = trim(line);
        if (line.empty() || line[0] == '#') continue;
        if (line.rfind("export ", 0) == 0) line = trim(line.substr(7));
        if (const size_t plus = line.find("+="); plus != std::string::npos) {
            const std::string key = trim(line.substr(0, plus));
            const std::string value = join_words(unquote(trim(line.substr(plus + 2))));
            std::string& slot = out[key];
            slot += (slot.empty() || value.empty() ? "" : " ") + value;
            continue;
        }
        const size_t eq = line.find('=');
        if (eq == std::string::npos) {
            if (warnings)
                warnings->push_back(fmt::format("{}:{}: skipped (not K=V): {}", file.string(), number, line));
            continue;
        }
        out[trim(line.substr(0, eq))] = join_words(unquote(trim(line.substr(eq + 1))));
    }
    return out;
}

DefaultConfig find_default_config(const fs::path& cwd) {
    DefaultConfig d;
    // 1. config.env files into the environment (the env-specific one can only be found once ENV is known).
    auto source = [&](const fs::path& rel) {
        const auto vars = parse_config_env(cwd / rel);
        if (vars.empty()) return;
        for (const auto& [k, v] : vars)
            if (!v.empty()) ::setenv(k.c_str(), v.c_str(), 1);
        d.loaded_env_files.push_back(rel.string());
    };
    source("config/config.env");
    const std::string first_env = env_or({"ENV", "SIMPLETUNER_ENV"}, "default");
    if (first_env != "default") source(fs::path("config") / first_env / "config.env");
    // 2. and 3.
    d.env = env_or({"SIMPLETUNER_ENVIRONMENT", "SIMPLETUNER_ENV", "ENV"}, "default");
    const fs::path base = d.env == "default" ? fs::path("config") : fs::path("config") / d.env;
    std::string backend = env_or({"SIMPLETUNER_CONFIG_BACKEND", "CONFIG_BACKEND", "CONFIG_TYPE"}, "");
    for (auto& c : backend) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (backend.empty()) {
        backend = "json";
        for (const char* b : {"json", "toml", "env"})
            if (is_file(cwd / base / fmt::format("config.{}", b))) {
                backend = b;
                break;
            }
    }
    if (backend == "env")
        fail(
            "host.config", "load",
            "the configuration is {}: SimpleTuner's env backend (every setting as an environment variable) "
            "is not read by st; write the settings as config.json or config.toml in {} (config.env files are "
            "still read for ENV, CONFIG_BACKEND and the like)",
            (base / "config.env").string(), base.string());
    if (backend != "json" && backend != "toml")
        fail("host.config", "load", "CONFIG_BACKEND = '{}': expected json, toml or env", backend);
    d.backend = backend;
    // 4.
    std::vector<fs::path> candidates;
    if (backend == "toml") {
        candidates.push_back(base / "config.toml");
    } else {
        if (const char* override_path = std::getenv("CONFIG_PATH"); override_path && *override_path) {
            const fs::path o = override_path;
            std::error_code ec;
            if (fs::is_directory(o.is_absolute() ? o : cwd / o, ec)) {
                candidates.push_back(o / "config.json");
            } else {
                if (o.has_extension()) candidates.push_back(o);
                candidates.push_back(fs::path(o).replace_extension(".json"));
            }
        }
        if (d.env != "default") {
            const fs::path e = d.env;
            if (e.has_extension()) {
                candidates.push_back(e);
            } else {
                candidates.push_back(e / "config.json");
                if (e.begin() == e.end() || *e.begin() != "config")
                    candidates.push_back("config" / e / "config.json");
            }
        } else {
            candidates.push_back("config/config.json");
        }
    }
    for (const auto& c : candidates) {
        const fs::path full = c.is_absolute() ? c : cwd / c;
        d.tried.push_back(c);
        if (is_file(full)) {
            d.path = full;
            break;
        }
    }
    return d;
}

}  // namespace st::host
