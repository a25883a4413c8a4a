#include "plugins/fingerprint.h"

#include <fmt/format.h>

#include <map>
#include <vector>

namespace st::host {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    while (true) {
        const size_t pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
        if (pos == std::string::npos) break;
        start = pos + 1;
    }
    return out;
}

// "gcc-12.2.0" -> "gcc-12"; anything unexpected is kept whole (compared exactly).
std::string compiler_major(const std::string& compiler) {
    const size_t dash = compiler.find('-');
    if (dash == std::string::npos) return compiler;
    const size_t dot = compiler.find('.', dash);
    return compiler.substr(0, dot);
}

// The first field is the compiler; the others are key=value.
std::map<std::string, std::string> fields(const std::string& fingerprint) {
    std::map<std::string, std::string> out;
    const auto parts = split(fingerprint, ';');
    for (size_t i = 0; i < parts.size(); ++i) {
        if (i == 0) {
            out["compiler"] = parts[0];
            continue;
        }
        const size_t eq = parts[i].find('=');
        out[eq == std::string::npos ? parts[i] : parts[i].substr(0, eq)] =
            eq == std::string::npos ? std::string() : parts[i].substr(eq + 1);
    }
    return out;
}

}  // namespace

std::string fingerprint_difference(const std::string& plugin, const std::string& host) {
    if (plugin == host) return "";
    const auto p = fields(plugin), h = fields(host);
    for (const auto& [key, hv] : h) {
        auto it = p.find(key);
        const std::string pv = it == p.end() ? std::string("(absent)") : it->second;
        if (key == "compiler") {
            if (compiler_major(pv) != compiler_major(hv))
                return fmt::format("compiler differs: plugin {}, host {} (the major version must match)", pv,
                                   hv);
            continue;
        }
        if (pv != hv) return fmt::format("{} differs: plugin {}, host {}", key, pv, hv);
    }
    for (const auto& [key, pv] : p)
        if (!h.count(key))
            return fmt::format("the plugin's fingerprint has {}={} which this host lacks", key, pv);
    return "";
}

}  // namespace st::host
