// cuda_model: the llama/qwen2 forward pass (plain and hybrid) on one GPU, the same computation
// as engine/src/context.cpp.
//
// Per layer, for n tokens at positions [pos0, pos0 + n):
//   prefill (n > 1):  xn = rmsnorm(x); qkv = W_qkv xn (cuBLAS); rope + K/V stores; attention
//                     (tiled kernel); recurrent heads (chunked scan); x += W_o attn (cuBLAS, beta=1);
//                     gu = W_gu rmsnorm(x); x += W_down swiglu(gu)
//   decode (n == 1):  the same with GEMV kernels that fuse the rmsnorm, the SwiGLU and the
//                     residual add into the matmuls, the split-K attention, the one-step
//                     recurrence; captured once as a CUDA graph and replayed for every token.
// q/k/v (and gate/up) of the same type are uploaded as one matrix, so each is one matmul.
#include "kernels.cuh"
#include "recur/cuda_backend.h"
#include "recur/quants.h"
#include "recur/state_file.h"
#include "state_layout.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace recur {

using namespace cuda_detail;

namespace {

constexpr size_t reserve_bytes = 192ull << 20; // CUDA graph, cuBLAS workspace, allocator slack

std::string mib(size_t b) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.1f MiB", double(b) / (1024.0 * 1024.0));
    return buf;
}

// Can these matrices be one matmul (same type and input length)?
bool fusable(std::initializer_list<const weight_matrix *> ws) {
    const weight_matrix &a = **ws.begin();
    for (auto *w : ws)
        if (w->type != a.type || w->n_in != a.n_in) return false;
    return true;
}

size_t matrix_bytes(const weight_matrix &w) { return w.row_bytes * size_t(w.n_out); }

// The F16 elements of the largest quantised matrix: the prefill dequantisation scratch.
size_t dequant_scratch_elems(const model &m) {
    size_t mx = 0;
    auto see = [&](const weight_matrix &w, int64_t rows) {
        if (gemm_operand_type(w.type) != w.type) mx = std::max(mx, size_t(rows) * size_t(w.n_in));
    };
    for (const layer_weights &L : m.layers()) {
        if (fusable({&L.wq, &L.wk, &L.wv})) see(L.wq, L.wq.n_out + L.wk.n_out + L.wv.n_out);
        else for (auto *w : {&L.wq, &L.wk, &L.wv}) see(*w, w->n_out);
        if (fusable({&L.w_gate, &L.w_up})) see(L.w_gate, 2 * L.w_gate.n_out);
        else for (auto *w : {&L.w_gate, &L.w_up}) see(*w, w->n_out);
        see(L.wo, L.wo.n_out);
        see(L.w_down, L.w_down.n_out);
    }
    see(m.output(), m.output().n_out);
    return mx;
}

// A weight matrix in device memory: packed rows of its stored type.
struct dev_matrix {
    tensor_type type = tensor_type::F32;
    int64_t n_rows = 0, n_in = 0;
    const uint8_t *data = nullptr; // into `own` or another matrix's buffer (tied embeddings)
    dev_buf<uint8_t> own;
};

void upload_matrices(dev_matrix &dm, std::initializer_list<const weight_matrix *> ws) {
    const weight_matrix &a = **ws.begin();
    size_t bytes = 0;
    for (auto *w : ws) bytes += matrix_bytes(*w);
    dm.type = a.type;
    dm.n_in = a.n_in;
    dm.n_rows = 0;
    dm.own.resize(bytes);
    size_t off = 0;
    for (auto *w : ws) {
        CUDA_CHECK(cudaMemcpy(dm.own.get() + off, w->data, matrix_bytes(*w), cudaMemcpyHostToDevice));
        off += matrix_bytes(*w);
        dm.n_rows += w->n_out;
    }
    dm.data = dm.own.get();
}

template <typename T> void upload_vec(dev_buf<T> &b, const std::vector<T> &v) {
    if (v.empty()) return;
    b.resize(v.size());
    b.upload(v.data(), v.size());
}

struct dev_layer {
    dev_buf<float> attn_norm, ffn_norm, bqkv;
    bool fused_qkv = false, fused_gu = false;
    dev_matrix wqkv, wq, wk, wv, wo, wgu, w_gate, w_up, w_down;
    dev_buf<int32_t> slot_of;          // [n_kv]
    dev_buf<uint8_t> rot_q, rot_k;     // [n_head], [n_kv]
    int n_src = 0;                     // attention + window groups
    dev_buf<kv_source> src;
    int n_rings = 0;
    dev_buf<ring_desc> rings;
    // Recurrent heads (of recurrent groups; window + recurrent groups' heads are in wr).
    int R = 0;
    float *state = nullptr;            // [R][hd·hd] inside the model's state buffer
    dev_buf<float> dt_w, dt_b, a_log, d, mq, mk, mv;
    dev_buf<float> a_chan; // [R][hd] per-channel decay offsets; empty: one decay per head
    bool delta = false;    // the layer's recurrent heads use the delta rule (both kinds)
    dev_buf<int32_t> head_of, group_of, y_col;
    // Window + recurrent groups: the ring (shared with the window attention), the g heads'
    // parameters and states, and the dt ring of each head.
    struct wr_group {
        int grp = 0, W = 0, S = 0;
        const __half *ring_k = nullptr, *ring_v = nullptr;
        float *state = nullptr;        // [g][hd·hd] inside the model's state buffer
        dev_buf<float> dt_w, dt_b, a_log, d, mq, mk, mv, dt_ring;
        dev_buf<float> a_chan; // [g][hd]; empty: one decay per head
        bool delta = false;
        dev_buf<float> gate_w, gate_b, gate_n; // gated read-out: [g][n_embd], [g], [g]; empty: additive
        dev_buf<int32_t> head_of, y_col;
    };
    std::vector<wr_group> wr;
    bool gated_wr = false; // the wr groups blend by the gate, which reads the window's log-sum-exp
};

int32_t plan_max_ctx(const cuda_memory_plan &p, const model &m, const cuda_params &cp) {
    // Everything but the KV cache is independent of n_ctx (scratch depends on the batch only).
    const size_t fixed = p.weights_bytes + p.recurrent_bytes + p.window_bytes + p.scratch_bytes + p.reserve_bytes;
    if (fixed > p.free_bytes) return 0;
    context_params one;
    one.n_ctx = 1;
    one.n_batch = 1;
    one.kv_type = tensor_type::F16;
    const size_t per_token = context::plan(m, one).kv_bytes;
    if (per_token == 0) return std::numeric_limits<int32_t>::max();
    return int32_t(std::min<size_t>((p.free_bytes - fixed) / per_token, size_t(std::numeric_limits<int32_t>::max())));
}

} // namespace

std::string cuda_memory_plan::describe() const {
    return "weights " + mib(weights_bytes) + ", KV cache " + mib(kv_bytes) + ", recurrent states " + mib(recurrent_bytes) +
           ", window rings " + mib(window_bytes) + ", buffers " + mib(scratch_bytes) + ", reserve " + mib(reserve_bytes) +
           " = " + mib(total_bytes_needed) + " needed; " + mib(free_bytes) + " free of " + mib(total_bytes) + " on " +
           device_name + "; the largest context that fits is " + std::to_string(max_n_ctx) + " tokens";
}

