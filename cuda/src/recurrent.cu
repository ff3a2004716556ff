// The RecurFormer recurrent heads (recurrent_head.h) on the GPU: dt, the gather of each head's
// q/k/v (with the optional trained transforms), the chunked scan for prefill and the one-step
// update for decode. fp32 throughout, like the CPU reference.
//
// Parallelism: a head's state S is [hd][hd] with row index = k dim, column = v dim, and every
// column evolves independently given q, k and dt (S[:,c] = a·S[:,c] + dt·k·v[c], y[c] = S[:,c]·q),
// so a head is split into column blocks of CB columns, one thread block each. The chunk's
// intra-chunk weights W (L × L) are recomputed by every column block of a head: cheap next to
// the parallelism it buys (a layer has only a few recurrent heads).
#include "kernels.cuh"

#include <algorithm>
#include <string>

namespace recur::cuda_detail {

namespace {

__device__ __forceinline__ float softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float *y_at(const rec_args &a, int r, int t) {
    return a.y_col ? a.y + int64_t(t) * a.y_ld + a.y_col[r] : a.y + (int64_t(r) * a.n + t) * a.hd;
}

// Block (t, r): dt[r][t].
__global__ void dt_kernel(rec_args a) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, r = blockIdx.y;
    const float *x = a.xn + int64_t(t) * a.xn_ld, *w = a.dt_w + int64_t(r) * a.n_embd;
    float s = 0;
    for (int i = threadIdx.x; i < a.n_embd; i += blockDim.x) s += w[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) a.dt[int64_t(r) * a.n + t] = softplus(s + a.dt_b[r]);
}

// out(which, o) = M_which[head]·x_which at row o (x_which[o] itself where M_which is null), for
// which in q, k, v: src holds x_q, x_k, x_v ([3][hd]); the block's warps take the 3·hd outputs in
// turn, a warp's lanes split each dot product (coalesced row reads, one shuffle reduction), and
// lane 0 hands the value to store(which, o, v). One thread per output walking a whole row cost
// a decode step ~19 µs per layer in dependent loads.
template <typename Store>
__device__ __forceinline__ void transform_qkv(const float *const mats[3], int64_t head, const float *src, int hd,
                                              Store store) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int o3 = warp; o3 < 3 * hd; o3 += n_warps) {
        const int which = o3 / hd, o = o3 % hd;
        const float *m = mats[which], *x = src + which * hd;
        float v;
        if (m) {
            const float *mr = m + (head * hd + o) * hd;
            v = 0;
            for (int i = lane; i < hd; i += 32) v += mr[i] * x[i];
#pragma unroll
            for (int k = 16; k > 0; k >>= 1) v += __shfl_xor_sync(0xffffffffu, v, k);
        } else {
            v = x[o];
        }
        if (lane == 0) store(which, o, v);
    }
}

// Block (t, r), 256 threads: the head's q and its group's k, v, transformed when asked.
constexpr int gather_threads = 256;
__global__ void __launch_bounds__(gather_threads) gather_kernel(rec_gather_args a) {
    extern __shared__ float src[]; // [3][hd]
    const int t = blockIdx.x, r = blockIdx.y, hd = a.hd;
    const float *row = a.qkv + int64_t(t) * a.ld;
    const int head = a.head_of[r], grp = a.group_of[r];
    for (int i = threadIdx.x; i < hd; i += gather_threads) {
        src[i] = row[head * hd + i];
        src[hd + i] = row[a.nq + grp * hd + i];
        src[2 * hd + i] = row[a.nq + a.nkv + grp * hd + i];
    }
    __syncthreads();
    const int64_t out = (int64_t(r) * a.n + t) * hd;
    const float *mats[3] = {a.mq, a.mk, a.mv};
    float *dst[3] = {a.qg, a.kg, a.vg};
    transform_qkv(mats, r, src, hd, [&](int which, int o, float v) { dst[which][out + o] = v; });
}

int column_block(int hd) {
    for (int cb : {32, 16, 8, 4, 2})
        if (hd % cb == 0) return cb;
    return 1;
}

size_t scan_smem_floats(int hd, int L, int cb) {
    // q, k [L][hd+1] | v [L][cb] | la, dt, alpha, kdec [L] | W [L][L+1]
    return 2 * size_t(L) * (hd + 1) + size_t(L) * cb + 4 * size_t(L) + size_t(L) * (L + 1);
}

