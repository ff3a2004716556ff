// AVX2/FMA/F16C attention loops; compiled with those flags and only called after a CPUID check.
#include "attention_kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include "simd_avx2.h"

namespace recur::avx2 {

using simd::exp256;
using simd::hsum;

namespace {
inline __m256 load8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }

template <typename T>
void scores(const float *q, int n_q, int hd, const T *k, size_t k_stride, int n_keys, float scale, float *out) {
    // Up to 8 query heads share each key row load (GQA groups are 1..8 heads in practice).
    for (int h0 = 0; h0 < n_q; h0 += 4) {
        const int nh = n_q - h0 < 4 ? n_q - h0 : 4;
        for (int j = 0; j < n_keys; ++j) {
            const T *kr = k + size_t(j) * k_stride;
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int d = 0; d < hd; d += 8) {
                __m256 kv = load8(kr + d);
                for (int h = 0; h < nh; ++h)
                    acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (h0 + h) * hd + d), kv, acc[h]);
            }
            for (int h = 0; h < nh; ++h) out[(h0 + h) * n_keys + j] = hsum(acc[h]) * scale;
        }
    }
}

template <typename T>
void accum(const float *p, int n_q, int hd, const T *v, size_t v_stride, int n_keys, float *acc) {
    // Accumulators for one query head stay in registers across all keys when hd <= 128.
    if (hd <= 128) {
        for (int h = 0; h < n_q; ++h) {
            __m256 a[16];
            const int nv = hd / 8;
            for (int i = 0; i < nv; ++i) a[i] = _mm256_loadu_ps(acc + h * hd + i * 8);
            const float *ph = p + size_t(h) * n_keys;
            for (int j = 0; j < n_keys; ++j) {
                const __m256 w = _mm256_set1_ps(ph[j]);
                const T *vr = v + size_t(j) * v_stride;
                for (int i = 0; i < nv; ++i) a[i] = _mm256_fmadd_ps(w, load8(vr + i * 8), a[i]);
            }
            for (int i = 0; i < nv; ++i) _mm256_storeu_ps(acc + h * hd + i * 8, a[i]);
        }
        return;
    }
    for (int j = 0; j < n_keys; ++j) {
        const T *vr = v + size_t(j) * v_stride;
        for (int h = 0; h < n_q; ++h) {
            const __m256 w = _mm256_set1_ps(p[size_t(h) * n_keys + j]);
            for (int d = 0; d < hd; d += 8)
                _mm256_storeu_ps(acc + h * hd + d, _mm256_fmadd_ps(w, load8(vr + d), _mm256_loadu_ps(acc + h * hd + d)));
        }
    }
}
} // namespace

void attn_scores_f16(const float *q, int n_q, int hd, const uint16_t *k, size_t k_stride, int n_keys, float scale,
                     float *out) {
    scores(q, n_q, hd, k, k_stride, n_keys, scale, out);
}
void attn_scores_f32(const float *q, int n_q, int hd, const float *k, size_t k_stride, int n_keys, float scale,
                     float *out) {
    scores(q, n_q, hd, k, k_stride, n_keys, scale, out);
}
void attn_accum_f16(const float *p, int n_q, int hd, const uint16_t *v, size_t v_stride, int n_keys, float *acc) {
    accum(p, n_q, hd, v, v_stride, n_keys, acc);
}
void attn_accum_f32(const float *p, int n_q, int hd, const float *v, size_t v_stride, int n_keys, float *acc) {
    accum(p, n_q, hd, v, v_stride, n_keys, acc);
}

float exp_shift_sum(float *s, int n, float max) {
    const __m256 m = _mm256_set1_ps(max);
    __m256 sum = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = hsum(sum);
    for (; j < n; ++j) {
        float e[8] = {s[j] - max, 0, 0, 0, 0, 0, 0, 0};
        _mm256_storeu_ps(e, exp256(_mm256_loadu_ps(e)));
        s[j] = e[0];
        total += e[0];
    }
    return total;
}

} // namespace recur::avx2
#endif
