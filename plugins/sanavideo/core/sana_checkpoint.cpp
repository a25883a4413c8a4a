// Sana Video transformer files (see sana_checkpoint.h). Original-layout facts: models.md §6.2 (diffusers
// scripts/convert_sana_video_to_diffusers.py as the reference for names and splits).
#include "core/sana_checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>

#include "st/error.h"
#include "st/kit/torch_pickle.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWhat = "Sana Video transformer";

struct Pair {
    const char* original;
    const char* diffusers;
};

// Module renames outside and inside the blocks (tensors are <module>.weight / .bias).
constexpr Pair kGlobalModules[] = {
    {"x_embedder.proj", "patch_embedding"},
    {"t_embedder.mlp.0", "time_embed.emb.timestep_embedder.linear_1"},
    {"t_embedder.mlp.2", "time_embed.emb.timestep_embedder.linear_2"},
    {"t_block.1", "time_embed.linear"},
    {"y_embedder.y_proj.fc1", "caption_projection.linear_1"},
    {"y_embedder.y_proj.fc2", "caption_projection.linear_2"},
    {"attention_y_norm", "caption_norm"},
    {"final_layer.linear", "proj_out"},
};
constexpr Pair kBlockModules[] = {
    {"attn.q_norm", "attn1.norm_q"},          {"attn.k_norm", "attn1.norm_k"},
    {"attn.proj", "attn1.to_out.0"},          {"cross_attn.q_linear", "attn2.to_q"},
    {"cross_attn.q_norm", "attn2.norm_q"},    {"cross_attn.k_norm", "attn2.norm_k"},
    {"cross_attn.proj", "attn2.to_out.0"},    {"mlp.inverted_conv.conv", "ff.conv_inverted"},
    {"mlp.depth_conv.conv", "ff.conv_depth"}, {"mlp.point_conv.conv", "ff.conv_point"},
    {"mlp.t_conv", "ff.conv_temp"},
};
// Fused original modules split along dim 0 into these diffusers modules.
struct Fused {
    const char* original;
    std::vector<const char*> parts;
};
const std::vector<Fused>& fused_block_modules() {
    static const std::vector<Fused> f{{"attn.qkv", {"attn1.to_q", "attn1.to_k", "attn1.to_v"}},
                                      {"cross_attn.kv_linear", {"attn2.to_k", "attn2.to_v"}}};
    return f;
}
// Original tensors the converter drops (learned null caption, absolute position table, log-variance head).
bool dropped_original(const std::string& name) {
    return name == "y_embedder.y_embedding" || name == "pos_embed" || name.rfind("logvar_linear.", 0) == 0;
}

/// One diffusers tensor: which file tensor holds it, and which of how many dim-0 parts it is.
struct Entry {
    std::string file_name;
    int part = 0;
    int parts = 1;
    bool squeeze = false;  ///< [1, 2, D] scale_shift_table -> [2, D]
};

bool split_module_suffix(const std::string& name, std::string* module, std::string* suffix) {
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) return false;
    *module = name.substr(0, dot);
    *suffix = name.substr(dot);
    return *suffix == ".weight" || *suffix == ".bias";
}

/// Original name (no prefix) -> its diffusers entries ({} when it is not a Sana tensor).
std::vector<std::pair<std::string, Entry>> map_original(const std::string& name) {
    std::vector<std::pair<std::string, Entry>> out;
    if (name == "final_layer.scale_shift_table") return {{"scale_shift_table", {name}}};
    std::string module, suffix;
    if (name.rfind("blocks.", 0) == 0) {
        const auto dot = name.find('.', 7);
        if (dot == std::string::npos) return out;
        const std::string index = name.substr(7, dot - 7), rest = name.substr(dot + 1);
        const std::string head = "transformer_blocks." + index + ".";
        if (rest == "scale_shift_table") return {{head + rest, {name}}};
        if (!split_module_suffix(rest, &module, &suffix)) return out;
        for (const auto& p : kBlockModules)
            if (module == p.original) return {{head + p.diffusers + suffix, {name}}};
        for (const auto& f : fused_block_modules())
            if (module == f.original)
                for (size_t i = 0; i < f.parts.size(); ++i)
                    out.push_back({head + f.parts[i] + suffix,
                                   {name, static_cast<int>(i), static_cast<int>(f.parts.size())}});
        return out;
    }
    if (!split_module_suffix(name, &module, &suffix)) return out;
    for (const auto& p : kGlobalModules)
        if (module == p.original) return {{p.diffusers + suffix, {name}}};
    return out;
}

