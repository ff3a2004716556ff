// Attention over the F16 KV cache: the prefill kernel (flash-style tiles, online softmax, the
// recency statistics gathered on the way) and the decode kernel (keys split over blocks,
// partial softmax states merged afterwards: flash-decoding).
//
// Prefill. A block takes 64 query rows of one KV group; a row is a (token, query head) pair,
// token-major, so the GQA heads that share a group also share every K/V tile the block loads.
// Per 64-key tile each warp (16 rows) computes S = Q·Kᵀ, updates its rows' running max m and
// sum l, rescales its output rows by exp(m_old - m_new) and adds P·V. The working set is the
// tile, never an n × n matrix. With head_dim a multiple of 16 (up to 128) both products run on
// the tensor cores (WMMA, F16 operands, F32 accumulation: Q and P are rounded to F16, the cache
// already is); otherwise, or when forced, the same loop runs on the CUDA cores in F32.
// Two lanes serve each row in the softmax step (32 keys each), so the row's max and sum need one
// shuffle, not five.
#include "kernels.cuh"

#include <mma.h>

#include <algorithm>
#include <cfloat>

namespace recur::cuda_detail {

namespace {

constexpr int att_rows = 64;  // query rows per block
constexpr int att_tk = 64;    // keys per tile
constexpr int att_threads = 128;

// Shared-memory carve-up of the prefill kernel, identical on host (to size the launch) and
// device. Regions start on 128-byte boundaries: WMMA needs 32-byte aligned fragments.
struct att_layout {
    int ldq, ldk, lds, ldp, ldo, stat_w;
    size_t q, k, v, s, p, o, m, l, c, st, total;
    __host__ __device__ att_layout(bool tc, int hd, int n_bins, bool collect) {
        auto up = [](size_t x) { return (x + 127) / 128 * 128; };
        ldq = ldk = tc ? hd + 8 : hd + 1;   // F16 rows for WMMA, F32 rows (odd stride) otherwise
        lds = tc ? att_tk + 4 : att_tk + 1;
        ldp = att_tk + 8;
        ldo = tc ? hd + 4 : hd + 1;
        stat_w = collect ? 2 + n_bins : 0;
        const size_t qk_elem = tc ? 2 : 4;
        size_t off = 0;
        q = off, off = up(off + size_t(att_rows) * ldq * qk_elem);
        k = off, off = up(off + size_t(att_tk) * ldk * qk_elem);
        v = off, off = up(off + size_t(att_tk) * ldk * qk_elem);
        s = off, off = up(off + size_t(att_rows) * lds * 4);
        p = off, off = up(off + (tc ? size_t(att_rows) * ldp * 2 : 0));
        o = off, off = up(off + size_t(att_rows) * ldo * 4);
        m = off, off = up(off + att_rows * 4);
        l = off, off = up(off + att_rows * 4);
        c = off, off = up(off + att_rows * 4);
        st = off, off = up(off + size_t(att_rows) * stat_w * 4);
        total = off;
    }
};

__device__ __forceinline__ int64_t imax64(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int dist_bin(int64_t d) { return d <= 0 ? 0 : 64 - __clzll(d); }

// The K (or V) row of position p for this group (see kv_source); sink is src.sink_k or sink_v.
// A position below S is read from its sink row even while the ring still holds it (same bits).
__device__ __forceinline__ const __half *key_row(const kv_source &src, const __half *base, const __half *sink,
                                                 const __half *batch, int64_t kvb_ld, int hd, int64_t p, int64_t pos0) {
    if (src.window == 0) return base + p * hd;
    if (p >= pos0) return batch + (p - pos0) * kvb_ld + int64_t(src.kv_head) * hd;
    if (p < src.sinks) return sink + p * hd;
    return base + (p % src.window) * hd;
}

// Whether query position qi (whose window starts at row_lo) attends to key position p.
__device__ __forceinline__ bool key_visible(const kv_source &src, int64_t p, int64_t qi, int64_t row_lo) {
    return p <= qi && (p >= row_lo || p < src.sinks);
}

// The key range of a prefill block of 64 rows starting at row0 (rows: token-major (token, head)
// pairs, g heads a token) and of one of its 16-row warps.
struct block_keys {
    int64_t hi;       // the block's last query position: no key past it is read
    int64_t lo;       // where the first row's window starts (0 without a window)
    int64_t sink_end; // sink positions before every row's window: a first stretch of tiles from
                      // 0, then the loop jumps to lo (the positions between serve no row here)
    int wr0;          // the warp's first row, and its key range (warp-uniform, to skip tiles it
    bool warp_live;   // has nothing in)
    int64_t w_hi, w_lo;
    __device__ block_keys(const kv_source &src, int64_t pos0, int g, int n_rows, int row0, int warp) {
        const int last_row = min(n_rows, row0 + att_rows) - 1;
        hi = pos0 + last_row / g;
        lo = src.window ? imax64(0, pos0 + row0 / g - src.window + 1) : 0;
        sink_end = imin64(src.sinks, lo);
        wr0 = row0 + warp * 16;
        warp_live = wr0 < n_rows;
        w_hi = pos0 + (min(n_rows, wr0 + 16) - 1) / g;
        w_lo = src.window ? imax64(0, pos0 + wr0 / g - src.window + 1) : 0;
    }
};

template <bool TC> __global__ void __launch_bounds__(att_threads) attn_prefill_kernel(attn_args a) {
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char smem[];
    const int hd = a.hd, g = a.g;
    const bool collect = a.recency_window > 0;
    const att_layout L(TC, hd, a.n_bins, collect);
    const kv_source src = a.src[blockIdx.y];
    const int64_t pos0 = *a.pos0;
    const int n_rows = a.n_tokens * g, row0 = blockIdx.x * att_rows;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    float *S = reinterpret_cast<float *>(smem + L.s);
    float *O = reinterpret_cast<float *>(smem + L.o);
    float *rm = reinterpret_cast<float *>(smem + L.m), *rl = reinterpret_cast<float *>(smem + L.l);
    float *rc = reinterpret_cast<float *>(smem + L.c), *st = reinterpret_cast<float *>(smem + L.st);

    // Q rows (zeros past the end), output accumulators, running max/sum, statistics.
    for (int idx = tid; idx < att_rows * hd; idx += att_threads) {
        const int r = idx / hd, d = idx % hd, R = row0 + r;
        float v = 0;
        if (R < n_rows) v = a.q[int64_t(R / g) * a.q_ld + int64_t(src.kv_head * g + R % g) * hd + d];
        if constexpr (TC) reinterpret_cast<__half *>(smem + L.q)[r * L.ldq + d] = __float2half_rn(v);
        else reinterpret_cast<float *>(smem + L.q)[r * L.ldq + d] = v;
        O[r * L.ldo + d] = 0.0f;
    }
    for (int r = tid; r < att_rows; r += att_threads) rm[r] = -INFINITY, rl[r] = 0.0f;
    for (int idx = tid; idx < att_rows * L.stat_w; idx += att_threads) st[idx] = 0.0f;

    const block_keys K(src, pos0, g, n_rows, row0, warp);
    const int64_t hi = K.hi, lo = K.lo, sink_end = K.sink_end, w_hi = K.w_hi, w_lo = K.w_lo;
    const bool warp_live = K.warp_live;
    // The lane pair of one row in the softmax step.
    const int rr = warp * 16 + (lane >> 1), half_k = (lane & 1) * 32;
    const int R = row0 + rr;
    const bool row_live = R < n_rows;
    const int64_t qi = pos0 + R / g; // the row's absolute position
    const int64_t row_lo = src.window ? imax64(0, qi - src.window + 1) : 0;
    const bool row_stats = collect && row_live && qi >= a.recency_window;
    __syncthreads();

    for (int64_t kt0 = sink_end > 0 ? 0 : lo; kt0 <= hi;
         kt0 = (kt0 + att_tk < lo && kt0 + att_tk >= sink_end) ? lo : kt0 + att_tk) {
        __syncthreads(); // the previous tile is no longer read
        if constexpr (TC) {
            const int cpr = hd / 8; // 16-byte chunks per row
            for (int idx = tid; idx < att_tk * cpr; idx += att_threads) {
                const int j = idx / cpr, c = idx % cpr;
                const int64_t p = kt0 + j;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
                if (p <= hi) {
                    kv = reinterpret_cast<const uint4 *>(key_row(src, src.k, src.sink_k, a.kb, a.kvb_ld, hd, p, pos0))[c];
                    vv = reinterpret_cast<const uint4 *>(key_row(src, src.v, src.sink_v, a.vb, a.kvb_ld, hd, p, pos0))[c];
                }
                reinterpret_cast<uint4 *>(smem + L.k + size_t(j) * L.ldk * 2)[c] = kv;
                reinterpret_cast<uint4 *>(smem + L.v + size_t(j) * L.ldk * 2)[c] = vv;
            }
        } else {
            float *Kf = reinterpret_cast<float *>(smem + L.k), *Vf = reinterpret_cast<float *>(smem + L.v);
            for (int idx = tid; idx < att_tk * hd; idx += att_threads) {
                const int j = idx / hd, d = idx % hd;
                const int64_t p = kt0 + j;
                float kv = 0, vv = 0;
                if (p <= hi) {
                    kv = __half2float(key_row(src, src.k, src.sink_k, a.kb, a.kvb_ld, hd, p, pos0)[d]);
                    vv = __half2float(key_row(src, src.v, src.sink_v, a.vb, a.kvb_ld, hd, p, pos0)[d]);
                }
                Kf[j * L.ldk + d] = kv;
                Vf[j * L.ldk + d] = vv;
            }
        }
        __syncthreads();
        if (!warp_live || kt0 > w_hi || (kt0 + att_tk - 1 < w_lo && kt0 >= src.sinks)) continue;

        // S = Q·Kᵀ for this warp's 16 rows.
        if constexpr (TC) {
            const __half *Qh = reinterpret_cast<const __half *>(smem + L.q) + warp * 16 * L.ldq;
            const __half *Kh = reinterpret_cast<const __half *>(smem + L.k);
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[att_tk / 16];
#pragma unroll
            for (int f = 0; f < att_tk / 16; ++f) wmma::fill_fragment(acc[f], 0.0f);
            for (int k0 = 0; k0 < hd; k0 += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> qa;
                wmma::load_matrix_sync(qa, Qh + k0, L.ldq);
#pragma unroll
                for (int f = 0; f < att_tk / 16; ++f) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> kf;
                    wmma::load_matrix_sync(kf, Kh + f * 16 * L.ldk + k0, L.ldk);
                    wmma::mma_sync(acc[f], qa, kf, acc[f]);
                }
            }
#pragma unroll
            for (int f = 0; f < att_tk / 16; ++f)
                wmma::store_matrix_sync(S + warp * 16 * L.lds + f * 16, acc[f], L.lds, wmma::mem_row_major);
        } else {
            const float *Qf = reinterpret_cast<const float *>(smem + L.q) + rr * L.ldq;
            const float *Kf = reinterpret_cast<const float *>(smem + L.k);
            for (int j = half_k; j < half_k + 32; ++j) {
                float s = 0;
                for (int d = 0; d < hd; ++d) s += Qf[d] * Kf[j * L.ldk + d];
                S[rr * L.lds + j] = s;
            }
        }
        __syncwarp();

        // Online softmax: two lanes per row, 32 keys each.
        float *Srow = S + rr * L.lds;
        float mloc = -INFINITY;
        for (int j = half_k; j < half_k + 32; ++j) {
            const int64_t p = kt0 + j;
            if (row_live && key_visible(src, p, qi, row_lo)) mloc = fmaxf(mloc, Srow[j] * a.scale);
        }
        mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, 1));
        const float m_old = rm[rr], m_new = fmaxf(m_old, mloc);
        const float corr = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
        __syncwarp();
        float *strow = st + rr * L.stat_w;
        if ((lane & 1) == 0) {
            rm[rr] = m_new;
            rc[rr] = corr;
            if (row_stats && corr != 1.0f)
                for (int s2 = 0; s2 < L.stat_w; ++s2) strow[s2] *= corr;
        }
        __syncwarp();
        float sum = 0, rec = 0, run = 0;
        int run_bin = -1;
        for (int j = half_k; j < half_k + 32; ++j) {
            const int64_t p = kt0 + j;
            float e = 0;
            if (row_live && key_visible(src, p, qi, row_lo) && m_new != -INFINITY) e = __expf(Srow[j] * a.scale - m_new);
            sum += e;
            if constexpr (TC) reinterpret_cast<__half *>(smem + L.p)[rr * L.ldp + j] = __float2half_rn(e);
            else Srow[j] = e;
            if (row_stats && e != 0.0f) {
                // Keys ascend, so distances descend and a lane's bins form runs: one shared
                // atomic per run, not per key.
                const int64_t dist = qi - p;
                if (dist < a.recency_window) rec += e;
                if (p == 0) atomicAdd(&strow[1], e);
                const int b = dist_bin(dist);
                if (b != run_bin) {
                    if (run_bin >= 0 && run_bin < a.n_bins) atomicAdd(&strow[2 + run_bin], run);
                    run_bin = b, run = 0;
                }
                run += e;
            }
        }
        if (row_stats) {
            if (run_bin >= 0 && run_bin < a.n_bins) atomicAdd(&strow[2 + run_bin], run);
            if (rec != 0.0f) atomicAdd(&strow[0], rec);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        if ((lane & 1) == 0) rl[rr] = rl[rr] * corr + sum;
        __syncwarp();

        // O = diag(corr)·O + P·V for this warp's rows.
        if constexpr (TC) {
            float *Ow = O + warp * 16 * L.ldo;
            for (int e = lane; e < 16 * hd; e += 32) Ow[(e / hd) * L.ldo + e % hd] *= rc[warp * 16 + e / hd];
            __syncwarp();
            const __half *Ph = reinterpret_cast<const __half *>(smem + L.p) + warp * 16 * L.ldp;
            const __half *Vh = reinterpret_cast<const __half *>(smem + L.v);
            for (int d0 = 0; d0 < hd; d0 += 16) {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc;
                wmma::load_matrix_sync(oacc, Ow + d0, L.ldo, wmma::mem_row_major);
#pragma unroll
                for (int k0 = 0; k0 < att_tk; k0 += 16) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> pa;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> vf;
                    wmma::load_matrix_sync(pa, Ph + k0, L.ldp);
                    wmma::load_matrix_sync(vf, Vh + k0 * L.ldk + d0, L.ldk);
                    wmma::mma_sync(oacc, pa, vf, oacc);
                }
                wmma::store_matrix_sync(Ow + d0, oacc, L.ldo, wmma::mem_row_major);
            }
        } else {
            const float *Vf = reinterpret_cast<const float *>(smem + L.v);
            for (int e = lane; e < 16 * hd; e += 32) {
                const int r = warp * 16 + e / hd, d = e % hd;
                const float *Pr = S + r * L.lds;
                float acc = O[r * L.ldo + d] * rc[r];
                for (int j = 0; j < att_tk; ++j) acc += Pr[j] * Vf[j * L.ldk + d];
                O[r * L.ldo + d] = acc;
            }
        }
        __syncwarp();
    }
    __syncwarp();

