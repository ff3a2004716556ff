#pragma once
// Attention-transfer distillation of RecurFormer recurrent heads (DESIGN §5 stage 1,
// docs/FORMAT.md "Distillation").
//
// 1. Capture: the ORIGINAL model runs over the calibration text, cut into sequences of seq_len
//    tokens (each a fresh context, as a document would be). For every layer with replaced groups
//    the layer's attention-normed input xn_t is recorded, for every replaced group its raw k_t, v_t
//    and for every replaced query head its raw q_t and its true attention output o_t (before
//    attn_output). "Raw" means what the recurrent head is fed in the engine: the layer's own
//    projection rows (+bias), activations quantised exactly as the forward pass does, no RoPE.
//    The records go to a scratch file that is unlinked as soon as it is created and is read and
//    written in small pieces (pread/pwrite), so the process's own memory holds one context and
//    one chunk per thread, never the whole capture (which lives in the page cache).
// 2. Training: each head independently minimises the mean over tokens of ‖y_t − o_t‖² (by
//    default measured through the layer's output projection, see output_metric) with Adam
//    (warm-up, cosine decay to lr/10; dt_b and a_log at 3× the rate) by truncated
//    backpropagation through time: a step takes `batch` chunks of `chunk` tokens
//    (from different sequences), starts each chunk from the state the head left at the end of
//    that sequence's previous chunk (zero at a sequence's start) and does not backpropagate into
//    it. Heads run in parallel on a thread pool; each head's arithmetic is sequential, so results
//    do not depend on the thread count.
// 3. Evaluation: the loss of every head over all calibration tokens (full sequences from a zero
//    state) before and after training.
//
// Trained parameters per head: dt_w, dt_b, a_log, d and the transforms Mq, Mk, Mv (identity at
// the start): q' = Mq q, k' = Mk k, v' = Mv v feed the recurrence (docs/FORMAT.md).
#include "recur/model.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace recur {

// One head's trainable parameters as a flat float vector (Adam runs over it):
//   [dt_w: n_embd][dt_b][a_log][d: hd][mq_t: hd·hd][mk_t: hd·hd][mv_t: hd·hd]
// and for a gated window + recurrent head (docs/FORMAT.md "Window + recurrent") also
//   [gate_w: n_embd][gate_b][gate_n],
// and with per-channel decay (docs/FORMAT.md "Per-channel decay") last [a_chan: hd].
// The transforms are held transposed (mq_t[i][o] = Mq[o][i]) so that a chunk's q' = q Mqᵀ is one
// row-major product [n][hd]·[hd][hd]; hybrid files store Mq itself.
struct head_layout {
    int32_t n_embd = 0, head_dim = 0;
    bool gated = false;
    bool delta = false; // the delta-rule read-out (same parameters, so the same size)
    bool per_channel = false; // per-channel decay offsets a_chan [head_dim] at the end
    head_layout() = default;
    head_layout(int32_t e, int32_t hd, bool gate = false) : n_embd(e), head_dim(hd), gated(gate) {}
    size_t hh() const { return size_t(head_dim) * size_t(head_dim); }
    size_t dt_w() const { return 0; }
    size_t dt_b() const { return size_t(n_embd); }
    size_t a_log() const { return size_t(n_embd) + 1; }
    size_t d() const { return size_t(n_embd) + 2; }
    size_t mq() const { return d() + size_t(head_dim); }
    size_t mk() const { return mq() + hh(); }
    size_t mv() const { return mk() + hh(); }
    size_t gate_w() const { return mv() + hh(); }
    size_t gate_b() const { return gate_w() + size_t(n_embd); }
    size_t gate_n() const { return gate_b() + 1; }
    size_t a_chan() const { return gated ? gate_n() + 1 : mv() + hh(); }
    size_t size() const { return a_chan() + (per_channel ? size_t(head_dim) : 0); }
};

// Head r of a hybrid layer (its dt_w, dt_b, a_log, d and, when present, q/k/v_proj; identity
// transforms when absent; with L.gated gate_w/gate_b/gate_n, zero when absent) into the flat
// form, and back (the layer's arrays must be sized for R heads; q/k/v_proj are resized to
// R·hd·hd and gate_w/gate_b/gate_n to R·n_embd / R / R when they do not fit).
void head_params_from_layer(const hybrid_layer &H, int32_t r, const head_layout &L, float *theta);
void head_params_to_layer(const head_layout &L, const float *theta, int32_t r, int32_t n_heads, hybrid_layer &H);

