// The Wan 2.1/2.2 DiT (diffusers WanTransformer3DModel; original wan/modules/model.py WanModel) as
// LibTorch modules. Submodules are registered under the diffusers names, so named_parameters()
// equals the keys of a diffusers `diffusion_pytorch_model.safetensors` (models.md §2.2).
//
// Precision (models.md §1.7): time_embedder, every scale_shift_table and the LayerNorms stay fp32
// (`set_compute_dtype` keeps them), LayerNorms / modulation / gated residual adds are computed in
// fp32 and cast back. Attention goes through st::sdk::attention only.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/kit_names.h"
#include "core/rope.h"
#include "st/kit/diffusers_model.h"
#include "st/lora.h"
#include "st/routing.h"
#include "st/tensors.h"

namespace st::kit {
class BlockOffload;
}

namespace st::plugins::wan {

/// RMSNorm over the last dim with a learned weight (diffusers/torch RMSNorm; original WanQKRMSNorm).
/// Computed in float32, returned in the input dtype.
class WanQKRMSNormImpl : public torch::nn::Module {
  public:
    WanQKRMSNormImpl(int64_t dim, double eps);
    at::Tensor forward(const at::Tensor& x);
    at::Tensor weight;

  private:
    double eps_;
};
TORCH_MODULE(WanQKRMSNorm);

/// LayerNorm computed in float32 (diffusers FP32LayerNorm), with or without affine parameters.
at::Tensor fp32_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

/// diffusers FeedForward: `net.0.proj` Linear(dim -> inner) + GELU (tanh or exact), `net.2`
/// Linear(inner -> out). Registered as net.0.proj / net.2 to match the checkpoint keys.
class WanFeedForwardImpl : public torch::nn::Module {
  public:
    WanFeedForwardImpl(int64_t dim, int64_t inner_dim, int64_t out_dim, bool gelu_tanh);
    at::Tensor forward(const at::Tensor& x);
    st::sdk::Linear proj{nullptr};  ///< net.0.proj (LoRA-capable)
    st::sdk::Linear out{nullptr};   ///< net.2 (LoRA-capable)

  private:
    bool gelu_tanh_;
};
TORCH_MODULE(WanFeedForward);

struct WanAttentionOptions {
    int64_t dim = 0;
    int64_t heads = 0;
    double eps = 1e-6;
    std::optional<int64_t> added_kv_proj_dim;  ///< Wan 2.1 I2V image K/V branch (cross-attention only)
};

/// diffusers WanAttention (attn1 self / attn2 cross) with RMS q/k norm across heads.
class WanAttentionImpl : public torch::nn::Module {
  public:
    explicit WanAttentionImpl(const WanAttentionOptions& options);
    /// x [B, L, D]; context [B, Lc, D] (x itself for self-attention); image_context [B, Li, D] or
    /// undefined; rope tables for self-attention or nullptr. Returns [B, L, D].
    at::Tensor forward(const at::Tensor& x, const at::Tensor& context, const at::Tensor& image_context,
                       const RopeTables* rope);
    st::sdk::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};  ///< LoRA-capable
    torch::nn::ModuleList to_out{nullptr};  ///< to_out.0 (st::sdk::Linear); to_out.1 is diffusers' dropout
    WanQKRMSNorm norm_q{nullptr}, norm_k{nullptr};
    st::sdk::Linear add_k_proj{nullptr}, add_v_proj{nullptr};
    WanQKRMSNorm norm_added_k{nullptr};
    int64_t heads() const { return options_.heads; }

  private:
    WanAttentionOptions options_;
};
TORCH_MODULE(WanAttention);

/// How the FFN of a block is chunked (output unchanged; saves activation memory), with SimpleTuner's
/// meaning (simpletuner/helpers/models/wan/transformer.py): `enabled` false: no chunking. chunk_size
/// nullopt: automatic, pieces of 2 samples when B >= 2, else the sequence in 4 pieces. chunk_size n:
/// pieces of n along `chunk_dim` (0 = batch, SimpleTuner's default; 1 = tokens); n >= the extent
/// becomes extent / 2; an extent of 1 is not chunked. Pieces may be uneven (SimpleTuner's gcd
/// fallback, needed by diffusers' helper, could shrink them to 2 tokens; st never does).
struct FeedForwardChunking {
    bool enabled = false;
    std::optional<int64_t> chunk_size;
    int64_t chunk_dim = 0;
};