cuda_memory_plan cuda_model::plan(const model &m, const cuda_params &p) {
    const model_hparams &hp = m.hparams();
    cuda_memory_plan r;
    const cuda_device dev = cuda_device_info(p.device);
    if (dev.available) {
        r.device_name = dev.name;
        r.free_bytes = dev.free_bytes;
        r.total_bytes = dev.total_bytes;
    }
    // Weights as uploaded (the tied output matrix once).
    r.weights_bytes = matrix_bytes(m.token_embd()) + (m.output().data == m.token_embd().data ? 0 : matrix_bytes(m.output()));
    r.weights_bytes += m.output_norm().size() * 4;
    for (const layer_weights &L : m.layers()) {
        for (auto *w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) r.weights_bytes += matrix_bytes(*w);
        r.weights_bytes += (L.attn_norm.size() + L.ffn_norm.size() + L.bq.size() + L.bk.size() + L.bv.size()) * 4;
    }
    for (const hybrid_layer &H : m.hybrid())
        r.weights_bytes += (H.dt_w.size() + H.dt_b.size() + H.a_log.size() + H.d.size() + H.q_proj.size() +
                            H.k_proj.size() + H.v_proj.size() + H.a_chan.size() + H.gate_w.size() + H.gate_b.size() +
                            H.gate_n.size()) * 4;
    context_params cp;
    cp.n_ctx = p.n_ctx;
    cp.n_batch = p.n_batch;
    cp.kv_type = tensor_type::F16;
    const memory_report mr = context::plan(m, cp);
    r.kv_bytes = mr.kv_bytes;
    r.recurrent_bytes = mr.recurrent_bytes;
    r.window_bytes = mr.window_bytes;
    // Buffers for one batch of B tokens (see impl::alloc_scratch).
    const size_t B = size_t(std::max(1, std::min(p.n_batch, p.n_ctx)));
    const size_t E = hp.n_embd, nq = size_t(hp.n_head) * hp.head_dim, nkv = size_t(hp.n_head_kv) * hp.head_dim;
    const size_t F = hp.n_ff, V = hp.n_vocab, wide = std::max({E, nq, F});
    size_t R_max = 0;
    for (const hybrid_layer &H : m.hybrid()) R_max = std::max(R_max, H.recurrent_groups.size() * size_t(hp.group_size()));
    const int n_splits = choose_decode_splits(p.n_ctx, hp.n_head_kv, std::max(dev.sm_count, 1));
    r.scratch_bytes = 4 * B * (E + wide + (nq + 2 * nkv) + nq + 2 * F) // x, xn, qkv, attn, gu
                      + 4 * B * wide                                      // matmul operand (F32 at most)
                      + 2 * 2 * B * nkv                                   // kb, vb
                      + 4 * B * V                                         // logits
                      + 2 * dequant_scratch_elems(m)                      // F16 dequantised matrix
                      + 4 * decode_partials_floats(hp.n_head_kv, hp.group_size(), hp.head_dim, n_splits) +
                      4 * R_max * B * (3 * size_t(hp.head_dim) + 1)       // recurrent q, k, v, dt
                      + 4 * recurrent_scan_scratch_floats(int(R_max), int(B), hp.head_dim, recurrent_scan_chunk(hp.head_dim))
                      + 8 * size_t(hp.n_layer) * hp.n_head * (2 + 64);    // recency sums
    // Window + recurrent groups: per-group batch scratch (see alloc_scratch) and each head's dt ring.
    size_t wr_ring_floats = 0, wr_max = 0;
    for (const hybrid_layer &H : m.hybrid()) {
        size_t in_layer = 0;
        for (int32_t grp : H.recurrent_groups)
            if (H.group_is(grp, replacement_kind::window_recurrent)) {
                wr_ring_floats += size_t(hp.group_size()) * size_t(H.group_window[size_t(grp)]);
                ++in_layer;
            }
        wr_max = std::max(wr_max, in_layer);
    }
    if (wr_ring_floats > 0)
        r.scratch_bytes += 4 * wr_ring_floats + 4 * size_t(hp.group_size()) * B * ((3 + wr_max) * size_t(hp.head_dim) + 2) + 4 * B * nq +
                           4 * recurrent_scan_scratch_floats(hp.group_size(), int(B), hp.head_dim, recurrent_scan_chunk(hp.head_dim)) +
                           4 * B * size_t(hp.n_head); // the window attention's log-sum-exp (gated read-out)
    r.reserve_bytes = reserve_bytes;
    r.total_bytes_needed =
        r.weights_bytes + r.kv_bytes + r.recurrent_bytes + r.window_bytes + r.scratch_bytes + r.reserve_bytes;
    r.max_n_ctx = dev.available ? plan_max_ctx(r, m, p) : 0;
    return r;
}

struct cuda_model::impl {
    const model &m;
    const model_hparams &hp;
    cuda_params params;
    cuda_memory_plan mem;
    cuda_device dev;
    int32_t n_past = 0;
    std::vector<int32_t> history;  // the n_past tokens, in order
    int64_t last_logits_row = -1;  // row of `logits` holding the last position's; -1: none
    int g = 1, hd = 0, nq = 0, nkv = 0, n_splits = 1, rec_chunk = 64;
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    cudaEvent_t ev0 = nullptr, ev1 = nullptr;

    dev_matrix token_embd, output;
    dev_buf<float> output_norm;
    dev_buf<double> inv_freq;
    std::vector<dev_layer> layers;
    dev_buf<__half> k_cache, v_cache, ring_k, ring_v;
    dev_buf<float> rec_state;

    // Scratch for one batch.
    int B = 1;
    dev_buf<float> x, xn, qkv, attn, gu, logits, partials, rq, rk, rv, rdt, rscan;
    // Window + recurrent groups (one group at a time): saved q rows, the leaving tokens' q/k/v
    // and dt, the batch's dt, the scan's scratch, and how many tokens left (decode: 0 or 1).
    dev_buf<float> wr_qraw, wr_q, wr_k, wr_v, wr_dt, wr_dtb, wr_scan, wr_y; // wr_y: [B][nq], the heads' columns
    dev_buf<float> wr_lse;             // [B][n_head]: the window attention's log-sum-exp (gated read-out)
    dev_buf<int32_t> wr_m;
    dev_buf<uint8_t> act, dq;
    dev_buf<__half> kb, vb;
    dev_buf<int32_t> d_tokens, d_pos, d_argmax;
    int32_t *h_io = nullptr; // pinned: [0] pos, [1] argmax, [2..] tokens

    // Recency statistics.
    int32_t recency_window = 0;
    int n_bins = 0;
    dev_buf<double> d_stats;        // [n_layer][n_head][2 + n_bins]
    mutable recency_stats stats;
    mutable bool stats_stale = false;

    cudaGraphExec_t graph = nullptr;
    int decode_calls = 0;
    // Whether decode launches overlap (PDL): Hopper and later, with RECUR_CUDA_PDL=1.
    bool overlap_decode = false;

    // profile_ops: an event after every op of a forward, named by the op it ends; summed into
    // op_ms after the forward (events reused from one forward to the next).
    std::vector<cudaEvent_t> prof_events;
    std::vector<const char *> prof_labels;
    size_t prof_used = 0;
    std::vector<cuda_op_time> op_ms;

