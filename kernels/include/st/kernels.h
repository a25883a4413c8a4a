/* st's own compute kernels, behind a C ABI: raw pointers, sizes and (for CUDA) a stream.
 *
 * Every kernel has two implementations with the same arguments and the same arithmetic:
 *   st_k_<op>_cpu   plain loops, always built (kernels/cpu/). They are the reference the CUDA kernels
 *                   are tested against, and the CPU path st itself runs where it calls them (the
 *                   optimizers' fused steps).
 *   st_k_<op>_cuda  CUDA kernels (kernels/cuda/), built whenever CMake finds nvcc; they compile with
 *                   nvcc alone (no LibTorch, no CUTLASS). `stream` is a cudaStream_t (NULL = legacy
 *                   default stream); pointers are device pointers; calls are asynchronous on the
 *                   stream and return only launch errors.
 * The tests compare the two on random inputs with explicit tolerances, the way llama.cpp's
 * test-backend-ops compares every backend against its CPU one, and compare the CPU side against
 * ATen formulas and st's optimizers (tests/kernels/).
 *
 * Threading: the CPU functions are single-threaded; callers split the work (every op here is
 * independent per row / per element / per 256-element block, so chunks can be handed to threads).
 * All functions return ST_K_OK or an error code; st_k_status_name() names it. Nothing here throws,
 * allocates on the heap per call, or keeps state except the constant 8-bit code tables.
 */
#ifndef ST_KERNELS_H
#define ST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_KERNELS_ABI_VERSION 1

typedef enum st_k_status {
    ST_K_OK = 0,
    ST_K_BAD_ARGUMENT = 1, /* null pointer where data is needed, negative size, unknown enum */
    ST_K_CUDA_ERROR = 2,   /* a CUDA launch failed (st_k_cuda_last_error() says why) */
} st_k_status;

/* Element types of activations. bf16 is stored as uint16 (the top half of an IEEE float); conversion
 * to bf16 rounds to nearest even, as ATen does. Arithmetic is float32 throughout. */
typedef enum st_k_dtype { ST_K_F32 = 0, ST_K_BF16 = 1 } st_k_dtype;

const char* st_k_status_name(st_k_status status);

/* ---- Modulated normalisation (Wan / Sana DiT blocks) ---------------------------------------------
 * x is [rows, channels], rows = batch * tokens (contiguous). For each row r = b * tokens + t:
 *   n = LayerNorm(x_r) = (x_r - mean) / sqrt(var + eps)      (norm = ST_K_LAYER_NORM, biased var)
 *     or RMSNorm(x_r) = x_r / sqrt(mean(x_r^2) + eps)        (norm = ST_K_RMS_NORM)
 *   n = n * weight + bias                                     (each optional, [channels], fp32)
 *   y_r = n * (1 + scale_m) + shift_m                         (each optional, fp32)
 * where the modulation row m = b * mod_batch_stride + t * mod_token_stride (in rows of `channels`
 * floats): mod_token_stride 0 broadcasts one row per sample (Wan 2.1 [B, 1, C]), tokens (Wan 2.2 TI2V
 * per-token [B, L, C]). Statistics are float32 (as diffusers' FP32LayerNorm); y is written in
 * y_dtype and may not alias x. */
typedef enum st_k_norm { ST_K_LAYER_NORM = 0, ST_K_RMS_NORM = 1 } st_k_norm;

typedef struct st_k_modnorm_args {
    int64_t rows;
    int64_t tokens; /* rows per sample; rows % tokens == 0 */
    int64_t channels;
    st_k_norm norm;
    float eps;
    const void* x;
    st_k_dtype x_dtype;
    const float* weight; /* NULL = 1 */
    const float* bias;   /* NULL = 0 (LayerNorm only) */
    const float* shift;  /* NULL = 0 */
    const float* scale;  /* NULL = 0 */
    int64_t mod_batch_stride;
    int64_t mod_token_stride;
    void* y;
    st_k_dtype y_dtype;
} st_k_modnorm_args;

st_k_status st_k_modnorm_cpu(const st_k_modnorm_args* args);
st_k_status st_k_modnorm_cuda(const st_k_modnorm_args* args, void* stream);

/* ---- Gated residual ------------------------------------------------------------------------------
 * out_r = x_r + f_r * gate_m (float32 math, written in out_dtype; out may alias x or f), with rows and
 * the modulation row m as in modnorm. The Wan block's `(x.float() + attn.float() * gate).to(dtype)`. */
typedef struct st_k_gated_residual_args {
    int64_t rows;
    int64_t tokens;
    int64_t channels;
    const void* x;
    st_k_dtype x_dtype;
    const void* f;
    st_k_dtype f_dtype;
    const float* gate;
    int64_t mod_batch_stride;
    int64_t mod_token_stride;
    void* out;
    st_k_dtype out_dtype;
} st_k_gated_residual_args;

st_k_status st_k_gated_residual_cpu(const st_k_gated_residual_args* args);
st_k_status st_k_gated_residual_cuda(const st_k_gated_residual_args* args, void* stream);

