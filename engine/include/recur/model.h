#pragma once
// Llama-family model (GGUF architectures `llama` and `qwen2`) and an inference context
// holding one sequence's KV cache. The model is immutable after load and may be shared by
// several contexts; a context is used by one thread at a time.
#include "recur/gguf.h"
#include "recur/recency.h"
#include "recur/tensor_type.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace recur {

class tokenizer;
class thread_pool;

enum class rope_style { normal, neox }; // pairs (2i, 2i+1) vs (i, i + rope_dim/2)

struct model_hparams {
    std::string arch;
    int32_t n_layer = 0;
    int32_t n_embd = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;
    int32_t head_dim = 0;
    int32_t n_ff = 0;
    int32_t n_vocab = 0;
    int32_t n_ctx_train = 0;
    float rms_eps = 1e-5f;
    float rope_freq_base = 10000.0f;
    float rope_scale = 1.0f; // positions are divided by this (linear scaling)
    int32_t rope_dim = 0;
    rope_style rope = rope_style::normal;

    int32_t group_size() const { return n_head / n_head_kv; } // query heads per KV head
};

// A weight matrix [n_out rows][n_in] in its stored type, pointing into the mapped file.
struct weight_matrix {
    const uint8_t *data = nullptr;
    tensor_type type = tensor_type::F32;
    int64_t n_in = 0;  // ne[0], the row length
    int64_t n_out = 0; // rows
    size_t row_bytes = 0;
    std::string name;
};

struct layer_weights {
    std::vector<float> attn_norm;                   // [n_embd]
    weight_matrix wq, wk, wv, wo;                   // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
    std::vector<float> bq, bk, bv;                  // qwen2 biases, empty when absent
    std::vector<float> ffn_norm;                    // [n_embd]
    weight_matrix w_gate, w_up, w_down;             // [n_ff, n_embd] x2, [n_embd, n_ff]
};

// How a replaced KV group is served (recorded per group in a hybrid file).
enum class replacement_kind : int32_t {
    recurrent = 0,        // RecurFormer recurrent head: fixed-size state, no cache
    window = 1,           // exact attention over the last W tokens only (a ring of W K/V rows), plus
                          // the first S tokens kept as permanent rows (attention sinks, S may be 0)
    // exact attention over the last W tokens PLUS a recurrent head whose state absorbs each token
    // as it leaves the window (no token is evicted); the head's read-out is added to the window's
    // softmax output (docs/FORMAT.md "Window + recurrent").
    window_recurrent = 2,
};

// The RecurFormer part of one layer of a hybrid file (docs/FORMAT.md). Empty for a plain model.
struct hybrid_layer {
    std::vector<int32_t> replaced_groups;   // KV groups no longer served by full attention, ascending
    std::vector<replacement_kind> kinds;    // per replaced group
    std::vector<int32_t> windows;           // per replaced group: W for window kinds, 0 otherwise
    // Per replaced group: S attention-sink rows of a window kind (positions 0..S-1 kept exactly,
    // besides the ring of the last W), 0 otherwise and in files without recurformer.blk.N.group_sinks.
    std::vector<int32_t> sinks;
    std::vector<uint8_t> group_replaced;    // [n_head_kv] 1 where replaced (any kind)
    // The replaced groups that have recurrent heads (kinds recurrent and window_recurrent),
    // ascending: the rec.* tensors hold R = recurrent_groups.size() * group_size heads.
    std::vector<int32_t> recurrent_groups;
    // The replaced groups that keep a ring of the last W K/V rows (kinds window and
    // window_recurrent), ascending.
    std::vector<int32_t> window_groups;
    std::vector<int32_t> group_window;      // [n_head_kv] W of a window / window_recurrent group, else 0
    std::vector<int32_t> group_sinks;       // [n_head_kv] S of a window / window_recurrent group, else 0
    std::vector<replacement_kind> group_kind; // [n_head_kv] kind of a replaced group (recurrent elsewhere)
    std::vector<float> group_recency;       // [n_head_kv] statistics behind the choice (may be empty)
    // Recurrent heads, R = recurrent_groups.size() * group_size, ordered by group then head:
    std::vector<float> dt_w;                // [R][n_embd]
    std::vector<float> dt_b, a_log;         // [R]
    std::vector<float> d;                   // [R][head_dim]
    // Optional trained transforms of the head's q, k, v (identity when empty):
    std::vector<float> q_proj, k_proj, v_proj; // [R][head_dim out][head_dim in]
    // Optional shared-normaliser gate of window + recurrent heads (docs/FORMAT.md "Window +
    // recurrent"): with it the read-out r_i replaces the mass that left the window,
    //   y_i = (1 − g_i)·o_window_i + g_i·r_i,
    //   g_i = sigmoid(gate_w·xn_i + gate_b + gate_n·log(n_out_i) − lse_window_i),
    // n_out_i the number of tokens that have left the window at query i, instead of being added
    // to o_window. Empty (all three) in files without rec.gate_w/gate_b/gate_n; rows of heads of
    // plain recurrent groups are unused.
    std::vector<float> gate_w;              // [R][n_embd]
    std::vector<float> gate_b, gate_n;      // [R]
    // Optional per-channel decay offsets (docs/FORMAT.md "Per-channel decay"): row r of head i's
    // state decays at exp(a_log[i] + a_chan[i][r]). Empty: one decay per head.
    std::vector<float> a_chan;              // [R][head_dim]
    std::vector<float> final_loss;          // [R] distillation loss per head, empty when untrained
    // The recurrent heads read out by the delta rule (recurrent_head_weights::delta_rule) rather
    // than the additive one: recurformer.read_out = "delta" (one value for the whole file).
    bool delta_rule = false;