    void op_done(const char *label) {
        if (!params.profile_ops) return;
        if (prof_used == prof_events.size()) {
            cudaEvent_t e = nullptr;
            CUDA_CHECK(cudaEventCreate(&e));
            prof_events.push_back(e);
            prof_labels.push_back(nullptr);
        }
        prof_labels[prof_used] = label;
        CUDA_CHECK(cudaEventRecord(prof_events[prof_used++], stream));
    }
    // Waits for the forward and adds the time between consecutive events to their ops.
    void profile_collect(bool decode) {
        if (!params.profile_ops || prof_used == 0) return;
        CUDA_CHECK(cudaEventSynchronize(prof_events[prof_used - 1]));
        for (size_t i = 1; i < prof_used; ++i) {
            float ms = 0;
            CUDA_CHECK(cudaEventElapsedTime(&ms, prof_events[i - 1], prof_events[i]));
            auto it = std::find_if(op_ms.begin(), op_ms.end(), [&](const cuda_op_time &t) { return t.op == prof_labels[i]; });
            if (it == op_ms.end()) it = op_ms.insert(op_ms.end(), cuda_op_time{prof_labels[i]});
            (decode ? it->decode_ms : it->prefill_ms) += ms;
        }
        prof_used = 0;
    }

    impl(const model &mm, const cuda_params &p) : m(mm), hp(mm.hparams()), params(p) {}

    ~impl() {
        if (graph) cudaGraphExecDestroy(graph);
        for (cudaEvent_t e : prof_events) cudaEventDestroy(e);
        if (blas) cublasDestroy(blas);
        if (ev0) cudaEventDestroy(ev0);
        if (ev1) cudaEventDestroy(ev1);
        if (stream) cudaStreamDestroy(stream);
        if (h_io) cudaFreeHost(h_io);
    }

    bool group_recurrent(const hybrid_layer &H, int grp) const {
        return !H.group_replaced.empty() && H.group_replaced[size_t(grp)] &&
               (H.group_window.empty() || H.group_window[size_t(grp)] == 0);
    }

    void upload() {
        g = hp.group_size();
        hd = hp.head_dim;
        nq = hp.n_head * hd;
        nkv = hp.n_head_kv * hd;
        rec_chunk = recurrent_scan_chunk(hd);
        n_splits = choose_decode_splits(params.n_ctx, hp.n_head_kv, dev.sm_count);
        // Opt-in until a GPU run has checked it (written in a session whose GPU went away before
        // its first run; docs/perf/gpu.md): RECUR_CUDA_PDL=1.
        const char *pdl_env = std::getenv("RECUR_CUDA_PDL");
        overlap_decode = dev.cc_major >= 9 && pdl_env && std::string(pdl_env) == "1";
        for (const weight_matrix *w : {&m.token_embd(), &m.output()}) require_type(w->type, w->name.c_str());
        upload_matrices(token_embd, {&m.token_embd()});
        if (m.output().data == m.token_embd().data) {
            output.type = token_embd.type, output.n_rows = token_embd.n_rows, output.n_in = token_embd.n_in;
            output.data = token_embd.data;
        } else {
            upload_matrices(output, {&m.output()});
        }
        upload_vec(output_norm, m.output_norm());
        const int half = hp.rope_dim / 2;
        std::vector<double> inv(size_t(std::max(half, 1)), 0.0);
        for (int i = 0; i < half; ++i) {
            inv[size_t(i)] = std::pow(double(hp.rope_freq_base), -2.0 * i / hp.rope_dim);
            if (!m.rope_freq_factors().empty()) inv[size_t(i)] /= m.rope_freq_factors()[size_t(i)];
        }
        upload_vec(inv_freq, inv);

        // Caches: slots numbered across layers as in the CPU context.
        int32_t slots = 0;
        size_t ring_rows = 0, rec_heads = 0;
        for (int l = 0; l < hp.n_layer; ++l) {
            const hybrid_layer &H = m.hybrid()[size_t(l)];
            for (int grp = 0; grp < hp.n_head_kv; ++grp)
                if (H.group_replaced.empty() || !H.group_replaced[size_t(grp)]) ++slots;
            // A window group's W ring rows, then its S sink rows (docs/FORMAT.md "Attention sinks").
            for (int32_t grp : H.window_groups)
                ring_rows += size_t(H.group_window[size_t(grp)]) + size_t(H.group_sinks[size_t(grp)]);
            rec_heads += H.recurrent_groups.size() * size_t(g);
        }
        k_cache.resize(size_t(slots) * params.n_ctx * hd);
        v_cache.resize(size_t(slots) * params.n_ctx * hd);
        ring_k.resize(ring_rows * hd);
        ring_v.resize(ring_rows * hd);
        rec_state.resize(rec_heads * size_t(hd) * hd);
        rec_state.zero();

        layers.resize(size_t(hp.n_layer));
        int32_t slot = 0;
        size_t ring_row = 0, rec_head = 0;
        for (int l = 0; l < hp.n_layer; ++l) {
            const layer_weights &L = m.layers()[size_t(l)];
            const hybrid_layer &H = m.hybrid()[size_t(l)];
            dev_layer &D = layers[size_t(l)];
            for (auto *w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) require_type(w->type, w->name.c_str());
            upload_vec(D.attn_norm, L.attn_norm);
            upload_vec(D.ffn_norm, L.ffn_norm);
            if (!L.bq.empty() || !L.bk.empty() || !L.bv.empty()) {
                std::vector<float> b(size_t(nq + 2 * nkv), 0.0f);
                std::copy(L.bq.begin(), L.bq.end(), b.begin());
                std::copy(L.bk.begin(), L.bk.end(), b.begin() + nq);
                std::copy(L.bv.begin(), L.bv.end(), b.begin() + nq + nkv);
                upload_vec(D.bqkv, b);
            }
            D.fused_qkv = fusable({&L.wq, &L.wk, &L.wv});
            if (D.fused_qkv) upload_matrices(D.wqkv, {&L.wq, &L.wk, &L.wv});
            else upload_matrices(D.wq, {&L.wq}), upload_matrices(D.wk, {&L.wk}), upload_matrices(D.wv, {&L.wv});
            upload_matrices(D.wo, {&L.wo});
            D.fused_gu = fusable({&L.w_gate, &L.w_up});
            if (D.fused_gu) upload_matrices(D.wgu, {&L.w_gate, &L.w_up});
            else upload_matrices(D.w_gate, {&L.w_gate}), upload_matrices(D.w_up, {&L.w_up});
            upload_matrices(D.w_down, {&L.w_down});

            std::vector<int32_t> slot_of(size_t(hp.n_head_kv), -1);
            std::vector<uint8_t> rot_q(size_t(hp.n_head), 1), rot_k(size_t(hp.n_head_kv), 1);
            std::vector<kv_source> src;
            for (int grp = 0; grp < hp.n_head_kv; ++grp) {
                if (H.group_replaced.empty() || !H.group_replaced[size_t(grp)]) {
                    slot_of[size_t(grp)] = slot;
                    src.push_back({k_cache.get() + size_t(slot) * params.n_ctx * hd,
                                   v_cache.get() + size_t(slot) * params.n_ctx * hd, grp, 0});
                    ++slot;
                }
                if (group_recurrent(H, grp)) {
                    rot_k[size_t(grp)] = 0;
                    for (int h = grp * g; h < (grp + 1) * g; ++h) rot_q[size_t(h)] = 0;
                }
            }
            std::vector<ring_desc> rings;
            for (int32_t grp : H.window_groups) {
                const int W = H.group_window[size_t(grp)], S = H.group_sinks[size_t(grp)];
                __half *rk = ring_k.get() + ring_row * hd, *rv = ring_v.get() + ring_row * hd;
                __half *sk = rk + size_t(W) * hd, *sv = rv + size_t(W) * hd;
                rings.push_back({rk, rv, grp, W, sk, sv, S});
                src.push_back({rk, rv, grp, W, sk, sv, S});
                ring_row += size_t(W) + size_t(S);
            }
            upload_vec(D.slot_of, slot_of);
            upload_vec(D.rot_q, rot_q);
            upload_vec(D.rot_k, rot_k);
            D.n_src = int(src.size());
            upload_vec(D.src, src);
            D.n_rings = int(rings.size());
            upload_vec(D.rings, rings);

            // Recurrent heads: H's arrays hold every recurrent head ([R] ordered by group, then
            // head); recurrent groups' heads go to D's arrays and state first, then each window +
            // recurrent group's g heads to its own.
            auto rows = [&](const std::vector<float> &v, const std::vector<int> &heads, size_t per) {
                std::vector<float> out;
                if (v.empty()) return out;
                for (int r : heads) out.insert(out.end(), v.begin() + size_t(r) * per, v.begin() + size_t(r + 1) * per);
                return out;
            };
            const size_t E = size_t(hp.n_embd), hh = size_t(hd) * hd;
            // The parameters of the given heads into dst's buffers (a dev_layer or a wr_group).
            auto upload_heads = [&](auto &dst, const std::vector<int> &heads) {
                upload_vec(dst.dt_w, rows(H.dt_w, heads, E));
                upload_vec(dst.dt_b, rows(H.dt_b, heads, 1));
                upload_vec(dst.a_log, rows(H.a_log, heads, 1));
                upload_vec(dst.d, rows(H.d, heads, size_t(hd)));
                upload_vec(dst.mq, rows(H.q_proj, heads, hh));
                upload_vec(dst.mk, rows(H.k_proj, heads, hh));
                upload_vec(dst.mv, rows(H.v_proj, heads, hh));
                upload_vec(dst.a_chan, rows(H.a_chan, heads, size_t(hd)));
                dst.delta = H.delta_rule;
            };
            std::vector<int> rec_heads_of_layer;
            std::vector<std::pair<int32_t, std::vector<int>>> wr_heads;
            for (size_t gi = 0; gi < H.recurrent_groups.size(); ++gi) {
                const int32_t grp = H.recurrent_groups[gi];
                std::vector<int> heads;
                for (int j = 0; j < g; ++j) heads.push_back(int(gi) * g + j);
                if (H.group_is(grp, replacement_kind::window_recurrent)) wr_heads.push_back({grp, heads});
                else rec_heads_of_layer.insert(rec_heads_of_layer.end(), heads.begin(), heads.end());
            }
            D.R = int(rec_heads_of_layer.size());
            if (D.R > 0) {
                D.state = rec_state.get() + rec_head * hh;
                rec_head += size_t(D.R);
                upload_heads(D, rec_heads_of_layer);
                std::vector<int32_t> head_of, group_of, y_col;
                for (int r : rec_heads_of_layer) {
                    const int grp = H.recurrent_groups[size_t(r / g)], head = grp * g + r % g;
                    head_of.push_back(head);
                    group_of.push_back(grp);
                    y_col.push_back(head * hd);
                }
                upload_vec(D.head_of, head_of);
                upload_vec(D.group_of, group_of);
                upload_vec(D.y_col, y_col);
            }
            for (auto &[grp, heads] : wr_heads) {
                dev_layer::wr_group G;
                G.grp = grp, G.W = H.group_window[size_t(grp)], G.S = H.group_sinks[size_t(grp)];
                for (const ring_desc &rd : rings)
                    if (rd.kv_head == grp) G.ring_k = rd.k, G.ring_v = rd.v;
                G.state = rec_state.get() + rec_head * hh;
                rec_head += size_t(g);
                upload_heads(G, heads);
                if (!H.gate_b.empty()) {
                    upload_vec(G.gate_w, rows(H.gate_w, heads, E));
                    upload_vec(G.gate_b, rows(H.gate_b, heads, 1));
                    upload_vec(G.gate_n, rows(H.gate_n, heads, 1));
                    D.gated_wr = true;
                }
                G.dt_ring.resize(size_t(g) * G.W);
                G.dt_ring.zero();
                std::vector<int32_t> head_of, y_col;
                for (int j = 0; j < g; ++j) head_of.push_back(grp * g + j), y_col.push_back((grp * g + j) * hd);
                upload_vec(G.head_of, head_of);
                upload_vec(G.y_col, y_col);
                D.wr.push_back(std::move(G));
            }
        }
    }

