// AVX2/FMA/F16C kernels for quants.cpp; this file alone is compiled with -mavx2 -mfma -mf16c and
// is only entered after the CPUID check in quants.cpp. Every function returns false for a type
// it has no kernel for, and the caller then runs the scalar code.
//
// Two shapes of integer kernel:
//  * GEMV (decode, one or two activation columns): weight rows are streamed once straight from
//    their file layout, four rows at a time sharing each activation block (Q4 rows two per
//    vector), one int32 partial vector per row and block scaled in float, with software prefetch
//    of the next group of rows. This has to run at memory bandwidth.
//  * Tiled GEMM (prefill): 8 weight rows are first repacked into a "row-interleaved" tile where
//    one 32-byte vector holds 4 consecutive k of each of the 8 rows (4 bytes per row), so
//    _mm256_maddubs_epi16(W, broadcast(4 activation bytes)) yields partial sums whose lanes are
//    the 8 rows. Sums then stay in int16 across a whole block (no per-block horizontal sums and
//    one float FMA per 8 rows x block instead of one per row), each W load serves 4 activation
//    columns, and the 8 results of a column come out as one vector store.
#include <immintrin.h>

#include <cstring>
#include <memory>

#include "recur/quants.h"

namespace recur::avx2 {
namespace {

using t_ = tensor_type;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline uint32_t load_u32(const void *p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline uint16_t load_u16(const void *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline __m256i load32(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
inline __m256i bcast32(const void *p) { return _mm256_set1_epi32(static_cast<int>(load_u32(p))); }

inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}
// [hsum(a), hsum(b), hsum(c), hsum(d)]
inline __m128 hsum4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// 16 bytes of packed nibbles -> 32 bytes in element order: byte i (i < 16) is the low nibble of
// p[i], byte 16 + i its high nibble (the Q4_0/Q4_1 element order).
inline __m256i nibbles32(const uint8_t *p) {
    const __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    return _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(15));
}

// Q4_K's 12 scale bytes -> 8 scales (bytes 0..7) and 8 mins (bytes 8..15); see block_q4_K.
inline __m128i q4_K_scales_mins(const uint8_t *s) {
    uint32_t u[3];
    std::memcpy(u, s, 12);
    constexpr uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
    const uint32_t sc_lo = u[0] & low6;                                  // sc[0..3]
    const uint32_t sc_hi = (u[2] & low4) | ((u[0] >> 6) & low2) << 4;   // sc[4..7]
    const uint32_t m_lo = u[1] & low6;                                   // m[0..3]
    const uint32_t m_hi = ((u[2] >> 4) & low4) | ((u[1] >> 6) & low2) << 4; // m[4..7]
    return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo),
                          static_cast<int>(m_hi));
}

// Q6_K: the 6-bit values (0..63) of one 128-element half as four vectors of 32 elements
// (elements 32g .. 32g+31 in q[g]); see block_q6_K.
inline void q6_K_half(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i l0 = load32(ql), l1 = load32(ql + 32), h = load32(qh);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(3)), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(12)), 2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, _mm256_set1_epi8(48)));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_srli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(static_cast<char>(0xc0))), 2));
}

// Transpose an 8x8 matrix of 32-bit cells: v[i] holds row i; afterwards v[g] holds cell g of
// every row. With rows = weight rows and cells = 4 consecutive k, this builds the interleaved tile.
inline void transpose8x8_epi32(__m256i v[8]) {
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    v[0] = _mm256_permute2x128_si256(u0, u4, 0x20), v[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    v[1] = _mm256_permute2x128_si256(u1, u5, 0x20), v[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    v[2] = _mm256_permute2x128_si256(u2, u6, 0x20), v[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    v[3] = _mm256_permute2x128_si256(u3, u7, 0x20), v[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// Per-thread scratch (64-byte aligned, grows on demand): the repacked weight tile and the
// per-call activation scales.
class scratch {
    std::unique_ptr<uint8_t[]> mem_;
    size_t cap_ = 0;

  public:
    uint8_t *get(size_t bytes) {
        if (bytes + 64 > cap_) {
            cap_ = (bytes + 64) * 3 / 2;
            mem_.reset(new uint8_t[cap_]);
        }
        auto p = reinterpret_cast<uintptr_t>(mem_.get());
        return reinterpret_cast<uint8_t *>((p + 63) & ~uintptr_t{63});
    }
};
thread_local scratch tl_pack, tl_act;

// ================================ dequantisation =================================================

// 32 int8 -> 4 x 8 floats, scaled by d (float(q) * d, the same single rounding as the reference).
inline void store_i8x32_scaled(__m256i q, __m256 d, float *y) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
}

bool dequantize_impl(t_ t, const void *src, float *y, int64_t n) {
    const int64_t nb = n / 32;
    switch (t) {
    case t_::F16: {
        const auto *x = static_cast<const uint16_t *>(src);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i))));
        for (; i < n; ++i) y[i] = h2f(x[i]);
        return true;
    }
    case t_::BF16: {
        const auto *x = static_cast<const uint16_t *>(src);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i)));
            _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        for (; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
        return true;
    }
    case t_::Q4_0: {
        const auto *x = static_cast<const block_q4_0 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32)
            store_i8x32_scaled(_mm256_sub_epi8(nibbles32(x[b].qs), _mm256_set1_epi8(8)), _mm256_set1_ps(h2f(x[b].d)), y);
        return true;
    }
    case t_::Q4_1: {
        const auto *x = static_cast<const block_q4_1 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) {
            store_i8x32_scaled(nibbles32(x[b].qs), _mm256_set1_ps(h2f(x[b].d)), y);
            const __m256 m = _mm256_set1_ps(h2f(x[b].m)); // q*d + m, rounded twice like the reference
            for (int k = 0; k < 32; k += 8) _mm256_storeu_ps(y + k, _mm256_add_ps(_mm256_loadu_ps(y + k), m));
        }
        return true;
    }
    case t_::Q8_0: {
        const auto *x = static_cast<const block_q8_0 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) store_i8x32_scaled(load32(x[b].qs), _mm256_set1_ps(h2f(x[b].d)), y);
        return true;
    }
    default: return false; // F32 (memcpy) and the K-quants: the reference is fine
    }
}

