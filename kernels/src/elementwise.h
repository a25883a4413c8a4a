// Per-element arithmetic shared by the CPU (kernels/cpu) and CUDA (kernels/cuda) implementations, so
// both compile the same expressions in the same order. The CUDA side is built with --fmad=false so
// nvcc does not contract `a * b + c` into an FMA the CPU build does not use: the two then agree bit
// for bit on the optimizer steps.
#pragma once

#include <stdint.h>
#include <string.h>

#include <cmath>

#include "st/kernels.h"

#if defined(__CUDACC__)
#define ST_K_HD __host__ __device__ __forceinline__
#else
#define ST_K_HD inline
#endif

namespace st::kernels {

ST_K_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return static_cast<uint32_t>(__float_as_uint(f));
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

ST_K_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/// float -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. ATen's c10::BFloat16 rule.
ST_K_HD uint16_t float_to_bf16(float f) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>((u + rounding) >> 16);
}

ST_K_HD float bf16_to_float(uint16_t h) {
    return bits_float(static_cast<uint32_t>(h) << 16);
}

ST_K_HD float load(const void* base, st_k_dtype dtype, int64_t i) {
    return dtype == ST_K_BF16 ? bf16_to_float(static_cast<const uint16_t*>(base)[i])
                              : static_cast<const float*>(base)[i];
}

ST_K_HD void store(void* base, st_k_dtype dtype, int64_t i, float value) {
    if (dtype == ST_K_BF16) {
        static_cast<uint16_t*>(base)[i] = float_to_bf16(value);
    } else {
        static_cast<float*>(base)[i] = value;
    }
}

ST_K_HD bool valid_dtype(st_k_dtype d) {
    return d == ST_K_F32 || d == ST_K_BF16;
}

/// Argument checks shared by the CPU and CUDA entry points (same rules on both sides).
inline bool rows_ok(int64_t rows, int64_t tokens, int64_t channels) {
    return rows >= 0 && tokens > 0 && channels > 0 && rows % tokens == 0;
}

inline bool modnorm_args_ok(const st_k_modnorm_args* a) {
    return a != nullptr && rows_ok(a->rows, a->tokens, a->channels) && valid_dtype(a->x_dtype) &&
           valid_dtype(a->y_dtype) && (a->norm == ST_K_LAYER_NORM || a->norm == ST_K_RMS_NORM) &&
           (a->rows == 0 || (a->x != nullptr && a->y != nullptr)) && a->eps >= 0.0f;
}

inline bool gated_residual_args_ok(const st_k_gated_residual_args* a) {
    return a != nullptr && rows_ok(a->rows, a->tokens, a->channels) && valid_dtype(a->x_dtype) &&
           valid_dtype(a->f_dtype) && valid_dtype(a->out_dtype) &&
           (a->rows == 0 || (a->x != nullptr && a->f != nullptr && a->gate != nullptr && a->out != nullptr));
}

/// Shape and dtype rules of st_k_rope_args (the pointers are checked once there is work to do).
inline bool rope_args_ok(const st_k_rope_args* a) {
    return a != nullptr && a->batch >= 0 && a->tokens >= 0 && a->heads >= 0 && a->head_dim > 0 &&
           a->head_dim % 2 == 0 && valid_dtype(a->x_dtype) && valid_dtype(a->out_dtype) &&
           a->table_batch_stride >= 0;
}

/// One AdamW element: updates m, v (fp32) and returns the new p.
ST_K_HD float adam_element(float p, float g, float& m, float& v, const st_k_adam_scalars& s) {
    const float mi = m * s.b1 + s.a1 * g;
    const float vi = v * s.b2 + s.a2 * g * g;
    m = mi;
    v = vi;
    const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
    const float pi = p * s.decay;
    return pi + s.neg_step * mi / denom;
}

/// One Lion element: updates m and returns the new p.
ST_K_HD float lion_element(float p, float g, float& m, const st_k_lion_scalars& s) {
    const float mi = m;
    const float c = mi * s.b1 + s.a1 * g;
    const float sign = static_cast<float>((c > 0.0f) - (c < 0.0f));
    m = mi * s.b2 + s.a2 * g;
    return p * s.decay + s.neg_lr * sign;
}

/// RoPE on one pair (see st_k_rope_args).
ST_K_HD void rope_pair(float x0, float x1, float c0, float s0, float c1, float s1, float& o0, float& o1) {
    o0 = x0 * c0 - x1 * s0;
    o1 = x0 * s1 + x1 * c1;
}

}  // namespace st::kernels
