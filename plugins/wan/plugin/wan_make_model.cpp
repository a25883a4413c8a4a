// model.wan@1 `st-host make-model`: a random Wan T2V model in the diffusers pipeline layout
// (what `WanPipeline.save_pretrained` writes for Wan-AI/Wan2.1-T2V-1.3B-Diffusers):
//   model_index.json, transformer/{config.json, diffusion_pytorch_model.safetensors},
//   vae/{config.json, diffusion_pytorch_model.safetensors}, text_encoder/{config.json, model.safetensors},
//   tokenizer/{spiece.model, tokenizer_config.json, special_tokens_map.json},
//   scheduler/scheduler_config.json (UniPC flow, models.md §12.3).
// Presets:
//   tiny  — the golden test sizes: DiT 2x12 heads, 2 layers, 4 latent channels, text_dim 16; VAE
//           base_dim 2, z 4; UMT5 d_model 16, 2 layers; tokenizer vocab 200.         (~0.7 MB)
//   tiny-i2v — tiny with the Wan 2.2 I2V input layout (36-channel style: noisy | mask | condition).
//   tiny-i2v21 — tiny as a Wan 2.1 I2V pipeline: the CLIP image branch (image_dim = the tiny CLIP's 32,
//           added_kv_proj_dim 24) + image_encoder/ (tiny CLIPVisionModelWithProjection, 56 px, 17
//           tokens) + image_processor/.
//   tiny-flf2v21 — tiny-i2v21 as a Wan 2.1 FLF2V pipeline: + the image embedder's pos_embed over the
//           first and last frame's CLIP tokens (2 x 17).
//   tiny-a14b — tiny as a Wan 2.2 A14B T2V pipeline: two differently seeded experts, transformer/
//           (high noise) and transformer_2/ (low noise), boundary_ratio 0.875 in model_index.json.
//   small — the benchmark DiT (dim 512, 8 layers, text_dim 4096); VAE base_dim 16, z 16;
//           a narrow 2-layer UMT5 with d_model 4096; tokenizer vocab ~400.            (~0.2 GB)
//   1.3b  — the real Wan 2.1 T2V 1.3B transformer (bf16 on disk, fp32-kept modules fp32) and the
//           real Wan 2.1 VAE; the text encoder is the narrow 2-layer UMT5 with d_model 4096 (the
//           real umt5-xxl would be ~22 GB of random fp32: point pretrained_t5_model_name_or_path
//           at a real one instead).                                                  (~3.2 GB)
//   14b   — the real Wan 2.1 T2V 14B transformer (bf16, 4 GiB shards, written tensor by tensor) with
//           the 1.3b preset's VAE and narrow UMT5 (t2v-1.3b / t2v-14b: the same presets). (~29 GB)
// Every tokenizer is trained here (train_tiny_tokenizer; the built-in text yields ~400 pieces at most)
// and the text encoder's vocab covers it.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <optional>

#include "core/clip_vision.h"
#include "core/kit_names.h"
#include "st/base_weights.h"
#include "st/error.h"
#include "st/files.h"
#include "st/kit/diffusers_model.h"
#include "st/kit/tokenizer.h"
#include "st/kit/umt5_config.h"
#include "st/kit/vae_weights.h"
#include "st/log.h"
#include "wan_family.h"