    void alloc_scratch() {
        B = std::max(1, std::min(params.n_batch, params.n_ctx));
        const size_t E = hp.n_embd, F = hp.n_ff, V = hp.n_vocab, wide = std::max({E, size_t(nq), F});
        x.resize(B * E);
        xn.resize(B * wide);
        qkv.resize(size_t(B) * (nq + 2 * nkv));
        attn.resize(size_t(B) * nq);
        gu.resize(B * 2 * F);
        logits.resize(B * V);
        act.resize(B * wide * 4);
        dq.resize(2 * dequant_scratch_elems(m));
        kb.resize(size_t(B) * nkv);
        vb.resize(size_t(B) * nkv);
        int n_src_max = 1, R_max = 0;
        for (auto &D : layers) n_src_max = std::max(n_src_max, D.n_src), R_max = std::max(R_max, D.R);
        partials.resize(decode_partials_floats(n_src_max, g, hd, n_splits));
        if (R_max > 0) {
            rq.resize(size_t(R_max) * B * hd);
            rk.resize(size_t(R_max) * B * hd);
            rv.resize(size_t(R_max) * B * hd);
            rdt.resize(size_t(R_max) * B);
            rscan.resize(recurrent_scan_scratch_floats(R_max, B, hd, rec_chunk));
        }
        size_t wr_max = 0; // the most window + recurrent groups in one layer
        for (auto &D : layers) wr_max = std::max(wr_max, D.wr.size());
        if (wr_max > 0) {
            const size_t gBh = size_t(g) * B * hd;
            wr_qraw.resize(wr_max * gBh), wr_q.resize(gBh), wr_k.resize(gBh), wr_v.resize(gBh);
            wr_dt.resize(size_t(g) * B), wr_dtb.resize(size_t(g) * B);
            wr_scan.resize(recurrent_scan_scratch_floats(g, B, hd, rec_chunk));
            wr_m.resize(1);
            wr_y.resize(size_t(B) * nq);
            wr_lse.resize(size_t(B) * hp.n_head);
        }
        d_tokens.resize(size_t(B));
        d_pos.resize(1);
        d_argmax.resize(1);
        CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&h_io), sizeof(int32_t) * (2 + size_t(B))));
    }

    // ---- the forward pass ----------------------------------------------------------------------

    // out[c][..] (+)= W · in[c] for n columns: GEMV for one column, else cuBLAS on the operand type.
    void matmul(const dev_matrix &w, const float *in, int n, float *out, int64_t ld_out, bool accumulate,
                gemv_input input = gemv_input::plain, const float *norm_w = nullptr) {
        if (n == 1) {
            gemv_args a;
            a.type = w.type, a.w = w.data, a.n_rows = w.n_rows, a.n_in = w.n_in, a.x = in, a.input = input;
            a.norm_w = norm_w, a.eps = hp.rms_eps, a.y = out, a.accumulate = accumulate;
            launch_gemv(a, stream);
            return;
        }
        launch_cast(in, act.get(), gemm_operand_type(w.type), int64_t(n) * w.n_in, stream);
        gemm_act(w, n, out, ld_out, accumulate);
    }

    // Decode: h[i] = silu(gate_i·n(x))·(up_i·n(x)) in one GEMV over both matrices' rows
    // (n = the FFN norm), into gu[0..F).
    void gate_up_swiglu(const dev_layer &D) {
        const int F = hp.n_ff;
        gemv_args a;
        const dev_matrix &gate = D.fused_gu ? D.wgu : D.w_gate;
        a.type = gate.type, a.w = gate.data, a.n_rows = F, a.n_in = gate.n_in, a.x = x.get();
        a.w_up = D.fused_gu ? static_cast<const uint8_t *>(D.wgu.data) + size_t(F) * row_bytes(D.wgu.type, D.wgu.n_in)
                            : D.w_up.data;
        a.input = gemv_input::rmsnorm, a.norm_w = D.ffn_norm.get(), a.eps = hp.rms_eps, a.y = gu.get();
        launch_gemv(a, stream);
    }

    // Prefill GEMM over `act`, which already holds the n input rows in w's operand type.
    void gemm_act(const dev_matrix &w, int n, float *out, int64_t ld_out, bool accumulate) {
        const tensor_type op = gemm_operand_type(w.type);
        const void *wop = w.data;
        if (op != w.type) {
            launch_dequantize_f16(w.type, w.data, reinterpret_cast<__half *>(dq.get()), w.n_rows, w.n_in, stream);
            wop = dq.get();
        }
        gemm_cublas(blas, stream, op, wop, act.get(), w.n_rows, w.n_in, n, out, ld_out, accumulate);
    }

    // ---- window + recurrent groups ----------------------------------------------------------------

    // The arguments for the layer's window + recurrent group gi. Each group of a layer saves its
    // query rows in its own part of wr_qraw: all are saved before RoPE, and read after it.
    wr_args wr_args_of(const dev_layer &D, size_t gi, int n, int64_t ldq) {
        const dev_layer::wr_group &G = D.wr[gi];
        wr_args a;
        a.n = n, a.g = g, a.hd = hd, a.W = G.W, a.S = G.S, a.grp = G.grp, a.pos0 = d_pos.get();
        a.qkv = qkv.get(), a.ld = ldq, a.q_bias = D.bqkv.get(), a.head_of = G.head_of.get();
        a.qraw = wr_qraw.get() + gi * size_t(g) * B * hd;
        a.ring_k = G.ring_k, a.ring_v = G.ring_v, a.kb = kb.get(), a.vb = vb.get(), a.kvb_ld = nkv;
        a.inv_freq = inv_freq.get(), a.rope_dim = hp.rope_dim, a.neox = hp.rope == rope_style::neox;
        a.freq_scale = hp.rope_scale;
        a.mq = G.mq.get(), a.mk = G.mk.get(), a.mv = G.mv.get();
        a.dt_ring = G.dt_ring.get(), a.dt_batch = wr_dtb.get();
        if (G.gate_b.size() > 0) {
            a.gate_w = G.gate_w.get(), a.gate_b = G.gate_b.get(), a.gate_n = G.gate_n.get();
            a.xn = xn.get(), a.n_embd = hp.n_embd, a.lse = wr_lse.get(), a.lse_ld = hp.n_head;
        }
        a.qg = wr_q.get(), a.kg = wr_k.get(), a.vg = wr_v.get(), a.dt_out = wr_dt.get(), a.m_out = wr_m.get();
        return a;
    }

    rec_args wr_rec_args(const dev_layer::wr_group &G) {
        rec_args ra;
        ra.R = g, ra.hd = hd, ra.n_embd = hp.n_embd, ra.xn = xn.get(), ra.xn_ld = hp.n_embd;
        ra.dt_w = G.dt_w.get(), ra.dt_b = G.dt_b.get(), ra.a_log = G.a_log.get(), ra.d = G.d.get();
        ra.delta = G.delta, ra.a_chan = G.a_chan.size() > 0 ? G.a_chan.get() : nullptr;
        ra.state = G.state;
        return ra;
    }

    // The group's heads over the tokens that left its window in this batch, into wr_y's rows of
    // their evicting queries. Decode: at most one token, the step kernel told by wr_m whether one
    // left (the graph replays it at every position). Prefill: the count from the host's position.
    void wr_recurrent(const dev_layer::wr_group &G, int n, bool decode) {
        rec_args ra = wr_rec_args(G);
        ra.q = wr_q.get(), ra.k = wr_k.get(), ra.v = wr_v.get(), ra.dt = wr_dt.get(), ra.dt_given = true;
        ra.y_ld = nq, ra.y_col = G.y_col.get();
        if (decode) {
            ra.n = 1, ra.y = wr_y.get(), ra.active = wr_m.get();
            launch_recurrent_step(ra, nullptr, stream);
            return;
        }
        const int64_t pos0 = n_past, e0 = std::max<int64_t>(G.S, pos0 - G.W), e1 = pos0 + n - G.W;
        const int64_t m_left = std::max<int64_t>(0, e1 - e0);
        if (m_left == 0) return;
        ra.n = int(m_left), ra.y = wr_y.get() + (e0 + G.W - pos0) * nq;
        if (m_left == 1) launch_recurrent_step(ra, nullptr, stream);
        else launch_recurrent_scan(ra, rec_chunk, wr_scan.get(), stream);
    }

    void layer_forward(int l, int n, bool decode) {
        const dev_layer &D = layers[size_t(l)];
        const int E = hp.n_embd, F = hp.n_ff, ldq = nq + 2 * nkv;
        // The normed input is materialised when a matmul cannot fuse it: prefill, unfused
        // projections, or recurrent heads (their dt reads it).
        const bool fuse_norm = decode && D.R == 0 && D.wr.empty();
        if (!fuse_norm) launch_rmsnorm(x.get(), D.attn_norm.get(), n, E, hp.rms_eps, xn.get(), stream);
        const float *qkv_in = fuse_norm ? x.get() : xn.get();
        const gemv_input qkv_mode = fuse_norm ? gemv_input::rmsnorm : gemv_input::plain;
        if (D.fused_qkv) {
            matmul(D.wqkv, qkv_in, n, qkv.get(), ldq, false, qkv_mode, D.attn_norm.get());
        } else {
            matmul(D.wq, qkv_in, n, qkv.get(), ldq, false, qkv_mode, D.attn_norm.get());
            matmul(D.wk, qkv_in, n, qkv.get() + nq, ldq, false, qkv_mode, D.attn_norm.get());
            matmul(D.wv, qkv_in, n, qkv.get() + nq + nkv, ldq, false, qkv_mode, D.attn_norm.get());
        }
        op_done("norm + qkv");

        for (size_t gi = 0; gi < D.wr.size(); ++gi) launch_wr_save_q(wr_args_of(D, gi, n, ldq), stream); // before RoPE
        rope_store_args rs;
        rs.qkv = qkv.get(), rs.ld = ldq, rs.n_tokens = n, rs.pos0 = d_pos.get();
        rs.n_head = hp.n_head, rs.n_kv = hp.n_head_kv, rs.hd = hd, rs.rope_dim = hp.rope_dim;
        rs.neox = hp.rope == rope_style::neox, rs.freq_scale = hp.rope_scale, rs.inv_freq = inv_freq.get();
        rs.rot_q = D.rot_q.get(), rs.rot_k = D.rot_k.get(), rs.bias = D.bqkv.get();
        rs.k_cache = k_cache.get(), rs.v_cache = v_cache.get(), rs.slot_of = D.slot_of.get(), rs.n_ctx = params.n_ctx;
        rs.kb = kb.get(), rs.vb = vb.get();
        launch_rope_store(rs, stream);
        op_done("rope + kv store");
        // Window + recurrent groups: the tokens leaving the windows, read before the ring store
        // overwrites their rows (decode stores before attending), and the batch's dt into the rings.
        for (size_t gi = 0; gi < D.wr.size(); ++gi) {
            const dev_layer::wr_group &G = D.wr[gi];
            const wr_args wa = wr_args_of(D, gi, n, ldq);
            rec_args da = wr_rec_args(G);
            da.n = n, da.dt = wr_dtb.get();
            launch_recurrent_dt(da, stream); // the batch's own dt, for the ring
            launch_wr_gather(wa, stream);
            launch_wr_dt_ring(wa, stream);
            wr_recurrent(G, n, decode); // into wr_y, added to the window's output after attention
        }
        if (!D.wr.empty()) op_done("window + recurrent");

        if (D.n_src > 0) {
            attn_args a;
            a.q = qkv.get(), a.q_ld = ldq, a.out = attn.get(), a.out_ld = nq, a.n_tokens = n, a.pos0 = d_pos.get();
            a.hd = hd, a.g = g, a.scale = 1.0f / std::sqrt(float(hd)), a.src = D.src.get(), a.n_src = D.n_src;
            a.kb = kb.get(), a.vb = vb.get(), a.kvb_ld = nkv;
            if (D.gated_wr) a.lse = wr_lse.get(), a.lse_ld = hp.n_head;
            if (recency_window > 0) {
                a.recency_window = recency_window, a.n_bins = n_bins;
                a.stats = d_stats.get() + size_t(l) * hp.n_head * (2 + n_bins);
            }
            if (decode && recency_window == 0) {
                // The split kernel reads window keys from the rings only: store first (position
                // pos overwrites pos - W, which has just left the window).
                launch_ring_store(D.rings.get(), D.n_rings, kb.get(), vb.get(), nkv, hd, d_pos.get(), 1, stream);
                launch_attention_decode(a, n_splits, partials.get(), stream);
            } else {
                launch_attention_prefill(a, false, stream);
                launch_ring_store(D.rings.get(), D.n_rings, kb.get(), vb.get(), nkv, hd, d_pos.get(), n, stream);
            }
            op_done("attention");
        }
        if (D.R > 0) {
            rec_gather_args ga;
            ga.qkv = qkv.get(), ga.ld = ldq, ga.n = n, ga.R = D.R, ga.hd = hd, ga.nq = nq, ga.nkv = nkv;
            ga.head_of = D.head_of.get(), ga.group_of = D.group_of.get();
            ga.mq = D.mq.get(), ga.mk = D.mk.get(), ga.mv = D.mv.get();
            ga.qg = rq.get(), ga.kg = rk.get(), ga.vg = rv.get();
            if (n > 1) launch_recurrent_gather(ga, stream);
            rec_args ra;
            ra.R = D.R, ra.n = n, ra.hd = hd, ra.n_embd = E, ra.xn = xn.get(), ra.xn_ld = E;
            ra.dt_w = D.dt_w.get(), ra.dt_b = D.dt_b.get(), ra.a_log = D.a_log.get(), ra.d = D.d.get();
            ra.delta = D.delta, ra.a_chan = D.a_chan.size() > 0 ? D.a_chan.get() : nullptr;
            ra.q = rq.get(), ra.k = rk.get(), ra.v = rv.get(), ra.dt = rdt.get(), ra.state = D.state;
            ra.y = attn.get(), ra.y_ld = nq, ra.y_col = D.y_col.get();
            if (n == 1) {
                launch_recurrent_step(ra, &ga, stream); // gather, dt and update in one kernel
            } else {
                launch_recurrent_dt(ra, stream);
                launch_recurrent_scan(ra, rec_chunk, rscan.get(), stream);
            }
            op_done("recurrent heads");
        }

        for (size_t gi = 0; gi < D.wr.size(); ++gi) launch_wr_add(wr_args_of(D, gi, n, ldq), wr_y.get(), attn.get(), nq, stream);
        matmul(D.wo, attn.get(), n, x.get(), E, true); // x += W_o attn
        op_done("o_proj");

        if (decode) {
            gate_up_swiglu(D);
            op_done("norm + gate/up");
            matmul(D.w_down, gu.get(), 1, x.get(), E, true); // x += W_down h
            op_done("swiglu + down");
        } else {
            launch_rmsnorm(x.get(), D.ffn_norm.get(), n, E, hp.rms_eps, xn.get(), stream);
            if (D.fused_gu) {
                matmul(D.wgu, xn.get(), n, gu.get(), 2 * F, false);
            } else {
                matmul(D.w_gate, xn.get(), n, gu.get(), 2 * F, false);
                matmul(D.w_up, xn.get(), n, gu.get() + F, 2 * F, false);
            }
            op_done("norm + gate/up");
            launch_swiglu(gu.get(), 2 * F, F, n, F, act.get(), gemm_operand_type(D.w_down.type), stream);
            gemm_act(D.w_down, n, x.get(), E, true);
            op_done("swiglu + down");
        }
    }

    // All kernels of n tokens (tokens and position already in d_tokens / d_pos). Logits of every
    // row into `logits` when all_rows, else of the last row into logits[0..V).
    void forward_kernels(int n, bool all_rows) {
        const int E = hp.n_embd;
        const bool decode = n == 1;
        op_done("start");
        launch_get_rows(token_embd.type, token_embd.data, E, d_tokens.get(), n, x.get(), stream);
        op_done("embedding");
        for (int l = 0; l < hp.n_layer; ++l) layer_forward(l, n, decode);
        if (all_rows && n > 1) {
            launch_rmsnorm(x.get(), output_norm.get(), n, E, hp.rms_eps, xn.get(), stream);
            matmul(output, xn.get(), n, logits.get(), hp.n_vocab, false);
        } else {
            matmul(output, x.get() + size_t(n - 1) * E, 1, logits.get(), hp.n_vocab, false, gemv_input::rmsnorm,
                   output_norm.get());
        }
        op_done("output");
    }

    void capture_decode_graph() {
        cudaGraph_t g0 = nullptr;
        CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
        try {
            forward_kernels(1, false);
        } catch (...) {
            cudaStreamEndCapture(stream, &g0);
            if (g0) cudaGraphDestroy(g0);
            throw;
        }
        CUDA_CHECK(cudaStreamEndCapture(stream, &g0));
        const cudaError_t err = cudaGraphInstantiate(&graph, g0, 0);
        cudaGraphDestroy(g0);
        if (err != cudaSuccess) {
            graph = nullptr;
            fail_cuda(err, "cudaGraphInstantiate(&graph, g0, 0)", __FILE__, __LINE__);
        }
    }

    void forward(const int32_t *tokens, int n, bool all_rows) {
        h_io[0] = n_past;
        std::memcpy(h_io + 2, tokens, sizeof(int32_t) * size_t(n));
        CUDA_CHECK(cudaMemcpyAsync(d_pos.get(), h_io, sizeof(int32_t), cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaMemcpyAsync(d_tokens.get(), h_io + 2, sizeof(int32_t) * size_t(n), cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaEventRecord(ev0, stream));
        const bool graphable = n == 1 && params.decode_graph && recency_window == 0 && !params.profile_ops;
        // Decode kernels overlap their predecessors' tails (PDL, common.cuh); the profile's
        // events between ops would only break the chains.
        const bool overlap = n == 1 && overlap_decode && !params.profile_ops;
        pdl_scope pdl(overlap);
        if (graphable && graph) {
            CUDA_CHECK(cudaGraphLaunch(graph, stream));
        } else if (graphable && decode_calls > 0) {
            // Captured on the second decode step: the first ran every launcher eagerly, so the
            // kernels' shared-memory opt-ins are set outside the capture. A driver that cannot
            // capture the PDL edges gets the graph without them.
            try {
                capture_decode_graph();
            } catch (const error &) {
                if (!pdl_on) throw;
                pdl_on = false;
                capture_decode_graph();
            }
            CUDA_CHECK(cudaGraphLaunch(graph, stream));
        } else {
            forward_kernels(n, all_rows);
        }
        if (overlap && !pdl_on) overlap_decode = false; // the driver refused it: plain launches from now on
        if (n == 1) ++decode_calls;
        profile_collect(n == 1);
        CUDA_CHECK(cudaEventRecord(ev1, stream));
        if (recency_window > 0) {
            // As the CPU: queries at positions >= k count, in every layer that runs attention.
            const int64_t first = std::max<int64_t>(n_past, recency_window);
            const int64_t q = std::max<int64_t>(0, int64_t(n_past) + n - first);
            for (int l = 0; l < hp.n_layer; ++l)
                if (layers[size_t(l)].n_src > 0) stats.n_queries[size_t(l)] += q;
            stats_stale = true;
        }
        n_past += n;
        history.insert(history.end(), tokens, tokens + n);
        last_logits_row = all_rows && n > 1 ? n - 1 : 0;
    }
};

cuda_model::cuda_model(const model &m, const cuda_params &p) {
    if (p.n_ctx <= 0 || p.n_batch <= 0) throw error("cuda_model: n_ctx and n_batch must be positive");
    const cuda_device dev = cuda_device_info(p.device);
    if (!dev.available) throw error("cuda_model: " + dev.error);
    const cuda_memory_plan plan_ = plan(m, p);
    if (!plan_.fits())
        throw error("cuda_model: a context of " + std::to_string(p.n_ctx) + " tokens does not fit: " + plan_.describe() +
                    "; choose a smaller context (-c)");
    impl_ = std::make_unique<impl>(m, p);
    impl &s = *impl_;
    s.mem = plan_;
    s.dev = dev;
    CUDA_CHECK(cudaSetDevice(p.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&s.ev0));
    CUDA_CHECK(cudaEventCreate(&s.ev1));
    CUBLAS_CHECK(cublasCreate(&s.blas));
    CUBLAS_CHECK(cublasSetStream(s.blas, s.stream));
    s.upload();
    s.alloc_scratch();
    CUDA_CHECK(cudaDeviceSynchronize());
}

cuda_model::~cuda_model() = default;

void cuda_model::eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits) {
    impl &s = *impl_;
    const model_hparams &hp = s.hp;
    if (tokens.empty()) throw error("eval: no tokens given");
    if (int64_t(s.n_past) + int64_t(tokens.size()) > s.params.n_ctx)
        throw error("eval: " + std::to_string(tokens.size()) + " tokens do not fit: " + std::to_string(s.n_past) +
                    " of the context's " + std::to_string(s.params.n_ctx) + " positions are used");
    for (int32_t id : tokens)
        if (id < 0 || id >= hp.n_vocab) throw error("eval: token id " + std::to_string(id) + " is outside the vocabulary");
    const int64_t total = int64_t(tokens.size());
    logits_out.resize(size_t(all_logits ? total : 1) * hp.n_vocab);
    for (int64_t done = 0; done < total;) {
        const int n = int(std::min<int64_t>(s.B, total - done));
        const bool last = done + n == total;
        s.forward(tokens.data() + done, n, all_logits);
        if (all_logits) {
            CUDA_CHECK(cudaMemcpyAsync(logits_out.data() + size_t(done) * hp.n_vocab, s.logits.get(),
                                       sizeof(float) * size_t(n) * hp.n_vocab, cudaMemcpyDeviceToHost, s.stream));
        } else if (last) {
            CUDA_CHECK(cudaMemcpyAsync(logits_out.data(), s.logits.get(), sizeof(float) * hp.n_vocab,
                                       cudaMemcpyDeviceToHost, s.stream));
        }
        CUDA_CHECK(cudaStreamSynchronize(s.stream));
        done += n;
    }
}

