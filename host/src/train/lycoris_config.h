// SimpleTuner's `lora_type: lycoris`: its lycoris_config.json (LyCORIS create_lycoris arguments plus
// apply_preset) read and checked before anything is cached, and the choice of the adapter for each
// Linear module of the model. docs/lora.md.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "st/lycoris.h"

namespace st::host::train {

struct LycorisPlan {
    std::filesystem::path file;
    double multiplier = 1.0;
    sdk::LycorisOptions base;                ///< algo, linear_dim, linear_alpha, factor, ...
    std::vector<std::string> target_module;  ///< module classes (Attention, FeedForward)
    std::map<std::string, nlohmann::json> module_algo_map;
    std::vector<std::string> target_name;  ///< patterns on module paths (re.match, or fnmatch)
    std::map<std::string, nlohmann::json> name_algo_map;
    std::vector<std::string> exclude_name;  ///< module paths never adapted (exact name or pattern)
    bool use_fnmatch = false;               ///< patterns are shell globs (fnmatch) instead of regexes
    /// train_norm: LyCORIS's Norm algo on the LayerNorm / GroupNorm layers it selects; st trains none, so
    /// a config that selects one is refused (lycoris_norms_selected).
    bool train_norm = false;
    nlohmann::json raw;  ///< the file, for the LoRA file's metadata
};

/// Reads `file` as SimpleTuner does (multiplier, linear_dim and linear_alpha cast with int()); st::Error
/// naming the file and key for a missing algo, an algo st cannot train on a Linear (lokr and loha; LoCon
/// on a Linear is lora_type standard), dropouts it does not implement, or bad JSON.
LycorisPlan read_lycoris_config(const std::filesystem::path& file);

/// "Attention" for an attention module path (last part attn, attn1, attn2, self_attn, cross_attn,
/// attention), "FeedForward" for ffn / ff / feed_forward, else "": the classes apply_preset names.
std::string lycoris_module_class(const std::string& module_path);

/// The adapter options of the Linear at `linear_path`, or nullopt when apply_preset selects it not:
/// inside a module whose class is in target_module or module_algo_map and whose path exclude_name does
/// not name (the innermost such module's map entry applies), else a path matching target_name or a
/// name_algo_map key and not named by exclude_name (LyCORIS's wrapper.py create_modules).
std::optional<sdk::LycorisOptions> lycoris_options_for(const LycorisPlan& plan,
                                                       const std::string& linear_path);

/// With train_norm: the paths of the LayerNorm / GroupNorm modules that LyCORIS would adapt
/// (selected like a Linear: inside a targeted module, or by name). `norms` lists the model's.
std::vector<std::string> lycoris_norms_selected(const LycorisPlan& plan,
                                                const std::vector<std::string>& norms);

}  // namespace st::host::train
