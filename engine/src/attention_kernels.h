#pragma once
// Inner loops of attention over a KV cache stored as F16 or F32 rows of head_dim values.
// A GQA group's query heads are processed together so each key/value row is loaded once.
#include <cstddef>
#include <cstdint>

namespace recur {

// scores[h * n_keys + j] = dot(q[h * hd .. ], K row j) * scale, for h < n_q, j < n_keys.
// K rows are `k_stride` elements apart.
void attn_scores_f16(const float *q, int n_q, int hd, const uint16_t *k, size_t k_stride, int n_keys, float scale,
                     float *scores);
void attn_scores_f32(const float *q, int n_q, int hd, const float *k, size_t k_stride, int n_keys, float scale,
                     float *scores);
// acc[h * hd + d] += sum_j p[h * n_keys + j] * V[j][d]
void attn_accum_f16(const float *p, int n_q, int hd, const uint16_t *v, size_t v_stride, int n_keys, float *acc);
void attn_accum_f32(const float *p, int n_q, int hd, const float *v, size_t v_stride, int n_keys, float *acc);

namespace avx2 {
void attn_scores_f16(const float *q, int n_q, int hd, const uint16_t *k, size_t k_stride, int n_keys, float scale,
                     float *scores);
void attn_accum_f16(const float *p, int n_q, int hd, const uint16_t *v, size_t v_stride, int n_keys, float *acc);
void attn_scores_f32(const float *q, int n_q, int hd, const float *k, size_t k_stride, int n_keys, float scale,
                     float *scores);
void attn_accum_f32(const float *p, int n_q, int hd, const float *v, size_t v_stride, int n_keys, float *acc);
} // namespace avx2

bool cpu_has_avx2();

} // namespace recur

namespace recur {
// s[j] = exp(s[j] - max) for j < n; returns the sum. Vectorised exp on AVX2 (relative error ~1e-7).
float exp_shift_sum(float *s, int n, float max);
namespace avx2 {
float exp_shift_sum(float *s, int n, float max);
}
} // namespace recur