int32_t cuda_model::decode_greedy(int32_t token) {
    impl &s = *impl_;
    if (s.n_past + 1 > s.params.n_ctx) throw error("decode: the context is full");
    if (token < 0 || token >= s.hp.n_vocab) throw error("decode: token id " + std::to_string(token) + " is outside the vocabulary");
    s.forward(&token, 1, false);
    launch_argmax(s.logits.get(), s.hp.n_vocab, s.d_argmax.get(), s.stream);
    CUDA_CHECK(cudaMemcpyAsync(s.h_io + 1, s.d_argmax.get(), sizeof(int32_t), cudaMemcpyDeviceToHost, s.stream));
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    return s.h_io[1];
}

void cuda_model::reset() {
    impl &s = *impl_;
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    s.n_past = 0;
    s.history.clear();
    s.last_logits_row = -1;
    s.rec_state.zero();
    s.op_ms.clear(); // profile_ops: a new sequence starts a new profile
    for (auto &D : s.layers)
        for (auto &G : D.wr) G.dt_ring.zero();
    // cudaMemset runs on the legacy stream, which does not order itself with the model's
    // non-blocking stream: the next forward must not start before the zeros are written.
    CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_model::truncate(int32_t n) {
    impl &s = *impl_;
    if (n < 0 || n > s.n_past) throw error("truncate: position out of range");
    if (n == s.n_past) return;
    if (n == 0) return reset();
    if (s.mem.recurrent_bytes > 0 || s.mem.window_bytes > 0)
        throw error("truncate: a hybrid model's recurrent state and windows can only be reset to position 0");
    CUDA_CHECK(cudaStreamSynchronize(s.stream)); // no kernel still writes rows past n
    s.n_past = n;
    s.history.resize(size_t(n));
    s.last_logits_row = -1;
}

int32_t cuda_model::n_past() const { return impl_->n_past; }
const std::vector<int32_t> &cuda_model::tokens() const { return impl_->history; }

// The state file's parts are gathered on the host in the file's layout (recur/state_file.h):
// the map (state_layout.h) says which blocks of the device's buffers go where.
void cuda_model::save_state(const std::string &path) const {
    const impl &s = *impl_;
    const model_hparams &hp = s.hp;
    const state_layout L = state_layout_of(s.m);
    const cuda_state_map map = map_cuda_state(s.m);
    CUDA_CHECK(cudaStreamSynchronize(s.stream)); // the copies below go through the legacy stream
    const size_t hd = size_t(s.hd), n = size_t(s.n_past);
    std::vector<uint16_t> kv(2 * size_t(L.attention_groups) * n * hd);
    state_view v;
    v.kv_elem_bytes = 2;
    v.tokens = s.history;
    for (int32_t grp = 0; grp < L.attention_groups; ++grp) {
        uint16_t *k = kv.data() + size_t(2 * grp) * n * hd, *vv = k + n * hd;
        if (n) {
            const size_t at = size_t(grp) * size_t(s.params.n_ctx) * hd;
            CUDA_CHECK(cudaMemcpy(k, s.k_cache.get() + at, n * hd * 2, cudaMemcpyDeviceToHost));
            CUDA_CHECK(cudaMemcpy(vv, s.v_cache.get() + at, n * hd * 2, cudaMemcpyDeviceToHost));
        }
        v.k_rows.push_back(k);
        v.v_rows.push_back(vv);
    }
    std::vector<float> dev_rec(s.rec_state.size()), rec(L.recurrent_floats);
    s.rec_state.download(dev_rec.data(), dev_rec.size());
    for (const state_block &b : map.recurrent)
        std::copy_n(dev_rec.begin() + ptrdiff_t(b.device_at), b.count, rec.begin() + ptrdiff_t(b.file_at));
    std::vector<uint16_t> dev_k(s.ring_k.size()), dev_v(s.ring_v.size());
    std::vector<uint16_t> win_k(L.window_rows * hd), win_v(L.window_rows * hd);
    s.ring_k.download(reinterpret_cast<__half *>(dev_k.data()), dev_k.size());
    s.ring_v.download(reinterpret_cast<__half *>(dev_v.data()), dev_v.size());
    for (const state_block &b : map.windows) {
        std::copy_n(dev_k.begin() + ptrdiff_t(b.device_at * hd), b.count * hd, win_k.begin() + ptrdiff_t(b.file_at * hd));
        std::copy_n(dev_v.begin() + ptrdiff_t(b.device_at * hd), b.count * hd, win_v.begin() + ptrdiff_t(b.file_at * hd));
    }
    std::vector<float> dt;
    dt.reserve(L.dt_ring_floats);
    for (const dev_layer &D : s.layers)
        for (const dev_layer::wr_group &G : D.wr) {
            const size_t at = dt.size();
            dt.resize(at + G.dt_ring.size());
            G.dt_ring.download(dt.data() + at, G.dt_ring.size());
        }
    std::vector<float> logits;
    if (s.last_logits_row >= 0) {
        logits.resize(size_t(hp.n_vocab));
        CUDA_CHECK(cudaMemcpy(logits.data(), s.logits.get() + size_t(s.last_logits_row) * hp.n_vocab,
                              logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
    }
    v.recurrent = rec.data();
    v.window_k = win_k.data();
    v.window_v = win_v.data();
    v.dt_rings = dt.data();
    v.logits = logits.empty() ? nullptr : logits.data();
    write_state_file(path, s.m, v);
}

void cuda_model::load_state(const std::string &path) {
    impl &s = *impl_;
    // Read and checked in full before the device is touched: a bad file changes nothing.
    loaded_state ls = read_state_file(path, s.m, s.params.n_ctx, 2);
    const state_layout L = state_layout_of(s.m);
    const cuda_state_map map = map_cuda_state(s.m);
    CUDA_CHECK(cudaStreamSynchronize(s.stream));
    const size_t hd = size_t(s.hd), n = size_t(ls.n_past());
    for (int32_t grp = 0; grp < L.attention_groups; ++grp) {
        if (!n) break;
        const size_t at = size_t(grp) * size_t(s.params.n_ctx) * hd;
        CUDA_CHECK(cudaMemcpy(s.k_cache.get() + at, ls.k_rows[size_t(grp)], n * hd * 2, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(s.v_cache.get() + at, ls.v_rows[size_t(grp)], n * hd * 2, cudaMemcpyHostToDevice));
    }
    std::vector<float> dev_rec(s.rec_state.size());
    for (const state_block &b : map.recurrent)
        std::copy_n(ls.recurrent.begin() + ptrdiff_t(b.file_at), b.count, dev_rec.begin() + ptrdiff_t(b.device_at));
    s.rec_state.upload(dev_rec.data(), dev_rec.size());
    if (L.window_rows) {
        // The file's rows are bytes (F16, unaligned in the file): copied row block by row block.
        std::vector<uint16_t> dev_k(s.ring_k.size()), dev_v(s.ring_v.size());
        for (const state_block &b : map.windows) {
            std::memcpy(dev_k.data() + b.device_at * hd, ls.window_k + b.file_at * hd * 2, b.count * hd * 2);
            std::memcpy(dev_v.data() + b.device_at * hd, ls.window_v + b.file_at * hd * 2, b.count * hd * 2);
        }
        s.ring_k.upload(reinterpret_cast<const __half *>(dev_k.data()), dev_k.size());
        s.ring_v.upload(reinterpret_cast<const __half *>(dev_v.data()), dev_v.size());
    }
    size_t dt_at = 0;
    for (dev_layer &D : s.layers)
        for (dev_layer::wr_group &G : D.wr) {
            G.dt_ring.upload(ls.dt_rings.data() + dt_at, G.dt_ring.size());
            dt_at += G.dt_ring.size();
        }
    s.last_logits_row = -1;
    if (!ls.logits.empty()) {
        CUDA_CHECK(cudaMemcpy(s.logits.get(), ls.logits.data(), ls.logits.size() * sizeof(float), cudaMemcpyHostToDevice));
        s.last_logits_row = 0;
    }
    // cudaMemcpy from pageable memory may return before its DMA lands, and the legacy stream it
    // uses does not order itself with the model's non-blocking stream: wait for every copy.
    CUDA_CHECK(cudaDeviceSynchronize());
    s.n_past = ls.n_past();
    s.history = std::move(ls.tokens);
}
int32_t cuda_model::n_ctx() const { return impl_->params.n_ctx; }
const cuda_memory_plan &cuda_model::memory() const { return impl_->mem; }
std::string cuda_model::device_name() const { return impl_->dev.name; }

void cuda_model::collect_recency(int32_t window) {
    impl &s = *impl_;
    if (window < 0) throw error("recency window must not be negative");
    s.recency_window = window;
    if (window > 0) {
        s.n_bins = recency_bin(s.params.n_ctx) + 1;
        s.stats.reset(s.hp.n_layer, s.hp.n_head, s.n_bins, window);
        s.d_stats.resize(size_t(s.hp.n_layer) * s.hp.n_head * (2 + s.n_bins));
        s.d_stats.zero();
        CUDA_CHECK(cudaDeviceSynchronize()); // the legacy stream's memset before the model's stream reads it
        s.stats_stale = false;
    }
}

const recency_stats &cuda_model::recency() const {
    impl &s = *impl_;
    if (s.stats_stale && s.recency_window > 0) {
        CUDA_CHECK(cudaStreamSynchronize(s.stream));
        std::vector<double> h(s.d_stats.size());
        s.d_stats.download(h.data(), h.size());
        const int nb = s.n_bins, w = 2 + nb;
        for (size_t lh = 0; lh < size_t(s.hp.n_layer) * s.hp.n_head; ++lh) {
            s.stats.recency_sum[lh] = h[lh * w];
            s.stats.sink_sum[lh] = h[lh * w + 1];
            for (int b = 0; b < nb; ++b) s.stats.hist_sum[lh * nb + size_t(b)] = h[lh * w + 2 + size_t(b)];
        }
        s.stats_stale = false;
    }
    return s.stats;
}

double cuda_model::last_device_seconds() const {
    const impl &s = *impl_;
    CUDA_CHECK(cudaEventSynchronize(s.ev1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, s.ev0, s.ev1));
    return double(ms) * 1e-3;
}

bool cuda_model::decode_overlaps() const { return impl_->overlap_decode; }

std::vector<cuda_op_time> cuda_model::op_times() const { return impl_->op_ms; }

} // namespace recur
