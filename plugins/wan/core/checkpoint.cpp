// Locating/loading/saving Wan transformers (see checkpoint.h). Layout facts: models.md §2.1-2.2,
// §3 (expert folders), simpletuner-inventory.md §1.3 (flavours).
#include "core/checkpoint.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <fstream>

#include "st/error.h"
#include "st/json_file.h"
#include "st/kit/block_offload.h"
#include "st/log.h"
#include "st/safetensors.h"
#include "st/weights.h"

namespace st::plugins::wan {
namespace fs = std::filesystem;
namespace {

constexpr const char* kComponent = "model.wan@1";

nlohmann::json read_json(const fs::path& p) {
    return st::sdk::read_json_file(p, kComponent, "load");
}

}  // namespace

const std::vector<WanFlavour>& wan_flavours() {
    using K = WanVariantKind;
    static const std::vector<WanFlavour> flavours = {
        {"t2v-480p-1.3b-2.1", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", K::t2v},
        {"t2v-480p-14b-2.1", "Wan-AI/Wan2.1-T2V-14B-Diffusers", K::t2v},
        {"i2v-14b-2.1", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", K::i2v_21},
        {"i2v-14b-2.1-720p", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", K::i2v_21},
        {"flf2v-14b-2.1", "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers", K::flf2v_21},
        // Wan 2.2 experts: transformer/ = high noise (t >= boundary), transformer_2/ = low noise.
        {"i2v-14b-2.2-high", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", K::i2v_22, "transformer", "transformer_2",
         0.9, 5.0, true},
        {"i2v-14b-2.2-low", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", K::i2v_22, "transformer_2", "transformer",
         0.9, 5.0, false},
        {"animegen-t2v-high", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", K::t2v, "transformer", "transformer_2",
         0.875, 3.0, true},
        {"animegen-t2v-low", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", K::t2v, "transformer_2", "transformer",
         0.875, 3.0, false},
        {"ti2v-5b-2.2", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", K::ti2v_22},
    };
    return flavours;
}

std::vector<std::string> wan_flavour_names() {
    std::vector<std::string> out;
    for (const auto& f : wan_flavours()) out.push_back(f.name);
    return out;
}

const WanFlavour& find_flavour(const std::string& name) {
    for (const auto& f : wan_flavours())
        if (f.name == name) return f;
    fail(kComponent, "config", "unknown model_flavour '{}' for wan (known: {})", name,
         fmt::join(wan_flavour_names(), ", "));
}

TransformerLocation locate_transformer(const fs::path& path, const std::string& subfolder,
                                       const std::string& variant) {
    st::kit::ModelQuery q;
    q.component = kComponent;
    q.what = "Wan transformer";
    q.config_class = "WanTransformer3DModel";
    q.pipeline_prefix = "Wan";
    q.subfolder = subfolder;
    q.variant = variant;
    return st::kit::locate_model(path, q);
}

std::shared_ptr<st::sdk::TensorSource> open_transformer_weights(const TransformerLocation& location) {
    return st::kit::open_model_weights(location, "Wan transformer");
}

std::optional<double> read_boundary_ratio(const fs::path& model_index_json) {
    const auto j = read_json(model_index_json);
    if (!j.contains("boundary_ratio") || j["boundary_ratio"].is_null()) return std::nullopt;
    if (!j["boundary_ratio"].is_number())
        fail(kComponent, "load", "{}: boundary_ratio must be a number, got {}", model_index_json.string(),
             j["boundary_ratio"].dump());
    return j["boundary_ratio"].get<double>();
}

namespace {
std::string show(int64_t v) {
    return std::to_string(v);
}
std::string show(bool v) {
    return v ? "true" : "false";
}
std::string show(const std::optional<int64_t>& v) {
    return v ? std::to_string(*v) : "null";
}
std::string show(const std::array<int64_t, 3>& v) {
    return fmt::format("[{}]", fmt::join(v, ", "));
}

// Fields the weights determine; config.json must agree (the [risk] of image_dim in I2V-A14B configs).
void cross_check(const WanTransformerConfig& file, const WanTransformerConfig& weights,
                 const fs::path& config_json, const std::string& weights_desc) {
    std::vector<std::string> diffs;
    auto cmp = [&](const char* name, const auto& a, const auto& b) {
        if (a != b) diffs.push_back(fmt::format("{}: config {} vs weights {}", name, show(a), show(b)));
    };
    cmp("inner dim", file.inner_dim(), weights.inner_dim());
    cmp("in_channels", file.in_channels, weights.in_channels);
    cmp("out_channels", file.out_channels, weights.out_channels);
    cmp("ffn_dim", file.ffn_dim, weights.ffn_dim);
    cmp("num_layers", file.num_layers, weights.num_layers);
    cmp("text_dim", file.text_dim, weights.text_dim);
    cmp("freq_dim", file.freq_dim, weights.freq_dim);
    cmp("patch_size", file.patch_size, weights.patch_size);
    cmp("cross_attn_norm", file.cross_attn_norm, weights.cross_attn_norm);
    cmp("image_dim", file.image_dim, weights.image_dim);
    cmp("added_kv_proj_dim", file.added_kv_proj_dim, weights.added_kv_proj_dim);
    cmp("pos_embed_seq_len", file.pos_embed_seq_len, weights.pos_embed_seq_len);
    if (!diffs.empty())
        fail(kComponent, "load", "{} disagrees with the weights {}: {}", config_json.string(), weights_desc,
             fmt::join(diffs, "; "));
}
}  // namespace

st::sdk::BaseWeightPlan wan_base_weight_plan(st::sdk::BaseWeightPlan plan) {
    if (plan.source_value == "int8-quanto")
        plan.int8_exclude = {"*norm*",
                             "*norm1_context*",
                             "*norm_added_q*",
                             "*norm_added_k*",
                             "proj_out*",
                             "*pos_embed*",
                             "*patch_embedding*",
                             "*ffn*",
                             "*scale_shift_table*",
                             "*norm_out*",
                             "*context_embedder*",
                             "*time_text_embed*",
                             "*time_proj*",
                             "*condition_embedder*"};
    if (plan.source_value == "int8-torchao") plan.int8_multiple = 16;
    return plan;
}

LoadedTransformer load_transformer(const fs::path& path, const TransformerLoadOptions& options) {
    LoadedTransformer out;
    out.location = locate_transformer(path, options.subfolder, options.variant);
    auto source = open_transformer_weights(out.location);
    out.info = inspect_transformer(*source);
    WanTransformerConfig config = out.info.config;
    if (out.location.config_json) {
        config = WanTransformerConfig::from_file(*out.location.config_json);
        cross_check(config, out.info.config, *out.location.config_json, source->describe());
        out.info.config = config;
    }
    {
        // The Linear weights are left untouched until the strict load fills (or adopts) them.
        st::sdk::DeferredInit deferred;
        out.model = WanTransformer3DModel(config);
    }
    // SimpleTuner's Wan int8 rules apply here, where every Wan loader (training, the peer expert) passes.
    const st::sdk::BaseWeightPlan base = wan_base_weight_plan(options.base);
    st::kit::load_weights(*out.model, *source, out.info, wan_key_table(), kComponent, "Wan transformer",
                          base);
    out.model->set_compute_dtype(options.dtype);
    if (options.device != at::Device(at::kCPU)) out.model->to(options.device);
    if (!base.offload_dir.empty()) {
        std::vector<torch::nn::Module*> blocks;
        for (size_t i = 0; i < out.model->blocks->size(); ++i) blocks.push_back(out.model->blocks[i].get());
        auto offload = std::make_shared<st::kit::BlockOffload>(
            blocks, base, options.subfolder.empty() ? "transformer" : options.subfolder);
        st::log::info("model.wan", "block offload to disk: {}", offload->describe());
        out.model->set_block_offload(std::move(offload));
    }
    st::log::info("model.wan", "transformer {} from {} -> {}{}", out.info.summary(), source->describe(),
                  c10::toString(options.dtype), st::kit::describe_base_weights(*out.model, base));
    return out;
}

void save_transformer(WanTransformer3DModelImpl& model, const fs::path& dir, at::ScalarType dtype) {
    st::kit::save_model(model, dir, model.config().to_json(), dtype, &WanTransformer3DModelImpl::keeps_fp32,
                        kComponent);
}

}  // namespace st::plugins::wan
