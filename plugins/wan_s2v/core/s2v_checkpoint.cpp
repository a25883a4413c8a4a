// S2V checkpoint detection, loading and saving (see s2v_checkpoint.h). Layout facts: models.md §5.1,
// §5.2; folder conventions as plugins/wan/core/checkpoint.cpp.
#include "core/s2v_checkpoint.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <vector>

#include "core/checkpoint.h"
#include "core/s2v_key_map.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/block_offload.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::wan_s2v {
namespace fs = std::filesystem;
namespace {

constexpr const char* kComponent = "model.wan_s2v@1";

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

}  // namespace

std::string s2v_to_diffusers_key(const std::string& file_name, const S2VCheckpointInfo& info) {
    return info.to_ours(file_name, s2v_key_table());
}

S2VCheckpointInfo inspect_s2v_transformer(const st::sdk::TensorSource& source,
                                          const std::optional<std::vector<int64_t>>& hint) {
    S2VCheckpointInfo info;
    info.count(source);
    st::kit::detect_layout(source, st::plugins::wan::wan_checkpoint_prefixes(), {kS2VDiffusersMarker},
                           {kS2VOriginalMarker}, kComponent, "Wan S2V transformer", &info);
    const st::kit::ShapeTable t(source, info, s2v_key_table(), kComponent, "Wan S2V transformer",
                                "the weights fit no Wan S2V model");
    WanS2VConfig& c = info.config;
    const auto& pe = t.need("patch_embedding.weight", 5);  // [D, C_in, pt, ph, pw]
    const int64_t d = pe[0];
    c.in_channels = pe[1];
    c.patch_size = {pe[2], pe[3], pe[4]};
    c.attention_head_dim = st::kit::guess_head_dim(d);
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

S2VTransformerLocation locate_s2v_transformer(const fs::path& path, const std::string& subfolder,
                                              const std::string& variant) {
    st::kit::ModelQuery q;
    q.component = kComponent;
    q.what = "Wan S2V transformer";
    q.config_class = "WanS2VTransformer3DModel";
    q.subfolder = subfolder;
    q.variant = variant;
    return st::kit::locate_model(path, q);
}

namespace {

struct Opened {
    std::shared_ptr<st::sdk::TensorSource> source;
    S2VCheckpointInfo info;
};

Opened open_and_inspect(const S2VTransformerLocation& location, const std::optional<WanS2VConfig>& config) {
    Opened out;
    out.source = st::kit::open_model_weights(location, "Wan S2V transformer");
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
    {
        // The Linear weights are left untouched until the strict load fills (or adopts) them.
        st::sdk::DeferredInit deferred;
        out.model = WanS2VTransformer3DModel(out.info.config);
    }
    const st::sdk::BaseWeightPlan base = st::plugins::wan::wan_base_weight_plan(options.base);
    st::kit::load_weights(*out.model, *source, out.info, s2v_key_table(), kComponent, "Wan S2V transformer",
                          base);
    out.model->set_compute_dtype(options.dtype);
    if (options.device != at::Device(at::kCPU)) out.model->to(options.device);
    if (!base.offload_dir.empty()) {
        std::vector<torch::nn::Module*> blocks;
        for (size_t i = 0; i < out.model->blocks->size(); ++i) blocks.push_back(out.model->blocks[i].get());
        auto offload = std::make_shared<st::kit::BlockOffload>(
            blocks, base, options.subfolder.empty() ? "transformer" : options.subfolder);
        st::log::info("model.wan_s2v", "block offload to disk: {}", offload->describe());
        out.model->set_block_offload(std::move(offload));
    }
    st::log::info("model.wan_s2v", "transformer {} from {} -> {}{}", out.info.summary(), source->describe(),
                  c10::toString(options.dtype), st::kit::describe_base_weights(*out.model, base));
    return out;
}

void save_s2v_transformer(WanS2VTransformer3DModelImpl& model, const fs::path& dir, at::ScalarType dtype) {
    st::kit::save_model(model, dir, model.config().to_json(), dtype,
                        &WanS2VTransformer3DModelImpl::keeps_fp32, kComponent);
}

WanS2VTransformer3DModel make_random_s2v_transformer(const WanS2VConfig& config, uint64_t seed,
                                                     at::ScalarType dtype) {
    WanS2VTransformer3DModel model(config);
    st::plugins::wan::randomize_parameters(*model, seed);
    model->set_compute_dtype(dtype);
    return model;
}

}  // namespace st::plugins::wan_s2v
