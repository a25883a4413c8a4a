// model.wan@1 `st-host forward` components. Tensor names follow shared/golden/MANIFEST.md (cases
// wan_t2v, wan_i2v, wan_i2v21, wan_vae, umt5), so a golden inputs.safetensors run through a
// component gives a file whose names match the golden outputs.safetensors:
//   transformer:  hidden_states, timestep [B] or [B, L], encoder_hidden_states
//                 (+ encoder_hidden_states_image for Wan 2.1 I2V)            -> out
//                 + timestep_per_token [B, L]                              -> out_per_token_timestep
//                 + timesteps [N] (one scalar per run; Wan 2.2 experts by the
//                   model_index.json boundary_ratio)                       -> out_t<int(t)>
//   vae_encode:   video<S> [B, 3, T, H, W] -> posterior_mean<S>, posterior_logvar<S>, latents_normalized<S>
//   vae_decode:   latents<S> [B, z, F, h, w] (raw) -> decoded<S>
//   text_encoder: input_ids [B, L], attention_mask [B, L] -> last_hidden_state, prompt_embeds, seq_lens
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <c10/util/StringUtil.h>

#include <cmath>

#include "core/clip_vision.h"
#include "core/ff_chunking.h"
#include "core/kit_names.h"
#include "st/error.h"
#include "st/kit/umt5.h"
#include "st/kit/vae_forward.h"
#include "st/log.h"
#include "wan_family.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using st::sdk::ConfigView;
using st::sdk::TensorMap;