    // Normalise and write this warp's rows; add the statistics (per query head, in double).
    for (int e = lane; e < 16 * hd; e += 32) {
        const int r = warp * 16 + e / hd, d = e % hd, Rg = row0 + r;
        if (Rg >= n_rows) continue;
        a.out[int64_t(Rg / g) * a.out_ld + int64_t(src.kv_head * g + Rg % g) * hd + d] = O[r * L.ldo + d] / rl[r];
    }
    // Per row (a lane each): its log-sum-exp when asked, its statistics when gathering.
    const int r = warp * 16 + lane, Rg = row0 + r;
    if (lane >= 16 || Rg >= n_rows) return;
    const int head = src.kv_head * g + Rg % g;
    if (a.lse) a.lse[int64_t(Rg / g) * a.lse_ld + head] = rm[r] + logf(rl[r]);
    if (collect && pos0 + Rg / g >= a.recency_window)
        for (int s2 = 0; s2 < L.stat_w; ++s2)
            atomicAdd(&a.stats[int64_t(head) * L.stat_w + s2], double(st[r * L.stat_w + s2]) / double(rl[r]));
}

// ---- prefill on mma.sync, FlashAttention-2 style --------------------------------------------------
//
// For head_dim 64 or 128 without statistics. Same blocks and tiles as the kernel above (64 rows
// of one KV group, 64-key tiles), but S, P and O never leave registers: each warp's 16 rows run
// S = Q·Kᵀ as m16n8k16 MMAs (Q fragments loaded once, K fragments by ldmatrix), the online softmax
// on the accumulators (a row's four owner lanes agree by two shuffles), P re-packed from the S
// accumulators straight into A fragments, and O += P·V with V fragments by ldmatrix.trans. The
// WMMA kernel above staged S, P and O through shared memory with a barrier per step: ~23 TFLOP/s
// at 16k keys on an H200.

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_addr(p)));
}
// d += a·b: A 16×16 (row), B 16×8 (col), F16 in, F32 accumulate.
__device__ __forceinline__ void mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 16 bytes global -> shared without a register round trip; src_bytes 0 writes zeros.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::); }

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&h);
}