// One chunk of captured data for one head; rows contiguous.
struct head_chunk {
    int32_t n_tokens = 0;
    const float *xn = nullptr;                      // [n][n_embd]
    const float *q = nullptr, *k = nullptr, *v = nullptr; // [n][hd] raw projections (before Mq, Mk, Mv)
    const float *o = nullptr;                       // [n][hd] the attention head's true output (target)
    // Gated window + recurrent heads (head_layout::gated) only: the group's output is
    //   y_t = (1 − g_t)·ow_t + g_t·r_t,  g_t = wr_gate(gate_w, gate_b, gate_n, log_n_out_t, xq_t, lse_t)
    // with r_t the recurrent read-out, and o is the true output (not a residual).
    const float *xq = nullptr;  // [n][n_embd] the query rows' normed input (xn is the evicted tokens')
    const float *ow = nullptr;  // [n][hd] the window's softmax output at each query
    const float *lse = nullptr; // [n] its log-sum-exp; a huge value where nothing has left the window (g = 0)
    const float *log_n_out = nullptr; // [n] log of the number of tokens that have left the window (0 where none)
    // Optional error metric G [hd][hd] (symmetric, positive semi-definite): the loss becomes
    // Σ_t (y_t − o_t)ᵀ G (y_t − o_t). nullptr: G = I, the plain squared error.
    const float *metric = nullptr;
    // Optional per-position weights w_t [n] (retrieval drills weight the positions that answer
    // from far back): the loss becomes Σ_t w_t·(y_t − o_t)ᵀ G (y_t − o_t), and its gradient too.
    // nullptr: every w_t = 1 (bit for bit the unweighted loss).
    const float *weight = nullptr;
};

struct chunk_loss {
    double sq_err = 0;    // Σ_t w_t‖y_t − o_t‖² (in the chunk's metric when it has one)
    double sq_target = 0; // Σ_t w_t‖o_t‖² (for a scale-free loss: sq_err / sq_target, 1 = predicting zero)
};

// The head over one chunk starting from `state` ([hd·hd], in: S before the chunk, out: S after),
// and its loss. With grad != nullptr also grad += grad_scale · ∂(Σ_t w_t‖y_t − o_t‖²)/∂θ, with no
// gradient into the incoming state (truncated BPTT). theta, grad: [head_layout::size()].
// Single-threaded, reentrant (a thread-local scratch grows to the largest chunk seen).
chunk_loss head_chunk_loss_grad(const head_layout &L, const float *theta, const head_chunk &c, float *state,
                                float *grad, float grad_scale);

