#include "config/hub_cache.h"

#include <cstdlib>
#include <fstream>

#include "st/log.h"
#include "st/model_path.h"

namespace st::host {

namespace fs = std::filesystem;

namespace {
std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}
}  // namespace

fs::path hf_hub_cache_dir() {
    if (auto v = env("HF_HUB_CACHE"); !v.empty()) return v;
    if (auto v = env("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;
    if (auto v = env("HF_HOME"); !v.empty()) return fs::path(v) / "hub";
    if (auto v = env("XDG_CACHE_HOME"); !v.empty()) return fs::path(v) / "huggingface" / "hub";
    return fs::path(env("HOME")) / ".cache" / "huggingface" / "hub";
}

std::optional<fs::path> hf_cache_snapshot(const std::string& id) {
    if (!sdk::looks_like_hub_id(id)) return std::nullopt;
    const std::string org = id.substr(0, id.find('/')), name = id.substr(id.find('/') + 1);
    const fs::path repo = hf_hub_cache_dir() / ("models--" + org + "--" + name);
    std::error_code ec;
    if (!fs::is_directory(repo / "snapshots", ec)) return std::nullopt;
    std::ifstream ref(repo / "refs" / "main");
    std::string rev;
    if (ref && std::getline(ref, rev) && !rev.empty() && fs::is_directory(repo / "snapshots" / rev, ec))
        return repo / "snapshots" / rev;
    std::optional<fs::path> newest;
    fs::file_time_type newest_time{};
    for (const auto& e : fs::directory_iterator(repo / "snapshots", ec)) {
        if (!e.is_directory(ec)) continue;
        const auto t = fs::last_write_time(e.path(), ec);
        if (!newest || t > newest_time) {
            newest = e.path();
            newest_time = t;
        }
    }
    return newest;
}

void use_hub_cache_snapshots(nlohmann::json& values) {
    if (!values.is_object()) return;
    for (auto& [key, v] : values.items()) {
        const std::string suffix = "model_name_or_path";
        if (!v.is_string() || key.size() < suffix.size() ||
            key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        const std::string value = v.get<std::string>();
        std::error_code ec;
        if (value.empty() || fs::exists(value, ec)) continue;
        if (auto snap = hf_cache_snapshot(value)) {
            log::info("host.config", "{} '{}': using the local Hugging Face cache snapshot {}", key, value,
                      snap->string());
            v = snap->string();
        }
    }
}

}  // namespace st::host
