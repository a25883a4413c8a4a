#include "train/state_io.h"

#include "st/error.h"
#include "st/json_file.h"
#include "st/safetensors.h"

namespace st::host::train {

namespace {
constexpr const char* kMetaKey = "st_state_meta";
}

void save_state_dict(const std::filesystem::path& path, const sdk::StateDict& state) {
    sdk::save_safetensors(path, state.tensors, {{kMetaKey, state.meta.dump()}});
}

sdk::StateDict load_state_dict(const std::filesystem::path& path) {
    auto file = sdk::SafetensorsFile::open(path);
    sdk::StateDict state;
    for (const auto& info : file->infos()) state.tensors[info.name] = file->load(info.name);
    auto meta = file->metadata();
    auto it = meta.find(kMetaKey);
    if (it != meta.end()) {
        try {
            sdk::check_json_limits(it->second, path.string() + " metadata", "host.train", "resume");
            state.meta = nlohmann::json::parse(it->second);
        } catch (const nlohmann::json::exception& e) {
            fail("host.train", "resume", "{}: metadata {} is not JSON: {}", path.string(), kMetaKey,
                 e.what());
        }
    }
    return state;
}

}  // namespace st::host::train
