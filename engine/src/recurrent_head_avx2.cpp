// AVX2/FMA kernels of the recurrent head; compiled with those flags and only called after a CPUID
// check (rec_kernels::select). Contracts are in recurrent_head_kernels.h.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "recurrent_head_kernels.h"
#include "simd_avx2.h"

namespace recur::rec_kernels::avx2 {

namespace {

// Lanes l < n set (n in 0..8).
inline __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

using simd::exp256;
using simd::hsum;

// C tile of MR rows × NV·8 columns (the last vector masked when PARTIAL), accumulators in registers.
template <int MR, int NV, bool PARTIAL>
void tile(int kdim, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc, float beta,
          const float *alpha, __m256i mask) {
    __m256 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int u = 0; u < NV; ++u)
            acc[r][u] = _mm256_setzero_ps();
    for (int p = 0; p < kdim; ++p) {
        const float *bp = b + size_t(p) * ldb;
        __m256 bv[NV];
#pragma GCC unroll 8
        for (int u = 0; u < NV; ++u)
            bv[u] =
                (PARTIAL && u == NV - 1) ? _mm256_maskload_ps(bp + 8 * u, mask) : _mm256_loadu_ps(bp + 8 * u);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const __m256 av = _mm256_broadcast_ss(a + size_t(r) * lda + p);
#pragma GCC unroll 8
            for (int u = 0; u < NV; ++u)
                acc[r][u] = _mm256_fmadd_ps(av, bv[u], acc[r][u]);
        }
    }
    const __m256 bt = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
        const __m256 al = _mm256_set1_ps(alpha ? alpha[r] : 1.0f);
        float *cr = c + size_t(r) * ldc;
#pragma GCC unroll 8
        for (int u = 0; u < NV; ++u) {
            const bool part = PARTIAL && u == NV - 1;
            __m256 x = _mm256_mul_ps(acc[r][u], al);
            if (beta != 0.0f) {
                const __m256 old = part ? _mm256_maskload_ps(cr + 8 * u, mask) : _mm256_loadu_ps(cr + 8 * u);
                x = _mm256_fmadd_ps(bt, old, x);
            }
            if (part)
                _mm256_maskstore_ps(cr + 8 * u, mask, x);
            else
                _mm256_storeu_ps(cr + 8 * u, x);
        }
    }
}

template <int MR>
void tile_cols(int width, int kdim, const float *a, size_t lda, const float *b, size_t ldb, float *c,
               size_t ldc, float beta, const float *alpha) {
    // width in 1..16
    const int rem = width - (width > 8 ? 8 : 0);
    const __m256i mask = lane_mask(rem);
    const bool partial = rem != 8;
    if (width > 8) {
        if (partial)
            tile<MR, 2, true>(kdim, a, lda, b, ldb, c, ldc, beta, alpha, mask);
        else
            tile<MR, 2, false>(kdim, a, lda, b, ldb, c, ldc, beta, alpha, mask);
    } else {
        if (partial)
            tile<MR, 1, true>(kdim, a, lda, b, ldb, c, ldc, beta, alpha, mask);
        else
            tile<MR, 1, false>(kdim, a, lda, b, ldb, c, ldc, beta, alpha, mask);
    }
}

} // namespace

void gemm(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
          float beta, const float *alpha, int tri) {
    // 6×16 register tiles (12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers).
    constexpr int mr_max = 6;
    for (int i0 = 0; i0 < m; i0 += mr_max) {
        const int mr = std::min(mr_max, m - i0);
        const int kk = tri == 1 ? std::min(k, i0 + mr) : k; // tri_a_lower
        const int nn = tri == 2 ? std::min(n, i0 + mr) : n; // tri_c_lower
        const float *ai = a + size_t(i0) * lda;
        float *ci = c + size_t(i0) * ldc;
        const float *al = alpha ? alpha + i0 : nullptr;
        for (int j0 = 0; j0 < nn; j0 += 16) {
            const int wd = std::min(16, nn - j0);
            switch (mr) {
            case 6:
                tile_cols<6>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            case 5:
                tile_cols<5>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            case 4:
                tile_cols<4>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            case 3:
                tile_cols<3>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            case 2:
                tile_cols<2>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            default:
                tile_cols<1>(wd, kk, ai, lda, b + j0, ldb, ci + j0, ldc, beta, al);
                break;
            }
        }
    }
}