// ================================ activation quantisation ========================================

// Same float operations as quantize_q8_activation_block in quants.cpp (amax, d = amax / 127,
// id = 1 / d, q = round-to-nearest-even(x * id)), so the bytes are identical.
// Quantises nv*8 floats (nv a multiple of 4); returns the int32 lanes per 8 elements in sums8
// (when non-null) and the sum of all q.
inline int quantize_q8(const float *x, int nv, int8_t *q, float *d_out, __m256i *sums8) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < nv; ++i) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * i)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = amax >= 1e-30f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i total = _mm256_setzero_si256();
    for (int i = 0; i < nv; i += 4) {
        __m256i v[4];
        for (int k = 0; k < 4; ++k) {
            const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * (i + k)), vid);
            v[k] = _mm256_cvtps_epi32(_mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            total = _mm256_add_epi32(total, v[k]);
            if (sums8) sums8[i + k] = v[k];
        }
        // packs interleave 128-bit lanes; the permute restores element order.
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + 8 * i),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    *d_out = d;
    return hsum_epi32(total);
}

bool quantize_activation_impl(t_ t, const float *x, void *dst, int64_t n) {
    switch (t) {
    case t_::Q8_0: {
        auto *y = static_cast<block_q8_0 *>(dst);
        for (int64_t b = 0; b < n / 32; ++b) {
            float d;
            quantize_q8(x + 32 * b, 4, y[b].qs, &d, nullptr);
            y[b].d = static_cast<uint16_t>(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
        }
        return true;
    }
    case t_::Q8_1: {
        auto *y = static_cast<block_q8_1 *>(dst);
        for (int64_t b = 0; b < n / 32; ++b) {
            float d;
            const int sum = quantize_q8(x + 32 * b, 4, y[b].qs, &d, nullptr);
            y[b].d = static_cast<uint16_t>(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
            y[b].s = static_cast<uint16_t>(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT));
        }
        return true;
    }
    case t_::Q8_K: {
        auto *y = static_cast<block_q8_K *>(dst);
        for (int64_t b = 0; b < n / 256; ++b) {
            __m256i s8[32];
            quantize_q8(x + 256 * b, 32, y[b].qs, &y[b].d, s8);
            for (int j = 0; j < 16; ++j)
                y[b].bsums[j] = static_cast<int16_t>(hsum_epi32(_mm256_add_epi32(s8[2 * j], s8[2 * j + 1])));
        }
        return true;
    }
    default: return false;
    }
}

// ================================ float GEMM (F32 / F16 / BF16 weights) ==========================

template <t_ T> inline __m256 load8w(const uint8_t *row, int64_t k) {
    if constexpr (T == t_::F32) {
        return _mm256_loadu_ps(reinterpret_cast<const float *>(row) + k);
    } else if constexpr (T == t_::F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + 2 * k)));
    } else {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(row + 2 * k)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
}
template <t_ T> inline float load1w(const uint8_t *row, int64_t k) {
    if constexpr (T == t_::F32) return reinterpret_cast<const float *>(row)[k];
    else if constexpr (T == t_::F16) return h2f(load_u16(row + 2 * k));
    else return bf16_to_fp32(load_u16(row + 2 * k));
}

// RM weight rows x RN activation columns, lanes = 8 consecutive k; each weight vector is
// converted once and used for RN FMAs (4 x 3 uses 12 accumulators + 3 activations + 1 weight).
template <t_ T, int RM, int RN>
void float_tile(int64_t n, const uint8_t *w, size_t wrb, const uint8_t *act, size_t arb, float *out, int64_t os) {
    __m256 acc[RM][RN];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < RN; ++c) acc[r][c] = _mm256_setzero_ps();
    const int64_t n8 = n & ~int64_t{7};
    constexpr int64_t es = T == t_::F32 ? 4 : 2; // bytes per weight
    for (int64_t k = 0; k < n8; k += 8) {
        if constexpr (RN == 1) { // GEMV streams the rows from DRAM: prefetch the next group of rows
            if ((k & 15) == 0) {
#pragma GCC unroll 4
                for (int r = 0; r < RM; ++r)
                    _mm_prefetch(reinterpret_cast<const char *>(w + (r + RM) * wrb + k * es), _MM_HINT_T0);
            }
        }
        __m256 a[RN];
#pragma GCC unroll 4
        for (int c = 0; c < RN; ++c) a[c] = _mm256_loadu_ps(reinterpret_cast<const float *>(act + c * arb) + k);
#pragma GCC unroll 4
        for (int r = 0; r < RM; ++r) {
            const __m256 wv = load8w<T>(w + r * wrb, k);
#pragma GCC unroll 4
            for (int c = 0; c < RN; ++c) acc[r][c] = _mm256_fmadd_ps(wv, a[c], acc[r][c]);
        }
    }
    for (int c = 0; c < RN; ++c) {
        float res[4];
        if constexpr (RM == 4) {
            _mm_storeu_ps(res, hsum4_ps(acc[0][c], acc[1][c], acc[2][c], acc[3][c]));
        } else {
            for (int r = 0; r < RM; ++r) res[r] = hsum_ps(acc[r][c]);
        }
        const float *ac = reinterpret_cast<const float *>(act + c * arb);
        for (int r = 0; r < RM; ++r) {
            for (int64_t k = n8; k < n; ++k) res[r] += load1w<T>(w + r * wrb, k) * ac[k];
            out[c * os + r] = res[r];
        }
    }
}