// Four blocks per SM at head_dim 64 (16 warps): at three, limited by its 133 registers, ncu saw
// the warps stall mostly on their own instruction latencies (H200, 2026-11-28).
template <int HD> __global__ void __launch_bounds__(att_threads, HD == 64 ? 4 : 1) attn_prefill_mma_kernel(attn_args a) {
    constexpr int LD = HD + 8; // halves per smem row: 16-byte rows that ldmatrix reads without bank conflicts
    constexpr int NT = att_tk / 8, DT = HD / 8; // S n-tiles per key tile, O n-tiles
    extern __shared__ __align__(128) unsigned char smem[];
    // Q, then two K/V tile buffers: the next tile's loads (cp.async) fly while this one is used.
    __half *Qs = reinterpret_cast<__half *>(smem), *Kbuf = Qs + att_rows * LD, *Vbuf = Kbuf + 2 * att_tk * LD;
    const int g = a.g;
    // Grid (group, row block), row blocks last-first: under the causal mask a block's work grows
    // with its position, and the blocks are scheduled in launch order, so the longest start
    // first and the short ones fill the last wave (it was a third of the kernel's time).
    const kv_source src = a.src[blockIdx.x];
    const int64_t pos0 = *a.pos0;
    const int n_rows = a.n_tokens * g, row0 = int(gridDim.y - 1 - blockIdx.y) * att_rows;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    for (int idx = tid; idx < att_rows * (HD / 2); idx += att_threads) {
        const int r = idx / (HD / 2), d = 2 * (idx % (HD / 2)), R = row0 + r;
        float2 v = make_float2(0.0f, 0.0f);
        if (R < n_rows) v = *reinterpret_cast<const float2 *>(a.q + int64_t(R / g) * a.q_ld + int64_t(src.kv_head * g + R % g) * HD + d);
        *reinterpret_cast<__half2 *>(Qs + r * LD + d) = __floats2half2_rn(v.x, v.y);
    }

    const block_keys K(src, pos0, g, n_rows, row0, warp);
    const int64_t hi = K.hi, lo = K.lo, sink_end = K.sink_end, w_hi = K.w_hi, w_lo = K.w_lo;
    const int wr0 = K.wr0;
    const bool warp_live = K.warp_live;
    // Tiles whose every key every row of the warp sees skip the per-key mask: keys up to the
    // first row's position, from the last row's window start on.
    const bool warp_full = wr0 + 16 <= n_rows;
    const int64_t w_qmin = pos0 + wr0 / g;
    const int64_t w_lo_max = src.window ? imax64(0, pos0 + (wr0 + 15) / g - src.window + 1) : 0;
    // This lane's two rows (C-fragment rows lane/4 and lane/4 + 8 of the warp's 16).
    int64_t qi[2], row_lo[2];
    bool rlive[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int R = wr0 + (lane >> 2) + 8 * h;
        rlive[h] = R < n_rows;
        qi[h] = pos0 + R / g;
        row_lo[h] = src.window ? imax64(0, qi[h] - src.window + 1) : 0;
    }
    __syncthreads();
    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int k = 0; k < HD / 16; ++k)
        ldsm_x4(qf[k][0], qf[k][1], qf[k][2], qf[k][3], Qs + (warp * 16 + (lane & 15)) * LD + k * 16 + (lane >> 4) * 8);

    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    auto next_tile = [&](int64_t kt) { return (kt + att_tk < lo && kt + att_tk >= sink_end) ? lo : kt + att_tk; };
    auto load_tile = [&](int64_t kt, int buf) {
        __half *Kt = Kbuf + buf * att_tk * LD, *Vt = Vbuf + buf * att_tk * LD;
        for (int idx = tid; idx < att_tk * (HD / 8); idx += att_threads) {
            const int j = idx / (HD / 8), c = idx % (HD / 8);
            const int64_t p = kt + j;
            const bool in = p <= hi; // keys past hi serve no row here: zeros
            const __half *kr = in ? key_row(src, src.k, src.sink_k, a.kb, a.kvb_ld, HD, p, pos0) : src.k;
            const __half *vr = in ? key_row(src, src.v, src.sink_v, a.vb, a.kvb_ld, HD, p, pos0) : src.v;
            cp_async16(Kt + j * LD + 8 * c, kr + 8 * c, in ? 16 : 0);
            cp_async16(Vt + j * LD + 8 * c, vr + 8 * c, in ? 16 : 0);
        }
        cp_async_commit();
    };
    int64_t kt0 = sink_end > 0 ? 0 : lo;
    if (kt0 <= hi) load_tile(kt0, 0);
    for (int buf = 0; kt0 <= hi; kt0 = next_tile(kt0), buf ^= 1) {
        const int64_t kt_next = next_tile(kt0);
        if (kt_next <= hi) load_tile(kt_next, buf ^ 1);
        else cp_async_commit(); // an empty group keeps "all but the newest" meaning this tile
        cp_async_wait_one();
        __syncthreads();
        const __half *Ks = Kbuf + buf * att_tk * LD, *Vs = Vbuf + buf * att_tk * LD;
        const bool skip = !warp_live || kt0 > w_hi || (kt0 + att_tk - 1 < w_lo && kt0 >= src.sinks);
        if (!skip) {
        // S = Q·Kᵀ: 16 rows × 64 keys.
        float sc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
            for (int k = 0; k < HD / 16; k += 2) {
                // Keys 8j..8j+7; dims 16k..16k+31 as four 8×8 matrices: b-fragments of k-steps k, k+1.
                uint32_t b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, Ks + (8 * j + (lane & 7)) * LD + 16 * k + (lane >> 3) * 8);
                mma16816(sc[j], qf[k], b0, b1);
                mma16816(sc[j], qf[k + 1], b2, b3);
            }
        }
        // Mask, online softmax (rows lane/4 and lane/4 + 8; the quad's four lanes share a row).
        float mt[2] = {-INFINITY, -INFINITY};
        if (warp_full && kt0 + att_tk - 1 <= w_qmin && kt0 >= w_lo_max) {
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    sc[j][e] *= a.scale;
                    mt[e >> 1] = fmaxf(mt[e >> 1], sc[j][e]);
                }
        } else {
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int h = e >> 1;
                    const int64_t p = kt0 + 8 * j + 2 * (lane & 3) + (e & 1);
                    const bool vis = rlive[h] && key_visible(src, p, qi[h], row_lo[h]);
                    sc[j][e] = vis ? sc[j][e] * a.scale : -INFINITY;
                    mt[h] = fmaxf(mt[h], sc[j][e]);
                }
        }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mt[h] = fmaxf(mt[h], __shfl_xor_sync(0xffffffffu, mt[h], 1));
            mt[h] = fmaxf(mt[h], __shfl_xor_sync(0xffffffffu, mt[h], 2));
            const float m_new = fmaxf(m[h], mt[h]);
            corr[h] = m_new == -INFINITY ? 1.0f : __expf(m[h] - m_new);
            m[h] = m_new;
        }
        float ls[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = e >> 1;
                const float pe = sc[j][e] == -INFINITY ? 0.0f : __expf(sc[j][e] - m[h]);
                sc[j][e] = pe;
                ls[h] += pe;
            }
