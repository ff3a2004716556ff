#pragma once
// The RecurFormer recurrent head (DESIGN.md §3): a Mamba-2/SSD-style selective state space that
// replaces one attention query head. fp32, one head per call; heads are independent, so the caller
// parallelises over heads (every function here is single-threaded and reentrant; the forward ones
// also allocate nothing).
//
// Per token t, with q_t, k_t, v_t: [hd] already projected by the caller (no RoPE) and xn_t: [n_embd]
// the layer's attention-normed input:
//
//   dt_t = softplus(dt_w · xn_t + dt_b)                  scalar per head, > 0
//   a_t  = exp(-dt_t * exp(a_log))                       decay in (0, 1]
//   S_t  = a_t * S_{t-1} + dt_t * k_t v_tᵀ               S: [hd][hd], row index = k dim, column = v dim
//   y_t  = scale * S_tᵀ q_t + d ⊙ v_t                    y: [hd], scale = 1/sqrt(hd)
//
// S_{-1} is the state passed in (zeros for a new sequence); every scan leaves S_{n_tokens-1} in it,
// so a sequence split over several calls gives the same result as one call. The state has a fixed
// size, recurrent_state_floats(hd), whatever the sequence length.
//
// scale = 1/sqrt(hd) is fixed (not a parameter): it keeps S_tᵀ q_t on the scale of attention
// scores when the head is initialised from Wq/Wk/Wv ("The Mamba in the Llama": C <- Q, B <- K,
// x <- V), and the distilled d/dt parameters absorb any other factor.
//
// Three implementations of the same recurrence, which agree to float rounding:
//   recurrent_scan_ref      sequential, plain loops: the oracle the others are tested against;
//   recurrent_scan_chunked  prefill: the SSD block form (matmuls inside a chunk, the state passed
//                           between chunks), O(T·hd² + T·chunk·hd);
//   recurrent_step          decode: one token, O(hd²), vectorised.
// Against a double-precision recurrence all three are within ~3e-7 (normalised) for ordinary
// decays; when a_t is within a few float ulps of 1 (dt·exp(a_log) < ~1e-6) the token-by-token
// forms lose up to ~2e-5 (a_t rounds to 1, tiny increments round away) while the chunked form,
// which applies decays once per chunk, stays at ~5e-7.
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace recur {

// One head's parameters; pointers into model memory (not owned), fp32.
struct recurrent_head_weights {
    int32_t head_dim = 0, n_embd = 0;
    const float *dt_w = nullptr; // [n_embd]
    float dt_b = 0, a_log = 0;   // dt bias; log of the decay rate exp(a_log) > 0 (Mamba: A = -exp(A_log))
    const float *d = nullptr;    // [head_dim] skip connection
    // The delta-rule read-out (docs/FORMAT.md "Delta rule"; DeltaNet / Gated DeltaNet) instead of
    // the additive one: the state is written by correcting what it already returns for the key,
    //   k̂_t = k_t / sqrt(‖k_t‖² + eps),  β_t = 1 − exp(−dt_t)  (= sigmoid(dt_w·xn + dt_b)),
    //   u_t = S_{t-1}ᵀ k̂_t,  S_t = a_t (S_{t-1} − β_t k̂_t u_tᵀ) + β_t k̂_t v_tᵀ,
    // so a new value for a key overwrites the old one instead of adding to it (the additive state
    // sums every k vᵀ, in which one far token is a rank-one term among hundreds). Same state size,
    // same parameters. Every function below honours it; the chunked scan runs the sequential form.
    bool delta_rule = false;
    // Per-channel decay (docs/FORMAT.md "Per-channel decay"): row r of the state (a k dimension)
    // decays as a_t[r] = exp(−dt_t · exp(a_log + a_chan[r])) instead of one a_t for the whole
    // state, so some channels can hold a long memory while others follow the last few tokens.
    // [head_dim]; null: one decay per head. Every function below honours it; like the delta rule
    // it runs the sequential form.
    const float *a_chan = nullptr;
};

// eps under the delta rule's key norm: keeps k̂ finite for a zero key.
constexpr float delta_key_eps = 1e-6f;

// dt[t] = softplus(dt_w · xn[t] + dt_b) for t < n_tokens.
// xn: [n_tokens][xn_stride] (the first n_embd of each row are used); dt: [n_tokens].
// softplus is evaluated as max(x,0) + log1p(exp(-|x|)), exact for large |x|.
void recurrent_compute_dt(const recurrent_head_weights &w, int n_tokens, const float *xn, size_t xn_stride,
                          float *dt);

// Sequential reference, token by token exactly as the recurrence above.
// q, k, v: [n_tokens][stride] (the first hd of each row are used); dt: [n_tokens];
// state: [hd*hd] in/out (S_{-1} in, S_{n_tokens-1} out); y: [n_tokens][y_stride].
// n_tokens == 0 leaves state unchanged. Throws recur::error on hd <= 0 or n_tokens < 0.
void recurrent_scan_ref(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                        const float *v, size_t stride, const float *dt, float *state, float *y,
                        size_t y_stride);

// Floats of scratch that recurrent_scan_chunked needs for this head size and chunk length.
size_t recurrent_scan_scratch_floats(int hd, int chunk);

// Chunked prefill; same contract as recurrent_scan_ref. chunk: tokens per chunk (>= 1; it need not
// divide n_tokens). The work is T·(2·hd² + ~chunk·hd) multiply-adds, so on a CPU small chunks win:
// 16-32 is fastest with AVX2 at hd = 64 (64 costs ~15% more); GPUs want larger ones.
// scratch: at least recurrent_scan_scratch_floats(hd, chunk) floats, any alignment, contents
// ignored on entry. y must not overlap q, k, v, dt or state.
//
// Inside a chunk of L tokens, with la_t = -dt_t·exp(a_log) <= 0 and the segment log-decays
// seg(i, j) = Σ_{j<m<=i} la_m (a sum of non-positive terms, so never a difference of large
// cumulative sums, and exp(seg) <= 1 never overflows; long or fast-decaying sequences underflow
// to exact zeros instead of producing inf/NaN):
//   y_i  = scale·exp(seg(i,-1))·S_prevᵀ q_i + Σ_{j<=i} scale·exp(seg(i,j))·dt_j·(q_i·k_j)·v_j + d ⊙ v_i
//   S    = exp(seg(L-1,-1))·S_prev + Σ_j exp(seg(L-1,j))·dt_j·k_j v_jᵀ
// Throws recur::error on hd <= 0, chunk < 1, n_tokens < 0.
void recurrent_scan_chunked(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                            const float *v, size_t stride, const float *dt, float *state, float *y,
                            size_t y_stride, int chunk, float *scratch);

// One decode step (n_tokens = 1): S <- a·S + dt·k vᵀ, y = scale·Sᵀq + d ⊙ v, in one pass over S.
// q, k, v, y: [hd]; state: [hd*hd] in/out. No argument checks (the per-token hot path).
void recurrent_step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt,
                    float *state, float *y);