template <t_ T, int RN>
void float_rows(int64_t n, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *act, size_t arb, float *out,
                int64_t os) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) float_tile<T, 4, RN>(n, w + r * wrb, wrb, act, arb, out + r, os);
    switch (n_rows - r) {
    case 3: float_tile<T, 3, RN>(n, w + r * wrb, wrb, act, arb, out + r, os); break;
    case 2: float_tile<T, 2, RN>(n, w + r * wrb, wrb, act, arb, out + r, os); break;
    case 1: float_tile<T, 1, RN>(n, w + r * wrb, wrb, act, arb, out + r, os); break;
    default: break;
    }
}

template <t_ T>
void float_gemm(int64_t n, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *act, size_t arb,
                int64_t n_cols, float *out, int64_t os) {
    // Columns in tiles of 3, ending in 2 + 2 rather than 3 + 1 (a 1-column tile re-reads the
    // weights for a single FMA per load).
    int64_t c = 0;
    while (c < n_cols) {
        const int64_t left = n_cols - c;
        const int rn = left == 4 || left == 2 ? 2 : left == 1 ? 1 : 3;
        if (rn == 3) float_rows<T, 3>(n, w, wrb, n_rows, act + c * arb, arb, out + c * os, os);
        else if (rn == 2) float_rows<T, 2>(n, w, wrb, n_rows, act + c * arb, arb, out + c * os, os);
        else float_rows<T, 1>(n, w, wrb, n_rows, act + c * arb, arb, out + c * os, os);
        c += rn;
    }
}

// ================================ activation scales ==============================================

// For the 32-blocks: ds[2b] = d_a and ds[2b+1] = the offset-term factor of block b:
//   Q4_1 (Q8_1 activation): s = d_a * sum(q_a), stored in the block;
//   Q4_0 (Q8_0 activation): -8 * d_a * sum(q_a) (the weights are used as unsigned nibbles, so
//                           the -8 of every nibble becomes one term per block);
//   Q8_0: 0 (unused).
void act_scales_32(t_ wt, const uint8_t *a, int64_t nb, float *ds) {
    if (wt == t_::Q4_1) {
        const auto *x = reinterpret_cast<const block_q8_1 *>(a);
        for (int64_t b = 0; b < nb; ++b) ds[2 * b] = h2f(x[b].d), ds[2 * b + 1] = h2f(x[b].s);
        return;
    }
    const auto *x = reinterpret_cast<const block_q8_0 *>(a);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
        ds[2 * b] = h2f(x[b].d);
        if (wt == t_::Q4_0) {
            const int sum = hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, load32(x[b].qs)), ones16));
            ds[2 * b + 1] = -8.0f * ds[2 * b] * static_cast<float>(sum);
        } else {
            ds[2 * b + 1] = 0.0f;
        }
    }
}

// ================================ GEMV kernels (decode) ==========================================

// R (1..4) weight rows of a 32-block type against one activation row. Per block, the rows' fp16
// (d, m) pairs are converted together: lanes [d0 m0 d1 m1 d2 m2 d3 m3] times [d_a s' ...] give
// every row's scale product (broadcast with a permute) and offset term (summed once at the end).
// Q4 rows go two per vector (row r's 16 nibble bytes in the low 128 bits, row r+1's in the high),
// so one AND / shift / two maddubs / madd / cvt / FMA serve two rows; the activation's two
// 16-element halves are broadcast to both 128-bit lanes once per block.
template <t_ T, int R>
void gemv32(int64_t nb, const uint8_t *const *w, size_t pf, const uint8_t *a, const float *ds, float *out) {
    constexpr size_t wb = T == t_::Q4_0 ? sizeof(block_q4_0) : T == t_::Q4_1 ? sizeof(block_q4_1) : sizeof(block_q8_0);
    constexpr size_t ab = T == t_::Q4_1 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    constexpr size_t aq = T == t_::Q4_1 ? 4 : 2; // offset of qs in the activation block
    constexpr size_t wq = T == t_::Q4_1 ? 4 : 2; // offset of qs in the weight block
    constexpr int NA = T == t_::Q8_0 ? R : (R + 1) / 2; // accumulators: one per row, or per row pair
    const __m256i ones16 = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
    __m256 acc[NA], accm = _mm256_setzero_ps();
    for (int r = 0; r < NA; ++r) acc[r] = _mm256_setzero_ps();
    const uint8_t *wr[4] = {w[0], w[R > 1 ? 1 : 0], w[R > 2 ? 2 : 0], w[R > 3 ? 3 : 0]};
    for (int64_t b = 0; b < nb; ++b) {
        uint32_t dm[4];
        for (int r = 0; r < 4; ++r) {
            const uint8_t *blk = wr[r] + b * wb;
            if constexpr (T == t_::Q4_1) dm[r] = load_u32(blk);                 // d, m
            else if constexpr (T == t_::Q4_0) dm[r] = load_u16(blk) * 0x10001u; // d, d
            else dm[r] = load_u16(blk);                                         // d, 0
        }
        const __m128i dmv = _mm_loadu_si128(reinterpret_cast<const __m128i *>(dm));
        const __m256 pair = _mm256_castpd_ps(_mm256_broadcast_sd(reinterpret_cast<const double *>(ds + 2 * b)));
        const __m256 sc = _mm256_mul_ps(_mm256_cvtph_ps(dmv), pair);
        const uint8_t *aqs = a + b * ab + aq;
        // Rows are streamed once from DRAM: prefetch the same block pf bytes further on (the
        // next group of rows); the hardware prefetcher alone leaves about half the bandwidth unused.
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char *>(wr[r] + pf + b * wb), _MM_HINT_T0);
        if constexpr (T == t_::Q8_0) {
            const __m256i av = load32(aqs);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                // |w| as the unsigned operand and the sign moved onto a (|a| <= 127, w may be -128).
                const __m256i wv = load32(wr[r] + b * wb + 2);
                const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv));
                const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones16));
                acc[r] = _mm256_fmadd_ps(f, _mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(2 * r)), acc[r]);
            }
        } else {
            accm = _mm256_add_ps(accm, sc);
            const __m256i alo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(aqs)));
            const __m256i ahi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(aqs + 16)));