#pragma unroll
        for (int h = 0; h < 2; ++h) l[h] = l[h] * corr[h] + ls[h]; // lane-partial sums; the quad adds them at the end
#pragma unroll
        for (int j = 0; j < DT; ++j) o[j][0] *= corr[0], o[j][1] *= corr[0], o[j][2] *= corr[1], o[j][3] *= corr[1];

        // O += P·V: P's accumulators of key tiles 2k, 2k+1 are the A fragment of k-step k.
#pragma unroll
        for (int k = 0; k < att_tk / 16; ++k) {
            const uint32_t pa[4] = {pack_half2(sc[2 * k][0], sc[2 * k][1]), pack_half2(sc[2 * k][2], sc[2 * k][3]),
                                    pack_half2(sc[2 * k + 1][0], sc[2 * k + 1][1]),
                                    pack_half2(sc[2 * k + 1][2], sc[2 * k + 1][3])};
#pragma unroll
            for (int j = 0; j < DT; j += 2) {
                // Keys 16k..16k+15 × dims 8j..8j+15, transposed: b-fragments of O tiles j, j+1.
                uint32_t b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, Vs + (16 * k + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * j + (lane >> 4) * 8);
                mma16816(o[j], pa, b0, b1);
                mma16816(o[j + 1], pa, b2, b3);
            }
        }
        } // !skip
        __syncthreads(); // this buffer is refilled two tiles from now: everyone is done with it
    }

    // The quad's partial sums, then normalise and write this lane's elements.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
    if (!warp_live) return;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int R = wr0 + (lane >> 2) + 8 * h;
        if (R >= n_rows) continue;
        float *out = a.out + int64_t(R / g) * a.out_ld + int64_t(src.kv_head * g + R % g) * HD;
        const float inv = 1.0f / l[h];