constexpr int scan_threads = 256;

// The chunked scan (SSD form, recurrent_head.h) in three parallel passes. A single kernel that
// walked the chunks in order, one block per (head, column block), gave a 2048-token prefill of a
// 50% hybrid Llama-1B 32 of its 45 ms on an H200 (32 blocks busy on 132 SMs). Now:
//   1. chunk:  block (head, chunk, column block): the chunk's own part of y (Σ_j W_ij v_j + d ⊙ v_i,
//              no earlier state), its state increment ΔS = Σ_j kdec_j k_j v_jᵀ into `carry`,
//              alpha_i and the chunk's decay;
//   2. carry:  thread per state entry, chunks in order: carry[c] := S entering chunk c,
//              S = decay_c·S + ΔS_c (in place), the final S back to the state;
//   3. inter:  block (head, chunk): y_i += alpha_i·(q_i · S entering the chunk).
// Decays are sums of non-positive log-decays, never differences of cumulative sums, as before.
__global__ void __launch_bounds__(scan_threads) scan_chunk_kernel(rec_args a, int L, int cb, float *carry,
                                                                  float *alpha_out, float *decay_out) {
    extern __shared__ float sm[];
    const int hd = a.hd, r = blockIdx.x, ch = blockIdx.y, c0 = blockIdx.z * cb, tid = threadIdx.x;
    const int n_chunks = gridDim.y, t0 = ch * L, n = min(L, a.n - t0);
    const int ldq = hd + 1;
    float *qs = sm, *ks = qs + L * ldq, *vs = ks + L * ldq;
    float *la = vs + L * cb, *dts = la + L, *alpha = dts + L, *kdec = alpha + L, *W = kdec + L;
    const float A = expf(a.a_log[r]), scale = 1.0f / sqrtf(float(hd));
    const float *dvec = a.d + int64_t(r) * hd;
    const int64_t base = (int64_t(r) * a.n + t0) * hd;
    for (int idx = tid; idx < n * hd; idx += scan_threads) {
        const int i = idx / hd, c = idx % hd;
        qs[i * ldq + c] = a.q[base + idx];
        ks[i * ldq + c] = a.k[base + idx];
    }
    for (int idx = tid; idx < n * cb; idx += scan_threads) vs[idx] = a.v[base + int64_t(idx / cb) * hd + c0 + idx % cb];
    for (int i = tid; i < n; i += scan_threads) {
        dts[i] = a.dt[int64_t(r) * a.n + t0 + i];
        la[i] = -dts[i] * A;
    }
    __syncthreads();
    for (int i = tid; i < n; i += scan_threads) {
        float pre = 0, suf = 0;
        for (int m = 0; m <= i; ++m) pre += la[m];
        for (int m = i + 1; m < n; ++m) suf += la[m];
        alpha[i] = scale * expf(pre);
        kdec[i] = expf(suf) * dts[i];
        if (blockIdx.z == 0) {
            alpha_out[int64_t(r) * a.n + t0 + i] = alpha[i];
            if (i == n - 1) decay_out[int64_t(r) * n_chunks + ch] = expf(pre);
        }
    }
    // W[i][j] = scale·exp(seg(i,j))·dt_j·(q_i·k_j) for j <= i.
    for (int idx = tid; idx < n * n; idx += scan_threads) {
        const int i = idx / n, j = idx % n;
        float w = 0;
        if (j <= i) {
            float dot = 0, seg = 0;
            for (int c = 0; c < hd; ++c) dot += qs[i * ldq + c] * ks[j * ldq + c];
            for (int m = j + 1; m <= i; ++m) seg += la[m];
            w = dot * expf(seg) * (scale * dts[j]);
        }
        W[i * (L + 1) + j] = w;
    }
    __syncthreads();
    for (int idx = tid; idx < n * cb; idx += scan_threads) {
        const int i = idx / cb, c = idx % cb;
        float wv = 0;
        for (int j = 0; j <= i; ++j) wv += W[i * (L + 1) + j] * vs[j * cb + c];
        float &out = y_at(a, r, t0 + i)[c0 + c];
        const float yc = wv + dvec[c0 + c] * vs[i * cb + c];
        out = a.y_accumulate ? out + yc : yc;
    }
    float *dS = carry + (int64_t(r) * n_chunks + ch) * hd * hd;
    for (int idx = tid; idx < hd * cb; idx += scan_threads) {
        const int rr = idx / cb, c = idx % cb;
        float sacc = 0;
        for (int j = 0; j < n; ++j) sacc += ks[j * ldq + rr] * kdec[j] * vs[j * cb + c];
        dS[rr * hd + c0 + c] = sacc;
    }
}