/// Runs `ffn` over `x` [B, L, D] in the pieces `chunking` asks for (see FeedForwardChunking).
at::Tensor chunked_feed_forward(const FeedForwardChunking& chunking, const at::Tensor& x,
                                const std::function<at::Tensor(const at::Tensor&)>& ffn);

/// diffusers WanTransformerBlock (original WanAttentionBlock).
class WanTransformerBlockImpl : public torch::nn::Module {
  public:
    explicit WanTransformerBlockImpl(const WanTransformerConfig& config);
    /// x [B, L, D]; context [B, Lt, D] projected text; image_context [B, Li, D] or undefined;
    /// timestep_proj [B, 6, D] or per token [B, L, 6, D]; rope tables [L, head_dim] (or [B, L, head_dim]
    /// when TREAD gathered each sample's tokens). -> [B, L, D]
    at::Tensor forward(const at::Tensor& x, const at::Tensor& context, const at::Tensor& image_context,
                       const at::Tensor& timestep_proj, const RopeTables& rope);
    at::Tensor feed_forward(const at::Tensor& x);

    WanAttention attn1{nullptr}, attn2{nullptr};
    torch::nn::LayerNorm norm2{
        nullptr};  ///< cross-attention LayerNorm (affine); null without cross_attn_norm
    WanFeedForward ffn{nullptr};
    at::Tensor scale_shift_table;  ///< [1, 6, D]
    FeedForwardChunking chunking;

  private:
    double eps_;
};
TORCH_MODULE(WanTransformerBlock);

/// diffusers TimestepEmbedding / PixArtAlphaTextProjection: linear_1 -> act -> linear_2.
class WanMLPEmbedderImpl : public torch::nn::Module {
  public:
    WanMLPEmbedderImpl(int64_t in_dim, int64_t dim, bool gelu_tanh_act);
    at::Tensor forward(const at::Tensor& x);
    torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};

  private:
    bool gelu_tanh_act_;  ///< true: GELU(tanh) (text), false: SiLU (time)
};
TORCH_MODULE(WanMLPEmbedder);

/// diffusers WanImageEmbedding (original MLPProj img_emb): LN -> Linear -> GELU -> Linear -> LN.
class WanImageEmbedderImpl : public torch::nn::Module {
  public:
    WanImageEmbedderImpl(int64_t image_dim, int64_t dim, std::optional<int64_t> pos_embed_seq_len);
    /// [B, Li, image_dim] -> [B, Li, D] (FLF2V: two images folded into one sequence first)
    at::Tensor forward(const at::Tensor& x);
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    WanFeedForward ff{nullptr};
    at::Tensor pos_embed;  ///< [1, pos_embed_seq_len, image_dim] or undefined
};
TORCH_MODULE(WanImageEmbedder);

/// diffusers WanTimeTextImageEmbedding (`condition_embedder`).
class WanConditionEmbedderImpl : public torch::nn::Module {
  public:
    explicit WanConditionEmbedderImpl(const WanTransformerConfig& config);
    WanMLPEmbedder time_embedder{nullptr}, text_embedder{nullptr};
    torch::nn::Linear time_proj{nullptr};
    WanImageEmbedder image_embedder{nullptr};
};
TORCH_MODULE(WanConditionEmbedder);

/// Sinusoidal timestep features, cos first (diffusers get_timestep_embedding with
/// flip_sin_to_cos=True, downscale_freq_shift=0), float32: t [...] -> [..., dim].
at::Tensor wan_timestep_sinusoid(const at::Tensor& t, int64_t dim);

/// Inputs of one forward. Shapes: hidden_states [B, C_in, F, H, W]; timestep [B] (Wan 2.1 path)
/// or per token [B, L] (Wan 2.2 expand_timesteps path), float sigma*1000; encoder_hidden_states
/// [B, Lt, text_dim] (zero rows are attended, no mask); encoder_hidden_states_image [B, Li, image_dim]
/// for Wan 2.1 I2V only.
struct WanTransformerInputs {
    at::Tensor hidden_states;
    at::Tensor timestep;
    at::Tensor encoder_hidden_states;
    at::Tensor encoder_hidden_states_image;
    /// Block indices not run in this pass (skip-layer guidance on the unconditional branch); each
    /// must be in [0, num_layers). Empty: every block runs.
    std::vector<int64_t> skip_blocks;
    /// TREAD routes (applied in train mode with grad only) and the generator of their selections.
    std::vector<st::sdk::TokenRoute> routes;
    std::optional<at::Generator> generator;
    /// [B, L] bool: tokens a route must keep (e.g. the conditioned first frame of I2V); optional.
    at::Tensor force_keep;
};