struct distill_params {
    int32_t steps = 0;       // Adam steps (every head takes each step)
    float lr = 0;            // peak learning rate; 0: default_lr
    uint64_t seed = 0;       // order in which sequences' chunks are visited
    int32_t seq_len = 1024;  // tokens per captured sequence (the original model's context in capture)
    int32_t chunk = 128;     // truncated-BPTT length
    int32_t batch = 1;       // chunks per step (from different sequences when > 1)
    // Train in the metric of the layer's output projection: ‖Wo_h (y − o)‖² (normalised so that
    // trace(G) = hd) instead of ‖y − o‖², i.e. errors weighted by what reaches the residual stream.
    // Reported losses are always the plain ‖y − o‖².
    bool output_metric = true;
    int32_t n_threads = 0;   // 0: all cores
    int32_t n_batch = 256;   // prefill batch of the capture
    std::string scratch_dir; // folder of the (unlinked) capture file; empty: $TMPDIR or /tmp
    std::string checkpoint_path; // empty: no checkpoint
    bool resume = false;         // continue from checkpoint_path (it must match this run)
    double checkpoint_seconds = 60; // write the checkpoint at most this often (and on cancel)
    // The last holdout_sequences calibration sequences are not trained on; the held-out losses of
    // distill_head_result are measured on them (on all sequences when 0). convert --kind auto
    // compares kinds there.
    int32_t holdout_sequences = 0;
    // > 0: also measure every head's error if its group were a plain window of this many tokens
    // (no training) on the held-out sequences (distill_head_result::window_heldout_*).
    int32_t compare_window = 0;
    int32_t compare_sinks = 0; // ... with this many attention-sink rows besides the last compare_window
    // Window + recurrent heads: train the gated read-out with a shared normaliser (the head's
    // output replaces the attention mass outside the window) rather than the additive one (the
    // head's output is added to the window's). docs/FORMAT.md "Window + recurrent".
    bool wr_gated = true;
    // Train (and write) delta-rule read-outs (recurrent_head_weights::delta_rule) instead of
    // additive ones; docs/FORMAT.md "Delta rule". The default since session 11: with per-channel
    // decay it halves the recurrent heads' KL on SmolLM2-135M (docs/quality.md).
    bool delta_rule = true;
    // Train (and write) per-channel decay offsets a_chan (recurrent_head_weights::a_chan),
    // starting at 0 (one decay per head); docs/FORMAT.md "Per-channel decay". Default on, as above.
    bool per_channel_decay = true;
    // Copy drills: in every training sequence (not the held-out ones), this many spans of 8..32
    // tokens are written again further on, at least one window + recurrent window (or 64 tokens)
    // after their source, so the original's heads make long-range copies (induction) during
    // capture and the trained heads learn what to do there: natural text has few such events,
    // and passkey retrieval is one. 0: the text as it is. Seeded by `seed`. docs/quality.md.
    int32_t repeat_spans = 0;
    // Retrieval drills: this many extra training sequences of seq_len tokens (placed after the
    // training sequences, before the held-out ones; make_retrieval_drill), each hiding one fact
    // ("Note: the locker code of NAME is DIGITS.") far back in filler cut from the training
    // sequences and asking for it at the end; the positions that predict the answer's digits get
    // loss weight drill_weight (every other position 1), so the few tokens that must retrieve a
    // far token count in the loss. Seeded by `seed`. 0: none. docs/quality.md.
    int32_t drills = 0;
    float drill_weight = 50.0f;
    // Fewest and most tokens from the needle's start to the answer's; min_gap is raised to
    // clear the widest window (+ sinks) trained or compared here, max_gap lowered to what fits.
    int32_t drill_min_gap = 300, drill_max_gap = 1500;

    static constexpr float default_lr = 7e-3f;
};

struct distill_progress {
    // "capture", "train" or "evaluate"; convert_to_hybrid --kind auto adds its checks after
    // training: "compare" (end-to-end KL) and "retrieval" (passkey prompts).
    const char *phase = "";
    int64_t done = 0, total = 0; // tokens (capture, evaluate, compare, retrieval) or steps (train)
    double tokens_per_s = 0;  // captured tokens/s, or trained head-independent tokens/s (step tokens)
    double rel_loss = 0;      // train: mean over heads of Σ‖y−o‖²/Σ‖o‖² over the last block of steps
                              // (in the training metric when output_metric is on)
    double eta_s = 0;         // of this phase
};
// Return false to stop: training writes its checkpoint (when it has a path) and throws
// cancelled_error.
using distill_callback = std::function<bool(const distill_progress &)>;

struct distill_head_result {
    int32_t layer = 0, group = 0, head = 0; // head: query head index in the layer
    int32_t window = 0;                     // W of a window + recurrent head, 0 for a recurrent one
    int32_t sinks = 0;                      // its sink rows S (tokens 0..S-1 stay in the window)
    // Mean over tokens of ‖y_t − o_t‖², all calibration tokens; y_t is the group's whole output
    // (for window + recurrent: the window's softmax output plus the head's read-out).
    float initial_loss = 0, final_loss = 0;
    float initial_rel = 0, final_rel = 0;   // the same divided by the mean of ‖o_t‖²
    // After training, on the held-out sequences (distill_params::holdout_sequences): mean
    // ‖y_t − o_t‖², the same in the output metric (= plain when output_metric is off), mean ‖o_t‖².
    float heldout_loss = 0, heldout_metric_loss = 0, heldout_target = 0;
    // A plain window of distill_params::compare_window tokens on the same tokens (0 when not asked).
    float window_heldout_loss = 0, window_heldout_metric_loss = 0;
};