__global__ void __launch_bounds__(scan_threads) scan_carry_kernel(rec_args a, int n_chunks, float *carry,
                                                                  const float *decay) {
    const int r = blockIdx.x, hh = a.hd * a.hd;
    const int e = blockIdx.y * scan_threads + threadIdx.x;
    if (e >= hh) return;
    float *S = a.state + int64_t(r) * hh;
    float st = S[e];
    for (int ch = 0; ch < n_chunks; ++ch) {
        float *slot = carry + (int64_t(r) * n_chunks + ch) * hh + e;
        const float ds = *slot;
        *slot = st; // the state entering chunk ch
        st = decay[int64_t(r) * n_chunks + ch] * st + ds;
    }
    S[e] = st;
}

__global__ void __launch_bounds__(scan_threads) scan_inter_kernel(rec_args a, int L, const float *carry,
                                                                  const float *alpha) {
    extern __shared__ float qsh[]; // [L][hd]
    const int hd = a.hd, r = blockIdx.x, ch = blockIdx.y, n_chunks = gridDim.y, tid = threadIdx.x;
    const int t0 = ch * L, n = min(L, a.n - t0);
    const int64_t base = (int64_t(r) * a.n + t0) * hd;
    for (int idx = tid; idx < n * hd; idx += scan_threads) qsh[idx] = a.q[base + idx];
    __syncthreads();
    const float *Sin = carry + (int64_t(r) * n_chunks + ch) * hd * hd;
    for (int idx = tid; idx < n * hd; idx += scan_threads) {
        const int i = idx / hd, c = idx % hd;
        float acc = 0;
        for (int rr = 0; rr < hd; ++rr) acc += qsh[i * hd + rr] * Sin[rr * hd + c];
        y_at(a, r, t0 + i)[c] += alpha[int64_t(r) * a.n + t0 + i] * acc;
    }
}

