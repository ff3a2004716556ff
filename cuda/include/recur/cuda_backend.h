#pragma once
// The CUDA backend (DESIGN.md §1: `cuda/`, target recur_cuda). Plain C++: no CUDA type appears
// here, so the CLI and the app include it from g++ and link recur_cuda only where it was built.
//
// Three layers:
//   cuda_device_info()   what the machine has; never throws, never crashes without a driver.
//   cuda_ops::*          every op of the forward pass as a host function over host vectors
//                        (device buffers inside): the parity tests run these against the CPU
//                        reference one op at a time.
//   cuda_model           the whole llama/qwen2 forward (plain and hybrid) on one GPU: weights
//                        uploaded once, prefill through cuBLAS, decode as a CUDA graph.
// Errors: every function except cuda_device_info throws recur::error; a CUDA or cuBLAS failure
// says which call failed, where, and why (CUDA_CHECK / CUBLAS_CHECK in cuda/src/common.cuh).
#include "recur/model.h"
#include "recur/recency.h"
#include "recur/tensor_type.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace recur {

// ---- device query ------------------------------------------------------------------------------

struct cuda_device {
    bool available = false;    // a driver and at least one device answered
    int index = 0, count = 0;  // the device described, of `count`
    std::string name = "no device";
    size_t free_bytes = 0, total_bytes = 0;
    int cc_major = 0, cc_minor = 0, sm_count = 0;
    std::string error;         // why available is false ("no CUDA driver", "no CUDA device", ...)
};

// Never throws: without a driver or a device it returns available = false and the reason.
cuda_device cuda_device_info(int device = 0);
// cuda_device_info().available.
bool cuda_available();