struct distill_report {
    int32_t steps = 0, resumed_from_step = 0;
    int64_t calib_tokens = 0;   // tokens captured (all sequences)
    int32_t n_sequences = 0;
    int64_t trained_tokens = 0; // steps · tokens per step (each head sees these)
    int64_t heldout_tokens = 0; // tokens of the held-out sequences (all when none are held out)
    double capture_seconds = 0, train_seconds = 0, evaluate_seconds = 0;
    size_t capture_file_bytes = 0; // the scratch file (page cache, not process memory)
    size_t train_state_bytes = 0;  // parameters, Adam moments and carried states of all heads
    std::vector<distill_head_result> heads; // layer, then group, then head order
};

// The sequences distill_heads trains on: seq_len tokens each, cut from the stream in order, each
// starting with BOS when the stream does (sequences under 2 tokens are dropped). The last
// distill_params::holdout_sequences of them are the held-out ones.
std::vector<std::vector<int32_t>> calibration_sequences(const model &m, const std::vector<int32_t> &tokens, int32_t seq_len);

// Trains the recurrent heads of `layers` ([n_layer], as convert initialises them: recurrent_groups
// and R = recurrent_groups·group_size heads of dt_w, dt_b, a_log, d; q/k/v_proj may be empty =
// identity) on the calibration `tokens`, in place; writes the trained q/k/v_proj and final_loss.
// A group whose group_kind ([n_head_kv], optional) is window_recurrent, with its group_window W,
// is trained as the recurrent part of a window + recurrent group: on the stream of tokens leaving
// the window (xn, k, v of t − W with the query of t) against the residual o_t − o_window_t, where
// o_window is the exact softmax over the last W tokens computed from the captured q, k, v with
// RoPE (docs/FORMAT.md "Window + recurrent"). The squared error of that residual is the squared
// error of the group's whole output. With group_sinks S > 0 the window's softmax also covers
// tokens 0..S-1, which never leave it: the stream starts at token S.
// tokens: the calibration stream; when it starts with the vocabulary's BOS, every sequence cut
// from it starts with BOS too. Throws recur::error on bad parameters or a checkpoint that does
// not match; cancelled_error when the callback stops it.
distill_report distill_heads(const model &m, const std::vector<int32_t> &tokens, std::vector<hybrid_layer> &layers,
                             const distill_params &p, const distill_callback &cb = {});

// n_tokens of text sampled from the model itself (temperature 1, no truncation, seeded), as
// sequences of seq_len tokens that each start at BOS (EOS when the vocabulary has no BOS), so
// distill_heads cuts them back into the same sequences. progress(done, total) may cancel.
std::vector<int32_t> sample_calibration(const model &m, int64_t n_tokens, int32_t seq_len, uint64_t seed,
                                        int32_t n_threads, const progress_callback &progress = {});

// Copy drills (distill_params::repeat_spans; convert's copy probe): writes `count` spans of
// 8..32 tokens of seq again at least min_gap tokens after their source (position 0, BOS, stays).
// Deterministic in seed; sequences too short for a span are left as they are. Returns the spans
// in the order written (a later one may overwrite part of an earlier one).
struct repeated_span {
    int64_t src = 0, dst = 0, len = 0;
};
std::vector<repeated_span> repeat_spans(std::vector<int32_t> &seq, int32_t count, int32_t min_gap, uint64_t seed);

// One retrieval drill (distill_params::drills): exactly seq_len tokens,
//   [BOS] filler  needle  filler  question answer  filler
// needle   "\nNote: the locker code of NAME is DIGITS.\n"
// question "\nQuestion: what is the locker code of NAME? Answer:"   answer " DIGITS"
// (a template unlike recur passkey's, so the passkey evaluation is not trained on), the filler a
// cyclic excerpt of `filler` (calibration tokens), the needle's first token min_gap..max_gap tokens
// before the answer's first (as far as seq_len allows). weight[t] = `weight` at the positions
// whose next token is one of the answer's, 1 elsewhere. A pure function of its arguments (seed:
// splitmix64 only). Throws recur::error when seq_len cannot hold the pieces with min_gap.
struct retrieval_drill {
    std::vector<int32_t> tokens;
    std::vector<float> weight;  // [tokens.size()]
    std::string name;
    int code = 0;               // 10000..99999
    int64_t needle_begin = 0, question_begin = 0, answer_begin = 0, answer_len = 0;
};
retrieval_drill make_retrieval_drill(const tokenizer &vocab, const std::vector<int32_t> &filler, int32_t seq_len,
                                     int32_t min_gap, int32_t max_gap, float weight, uint64_t seed);

} // namespace recur