// Decode: everything a recurrent head does for one token in one block (head r, 256 threads),
// where three launches (gather, dt, step) cost ~45 µs per layer on an H200, mostly latency:
//   1. q, k, v: from the fused projection row, through the head's transforms (gather != null;
//      warps split the dot products as gather_kernel does), or from a.q/k/v as given;
//   2. dt = softplus(dt_w[r]·xn + dt_b[r]) by a block reduction (also stored to a.dt);
//   3. S[i][c] = a·S[i][c] + dt·k[i]·v[c] over all hd² entries, 256 threads striding the state
//      (coalesced); y[c] = scale·Σ_i q[i]·S[i][c] + d[c]·v[c], partial sums per thread, then
//      added in shared memory.
constexpr int step_threads = 256;
__global__ void __launch_bounds__(step_threads) step_fused_kernel(rec_args a, rec_gather_args ga, bool gather) {
    extern __shared__ float sm[]; // src [3][hd] | qkv [3][hd] | y [hd] | red [8]
    pdl_wait();
    pdl_trigger();
    if (a.active && *a.active == 0) return; // no token left the window this step
    const int r = blockIdx.x, hd = a.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *src = sm, *qkv = sm + 3 * hd, *ys = qkv + 3 * hd, *red = ys + hd;
    float *qv = qkv, *kv = qkv + hd, *vv = qkv + 2 * hd;
    if (gather) {
        const int head = ga.head_of[r], grp = ga.group_of[r];
        for (int i = tid; i < hd; i += step_threads) {
            src[i] = ga.qkv[head * hd + i];
            src[hd + i] = ga.qkv[ga.nq + grp * hd + i];
            src[2 * hd + i] = ga.qkv[ga.nq + ga.nkv + grp * hd + i];
        }
    } else {
        for (int i = tid; i < hd; i += step_threads) {
            qv[i] = a.q[int64_t(r) * hd + i];
            kv[i] = a.k[int64_t(r) * hd + i];
            vv[i] = a.v[int64_t(r) * hd + i];
        }
    }
    for (int i = tid; i < hd; i += step_threads) ys[i] = 0.0f;
    // dt's dot product runs while the source rows land.
    float dsum = 0;
    if (!a.dt_given) {
        const float *w = a.dt_w + int64_t(r) * a.n_embd;
        for (int i = tid; i < a.n_embd; i += step_threads) dsum += w[i] * a.xn[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
    if (lane == 0) red[warp] = dsum;
    __syncthreads();
    if (gather) {
        const float *mats[3] = {ga.mq, ga.mk, ga.mv};
        transform_qkv(mats, r, src, hd, [&](int which, int o, float v) { qkv[which * hd + o] = v; });
    }
    float dt;
    if (a.dt_given) {
        dt = a.dt[r];
    } else {
        float tot = 0;
        for (int w2 = 0; w2 < step_threads / 32; ++w2) tot += red[w2];
        dt = softplus(tot + a.dt_b[r]);
    }
    __syncthreads(); // every thread has its dt before thread 0 stores it
    if (tid == 0 && !a.dt_given) a.dt[r] = dt;

    const float decay = expf(-dt * expf(a.a_log[r])), scale = 1.0f / sqrtf(float(hd));
    float *__restrict__ S = a.state + int64_t(r) * hd * hd;
    const int n_el = hd * hd;
    if (step_threads % hd == 0) {
        // The thread's column never changes: one partial sum, one shared add.
        const int c = tid % hd;
        const float vc = vv[c];
        float y = 0;
#pragma unroll 4
        for (int idx = tid; idx < n_el; idx += step_threads) {
            const int i = idx / hd;
            const float st = decay * S[idx] + (dt * kv[i]) * vc;
            S[idx] = st;
            y += qv[i] * st;
        }
        atomicAdd(&ys[c], y);
    } else {
        for (int idx = tid; idx < n_el; idx += step_threads) {
            const int i = idx / hd, c = idx % hd;
            const float st = decay * S[idx] + (dt * kv[i]) * vv[c];
            S[idx] = st;
            atomicAdd(&ys[c], qv[i] * st);
        }
    }
    __syncthreads();
    for (int c = tid; c < hd; c += step_threads) {
        const float yc = scale * ys[c] + a.d[int64_t(r) * hd + c] * vv[c];
        float &out = y_at(a, r, 0)[c];
        out = a.y_accumulate ? out + yc : yc;
    }
}

// ---- the sequential form: delta rule, per-channel decay ------------------------------------------

// Block r = head, one thread per state column c (hd threads), tokens in order; S is updated in
// place in global memory (a head's hd² floats stay in L1/L2; each thread walks its own column,
// so a row's accesses by the block are coalesced). Per token, with a_i = exp(−dt·A_i) the decay
// of row i (A_i = exp(a_log + a_chan[i]); thread i computes it):
//   additive  S[i][c] = a_i·S[i][c] + dt·k_i·v_c
//   delta     u_c = Σ_i k̂_i S[i][c],  S[i][c] = a_i·(S[i][c] − β k̂_i u_c) + β k̂_i v_c,
//             k̂ = k/sqrt(‖k‖² + eps), β = 1 − exp(−dt)
//   y_c = scale·Σ_i q_i S[i][c] + d_c v_c
// The delta rule's update reads the state it corrects, so there is no chunked form here (the CPU
// runs the same sequential form); a head's tokens are a serial chain of 2 passes over its
// column. dt is given ([R][n]).
__global__ void seq_scan_kernel(rec_args a) {
    extern __shared__ float sm[]; // q, k (k̂ under the delta rule), v, decays, k² partials: [5][hd]
    if (a.active && *a.active == 0) return; // no token left the window this step
    const int hd = a.hd, r = blockIdx.x, c = threadIdx.x;
    float *qs = sm, *ks = qs + hd, *vs = ks + hd, *as = vs + hd, *kk = as + hd;
    float *__restrict__ S = a.state + int64_t(r) * hd * hd;
    const float scale = 1.0f / sqrtf(float(hd));
    const float rate = expf(a.a_log[r] + (a.a_chan ? a.a_chan[int64_t(r) * hd + c] : 0.0f)); // of row c
    const float dc = a.d[int64_t(r) * hd + c];
    for (int t = 0; t < a.n; ++t) {
        const int64_t row = (int64_t(r) * a.n + t) * hd;
        const float dt = a.dt[int64_t(r) * a.n + t];
        const float kc = a.k[row + c];
        qs[c] = a.q[row + c];
        vs[c] = a.v[row + c];
        as[c] = expf(-dt * rate);
        kk[c] = kc * kc;
        __syncthreads();
        float beta = 0;
        if (a.delta) {
            float sum = 0; // every thread sums the same values in the same order: one norm
            for (int i = 0; i < hd; ++i) sum += kk[i];
            beta = -expm1f(-dt);
            __syncthreads(); // all have read kk before k̂ replaces k
            ks[c] = kc * (1.0f / sqrtf(sum + 1e-6f));
        } else {
            ks[c] = kc;
        }
        __syncthreads();
        const float vc = vs[c];
        float u = 0;
        if (a.delta)
            for (int i = 0; i < hd; ++i) u += ks[i] * S[int64_t(i) * hd + c];
        float y = 0;
        for (int i = 0; i < hd; ++i) {
            float s = S[int64_t(i) * hd + c];
            if (a.delta) {
                const float bk = beta * ks[i];
                s = as[i] * (s - bk * u) + bk * vc;
            } else {
                s = as[i] * s + (dt * ks[i]) * vc;
            }
            S[int64_t(i) * hd + c] = s;
            y += qs[i] * s;
        }
        const float yc = scale * y + dc * vc;
        float &out = y_at(a, r, t)[c];
        out = a.y_accumulate ? out + yc : yc;
        __syncthreads(); // before the next token's rows replace these
    }
}

void launch_recurrent_seq(const rec_args &a, cudaStream_t s) {
    if (a.R == 0 || a.n == 0) return;
    if (a.hd < 1 || a.hd > 1024) throw error("CUDA recurrent scan: head_dim must be in [1, 1024], got " + std::to_string(a.hd));
    const size_t smem = 5 * size_t(a.hd) * sizeof(float);
    seq_scan_kernel<<<dim3(unsigned(a.R)), dim3(unsigned(a.hd)), smem, s>>>(a);
    CUDA_CHECK_LAUNCH();
}

// ---- window + recurrent groups -----------------------------------------------------------------

// Block (t, h): the unrotated query row of head h at token t, bias added.
__global__ void wr_save_q_kernel(wr_args a) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, h = blockIdx.y, head = a.head_of[h];
    for (int d = threadIdx.x; d < a.hd; d += blockDim.x) {
        const int col = head * a.hd + d;
        a.qraw[(int64_t(h) * a.n + t) * a.hd + d] = a.qkv[int64_t(t) * a.ld + col] + (a.q_bias ? a.q_bias[col] : 0.0f);
    }
}

// Block (j, h): leaving token e = e0 + j of head h, if there is one.
constexpr int wr_threads = 128;
__global__ void __launch_bounds__(wr_threads) wr_gather_kernel(wr_args a) {
    extern __shared__ float src[]; // q, k, v [3][hd]
    pdl_wait();
    pdl_trigger();
    const int hd = a.hd, j = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int64_t pos0 = *a.pos0;
    const int64_t e0 = pos0 - a.W > a.S ? pos0 - a.W : a.S, e1 = pos0 + a.n - a.W;
    const int m = e1 > e0 ? int(e1 - e0) : 0;
    if (j == 0 && h == 0 && tid == 0 && a.m_out) *a.m_out = m;
    if (j >= m) return;
    const int64_t e = e0 + j, ti = e + a.W - pos0; // the token leaving, its evicting query's batch row
    const bool in_ring = e < pos0;
    const __half *kr = in_ring ? a.ring_k + (e % a.W) * hd : a.kb + (e - pos0) * a.kvb_ld + int64_t(a.grp) * hd;
    const __half *vr = in_ring ? a.ring_v + (e % a.W) * hd : a.vb + (e - pos0) * a.kvb_ld + int64_t(a.grp) * hd;
    for (int d = tid; d < hd; d += wr_threads) {
        src[d] = a.qraw[(int64_t(h) * a.n + ti) * hd + d];
        src[hd + d] = __half2float(kr[d]);
        src[2 * hd + d] = __half2float(vr[d]);
    }
    __syncthreads();
    // Rotate k back to position e's frame (RoPE's inverse), as the CPU's unrope.
    const int half = a.rope_dim / 2;
    for (int i = tid; i < half; i += wr_threads) {
        constexpr double two_pi = 6.283185307179586476925286766559;
        double ang = double(e) / double(a.freq_scale) * a.inv_freq[i];
        ang -= two_pi * rint(ang / two_pi);
        float sn, cs;
        sincosf(float(ang), &sn, &cs);
        const int i0 = a.neox ? i : 2 * i, i1 = a.neox ? i + half : 2 * i + 1;
        const float x0 = src[hd + i0], y0 = src[hd + i1];
        src[hd + i0] = x0 * cs + y0 * sn;
        src[hd + i1] = -x0 * sn + y0 * cs;
    }
    __syncthreads();
    const float *mats[3] = {a.mq, a.mk, a.mv};
    float *dst[3] = {a.qg, a.kg, a.vg};
    const int64_t out = (int64_t(h) * m + j) * hd;
    transform_qkv(mats, h, src, hd, [&](int which, int o, float v) { dst[which][out + o] = v; });
    if (tid == 0) a.dt_out[int64_t(h) * m + j] = in_ring ? a.dt_ring[int64_t(h) * a.W + e % a.W] : a.dt_batch[int64_t(h) * a.n + (e - pos0)];
}

// Block h: the batch's last min(n, W) tokens' dt into head h's ring.
__global__ void wr_dt_ring_kernel(wr_args a) {
    pdl_wait();
    pdl_trigger();
    const int h = blockIdx.x;
    const int64_t pos0 = *a.pos0;
    for (int t = max(0, a.n - a.W) + threadIdx.x; t < a.n; t += blockDim.x)
        a.dt_ring[int64_t(h) * a.W + (pos0 + t) % a.W] = a.dt_batch[int64_t(h) * a.n + t];
}

// Block (t, h): adds head h's recurrent read-out to the window's output at batch row t, or
// blends the two by the gate. Gated blocks have wr_add_threads threads (whole warps).
constexpr int wr_add_threads = 128;
__global__ void wr_add_kernel(wr_args a, const float *y, float *attn, int64_t ld) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, h = blockIdx.y, head = a.head_of[h];
    const int64_t e = int64_t(*a.pos0) + t - a.W; // the token this query pushed out of the window
    if (e < a.S) return;                          // none (sinks never leave)
    const int64_t off = int64_t(t) * ld + int64_t(head) * a.hd;
    if (!a.gate_w) {
        for (int d = threadIdx.x; d < a.hd; d += blockDim.x) attn[off + d] += y[off + d];
        return;
    }
    // log Z_out = gate_w·xn_t + gate_b + gate_n·log(n_out): n_out = e - S + 1 tokens are outside.
    const float *w = a.gate_w + int64_t(h) * a.n_embd, *x = a.xn + int64_t(t) * a.n_embd;
    float dot = 0;
    for (int i = threadIdx.x; i < a.n_embd; i += wr_add_threads) dot += w[i] * x[i];
    const float z = block_sum(dot) + a.gate_b[h] + a.gate_n[h] * logf(float(e - a.S + 1));
    const float gate = 1.0f / (1.0f + __expf(a.lse[int64_t(t) * a.lse_ld + head] - z)); // overflow: g = 0
    for (int d = threadIdx.x; d < a.hd; d += wr_add_threads) attn[off + d] = (1.0f - gate) * attn[off + d] + gate * y[off + d];
}

} // namespace

