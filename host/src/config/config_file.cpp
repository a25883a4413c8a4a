#include "config/config_file.h"

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"

namespace st::host {
namespace fs = std::filesystem;

namespace {

nlohmann::json node_to_json(const toml::node& n) {
    if (auto t = n.as_table()) {
        nlohmann::json o = nlohmann::json::object();
        for (const auto& [k, v] : *t) o[std::string(k.str())] = node_to_json(v);
        return o;
    }
    if (auto a = n.as_array()) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& v : *a) arr.push_back(node_to_json(v));
        return arr;
    }
    if (auto v = n.as_string()) return v->get();
    if (auto v = n.as_integer()) return v->get();
    if (auto v = n.as_floating_point()) return v->get();
    if (auto v = n.as_boolean()) return v->get();
    std::ostringstream os;
    if (auto v = n.as_date())
        os << v->get();
    else if (auto v = n.as_time())
        os << v->get();
    else if (auto v = n.as_date_time())
        os << v->get();
    return os.str();
}

nlohmann::json strip_dashes(const nlohmann::json& in, const std::string& file) {
    if (!in.is_object())
        fail("host.config", "load", "{}: the top level must be an object of key/value pairs, found {}", file,
             in.type_name());
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : in.items()) {
        std::string key = k;
        while (key.rfind("-", 0) == 0) key.erase(0, 1);
        if (out.contains(key)) fail("host.config", "load", "{}: key '{}' is given twice", file, key);
        out[key] = v;
    }
    return out;
}

}  // namespace

nlohmann::json toml_to_json(const std::string& text, const std::string& source_name) {
    try {
        auto tbl = toml::parse(text, source_name);
        return node_to_json(tbl);
    } catch (const toml::parse_error& e) {
        const auto& src = e.source();
        fail("host.config", "load", "{}:{}:{}: invalid TOML: {}", source_name, src.begin.line,
             src.begin.column, std::string(e.description()));
    }
}

nlohmann::json load_config_file(const fs::path& path) {
    std::error_code ec;
    // SimpleTuner's env backend: the settings came as environment variables (env_backend_arguments);
    // the config.env itself (maybe absent) holds no JSON.
    if (path.extension() == ".env") return nlohmann::json::object();
    if (!fs::exists(path, ec)) fail("host.config", "load", "config file '{}' does not exist", path.string());
    if (fs::is_directory(path, ec))
        fail("host.config", "load", "'{}' is a directory; expected a config.json or config.toml file",
             path.string());
    sdk::require_regular_file(path, "a config.json or config.toml file", "host.config");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("host.config", "load", "cannot open config file '{}'", path.string());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str(), name = path.string();
    const std::string ext = path.extension().string();
    if (ext == ".toml") return strip_dashes(toml_to_json(text, name), name);
    sdk::check_json_limits(text, name, "host.config", "load");
    try {
        return strip_dashes(nlohmann::json::parse(text), name);
    } catch (const nlohmann::json::exception& e) {
        if (ext == ".json")
            fail("host.config", "load", "{}: invalid JSON at {}: {}", name, sdk::json_error_location(text),
                 e.what());
        try {
            return strip_dashes(toml_to_json(text, name), name);
        } catch (const Error&) {
            fail("host.config", "load", "{}: neither valid JSON ({}) nor valid TOML", name, e.what());
        }
    }
}

std::vector<CliOverride> parse_cli_overrides(const std::vector<std::string>& tokens) {
    std::vector<CliOverride> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const std::string& t = tokens[i];
        if (t.rfind("--", 0) != 0 || t.size() == 2)
            fail("host.config", "cli",
                 "unexpected argument '{}': configuration overrides are written --key value "
                 "or --key=value",
                 t);
        CliOverride o;
        auto eq = t.find('=');
        if (eq != std::string::npos) {
            o.key = t.substr(2, eq - 2);
            o.value = t.substr(eq + 1);
            o.has_value = o.inline_value = true;
        } else {
            o.key = t.substr(2);
            if (i + 1 < tokens.size() && tokens[i + 1].rfind("--", 0) != 0) {
                o.value = tokens[++i];
                o.has_value = true;
            }
        }
        if (o.key.empty()) fail("host.config", "cli", "empty option name in '{}'", t);
        out.push_back(std::move(o));
    }
    return out;
}

}  // namespace st::host