#pragma GCC unroll 2
            for (int p = 0; p < NA; ++p) {
                const __m256i v = _mm256_loadu2_m128i(reinterpret_cast<const __m128i *>(wr[2 * p + 1] + b * wb + wq),
                                                      reinterpret_cast<const __m128i *>(wr[2 * p] + b * wb + wq));
                const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi));
                const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones16));
                const __m256i idx = _mm256_setr_epi32(4 * p, 4 * p, 4 * p, 4 * p, 4 * p + 2, 4 * p + 2, 4 * p + 2, 4 * p + 2);
                acc[p] = _mm256_fmadd_ps(f, _mm256_permutevar8x32_ps(sc, idx), acc[p]);
            }
        }
    }
    float m[8];
    _mm256_storeu_ps(m, accm);
    if constexpr (T == t_::Q8_0) {
        for (int r = 0; r < R; ++r) out[r] = hsum_ps(acc[r]);
    } else {
        for (int r = 0; r < R; ++r) {
            const __m128 h = (r & 1) ? _mm256_extractf128_ps(acc[r / 2], 1) : _mm256_castps256_ps128(acc[r / 2]);
            __m128 s = _mm_add_ps(h, _mm_movehl_ps(h, h));
            s = _mm_add_ss(s, _mm_movehdup_ps(s));
            out[r] = _mm_cvtss_f32(s) + m[2 * r + 1];
        }
    }
}

// One Q4_K row against a Q8_K row.
// pf: byte distance to prefetch ahead (rows are streamed once).
float dot_q4_K(int64_t nb, const block_q4_K *w, const block_q8_K *a, size_t pf) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        for (int l = 0; l < 144; l += 64) _mm_prefetch(reinterpret_cast<const char *>(w + b) + pf + l, _MM_HINT_T0);
        const float da = a[b].d;
        const __m128i scm = q4_K_scales_mins(w[b].scales);
        const __m256i sm16 = _mm256_cvtepu8_epi16(scm); // [sc0..7 | m0..7] as int16
        // Offset term: sum_j m_j * (bsums[2j] + bsums[2j+1]).
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(a[b].bsums)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i *>(a[b].bsums + 8)));
        const __m128i mp = _mm_madd_epi16(_mm256_extracti128_si256(sm16, 1), bs);
        accm = _mm_fmadd_ps(_mm_set1_ps(h2f(w[b].dmin) * da), _mm_cvtepi32_ps(mp), accm);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16));
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load32(w[b].qs + 32 * c);
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i plo = _mm256_maddubs_epi16(lo, load32(a[b].qs + 64 * c));
            const __m256i phi = _mm256_maddubs_epi16(hi, load32(a[b].qs + 64 * c + 32));
            // Broadcast int16 scale 2c / 2c+1 to all lanes with a byte shuffle.
            const __m256i slo = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(static_cast<short>((4 * c + 1) << 8 | 4 * c)));
            const __m256i shi = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(static_cast<short>((4 * c + 3) << 8 | (4 * c + 2))));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_madd_epi16(plo, slo), _mm256_madd_epi16(phi, shi)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * da), _mm256_cvtepi32_ps(sumi), acc);
    }
    __m128 m = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return hsum_ps(acc) - _mm_cvtss_f32(m);
}

// One Q6_K row against a Q8_K row: sum_j sc_j * sum(q * a) over the unsigned 6-bit q, minus
// 32 * sum_j sc_j * bsums[j] for the -32 offset.
float dot_q6_K(int64_t nb, const block_q6_K *w, const block_q8_K *a, size_t pf) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        for (int l = 0; l < 210; l += 64) _mm_prefetch(reinterpret_cast<const char *>(w + b) + pf + l, _MM_HINT_T0);
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(w[b].scales));
        const __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), load32(a[b].bsums));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            __m256i q[4];
            q6_K_half(w[b].ql + 64 * h, w[b].qh + 32 * h, q);
#pragma GCC unroll 4
            for (int g = 0; g < 4; ++g) {
                const int j = 8 * h + 2 * g; // sub-blocks j (low 16 elements) and j+1 (high 16)
                const __m128i sel = _mm_setr_epi8(j, j, j, j, j, j, j, j, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1,
                                                  j + 1, j + 1);
                const __m256i s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, sel));
                const __m256i p = _mm256_maddubs_epi16(q[g], load32(a[b].qs + 128 * h + 32 * g));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s16));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[b].d) * a[b].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_ps(acc);
}