// ---- gradients (attention-transfer distillation, DESIGN.md §5) ----------------------------------
//
// Reverse mode of the recurrence, with G_t = dL/dS_t (all contributions, [hd][hd]),
// A = exp(a_log), a_t = exp(-dt_t·A):
//   G_t      = a_{t+1}·G_{t+1} + scale·q_t dy_tᵀ          (G_{n-1} starts from dL/dS_{n-1}, see dstate)
//   dq_t     = scale·S_t dy_t
//   dk_t     = dt_t·G_t v_t
//   dv_t     = dt_t·G_tᵀ k_t + d ⊙ dy_t
//   ddt_t    = k_tᵀ G_t v_t - A·a_t·<S_{t-1}, G_t>
//   da_log   = Σ_t -dt_t·A·a_t·<S_{t-1}, G_t>
//   dd       = Σ_t dy_t ⊙ v_t
//   dS_{-1}  = a_0·G_0
// and through dt = softplus(z), z = dt_w·xn + dt_b:  dz_t = ddt_t·sigmoid(z_t),
//   ddt_w = Σ_t dz_t·xn_t,  ddt_b = Σ_t dz_t,  dxn_t = dz_t·dt_w.

// Parameter gradients of one head, accumulated (+=) over calls; zero them before a batch.
struct recurrent_head_grads {
    float *dt_w = nullptr; // [n_embd]; may be null if recurrent_dt_backward is not called
    float dt_b = 0, a_log = 0;
    float *d = nullptr; // [head_dim]; may be null to skip
    float *a_chan = nullptr; // [head_dim]; with weights that have a_chan; may be null to skip
};

