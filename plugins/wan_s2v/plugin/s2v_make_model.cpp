// model.wan_s2v@1 `st-host make-model`: a random Wan S2V model in the diffusers pipeline layout of
// tolgacangoz/Wan2.2-S2V-14B-Diffusers (WanSpeechToVideoPipeline.save_pretrained):
//   model_index.json, transformer/{config.json, diffusion_pytorch_model.safetensors},
//   audio_encoder/{config.json, model.safetensors} (HF Wav2Vec2ForCTC layout), vae/ (Wan 2.1 VAE),
//   text_encoder/ (UMT5), tokenizer/ (spiece.model), scheduler/scheduler_config.json.
// Presets:
//   tiny  — tests: the golden S2V sizes (2x12 heads, 3 layers, injectors after 0 and 2) fed by a
//           2-layer Wav2Vec2 of width 32 (3 hidden states, real 320-sample hop); VAE base_dim 2 z 16;
//           UMT5 d_model 32.                                                       (~1.4 MB)
//   small — benchmarks: dim 512 (4x128), 8 layers, injectors after 0, 3, 7, ffn 1536; Wav2Vec2 of
//           width 64, 4 layers (5 hidden states) with the real conv stack; VAE base_dim 16 z 16;
//           a narrow UMT5 of width 64 (the fp32 transformer is 152 MB of it).     (~170 MB)
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/kit_names.h"
#include "core/transformer.h"
#include "s2v_family.h"
#include "st/error.h"
#include "st/files.h"
#include "st/kit/tokenizer.h"
#include "st/kit/umt5.h"
#include "st/kit/umt5_config.h"
#include "st/kit/vae_config.h"
#include "st/kit/vae_weights.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {

namespace fs = std::filesystem;
using nlohmann::json;
using st::plugins::wan::UMT5Config;
using st::plugins::wan::WanVAEConfig;

namespace {}  // namespace

S2VPreset s2v_preset(const std::string& preset) {
    S2VPreset s;
    if (preset == "tiny") {
        s.audio = Wav2Vec2Config::tiny();
        s.transformer = WanS2VConfig::tiny();
        s.vae = WanVAEConfig::tiny();
        s.text_encoder = UMT5Config::tiny();
        s.tokenizer_vocab = 200;
    } else if (preset == "small") {
        s.audio = Wav2Vec2Config::large_xlsr();
        s.audio.hidden_size = 64;
        s.audio.num_hidden_layers = 4;
        s.audio.num_attention_heads = 4;
        s.audio.intermediate_size = 256;
        s.audio.conv_dim.assign(7, 64);
        s.audio.num_conv_pos_embeddings = 16;
        s.audio.num_conv_pos_embedding_groups = 4;
        s.transformer = WanS2VConfig::small();
        s.vae = WanVAEConfig::wan21();
        s.vae.base_dim = 16;
        s.text_encoder.d_kv = 16;
        s.text_encoder.num_heads = 4;
        s.text_encoder.d_ff = 256;
        s.text_encoder.num_layers = 2;
        s.tokenizer_vocab = 1000;
    } else {
        fail(kS2VComponentId, "make_model", "unknown preset '{}' (tiny, small)", preset);
    }
    // The pieces must fit together: audio states and width, latent channels, text width.
    s.transformer.audio_dim = s.audio.hidden_size;
    s.transformer.num_weighted_avg_layers = s.audio.num_hidden_states();
    s.text_encoder.d_model = s.transformer.text_dim;
    const auto& ref = WanVAEConfig::wan21();
    s.vae.z_dim = s.transformer.in_channels;
    s.vae.latents_mean = ref.latents_mean;
    s.vae.latents_std = ref.latents_std;
    return s;
}

namespace {

json model_index_json() {
    return json{{"_class_name", "WanSpeechToVideoPipeline"},
                {"_diffusers_version", "0.35.0.dev0"},
                {"audio_encoder", {"transformers", "Wav2Vec2ForCTC"}},
                {"scheduler", {"diffusers", "UniPCMultistepScheduler"}},
                {"text_encoder", {"transformers", "UMT5EncoderModel"}},
                {"tokenizer", {"transformers", "T5Tokenizer"}},
                {"transformer", {"diffusers", "WanS2VTransformer3DModel"}},
                {"vae", {"diffusers", "AutoencoderKLWan"}}};
}

json scheduler_config_json() {
    // UniPC with flow sigmas; the S2V converter writes flow_shift 5.0 (models.md §5.1).
    return json{{"_class_name", "UniPCMultistepScheduler"},
                {"_diffusers_version", "0.35.0.dev0"},
                {"flow_shift", 5.0},
                {"num_train_timesteps", 1000},
                {"prediction_type", "flow_prediction"},
                {"solver_order", 2},
                {"use_flow_sigmas", true}};
}

}  // namespace

void write_s2v_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    S2VPreset spec = s2v_preset(preset);
    if (fs::exists(out) && !fs::is_directory(out))
        fail(kS2VComponentId, "make_model", "--out '{}' exists and is not a directory", out.string());
    fs::create_directories(out);
    st::log::info("model.wan_s2v",
                  "make-model {}: transformer {}, Wav2Vec2 {} x {} layers, VAE base_dim {} z {}", preset,
                  describe(spec.transformer), spec.audio.hidden_size, spec.audio.num_hidden_layers,
                  spec.vae.base_dim, spec.vae.z_dim);
    const fs::path spm = st::plugins::wan::train_tiny_tokenizer(out / "tokenizer", spec.tokenizer_vocab,
                                                                static_cast<uint32_t>(seed));
    const int64_t tok_vocab = st::plugins::wan::UMT5Tokenizer::load(spm).vocab_size();
    spec.text_encoder.vocab_size = (tok_vocab + 63) / 64 * 64;
    st::plugins::wan::write_random_umt5(out / "text_encoder", spec.text_encoder, seed + 2);
    st::plugins::wan::write_random_wan_vae(out / "vae", spec.vae, seed + 1);
    write_wav2vec2(spec.audio, out / "audio_encoder", seed + 3);
    {
        WanS2VTransformer3DModel model(spec.transformer);
        st::plugins::wan::randomize_parameters(*model, seed);
        save_s2v_transformer(*model, out / "transformer", at::kFloat);
    }
    fs::create_directories(out / "scheduler");
    st::sdk::write_file_atomic(out / "scheduler" / "scheduler_config.json",
                               scheduler_config_json().dump(2) + "\n");
    st::sdk::write_file_atomic(out / "model_index.json", model_index_json().dump(2) + "\n");
    st::log::info("model.wan_s2v", "make-model {}: wrote {}", preset, out.string());
}

}  // namespace st::plugins::wan_s2v