template <t_ T>
void gemv32_rows(int64_t nb, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *a, const float *ds,
                 float *out) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        const uint8_t *rows[4] = {w + r * wrb, w + (r + 1) * wrb, w + (r + 2) * wrb, w + (r + 3) * wrb};
        gemv32<T, 4>(nb, rows, 4 * wrb, a, ds, out + r);
    }
    const uint8_t *rows[3] = {w + r * wrb, w + (r + 1) * wrb, w + (r + 2) * wrb}; // only the valid ones are used
    switch (n_rows - r) {
    case 3: gemv32<T, 3>(nb, rows, 1024, a, ds, out + r); break;
    case 2: gemv32<T, 2>(nb, rows, 1024, a, ds, out + r); break;
    case 1: gemv32<T, 1>(nb, rows, 1024, a, ds, out + r); break;
    default: break;
    }
}

void gemv(t_ t, int64_t n, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *a, float *out) {
    if (t == t_::Q4_K || t == t_::Q6_K) {
        for (int64_t r = 0; r < n_rows; ++r)
            out[r] = t == t_::Q4_K ? dot_q4_K(n / 256, reinterpret_cast<const block_q4_K *>(w + r * wrb),
                                              reinterpret_cast<const block_q8_K *>(a), 4 * wrb)
                                   : dot_q6_K(n / 256, reinterpret_cast<const block_q6_K *>(w + r * wrb),
                                              reinterpret_cast<const block_q8_K *>(a), 4 * wrb);
        return;
    }
    const int64_t nb = n / 32;
    float *ds = reinterpret_cast<float *>(tl_act.get(static_cast<size_t>(nb) * 8));
    act_scales_32(t, a, nb, ds);
    switch (t) {
    case t_::Q4_0: gemv32_rows<t_::Q4_0>(nb, w, wrb, n_rows, a, ds, out); break;
    case t_::Q4_1: gemv32_rows<t_::Q4_1>(nb, w, wrb, n_rows, a, ds, out); break;
    default: gemv32_rows<t_::Q8_0>(nb, w, wrb, n_rows, a, ds, out); break;
    }
}

// ================================ tiled GEMM (prefill) ===========================================
//
// Repacked tile of 8 weight rows (rows past n_rows repeat the last row; their results are not
// stored). "Interleaved group" below = 32 bytes: bytes 4i..4i+3 are 4 consecutive k of row i.
//
// 32-blocks (Q4_0, Q4_1, Q8_0), per block, 320 bytes:
//   [0, 256)    8 interleaved groups (k = 4g .. 4g+3), values: Q4 nibbles 0..15, Q8_0 int8
//   [256, 288)  float d[8]
//   [288, 320)  float m[8] (Q4_1: the block offset; Q4_0: d again, paired with -8*d_a*sum(q_a))
constexpr size_t pack32_bytes = 320;
// Q4_K, per 256-superblock, 2496 bytes:
//   [0, 2048)     sub-block j (32 k) at 256*j: 8 interleaved groups of nibbles 0..15
//   [2048, 2304)  sub-block j at 2048+32j: int16[16] scales, lane pair (2i, 2i+1) = sc of row i
//   [2304, 2432)  pair p at 2304+32p: int16[16], lanes (2i, 2i+1) = (m_{2p}, m_{2p+1}) of row i
//   [2432, 2464)  float d[8];  [2464, 2496) float dmin[8]
constexpr size_t pack_q4_K_bytes = 2496;
// Q6_K, per 256-superblock, 2848 bytes:
//   [0, 2048)     64 interleaved groups (k = 4g .. 4g+3) of the unsigned 6-bit values 0..63
//   [2048, 2560)  sub-block j (16 k) at 2048+32j: int16[16], lanes (2i, 2i+1) = sc_j of row i
//   [2560, 2816)  pair p at 2560+32p: int16[16], lanes (2i, 2i+1) = (sc_{2p}, sc_{2p+1}) of row i
//   [2816, 2848)  float d[8]
constexpr size_t pack_q6_K_bytes = 2848;

template <t_ T> void pack32(int64_t nb, const uint8_t *const rows[8], uint8_t *dst) {
    constexpr size_t wb = T == t_::Q4_0 ? sizeof(block_q4_0) : T == t_::Q4_1 ? sizeof(block_q4_1) : sizeof(block_q8_0);
    for (int64_t b = 0; b < nb; ++b, dst += pack32_bytes) {
        __m256i v[8];
        uint16_t d[8], m[8];
        for (int i = 0; i < 8; ++i) {
            const uint8_t *blk = rows[i] + b * wb;
            if constexpr (T == t_::Q8_0) v[i] = load32(blk + 2);
            else v[i] = nibbles32(blk + (T == t_::Q4_1 ? 4 : 2));
            d[i] = load_u16(blk);
            m[i] = T == t_::Q4_1 ? load_u16(blk + 2) : d[i];
        }
        transpose8x8_epi32(v);
        for (int g = 0; g < 8; ++g) _mm256_store_si256(reinterpret_cast<__m256i *>(dst + 32 * g), v[g]);
        _mm256_store_ps(reinterpret_cast<float *>(dst + 256), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(d))));
        _mm256_store_ps(reinterpret_cast<float *>(dst + 288), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(m))));
    }
}

