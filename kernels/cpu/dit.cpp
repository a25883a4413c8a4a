// CPU DiT block kernels (st/kernels.h): modulated LayerNorm/RMSNorm, gated residual, 3-D RoPE.
// The reference for kernels/cuda/dit.cu; tests/kernels checks them against ATen formulas.
#include <cmath>

#include "../src/elementwise.h"

using st::kernels::load;
using st::kernels::rope_pair;
using st::kernels::store;

extern "C" st_k_status st_k_modnorm_cpu(const st_k_modnorm_args* a) {
    if (!st::kernels::modnorm_args_ok(a)) return ST_K_BAD_ARGUMENT;
    const int64_t c = a->channels;
    for (int64_t r = 0; r < a->rows; ++r) {
        const int64_t base = r * c;
        // Two passes in double for the statistics: the reference must not carry the rounding of a
        // float running sum (the CUDA kernel's tree reduction differs from any sequential order).
        double sum = 0.0, sq = 0.0;
        for (int64_t i = 0; i < c; ++i) sum += load(a->x, a->x_dtype, base + i);
        const double mean = a->norm == ST_K_LAYER_NORM ? sum / static_cast<double>(c) : 0.0;
        for (int64_t i = 0; i < c; ++i) {
            const double d = load(a->x, a->x_dtype, base + i) - mean;
            sq += d * d;
        }
        const float fmean = static_cast<float>(mean);
        const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(c) + a->eps));
        const int64_t b = r / a->tokens, t = r % a->tokens;
        const int64_t mrow = (b * a->mod_batch_stride + t * a->mod_token_stride) * c;
        for (int64_t i = 0; i < c; ++i) {
            float n = (load(a->x, a->x_dtype, base + i) - fmean) * rstd;
            if (a->weight != nullptr) n = n * a->weight[i];
            if (a->bias != nullptr) n = n + a->bias[i];
            const float sc = a->scale != nullptr ? a->scale[mrow + i] : 0.0f;
            const float sh = a->shift != nullptr ? a->shift[mrow + i] : 0.0f;
            store(a->y, a->y_dtype, base + i, n * (1.0f + sc) + sh);
        }
    }
    return ST_K_OK;
}

extern "C" st_k_status st_k_gated_residual_cpu(const st_k_gated_residual_args* a) {
    if (!st::kernels::gated_residual_args_ok(a)) return ST_K_BAD_ARGUMENT;
    const int64_t c = a->channels;
    for (int64_t r = 0; r < a->rows; ++r) {
        const int64_t b = r / a->tokens, t = r % a->tokens;
        const float* gate = a->gate + (b * a->mod_batch_stride + t * a->mod_token_stride) * c;
        for (int64_t i = 0; i < c; ++i) {
            const int64_t k = r * c + i;
            store(a->out, a->out_dtype, k, load(a->x, a->x_dtype, k) + load(a->f, a->f_dtype, k) * gate[i]);
        }
    }
    return ST_K_OK;
}

extern "C" st_k_status st_k_rope_cpu(const st_k_rope_args* a) {
    if (!st::kernels::rope_args_ok(a)) return ST_K_BAD_ARGUMENT;
    const int64_t d = a->head_dim;
    if (a->batch * a->tokens * a->heads == 0) return ST_K_OK;
    if (a->x == nullptr || a->out == nullptr || a->cos == nullptr || a->sin == nullptr)
        return ST_K_BAD_ARGUMENT;
    const float sign = a->inverse ? -1.0f : 1.0f;
    for (int64_t b = 0; b < a->batch; ++b) {
        for (int64_t t = 0; t < a->tokens; ++t) {
            const float* cs = a->cos + b * a->table_batch_stride + t * d;
            const float* sn = a->sin + b * a->table_batch_stride + t * d;
            for (int64_t h = 0; h < a->heads; ++h) {
                const int64_t base = ((b * a->tokens + t) * a->heads + h) * d;
                for (int64_t j = 0; j < d; j += 2) {
                    float o0, o1;
                    rope_pair(load(a->x, a->x_dtype, base + j), load(a->x, a->x_dtype, base + j + 1), cs[j],
                              sign * sn[j], cs[j + 1], sign * sn[j + 1], o0, o1);
                    store(a->out, a->out_dtype, base + j, o0);
                    store(a->out, a->out_dtype, base + j + 1, o1);
                }
            }
        }
    }
    return ST_K_OK;
}