// Backward of one scan (any of the three forms: they compute the same function) over one sequence.
// Inputs are the forward's: w, q, k, v, stride, dt, and state0 = S_{-1} as it was before the forward
// (the forward overwrote its state argument, so keep a copy); dy: [n_tokens][dy_stride] = dL/dy.
// dstate: [hd*hd] in: dL/dS_{n-1} from whatever used the final state (nullptr: zero), out: dL/dS_{-1},
//   so a long sequence can be trained in segments from the last to the first (state0 of a segment
//   is the previous segment's final state, its dstate out feeds the previous segment's dstate in).
// Outputs, all accumulated (+=): dq, dk, dv: [n_tokens][g_stride] (each may be null to skip);
//   ddt: [n_tokens] = dL/ddt_t (may be null); grads.a_log, grads.d.
// Cost: two extra forwards of the state (checkpoints every 32 tokens, then each segment is
// recomputed) plus one fused pass over G, S_t, S_{t-1} per token; memory O((n_tokens/32 + 33)·hd²),
// allocated here (the caller is a training loop, not the inference hot path). Single-threaded;
// heads are independent.
// Throws recur::error on hd <= 0 or n_tokens < 0.
void recurrent_scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                             const float *v, size_t stride, const float *dt, const float *state0,
                             const float *dy, size_t dy_stride, float *dq, float *dk, float *dv,
                             size_t g_stride, float *ddt, float *dstate, recurrent_head_grads &grads);

// Backward of recurrent_compute_dt: given ddt [n_tokens], accumulates grads.dt_w (required),
// grads.dt_b, and dxn [n_tokens][dxn_stride] += dL/dxn through dt (dxn may be null).
void recurrent_dt_backward(const recurrent_head_weights &w, int n_tokens, const float *xn, size_t xn_stride,
                           const float *ddt, recurrent_head_grads &grads, float *dxn, size_t dxn_stride);

// The gate of a window + recurrent head with a shared normaliser (docs/FORMAT.md "Window +
// recurrent"): the share of the query's attention mass estimated to lie outside the window,
//   g = Z_out / (Z_window + Z_out) = sigmoid(log Z_out − lse_window),
//   log Z_out ≈ gate_w·xn + gate_b + gate_n·log_n_out
// where log_n_out is the log of the number of tokens that have left the window (a sum over more
// tokens is larger: gate_n = 1 would be "each adds the same mass"). gate_w, xn: [n_embd]. The
// engine and distillation both call this, so they gate identically.
inline float wr_gate(const float *gate_w, float gate_b, float gate_n, float log_n_out, const float *xn, int n_embd,
                     float lse_window) {
    float z = gate_b + gate_n * log_n_out;
    for (int i = 0; i < n_embd; ++i) z += gate_w[i] * xn[i];
    return 1.0f / (1.0f + std::exp(lse_window - z)); // exp overflow gives g = 0, as it should
}

// The state's size in floats: fixed, independent of the sequence length.
inline size_t recurrent_state_floats(int hd) {
    return size_t(hd) * size_t(hd);
}

// Force the scalar kernels for this module (tests compare them with the AVX2 ones). Default off;
// global. recurrent_simd_level() says what is in use: "avx2" or "scalar".
void recurrent_force_scalar(bool on);
const char *recurrent_simd_level();

} // namespace recur
