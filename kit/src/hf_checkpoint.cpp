// locate_hf_checkpoint (see hf_checkpoint.h).
#include "st/kit/hf_checkpoint.h"

#include <fmt/format.h>

#include "st/error.h"

namespace st::kit {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_pickle(const fs::path& p) {
    const std::string ext = p.extension().string();
    return ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt";
}

}  // namespace

HfCheckpointFiles locate_hf_checkpoint(const fs::path& path, const std::string& component,
                                       const std::string& what, const std::string& pickle_hint) {
    if (!fs::exists(path))
        fail(component, "load",
             "{} path '{}' does not exist (expected a folder with config.json + model.safetensors, or a "
             ".safetensors file with config.json next to it)",
             what, path.string());
    auto refuse_pickle = [&](const fs::path& p) {
        fail(component, "load", "'{}' is a PyTorch pickle checkpoint; st reads safetensors only. {}",
             p.string(), pickle_hint);
    };
    fs::path config_json;
    fs::path weights = path;
    if (fs::is_directory(path)) {
        bool has_safetensors = false;
        fs::path pickle;
        for (const auto& entry : fs::directory_iterator(path)) {
            const std::string name = entry.path().filename().string();
            if (ends_with(name, ".safetensors") || ends_with(name, ".safetensors.index.json"))
                has_safetensors = true;
            if (is_pickle(entry.path()) && pickle.empty()) pickle = entry.path();
        }
        if (!has_safetensors && !pickle.empty()) refuse_pickle(pickle);
        config_json = path / "config.json";
        for (const char* name : {"model.safetensors.index.json", "model.safetensors"})
            if (fs::exists(path / name)) {
                weights = path / name;
                break;
            }
    } else {
        if (is_pickle(path)) refuse_pickle(path);
        config_json = path.parent_path() / "config.json";
    }
    if (!fs::exists(config_json))
        fail(component, "load", "{} '{}' has no config.json (looked for '{}')", what, path.string(),
             config_json.string());
    return {config_json, weights};
}

}  // namespace st::kit
