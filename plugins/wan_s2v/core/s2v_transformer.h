// The Wan 2.2 S2V DiT (diffusers PR #12258 WanS2VTransformer3DModel; original
// wan/modules/s2v/model_s2v.py WanModel_S2V) built from the Wan core blocks (plugins/wan/core).
// Submodules are registered under the diffusers names, so named_parameters() equals the keys of a
// diffusers `diffusion_pytorch_model.safetensors` (models.md §5.2; 141 tensors for tiny()).
//
// Precision (diffusers _keep_in_fp32_modules): time_embedder, every scale_shift_table, the block
// LayerNorms and the whole causal audio encoder stay float32 (`set_compute_dtype` keeps them);
// LayerNorms, modulation and gated residual adds are computed in float32 and cast back.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/s2v_audio.h"
#include "core/s2v_config.h"
#include "core/s2v_framepack.h"
#include "core/transformer.h"
#include "st/routing.h"
#include "st/tensors.h"

namespace st::kit {
class BlockOffload;
}

namespace st::plugins::wan_s2v {

/// diffusers WanTimeTextAudioPoseEmbedding (`condition_embedder`).
class WanS2VConditionEmbedderImpl : public torch::nn::Module {
  public:
    explicit WanS2VConditionEmbedderImpl(const WanS2VConfig& config);
    st::plugins::wan::WanMLPEmbedder time_embedder{nullptr}, text_embedder{nullptr};
    torch::nn::Linear time_proj{nullptr};
    S2VCausalAudioEncoder causal_audio_encoder{nullptr};
    torch::nn::Conv3d pose_embedder{nullptr};
};
TORCH_MODULE(WanS2VConditionEmbedder);

/// Inputs of one forward (one generated chunk, or one training clip).
struct WanS2VInputs {
    at::Tensor hidden_states;          ///< [B, C_in, T, H, W] noisy latents
    at::Tensor timestep;               ///< [B] (or a scalar) float sigma*1000
    at::Tensor encoder_hidden_states;  ///< [B, Lt, text_dim] (zero rows are attended, no mask)
    at::Tensor image_latents;          ///< [B, C_in, 1, H, W] reference image latent
    /// [B, 16, M, H, W] motion context latents, M >= 0; undefined = 0 frames. With FramePack the
    /// last 19 frames are used (fewer are zero-padded), at negative RoPE frames.
    at::Tensor motion_latents;
    /// [B, pose_dim, T, H, W]; undefined = zeros (the pose embedding is then its bias alone).
    at::Tensor pose_latents;
    /// [B, num_weighted_avg_layers, audio_dim, Ta] stacked wav2vec2 hidden states at the 16 fps
    /// video rate. Frame 0 is repeated motion_frames[0] times in front, the encoder halves the
    /// length twice (ceil) and the first motion_frames[1] groups are dropped: the remaining count
    /// must equal T (so Ta = 4*T for motion_frames [17, 5] or [73, 19]).
    at::Tensor audio_embeds;
    /// {pixel motion frames, latent motion frames}: [17, 5] training / [73, 19] reference pipeline.
    std::array<int64_t, 2> motion_frames{17, 5};
    /// true: no motion tokens at all (training with a single clip; pipeline chunk 0).
    bool drop_motion_frames = true;
    /// 0..2, multiplied by config.add_last_motion (FramePack buckets kept; 2 = all, the reference).
    int64_t add_last_motion = 2;
    /// Blocks not run in this pass (skip-layer guidance); their audio injector still runs.
    std::vector<int64_t> skip_blocks;
    /// TREAD routes over the noisy tokens (applied in train mode with grad only; reference and motion
    /// tokens always take part) and the generator of their selections.
    std::vector<st::sdk::TokenRoute> routes;
    std::optional<at::Generator> generator;
};

class WanS2VTransformer3DModelImpl : public torch::nn::Module {
  public:
    explicit WanS2VTransformer3DModelImpl(WanS2VConfig config);

    /// -> [B, C_out, T, H, W] in the compute dtype. Batches of any size (every sample must have the
    /// same shapes). `intermediates` receives patch_embed_out [B,L,D] (noisy + pose), temb [B,D],
    /// timestep_proj [B,6,2,D] (index 1 = the t=0 modulation), text_embedder_out, audio_tokens
    /// [B*T,5,D], audio_global [B*T,D], rope_cos/rope_sin [N,d], blocks.N.out [B,N,D] (the full
    /// sequence noisy | reference | motion after block N and its audio injector) and, without grad,
    /// blocks.N.pre_injection (after the block, before its injector: what diffusers records).
    at::Tensor forward(const WanS2VInputs& inputs, st::sdk::TensorMap* intermediates = nullptr);

    const WanS2VConfig& config() const { return config_; }
    /// Casts parameters to `dtype` except the fp32-kept ones (see keeps_fp32).
    void set_compute_dtype(at::ScalarType dtype);
    at::ScalarType compute_dtype() const;
    /// Whether diffusers keeps this parameter (diffusers name) in float32: a dotted component equal
    /// to time_embedder, scale_shift_table, norm1, norm2, norm3 or causal_audio_encoder.
    static bool keeps_fp32(const std::string& parameter_name);

    /// Recompute every `interval`-th block (with its audio injector) in backward instead of storing
    /// activations.
    void set_gradient_checkpointing(bool enabled, int64_t interval = 1) {
        gradient_checkpointing_ = enabled;
        checkpoint_interval_ = interval;
    }
    bool gradient_checkpointing() const { return gradient_checkpointing_; }
    void set_feed_forward_chunking(const st::plugins::wan::FeedForwardChunking& chunking);
    /// Block offload to disk (st/kit/block_offload.h): each block announces itself before it runs.
    void set_block_offload(std::shared_ptr<st::kit::BlockOffload> offload) { offload_ = std::move(offload); }
    const std::shared_ptr<st::kit::BlockOffload>& block_offload() const { return offload_; }

    torch::nn::Conv3d patch_embedding{nullptr};
    S2VFramePacker frame_packer{nullptr};                    ///< null without enable_framepack
    torch::nn::Embedding trainable_condition_mask{nullptr};  ///< rows: 0 noisy, 1 reference, 2 motion
    WanS2VConditionEmbedder condition_embedder{nullptr};
    torch::nn::ModuleList blocks{nullptr};  ///< st::plugins::wan::WanTransformerBlock
    S2VAudioInjector audio_injector{nullptr};
    torch::nn::Linear proj_out{nullptr};
    at::Tensor scale_shift_table;  ///< [1, 2, D]

  private:
    WanS2VConfig config_;
    bool gradient_checkpointing_ = false;
    int64_t checkpoint_interval_ = 1;
    std::shared_ptr<st::kit::BlockOffload> offload_;
};
TORCH_MODULE(WanS2VTransformer3DModel);

/// One S2V block (diffusers WanS2VTransformerBlock.forward) on the shared Wan block's modules:
/// tokens [0, segment) are modulated with timestep_proj[:, :, 0] and tokens [segment, N) with
/// timestep_proj[:, :, 1] (the t = 0 modulation of reference and motion tokens).
/// x [B, N, D], context [B, Lt, D], timestep_proj [B, 6, 2, D], rope [N, head_dim] -> [B, N, D].
at::Tensor s2v_block_forward(st::plugins::wan::WanTransformerBlockImpl& block, const at::Tensor& x,
                             const at::Tensor& context, const at::Tensor& timestep_proj, int64_t segment,
                             const st::plugins::wan::RopeTables& rope, double eps);

}  // namespace st::plugins::wan_s2v