#pragma unroll
        for (int j = 0; j < DT; ++j)
            *reinterpret_cast<float2 *>(out + 8 * j + 2 * (lane & 3)) = make_float2(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
        if (a.lse && (lane & 3) == 0) a.lse[int64_t(R / g) * a.lse_ld + src.kv_head * g + R % g] = m[h] + logf(l[h]);
    }
}

// ---- decode -------------------------------------------------------------------------------------

constexpr int dec_tk = 64, dec_threads = 128, dec_max_out = 8; // g·hd <= 1024 outputs per block

// Block (split, group): keys [b, e) of the group's range; writes [g][hd + 2] = unnormalised
// output, running max, running sum.
__global__ void __launch_bounds__(dec_threads) attn_decode_kernel(attn_args a, int n_splits, float *partials) {
    extern __shared__ __align__(16) unsigned char smem[];
    pdl_wait();
    pdl_trigger();
    const int hd = a.hd, g = a.g, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int ldk = hd + 2; // halves: an odd word stride, so lanes reading different rows never conflict
    const kv_source src = a.src[blockIdx.y];
    const int64_t pos = *a.pos0;
    const int64_t lo = src.window ? imax64(0, pos - src.window + 1) : 0;
    // The keys as one virtual range: the sink positions [0, n_sink) before the window, then
    // [lo, pos]; virtual index v is position v below n_sink, lo + v - n_sink from there.
    const int64_t n_sink = imin64(src.sinks, lo);
    const int64_t n_keys = n_sink + pos - lo + 1;
    const int64_t per = ((n_keys + n_splits - 1) / n_splits + dec_tk - 1) / dec_tk * dec_tk;
    const int64_t b = per * blockIdx.x, e = imin64(n_keys, b + per);

    float *qs = reinterpret_cast<float *>(smem);                 // [g][hd]
    float *sc = qs + g * hd;                                      // [g][dec_tk]
    float *rm = sc + g * dec_tk, *rl = rm + g, *rc = rl + g;      // [g] each
    __half *ks = reinterpret_cast<__half *>(rc + g);              // [dec_tk][ldk]
    __half *vs = ks + dec_tk * ldk;

    for (int i = tid; i < g * hd; i += dec_threads) qs[i] = a.q[int64_t(src.kv_head) * g * hd + i];
    for (int h = tid; h < g; h += dec_threads) rm[h] = -INFINITY, rl[h] = 0.0f;
    float acc[dec_max_out];
#pragma unroll
    for (int k = 0; k < dec_max_out; ++k) acc[k] = 0.0f;

    for (int64_t kt0 = b; kt0 < e; kt0 += dec_tk) {
        const int nk = int(imin64(dec_tk, e - kt0));
        __syncthreads();
        const int wpr = hd / 2; // 32-bit words per row
        for (int idx = tid; idx < nk * wpr; idx += dec_threads) {
            const int j = idx / wpr, w = idx % wpr;
            const int64_t v = kt0 + j, p = v < n_sink ? v : lo + v - n_sink;
            const bool from_sink = src.window && p < src.sinks;
            const int64_t row = src.window && !from_sink ? p % src.window : p;
            const __half *kr = (from_sink ? src.sink_k : src.k) + row * hd, *vr = (from_sink ? src.sink_v : src.v) + row * hd;
            reinterpret_cast<uint32_t *>(ks + j * ldk)[w] = reinterpret_cast<const uint32_t *>(kr)[w];
            reinterpret_cast<uint32_t *>(vs + j * ldk)[w] = reinterpret_cast<const uint32_t *>(vr)[w];
        }
        __syncthreads();
        for (int idx = tid; idx < g * dec_tk; idx += dec_threads) {
            const int h = idx / dec_tk, j = idx % dec_tk;
            float s = -INFINITY;
            if (j < nk) {
                const __half2 *kr = reinterpret_cast<const __half2 *>(ks + j * ldk);
                const float *qh = qs + h * hd;
                s = 0;
                for (int w = 0; w < wpr; ++w) {
                    const float2 kf = __half22float2(kr[w]);
                    s += qh[2 * w] * kf.x + qh[2 * w + 1] * kf.y;
                }
                s *= a.scale;
            }
            sc[h * dec_tk + j] = s;
        }
        __syncthreads();
        for (int h = warp; h < g; h += dec_threads / 32) {
            float *sh = sc + h * dec_tk;
            float mloc = fmaxf(sh[lane], sh[lane + 32]);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, o));
            const float m_new = fmaxf(rm[h], mloc); // finite: the tile has at least one key
            const float p0 = __expf(sh[lane] - m_new), p1 = __expf(sh[lane + 32] - m_new);
            sh[lane] = p0, sh[lane + 32] = p1;
            float sum = p0 + p1;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            if (lane == 0) {
                const float corr = __expf(rm[h] - m_new);
                rc[h] = corr;
                rl[h] = rl[h] * corr + sum;
                rm[h] = m_new;
            }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < dec_max_out; ++k) {
            const int o = tid + k * dec_threads;
            if (o >= g * hd) break;
            const int h = o / hd, d = o % hd;
            const float *ph = sc + h * dec_tk;
            float s = acc[k] * rc[h];
            for (int j = 0; j < nk; ++j) s += ph[j] * __half2float(vs[j * ldk + d]);
            acc[k] = s;
        }
    }
    __syncthreads();
    float *part = partials + (int64_t(blockIdx.y) * n_splits + blockIdx.x) * g * (hd + 2);