    bool group_is(int32_t grp, replacement_kind k) const {
        return group_replaced[size_t(grp)] && group_kind[size_t(grp)] == k;
    }
};

// A KV group served as an exact window (replacement_kind::window) by model::load_windowed.
struct window_group {
    int32_t layer = 0, group = 0;
    int32_t window = 1; // W: ring rows of the last W positions
    int32_t sinks = 0;  // S: positions 0..S-1 kept besides the ring
};

class model {
  public:
    // Loads and validates every tensor's presence, type and shape. Throws recur::error.
    static std::unique_ptr<model> load(const std::string &path);
    // A plain model file loaded as a hybrid whose `groups` are window groups, without writing a
    // file: convert's retrieval probe windows one group at a time (recur/convert.h). Throws
    // recur::error for a hybrid file, a group out of range or named twice, or W < 1, S < 0.
    // Its fingerprint differs from the plain file's, so saved states do not cross over.
    static std::unique_ptr<model> load_windowed(const std::string &path, const std::vector<window_group> &groups);
    ~model();

    const model_hparams &hparams() const { return hp_; }
    const tokenizer &vocab() const { return *tokenizer_; }
    const gguf_file &file() const { return *file_; }
    std::string chat_template() const;
    std::string name() const;
    // Bytes of all tensors the forward pass reads (what a decode step streams from memory).
    size_t weights_bytes() const { return weights_bytes_; }
    // The dominant storage type of the big matrices, e.g. "Q4_1".
    std::string weights_type() const;

    // The forward pass reads these.
    const weight_matrix &token_embd() const { return token_embd_; }
    const weight_matrix &output() const { return output_; }
    const std::vector<float> &output_norm() const { return output_norm_; }
    const std::vector<layer_weights> &layers() const { return layers_; }
    const std::vector<float> &rope_freq_factors() const { return rope_freq_factors_; }

    // Hybrid (RecurFormer) structure; every layer's list is empty for a plain model.
    bool is_hybrid() const { return recurformer_version_ > 0; }
    const std::vector<hybrid_layer> &hybrid() const { return hybrid_; }
    int32_t replaced_group_count() const;
    int32_t recency_window() const { return recency_window_; }
    // 64-bit fingerprint of the whole file (computed on first use); engine state files carry it.
    uint64_t fingerprint() const;

  private:
    model() = default;
    std::unique_ptr<gguf_file> file_;
    std::unique_ptr<tokenizer> tokenizer_;
    model_hparams hp_;
    weight_matrix token_embd_, output_;
    std::vector<float> output_norm_;
    std::vector<float> rope_freq_factors_; // [rope_dim/2], empty unless the file has rope_freqs.weight
    std::vector<layer_weights> layers_;
    size_t weights_bytes_ = 0;
    int32_t recurformer_version_ = 0;
    int32_t recency_window_ = 32;
    std::vector<hybrid_layer> hybrid_;
    mutable uint64_t fingerprint_ = 0;
    void load_hybrid();
};

struct context_params {
    int32_t n_ctx = 4096;    // tokens the KV cache holds
    int32_t n_batch = 256;   // tokens per prefill step
    int32_t n_threads = 0;   // 0: all cores
    tensor_type kv_type = tensor_type::F16; // F16 or F32
};

