// S2V checkpoint detection, loading and saving (see s2v_checkpoint.h). Layout facts: models.md §5.1,
// §5.2; folder conventions as plugins/wan/core/checkpoint.cpp.
#include "core/s2v_checkpoint.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <vector>

#include "core/s2v_key_map.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::wan_s2v {
namespace fs = std::filesystem;
namespace {

constexpr const char* kComponent = "model.wan_s2v@1";

std::string shape_str(const std::vector<int64_t>& s) {
    return fmt::format("[{}]", fmt::join(s, ", "));
}

// Shapes by diffusers name (whatever the file layout).
class ShapeTable {
  public:
    ShapeTable(const st::sdk::TensorSource& source, const S2VCheckpointInfo& info) : info_(info) {
        describe_ = source.describe();
        for (const auto& ti : source.infos()) shapes_[s2v_to_diffusers_key(ti.name, info)] = ti.shape;
    }
    bool has(const std::string& name) const { return shapes_.count(name) > 0; }
    const std::vector<int64_t>& need(const std::string& name, size_t rank) const {
        auto it = shapes_.find(name);
        if (it == shapes_.end()) {
            std::string file_name = name;
            if (info_.layout == KeyLayout::original)
                file_name = s2v_diffusers_to_original(name).value_or(name);
            fail(kComponent, "detect", "{}: Wan S2V transformer tensor '{}{}' is missing ({} layout)",
                 describe_, info_.prefix, file_name, st::plugins::wan::key_layout_name(info_.layout));
        }
        if (it->second.size() != rank)
            fail(kComponent, "detect", "{}: '{}' has shape {}, expected {} dimensions", describe_, name,
                 shape_str(it->second), rank);
        return it->second;
    }
    // Distinct indices N of "<head>N." names; must be 0..n-1.
    int64_t count_indexed(const std::string& head) const {
        std::set<int64_t> idx;
        for (const auto& [name, shape] : shapes_) {
            if (name.rfind(head, 0) != 0) continue;
            const size_t end = name.find('.', head.size());
            try {
                idx.insert(std::stoll(name.substr(head.size(), end - head.size())));
            } catch (const std::exception&) {
            }
        }
        const int64_t n = static_cast<int64_t>(idx.size());
        if (n > 0 && *idx.rbegin() != n - 1)
            fail(kComponent, "detect", "{}: '{}N' indices are not contiguous ({} found, highest {})",
                 describe_, head, n, *idx.rbegin());
        return n;
    }
    const std::string& describe() const { return describe_; }

  private:
    const S2VCheckpointInfo& info_;
    std::string describe_;
    std::map<std::string, std::vector<int64_t>> shapes_;
};

int64_t guess_head_dim(int64_t dim) {
    for (int64_t d : {128, 64, 32, 16, 12, 8})
        if (dim % d == 0) return d;
    return dim;
}

// Layout and prefix from the marker tensors.
void detect_layout(const st::sdk::TensorSource& source, S2VCheckpointInfo* info) {
    std::vector<std::string> prefixes{""};
    for (const auto& p : st::plugins::wan::wan_checkpoint_prefixes()) prefixes.push_back(p);
    for (const auto& p : prefixes) {
        if (source.contains(p + kS2VDiffusersMarker)) {
            info->layout = KeyLayout::diffusers;
            info->prefix = p;
            return;
        }
        if (source.contains(p + kS2VOriginalMarker)) {
            info->layout = KeyLayout::original;
            info->prefix = p;
            return;
        }
    }
    std::vector<std::string> first;
    for (const auto& ti : source.infos()) {
        if (first.size() == 5) break;
        first.push_back(ti.name);
    }
    fail(kComponent, "detect",
         "{} is not a Wan S2V transformer: neither '{}' (diffusers) nor '{}' (original/ComfyUI) found, with "
         "or "
         "without a 'model.diffusion_model.' prefix (first keys: {})",
         source.describe(), kS2VDiffusersMarker, kS2VOriginalMarker, fmt::join(first, ", "));
}

// Fields the weights determine; a config file must agree.
void cross_check(const WanS2VConfig& file, const WanS2VConfig& weights, const std::string& config_desc,
                 const std::string& weights_desc) {
    std::vector<std::string> diffs;
    auto cmp = [&](const char* name, int64_t a, int64_t b) {
        if (a != b) diffs.push_back(fmt::format("{}: config {} vs weights {}", name, a, b));
    };
    cmp("inner dim", file.inner_dim(), weights.inner_dim());
    cmp("in_channels", file.in_channels, weights.in_channels);
    cmp("out_channels", file.out_channels, weights.out_channels);
    cmp("ffn_dim", file.ffn_dim, weights.ffn_dim);
    cmp("num_layers", file.num_layers, weights.num_layers);
    cmp("text_dim", file.text_dim, weights.text_dim);
    cmp("freq_dim", file.freq_dim, weights.freq_dim);
    cmp("audio_dim", file.audio_dim, weights.audio_dim);
    cmp("pose_dim", file.pose_dim, weights.pose_dim);
    cmp("num_weighted_avg_layers", file.num_weighted_avg_layers, weights.num_weighted_avg_layers);
    cmp("audio injectors", static_cast<int64_t>(file.audio_inject_layers.size()),
        static_cast<int64_t>(weights.audio_inject_layers.size()));
    cmp("enable_framepack", file.enable_framepack, weights.enable_framepack);
    cmp("cross_attn_norm", file.cross_attn_norm, weights.cross_attn_norm);
    for (int i = 0; i < 3; ++i) cmp("patch_size", file.patch_size[i], weights.patch_size[i]);
    if (!diffs.empty())
        fail(kComponent, "load", "{} disagrees with the weights {}: {}", config_desc, weights_desc,
             fmt::join(diffs, "; "));
}

nlohmann::json read_json(const fs::path& p) {
    return st::sdk::read_json_file(p, kComponent, "load");
}

std::string list_dir(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        out.push_back(e.path().filename().string() + (e.is_directory() ? "/" : ""));
    std::sort(out.begin(), out.end());
    return fmt::format("{}", fmt::join(out, ", "));
}

}  // namespace