void pack_q4_K(int64_t nb, const uint8_t *const rows[8], uint8_t *dst) {
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t b = 0; b < nb; ++b, dst += pack_q4_K_bytes) {
        const block_q4_K *blk[8];
        for (int i = 0; i < 8; ++i) blk[i] = reinterpret_cast<const block_q4_K *>(rows[i]) + b;
        for (int j = 0; j < 8; ++j) {
            __m256i v[8];
            for (int i = 0; i < 8; ++i) {
                const __m256i q = load32(blk[i]->qs + 32 * (j / 2));
                v[i] = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(q, 4) : q, m4);
            }
            transpose8x8_epi32(v);
            for (int g = 0; g < 8; ++g) _mm256_store_si256(reinterpret_cast<__m256i *>(dst + 256 * j + 32 * g), v[g]);
        }
        auto *sc = reinterpret_cast<int16_t *>(dst + 2048);
        auto *mn = reinterpret_cast<int16_t *>(dst + 2304);
        auto *d = reinterpret_cast<float *>(dst + 2432);
        auto *dmin = reinterpret_cast<float *>(dst + 2464);
        for (int i = 0; i < 8; ++i) {
            uint8_t sm[16];
            _mm_storeu_si128(reinterpret_cast<__m128i *>(sm), q4_K_scales_mins(blk[i]->scales));
            for (int j = 0; j < 8; ++j) sc[16 * j + 2 * i] = sc[16 * j + 2 * i + 1] = sm[j];
            for (int p = 0; p < 4; ++p) mn[16 * p + 2 * i] = sm[8 + 2 * p], mn[16 * p + 2 * i + 1] = sm[9 + 2 * p];
            d[i] = h2f(blk[i]->d);
            dmin[i] = h2f(blk[i]->dmin);
        }
    }
}

void pack_q6_K(int64_t nb, const uint8_t *const rows[8], uint8_t *dst) {
    for (int64_t b = 0; b < nb; ++b, dst += pack_q6_K_bytes) {
        const block_q6_K *blk[8];
        for (int i = 0; i < 8; ++i) blk[i] = reinterpret_cast<const block_q6_K *>(rows[i]) + b;
        for (int h = 0; h < 2; ++h) {
            __m256i q[8][4];
            for (int i = 0; i < 8; ++i) q6_K_half(blk[i]->ql + 64 * h, blk[i]->qh + 32 * h, q[i]);
            for (int g = 0; g < 4; ++g) { // 32 elements 128h + 32g ..
                __m256i v[8];
                for (int i = 0; i < 8; ++i) v[i] = q[i][g];
                transpose8x8_epi32(v);
                for (int k = 0; k < 8; ++k)
                    _mm256_store_si256(reinterpret_cast<__m256i *>(dst + 1024 * h + 256 * g + 32 * k), v[k]);
            }
        }
        auto *sc = reinterpret_cast<int16_t *>(dst + 2048);
        auto *sp = reinterpret_cast<int16_t *>(dst + 2560);
        auto *d = reinterpret_cast<float *>(dst + 2816);
        for (int i = 0; i < 8; ++i) {
            for (int j = 0; j < 16; ++j) sc[16 * j + 2 * i] = sc[16 * j + 2 * i + 1] = blk[i]->scales[j];
            for (int p = 0; p < 8; ++p)
                sp[16 * p + 2 * i] = blk[i]->scales[2 * p], sp[16 * p + 2 * i + 1] = blk[i]->scales[2 * p + 1];
            d[i] = h2f(blk[i]->d);
        }
    }
}

// 8 packed rows x RN activation columns of a 32-block type -> res[c] = 8 row results.
template <t_ T, int RN>
void kern32(int64_t nb, const uint8_t *pack, const uint8_t *const *act, const float *const *ds, __m256 *res) {
    constexpr size_t ab = T == t_::Q4_1 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    constexpr size_t aq = T == t_::Q4_1 ? 4 : 2;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc[RN];
    for (int c = 0; c < RN; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, pack += pack32_bytes) {
        __m256i s[RN];
        for (int c = 0; c < RN; ++c) s[c] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int g = 0; g < 8; ++g) {
            const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 32 * g));
            if constexpr (T == t_::Q8_0) {
                // int8 x int8: |w| as the unsigned operand, the sign moved onto the activation
                // (|a| <= 127, so no overflow); pairs reach 2*128*127, so widen every group.
                const __m256i wa = _mm256_abs_epi8(wv);
#pragma GCC unroll 4
                for (int c = 0; c < RN; ++c) {
                    const __m256i a4 = bcast32(act[c] + b * ab + aq + 4 * g);
                    const __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(a4, wv));
                    s[c] = _mm256_add_epi32(s[c], _mm256_madd_epi16(p, ones16));
                }
            } else {
                // nibble x int8: each int16 lane gains at most 2*15*127 per group, 8 groups fit.
#pragma GCC unroll 4
                for (int c = 0; c < RN; ++c) {
                    const __m256i a4 = bcast32(act[c] + b * ab + aq + 4 * g);
                    s[c] = _mm256_add_epi16(s[c], _mm256_maddubs_epi16(wv, a4));
                }
            }
        }
        const __m256 d8 = _mm256_load_ps(reinterpret_cast<const float *>(pack + 256));
