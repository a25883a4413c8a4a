// Variant detection from tensor names/shapes (models.md §2.1-2.2; diffusers
// loaders/single_file_utils.py infer_diffusers_model_type for the released sizes).
#include "core/detect.h"

#include <fmt/format.h>

#include <set>
#include <vector>

#include "st/error.h"
#include "st/safetensors.h"
#include "st/text.h"

namespace st::plugins::wan {

using st::sdk::shape_str;
namespace {

constexpr const char* kComponent = "model.wan@1";

}  // namespace

const char* variant_kind_name(WanVariantKind kind) {
    switch (kind) {
        case WanVariantKind::t2v:
            return "t2v";
        case WanVariantKind::i2v_21:
            return "i2v-2.1";
        case WanVariantKind::flf2v_21:
            return "flf2v-2.1";
        case WanVariantKind::i2v_22:
            return "i2v-2.2";
        case WanVariantKind::ti2v_22:
            return "ti2v-2.2";
    }
    return "?";
}

WanVariantKind classify(const WanTransformerConfig& c) {
    const bool i2v_channels = c.in_channels == 2 * c.out_channels + 4;  // noisy | 4 mask | condition
    if (c.has_image_branch()) {
        if (!i2v_channels)
            fail(kComponent, "detect",
                 "a Wan 2.1 I2V model (image branch) needs in_channels = 2*out_channels + 4, got in {} out "
                 "{}: fits "
                 "no Wan flavour",
                 c.in_channels, c.out_channels);
        return c.pos_embed_seq_len ? WanVariantKind::flf2v_21 : WanVariantKind::i2v_21;
    }
    if (c.in_channels == c.out_channels)
        return c.out_channels == 48 ? WanVariantKind::ti2v_22 : WanVariantKind::t2v;
    if (i2v_channels) return WanVariantKind::i2v_22;
    fail(kComponent, "detect",
         "in_channels {} / out_channels {} fit no Wan flavour (T2V/TI2V: in == out; I2V: in == 2*out + 4)",
         c.in_channels, c.out_channels);
}

std::string variant_name(const WanTransformerConfig& c) {
    const WanVariantKind kind = classify(c);
    const int64_t d = c.inner_dim();
    switch (kind) {
        case WanVariantKind::t2v:
            if (d == 1536 && c.num_layers == 30 && c.ffn_dim == 8960) return "t2v-1.3b-2.1";
            if (d == 5120 && c.num_layers == 40 && c.ffn_dim == 13824) return "t2v-14b";
            break;
        case WanVariantKind::i2v_21:
            if (d == 5120 && c.num_layers == 40) return "i2v-14b-2.1";
            break;
        case WanVariantKind::flf2v_21:
            if (d == 5120 && c.num_layers == 40) return "flf2v-14b-2.1";
            break;
        case WanVariantKind::i2v_22:
            if (d == 5120 && c.num_layers == 40) return "i2v-a14b-2.2";
            break;
        case WanVariantKind::ti2v_22:
            if (d == 3072 && c.num_layers == 30) return "ti2v-5b-2.2";
            break;
    }
    return fmt::format("{} custom (dim {}, {} layers)", variant_kind_name(kind), d, c.num_layers);
}

std::string to_diffusers_key(const std::string& file_name, const WanCheckpointInfo& info) {
    return info.to_ours(file_name, wan_key_table());
}

WanCheckpointInfo inspect_transformer(const st::sdk::TensorSource& source) {
    WanCheckpointInfo info;
    info.count(source);
    st::kit::detect_layout(
        source, wan_checkpoint_prefixes(), {"blocks.0.attn1.to_q.weight", "proj_out.weight"},
        {"blocks.0.self_attn.q.weight", "head.head.weight"}, kComponent, "Wan transformer", &info);
    const st::kit::ShapeTable t(source, info, wan_key_table(), kComponent, "Wan transformer",
                                "the weights fit no Wan flavour");
    WanTransformerConfig& c = info.config;
    const auto& pe = t.need("patch_embedding.weight");
    if (pe.size() != 5)
        fail(kComponent, "detect", "{}: patch_embedding.weight has shape {}, expected [D, C_in, pt, ph, pw]",
             t.describe(), shape_str(pe));
    const int64_t d = pe[0];
    c.in_channels = pe[1];
    c.patch_size = {pe[2], pe[3], pe[4]};
    c.attention_head_dim = st::kit::guess_head_dim(d);
    c.num_attention_heads = d / c.attention_head_dim;
    c.num_layers = t.count_indexed("blocks.");
    if (c.num_layers == 0)
        fail(kComponent, "detect", "{}: no transformer blocks (blocks.N.*) found", t.describe());
    const auto& te = t.need("condition_embedder.time_embedder.linear_1.weight");
    if (te.size() != 2 || te[0] != d)
        fail(kComponent, "detect",
             "{}: time_embedder.linear_1.weight {} does not match dim {}: fits no Wan flavour", t.describe(),
             shape_str(te), d);
    c.freq_dim = te[1];
    const auto& tx = t.need("condition_embedder.text_embedder.linear_1.weight");
    if (tx.size() != 2)
        fail(kComponent, "detect", "{}: text_embedder.linear_1.weight {} is not a matrix", t.describe(),
             shape_str(tx));
    c.text_dim = tx[1];
    const auto& ff = t.need("blocks.0.ffn.net.0.proj.weight");
    if (ff.size() != 2)
        fail(kComponent, "detect", "{}: ffn weight {} is not a matrix", t.describe(), shape_str(ff));
    c.ffn_dim = ff[0];
    const auto& po = t.need("proj_out.weight");
    const int64_t patch_numel = pe[2] * pe[3] * pe[4];
    if (po.size() != 2 || po[0] % patch_numel != 0)
        fail(kComponent, "detect", "{}: proj_out.weight {} is not [C_out*{}, {}]: fits no Wan flavour",
             t.describe(), shape_str(po), patch_numel, d);
    c.out_channels = po[0] / patch_numel;
    c.cross_attn_norm = t.has("blocks.0.norm2.weight");
    if (t.has("condition_embedder.image_embedder.norm1.weight")) {
        c.image_dim = t.need("condition_embedder.image_embedder.norm1.weight")[0];
        const auto& ak = t.need("blocks.0.attn2.add_k_proj.weight");
        c.added_kv_proj_dim = ak.size() == 2 ? ak[1] : -1;
        if (t.has("condition_embedder.image_embedder.pos_embed"))
            c.pos_embed_seq_len = t.need("condition_embedder.image_embedder.pos_embed")[1];
    } else if (t.has("blocks.0.attn2.add_k_proj.weight")) {
        fail(kComponent, "detect",
             "{}: attn2.add_k_proj tensors present but no image_embedder: fits no Wan flavour", t.describe());
    }

    // Consistency of the remaining shapes (a mix of two models or a wrong converter shows here).
    t.expect("patch_embedding.bias", {d}, fmt::format("dim {}", d));
    t.expect("condition_embedder.time_proj.weight", {6 * d, d}, fmt::format("dim {}", d));
    t.expect("condition_embedder.text_embedder.linear_2.weight", {d, d}, fmt::format("dim {}", d));
    t.expect("scale_shift_table", {1, 2, d}, fmt::format("dim {}", d));
    t.expect("proj_out.weight", {c.out_channels * patch_numel, d}, fmt::format("dim {}", d));
    for (int64_t i = 0; i < c.num_layers; ++i) {
        const std::string b = fmt::format("blocks.{}.", i);
        t.expect(b + "attn1.to_q.weight", {d, d}, fmt::format("dim {}", d));
        t.expect(b + "attn2.to_k.weight", {d, d}, fmt::format("dim {}", d));
        t.expect(b + "ffn.net.0.proj.weight", {c.ffn_dim, d},
                 fmt::format("ffn_dim {} of block 0", c.ffn_dim));
        t.expect(b + "scale_shift_table", {1, 6, d}, fmt::format("dim {}", d));
    }
    try {
        c.validate();
        info.kind = classify(c);
        info.variant = variant_name(c);
    } catch (const Error& e) {
        throw e.with_context(fmt::format("while detecting the Wan variant of {}", source.describe()));
    }
    return info;
}

WanTransformerConfig WanTransformerConfig::detect_from_weights(const st::sdk::TensorSource& source) {
    return inspect_transformer(source).config;
}

}  // namespace st::plugins::wan