std::string S2VCheckpointInfo::summary() const {
    std::vector<std::string> d;
    for (const auto& [name, n] : dtypes) d.push_back(fmt::format("{} x{}", name, n));
    return fmt::format("{} ({} layout{}, {} tensors, {}; {})", variant,
                       st::plugins::wan::key_layout_name(layout),
                       prefix.empty() ? "" : fmt::format(", prefix '{}'", prefix), tensor_count,
                       fmt::join(d, ", "), describe(config));
}

std::string s2v_to_diffusers_key(const std::string& file_name, const S2VCheckpointInfo& info) {
    std::string name = file_name;
    if (!info.prefix.empty() && name.rfind(info.prefix, 0) == 0) name = name.substr(info.prefix.size());
    if (info.layout == KeyLayout::original) return s2v_original_to_diffusers(name).value_or(file_name);
    return name;
}

S2VCheckpointInfo inspect_s2v_transformer(const st::sdk::TensorSource& source,
                                          const std::optional<std::vector<int64_t>>& hint) {
    S2VCheckpointInfo info;
    detect_layout(source, &info);
    for (const auto& ti : source.infos()) {
        ++info.dtypes[ti.dtype];
        ++info.tensor_count;
    }
    const ShapeTable t(source, info);
    WanS2VConfig& c = info.config;
    const auto& pe = t.need("patch_embedding.weight", 5);  // [D, C_in, pt, ph, pw]
    const int64_t d = pe[0];
    c.in_channels = pe[1];
    c.patch_size = {pe[2], pe[3], pe[4]};
    c.attention_head_dim = guess_head_dim(d);
    c.num_attention_heads = d / c.attention_head_dim;
    c.num_layers = t.count_indexed("blocks.");
    c.ffn_dim = t.need("blocks.0.ffn.net.0.proj.weight", 2)[0];
    c.cross_attn_norm = t.has("blocks.0.norm2.weight");
    c.text_dim = t.need("condition_embedder.text_embedder.linear_1.weight", 2)[1];
    c.freq_dim = t.need("condition_embedder.time_embedder.linear_1.weight", 2)[1];
    c.out_channels = t.need("proj_out.weight", 2)[0] / (pe[2] * pe[3] * pe[4]);
    c.audio_dim = t.need("condition_embedder.causal_audio_encoder.encoder.conv1_local.conv.weight", 3)[1];
    c.num_weighted_avg_layers = t.need("condition_embedder.causal_audio_encoder.weighted_avg.weights", 4)[1];
    c.pose_dim = t.need("condition_embedder.pose_embedder.weight", 5)[1];
    c.enable_framepack = t.has("frame_packer.proj.weight");
    c.enable_adain = t.has("audio_injector.injector_adain_layers.0.linear.weight");
    c.adain_mode =
        t.has("audio_injector.injector_adain_output_layers.0.weight") ? "attn_output" : "attn_norm";
    const int64_t injectors = t.count_indexed("audio_injector.injector.");
    if (hint) {
        if (static_cast<int64_t>(hint->size()) != injectors)
            fail(kComponent, "detect",
                 "{}: {} audio injectors in the weights but audio_inject_layers {} names {}",
                 source.describe(), injectors, nlohmann::json(*hint).dump(), hint->size());
        c.audio_inject_layers = *hint;
    } else if (injectors == static_cast<int64_t>(WanS2VConfig::s2v_14b().audio_inject_layers.size()) &&
               c.num_layers == WanS2VConfig::s2v_14b().num_layers) {
        c.audio_inject_layers = WanS2VConfig::s2v_14b().audio_inject_layers;
    } else {
        fail(kComponent, "detect",
             "{}: {} audio injectors over {} blocks: their block positions are not stored in the weights; "
             "pass "
             "the model's config.json (audio_inject_layers)",
             source.describe(), injectors, c.num_layers);
    }
    try {
        c.validate();
    } catch (const Error& e) {
        throw e.with_context(fmt::format("while detecting the S2V config of {}", source.describe()));
    }
    WanS2VConfig released = WanS2VConfig::s2v_14b();
    released.audio_inject_layers = c.audio_inject_layers;
    info.variant = c == released && c.audio_inject_layers == WanS2VConfig::s2v_14b().audio_inject_layers
                       ? "s2v-14b-2.2"
                       : fmt::format("s2v custom (dim {}, {} layers)", d, c.num_layers);
    return info;
}