void launch_recurrent_dt(const rec_args &a, cudaStream_t s) {
    if (a.R == 0 || a.n == 0) return;
    launch_kernel(dt_kernel, dim3(unsigned(a.n), unsigned(a.R)), dim3(128), 0, s, a);
    CUDA_CHECK_LAUNCH();
}

void launch_recurrent_gather(const rec_gather_args &a, cudaStream_t s) {
    if (a.R == 0 || a.n == 0) return;
    gather_kernel<<<dim3(unsigned(a.n), unsigned(a.R)), gather_threads, 3 * size_t(a.hd) * sizeof(float), s>>>(a);
    CUDA_CHECK_LAUNCH();
}

size_t recurrent_scan_scratch_floats(int R, int n, int hd, int chunk) {
    const size_t n_chunks = (size_t(n) + chunk - 1) / size_t(chunk);
    return size_t(R) * (n_chunks * size_t(hd) * hd + n_chunks + size_t(n)); // carry, decay, alpha
}

void launch_recurrent_scan(const rec_args &a, int chunk, float *scratch, cudaStream_t s) {
    if (a.R == 0 || a.n == 0) return;
    if (a.delta || a.a_chan) return launch_recurrent_seq(a, s);
    if (chunk < 1 || chunk > 64) throw error("CUDA recurrent scan: chunk must be in [1, 64], got " + std::to_string(chunk));
    const int cb = column_block(a.hd), n_chunks = ceil_div(a.n, chunk);
    float *carry = scratch, *decay = carry + size_t(a.R) * n_chunks * a.hd * a.hd, *alpha = decay + size_t(a.R) * n_chunks;
    const size_t smem = scan_smem_floats(a.hd, chunk, cb) * sizeof(float);
    set_smem(reinterpret_cast<const void *>(scan_chunk_kernel), smem);
    scan_chunk_kernel<<<dim3(unsigned(a.R), unsigned(n_chunks), unsigned(a.hd / cb)), scan_threads, smem, s>>>(
        a, chunk, cb, carry, alpha, decay);
    CUDA_CHECK_LAUNCH();
    scan_carry_kernel<<<dim3(unsigned(a.R), ceil_div(a.hd * a.hd, scan_threads)), scan_threads, 0, s>>>(a, n_chunks, carry, decay);
    CUDA_CHECK_LAUNCH();
    const size_t smem_q = size_t(chunk) * a.hd * sizeof(float);
    set_smem(reinterpret_cast<const void *>(scan_inter_kernel), smem_q);
    scan_inter_kernel<<<dim3(unsigned(a.R), unsigned(n_chunks)), scan_threads, smem_q, s>>>(a, chunk, carry, alpha);
    CUDA_CHECK_LAUNCH();
}

