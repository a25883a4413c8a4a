// model.sanavideo@1 tools: probe and the `st-host forward` components. Tensor names follow
// shared/golden/MANIFEST.md (cases sanavideo, hf_gemma2, wan_vae), so a golden inputs.safetensors run
// through a component gives names matching the golden outputs:
//   transformer:  hidden_states, timestep, encoder_hidden_states [, encoder_attention_mask]
//                 [, timestep_per_token]  -> out [, out_without_mask] [, out_per_token_timestep]
//   text_encoder: input_ids [B, L], attention_mask [B, L] -> last_hidden_state, hidden_states_<i>
//   vae_encode / vae_decode: the kit's Wan VAE components (st/kit/vae_forward.h)
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "sana_family.h"
#include "sana_text.h"
#include "st/error.h"
#include "st/kit/vae_forward.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;
using st::sdk::ConfigView;
using st::sdk::TensorMap;

namespace {

const at::Tensor& require(const TensorMap& in, const std::string& name, const std::string& component) {
    auto it = in.find(name);
    if (it == in.end()) {
        std::vector<std::string> names;
        for (const auto& [k, v] : in) names.push_back(k);
        fail(kSanaComponentId, "forward", "component '{}' needs input tensor '{}'; the inputs hold: {}",
             component, name, fmt::join(names, ", "));
    }
    return it->second;
}

TensorMap forward_transformer(const fs::path& model, const TensorMap& in, const ConfigView& config) {
    const SanaModelPaths paths = resolve_sana_paths(model, config);
    SanaLoadOptions lo;
    lo.subfolder = paths.transformer_subfolder;
    LoadedSanaTransformer loaded = load_sana_transformer(paths.transformer, lo);
    loaded.model->eval();
    torch::NoGradGuard no_grad;
    SanaTransformerInputs si;
    si.hidden_states = require(in, "hidden_states", "transformer").to(at::kFloat);
    si.timestep = require(in, "timestep", "transformer").to(at::kFloat);
    si.encoder_hidden_states = require(in, "encoder_hidden_states", "transformer").to(at::kFloat);
    TensorMap out;
    if (auto it = in.find("encoder_attention_mask"); it != in.end()) {
        out["out_without_mask"] = loaded.model->forward(si);
        si.encoder_attention_mask = it->second.to(at::kFloat);
    }
    out["out"] = loaded.model->forward(si);
    if (auto it = in.find("timestep_per_token"); it != in.end()) {
        si.timestep = it->second.to(at::kFloat);
        out["out_per_token_timestep"] = loaded.model->forward(si);
    }
    return out;
}

}  // namespace

std::vector<std::string> sana_forward_components() {
    return {"transformer", "text_encoder", "vae_encode", "vae_decode"};
}

TensorMap run_sana_forward(const fs::path& model, const std::string& component, const TensorMap& inputs,
                           const ConfigView& config) {
    if (component == "transformer") return forward_transformer(model, inputs, config);
    if (component == "text_encoder") {
        const SanaModelPaths paths = resolve_sana_paths(model, config);
        return run_gemma_component(paths, require(inputs, "input_ids", component),
                                   require(inputs, "attention_mask", component));
    }
    if (st::kit::is_vae_component(component)) {
        const SanaModelPaths paths = resolve_sana_paths(model, config);
        if (paths.vae.empty())
            fail(kSanaComponentId, "forward", "'{}' has no vae/ folder (AutoencoderKLWan)", model.string());
        st::kit::WanVAE vae = st::kit::load_wan_vae(paths.vae, kSanaComponentId);
        return st::kit::run_vae_component(vae, component, inputs, kSanaComponentId);
    }
    fail(kSanaComponentId, "forward", "unknown component '{}' (known: {})", component,
         fmt::join(sana_forward_components(), ", "));
}

st::sdk::ProbeResult SanaVideoFamily::probe(const fs::path& path) const {
    st::sdk::ProbeResult r;
    try {
        const auto loc = locate_sana_transformer(path, "transformer");
        SanaCheckpointInfo info;
        open_sana_transformer(loc, &info);
        const std::string where = loc.model_index             ? "diffusers pipeline"
                                  : fs::is_regular_file(path) ? "single file"
                                                              : "transformer folder";
        r.loadable = true;
        r.variant = fmt::format("{} [{}]", info.summary(), where);
    } catch (const std::exception& e) {
        r.loadable = false;
        r.reason = e.what();
    }
    return r;
}

}  // namespace st::plugins::sanavideo