WanS2VConfig WanS2VConfig::detect_from_weights(const st::sdk::TensorSource& source,
                                               const std::optional<std::vector<int64_t>>& hint) {
    return inspect_s2v_transformer(source, hint).config;
}

S2VTransformerLocation locate_s2v_transformer(const fs::path& path, const std::string& subfolder_in,
                                              const std::string& variant) {
    const std::string subfolder = subfolder_in == "none" ? "" : subfolder_in;
    if (!fs::exists(path))
        fail(kComponent, "load", "model path '{}' does not exist (st never downloads)", path.string());
    S2VTransformerLocation loc;
    if (fs::is_regular_file(path)) {
        loc.weights = path;
        if (path.filename().string().rfind("diffusion_pytorch_model", 0) == 0 &&
            fs::exists(path.parent_path() / "config.json"))
            loc.config_json = path.parent_path() / "config.json";
        return loc;
    }
    fs::path dir = path;
    if (fs::exists(path / "model_index.json")) {
        const std::string sub = subfolder.empty() ? "transformer" : subfolder;
        if (!fs::is_directory(path / sub))
            fail(kComponent, "load", "pipeline folder '{}' has no '{}/' subfolder (it contains: {})",
                 path.string(), sub, list_dir(path));
        dir = path / sub;
    } else if (!subfolder.empty() && fs::is_directory(path / subfolder)) {
        dir = path / subfolder;
    }
    if (fs::exists(dir / "config.json")) {
        const auto cfg = read_json(dir / "config.json");
        const std::string cls = cfg.value("_class_name", "WanS2VTransformer3DModel");
        if (cls != "WanS2VTransformer3DModel")
            fail(kComponent, "load",
                 "'{}' is not a Wan S2V transformer: _class_name '{}' (expected "
                 "WanS2VTransformer3DModel)",
                 (dir / "config.json").string(), cls);
        loc.config_json = dir / "config.json";
    }
    const std::string base =
        variant.empty() ? "diffusion_pytorch_model" : "diffusion_pytorch_model." + variant;
    for (const auto& name : {base + ".safetensors.index.json", base + ".safetensors"}) {
        if (fs::exists(dir / name)) {
            loc.weights = dir / name;
            return loc;
        }
    }
    if (!variant.empty())
        fail(kComponent, "load", "'{}' has no {}.safetensors[.index.json] (variant '{}'); it contains: {}",
             dir.string(), base, variant, list_dir(dir));
    std::vector<fs::path> candidates;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") candidates.push_back(e.path());
    if (candidates.size() == 1) {
        loc.weights = candidates[0];
        return loc;
    }
    fail(kComponent, "load",
         "'{}' holds {} safetensors checkpoints and no diffusion_pytorch_model.safetensors[.index.json]; "
         "pass the "
         "file itself (it contains: {})",
         dir.string(), candidates.size(), list_dir(dir));
}

