// WanS2VFamily's ABI 1.1 / 1.2 methods (LoRA native names, saving a full fine-tune, latent
// geometry, decoding, the reference image, freeing encoders) and `st-host forward` components.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "core/ff_chunking.h"
#include "s2v_family.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::wan_s2v {

namespace fs = std::filesystem;
using st::sdk::TensorMap;

st::sdk::LoraNameMap WanS2VFamily::lora_name_map() const {
    return
        [](const std::string& module) { return s2v_lora_module_to_native(module).value_or(std::string()); };
}

void WanS2VFamily::save_trainable(const fs::path& dir) {
    require_loaded("save_trainable");
    save_s2v_transformer(*transformer_.model, dir, dtype_);
}

std::vector<int64_t> WanS2VFamily::latent_shape(int64_t frames, int64_t height, int64_t width) const {
    require_loaded("latent_shape");
    const int64_t stride = spatial_multiple() / transformer_.info.config.patch_size[1];
    if (frames < 1 || (frames - 1) % 4 != 0 || height % spatial_multiple() != 0 ||
        width % spatial_multiple() != 0)
        fail(kS2VComponentId, "latent_shape",
             "a Wan S2V video needs 4k+1 frames and sides that are multiples of {}, got {} frames of {}x{}",
             spatial_multiple(), frames, width, height);
    return {transformer_.info.config.out_channels, 1 + (frames - 1) / 4, height / stride, width / stride};
}

at::Tensor WanS2VFamily::decode_latents(const at::Tensor& latents) {
    // latents [B, 16, F', h, w] (normalised) -> pixels [B, 3, 1 + 4 (F' - 1), 8 h, 8 w] in [-1, 1]
    require_loaded("decode_latents");
    return encoders_.decode(latents);
}

TensorMap WanS2VFamily::encode_conditioning_image(const at::Tensor& image, int64_t /*frames*/) {
    // image [B, 3, H, W] in [-1, 1] -> image_latents [B, 16, 1, H/8, W/8]: the reference image encoded
    // as a one-frame video (diffusers WanSpeechToVideoPipeline.prepare_latents, ref_image_latents).
    require_loaded("encode_conditioning_image");
    if (image.dim() != 4 || image.size(1) != 3)
        fail(kS2VComponentId, "encode_conditioning_image", "image must be [B, 3, H, W], got {}",
             c10::str(image.sizes()));
    return {{"image_latents", encoders_.encode_video(image.to(at::kFloat).unsqueeze(2))}};
}

void WanS2VFamily::release_encoders() {
    const bool text = encoders_.release_text();
    const bool audio = audio_encoder_.has_value();
    audio_encoder_.reset();
    if (text || audio)
        st::log::info("model.wan_s2v", "{} released (caches are complete; reloaded on demand)",
                      text && audio ? "text and audio encoders"
                      : text        ? "text encoder"
                                    : "audio encoder");
}

TensorMap WanS2VFamily::forward_component(const fs::path& model, const std::string& component,
                                          const TensorMap& inputs, const st::sdk::ConfigView& config) {
    // transformer: hidden_states, timestep, encoder_hidden_states, image_latents, audio_embeds
    //   [, pose_latents, motion_latents] -> out (motion_frames [17, 5] dropped, or [73, 19] with motion)
    // audio_encoder: input_values [B, N] (+ attention_mask) -> the HF Wav2Vec2Model outputs; or
    //   waveform [N] 16 kHz (+ fps, frames as 1-element tensors) -> audio_embeds, hidden_states_<i>
    auto need = [&](const char* name) -> const at::Tensor& {
        auto it = inputs.find(name);
        if (it == inputs.end())
            fail(kS2VComponentId, "forward", "{}: input tensor '{}' is missing", component, name);
        return it->second;
    };
    torch::NoGradGuard no_grad;
    const S2VModelPaths paths = resolve_s2v_paths(model, config);
    if (component == "transformer") {
        S2VLoadOptions lo;
        lo.subfolder = paths.pipeline.transformer_subfolder;
        LoadedS2VTransformer t = load_s2v_transformer(paths.pipeline.transformer, lo);
        t.model->eval();
        t.model->set_feed_forward_chunking(
            st::plugins::wan::resolve_feed_forward_chunking(config, kS2VComponentId));
        WanS2VInputs wi;
        wi.hidden_states = need("hidden_states");
        wi.timestep = need("timestep");
        wi.encoder_hidden_states = need("encoder_hidden_states");
        wi.image_latents = need("image_latents");
        wi.audio_embeds = need("audio_embeds");
        if (inputs.count("pose_latents")) wi.pose_latents = inputs.at("pose_latents");
        if (inputs.count("motion_latents")) {
            wi.motion_latents = inputs.at("motion_latents");
            wi.motion_frames = {73, 19};
            wi.drop_motion_frames = false;
        }
        return {{"out", t.model->forward(wi)}};
    }
    if (component == "audio_encoder") {
        if (paths.audio_encoder.empty())
            fail(kS2VComponentId, "forward", "no audio encoder folder in '{}'", model.string());
        Wav2Vec2AudioEncoder enc = Wav2Vec2AudioEncoder::load(paths.audio_encoder);
        TensorMap out;
        if (inputs.count("input_values")) {
            // transformers Wav2Vec2Model(input_values [B, N] (already normalised), attention_mask [B, N]
            // optional, output_hidden_states=True) -> last_hidden_state, hidden_states_<i>,
            // extract_features (+ frame_mask with a mask)
            at::Tensor mask;
            if (auto it = inputs.find("attention_mask"); it != inputs.end()) mask = it->second;
            const auto r = enc.model()->run(inputs.at("input_values").to(at::kFloat), mask);
            for (size_t i = 0; i < r.hidden_states.size(); ++i)
                out["hidden_states_" + std::to_string(i)] = r.hidden_states[i];
            out["last_hidden_state"] = r.hidden_states.back();
            out["extract_features"] = r.extract_features;
            if (r.frame_mask.defined()) out["frame_mask"] = r.frame_mask.to(at::kLong);
            return out;
        }
        // The S2V pipeline: a raw 16 kHz waveform, normalised here, (+ fps, frames) -> audio_embeds.
        const at::Tensor wave = need("waveform").to(at::kFloat).flatten();
        const auto states = enc.hidden_states(wave);
        for (size_t i = 0; i < states.size(); ++i) out["hidden_states_" + std::to_string(i)] = states[i];
        if (inputs.count("fps") && inputs.count("frames")) {
            const double fps = inputs.at("fps").item<double>();
            const int64_t frames = inputs.at("frames").item<int64_t>();
            out["audio_embeds"] = enc.encode(wave, fps, frames, audio_frames_for(frames));
        }
        return out;
    }
    fail(kS2VComponentId, "forward", "unknown component '{}' (transformer, audio_encoder)", component);
}

}  // namespace st::plugins::wan_s2v
