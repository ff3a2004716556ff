#pragma once
// Kernel launchers of the CUDA backend, over device pointers on a stream. The single-op wrappers
// (ops.cu) and the model (cuda_model.cu) are both built from these.
//
// Positions are read from device memory (`pos0`), never passed by value, so that the one-token
// decode step can be captured once as a CUDA graph and replayed at every position.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "recur/tensor_type.h"

namespace recur::cuda_detail {

// ---- weights: dequantisation, GEMV, GEMM, embedding rows (quant.cu) ---------------------------

// The types the kernels know: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
bool type_supported(tensor_type t);
// Throws recur::error naming the type when unsupported.
void require_type(tensor_type t, const char *what);

// dst[i] = element i of the n_rows × n_in matrix src (rows packed), as F32 or F16.
void launch_dequantize_f32(tensor_type t, const void *src, float *dst, int64_t n_rows, int64_t n_in, cudaStream_t s);
void launch_dequantize_f16(tensor_type t, const void *src, __half *dst, int64_t n_rows, int64_t n_in, cudaStream_t s);

// What the GEMV reads as its input vector: x itself, or rmsnorm(x)·norm_w (the layer norm fused
// into the matmul that follows it: W·(x·s·n) = s·(W·(x·n)), and each warp sums x² over the
// whole row on the way, so no pass over x precedes the weights).
enum class gemv_input { plain, rmsnorm };

struct gemv_args {
    tensor_type type = tensor_type::F32;
    const void *w = nullptr; // [n_rows][n_in] packed rows of `type`
    int64_t n_rows = 0, n_in = 0;
    const float *x = nullptr; // [n_in]
    gemv_input input = gemv_input::plain;
    const float *norm_w = nullptr; // rmsnorm weight [n_in]
    float eps = 1e-5f;
    // Non-null: SwiGLU fused into the gate/up GEMV. w holds the gate rows, w_up the up rows
    // ([n_rows][n_in] each, same type) and y[r] = silu(gate_r·x)·(up_r·x): the down projection
    // then reads its input as it is, and no [2·n_ff] intermediate is written.
    const void *w_up = nullptr;
    float *y = nullptr;            // [n_rows]
    bool accumulate = false;       // y += W x (the residual add fused in)
    int split = 0;                 // warps per row, 1, 2 or 4 (0: chosen by the row count); the sweep in
                                   // cuda_gemv_bandwidth sets it
};
void launch_gemv(const gemv_args &a, cudaStream_t s);

// out[t][0..n_in) = dequantised row ids[t] of w (the embedding lookup).
void launch_get_rows(tensor_type t, const void *w, int64_t n_in, const int32_t *ids, int n, float *out,
                     cudaStream_t s);

// The cuBLAS operand type of a weight type in the prefill GEMM: F32 stays F32, BF16 stays BF16,
// F16 and every quantised type run as F16 (quantised ones dequantised to a scratch first).
tensor_type gemm_operand_type(tensor_type t);
// out[c * ld_out + r] (+)= W[r]·act[c]; W and act of operand type `op` (F32/F16/BF16), act rows
// n_in apart. F32 accumulation.
void gemm_cublas(cublasHandle_t h, cudaStream_t s, tensor_type op, const void *w, const void *act, int64_t n_rows,
                 int64_t n_in, int64_t n_cols, float *out, int64_t ld_out, bool accumulate);

// ---- elementwise, norms, RoPE, caches, sampling (elementwise.cu) ------------------------------

// out[r] = x[r] / rms(x[r]) * w, rows of n floats.
void launch_rmsnorm(const float *x, const float *w, int n_rows, int n, float eps, float *out, cudaStream_t s);
// F32 -> F16 or BF16 (to = F16/BF16); F32 copies.
void launch_cast(const float *x, void *out, tensor_type to, int64_t n, cudaStream_t s);
// out[t][i] = silu(gu[t*ld + i]) * gu[t*ld + up_offset + i], i < n_ff, stored as out_type
// (F32, F16 or BF16).
void launch_swiglu(const float *gu, int64_t ld, int64_t up_offset, int n_rows, int n_ff, void *out, tensor_type out_type,
                   cudaStream_t s);
// x += y.
void launch_add(float *x, const float *y, int64_t n, cudaStream_t s);

// One token row of the fused projection output holds q at column 0, k at nq, v at nq + nkv
// (nq = n_head·hd, nkv = n_kv·hd). This kernel adds the biases, rotates q and k (except the
// heads whose rot flag is 0: recurrent heads see unrotated q/k), and stores k and v as F16
// into the cache rows pos0 + t of the groups with a slot, and into the batch rows kb/vb.
struct rope_store_args {
    float *qkv = nullptr;
    int64_t ld = 0; // floats between tokens
    int n_tokens = 0;
    const int32_t *pos0 = nullptr;
    int n_head = 0, n_kv = 0, hd = 0, rope_dim = 0;
    bool neox = false;
    float freq_scale = 1.0f;
    const double *inv_freq = nullptr;           // [rope_dim/2], freq factors applied
    const uint8_t *rot_q = nullptr, *rot_k = nullptr; // [n_head], [n_kv]; nullptr: rotate all
    const float *bias = nullptr;                // [nq + 2 nkv] or nullptr
    __half *k_cache = nullptr, *v_cache = nullptr; // [slot][n_ctx][hd]; nullptr: no cache store
    const int32_t *slot_of = nullptr;           // [n_kv]: slot or -1
    int64_t n_ctx = 0;
    __half *kb = nullptr, *vb = nullptr;        // [n_tokens][nkv] batch copies, or nullptr
};
void launch_rope_store(const rope_store_args &a, cudaStream_t s);

// A window group's ring: W rows, position p at row p % W; and its S attention-sink rows,
// position p < S at sink row p (kept for good: docs/FORMAT.md "Attention sinks").
struct ring_desc {
    __half *k = nullptr, *v = nullptr;
    int kv_head = 0, window = 0;
    __half *sink_k = nullptr, *sink_v = nullptr; // [sinks][hd] each
    int sinks = 0;
};
// Writes the batch's positions that stay in each ring (the last W of [pos0, pos0 + n)), and
// those below S into the sink rows.
void launch_ring_store(const ring_desc *rings, int n_rings, const __half *kb, const __half *vb, int64_t kvb_ld, int hd,
                       const int32_t *pos0, int n_tokens, cudaStream_t s);

// Index of the largest value (first on ties) into *out; softmax(x / temperature) into out.
void launch_argmax(const float *x, int n, int32_t *out, cudaStream_t s);
void launch_softmax(const float *x, int n, float temperature, float *out, cudaStream_t s);

// ---- attention (attention.cu) ------------------------------------------------------------------

// Where one KV group's keys are: window == 0: rows k + p·hd of the cache for p in [0, i];
// window W: positions [i-W+1, i] and, with S sink rows, also [0, S); those before pos0 at sink
// row p (p < S) or ring row p % W, the batch's own in kb/vb.
struct kv_source {
    const __half *k = nullptr, *v = nullptr;
    int kv_head = 0, window = 0;
    const __half *sink_k = nullptr, *sink_v = nullptr; // [sinks][hd] each
    int sinks = 0;
};

struct attn_args {
    const float *q = nullptr; // head h of token t at q + t·q_ld + h·hd
    int64_t q_ld = 0;
    float *out = nullptr;     // same layout with out_ld
    int64_t out_ld = 0;
    int n_tokens = 0;
    const int32_t *pos0 = nullptr;
    int hd = 0, g = 0;        // head size, query heads per KV group
    float scale = 1.0f;
    const kv_source *src = nullptr; // device array, one per group to process
    int n_src = 0;
    const __half *kb = nullptr, *vb = nullptr; // batch rows for window groups: token t, kv head h at +t·kvb_ld + h·hd
    int64_t kvb_ld = 0;
    int recency_window = 0;   // > 0: gather statistics into stats
    int n_bins = 0;
    double *stats = nullptr;  // [n_head][2 + n_bins] (+=)
    // When set: each query row's log-sum-exp over its keys, log Σ exp(scale·q·k), at
    // lse[t·lse_ld + query head] (the gated window + recurrent read-out weighs the window by it).
    float *lse = nullptr;
    int64_t lse_ld = 0;
};
void launch_attention_prefill(const attn_args &a, bool force_scalar, cudaStream_t s);
// Decode: n_tokens == 1; window groups' rings must already hold the current position.
// partials: decode_partials_floats(...) floats of scratch.
size_t decode_partials_floats(int n_src, int g, int hd, int n_splits);
int choose_decode_splits(int n_ctx, int n_src, int sm_count);
void launch_attention_decode(const attn_args &a, int n_splits, float *partials, cudaStream_t s);

// ---- recurrent heads (recurrent.cu) ------------------------------------------------------------

struct rec_args {
    int R = 0, n = 0, hd = 0, n_embd = 0;    // heads, tokens
    const float *xn = nullptr;               // [n][xn_ld]
    int64_t xn_ld = 0;
    const float *dt_w = nullptr, *dt_b = nullptr, *a_log = nullptr, *d = nullptr; // [R][n_embd], [R], [R], [R][hd]
    const float *q = nullptr, *k = nullptr, *v = nullptr; // [R][n][hd]
    float *dt = nullptr;                     // [R][n]
    float *state = nullptr;                  // [R][hd·hd]
    float *y = nullptr;                      // head r, token t at y + t·y_ld + y_col[r] (y_col nullptr: r·n·hd + t·hd)
    int64_t y_ld = 0;
    const int32_t *y_col = nullptr;
    // Window + recurrent heads (their output is added to the window's, their dt was computed
    // when the token entered the window, and a decode step may have no token leaving):
    bool y_accumulate = false;               // y += instead of y =
    bool dt_given = false;                   // the step kernel reads dt[r] instead of computing it
    const int32_t *active = nullptr;         // step kernel: nothing to do when *active == 0
    // The delta-rule read-out and per-channel decay offsets ([R][hd], nullptr: one decay per head);
    // docs/FORMAT.md "Delta rule", "Per-channel decay". Either one makes the scan and the step run
    // the sequential kernel (the CPU's recurrent_head_sequential.cpp), dt computed beforehand.
    bool delta = false;
    const float *a_chan = nullptr;
};
// dt[r][t] = softplus(dt_w[r]·xn[t] + dt_b[r]).
void launch_recurrent_dt(const rec_args &a, cudaStream_t s);
// Gathers each recurrent head's q (its own head) and k, v (its group's) from the fused projection
// rows, applying the optional per-head transforms M·x ([R][hd][hd] each, nullptr: identity).
struct rec_gather_args {
    const float *qkv = nullptr;
    int64_t ld = 0;
    int n = 0, R = 0, hd = 0, nq = 0, nkv = 0;
    const int32_t *head_of = nullptr, *group_of = nullptr; // [R]
    const float *mq = nullptr, *mk = nullptr, *mv = nullptr;
    float *qg = nullptr, *kg = nullptr, *vg = nullptr;     // [R][n][hd]
};
void launch_recurrent_gather(const rec_gather_args &a, cudaStream_t s);
// The chunked scan (prefill; q, k, v gathered and dt computed first). scratch: at least
// recurrent_scan_scratch_floats(a.R, a.n, a.hd, chunk) floats (per-chunk states, decays, alphas).
size_t recurrent_scan_scratch_floats(int R, int n, int hd, int chunk);
// The model's chunk length: 64, or 32 above head_dim 64 (the chunk kernel's shared memory).
inline int recurrent_scan_chunk(int hd) { return hd <= 64 ? 64 : 32; }
void launch_recurrent_scan(const rec_args &a, int chunk, float *scratch, cudaStream_t s);
// The one-step update (decode; n == 1) in one kernel: dt from xn (stored to a.dt too), q/k/v
// gathered from gather->qkv's single row when gather is given, else read from a.q/k/v.
void launch_recurrent_step(const rec_args &a, const rec_gather_args *gather, cudaStream_t s);

// ---- window + recurrent groups (recurrent.cu) ---------------------------------------------------
//
// A window + recurrent group (docs/FORMAT.md "Window + recurrent") keeps exact attention over its
// last W tokens (a window group, served by the attention kernels) and g recurrent heads fed by
// the tokens leaving the window: token e leaves when query e + W arrives, and the head then reads
// q' = Mq·q(e + W) (unrotated, bias added), k' = Mk·unrope_e(K_e), v' = Mv·V_e, with K_e and V_e as
// the cache holds them (F16: from the ring, or from the batch's F16 rows), and the dt that token
// e got when it entered (kept in a ring of W per head). Tokens below the S sink rows never leave.
// For a batch of n tokens at pos0: e in [max(S, pos0 - W), pos0 + n - W).
struct wr_args {
    int n = 0, g = 0, hd = 0, W = 0, S = 0, grp = 0;
    const int32_t *pos0 = nullptr;
    const float *qkv = nullptr;          // the fused projection rows (q unrotated before rope_store)
    int64_t ld = 0;
    const float *q_bias = nullptr;       // [n_head·hd] or nullptr
    const int32_t *head_of = nullptr;    // [g] the query heads
    float *qraw = nullptr;               // [g][n][hd]
    const __half *ring_k = nullptr, *ring_v = nullptr; // the group's W ring rows (row p % W)
    const __half *kb = nullptr, *vb = nullptr;         // the batch's F16 rows, kv head at grp·hd
    int64_t kvb_ld = 0;
    const double *inv_freq = nullptr;    // RoPE, as rope_store_args
    int rope_dim = 0;
    bool neox = false;
    float freq_scale = 1.0f;
    const float *mq = nullptr, *mk = nullptr, *mv = nullptr; // [g][hd][hd] or nullptr
    float *dt_ring = nullptr;            // [g][W]
    const float *dt_batch = nullptr;     // [g][n] dt of the batch's tokens
    float *qg = nullptr, *kg = nullptr, *vg = nullptr, *dt_out = nullptr; // [g][m][hd], [g][m]: m leaving tokens
    int32_t *m_out = nullptr;            // m (0 or 1 in a decode step)
    // The gated read-out (docs/FORMAT.md "Window + recurrent"; gate_w nullptr: additive): a query
    // that evicted token e blends y = (1 - g)·o_window + g·r with
    // g = sigmoid(gate_w·xn + gate_b + gate_n·log(e - S + 1) - lse_window).
    const float *gate_w = nullptr, *gate_b = nullptr, *gate_n = nullptr; // [g][n_embd], [g], [g]
    const float *xn = nullptr;           // [n][n_embd] the layer's normed input
    int n_embd = 0;
    const float *lse = nullptr;          // [n][lse_ld] the window attention's log-sum-exp per query head
    int64_t lse_ld = 0;
};
// Before rope_store: the group's query rows as the recurrent heads read them (bias, no RoPE).
void launch_wr_save_q(const wr_args &a, cudaStream_t s);
// After rope_store and before the ring store: the leaving tokens' q', k', v', dt.
void launch_wr_gather(const wr_args &a, cudaStream_t s);
// After the gather: the batch's last W dts into the ring.
void launch_wr_dt_ring(const wr_args &a, cudaStream_t s);
// After attention: attn[t][head cols] += y[t][head cols] (or, gated, the blend above) for the
// batch rows whose query evicted a token (t + pos0 - W >= S); y and attn rows ld floats apart.
void launch_wr_add(const wr_args &a, const float *y, float *attn, int64_t ld, cudaStream_t s);

// Dynamic shared memory above the 48 KiB default needs an opt-in per kernel.
void set_smem(const void *kernel, size_t bytes);

} // namespace recur::cuda_detail
