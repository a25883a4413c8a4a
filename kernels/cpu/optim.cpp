// CPU fused optimizer steps (st/kernels.h): AdamW, Lion and their 8-bit block-wise forms. These
// loops are what st's optimizers run on CPU tensors (plugins/optim calls them in parallel chunks)
// and the reference the CUDA kernels are tested against.
#include <algorithm>
#include <cmath>

#include "q8_codes.h"

using st::kernels::adam_element;
using st::kernels::lion_element;
using st::kernels::q8_codes;
using st::kernels::q8_quantize;
using st::kernels::Q8Codes;

namespace {

bool bad(const void* p, int64_t n) {
    return n < 0 || (n > 0 && p == nullptr);
}

// Requantizes len fp32 moments of one block: new absmax, then the nearest code of each value / absmax.
float requantize(const Q8Codes& c, const float* values, int64_t len, uint8_t* codes, bool absolute) {
    float am = 0.0f;
    for (int64_t j = 0; j < len; ++j) am = std::max(am, absolute ? std::fabs(values[j]) : values[j]);
    const float inv = am > 0.0f ? 1.0f / am : 0.0f;
    for (int64_t j = 0; j < len; ++j) codes[j] = q8_quantize(c, values[j] * inv);
    return am;
}

}  // namespace

extern "C" st_k_status st_k_adamw_cpu(float* p, const float* g, float* m, float* v, int64_t n,
                                      const st_k_adam_scalars* s) {
    if (bad(p, n) || bad(g, n) || bad(m, n) || bad(v, n) || s == nullptr) return ST_K_BAD_ARGUMENT;
    const st_k_adam_scalars k = *s;
    for (int64_t i = 0; i < n; ++i) p[i] = adam_element(p[i], g[i], m[i], v[i], k);
    return ST_K_OK;
}

extern "C" st_k_status st_k_lion_cpu(float* p, const float* g, float* m, int64_t n,
                                     const st_k_lion_scalars* s) {
    if (bad(p, n) || bad(g, n) || bad(m, n) || s == nullptr) return ST_K_BAD_ARGUMENT;
    const st_k_lion_scalars k = *s;
    for (int64_t i = 0; i < n; ++i) p[i] = lion_element(p[i], g[i], m[i], k);
    return ST_K_OK;
}

extern "C" st_k_status st_k_adamw8bit_cpu(float* p, const float* g, st_k_q8_state m8, st_k_q8_state v8,
                                          int64_t n, const st_k_adam_scalars* s) {
    if (bad(p, n) || bad(g, n) || bad(m8.codes, n) || bad(v8.codes, n) || bad(m8.absmax, n) ||
        bad(v8.absmax, n) || s == nullptr) {
        return ST_K_BAD_ARGUMENT;
    }
    const st_k_adam_scalars k = *s;
    const Q8Codes& sm = q8_codes(true);
    const Q8Codes& um = q8_codes(false);
    float mbuf[ST_K_Q8_BLOCK], vbuf[ST_K_Q8_BLOCK];
    for (int64_t b = 0, start = 0; start < n; ++b, start += ST_K_Q8_BLOCK) {
        const int64_t len = std::min<int64_t>(ST_K_Q8_BLOCK, n - start);
        const float am = m8.absmax[b], av = v8.absmax[b];
        for (int64_t j = 0; j < len; ++j) {
            const int64_t i = start + j;
            float mi = sm.values[m8.codes[i]] * am;
            float vi = um.values[v8.codes[i]] * av;
            p[i] = adam_element(p[i], g[i], mi, vi, k);
            mbuf[j] = mi;
            vbuf[j] = vi;
        }
        m8.absmax[b] = requantize(sm, mbuf, len, m8.codes + start, true);
        v8.absmax[b] = requantize(um, vbuf, len, v8.codes + start, false);
    }
    return ST_K_OK;
}

extern "C" st_k_status st_k_lion8bit_cpu(float* p, const float* g, st_k_q8_state m8, int64_t n,
                                         const st_k_lion_scalars* s) {
    if (bad(p, n) || bad(g, n) || bad(m8.codes, n) || bad(m8.absmax, n) || s == nullptr)
        return ST_K_BAD_ARGUMENT;
    const st_k_lion_scalars k = *s;
    const Q8Codes& sm = q8_codes(true);
    float mbuf[ST_K_Q8_BLOCK];
    for (int64_t b = 0, start = 0; start < n; ++b, start += ST_K_Q8_BLOCK) {
        const int64_t len = std::min<int64_t>(ST_K_Q8_BLOCK, n - start);
        const float am = m8.absmax[b];
        for (int64_t j = 0; j < len; ++j) {
            const int64_t i = start + j;
            float mi = sm.values[m8.codes[i]] * am;
            p[i] = lion_element(p[i], g[i], mi, k);
            mbuf[j] = mi;
        }
        m8.absmax[b] = requantize(sm, mbuf, len, m8.codes + start, true);
    }
    return ST_K_OK;
}

extern "C" const char* st_k_status_name(st_k_status status) {
    switch (status) {
        case ST_K_OK:
            return "ok";
        case ST_K_BAD_ARGUMENT:
            return "bad argument";
        case ST_K_CUDA_ERROR:
            return "CUDA error";
    }
    return "unknown status";
}
