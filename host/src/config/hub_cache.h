// Hugging Face hub ids as model paths: st never downloads, but a model SimpleTuner (or any
// huggingface_hub user) already fetched sits in the local hub cache as
// <cache>/models--Org--Name/snapshots/<revision>/, and st uses that snapshot.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace st::host {

/// The hub cache folder huggingface_hub uses: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub,
/// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::filesystem::path hf_hub_cache_dir();

/// The snapshot of `id` ("Org/Name") in the hub cache: the revision refs/main names, else the only (or
/// newest) folder under snapshots/. nullopt when the cache holds none.
std::optional<std::filesystem::path> hf_cache_snapshot(const std::string& id);

/// For every string value of a key ending in "model_name_or_path" that is not an existing path but a
/// hub id with a local snapshot: replaces it by the snapshot folder and logs the decision.
void use_hub_cache_snapshots(nlohmann::json& values);

}  // namespace st::host