#pragma GCC unroll 4
        for (int c = 0; c < RN; ++c) {
            const __m256i i32 = T == t_::Q8_0 ? s[c] : _mm256_madd_epi16(s[c], ones16);
            const __m256 dd = _mm256_mul_ps(d8, _mm256_broadcast_ss(ds[c] + 2 * b));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), dd, acc[c]);
            if constexpr (T != t_::Q8_0)
                acc[c] = _mm256_fmadd_ps(_mm256_load_ps(reinterpret_cast<const float *>(pack + 288)),
                                         _mm256_broadcast_ss(ds[c] + 2 * b + 1), acc[c]);
        }
    }
    for (int c = 0; c < RN; ++c) res[c] = acc[c];
}

// bs32: per column, per superblock, int16[8] = bsums[2j] + bsums[2j+1] (sum of q_a over each
// 32-element sub-block), so the offset term is 4 pair-wise madds.
template <int RN>
void kern_q4_K(int64_t nb, const uint8_t *pack, const uint8_t *const *act, const int16_t *const *bs32, __m256 *res) {
    __m256 acc[RN];
    for (int c = 0; c < RN; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, pack += pack_q4_K_bytes) {
        const block_q8_K *ab[RN];
        __m256i isum[RN];
        for (int c = 0; c < RN; ++c) ab[c] = reinterpret_cast<const block_q8_K *>(act[c]) + b, isum[c] = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
            __m256i s[RN];
            for (int c = 0; c < RN; ++c) s[c] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int g = 0; g < 8; ++g) {
                const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 256 * j + 32 * g));
#pragma GCC unroll 4
                for (int c = 0; c < RN; ++c)
                    s[c] = _mm256_add_epi16(s[c], _mm256_maddubs_epi16(wv, bcast32(ab[c]->qs + 32 * j + 4 * g)));
            }
            const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 2048 + 32 * j));
#pragma GCC unroll 4
            for (int c = 0; c < RN; ++c) isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(s[c], sc));
        }
        const __m256 d8 = _mm256_load_ps(reinterpret_cast<const float *>(pack + 2432));
        const __m256 dmin8 = _mm256_load_ps(reinterpret_cast<const float *>(pack + 2464));
#pragma GCC unroll 4
        for (int c = 0; c < RN; ++c) {
            __m256i mm = _mm256_setzero_si256();
            for (int p = 0; p < 4; ++p)
                mm = _mm256_add_epi32(mm, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 2304 + 32 * p)),
                                                            bcast32(bs32[c] + 8 * b + 2 * p)));
            const __m256 da = _mm256_set1_ps(ab[c]->d);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), _mm256_mul_ps(d8, da), acc[c]);
            acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_mul_ps(dmin8, da), acc[c]);
        }
    }
    for (int c = 0; c < RN; ++c) res[c] = acc[c];
}

template <int RN> void kern_q6_K(int64_t nb, const uint8_t *pack, const uint8_t *const *act, __m256 *res) {
    __m256 acc[RN];
    for (int c = 0; c < RN; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, pack += pack_q6_K_bytes) {
        const block_q8_K *ab[RN];
        __m256i isum[RN];
        for (int c = 0; c < RN; ++c) ab[c] = reinterpret_cast<const block_q8_K *>(act[c]) + b, isum[c] = _mm256_setzero_si256();
        for (int j = 0; j < 16; ++j) { // sub-block of 16 = 4 groups; int16 holds 2 groups (2*2*63*127)
            const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 2048 + 32 * j));
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                const int g = 4 * j + 2 * h;
                const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 32 * g));
                const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 32 * g + 32));
#pragma GCC unroll 4
                for (int c = 0; c < RN; ++c) {
                    const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast32(ab[c]->qs + 4 * g)),
                                                       _mm256_maddubs_epi16(w1, bcast32(ab[c]->qs + 4 * g + 4)));
                    isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(s, sc));
                }
            }
        }
        const __m256 d8 = _mm256_load_ps(reinterpret_cast<const float *>(pack + 2816));
#pragma GCC unroll 4
        for (int c = 0; c < RN; ++c) {
            __m256i corr = _mm256_setzero_si256();
            for (int p = 0; p < 8; ++p)
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i *>(pack + 2560 + 32 * p)),
                                                                bcast32(ab[c]->bsums + 2 * p)));
            const __m256i tot = _mm256_sub_epi32(isum[c], _mm256_slli_epi32(corr, 5));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_mul_ps(d8, _mm256_set1_ps(ab[c]->d)), acc[c]);
        }
    }
    for (int c = 0; c < RN; ++c) res[c] = acc[c];
}

// Runs the tile kernel of type T over RN columns starting at column c0.
template <t_ T, int RN>
void run_tile(int64_t nb, const uint8_t *pack, const uint8_t *act, size_t arb, int64_t c0, const float *ds,
              const int16_t *bs32, __m256 *res) {
    const uint8_t *a[RN];
    const float *d[RN];
    const int16_t *bs[RN];
    for (int c = 0; c < RN; ++c) {
        a[c] = act + (c0 + c) * arb;
        d[c] = ds ? ds + (c0 + c) * 2 * nb : nullptr;
        bs[c] = bs32 ? bs32 + (c0 + c) * 8 * nb : nullptr;
    }
    if constexpr (T == t_::Q4_K) kern_q4_K<RN>(nb, pack, a, bs, res);
    else if constexpr (T == t_::Q6_K) kern_q6_K<RN>(nb, pack, a, res);
    else kern32<T, RN>(nb, pack, a, d, res);
}

