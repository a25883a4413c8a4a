// The one message for a model path key whose value does not exist, shared by the host (for
// pretrained_model_name_or_path) and every model plugin (their own path keys), so a Hugging Face hub
// id in any of them says how to get the files. Header-only: plugins and the host call it without a
// new SDK symbol.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "st/error.h"

namespace st::sdk {

/// True for "Org/Name": one slash, no backslash, not starting like a path ('/', '.', '~').
inline bool looks_like_hub_id(const std::string& s) {
    if (s.empty() || s[0] == '/' || s[0] == '.' || s[0] == '~') return false;
    return std::count(s.begin(), s.end(), '/') == 1 && s.find('\\') == std::string::npos;
}

/// "Org--Name" for "Org/Name" (the hub cache's folder naming).
inline std::string hub_cache_name(const std::string& id) {
    const size_t slash = id.find('/');
    return slash == std::string::npos ? id : id.substr(0, slash) + "--" + id.substr(slash + 1);
}

/// Throws st::Error (component, phase) saying that `path`, the value of `key`, does not exist; for a
/// hub id, that st does not download models and the huggingface-cli line that does.
[[noreturn]] inline void missing_model_path(const std::filesystem::path& path, const std::string& key,
                                            const std::string& component, const std::string& phase) {
    const std::string s = path.string();
    if (looks_like_hub_id(s))
        fail(component, phase,
             "{} '{}' looks like a Hugging Face hub id, but st does not download models, and the local "
             "Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub, else ~/.cache/huggingface/hub) has no "
             "snapshot of it (models--{}/snapshots/<revision>/, where SimpleTuner's downloads go): "
             "download it (e.g. `huggingface-cli download {} --local-dir DIR`) and pass DIR (a diffusers "
             "pipeline folder, a transformer folder or a single .safetensors file)",
             key, s, hub_cache_name(s), s);
    fail(component, phase, "{} '{}' does not exist", key, s);
}

/// missing_model_path unless `path` exists.
inline void require_model_path(const std::filesystem::path& path, const std::string& key,
                               const std::string& component, const std::string& phase) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) missing_model_path(path, key, component, phase);
}

}  // namespace st::sdk