void launch_recurrent_step(const rec_args &a, const rec_gather_args *gather, cudaStream_t s) {
    if (a.R == 0) return;
    if (a.n != 1) throw error("CUDA recurrent step: one token at a time");
    if (a.delta || a.a_chan) { // three launches instead of one fused kernel: gather, dt, the sequential step
        if (gather) launch_recurrent_gather(*gather, s);
        if (!a.dt_given) launch_recurrent_dt(a, s);
        return launch_recurrent_seq(a, s);
    }
    const size_t smem = (7 * size_t(a.hd) + step_threads / 32) * sizeof(float);
    set_smem(reinterpret_cast<const void *>(step_fused_kernel), smem);
    launch_kernel(step_fused_kernel, dim3(unsigned(a.R)), dim3(step_threads), smem, s, a, gather ? *gather : rec_gather_args{},
                  gather != nullptr);
    CUDA_CHECK_LAUNCH();
}

void launch_wr_save_q(const wr_args &a, cudaStream_t s) {
    if (a.n == 0 || a.g == 0) return;
    launch_kernel(wr_save_q_kernel, dim3(unsigned(a.n), unsigned(a.g)), dim3(std::min(a.hd, 128)), 0, s, a);
    CUDA_CHECK_LAUNCH();
}

void launch_wr_gather(const wr_args &a, cudaStream_t s) {
    if (a.n == 0 || a.g == 0) return;
    if (a.W < 1) throw error("CUDA window + recurrent: the window must hold at least one token");
    launch_kernel(wr_gather_kernel, dim3(unsigned(a.n), unsigned(a.g)), dim3(wr_threads), 3 * size_t(a.hd) * sizeof(float), s, a);
    CUDA_CHECK_LAUNCH();
}

void launch_wr_add(const wr_args &a, const float *y, float *attn, int64_t ld, cudaStream_t s) {
    if (a.n == 0 || a.g == 0) return;
    const int threads = a.gate_w ? wr_add_threads : std::min(a.hd, 128);
    launch_kernel(wr_add_kernel, dim3(unsigned(a.n), unsigned(a.g)), dim3(threads), 0, s, a, y, attn, ld);
    CUDA_CHECK_LAUNCH();
}

void launch_wr_dt_ring(const wr_args &a, cudaStream_t s) {
    if (a.n == 0 || a.g == 0) return;
    launch_kernel(wr_dt_ring_kernel, dim3(unsigned(a.g)), dim3(128), 0, s, a);
    CUDA_CHECK_LAUNCH();
}

} // namespace recur::cuda_detail
