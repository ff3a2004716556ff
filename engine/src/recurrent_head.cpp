// The recurrent head (recurrent_head.h): the sequential reference, the chunked SSD prefill and the
// decode step, with scalar kernels here and AVX2 ones in recurrent_head_avx2.cpp.
#include "recur/recurrent_head.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "recur/error.h"
#include "recurrent_head_sequential.h"
#include "recurrent_head_kernels.h"

namespace recur {

namespace {
using namespace rec_kernels;

// ---- scalar kernels ----------------------------------------------------------------------------

void gemm_scalar(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc, float beta, const float *alpha, int tri) {
    for (int i = 0; i < m; ++i) {
        const int kk = tri == tri_a_lower ? std::min(k, i + 1) : k;
        const int nn = tri == tri_c_lower ? std::min(n, i + 1) : n;
        float *ci = c + size_t(i) * ldc;
        if (beta == 0.0f)
            std::fill(ci, ci + nn, 0.0f);
        else if (beta != 1.0f)
            for (int j = 0; j < nn; ++j)
                ci[j] *= beta;
        const float al = alpha ? alpha[i] : 1.0f;
        for (int p = 0; p < kk; ++p) {
            const float coef = al * a[size_t(i) * lda + p];
            const float *bp = b + size_t(p) * ldb;
            for (int j = 0; j < nn; ++j)
                ci[j] += coef * bp[j];
        }
    }
}

void decay_row_scalar(int i, int n, float la, float *seg, const float *dts, float *row) {
    for (int j = 0; j < i; ++j)
        seg[j] += la;
    seg[i] = 0.0f;
    for (int j = 0; j <= i; ++j)
        row[j] *= std::exp(seg[j]) * dts[j];
    for (int j = i + 1; j < n; ++j)
        row[j] = 0.0f;
}

float dot_scalar(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; ++i)
        s += a[i] * b[i];
    return s;
}

void transpose_scalar(int n, int hd, const float *src, size_t stride, float *dst) {
    for (int j = 0; j < n; ++j)
        for (int r = 0; r < hd; ++r)
            dst[size_t(r) * n + j] = src[size_t(j) * stride + r];
}

void advance_scalar(int hd, float a, float dt, const float *k, const float *v, const float *s_in,
                    float *s_out) {
    for (int r = 0; r < hd; ++r) {
        const float cr = dt * k[r];
        const float *si = s_in + size_t(r) * hd;
        float *so = s_out + size_t(r) * hd;
        for (int c = 0; c < hd; ++c)
            so[c] = a * si[c] + cr * v[c];
    }
}

float grad_token_scalar(int hd, float a_next, float scale, const float *q, const float *dy, const float *k,
                        const float *v, const float *s_t, const float *s_prev, float *g, float *dq, float *gv,
                        float *gtk) {
    float sg = 0;
    for (int c = 0; c < hd; ++c)
        gtk[c] = 0.0f;
    for (int r = 0; r < hd; ++r) {
        float *gr = g + size_t(r) * hd;
        const float *st = s_t + size_t(r) * hd, *sp = s_prev + size_t(r) * hd;
        const float qr = scale * q[r], kr = k[r];
        float sdy = 0, gvr = 0;
        for (int c = 0; c < hd; ++c) {
            gr[c] = a_next * gr[c] + qr * dy[c];
            sdy += st[c] * dy[c];
            gvr += gr[c] * v[c];
            gtk[c] += kr * gr[c];
            sg += sp[c] * gr[c];
        }
        dq[r] = scale * sdy;
        gv[r] = gvr;
    }
    return sg;
}

// One token of the recurrence; S is visited once, row by row (row r = k dim r).
void step_scalar(int hd, float a, float dt, float scale, const float *q, const float *k, const float *v,
                 const float *d, float *state, float *y) {
    for (int c = 0; c < hd; ++c)
        y[c] = 0.0f;
    for (int r = 0; r < hd; ++r) {
        float *s = state + size_t(r) * hd;
        const float cr = dt * k[r], qr = q[r];
        for (int c = 0; c < hd; ++c) {
            s[c] = a * s[c] + cr * v[c];
            y[c] += qr * s[c];
        }
    }
    for (int c = 0; c < hd; ++c)
        y[c] = scale * y[c] + d[c] * v[c];
}

// ---- dispatch ----------------------------------------------------------------------------------

std::atomic<bool> g_force_scalar{false};

bool cpu_avx2() {
#if defined(RECUR_X86)
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has;
#else
    return false;
#endif
}

bool use_avx2() {
    return cpu_avx2() && !g_force_scalar.load(std::memory_order_relaxed);
}

float softplus(float x) {
    return std::max(x, 0.0f) + std::log1p(std::exp(-std::fabs(x)));
}

void check_scan_args(const char *fn, const recurrent_head_weights &w, int n_tokens) {
    if (w.head_dim <= 0)
        throw error(std::string(fn) + ": head_dim must be positive, got " + std::to_string(w.head_dim));
    if (n_tokens < 0) throw error(std::string(fn) + ": negative n_tokens " + std::to_string(n_tokens));
}

} // namespace