namespace st::plugins::wan {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kDiffusersVersion = "0.35.0.dev0";

json model_index_json(bool i2v, std::optional<double> boundary_ratio, bool clip) {
    // Field layout of diffusers WanPipeline.save_pretrained (boundary_ratio / transformer_2 /
    // expand_timesteps are the Wan 2.2 fields; null/false for a Wan 2.1 T2V model).
    return json{
        {"_class_name", i2v ? "WanImageToVideoPipeline" : "WanPipeline"},
        {"_diffusers_version", kDiffusersVersion},
        {"boundary_ratio", boundary_ratio ? json(*boundary_ratio) : json(nullptr)},
        {"expand_timesteps", false},
        {"scheduler", {"diffusers", "UniPCMultistepScheduler"}},
        {"text_encoder", {"transformers", "UMT5EncoderModel"}},
        {"tokenizer", {"transformers", "T5Tokenizer"}},
        {"transformer", {"diffusers", "WanTransformer3DModel"}},
        {"transformer_2",
         boundary_ratio ? json{"diffusers", "WanTransformer3DModel"} : json{nullptr, nullptr}},
        {"vae", {"diffusers", "AutoencoderKLWan"}},
        {"image_encoder",
         clip ? json{"transformers", "CLIPVisionModelWithProjection"} : json{nullptr, nullptr}},
        {"image_processor", clip ? json{"transformers", "CLIPImageProcessor"} : json{nullptr, nullptr}}};
}

json scheduler_config_json() {
    // Wan-AI/Wan2.1-T2V-1.3B-Diffusers scheduler/scheduler_config.json (UniPC, flow sigmas, shift 3).
    return json{{"_class_name", "UniPCMultistepScheduler"},
                {"_diffusers_version", kDiffusersVersion},
                {"beta_end", 0.02},
                {"beta_schedule", "linear"},
                {"beta_start", 0.0001},
                {"disable_corrector", json::array()},
                {"dynamic_thresholding_ratio", 0.995},
                {"final_sigmas_type", "zero"},
                {"flow_shift", 3.0},
                {"lower_order_final", true},
                {"num_train_timesteps", 1000},
                {"predict_x0", true},
                {"prediction_type", "flow_prediction"},
                {"rescale_betas_zero_snr", false},
                {"sample_max_value", 1.0},
                {"solver_order", 2},
                {"solver_p", nullptr},
                {"solver_type", "bh2"},
                {"steps_offset", 0},
                {"thresholding", false},
                {"timestep_spacing", "linspace"},
                {"trained_betas", nullptr},
                {"use_beta_sigmas", false},
                {"use_exponential_sigmas", false},
                {"use_flow_sigmas", true},
                {"use_karras_sigmas", false}};
}

struct PresetSpec {
    WanTransformerConfig transformer;
    at::ScalarType transformer_dtype = at::kFloat;
    WanVAEConfig vae;
    UMT5Config text_encoder;
    int tokenizer_vocab = 200;
    /// Wan 2.2 A14B layout: a second expert in transformer_2/ and this boundary in model_index.json.
    std::optional<double> boundary_ratio;
    /// Wan 2.1 I2V: the CLIP image encoder written to image_encoder/ (+ image_processor/).
    std::optional<ClipVisionConfig> image_encoder;
};

// A narrow UMT5 whose output width is the DiT's text_dim (4096): 8 heads x 16, d_ff 256, 2 layers.
UMT5Config narrow_umt5(int64_t d_model) {
    UMT5Config c;
    c.d_model = d_model;
    c.d_kv = 16;
    c.num_heads = 8;
    c.d_ff = 256;
    c.num_layers = 2;
    return c;
}

PresetSpec preset_spec(const std::string& preset) {
    PresetSpec s;
    if (preset == "tiny" || preset == "tiny-i2v" || preset == "tiny-i2v21" || preset == "tiny-flf2v21" ||
        preset == "tiny-a14b") {
        s.transformer = WanTransformerConfig::tiny();
        // tiny-i2v: the Wan 2.2 I2V layout (no CLIP branch): [noisy | 4 mask | condition] channels in.
        if (preset == "tiny-i2v") s.transformer.in_channels = 2 * s.transformer.out_channels + 4;
        // tiny-a14b: Wan-AI/Wan2.2-T2V-A14B-Diffusers' layout (boundary 0.875).
        if (preset == "tiny-a14b") s.boundary_ratio = 0.875;
        if (preset == "tiny-i2v21" || preset == "tiny-flf2v21") {
            // Wan-AI/Wan2.1-I2V-14B-480P-Diffusers' layout at test size (the golden wan_i2v21 shape).
            s.image_encoder = ClipVisionConfig::tiny();
            s.transformer.in_channels = 2 * s.transformer.out_channels + 4;
            s.transformer.image_dim = s.image_encoder->hidden_size;
            s.transformer.added_kv_proj_dim =
                s.transformer.num_attention_heads * s.transformer.attention_head_dim;
            // Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers: pos_embed over both frames' tokens (514 for ViT-H).
            if (preset == "tiny-flf2v21")
                s.transformer.pos_embed_seq_len = 2 * s.image_encoder->num_positions();
        }
        s.vae = WanVAEConfig::tiny();
        s.text_encoder = UMT5Config::tiny();
        s.tokenizer_vocab = 200;
    } else if (preset == "small") {
        s.transformer = WanTransformerConfig::small();
        s.vae = WanVAEConfig::wan21();
        s.vae.base_dim = 16;
        s.text_encoder = narrow_umt5(s.transformer.text_dim);
        s.tokenizer_vocab = 1000;
    } else if (preset == "1.3b" || preset == "t2v-1.3b" || preset == "14b" || preset == "t2v-14b") {
        const bool big = preset == "14b" || preset == "t2v-14b";
        s.transformer = big ? WanTransformerConfig::t2v_14b() : WanTransformerConfig::t2v_1_3b();
        s.transformer_dtype = at::kBFloat16;
        s.vae = WanVAEConfig::wan21();
        s.text_encoder = narrow_umt5(s.transformer.text_dim);
        s.tokenizer_vocab = 4000;
    } else {
        fail(kWanComponentId, "make_model",
             "unknown preset '{}' (tiny, tiny-i2v, tiny-i2v21, tiny-flf2v21, tiny-a14b, small, 1.3b or "
             "t2v-1.3b, "
             "14b or t2v-14b)",
             preset);
    }
    if (s.vae.z_dim != s.transformer.out_channels)
        fail(kWanComponentId, "make_model", "preset {}: VAE z_dim {} != transformer out_channels {}", preset,
             s.vae.z_dim, s.transformer.out_channels);
    return s;
}

void write_json(const fs::path& path, const json& j) {
    st::sdk::write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace

void write_wan_model(const std::string& preset, const fs::path& out, uint64_t seed) {
    PresetSpec spec = preset_spec(preset);
    if (fs::exists(out) && !fs::is_directory(out))
        fail(kWanComponentId, "make_model", "--out '{}' exists and is not a directory", out.string());
    fs::create_directories(out);
    st::log::info("model.wan",
                  "make-model {}: transformer {} ({}), VAE base_dim {} z {}, UMT5 d_model {} x {} layers",
                  preset, describe(spec.transformer), c10::toString(spec.transformer_dtype),
                  spec.vae.base_dim, spec.vae.z_dim, spec.text_encoder.d_model, spec.text_encoder.num_layers);

    // Tokenizer first: the text encoder's vocabulary must cover its ids (rounded up to 64 rows, as
    // real checkpoints pad their embedding tables).
    const fs::path spm =
        train_tiny_tokenizer(out / "tokenizer", spec.tokenizer_vocab, static_cast<uint32_t>(seed));
    const int64_t tok_vocab = UMT5Tokenizer::load(spm).vocab_size();
    spec.text_encoder.vocab_size = (tok_vocab + 63) / 64 * 64;
    write_random_umt5(out / "text_encoder", spec.text_encoder, seed + 2);

    write_random_wan_vae(out / "vae", spec.vae, seed + 1);

    // The transformer is drawn and written tensor by tensor (the same values randomize_parameters would
    // give), in shards of at most 4 GiB: a 14B model never has to fit in memory.
    auto write_transformer = [&](const fs::path& dir, uint64_t s) {
        WanTransformer3DModel model{nullptr};
        {
            st::sdk::DeferredInit deferred;
            model = WanTransformer3DModel(spec.transformer);
        }
        st::kit::write_random_model(*model, dir, model->config().to_json(), spec.transformer_dtype,
                                    &WanTransformer3DModelImpl::keeps_fp32, s, uint64_t{4} << 30,
                                    kWanComponentId);
    };
    write_transformer(out / "transformer", seed);
    // A14B: the low-noise expert, same architecture, its own weights.
    if (spec.boundary_ratio) write_transformer(out / "transformer_2", seed + 7);
    if (spec.image_encoder) {
        save_clip_vision(out / "image_encoder", *spec.image_encoder, seed + 11);
        save_clip_image_processor(out / "image_processor",
                                  ClipImageProcessorConfig::for_image_size(spec.image_encoder->image_size));
    }
    fs::create_directories(out / "scheduler");
    write_json(out / "scheduler" / "scheduler_config.json", scheduler_config_json());
    write_json(out / "model_index.json",
               model_index_json(spec.transformer.in_channels != spec.transformer.out_channels,
                                spec.boundary_ratio, spec.image_encoder.has_value()));
    st::log::info("model.wan", "make-model {}: wrote {} (tokenizer vocab {}, text encoder vocab {})", preset,
                  out.string(), tok_vocab, spec.text_encoder.vocab_size);
}

}  // namespace st::plugins::wan