namespace {

struct Opened {
    std::shared_ptr<st::sdk::TensorSource> source;
    S2VCheckpointInfo info;
};

Opened open_and_inspect(const S2VTransformerLocation& location, const std::optional<WanS2VConfig>& config) {
    Opened out;
    try {
        if (location.weights.string().ends_with(".index.json"))
            out.source = st::sdk::ShardedSafetensors::open(location.weights);
        else
            out.source = st::sdk::SafetensorsFile::open(location.weights);
    } catch (const Error& e) {
        throw e.with_context(
            fmt::format("while opening the Wan S2V transformer weights '{}'", location.weights.string()));
    }
    std::optional<WanS2VConfig> given = config;
    std::string given_desc = "the config passed to the loader";
    if (!given && location.config_json) {
        given = WanS2VConfig::from_file(*location.config_json);
        given_desc = location.config_json->string();
    }
    out.info = inspect_s2v_transformer(
        *out.source, given ? std::optional<std::vector<int64_t>>(given->audio_inject_layers) : std::nullopt);
    if (given) {
        cross_check(*given, out.info.config, given_desc, out.source->describe());
        out.info.config = *given;
    }
    return out;
}

}  // namespace

S2VCheckpointInfo inspect_s2v_location(const S2VTransformerLocation& location,
                                       const std::optional<WanS2VConfig>& config) {
    return open_and_inspect(location, config).info;
}

LoadedS2VTransformer load_s2v_transformer(const fs::path& path, const S2VLoadOptions& options) {
    LoadedS2VTransformer out;
    out.location = locate_s2v_transformer(path, options.subfolder, options.variant);
    Opened opened = open_and_inspect(out.location, options.config);
    const auto& source = opened.source;
    out.info = opened.info;
    out.model = WanS2VTransformer3DModel(out.info.config);
    out.model->set_compute_dtype(options.dtype);
    st::sdk::LoadOptions lo;
    lo.component = kComponent;
    const S2VCheckpointInfo info = out.info;
    lo.key_map = [info](const std::string& name) -> std::optional<std::string> {
        return s2v_to_diffusers_key(name, info);
    };
    try {
        st::sdk::load_strict(*out.model, *source, lo);
    } catch (const Error& e) {
        throw e.with_context(fmt::format("while loading the Wan S2V transformer {} from {}", out.info.variant,
                                         source->describe()));
    }
    if (options.device != at::Device(at::kCPU)) out.model->to(options.device);
    st::log::info("model.wan_s2v", "transformer {} from {} -> {}", out.info.summary(), source->describe(),
                  c10::toString(options.dtype));
    return out;
}

void save_s2v_transformer(WanS2VTransformer3DModelImpl& model, const fs::path& dir, at::ScalarType dtype) {
    fs::create_directories(dir);
    st::sdk::TensorMap tensors;
    torch::NoGradGuard no_grad;
    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
        const at::ScalarType t = WanS2VTransformer3DModelImpl::keeps_fp32(item.key()) ? at::kFloat : dtype;
        tensors[item.key()] = item.value().detach().to(at::kCPU).to(t).contiguous();
    }
    st::sdk::save_safetensors(dir / "diffusion_pytorch_model.safetensors", tensors, {{"format", "pt"}});
    std::ofstream cfg(dir / "config.json");
    if (!cfg) fail(kComponent, "save", "cannot write '{}'", (dir / "config.json").string());
    cfg << model.config().to_json().dump(2) << "\n";
    if (!cfg) fail(kComponent, "save", "writing '{}' failed", (dir / "config.json").string());
}

WanS2VTransformer3DModel make_random_s2v_transformer(const WanS2VConfig& config, uint64_t seed,
                                                     at::ScalarType dtype) {
    WanS2VTransformer3DModel model(config);
    st::plugins::wan::randomize_parameters(*model, seed);
    model->set_compute_dtype(dtype);
    return model;
}

}  // namespace st::plugins::wan_s2v