bool rec_kernels::avx2_enabled() {
    return use_avx2();
}

rec_kernels::kernel_set rec_kernels::select(int hd) {
    kernel_set ks{gemm_scalar, decay_row_scalar, dot_scalar,       transpose_scalar,
                  step_scalar, advance_scalar,   grad_token_scalar};
#if defined(RECUR_X86)
    if (use_avx2()) {
        ks.gemm = avx2::gemm;
        ks.decay_row = avx2::decay_row;
        ks.dot = avx2::dot;
        ks.transpose = avx2::transpose;
        if (hd % 8 == 0) {
            ks.step = avx2::step;
            ks.advance = avx2::advance;
            ks.grad_token = avx2::grad_token;
        }
    }
#endif
    return ks;
}

// ---- public API ----------------------------------------------------------------------------------

void recurrent_force_scalar(bool on) {
    g_force_scalar.store(on);
}
const char *recurrent_simd_level() {
    return use_avx2() ? "avx2" : "scalar";
}

void recurrent_compute_dt(const recurrent_head_weights &w, int n_tokens, const float *xn, size_t xn_stride,
                          float *dt) {
    if (w.n_embd <= 0)
        throw error("recurrent_compute_dt: n_embd must be positive, got " + std::to_string(w.n_embd));
    const auto dot = rec_kernels::select(w.head_dim).dot;
    for (int t = 0; t < n_tokens; ++t)
        dt[t] = softplus(dot(w.dt_w, xn + size_t(t) * xn_stride, w.n_embd) + w.dt_b);
}

void recurrent_scan_ref(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                        const float *v, size_t stride, const float *dt, float *state, float *y,
                        size_t y_stride) {
    check_scan_args("recurrent_scan_ref", w, n_tokens);
    if (w.delta_rule || w.a_chan) return sequential::scan(w, n_tokens, q, k, v, stride, dt, state, y, y_stride);
    const int hd = w.head_dim;
    const float A = std::exp(w.a_log), scale = 1.0f / std::sqrt(float(hd));
    for (int t = 0; t < n_tokens; ++t) {
        const size_t o = size_t(t) * stride;
        step_scalar(hd, std::exp(-dt[t] * A), dt[t], scale, q + o, k + o, v + o, w.d, state,
                    y + size_t(t) * y_stride);
    }
}

size_t recurrent_scan_scratch_floats(int hd, int chunk) {
    // G/W [chunk][chunk] | kᵀ [hd][chunk] | la, dts, alpha, seg, kdecay [chunk] each
    const size_t L = size_t(std::max(chunk, 1));
    return L * L + size_t(std::max(hd, 1)) * L + 5 * L;
}