namespace {

std::string names_of(const TensorMap& m) {
    std::vector<std::string> n;
    for (const auto& [k, v] : m) n.push_back(k);
    return fmt::format("{}", fmt::join(n, ", "));
}

const at::Tensor& require(const TensorMap& in, const std::string& name, const std::string& component) {
    auto it = in.find(name);
    if (it == in.end())
        fail(kWanComponentId, "forward", "component '{}' needs input tensor '{}'; the inputs hold: {}",
             component, name, names_of(in));
    return it->second;
}

at::Tensor as_float(const at::Tensor& t) {
    return t.to(at::kFloat).contiguous();
}

TensorMap forward_transformer(const fs::path& model, const TensorMap& in, const ConfigView& config) {
    const WanModelPaths paths = resolve_model_paths(model, config);
    TransformerLoadOptions lo;
    lo.subfolder = paths.transformer_subfolder;
    LoadedTransformer main = load_transformer(paths.transformer, lo);
    main.model->eval();
    main.model->set_force_2_1_time_embedding(config.has("wan_force_2_1_time_embedding") &&
                                             config.get_bool("wan_force_2_1_time_embedding"));
    main.model->set_feed_forward_chunking(resolve_feed_forward_chunking(config, kWanComponentId));

    WanTransformerInputs base;
    base.hidden_states = as_float(require(in, "hidden_states", "transformer"));
    base.encoder_hidden_states = as_float(require(in, "encoder_hidden_states", "transformer"));
    if (auto it = in.find("encoder_hidden_states_image"); it != in.end())
        base.encoder_hidden_states_image = as_float(it->second);
    if (main.info.config.has_image_branch() && !base.encoder_hidden_states_image.defined())
        fail(kWanComponentId, "forward",
             "transformer {} has the Wan 2.1 image branch: input tensor 'encoder_hidden_states_image' "
             "[B, 257, {}] is required",
             main.info.variant, main.info.config.image_dim.value_or(0));

    const bool has_t = in.count("timestep") != 0, has_tt = in.count("timesteps") != 0;
    if (!has_t && !has_tt && in.count("timestep_per_token") == 0)
        fail(kWanComponentId, "forward",
             "component 'transformer' needs 'timestep' [B] or [B, L], 'timestep_per_token' [B, L] or "
             "'timesteps' "
             "[N]; the inputs hold: {}",
             names_of(in));

    TensorMap out;
    torch::NoGradGuard no_grad;
    auto run = [&](WanTransformer3DModel& m, const at::Tensor& t) {
        WanTransformerInputs x = base;
        x.timestep = as_float(t);
        return m->forward(x).to(at::kFloat);
    };
    if (has_t) out["out"] = run(main.model, in.at("timestep"));
    if (auto it = in.find("timestep_per_token"); it != in.end())
        out["out_per_token_timestep"] = run(main.model, it->second);
    if (has_tt) {
        // One run per scalar; with a Wan 2.2 pipeline (boundary_ratio + both experts) the expert follows
        // the diffusers rule t >= boundary_ratio * 1000 -> transformer (high noise), else transformer_2.
        const at::Tensor ts = as_float(in.at("timesteps")).flatten();
        std::optional<double> boundary;
        std::optional<LoadedTransformer> low;
        if (paths.model_index && paths.transformer == paths.root &&
            fs::is_directory(paths.root / "transformer_2")) {
            boundary = read_boundary_ratio(*paths.model_index);
            if (boundary) {
                if (paths.transformer_subfolder != "transformer") {
                    TransformerLoadOptions hl;
                    hl.subfolder = "transformer";
                    main = load_transformer(paths.transformer, hl);
                    main.model->eval();
                }
                TransformerLoadOptions ll;
                ll.subfolder = "transformer_2";
                low = load_transformer(paths.transformer, ll);
                low->model->eval();
                st::log::info("model.wan",
                              "expert pair: transformer (high noise) for t >= {}, transformer_2 below",
                              *boundary * 1000.0);
            }
        }
        const int64_t batch = base.hidden_states.size(0);
        for (int64_t i = 0; i < ts.numel(); ++i) {
            const double t = ts[i].item<double>();
            WanTransformer3DModel& m = (boundary && t < *boundary * 1000.0) ? low->model : main.model;
            out[fmt::format("out_t{}", static_cast<int64_t>(std::lround(t)))] =
                run(m, at::full({batch}, t, at::TensorOptions().dtype(at::kFloat)));
        }
    }
    return out;
}

TensorMap forward_vae(const fs::path& model, const std::string& component, const TensorMap& in,
                      const ConfigView& config) {
    WanVAE vae = load_wan_vae(require_vae_path(resolve_model_paths(model, config)));
    return run_vae_component(vae, component, in, kWanComponentId);
}

TensorMap forward_text_encoder(const fs::path& model, const TensorMap& in, const ConfigView& config) {
    const WanModelPaths paths = resolve_model_paths(model, config);
    UMT5Encoder te = load_umt5_encoder(require_text_encoder_path(paths));
    te->eval();
    const at::Tensor ids = require(in, "input_ids", "text_encoder").to(at::kLong);
    at::Tensor mask;
    if (auto it = in.find("attention_mask"); it != in.end()) {
        mask = it->second.to(at::kLong);
    } else {
        // Without a mask: every non-pad position is a token (right padding with pad_token_id).
        mask = ids.ne(te->config().pad_token_id).to(at::kLong);
        st::log::info("model.wan", "text_encoder: no attention_mask given, using input_ids != pad ({})",
                      te->config().pad_token_id);
    }
    if (mask.sizes() != ids.sizes())
        fail(kWanComponentId, "forward", "attention_mask {} must have the shape of input_ids {}",
             c10::str(mask.sizes()), c10::str(ids.sizes()));
    torch::NoGradGuard no_grad;
    const UMT5Output r = te->encode_prompts(ids, mask);
    return {{"last_hidden_state", r.last_hidden_state.to(at::kFloat)},
            {"prompt_embeds", r.prompt_embeds.to(at::kFloat)},
            {"seq_lens", r.seq_lens}};
}

TensorMap forward_image_encoder(const fs::path& model, const TensorMap& in) {
    // transformers CLIPVisionModel(pixel_values [B, 3, S, S] (already preprocessed),
    // output_hidden_states=True) -> last_hidden_state [B, N+1, H] (no post_layernorm),
    // hidden_states_<i>, pooler_output = post_layernorm(last_hidden_state[:, 0]) [B, H]
    const fs::path dir = fs::is_directory(model / "image_encoder") ? model / "image_encoder" : model;
    ClipVisionModel clip = load_clip_vision(dir);
    const at::Tensor pixels = require(in, "pixel_values", "image_encoder").to(at::kFloat);
    torch::NoGradGuard no_grad;
    const auto states = clip->forward_hidden_states(pixels);
    TensorMap out;
    for (size_t i = 0; i < states.size(); ++i) out["hidden_states_" + std::to_string(i)] = states[i];
    out["last_hidden_state"] = states.back();
    out["pooler_output"] = clip->post_layernorm->forward(states.back().select(1, 0));
    return out;
}

}  // namespace

TensorMap run_forward_component(const fs::path& model, const std::string& component, const TensorMap& inputs,
                                const ConfigView& config) {
    if (component == "transformer") return forward_transformer(model, inputs, config);
    if (is_vae_component(component)) return forward_vae(model, component, inputs, config);
    if (component == "text_encoder") return forward_text_encoder(model, inputs, config);
    if (component == "image_encoder") return forward_image_encoder(model, inputs);
    fail(kWanComponentId, "forward",
         "unknown component '{}' (transformer, vae_encode, vae_decode, text_encoder, image_encoder)",
         component);
}

}  // namespace st::plugins::wan