// ---- single ops over host vectors (the parity tests' entry points) ----------------------------
//
// Shapes are row-major, rows first: "[n][d]" is n rows of d values. A quantised matrix of
// n_rows × n_in is n_rows rows of row_bytes(t, n_in) bytes each, packed (as in a GGUF file).
namespace cuda_ops {

// n elements of type t (any of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) to F32 / to F16 bits.
std::vector<float> dequantize(tensor_type t, const void *src, int64_t n);
std::vector<uint16_t> dequantize_f16(tensor_type t, const void *src, int64_t n);

// Decode GEMV: y[r] = W[r]·x, W kept in its stored type. x: [n_in]; returns [n_rows].
std::vector<float> gemv(tensor_type t, const void *w, int64_t n_rows, int64_t n_in, const std::vector<float> &x);
// The decode FFN's fused GEMV: y[r] = silu(G[r]·n)·(U[r]·n) with n = rmsnorm(x)·norm_w; G and U
// are [n_rows][n_in] of type t. Returns [n_rows].
std::vector<float> gemv_norm_swiglu(tensor_type t, const void *w_gate, const void *w_up, int64_t n_rows, int64_t n_in,
                                    const std::vector<float> &x, const std::vector<float> &norm_w, float eps);
// Prefill GEMM: out[c][r] = W[r]·x[c] through cuBLAS (F16/BF16 operands, F32 accumulation; F32
// weights in F32; quantised weights dequantised to F16 first). x: [n_cols][n_in]; returns
// [n_cols][n_rows].
std::vector<float> gemm(tensor_type t, const void *w, int64_t n_rows, int64_t n_in, const std::vector<float> &x,
                        int64_t n_cols);

// out[t] = x[t] / rms(x[t]) * weight; x: [n_rows][weight.size()].
std::vector<float> rmsnorm(const std::vector<float> &x, const std::vector<float> &weight, float eps);

struct rope_params {
    int n_head = 0, head_dim = 0, rope_dim = 0;
    rope_style style = rope_style::normal;
    float freq_base = 10000.0f, freq_scale = 1.0f; // positions are divided by freq_scale
    std::vector<float> freq_factors;               // [rope_dim/2] or empty
    std::vector<uint8_t> skip_head;                // [n_head] 1: leave unrotated (recurrent heads); may be empty
};
// Rotates x: [n_tokens][n_head][head_dim] in place, token t at position pos0 + t.
void rope(std::vector<float> &x, int n_tokens, int32_t pos0, const rope_params &p);

// silu(gate) * up, elementwise.
std::vector<float> swiglu(const std::vector<float> &gate, const std::vector<float> &up);
// a + b, elementwise (the residual add).
std::vector<float> add(const std::vector<float> &a, const std::vector<float> &b);

// Attention of n_tokens queries at positions [pos0, pos0 + n_tokens) over an F16 KV cache.
struct attention_problem {
    int n_head = 0, n_head_kv = 0, head_dim = 0, n_ctx = 0;
    int32_t pos0 = 0;
    int n_tokens = 0;
    std::vector<float> q;                   // [n_tokens][n_head][head_dim], already rotated
    std::vector<uint16_t> k_cache, v_cache; // [n_head_kv][n_ctx][head_dim] F16; rows [0, pos0 + n_tokens) used
    // > 0: every group is a window group: exact attention over the last `window` positions, the
    // positions before pos0 read from a ring of `window` rows (row p % window), the batch's own
    // from F16 batch rows; the wrapper builds both from the caches above (tests the ring path).
    int32_t window = 0;
    // With a window: also positions [0, sinks) exactly, from sink rows (attention sinks).
    int32_t sinks = 0;
    int32_t recency_window = 0; // > 0: gather the recency statistics (recency.h) as well
    int n_bins = 0;             // histogram bins when gathering (recency_bin(n_ctx) + 1)
};
struct attention_result {
    std::vector<float> out;    // [n_tokens][n_head][head_dim]
    // When gathering: [n_head][2 + n_bins] sums over the queries at positions >= recency_window of
    // recency, sink, hist[0..n_bins) (divide by the number of such queries for the means).
    std::vector<double> stats;
    std::vector<float> lse;    // [n_tokens][n_head]: log Σ exp(q·k / √head_dim) over each query's keys
};
// The prefill kernel (tiled, online softmax, tensor cores when head_dim % 16 == 0 and <= 128,
// never an n × n buffer). force_scalar: use the CUDA-core path whatever head_dim is.
attention_result attention_prefill(const attention_problem &p, bool force_scalar = false);
// The decode kernel: n_tokens must be 1; the keys are split over n_splits blocks (0: as the model
// would choose) and the partial softmax states merged. lse: when given, each head's log-sum-exp.
std::vector<float> attention_decode(const attention_problem &p, int n_splits = 0, std::vector<float> *lse = nullptr);

// n_heads independent recurrent heads (recurrent_head.h) over n_tokens tokens.
struct recurrent_problem {
    int n_heads = 0, n_tokens = 0, head_dim = 0, n_embd = 0;
    std::vector<float> q, k, v;          // [n_heads][n_tokens][head_dim]
    std::vector<float> xn;               // [n_tokens][n_embd], the heads' shared input for dt
    std::vector<float> dt_w;             // [n_heads][n_embd]
    std::vector<float> dt_b, a_log;      // [n_heads]
    std::vector<float> d;                // [n_heads][head_dim]
    std::vector<float> state;            // [n_heads][head_dim*head_dim], S_{-1}
    bool delta = false;                  // the delta-rule read-out
    std::vector<float> a_chan;           // [n_heads][head_dim] per-channel decay offsets; empty: none
};
struct recurrent_result {
    std::vector<float> y;     // [n_heads][n_tokens][head_dim]
    std::vector<float> state; // [n_heads][head_dim*head_dim], S_{n_tokens-1}
    std::vector<float> dt;    // [n_heads][n_tokens]
};
// chunk > 0: the chunked (prefill) kernel with that chunk length; chunk == 0: the one-step
// (decode) kernel applied token by token.
recurrent_result recurrent(const recurrent_problem &p, int chunk);

// Sampling support: the index of the largest logit (the first on ties); softmax(logits / temp).
int32_t argmax(const std::vector<float> &logits);
std::vector<float> softmax(const std::vector<float> &logits, float temperature);

} // namespace cuda_ops

// ---- the whole model ---------------------------------------------------------------------------

struct cuda_params {
    int32_t n_ctx = 4096;   // tokens the KV cache holds
    int32_t n_batch = 512;  // tokens per prefill step
    int device = 0;
    bool decode_graph = true; // capture the one-token step as a CUDA graph
    // Time every op of the forward pass with CUDA events (where the time goes: `recur_gpu_bench
    // run --profile`). Costs a synchronisation per forward and turns the decode graph off, so
    // it is for finding the slow op, not for the headline numbers.
    bool profile_ops = false;
};

// Device milliseconds per op over every forward since the model was made (profile_ops), split
// into prefill (batches of more than one token) and decode (one token).
struct cuda_op_time {
    std::string op;
    double prefill_ms = 0, decode_ms = 0;
};