#pragma unroll
    for (int k = 0; k < dec_max_out; ++k) {
        const int o = tid + k * dec_threads;
        if (o >= g * hd) break;
        part[(o / hd) * (hd + 2) + o % hd] = acc[k];
    }
    for (int h = tid; h < g; h += dec_threads) {
        part[h * (hd + 2) + hd] = rm[h];
        part[h * (hd + 2) + hd + 1] = rl[h];
    }
}

// The fast decode kernel for head_dim 64 or 128 and g <= 8 (every Llama/Qwen-style model of
// interest). Block (split, group), four warps; each warp takes 32-key chunks of the split in
// turn, lane j one key of the chunk: it reads its K row straight from global memory (16-byte
// loads, no shared-memory staging or block barriers), scores it against the group's g query
// heads, and the warp updates its running max / sum with shuffles. For P·V each lane owns hd/32
// output dims of every head and reads the chunk's V rows coalesced (64 or 128 bytes per row),
// the probabilities broadcast by shuffle. The four warps' states merge in shared memory into the
// same [g][hd + 2] partial the merge kernel reads. (The tiled kernel above reached ~20 µs per
// layer at 2k keys on an H200, for 2-4 MB of cache: latency of its barriers, not bandwidth.)
constexpr int fdec_warps = 4, fdec_max_g = 8;

