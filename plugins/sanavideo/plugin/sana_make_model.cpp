// model.sanavideo@1 `st-host make-model`: a random Sana Video model in the diffusers SanaVideoPipeline
// layout (what Efficient-Large-Model/SANA-Video_2B_480p_diffusers holds):
//   model_index.json, transformer/{config.json, diffusion_pytorch_model.safetensors},
//   vae/{config.json, diffusion_pytorch_model.safetensors} (AutoencoderKLWan, the Wan 2.1 VAE),
//   text_encoder/{config.json, model.safetensors} (Gemma2Model), tokenizer/{tokenizer.model,
//   tokenizer_config.json, special_tokens_map.json}, scheduler/scheduler_config.json
//   (DPMSolverMultistepScheduler, flow prediction, flow_shift 8; models.md §6, §12.3).
// Presets:
//   tiny    — the golden transformer sizes (2 x 12 heads, 2 layers) on 4 latent channels (the tiny VAE:
//             base_dim 2, z 4), caption 16 = a 2-layer Gemma-2 of hidden 16; tokenizer vocab 400.
//   small   — the benchmark transformer (dim 512, 8 layers, caption 2304), the Wan 2.1 VAE at base_dim 16,
//             a narrow 2-layer Gemma-2 with hidden 2304.
//   2b-480p — the real Sana Video 2B transformer (bf16 on disk, as the release) and the real Wan 2.1
//             VAE; the text encoder is the narrow 2-layer Gemma-2 of hidden 2304 (the real gemma-2-2b-it
//             is 5 GB: point pretrained models at a real pipeline instead).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/gemma2_config.h"
#include "core/gemma2_weights.h"
#include "core/gemma_tokenizer.h"
#include "sana_family.h"
#include "st/error.h"
#include "st/files.h"
#include "st/kit/diffusers_model.h"
#include "st/kit/vae_config.h"
#include "st/kit/vae_weights.h"
#include "st/log.h"

