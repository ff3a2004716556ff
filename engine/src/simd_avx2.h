#pragma once
// Small AVX2/FMA helpers shared by the *_avx2.cpp kernels (include only from files compiled
// with -mavx2 -mfma).
#include <immintrin.h>

namespace recur::simd {

// Sum of the 8 lanes.
inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// exp(x) for the decay weights (x <= 0 in use): Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2,
// a degree-6 polynomial for e^r (relative error ~2 ulp), then 2^n through the exponent bits.
// x < -87 (e^x below FLT_MIN) gives exactly 0, as a decay that has underflowed should.
inline __m256 exp256(__m256 x) {
    const __m256 lo_lim = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo_lim, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo_lim), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

} // namespace recur::simd
