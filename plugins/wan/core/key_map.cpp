// The diffusers <-> original Wan key table (models.md §2.2, diffusers
// scripts/convert_wan_to_diffusers.py TRANSFORMER_KEYS_RENAME_DICT as facts). Module-level pairs:
// a tensor name is <module>.<weight|bias>, except the whole-tensor pairs (modulation tables).
#include "core/key_map.h"

namespace st::plugins::wan {

const st::kit::KeyMapTable& wan_key_table() {
    static const st::kit::KeyMapTable table =
        st::kit::KeyMapTable()
            .indexed_modules("blocks.", {{"self_attn.q", "attn1.to_q"},
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
                                         // name trap: the original's cross-attention norm is norm3
                                         {"norm3", "norm2"},
                                         {"ffn.0", "ffn.net.0.proj"},
                                         {"ffn.2", "ffn.net.2"}})
            .indexed_tensors("blocks.", {{"modulation", "scale_shift_table"}})
            .modules({{"patch_embedding", "patch_embedding"},
                      {"time_embedding.0", "condition_embedder.time_embedder.linear_1"},
                      {"time_embedding.2", "condition_embedder.time_embedder.linear_2"},
                      {"time_projection.1", "condition_embedder.time_proj"},
                      {"text_embedding.0", "condition_embedder.text_embedder.linear_1"},
                      {"text_embedding.2", "condition_embedder.text_embedder.linear_2"},
                      {"head.head", "proj_out"},
                      {"img_emb.proj.0", "condition_embedder.image_embedder.norm1"},
                      {"img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"},
                      {"img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"},
                      {"img_emb.proj.4", "condition_embedder.image_embedder.norm2"}})
            .tensors({{"head.modulation", "scale_shift_table"},
                      {"img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"}});
    return table;
}

const std::vector<std::string>& wan_checkpoint_prefixes() {
    static const std::vector<std::string> prefixes{"model.diffusion_model.", "diffusion_model."};
    return prefixes;
}

std::optional<std::string> original_to_diffusers(const std::string& name) {
    return wan_key_table().tensor(name, true);
}
std::optional<std::string> diffusers_to_original(const std::string& name) {
    return wan_key_table().tensor(name, false);
}

std::optional<std::string> lora_module_to_native(const std::string& m) {
    return wan_key_table().module(m, false);
}
std::optional<std::string> lora_module_to_diffusers(const std::string& m) {
    return wan_key_table().module(m, true);
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