/// The diffusers-named view over a checkpoint of either layout.
class SanaView final : public st::sdk::TensorSource {
  public:
    SanaView(std::shared_ptr<st::sdk::TensorSource> base, const std::string& prefix, bool original)
        : base_(std::move(base)) {
        for (const auto& info : base_->infos()) {
            std::string name = info.name;
            if (!prefix.empty()) {
                if (name.rfind(prefix, 0) != 0) {
                    add(name, {info.name}, info);  // foreign: strict loading reports it
                    continue;
                }
                name = name.substr(prefix.size());
            }
            if (original) {
                if (dropped_original(name)) {
                    ++dropped_;
                    continue;
                }
                auto mapped = map_original(name);
                if (mapped.empty()) add(name, {info.name}, info);
                for (auto& [ours, e] : mapped) {
                    e.file_name = info.name;
                    add(ours, e, info);
                }
            } else {
                add(name, {info.name}, info);
            }
        }
    }
    std::string describe() const override { return base_->describe(); }
    std::vector<st::sdk::TensorInfo> infos() const override {
        std::vector<st::sdk::TensorInfo> v;
        for (const auto& [n, i] : infos_) v.push_back(i);
        return v;
    }
    bool contains(const std::string& name) const override { return entries_.count(name) > 0; }
    at::Tensor load(const std::string& name) const override {
        const Entry& e = entries_.at(name);
        at::Tensor t = base_->load(e.file_name);
        if (e.parts > 1) t = t.chunk(e.parts, 0)[e.part].contiguous();
        if (e.squeeze) t = t.squeeze(0);
        return t;
    }
    std::map<std::string, std::string> metadata() const override { return base_->metadata(); }
    int dropped() const { return dropped_; }
    bool squeezed() const { return squeezed_; }
    const Entry& entry(const std::string& name) const { return entries_.at(name); }

  private:
    void add(const std::string& ours, Entry e, const st::sdk::TensorInfo& file_info) {
        st::sdk::TensorInfo i = file_info;
        i.name = ours;
        if (e.parts > 1) {
            if (i.shape.empty() || i.shape[0] % e.parts != 0)
                fail(kSanaComponentId, "load", "{}: '{}' {} cannot be split in {} along dim 0",
                     base_->describe(), e.file_name, c10::str(i.shape), e.parts);
            i.shape[0] /= e.parts;
        }
        if (ours == "scale_shift_table" && i.shape.size() == 3 && i.shape[0] == 1) {
            e.squeeze = true;
            squeezed_ = true;
            i.shape.erase(i.shape.begin());
        }
        entries_[ours] = e;
        infos_[ours] = i;
    }
    std::shared_ptr<st::sdk::TensorSource> base_;
    std::map<std::string, Entry> entries_;
    std::map<std::string, st::sdk::TensorInfo> infos_;
    int dropped_ = 0;
    bool squeezed_ = false;
};

std::shared_ptr<st::sdk::TensorSource> open_file(const fs::path& weights) {
    const std::string name = weights.filename().string();
    if (name.ends_with(".pth") || name.ends_with(".pt") || name.ends_with(".bin"))
        return std::make_shared<st::kit::MemoryTensorSource>(
            st::kit::read_torch_state_dict(weights, kSanaComponentId, {"state_dict", "model", "module"}),
            weights.string());
    return nullptr;
}

std::string variant_name(const SanaVideoTransformerConfig& c) {
    SanaVideoTransformerConfig release = SanaVideoTransformerConfig::sana_2b_480p();
    release.in_channels = c.in_channels;  // detection cannot see rope/eps/sample_size: compare shapes
    if (c.inner_dim() == release.inner_dim() && c.num_layers == release.num_layers &&
        c.caption_channels == release.caption_channels && c.ffn_hidden() == release.ffn_hidden())
        return "sana-video-2b-480p";
    return "sana-video custom";
}

}  // namespace