namespace st::plugins::sanavideo {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kDiffusersVersion = "0.36.0.dev0";

json model_index_json() {
    return json{{"_class_name", "SanaVideoPipeline"},
                {"_diffusers_version", kDiffusersVersion},
                {"scheduler", {"diffusers", "DPMSolverMultistepScheduler"}},
                {"text_encoder", {"transformers", "Gemma2Model"}},
                {"tokenizer", {"transformers", "GemmaTokenizerFast"}},
                {"transformer", {"diffusers", "SanaVideoTransformer3DModel"}},
                {"vae", {"diffusers", "AutoencoderKLWan"}}};
}

json scheduler_config_json() {
    // DPMSolverMultistepScheduler as the Sana Video converter configures it (flow prediction, flow
    // sigmas, shift 8, 2nd order dpmsolver++ midpoint); lambda_min_clipped (-inf, the default) is left
    // out: Python writes it as the non-JSON token -Infinity.
    return json{{"_class_name", "DPMSolverMultistepScheduler"},
                {"_diffusers_version", kDiffusersVersion},
                {"algorithm_type", "dpmsolver++"},
                {"beta_end", 0.02},
                {"beta_schedule", "linear"},
                {"beta_start", 0.0001},
                {"dynamic_thresholding_ratio", 0.995},
                {"euler_at_final", false},
                {"final_sigmas_type", "zero"},
                {"flow_shift", 8.0},
                {"lower_order_final", true},
                {"num_train_timesteps", 1000},
                {"prediction_type", "flow_prediction"},
                {"sample_max_value", 1.0},
                {"solver_order", 2},
                {"solver_type", "midpoint"},
                {"steps_offset", 0},
                {"thresholding", false},
                {"timestep_spacing", "linspace"},
                {"trained_betas", nullptr},
                {"use_beta_sigmas", false},
                {"use_exponential_sigmas", false},
                {"use_flow_sigmas", true},
                {"use_karras_sigmas", false},
                {"use_lu_lambdas", false},
                {"variance_type", nullptr}};
}

struct PresetSpec {
    SanaVideoTransformerConfig transformer;
    at::ScalarType transformer_dtype = at::kFloat;
    st::kit::WanVAEConfig vae;
    Gemma2Config text_encoder;
    int tokenizer_vocab = 400;
};

// A 2-layer Gemma-2 whose output width is the transformer's caption_channels.
Gemma2Config narrow_gemma(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t ffn) {
    Gemma2Config c = Gemma2Config::gemma2_2b();
    c.hidden_size = hidden;
    c.num_attention_heads = heads;
    c.num_key_value_heads = kv_heads;
    c.head_dim = head_dim;
    c.query_pre_attn_scalar = static_cast<double>(head_dim);
    c.intermediate_size = ffn;
    c.num_hidden_layers = 2;
    return c;
}

PresetSpec preset_spec(const std::string& preset) {
    PresetSpec s;
    if (preset == "tiny") {
        s.transformer = SanaVideoTransformerConfig::tiny();
        s.vae = st::kit::WanVAEConfig::tiny();
        s.transformer.in_channels = s.transformer.out_channels = s.vae.z_dim;
        s.transformer.rope_max_seq_len = 1024;
        s.text_encoder = narrow_gemma(s.transformer.caption_channels, 2, 1, 8, 32);
    } else if (preset == "small") {
        s.transformer = SanaVideoTransformerConfig::small();
        s.vae = st::kit::WanVAEConfig::wan21();
        s.vae.base_dim = 16;
        s.text_encoder = narrow_gemma(s.transformer.caption_channels, 8, 4, 32, 256);
        s.tokenizer_vocab = 1000;
    } else if (preset == "2b-480p") {
        s.transformer = SanaVideoTransformerConfig::sana_2b_480p();
        s.transformer_dtype = at::kBFloat16;
        s.vae = st::kit::WanVAEConfig::wan21();
        s.text_encoder = narrow_gemma(s.transformer.caption_channels, 8, 4, 32, 256);
        s.tokenizer_vocab = 4000;
    } else {
        fail(kSanaComponentId, "make_model", "unknown preset '{}' (known: {})", preset,
             fmt::join(sana_presets(), ", "));
    }
    return s;
}

void write_json(const fs::path& path, const json& j) {
    fs::create_directories(path.parent_path());
    st::sdk::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace

std::vector<std::string> sana_presets() {
    return {"tiny", "small", "2b-480p"};
}

void write_sana_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    PresetSpec spec = preset_spec(preset);
    if (fs::exists(out) && !fs::is_directory(out))
        fail(kSanaComponentId, "make_model", "--out '{}' exists and is not a directory", out.string());
    fs::create_directories(out);
    st::log::info("model.sanavideo",
                  "make-model {}: transformer {} ({}), VAE base_dim {} z {}, Gemma-2 hidden {} x {} layers",
                  preset, describe(spec.transformer), c10::toString(spec.transformer_dtype),
                  spec.vae.base_dim, spec.vae.z_dim, spec.text_encoder.hidden_size,
                  spec.text_encoder.num_hidden_layers);
    // Tokenizer first: the text encoder's vocabulary covers its ids (rounded up to 64 rows).
    const fs::path spm =
        train_tiny_gemma_tokenizer(out / "tokenizer", spec.tokenizer_vocab, static_cast<uint32_t>(seed));
    const int64_t tok_vocab = GemmaTokenizer::load(spm).vocab_size();
    spec.text_encoder.vocab_size = (tok_vocab + 63) / 64 * 64;
    write_random_gemma2(out / "text_encoder", spec.text_encoder, seed + 2);
    st::kit::write_random_wan_vae(out / "vae", spec.vae, seed + 1);
    {
        SanaVideoTransformer3DModel model(spec.transformer);
        st::kit::randomize_parameters(*model, seed);
        save_sana_transformer(*model, out / "transformer", spec.transformer_dtype);
    }
    write_json(out / "scheduler" / "scheduler_config.json", scheduler_config_json());
    write_json(out / "model_index.json", model_index_json());
    st::log::info("model.sanavideo", "make-model {}: wrote {} (tokenizer vocab {}, text encoder vocab {})",
                  preset, out.string(), tok_vocab, spec.text_encoder.vocab_size);
}

}  // namespace st::plugins::sanavideo
