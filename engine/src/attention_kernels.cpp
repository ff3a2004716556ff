// Scalar reference of the attention inner loops, and the run-time choice of the AVX2 path.
#include "attention_kernels.h"

#include "recur/quants.h"

namespace recur {

bool cpu_has_avx2() {
#if defined(RECUR_X86)
    // Every CPU with AVX2 also has F16C (clang's builtin cannot test "f16c" by name).
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has;
#else
    return false;
#endif
}

namespace {
void scores_ref_f16(const float *q, int n_q, int hd, const uint16_t *k, size_t k_stride, int n_keys, float scale,
                    float *scores) {
    for (int j = 0; j < n_keys; ++j)
        for (int h = 0; h < n_q; ++h) {
            float s = 0;
            for (int d = 0; d < hd; ++d) s += q[h * hd + d] * fp16_to_fp32(k[j * k_stride + d]);
            scores[h * n_keys + j] = s * scale;
        }
}
void scores_ref_f32(const float *q, int n_q, int hd, const float *k, size_t k_stride, int n_keys, float scale,
                    float *scores) {
    for (int j = 0; j < n_keys; ++j)
        for (int h = 0; h < n_q; ++h) {
            float s = 0;
            for (int d = 0; d < hd; ++d) s += q[h * hd + d] * k[j * k_stride + d];
            scores[h * n_keys + j] = s * scale;
        }
}
void accum_ref_f16(const float *p, int n_q, int hd, const uint16_t *v, size_t v_stride, int n_keys, float *acc) {
    for (int j = 0; j < n_keys; ++j)
        for (int h = 0; h < n_q; ++h) {
            float w = p[h * n_keys + j];
            for (int d = 0; d < hd; ++d) acc[h * hd + d] += w * fp16_to_fp32(v[j * v_stride + d]);
        }
}
void accum_ref_f32(const float *p, int n_q, int hd, const float *v, size_t v_stride, int n_keys, float *acc) {
    for (int j = 0; j < n_keys; ++j)
        for (int h = 0; h < n_q; ++h) {
            float w = p[h * n_keys + j];
            for (int d = 0; d < hd; ++d) acc[h * hd + d] += w * v[j * v_stride + d];
        }
}
bool use_simd(int hd) { return cpu_has_avx2() && hd % 8 == 0; }
} // namespace

void attn_scores_f16(const float *q, int n_q, int hd, const uint16_t *k, size_t k_stride, int n_keys, float scale,
                     float *scores) {
    if (use_simd(hd)) return avx2::attn_scores_f16(q, n_q, hd, k, k_stride, n_keys, scale, scores);
    scores_ref_f16(q, n_q, hd, k, k_stride, n_keys, scale, scores);
}
void attn_scores_f32(const float *q, int n_q, int hd, const float *k, size_t k_stride, int n_keys, float scale,
                     float *scores) {
    if (use_simd(hd)) return avx2::attn_scores_f32(q, n_q, hd, k, k_stride, n_keys, scale, scores);
    scores_ref_f32(q, n_q, hd, k, k_stride, n_keys, scale, scores);
}
void attn_accum_f16(const float *p, int n_q, int hd, const uint16_t *v, size_t v_stride, int n_keys, float *acc) {
    if (use_simd(hd)) return avx2::attn_accum_f16(p, n_q, hd, v, v_stride, n_keys, acc);
    accum_ref_f16(p, n_q, hd, v, v_stride, n_keys, acc);
}
void attn_accum_f32(const float *p, int n_q, int hd, const float *v, size_t v_stride, int n_keys, float *acc) {
    if (use_simd(hd)) return avx2::attn_accum_f32(p, n_q, hd, v, v_stride, n_keys, acc);
    accum_ref_f32(p, n_q, hd, v, v_stride, n_keys, acc);
}

} // namespace recur

#include <cmath>
namespace recur {
float exp_shift_sum(float *s, int n, float max) {
    if (cpu_has_avx2()) return avx2::exp_shift_sum(s, n, max);
    float sum = 0;
    for (int j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - max));
    return sum;
}
} // namespace recur