// Memory of one layer (bytes). A KV group is either attention (a K and a V row per position)
// or replaced (a fixed-size recurrent state per query head).
struct layer_memory {
    int32_t attention_groups = 0, replaced_groups = 0;
    size_t kv_bytes = 0;                // allocated KV cache for the attention groups at n_ctx
    size_t kv_used_bytes = 0;           // of which positions [0, n_past) are filled
    size_t recurrent_bytes = 0;         // recurrent states of the replaced groups
    size_t window_bytes = 0;            // K/V rings of window groups (fixed size), + dt rings of window+recurrent heads
    size_t full_attention_kv_bytes = 0; // what this layer's cache would be with every group attention
};

struct memory_report {
    int32_t n_ctx = 0;
    int32_t n_past = 0;
    size_t weights_bytes = 0;
    size_t kv_bytes = 0;                 // allocated KV cache (attention groups only)
    size_t kv_used_bytes = 0;            // positions filled so far
    size_t recurrent_bytes = 0;          // recurrent states (hybrid models)
    size_t window_bytes = 0;             // window groups' K/V rings (+ dt rings of window+recurrent heads)
    size_t full_attention_kv_bytes = 0;  // what full attention would allocate at n_ctx
    size_t scratch_bytes = 0;            // activations and buffers
    std::vector<layer_memory> layers;
};

// Called during a long evaluation with (tokens done, tokens total); return false to cancel.
using progress_callback = std::function<bool(int64_t done, int64_t total)>;

class cancelled_error : public error {
  public:
    using error::error;
};

class context {
  public:
    context(const model &m, const context_params &p);
    ~context();

    // Appends `tokens` to the sequence and runs them through the model in batches.
    // logits_out: if all_logits, [n × n_vocab] for every new token, else [n_vocab] for the last.
    // Throws recur::error when the context would overflow (nothing is appended then) and
    // cancelled_error when the callback asks to stop (the tokens evaluated so far stay).
    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits = false,
              const progress_callback &progress = {});

    int32_t n_past() const { return n_past_; }
    int32_t n_ctx() const { return params_.n_ctx; }
    const std::vector<int32_t> &tokens() const { return history_; }
    // Forgets positions >= n (n <= n_past); the cache keeps the rest.
    void truncate(int32_t n);
    int n_threads() const;
    memory_report memory() const;
    // The same figures for any context, computed before allocating anything.
    static memory_report plan(const model &m, const context_params &p);
    // Bytes this context actually allocated for KV cache and recurrent state (tests compare them
    // with memory()).
    size_t allocated_kv_bytes() const;
    size_t allocated_recurrent_bytes() const;
    size_t allocated_window_bytes() const;

    // Logits of the last evaluated position ([n_vocab]; empty before the first eval).
    const std::vector<float> &last_logits() const { return last_logits_; }

    // Engine state (tokens, KV cache rows in use, recurrent states, last logits) to a file that
    // carries the model's fingerprint, so a document need not be read again. Written through a
    // temporary file and a rename. load_state throws recur::error, leaving the context as it
    // was, when the file is damaged, was saved for another model, or does not fit n_ctx.
    void save_state(const std::string &path) const;
    void load_state(const std::string &path);

    // Recency statistics (DESIGN §4): window > 0 starts gathering them (from zero) during
    // every following eval; 0 stops. Costs a few percent of prefill time while on.
    void collect_recency(int32_t window);
    // Targets of the recency statistics' copy mass: targets[i] are the keys whose weights the
    // query at absolute position i adds (an empty range, or i past the end: not targeted; keys
    // after i are not counted, and a range with none before i is no target). Kept until
    // replaced; an empty vector clears them.
    void set_copy_targets(std::vector<key_range> targets);
    const recency_stats &recency() const;

    // distillation hook: called inside eval for every layer and batch, right after attention and
    // before attn_output, with the layer's attention-normed input xn [n_tokens][n_embd] and the
    // heads' outputs attn_out [n_tokens][n_head * head_dim] (valid only during the call). An
    // empty function (the default) costs nothing.
    using layer_observer = std::function<void(int layer, int n_tokens, const float *xn, const float *attn_out)>;
    void set_layer_observer(layer_observer obs);

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
    const model &model_;
    context_params params_;
    int32_t n_past_ = 0;
    std::vector<int32_t> history_;
    std::vector<float> last_logits_;
};

} // namespace recur