template <int HD> __global__ void __launch_bounds__(fdec_warps * 32) attn_decode_warp_kernel(attn_args a, int n_splits, float *partials) {
    constexpr int DPL = HD / 32; // output dims per lane, per head
    __shared__ float qs[fdec_max_g][HD];
    __shared__ float wm[fdec_warps][fdec_max_g], wl[fdec_warps][fdec_max_g];
    __shared__ float wacc[fdec_warps][fdec_max_g][HD];
    pdl_wait();
    pdl_trigger();
    const int g = a.g, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const kv_source src = a.src[blockIdx.y];
    const int64_t pos = *a.pos0;
    const int64_t lo = src.window ? imax64(0, pos - src.window + 1) : 0;
    const int64_t n_sink = imin64(src.sinks, lo); // virtual keys: sinks first, then [lo, pos]
    const int64_t n_keys = n_sink + pos - lo + 1;
    const int64_t per = ((n_keys + n_splits - 1) / n_splits + 31) / 32 * 32;
    const int64_t b = per * blockIdx.x, e = imin64(n_keys, b + per);

    for (int i = tid; i < g * HD; i += fdec_warps * 32) qs[i / HD][i % HD] = a.q[int64_t(src.kv_head) * g * HD + i] * a.scale;
    __syncthreads();

    float m[fdec_max_g], l[fdec_max_g], acc[fdec_max_g][DPL];
#pragma unroll
    for (int h = 0; h < fdec_max_g; ++h) {
        m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
        for (int d = 0; d < DPL; ++d) acc[h][d] = 0.0f;
    }
    auto row_of = [&](const __half *base, const __half *sink, int64_t v) -> const __half * {
        const int64_t p = v < n_sink ? v : lo + v - n_sink;
        if (!src.window) return base + p * HD;
        if (p < src.sinks) return sink + p * HD;
        return base + (p % src.window) * HD;
    };

    for (int64_t c0 = b + 32 * warp; c0 < e; c0 += 32 * fdec_warps) {
        const int64_t v = c0 + lane;
        const bool live = v < e;
        // Scores of this lane's key against every head of the group.
        float sc[fdec_max_g];
#pragma unroll
        for (int h = 0; h < fdec_max_g; ++h) sc[h] = 0.0f;
        if (live) {
            const uint4 *kr = reinterpret_cast<const uint4 *>(row_of(src.k, src.sink_k, v));
#pragma unroll
            for (int c = 0; c < HD / 8; ++c) {
                const uint4 u = kr[c];
                const uint32_t w4[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&w4[k]));
#pragma unroll
                    for (int h = 0; h < fdec_max_g; ++h)
                        if (h < g) sc[h] += qs[h][8 * c + 2 * k] * f.x + qs[h][8 * c + 2 * k + 1] * f.y;
                }
            }
        }
        // Online softmax per head over the chunk.
        float p[fdec_max_g];
#pragma unroll
        for (int h = 0; h < fdec_max_g; ++h) {
            if (h >= g) break;
            float cm = live ? sc[h] : -INFINITY;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, o));
            const float m_new = fmaxf(m[h], cm); // finite: lane 0's key is live
            const float corr = __expf(m[h] - m_new);
            p[h] = live ? __expf(sc[h] - m_new) : 0.0f;
            float ps = p[h];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
            l[h] = l[h] * corr + ps;
            m[h] = m_new;
#pragma unroll
            for (int d = 0; d < DPL; ++d) acc[h][d] *= corr;
        }
        // acc += Σ_j p_j · V_j: lane owns dims 2·lane + 64·i (+1).
        // V rows eight at a time, all eight loads issued before the first is used (one at a
        // time, the 32 rows of a chunk were 32 memory latencies in a row).
        const int n_live = int(imin64(32, e - c0));
        for (int j0 = 0; j0 < n_live; j0 += 8) {
            __half2 vh[8][DPL / 2];
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) {
                if (j0 + jj < n_live) {
                    const __half2 *vr = reinterpret_cast<const __half2 *>(row_of(src.v, src.sink_v, c0 + j0 + jj));
#pragma unroll
                    for (int i = 0; i < DPL / 2; ++i) vh[jj][i] = vr[lane + 32 * i];
                } else {
#pragma unroll
                    for (int i = 0; i < DPL / 2; ++i) vh[jj][i] = __float2half2_rn(0.0f);
                }
            }
#pragma unroll
            for (int jj = 0; jj < 8; ++jj) {
#pragma unroll
                for (int h = 0; h < fdec_max_g; ++h) {
                    if (h >= g) break;
                    const float pj = __shfl_sync(0xffffffffu, p[h], (j0 + jj) & 31); // 0 past n_live
#pragma unroll
                    for (int i = 0; i < DPL / 2; ++i) {
                        const float2 vf = __half22float2(vh[jj][i]);
                        acc[h][2 * i] += pj * vf.x, acc[h][2 * i + 1] += pj * vf.y;
                    }
                }
            }
        }
    }
    // Merge the warps: the block's state is what one warp reading all its keys would hold.
    for (int h = 0; h < g; ++h) {
        if (lane == 0) wm[warp][h] = m[h], wl[warp][h] = l[h];
#pragma unroll
        for (int i = 0; i < DPL / 2; ++i) {
            wacc[warp][h][2 * lane + 64 * i] = acc[h][2 * i];
            wacc[warp][h][2 * lane + 64 * i + 1] = acc[h][2 * i + 1];
        }
    }
    __syncthreads();
    float *part = partials + (int64_t(blockIdx.y) * n_splits + blockIdx.x) * g * (HD + 2);
    for (int o = tid; o < g * HD; o += fdec_warps * 32) {
        const int h = o / HD, d = o % HD;
        float mm = -INFINITY;
        for (int w = 0; w < fdec_warps; ++w) mm = fmaxf(mm, wm[w][h]);
        float num = 0, den = 0;
        for (int w = 0; w < fdec_warps; ++w) {
            if (wm[w][h] == -INFINITY) continue; // a warp with no keys
            const float s = __expf(wm[w][h] - mm);
            num += s * wacc[w][h][d];
            den += s * wl[w][h];
        }
        part[h * (HD + 2) + d] = num;
        if (d == 0) part[h * (HD + 2) + HD] = mm, part[h * (HD + 2) + HD + 1] = den;
    }
}

