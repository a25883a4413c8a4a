// The diffusers <-> original S2V key table (models.md §5.2). Module-level pairs: a tensor name is
// <module>.<weight|bias>, except the whole-tensor pairs. Names shared with the Wan DiT go through
// plugins/wan/core/key_map.h.
#include "core/s2v_key_map.h"

#include <cctype>

#include "core/key_map.h"

namespace st::plugins::wan_s2v {
namespace {

struct Pair {
    const char* original;
    const char* diffusers;
};

constexpr Pair kGlobalModules[] = {
    {"trainable_cond_mask", "trainable_condition_mask"},
    {"cond_encoder", "condition_embedder.pose_embedder"},
    {"casual_audio_encoder.encoder.conv1_local.conv",
     "condition_embedder.causal_audio_encoder.encoder.conv1_local.conv"},
    {"casual_audio_encoder.encoder.conv1_global.conv",
     "condition_embedder.causal_audio_encoder.encoder.conv1_global.conv"},
    // diffusers nests conv2/conv3 one level deeper than the original.
    {"casual_audio_encoder.encoder.conv2.conv",
     "condition_embedder.causal_audio_encoder.encoder.conv2.conv.conv"},
    {"casual_audio_encoder.encoder.conv3.conv",
     "condition_embedder.causal_audio_encoder.encoder.conv3.conv.conv"},
    {"casual_audio_encoder.encoder.final_linear",
     "condition_embedder.causal_audio_encoder.encoder.final_linear"},
    {"frame_packer.proj", "frame_packer.proj"},
    {"frame_packer.proj_2x", "frame_packer.proj_2x"},
    {"frame_packer.proj_4x", "frame_packer.proj_4x"},
};
constexpr Pair kGlobalTensors[] = {
    {"casual_audio_encoder.weights", "condition_embedder.causal_audio_encoder.weighted_avg.weights"},
    {"casual_audio_encoder.encoder.padding_tokens",
     "condition_embedder.causal_audio_encoder.encoder.padding_tokens"},
};
// Modules inside audio_injector.injector.K (K stripped).
constexpr Pair kInjectorModules[] = {
    {"q", "to_q"},     {"k", "to_k"},        {"v", "to_v"},
    {"o", "to_out.0"}, {"norm_q", "norm_q"}, {"norm_k", "norm_k"},
};

// "<head><digits>." prefix -> (prefix, rest); false otherwise.
bool split_indexed(const std::string& name, const std::string& head, std::string* prefix, std::string* rest) {
    if (name.rfind(head, 0) != 0) return false;
    size_t j = head.size();
    while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
    if (j == head.size() || j >= name.size() || name[j] != '.') return false;
    *prefix = name.substr(0, j + 1);
    *rest = name.substr(j + 1);
    return true;
}

template <size_t N>
std::optional<std::string> lookup(const Pair (&table)[N], const std::string& key, bool to_diffusers) {
    for (const auto& p : table)
        if (key == (to_diffusers ? p.original : p.diffusers))
            return std::string(to_diffusers ? p.diffusers : p.original);
    return std::nullopt;
}

std::optional<std::string> map_module(const std::string& module, bool to_diffusers) {
    std::string prefix, rest;
    if (split_indexed(module, "audio_injector.injector.", &prefix, &rest)) {
        auto m = lookup(kInjectorModules, rest, to_diffusers);
        return m ? std::optional<std::string>(prefix + *m) : std::nullopt;
    }
    if (split_indexed(module, "audio_injector.injector_adain_layers.", &prefix, &rest))
        return rest == "linear" ? std::optional<std::string>(module) : std::nullopt;
    if (auto m = lookup(kGlobalModules, module, to_diffusers)) return m;
    // Shared Wan names (blocks, time/text embedders, patch embedding, head).
    return to_diffusers ? st::plugins::wan::lora_module_to_diffusers(module)
                        : st::plugins::wan::lora_module_to_native(module);
}

std::optional<std::string> map_tensor(const std::string& name, bool to_diffusers) {
    if (auto t = lookup(kGlobalTensors, name, to_diffusers)) return t;
    std::string prefix, rest;
    const bool in_block = split_indexed(name, "blocks.", &prefix, &rest);
    if (!in_block && (name == "scale_shift_table" || name == "head.modulation"))
        return to_diffusers ? st::plugins::wan::original_to_diffusers(name)
                            : st::plugins::wan::diffusers_to_original(name);
    if (in_block && (rest == "modulation" || rest == "scale_shift_table"))
        return to_diffusers ? st::plugins::wan::original_to_diffusers(name)
                            : st::plugins::wan::diffusers_to_original(name);
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) return std::nullopt;
    const std::string leaf = name.substr(dot + 1);
    if (leaf != "weight" && leaf != "bias") return std::nullopt;
    auto m = map_module(name.substr(0, dot), to_diffusers);
    return m ? std::optional<std::string>(*m + "." + leaf) : std::nullopt;
}

}  // namespace

std::optional<std::string> s2v_original_to_diffusers(const std::string& name) {
    return map_tensor(name, true);
}

std::optional<std::string> s2v_diffusers_to_original(const std::string& name) {
    return map_tensor(name, false);
}

std::optional<std::string> s2v_lora_module_to_native(const std::string& m) {
    return map_module(m, false);
}

std::optional<std::string> s2v_lora_module_to_diffusers(const std::string& m) {
    return map_module(m, true);
}

}  // namespace st::plugins::wan_s2v