std::string SanaCheckpointInfo::summary() const {
    return facts.summary(describe(config));
}

st::kit::ModelLocation locate_sana_transformer(const fs::path& path, const std::string& subfolder,
                                               const std::string& variant) {
    st::kit::ModelQuery q;
    q.component = kSanaComponentId;
    q.what = kWhat;
    q.config_class = "SanaVideoTransformer3DModel";
    q.pipeline_prefix = "SanaVideo";
    q.subfolder = subfolder;
    q.variant = variant;
    return st::kit::locate_model(path, q);
}

std::string sana_original_name(const std::string& diffusers_name) {
    // Inverse of map_original for messages: search the tables.
    std::string module, suffix;
    if (diffusers_name == "scale_shift_table") return "final_layer.scale_shift_table";
    if (diffusers_name.rfind("transformer_blocks.", 0) == 0) {
        const auto dot = diffusers_name.find('.', 19);
        const std::string index = diffusers_name.substr(19, dot - 19), rest = diffusers_name.substr(dot + 1);
        const std::string head = "blocks." + index + ".";
        if (rest == "scale_shift_table") return head + rest;
        if (split_module_suffix(rest, &module, &suffix)) {
            for (const auto& p : kBlockModules)
                if (module == p.diffusers) return head + p.original + suffix;
            for (const auto& f : fused_block_modules())
                for (size_t i = 0; i < f.parts.size(); ++i)
                    if (module == f.parts[i])
                        return fmt::format("{}{}{} [part {}/{}]", head, f.original, suffix, i + 1,
                                           f.parts.size());
        }
        return diffusers_name;
    }
    if (split_module_suffix(diffusers_name, &module, &suffix))
        for (const auto& p : kGlobalModules)
            if (module == p.diffusers) return p.original + suffix;
    return diffusers_name;
}

std::shared_ptr<st::sdk::TensorSource> open_sana_transformer(const st::kit::ModelLocation& location,
                                                             SanaCheckpointInfo* info) {
    std::shared_ptr<st::sdk::TensorSource> file = open_file(location.weights);
    if (!file) file = st::kit::open_model_weights(location, kWhat);
    SanaCheckpointInfo local;
    SanaCheckpointInfo& out = info ? *info : local;
    out = SanaCheckpointInfo{};
    st::kit::detect_layout(*file, {"model.diffusion_model.", "diffusion_model.", "model.", "module."},
                           {"patch_embedding.weight", "time_embed.linear.weight"},
                           {"x_embedder.proj.weight", "t_block.1.weight"}, kSanaComponentId, kWhat,
                           &out.facts);
    out.facts.count(*file);
    auto view =
        std::make_shared<SanaView>(file, out.facts.prefix, out.facts.layout == st::kit::KeyLayout::original);
    out.squeezed_scale_shift_table = view->squeezed();
    out.config = SanaVideoTransformerConfig::detect_from_weights(*view);
    if (location.config_json) {
        SanaVideoTransformerConfig file_config = SanaVideoTransformerConfig::from_file(*location.config_json);
        std::vector<std::string> diffs;
        auto cmp = [&](const char* what, auto a, auto b) {
            if (a != b) diffs.push_back(fmt::format("{}: config {} vs weights {}", what, a, b));
        };
        const auto& w = out.config;
        cmp("inner dim", file_config.inner_dim(), w.inner_dim());
        cmp("num_layers", file_config.num_layers, w.num_layers);
        cmp("in_channels", file_config.in_channels, w.in_channels);
        cmp("out_channels", file_config.out_channels, w.out_channels);
        cmp("caption_channels", file_config.caption_channels, w.caption_channels);
        cmp("feed-forward width", file_config.ffn_hidden(), w.ffn_hidden());
        cmp("attention_bias", file_config.attention_bias, w.attention_bias);
        if (file_config.patch_size != w.patch_size) diffs.push_back("patch_size");
        if (!diffs.empty())
            fail(kSanaComponentId, "load", "{} disagrees with the weights {}: {}",
                 location.config_json->string(), file->describe(), fmt::join(diffs, "; "));
        out.config = file_config;
    }
    out.facts.variant = variant_name(out.config);
    if (view->dropped() > 0)
        st::log::info("model.sanavideo",
                      "{}: {} original-only tensors (y_embedding, pos_embed, logvar_linear) not used",
                      file->describe(), view->dropped());
    return view;
}