// What a cuda_model would allocate on the device, planned before allocating anything.
struct cuda_memory_plan {
    std::string device_name;
    size_t free_bytes = 0, total_bytes = 0; // the device, when planned
    size_t weights_bytes = 0;      // uploaded tensors (quantised types stay quantised)
    size_t kv_bytes = 0;           // F16 KV cache of the attention groups at n_ctx
    size_t recurrent_bytes = 0;    // recurrent states
    size_t window_bytes = 0;       // window groups' rings
    size_t scratch_bytes = 0;      // activations, dequantisation buffer, attention partials
    size_t reserve_bytes = 0;      // kept free for the CUDA context, cuBLAS and the graph
    size_t total_bytes_needed = 0; // the sum of the above
    int32_t max_n_ctx = 0;         // the largest context that fits the free memory (0: none)
    bool fits() const { return total_bytes_needed <= free_bytes; }
    std::string describe() const;  // one line with the numbers, for messages and --json
};

// The GPU counterpart of model + context: one sequence of one model on one device.
class cuda_model {
  public:
    // Plans against the device's free memory; an empty device_name says no device answered.
    static cuda_memory_plan plan(const model &m, const cuda_params &p);
    // Plans, refuses (recur::error with the planner's numbers) when the plan does not fit the
    // free device memory — before allocating anything — then uploads the weights.
    cuda_model(const model &m, const cuda_params &p);
    ~cuda_model();
    cuda_model(const cuda_model &) = delete;
    cuda_model &operator=(const cuda_model &) = delete;

    // As context::eval: appends tokens, logits_out gets [n_vocab] of the last token, or every
    // token's when all_logits. Throws recur::error when the context would overflow.
    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits = false);
    // One decode step for `token`, returning the greedy next token (argmax on the device; the
    // logits stay on the device). The fast path the benchmark measures.
    int32_t decode_greedy(int32_t token);
    // Forgets everything (positions, recurrent states, the op profile).
    void reset();
    // Keeps the first n positions, as context::truncate: the attention caches' later rows are
    // simply overwritten by the next eval. A hybrid (recurrent states, window rings) can only go
    // back to 0 or stay where it is; anything else throws recur::error.
    void truncate(int32_t n);
    int32_t n_past() const;
    int32_t n_ctx() const;
    // The n_past tokens evaluated, in order (what prefix reuse and state files need).
    const std::vector<int32_t> &tokens() const;
    // Engine state files in the CPU context's format (recur/state_file.h, docs/FORMAT.md): a
    // state saved here loads into a CPU context of the same model file and the other way round
    // (both sides keep F16 caches; a state of an F32 CPU cache is refused with a message).
    // load_state reads and checks the whole file before touching the device, so a damaged file,
    // another model's state or one longer than n_ctx throws recur::error and changes nothing.
    void save_state(const std::string &path) const;
    void load_state(const std::string &path);
    const cuda_memory_plan &memory() const;
    std::string device_name() const;
    // Recency statistics, as context::collect_recency / recency().
    void collect_recency(int32_t window);
    const recency_stats &recency() const;
    // Waits for the device and returns the seconds the last eval/decode spent on it (events).
    double last_device_seconds() const;
    // The per-op times gathered with cuda_params::profile_ops, in the forward pass's order.
    std::vector<cuda_op_time> op_times() const;
    // Whether decode kernels overlap their predecessors (programmatic dependent launch: compute
    // capability 9.0 or later, RECUR_CUDA_PDL=1, and a driver that accepted it).
    bool decode_overlaps() const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Micro-benchmarks for the GPU check (tests/gpu/run.sh): device-to-device copy bandwidth in
// bytes per second (read + written) and the cuBLAS F16 GEMM rate (F32 accumulation) in FLOP/s
// for m × n × k.
double cuda_copy_bandwidth(size_t bytes, int repeats);
// The decode GEMV streaming an F16 matrix of rows × n_in (pair: gate and up, SwiGLU fused, 2×
// the bytes), in weight bytes per second: `repeats` launches back to back in a CUDA graph,
// cycling through enough copies of the matrix that none is still in L2. split: warps per row
// (0: the kernel's own choice); overlapped: programmatic dependent launch between them.
double cuda_gemv_bandwidth(int64_t rows, int64_t n_in, bool pair, int split, bool overlapped, int repeats);
double cuda_gemm_f16_flops(int m, int n, int k, int repeats);

} // namespace recur
