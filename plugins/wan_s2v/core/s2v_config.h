// WanS2VConfig: the one description of a Wan 2.2 S2V transformer (diffusers PR #12258
// `WanS2VTransformer3DModel` config.json). Defaults equal the released S2V-14B model; presets name it
// and the test/benchmark sizes; `detect_from_weights` recovers what the tensors show (both key
// layouts). Facts: shared/reference/models.md §5.1 (config table), §5.2 (shapes).
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace st::sdk {
class TensorSource;
}

namespace st::plugins::wan_s2v {

struct WanS2VConfig {
    std::array<int64_t, 3> patch_size{1, 2, 2};
    int64_t num_attention_heads = 40;
    int64_t attention_head_dim = 128;
    int64_t in_channels = 16;
    int64_t out_channels = 16;
    int64_t text_dim = 4096;
    int64_t freq_dim = 256;
    /// Width of the wav2vec2 hidden states fed as audio_embeds (1024 for wav2vec2-large).
    int64_t audio_dim = 1024;
    /// Blocks followed by an audio cross-attention injector (sorted, distinct, < num_layers).
    std::vector<int64_t> audio_inject_layers{0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39};
    /// Only enable_adain = true with adain_mode "attn_norm" runs in the reference (the PR model
    /// indexes the global audio vector unconditionally), so validate() requires both.
    bool enable_adain = true;
    std::string adain_mode = "attn_norm";
    /// Channels of the pose latents (pose_embedder Conv3d input).
    int64_t pose_dim = 16;
    int64_t ffn_dim = 13824;
    int64_t num_layers = 40;
    /// Number of stacked wav2vec2 hidden states (embeddings + every layer: 25 for wav2vec2-large).
    /// Must equal what the audio encoder feeds (audio_embeds.size(1)).
    int64_t num_weighted_avg_layers = 25;
    bool cross_attn_norm = true;
    std::string qk_norm = "rms_norm_across_heads";
    double eps = 1e-6;
    /// Present in the diffusers config; S2V has no image K/V branch, so it must be null.
    std::optional<int64_t> added_kv_proj_dim;
    int64_t rope_max_seq_len = 1024;
    /// FramePack motion tokens (frame_packer.proj / proj_2x / proj_4x). false: motion latents are
    /// patch-embedded with the shared patch_embedding at negative frame positions.
    bool enable_framepack = true;
    /// "padd" (zero the skipped motion buckets) or "drop" (remove their tokens); see add_last_motion.
    std::string framepack_drop_mode = "padd";
    /// Multiplies the forward argument add_last_motion (0..2): false turns every call into 0.
    bool add_last_motion = true;
    /// Reference and motion tokens are modulated with t = 0 (segmented modulation).
    bool zero_timestep = true;

    int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
    /// Number of tensors in the diffusers state dict (1260 for S2V-14B, 141 for tiny()).
    int64_t tensor_count() const;
    /// The shared Wan block / embedder settings (WanTransformerConfig of plugins/wan).
    st::plugins::wan::WanTransformerConfig to_wan_config() const;

    // ---- presets -------------------------------------------------------------------------------
    static WanS2VConfig s2v_14b();  ///< Wan2.2-S2V-14B (= defaults)
    static WanS2VConfig tiny();     ///< tests: the golden config (2 heads x 12, 3 layers, 25 audio layers)
    /// benchmarks: dim 512 (4 x 128), 8 layers, ffn 1536, text 64, audio 64 x 5 hidden states,
    /// injectors after blocks 0, 3, 7.
    static WanS2VConfig small();
    /// "s2v-14b", "tiny", "small"; throws st::Error listing the names otherwise.
    static WanS2VConfig preset(const std::string& name);
    static std::vector<std::string> preset_names();

    // ---- diffusers config.json ----------------------------------------------------------------
    /// Parses a diffusers WanS2VTransformer3DModel config. Keys starting with '_' are ignored; any
    /// other unknown key is an st::Error naming it and `source`. Validates the result.
    static WanS2VConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
    static WanS2VConfig from_file(const std::filesystem::path& config_json);
    /// The diffusers config.json (`_class_name` "WanS2VTransformer3DModel").
    nlohmann::json to_json() const;

    /// Throws st::Error when a field is out of range or a combination the reference cannot run.
    void validate() const;

    /// Recovers the config from tensor names and shapes only (diffusers or original/ComfyUI layout,
    /// optionally prefixed `model.diffusion_model.`). The weights show every width, the layer and
    /// injector counts and which branches exist, but not WHERE the injectors sit: that is taken
    /// from `audio_inject_layers_hint` when given (its size must match), else from the S2V-14B
    /// layout when the counts are the released ones (40 layers, 12 injectors); otherwise st::Error.
    /// eps, rope_max_seq_len, framepack_drop_mode, add_last_motion, zero_timestep keep their
    /// reference values. Implemented in s2v_checkpoint.cpp.
    static WanS2VConfig detect_from_weights(
        const st::sdk::TensorSource& source,
        const std::optional<std::vector<int64_t>>& audio_inject_layers_hint = std::nullopt);

    bool operator==(const WanS2VConfig&) const = default;
};

/// One-line description: "dim 5120 (40x128), 40 layers, ffn 13824, audio 1024x25 -> 12 injectors".
std::string describe(const WanS2VConfig& config);

}  // namespace st::plugins::wan_s2v