void decay_row(int i, int n, float la, float *seg, const float *dts, float *row) {
    const __m256 lav = _mm256_set1_ps(la);
    int j = 0;
    for (; j + 8 <= i; j += 8)
        _mm256_storeu_ps(seg + j, _mm256_add_ps(_mm256_loadu_ps(seg + j), lav));
    for (; j < i; ++j)
        seg[j] += la;
    seg[i] = 0.0f;
    const int nz = i + 1; // entries j <= i are weighted, the rest of the row is zeroed
    j = 0;
    for (; j + 8 <= nz; j += 8) {
        const __m256 wgt = _mm256_mul_ps(exp256(_mm256_loadu_ps(seg + j)), _mm256_loadu_ps(dts + j));
        _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), wgt));
    }
    if (j < nz) {
        // Masked loads return 0 in lanes > i, so those lanes come out 0 (no garbage from C_lower).
        const __m256i in = lane_mask(nz - j), out = lane_mask(std::min(8, n - j));
        const __m256 wgt =
            _mm256_mul_ps(exp256(_mm256_maskload_ps(seg + j, in)), _mm256_maskload_ps(dts + j, in));
        _mm256_maskstore_ps(row + j, out, _mm256_mul_ps(_mm256_maskload_ps(row + j, in), wgt));
        j += 8;
    }
    for (; j < n; ++j)
        row[j] = 0.0f;
}

float dot(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
           s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; ++i)
        s += a[i] * b[i];
    return s;
}