// Block (group, head): out = Σ_s w_s·acc_s / Σ_s w_s·l_s with w_s = exp(m_s - max_s m_s).
__global__ void attn_merge_kernel(attn_args a, int n_splits, const float *partials) {
    pdl_wait();
    pdl_trigger();
    const int gi = blockIdx.x / a.g, h = blockIdx.x % a.g, hd = a.hd;
    const kv_source src = a.src[gi];
    const float *base = partials + int64_t(gi) * n_splits * a.g * (hd + 2) + h * (hd + 2);
    const int64_t stride = int64_t(a.g) * (hd + 2);
    float m_all = -INFINITY;
    for (int s = 0; s < n_splits; ++s) m_all = fmaxf(m_all, base[s * stride + hd]);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0, den = 0;
        for (int s = 0; s < n_splits; ++s) {
            const float *ps = base + s * stride;
            if (ps[hd] == -INFINITY) continue; // an empty split
            const float w = __expf(ps[hd] - m_all);
            num += w * ps[d];
            den += w * ps[hd + 1];
        }
        a.out[int64_t(src.kv_head * a.g + h) * hd + d] = num / den;
        if (a.lse && d == 0) a.lse[src.kv_head * a.g + h] = m_all + logf(den);
    }
}

} // namespace

void launch_attention_prefill(const attn_args &a, bool force_scalar, cudaStream_t s) {
    if (a.n_tokens == 0 || a.n_src == 0) return;
    if (a.hd > 128) throw error("CUDA attention: head_dim " + std::to_string(a.hd) + " is above the supported 128");
    const bool tc = !force_scalar && a.hd % 16 == 0;
    const dim3 grid(ceil_div(int64_t(a.n_tokens) * a.g, att_rows), unsigned(a.n_src));
    if (tc && a.recency_window == 0 && (a.hd == 64 || a.hd == 128)) {
        const size_t smem = size_t(att_rows + 4 * att_tk) * (a.hd + 8) * sizeof(__half);
        if (grid.x > 65535) throw error("CUDA attention: a batch of " + std::to_string(a.n_tokens) + " tokens is too large for one launch");
        const dim3 grid_mma(unsigned(a.n_src), grid.x); // (group, row block): see the kernel
        static const bool carved = [] { // the shared-memory carve-out that lets four blocks fit
            CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void *>(attn_prefill_mma_kernel<64>),
                                            cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)));
            return true;
        }();
        (void)carved;
        if (a.hd == 64) {
            set_smem(reinterpret_cast<const void *>(attn_prefill_mma_kernel<64>), smem);
            attn_prefill_mma_kernel<64><<<grid_mma, att_threads, smem, s>>>(a);
        } else {
            set_smem(reinterpret_cast<const void *>(attn_prefill_mma_kernel<128>), smem);
            attn_prefill_mma_kernel<128><<<grid_mma, att_threads, smem, s>>>(a);
        }
        CUDA_CHECK_LAUNCH();
        return;
    }
    const att_layout L(tc, a.hd, a.n_bins, a.recency_window > 0);
    if (tc) {
        set_smem(reinterpret_cast<const void *>(attn_prefill_kernel<true>), L.total);
        attn_prefill_kernel<true><<<grid, att_threads, L.total, s>>>(a);
    } else {
        set_smem(reinterpret_cast<const void *>(attn_prefill_kernel<false>), L.total);
        attn_prefill_kernel<false><<<grid, att_threads, L.total, s>>>(a);
    }
    CUDA_CHECK_LAUNCH();
}

size_t decode_partials_floats(int n_src, int g, int hd, int n_splits) {
    return size_t(n_src) * size_t(n_splits) * size_t(g) * size_t(hd + 2);
}

int choose_decode_splits(int n_ctx, int n_src, int sm_count) {
    // About eight blocks per SM (a block loads a tile, then computes on it: other resident blocks
    // keep the memory busy meanwhile), but no split shorter than 128 keys at a full cache.
    const int by_sm = (8 * std::max(sm_count, 1) + std::max(n_src, 1) - 1) / std::max(n_src, 1);
    const int by_len = std::max(1, (n_ctx + 127) / 128);
    return std::max(1, std::min(by_sm, by_len));
}

void launch_attention_decode(const attn_args &a, int n_splits, float *partials, cudaStream_t s) {
    if (a.n_src == 0) return;
    if (a.n_tokens != 1) throw error("CUDA attention decode: one token at a time");
    if (a.g * a.hd > dec_threads * dec_max_out || a.hd % 2 != 0)
        throw error("CUDA attention decode: group_size × head_dim must be at most 1024 and head_dim even");
    const dim3 grid(unsigned(n_splits), unsigned(a.n_src));
    if (a.g <= fdec_max_g && (a.hd == 64 || a.hd == 128)) {
        launch_kernel(a.hd == 64 ? attn_decode_warp_kernel<64> : attn_decode_warp_kernel<128>, grid, dim3(fdec_warps * 32), 0, s,
                      a, n_splits, partials);
    } else {
        const size_t smem = size_t(a.g) * a.hd * 4 + size_t(a.g) * dec_tk * 4 + 3 * size_t(a.g) * 4 +
                            2 * size_t(dec_tk) * (a.hd + 2) * 2;
        set_smem(reinterpret_cast<const void *>(attn_decode_kernel), smem);
        launch_kernel(attn_decode_kernel, grid, dim3(dec_threads), smem, s, a, n_splits, partials);
    }
    CUDA_CHECK_LAUNCH();
    launch_kernel(attn_merge_kernel, dim3(unsigned(a.n_src * a.g)), dim3(a.hd < 128 ? 64 : 128), 0, s, a, n_splits,
                  static_cast<const float *>(partials));
    CUDA_CHECK_LAUNCH();
}

} // namespace recur::cuda_detail