template <t_ T>
void tiled_gemm(int64_t n, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *act, size_t arb, int64_t n_cols,
                float *out, int64_t os) {
    constexpr bool kq = T == t_::Q4_K || T == t_::Q6_K;
    const int64_t nb = n / (kq ? 256 : 32);
    const size_t pack_bytes = static_cast<size_t>(nb) * (T == t_::Q4_K ? pack_q4_K_bytes
                                                         : T == t_::Q6_K ? pack_q6_K_bytes
                                                                         : pack32_bytes);
    uint8_t *pack = tl_pack.get(pack_bytes);
    // Per-call activation side data: scales of the 32-blocks, or Q4_K's sub-block sums.
    float *ds = nullptr;
    int16_t *bs32 = nullptr;
    if constexpr (!kq) {
        ds = reinterpret_cast<float *>(tl_act.get(static_cast<size_t>(n_cols * nb) * 8));
        for (int64_t c = 0; c < n_cols; ++c) act_scales_32(T, act + c * arb, nb, ds + c * 2 * nb);
    } else if constexpr (T == t_::Q4_K) {
        bs32 = reinterpret_cast<int16_t *>(tl_act.get(static_cast<size_t>(n_cols * nb) * 16));
        for (int64_t c = 0; c < n_cols; ++c) {
            const auto *a = reinterpret_cast<const block_q8_K *>(act + c * arb);
            for (int64_t b = 0; b < nb; ++b)
                for (int j = 0; j < 8; ++j)
                    bs32[(c * nb + b) * 8 + j] = static_cast<int16_t>(a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
    }
    for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
        const int nr = static_cast<int>(n_rows - r0 < 8 ? n_rows - r0 : 8);
        const uint8_t *rows[8];
        for (int i = 0; i < 8; ++i) rows[i] = w + (r0 + (i < nr ? i : nr - 1)) * wrb;
        if constexpr (T == t_::Q4_K) pack_q4_K(nb, rows, pack);
        else if constexpr (T == t_::Q6_K) pack_q6_K(nb, rows, pack);
        else pack32<T>(nb, rows, pack);
        int64_t c = 0;
        while (c < n_cols) {
            __m256 res[4];
            const int rn = static_cast<int>(n_cols - c < 4 ? n_cols - c : 4);
            switch (rn) {
            case 4: run_tile<T, 4>(nb, pack, act, arb, c, ds, bs32, res); break;
            case 3: run_tile<T, 3>(nb, pack, act, arb, c, ds, bs32, res); break;
            case 2: run_tile<T, 2>(nb, pack, act, arb, c, ds, bs32, res); break;
            default: run_tile<T, 1>(nb, pack, act, arb, c, ds, bs32, res); break;
            }
            for (int k = 0; k < rn; ++k) {
                float *o = out + (c + k) * os + r0;
                if (nr == 8) {
                    _mm256_storeu_ps(o, res[k]);
                } else {
                    float tmp[8];
                    _mm256_storeu_ps(tmp, res[k]);
                    for (int i = 0; i < nr; ++i) o[i] = tmp[i];
                }
            }
            c += rn;
        }
    }
}

} // namespace

// ================================ entry points ===================================================

bool dequantize_row(tensor_type t, const void *src, float *dst, int64_t n) { return dequantize_impl(t, src, dst, n); }

bool quantize_activation(tensor_type t, const float *src, void *dst, int64_t n) {
    return quantize_activation_impl(t, src, dst, n);
}

// Fewer activation columns than this use the GEMV kernels: repacking a tile costs about one
// GEMV pass over it for the 32-blocks, more for the K-quants (measured crossovers: 2 and 3).
inline int64_t tiled_min_cols(t_ t) { return t == t_::Q4_K || t == t_::Q6_K ? 3 : 2; }

bool gemm_block(tensor_type t, int64_t n, const uint8_t *w, size_t wrb, int64_t n_rows, const uint8_t *act, size_t arb,
                int64_t n_cols, float *out, int64_t os) {
    switch (t) {
    case t_::F32: float_gemm<t_::F32>(n, w, wrb, n_rows, act, arb, n_cols, out, os); return true;
    case t_::F16: float_gemm<t_::F16>(n, w, wrb, n_rows, act, arb, n_cols, out, os); return true;
    case t_::BF16: float_gemm<t_::BF16>(n, w, wrb, n_rows, act, arb, n_cols, out, os); return true;
    case t_::Q4_0:
    case t_::Q4_1:
    case t_::Q8_0:
    case t_::Q4_K:
    case t_::Q6_K: break;
    default: return false;
    }
    if (n_cols < tiled_min_cols(t)) {
        for (int64_t c = 0; c < n_cols; ++c) gemv(t, n, w, wrb, n_rows, act + c * arb, out + c * os);
        return true;
    }
    switch (t) {
    case t_::Q4_0: tiled_gemm<t_::Q4_0>(n, w, wrb, n_rows, act, arb, n_cols, out, os); break;
    case t_::Q4_1: tiled_gemm<t_::Q4_1>(n, w, wrb, n_rows, act, arb, n_cols, out, os); break;
    case t_::Q8_0: tiled_gemm<t_::Q8_0>(n, w, wrb, n_rows, act, arb, n_cols, out, os); break;
    case t_::Q4_K: tiled_gemm<t_::Q4_K>(n, w, wrb, n_rows, act, arb, n_cols, out, os); break;
    default: tiled_gemm<t_::Q6_K>(n, w, wrb, n_rows, act, arb, n_cols, out, os); break;
    }
    return true;
}

bool vec_dot(tensor_type t, int64_t n, const void *w, const void *a, float *result) {
    return avx2::gemm_block(t, n, static_cast<const uint8_t *>(w), 0, 1, static_cast<const uint8_t *>(a), 0, 1, result, 1);
}

} // namespace recur::avx2