void transpose(int n, int hd, const float *src, size_t stride, float *dst) {
    // 8×8 blocks through registers (unpack, shuffle, lane permute); scalar edges.
    const int n8 = n & ~7, h8 = hd & ~7;
    for (int j0 = 0; j0 < n8; j0 += 8)
        for (int r0 = 0; r0 < h8; r0 += 8) {
            const float *s = src + size_t(j0) * stride + r0;
            __m256 x[8], t[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i)
                x[i] = _mm256_loadu_ps(s + size_t(i) * stride);
#pragma GCC unroll 4
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
            }
#pragma GCC unroll 2
            for (int i = 0; i < 8; i += 4) {
                x[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                x[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                x[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                x[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            float *d = dst + size_t(r0) * n + j0;
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                _mm256_storeu_ps(d + size_t(i) * n, _mm256_permute2f128_ps(x[i], x[i + 4], 0x20));
                _mm256_storeu_ps(d + size_t(i + 4) * n, _mm256_permute2f128_ps(x[i], x[i + 4], 0x31));
            }
        }
    for (int j = 0; j < n; ++j)
        for (int r = (j < n8 ? h8 : 0); r < hd; ++r)
            dst[size_t(r) * n + j] = src[size_t(j) * stride + r];
}

namespace {
// Columns [c0, c0 + 8·NV) of the step: v and the y accumulators stay in registers over all rows.
// Even and odd rows feed separate accumulators so the FMA latency chain is half as long.
template <int NV>
void step_cols(int hd, int c0, float a, float dt, float scale, const float *q, const float *k, const float *v,
               const float *d, float *state, float *y) {
    __m256 vv[NV], acc0[NV], acc1[NV];
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) {
        vv[u] = _mm256_loadu_ps(v + c0 + 8 * u);
        acc0[u] = acc1[u] = _mm256_setzero_ps();
    }
    const __m256 av = _mm256_set1_ps(a);
    int r = 0;
    for (; r + 2 <= hd; r += 2) {
        float *s0 = state + size_t(r) * hd + c0, *s1 = s0 + hd;
        const __m256 cr0 = _mm256_set1_ps(dt * k[r]), qr0 = _mm256_set1_ps(q[r]);
        const __m256 cr1 = _mm256_set1_ps(dt * k[r + 1]), qr1 = _mm256_set1_ps(q[r + 1]);
#pragma GCC unroll 8
        for (int u = 0; u < NV; ++u) {
            const __m256 x0 = _mm256_fmadd_ps(cr0, vv[u], _mm256_mul_ps(av, _mm256_loadu_ps(s0 + 8 * u)));
            const __m256 x1 = _mm256_fmadd_ps(cr1, vv[u], _mm256_mul_ps(av, _mm256_loadu_ps(s1 + 8 * u)));
            _mm256_storeu_ps(s0 + 8 * u, x0);
            _mm256_storeu_ps(s1 + 8 * u, x1);
            acc0[u] = _mm256_fmadd_ps(qr0, x0, acc0[u]);
            acc1[u] = _mm256_fmadd_ps(qr1, x1, acc1[u]);
        }
    }
    if (r < hd) {
        float *s0 = state + size_t(r) * hd + c0;
        const __m256 cr0 = _mm256_set1_ps(dt * k[r]), qr0 = _mm256_set1_ps(q[r]);
#pragma GCC unroll 8
        for (int u = 0; u < NV; ++u) {
            const __m256 x0 = _mm256_fmadd_ps(cr0, vv[u], _mm256_mul_ps(av, _mm256_loadu_ps(s0 + 8 * u)));
            _mm256_storeu_ps(s0 + 8 * u, x0);
            acc0[u] = _mm256_fmadd_ps(qr0, x0, acc0[u]);
        }
    }
    const __m256 sc = _mm256_set1_ps(scale);
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u)
        _mm256_storeu_ps(y + c0 + 8 * u,
                         _mm256_fmadd_ps(sc, _mm256_add_ps(acc0[u], acc1[u]),
                                         _mm256_mul_ps(_mm256_loadu_ps(d + c0 + 8 * u), vv[u])));
}
} // namespace

void step(int hd, float a, float dt, float scale, const float *q, const float *k, const float *v,
          const float *d, float *state, float *y) {
    // hd % 8 == 0 (checked by the caller). Four vectors of columns per pass over the rows.
    int c0 = 0;
    for (; c0 + 32 <= hd; c0 += 32)
        step_cols<4>(hd, c0, a, dt, scale, q, k, v, d, state, y);
    switch ((hd - c0) / 8) {
    case 3:
        step_cols<3>(hd, c0, a, dt, scale, q, k, v, d, state, y);
        break;
    case 2:
        step_cols<2>(hd, c0, a, dt, scale, q, k, v, d, state, y);
        break;
    case 1:
        step_cols<1>(hd, c0, a, dt, scale, q, k, v, d, state, y);
        break;
    default:
        break;
    }
}

void advance(int hd, float a, float dt, const float *k, const float *v, const float *s_in, float *s_out) {
    const __m256 av = _mm256_set1_ps(a);
    for (int r = 0; r < hd; ++r) {
        const __m256 cr = _mm256_set1_ps(dt * k[r]);
        const float *si = s_in + size_t(r) * hd;
        float *so = s_out + size_t(r) * hd;
        for (int c = 0; c < hd; c += 8)
            _mm256_storeu_ps(so + c, _mm256_fmadd_ps(cr, _mm256_loadu_ps(v + c),
                                                     _mm256_mul_ps(av, _mm256_loadu_ps(si + c))));
    }
}

float grad_token(int hd, float a_next, float scale, const float *q, const float *dy, const float *k,
                 const float *v, const float *s_t, const float *s_prev, float *g, float *dq, float *gv,
                 float *gtk) {
    for (int c = 0; c < hd; c += 8)
        _mm256_storeu_ps(gtk + c, _mm256_setzero_ps());
    const __m256 an = _mm256_set1_ps(a_next);
    __m256 sg = _mm256_setzero_ps();
    for (int r = 0; r < hd; ++r) {
        float *gr = g + size_t(r) * hd;
        const float *st = s_t + size_t(r) * hd, *sp = s_prev + size_t(r) * hd;
        const __m256 qr = _mm256_set1_ps(scale * q[r]), kr = _mm256_set1_ps(k[r]);
        // Per-row accumulators: the rows' chains are independent, so they overlap.
        __m256 sdy = _mm256_setzero_ps(), gvr = _mm256_setzero_ps(), sgr = _mm256_setzero_ps();
        for (int c = 0; c < hd; c += 8) {
            const __m256 dyc = _mm256_loadu_ps(dy + c);
            const __m256 gn = _mm256_fmadd_ps(qr, dyc, _mm256_mul_ps(an, _mm256_loadu_ps(gr + c)));
            _mm256_storeu_ps(gr + c, gn);
            sdy = _mm256_fmadd_ps(_mm256_loadu_ps(st + c), dyc, sdy);
            gvr = _mm256_fmadd_ps(gn, _mm256_loadu_ps(v + c), gvr);
            sgr = _mm256_fmadd_ps(_mm256_loadu_ps(sp + c), gn, sgr);
            _mm256_storeu_ps(gtk + c, _mm256_fmadd_ps(kr, gn, _mm256_loadu_ps(gtk + c)));
        }
        dq[r] = scale * hsum(sdy);
        gv[r] = hsum(gvr);
        sg = _mm256_add_ps(sg, sgr);
    }
    return hsum(sg);
}

} // namespace recur::rec_kernels::avx2
#endif