LoadedSanaTransformer load_sana_transformer(const fs::path& path, const SanaLoadOptions& options) {
    LoadedSanaTransformer out;
    out.location = locate_sana_transformer(path, options.subfolder, options.variant);
    auto source = open_sana_transformer(out.location, &out.info);
    out.model = SanaVideoTransformer3DModel(out.info.config);
    out.model->set_compute_dtype(options.dtype);
    // The view already speaks diffusers names: load with an empty prefix and no renames.
    st::kit::CheckpointFacts facts = out.info.facts;
    facts.prefix.clear();
    facts.layout = st::kit::KeyLayout::diffusers;
    static const st::kit::KeyMapTable identity;
    st::kit::load_weights(*out.model, *source, facts, identity, kSanaComponentId, kWhat);
    if (options.device != at::Device(at::kCPU)) out.model->to(options.device);
    st::log::info("model.sanavideo", "transformer {}{} from {} -> {}", out.info.summary(),
                  out.info.squeezed_scale_shift_table ? " (scale_shift_table [1, 2, D] squeezed)" : "",
                  source->describe(), c10::toString(options.dtype));
    return out;
}

void save_sana_transformer(SanaVideoTransformer3DModelImpl& model, const fs::path& dir,
                           at::ScalarType dtype) {
    st::kit::save_model(model, dir, model.config().to_json(), dtype,
                        &SanaVideoTransformer3DModelImpl::keeps_fp32, kSanaComponentId);
}

SanaVideoTransformerConfig SanaVideoTransformerConfig::detect_from_weights(
    const st::sdk::TensorSource& source) {
    // `source` speaks diffusers names (the view of open_sana_transformer, or a diffusers file).
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& i : source.infos()) shapes[i.name] = i.shape;
    auto need = [&](const std::string& name, size_t rank) -> const std::vector<int64_t>& {
        auto it = shapes.find(name);
        if (it == shapes.end())
            fail(kSanaComponentId, "load", "{} has no '{}' (original name '{}'): it is not a {}",
                 source.describe(), name, sana_original_name(name), kWhat);
        if (it->second.size() != rank)
            fail(kSanaComponentId, "load", "{}: '{}' has shape {}, expected {} dimensions", source.describe(),
                 name, c10::str(it->second), rank);
        return it->second;
    };
    SanaVideoTransformerConfig c;
    const auto& patch = need("patch_embedding.weight", 5);  // [D, C_in, pt, ph, pw]
    const int64_t d = patch[0];
    c.in_channels = patch[1];
    c.patch_size = {patch[2], patch[3], patch[4]};
    c.caption_channels = need("caption_projection.linear_1.weight", 2)[1];
    const int64_t pprod = patch[2] * patch[3] * patch[4];
    c.out_channels = need("proj_out.weight", 2)[0] / pprod;
    int64_t layers = 0;
    while (shapes.count("transformer_blocks." + std::to_string(layers) + ".scale_shift_table")) ++layers;
    if (layers == 0) need("transformer_blocks.0.scale_shift_table", 2);
    c.num_layers = layers;
    const int64_t hidden = need("transformer_blocks.0.ff.conv_point.weight", 4)[1];
    c.mlp_ratio = static_cast<double>(hidden) / static_cast<double>(d);
    c.attention_head_dim = d % 112 == 0 ? 112 : st::kit::guess_head_dim(d);
    c.num_attention_heads = d / c.attention_head_dim;
    c.cross_attention_head_dim = c.attention_head_dim;
    c.num_cross_attention_heads = c.num_attention_heads;
    c.cross_attention_dim = need("transformer_blocks.0.attn2.to_k.weight", 2)[1];
    c.attention_bias = shapes.count("transformer_blocks.0.attn1.to_q.bias") > 0;
    try {
        c.validate();
    } catch (const Error& e) {
        throw e.with_context("while detecting the " + std::string(kWhat) + " config from " +
                             source.describe());
    }
    return c;
}

}  // namespace st::plugins::sanavideo
