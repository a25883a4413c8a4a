// The diffusers <-> original Wan key table (models.md §2.2, diffusers
// scripts/convert_wan_to_diffusers.py TRANSFORMER_KEYS_RENAME_DICT as facts). Module-level pairs:
// a tensor name is <module>.<weight|bias>, except the whole-tensor pairs (modulation tables).
#include "core/key_map.h"

#include <cctype>
#include <utility>

namespace st::plugins::wan {
namespace {

struct Pair {
    const char* original;
    const char* diffusers;
};

// Modules inside blocks.N (N stripped).
constexpr Pair kBlockModules[] = {
    {"self_attn.q", "attn1.to_q"},
    {"self_attn.k", "attn1.to_k"},
    {"self_attn.v", "attn1.to_v"},
    {"self_attn.o", "attn1.to_out.0"},
    {"self_attn.norm_q", "attn1.norm_q"},
    {"self_attn.norm_k", "attn1.norm_k"},
    {"cross_attn.q", "attn2.to_q"},
    {"cross_attn.k", "attn2.to_k"},
    {"cross_attn.v", "attn2.to_v"},
    {"cross_attn.o", "attn2.to_out.0"},
    {"cross_attn.norm_q", "attn2.norm_q"},
    {"cross_attn.norm_k", "attn2.norm_k"},
    {"cross_attn.k_img", "attn2.add_k_proj"},
    {"cross_attn.v_img", "attn2.add_v_proj"},
    {"cross_attn.norm_k_img", "attn2.norm_added_k"},
    {"norm3", "norm2"},  // name trap: the original's cross-attention norm is norm3
    {"ffn.0", "ffn.net.0.proj"},
    {"ffn.2", "ffn.net.2"},
};
constexpr Pair kBlockTensors[] = {{"modulation", "scale_shift_table"}};

constexpr Pair kGlobalModules[] = {
    {"patch_embedding", "patch_embedding"},
    {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
    {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
    {"time_projection.1", "condition_embedder.time_proj"},
    {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
    {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
    {"head.head", "proj_out"},
    {"img_emb.proj.0", "condition_embedder.image_embedder.norm1"},
    {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
    {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"},
    {"img_emb.proj.4", "condition_embedder.image_embedder.norm2"},
};
constexpr Pair kGlobalTensors[] = {
    {"head.modulation", "scale_shift_table"},
    {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"},
};

// "blocks.<digits>." prefix -> (prefix, rest); false otherwise.
bool split_block(const std::string& name, std::string* prefix, std::string* rest) {
    const std::string head = "blocks.";
    if (name.rfind(head, 0) != 0) return false;
    size_t i = head.size();
    size_t j = i;
    while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
    if (j == i || j >= name.size() || name[j] != '.') return false;
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

// Maps a module path (block-relative or global).
std::optional<std::string> map_module(const std::string& module, bool to_diffusers) {
    std::string prefix, rest;
    if (split_block(module, &prefix, &rest)) {
        auto m = lookup(kBlockModules, rest, to_diffusers);
        return m ? std::optional<std::string>(prefix + *m) : std::nullopt;
    }
    return lookup(kGlobalModules, module, to_diffusers);
}

std::optional<std::string> map_tensor(const std::string& name, bool to_diffusers) {
    std::string prefix, rest;
    if (split_block(name, &prefix, &rest)) {
        if (auto t = lookup(kBlockTensors, rest, to_diffusers)) return prefix + *t;
    } else if (auto t = lookup(kGlobalTensors, name, to_diffusers)) {
        return t;
    }
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) return std::nullopt;
    const std::string leaf = name.substr(dot + 1);
    if (leaf != "weight" && leaf != "bias") return std::nullopt;
    auto m = map_module(name.substr(0, dot), to_diffusers);
    return m ? std::optional<std::string>(*m + "." + leaf) : std::nullopt;
}

}  // namespace

const char* key_layout_name(KeyLayout layout) {
    return layout == KeyLayout::diffusers ? "diffusers" : "original";
}

const std::vector<std::string>& wan_checkpoint_prefixes() {
    static const std::vector<std::string> prefixes{"model.diffusion_model.", "diffusion_model."};
    return prefixes;
}

std::optional<std::string> original_to_diffusers(const std::string& name) {
    return map_tensor(name, true);
}
std::optional<std::string> diffusers_to_original(const std::string& name) {
    return map_tensor(name, false);
}

std::optional<std::string> lora_module_to_native(const std::string& m) {
    return map_module(m, false);
}
std::optional<std::string> lora_module_to_diffusers(const std::string& m) {
    return map_module(m, true);
}

std::vector<std::string> block_linear_modules(int index, bool image_branch) {
    const std::string p = "blocks." + std::to_string(index) + ".";
    std::vector<std::string> out;
    for (const char* a : {"attn1", "attn2"})
        for (const char* l : {"to_q", "to_k", "to_v", "to_out.0"}) out.push_back(p + a + "." + l);
    if (image_branch) {
        out.push_back(p + "attn2.add_k_proj");
        out.push_back(p + "attn2.add_v_proj");
    }
    out.push_back(p + "ffn.net.0.proj");
    out.push_back(p + "ffn.net.2");
    return out;
}

}  // namespace st::plugins::wan
