#pragma once
// Inner loops of the recurrent head (recur/recurrent_head.h), private to the engine: the scalar
// versions live in recurrent_head.cpp, the AVX2 ones in recurrent_head_avx2.cpp, and the forward
// (recurrent_head.cpp) and backward (recurrent_head_grad.cpp) pick a set through select().
// S, G: [hd][hd] row-major, row index = k dim, column = v dim.
#include <cstddef>

namespace recur::rec_kernels {

// Which part of a square operand the caller needs (the chunk's causal mask).
enum gemm_tri : int {
    tri_none = 0,
    tri_a_lower = 1, // A [m×m] is lower triangular: row i only needs k <= i (zeros above are skipped)
    tri_c_lower = 2, // only C[i][j] with j <= i is needed; entries above may be left unwritten
};

struct kernel_set {
    // C[i][j] = beta·C[i][j] + alpha[i]·Σ_p A[i][p]·B[p][j]   for i < m, j < n.
    // A: [m][lda], B: [k][ldb], C: [m][ldc]; alpha == nullptr means 1; beta == 0 overwrites C
    // without reading it.
    void (*gemm)(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc, float beta, const float *alpha, int tri);
    // One row i of the chunk's decay-weighted score matrix, in place (seg, row: [n]):
    //   seg[j] += la for j < i; seg[i] = 0          (seg(i, j) = Σ_{j<m<=i} la_m from seg(i-1, j))
    //   row[j]  = row[j]·exp(seg[j])·dts[j] for j <= i, 0 for i < j < n.
    void (*decay_row)(int i, int n, float la, float *seg, const float *dts, float *row);
    float (*dot)(const float *a, const float *b, int n);
    // dst[r][j] = src[j][r] for j < n, r < hd: dst [hd][n], src rows `stride` apart.
    void (*transpose)(int n, int hd, const float *src, size_t stride, float *dst);
    // One token: S = a·S + dt·k vᵀ; y = scale·Sᵀq + d ⊙ v. q, k, v, d, y: [hd].
    void (*step)(int hd, float a, float dt, float scale, const float *q, const float *k, const float *v,
                 const float *d, float *state, float *y);
    // s_out = a·s_in + dt·k vᵀ (s_out == s_in allowed): the state update alone, for recomputation.
    void (*advance)(int hd, float a, float dt, const float *k, const float *v, const float *s_in,
                    float *s_out);
    // One token of the backward, in one pass over G, S_t and S_{t-1}:
    //   G      = a_next·G + scale·q dyᵀ          (G becomes dL/dS_t)
    //   dq[r]  = scale·(S_t dy)[r]                (written)
    //   gv[r]  = (G v)[r]                         (written)
    //   gtk[c] = (Gᵀ k)[c]                        (written)
    //   return <S_{t-1}, G>                       (Frobenius)
    float (*grad_token)(int hd, float a_next, float scale, const float *q, const float *dy, const float *k,
                        const float *v, const float *s_t, const float *s_prev, float *g, float *dq, float *gv,
                        float *gtk);
};

// The kernels to use now for head size hd: AVX2 when the CPU has AVX2 and FMA and
// recurrent_force_scalar(false) is in effect (step, advance and grad_token also need hd % 8 == 0),
// scalar otherwise.
kernel_set select(int hd);

// Whether the AVX2 builds are in use now (the CPU has AVX2 and FMA, and recurrent_force_scalar
// is off): the sequential forms (recurrent_head_sequential.cpp) dispatch on it.
bool avx2_enabled();

namespace avx2 {
void gemm(int m, int n, int k, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
          float beta, const float *alpha, int tri);
void decay_row(int i, int n, float la, float *seg, const float *dts, float *row);
float dot(const float *a, const float *b, int n);
void transpose(int n, int hd, const float *src, size_t stride, float *dst);
// The three below need hd % 8 == 0.
void step(int hd, float a, float dt, float scale, const float *q, const float *k, const float *v,
          const float *d, float *state, float *y);
void advance(int hd, float a, float dt, const float *k, const float *v, const float *s_in, float *s_out);
float grad_token(int hd, float a_next, float scale, const float *q, const float *dy, const float *k,
                 const float *v, const float *s_t, const float *s_prev, float *g, float *dq, float *gv,
                 float *gtk);
} // namespace avx2

} // namespace recur::rec_kernels