void recurrent_scan_chunked(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                            const float *v, size_t stride, const float *dt, float *state, float *y,
                            size_t y_stride, int chunk, float *scratch) {
    check_scan_args("recurrent_scan_chunked", w, n_tokens);
    if (chunk < 1) throw error("recurrent_scan_chunked: chunk must be >= 1, got " + std::to_string(chunk));
    if (w.delta_rule || w.a_chan) return sequential::scan(w, n_tokens, q, k, v, stride, dt, state, y, y_stride);
    const int hd = w.head_dim, L = chunk;
    const kernel_set kn = rec_kernels::select(hd);
    const float A = std::exp(w.a_log), scale = 1.0f / std::sqrt(float(hd));

    float *g = scratch;              // [n][n] Q·Kᵀ, then in place the weights W (lower triangular)
    float *kt = g + size_t(L) * L;   // [hd][n] Kᵀ, then its columns scaled by exp(seg(n-1, j))·dt_j
    float *la = kt + size_t(hd) * L; // [n] log-decay la_t = -dt_t·A  (<= 0)
    float *dts = la + L;             // [n] scale·dt_j
    float *alpha = dts + L;          // [n] scale·exp(seg(i, -1)): weight of S_prev in y_i
    float *seg = alpha + L;          // [n] running segment sums of the current row of W
    float *kdecay = seg + L;         // [n] exp(seg(n-1, j))·dt_j: weight of token j in the new state

    for (int c0 = 0; c0 < n_tokens; c0 += L) {
        const int n = std::min(L, n_tokens - c0);
        const float *qc = q + size_t(c0) * stride, *kc = k + size_t(c0) * stride,
                    *vc = v + size_t(c0) * stride;
        float *yc = y + size_t(c0) * y_stride;

        // Decays as sums of non-positive log-decays, never differences of cumulative sums.
        float run = 0;
        for (int i = 0; i < n; ++i) {
            la[i] = -dt[c0 + i] * A;
            dts[i] = scale * dt[c0 + i];
            run += la[i];
            alpha[i] = scale * std::exp(run);
            seg[i] = 0.0f;
        }
        const float chunk_decay = std::exp(run);
        run = 0;
        for (int j = n - 1; j >= 0; --j) {
            kdecay[j] = std::exp(run) * dt[c0 + j];
            run += la[j];
        }

        // kt = Kᵀ [hd][n], so that both Q·Kᵀ and Kᵀ·V are plain row-major products.
        kn.transpose(n, hd, kc, stride, kt);

        // W = (scale·exp(seg(i,j))·dt_j) ⊙ (Q·Kᵀ), causal.
        kn.gemm(n, n, hd, qc, stride, kt, n, g, n, 0.0f, nullptr, tri_c_lower);
        for (int i = 0; i < n; ++i)
            kn.decay_row(i, n, la[i], seg, dts, g + size_t(i) * n);

        // y = alpha ⊙ (Q·S_prev) + W·V + d ⊙ V
        kn.gemm(n, hd, hd, qc, stride, state, hd, yc, y_stride, 0.0f, alpha, tri_none);
        kn.gemm(n, hd, n, g, n, vc, stride, yc, y_stride, 1.0f, nullptr, tri_a_lower);
        for (int i = 0; i < n; ++i) {
            float *yi = yc + size_t(i) * y_stride;
            const float *vi = vc + size_t(i) * stride;
            for (int c = 0; c < hd; ++c)
                yi[c] += w.d[c] * vi[c];
        }

        // S = chunk_decay·S_prev + (Kᵀ·diag(kdecay))·V
        for (int r = 0; r < hd; ++r) {
            float *row = kt + size_t(r) * n;
            for (int j = 0; j < n; ++j)
                row[j] *= kdecay[j];
        }
        kn.gemm(hd, hd, n, kt, n, vc, stride, state, hd, chunk_decay, nullptr, tri_none);
    }
}

void recurrent_step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt,
                    float *state, float *y) {
    const int hd = w.head_dim;
    if (w.delta_rule || w.a_chan) return sequential::step(w, q, k, v, dt, state, y);
    const float a = std::exp(-dt * std::exp(w.a_log)), scale = 1.0f / std::sqrt(float(hd));
#if defined(RECUR_X86)
    if (hd % 8 == 0 && use_avx2()) return rec_kernels::avx2::step(hd, a, dt, scale, q, k, v, w.d, state, y);
#endif
    step_scalar(hd, a, dt, scale, q, k, v, w.d, state, y);
}

} // namespace recur