/* ---- 3-D rotary embedding (Wan / S2V / Sana Video attention) --------------------------------------
 * x is [batch, tokens, heads, head_dim] contiguous (head_dim even); cos/sin are the interleaved-pair
 * tables of st::kit::rope3d_tables, [tokens, head_dim] float32 (table_batch_stride 0) or per sample
 * [batch, tokens, head_dim] (table_batch_stride = tokens * head_dim). For each pair j:
 *   out[2j]   = x[2j] cos[2j]   - x[2j+1] sin[2j]
 *   out[2j+1] = x[2j] sin[2j+1] + x[2j+1] cos[2j+1]
 * inverse != 0 rotates by the negative angle (sin negated): the backward of the forward rotation.
 * out may alias x. */
typedef struct st_k_rope_args {
    int64_t batch;
    int64_t tokens;
    int64_t heads;
    int64_t head_dim;
    const void* x;
    st_k_dtype x_dtype;
    const float* cos;
    const float* sin;
    int64_t table_batch_stride;
    int inverse;
    void* out;
    st_k_dtype out_dtype;
} st_k_rope_args;

st_k_status st_k_rope_cpu(const st_k_rope_args* args);
st_k_status st_k_rope_cuda(const st_k_rope_args* args, void* stream);

/* ---- Fused optimizer steps: one pass over p, g and the state ---------------------------------------
 * fp32 parameters, gradients and state, n elements, all contiguous. The scalars are the step's
 * already-combined factors, so the kernels hold no schedule or bias-correction logic:
 *   AdamW (torch.optim.AdamW order):
 *     m = m b1 + a1 g;  v = v b2 + a2 g g;  p = p decay + neg_step m / (sqrt(v) / bc2_sqrt + eps)
 *     with decay = 1 - lr wd, a1 = 1 - b1, a2 = 1 - b2, bc2_sqrt = sqrt(1 - b2^t),
 *     neg_step = -lr / (1 - b1^t)
 *   Lion (lion-pytorch):
 *     p = p decay + neg_lr sign(m b1 + a1 g);  m = m b2 + a2 g */
typedef struct st_k_adam_scalars {
    float decay, b1, a1, b2, a2, bc2_sqrt, eps, neg_step;
} st_k_adam_scalars;

typedef struct st_k_lion_scalars {
    float decay, b1, a1, b2, a2, neg_lr;
} st_k_lion_scalars;

st_k_status st_k_adamw_cpu(float* p, const float* g, float* m, float* v, int64_t n,
                           const st_k_adam_scalars* s);
st_k_status st_k_adamw_cuda(float* p, const float* g, float* m, float* v, int64_t n,
                            const st_k_adam_scalars* s, void* stream);
st_k_status st_k_lion_cpu(float* p, const float* g, float* m, int64_t n, const st_k_lion_scalars* s);
st_k_status st_k_lion_cuda(float* p, const float* g, float* m, int64_t n, const st_k_lion_scalars* s,
                           void* stream);

/* ---- 8-bit block-wise state (bitsandbytes AdamW8bit / Lion8bit) ----------------------------------
 * Each state tensor is one uint8 code per element plus one float absmax per block of ST_K_Q8_BLOCK
 * elements (the last block may be short). Codes index bitsandbytes' 256-entry dynamic map
 * (create_dynamic_map: signed for m, unsigned for v). A step dequantizes a block, applies the fp32
 * update above (the parameter update uses the fresh fp32 moments), takes the block's new absmax and
 * stores each moment as the nearest code of moment / absmax (ties to the lower code; NaN -> 255).
 * The nearest code comes from a 65,536-entry table indexed by the float's top 16 bits plus at most a
 * couple of comparisons, instead of a binary search over 255 midpoints. */
#define ST_K_Q8_BLOCK 256

typedef struct st_k_q8_state {
    uint8_t* codes;
    float* absmax;
} st_k_q8_state;

/* The dynamic maps as bitsandbytes builds them (ascending, 256 values) and the quantiser. */
const float* st_k_q8_map(int is_signed);
uint8_t st_k_q8_quantize(int is_signed, float x);

st_k_status st_k_adamw8bit_cpu(float* p, const float* g, st_k_q8_state m, st_k_q8_state v, int64_t n,
                               const st_k_adam_scalars* s);
st_k_status st_k_adamw8bit_cuda(float* p, const float* g, st_k_q8_state m, st_k_q8_state v, int64_t n,
                                const st_k_adam_scalars* s, void* stream);
st_k_status st_k_lion8bit_cpu(float* p, const float* g, st_k_q8_state m, int64_t n,
                              const st_k_lion_scalars* s);
st_k_status st_k_lion8bit_cuda(float* p, const float* g, st_k_q8_state m, int64_t n,
                               const st_k_lion_scalars* s, void* stream);

/* ---- CUDA build facts ------------------------------------------------------------------------------
 * Only in builds with the CUDA kernels (libst_kernels_cuda). st_k_cuda_device_count() is 0 when no
 * driver or device is present (never an error), so callers and tests can skip cleanly. */
int st_k_cuda_device_count(void);
const char* st_k_cuda_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* ST_KERNELS_H */