class WanTransformer3DModelImpl : public torch::nn::Module {
  public:
    explicit WanTransformer3DModelImpl(WanTransformerConfig config);

    /// -> [B, C_out, F, H, W] in the compute dtype. When `intermediates` is given it receives
    /// patch_embed_out [B,L,D], temb, timestep_proj, text_embedder_out, image_embedder_out (I2V 2.1),
    /// rope_cos/rope_sin [L,d] and blocks.N.out [B,L,D] (st/kit/block_runner.h: the full grid, also
    /// inside a TREAD route).
    at::Tensor forward(const WanTransformerInputs& inputs, st::sdk::TensorMap* intermediates = nullptr);

    const WanTransformerConfig& config() const { return config_; }
    /// Casts parameters to `dtype` except the fp32-kept ones (time_embedder, scale_shift_table,
    /// norm1/norm2/norm3 of blocks and of the image embedder), like diffusers' _keep_in_fp32_modules.
    void set_compute_dtype(at::ScalarType dtype);
    at::ScalarType compute_dtype() const;
    /// Whether diffusers keeps this parameter (diffusers name) in float32.
    static bool keeps_fp32(const std::string& parameter_name);

    /// Recompute every `interval`-th block in backward instead of storing its activations.
    void set_gradient_checkpointing(bool enabled, int64_t interval = 1) {
        gradient_checkpointing_ = enabled;
        checkpoint_interval_ = interval;
    }
    bool gradient_checkpointing() const { return gradient_checkpointing_; }
    void set_feed_forward_chunking(const FeedForwardChunking& chunking);
    /// SimpleTuner wan_force_2_1_time_embedding: a per-token [B, L] timestep is collapsed to
    /// token 0's value ([B]) before the embedder (the Wan 2.1 path).
    /// Block offload to disk (st/kit/block_offload.h): each block announces itself before it runs.
    void set_block_offload(std::shared_ptr<st::kit::BlockOffload> offload) { offload_ = std::move(offload); }
    const std::shared_ptr<st::kit::BlockOffload>& block_offload() const { return offload_; }
    void set_force_2_1_time_embedding(bool enabled) { force_2_1_time_embedding_ = enabled; }
    bool force_2_1_time_embedding() const { return force_2_1_time_embedding_; }

    torch::nn::Conv3d patch_embedding{nullptr};
    WanConditionEmbedder condition_embedder{nullptr};
    torch::nn::ModuleList blocks{nullptr};
    torch::nn::Linear proj_out{nullptr};
    at::Tensor scale_shift_table;  ///< [1, 2, D]

  private:
    WanTransformerConfig config_;
    bool gradient_checkpointing_ = false;
    int64_t checkpoint_interval_ = 1;
    bool force_2_1_time_embedding_ = false;
    std::shared_ptr<st::kit::BlockOffload> offload_;
};
TORCH_MODULE(WanTransformer3DModel);

/// The Wan 2.2 A14B expert pair: `high` denoises t >= boundary_ratio*1000, `low` the rest
/// (diffusers WanImageToVideoPipeline / WanPipeline; `transformer` = high, `transformer_2` = low).
class WanExpertPair {
  public:
    WanExpertPair(WanTransformer3DModel high, WanTransformer3DModel low, double boundary_ratio);
    /// The expert for one scalar timestep (sigma*1000).
    WanTransformer3DModel& expert_for(double timestep);
    bool is_high(double timestep) const { return timestep >= boundary_ratio_ * 1000.0; }
    /// Forward with the expert chosen from the timestep; every sample of the batch (and every
    /// token for per-token timesteps) must fall on the same side of the boundary.
    at::Tensor forward(const WanTransformerInputs& inputs);
    double boundary_ratio() const { return boundary_ratio_; }
    WanTransformer3DModel& high() { return high_; }
    WanTransformer3DModel& low() { return low_; }

  private:
    WanTransformer3DModel high_;
    WanTransformer3DModel low_;
    double boundary_ratio_;
};

}  // namespace st::plugins::wan
