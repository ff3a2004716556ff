// The forward pass on the CPU: batched prefill and one-token decode share one code path.
// Per layer, for a batch of n tokens at positions [n_past, n_past + n):
//   xn = rmsnorm(x) * attn_norm                       x, xn: [n][n_embd]
//   q = Wq xn (+bq), k = Wk xn (+bk), v = Wv xn (+bv)  q: [n][n_head*hd], k, v: [n][n_kv*hd]
//   rope(q), rope(k); k, v appended to the cache       cache: [layer][kv_head][n_ctx][hd]
//   x += Wo attention(q, cache)                        online softmax, never an n x n matrix
//   x += Wdown (silu(Wgate rmsnorm(x)) * Wup rmsnorm(x))
#include "attention_kernels.h"
#include "recur/model.h"
#include "recur/quants.h"
#include "recur/recurrent_head.h"
#include "recur/state_file.h"
#include "recur/thread_pool.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <fstream>
#include <initializer_list>
#include <limits>

namespace recur {

namespace {

// dst = mat · src for one head row (mat: [hd out][hd in], a recurrent head's trained q/k/v
// transform), or a plain copy when the head has no transform (mat == nullptr).
void transform_head_row(float *dst, const float *src, const float *mat, int hd) {
    if (!mat) {
        std::memcpy(dst, src, size_t(hd) * sizeof(float));
        return;
    }
    for (int o = 0; o < hd; ++o) {
        float acc = 0;
        for (int i = 0; i < hd; ++i) acc += mat[size_t(o) * hd + i] * src[i];
        dst[o] = acc;
    }
}

// Keys processed per online-softmax step: the scores of a block stay in L1.
constexpr int attn_key_block = 256;
// Keys per task when a decode step's attention is split across threads.
constexpr int decode_split_keys = 512;
// Tokens per chunk of the recurrent heads' chunked prefill scan.
constexpr int recurrent_chunk = 32; // measured 8-10% faster than 64 on AVX2 (helper timing)

size_t available_memory_bytes() {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (meminfo >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return std::numeric_limits<size_t>::max();
}

std::string mib(size_t bytes) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1024.0 * 1024.0));
    return buf;
}

void rmsnorm(const float *x, const float *weight, float *out, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
    const float scale = float(1.0 / std::sqrt(ss / n + eps));
    for (int i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

} // namespace

struct context::impl {
    const model &m;
    const model_hparams &hp;
    thread_pool pool;
    tensor_type kv_type;
    size_t kv_elem_bytes;
    int32_t n_ctx, n_batch;

    // K and V caches: [n_layer][n_head_kv][n_ctx][head_dim] elements of kv_type. Left
    // uninitialised so pages are only committed as positions are written.
    std::unique_ptr<uint8_t[]> k_cache, v_cache;
    size_t kv_cache_bytes = 0; // each of K and V

    // Which KV groups keep a cache: slot_of[layer][group] is the group's cache slot, -1 when a
    // recurrent head serves it. Slots are numbered across layers.
    std::vector<std::vector<int32_t>> slot_of;
    std::vector<std::vector<int32_t>> attention_groups; // [layer] groups that stay attention
    // Window groups: S attention-sink rows (position p < S at row p) followed by a ring of W K/V
    // rows (position p at row S + p % W) each, [layer][group] -> offset of the group's rows in
    // window_k / window_v in bytes, SIZE_MAX for other groups.
    std::vector<std::vector<size_t>> window_offset;
    std::unique_ptr<uint8_t[]> window_k, window_v;
    size_t window_bytes = 0; // each of K and V
    // Recurrent states: [layer][replaced head][hd][hd] floats, rec_base[layer] = first head's index.
    std::vector<float> rec_state;
    std::vector<size_t> rec_base;
    std::vector<float> rec_scratch; // per thread: chunked-scan scratch + dt[n_batch] + gathered q/k/v/y
    size_t rec_scratch_per_thread = 0;
    // Window + recurrent heads: dt of the last W tokens per head (a ring like the K/V rings, row
    // p % W), because a token's dt (from its xn) is needed when it leaves the window W tokens
    // later and xn is gone by then. dt_ring_off[layer][r] = offset in floats, SIZE_MAX for
    // heads of other kinds.
    std::vector<float> dt_ring;
    std::vector<std::vector<size_t>> dt_ring_off;
    std::vector<float> q_raw; // [n_batch][n_head*hd] unrotated q of a layer with window + recurrent groups
    // [n_batch][n_head] log-sum-exp of the window's scores (sinks included) per query head of a
    // window + recurrent group, for the gated (shared-normaliser) read-out.
    std::vector<float> wr_lse;
    // RoPE cos/sin of positions [evict_pos0, pos0 + n) for rotating evicted keys back, computed
    // once per forward (the widest window + recurrent window back from the batch), [pos][rope_dim/2].
    int32_t wr_wmax = 0;
    int64_t evict_pos0 = 0;
    std::vector<float> evict_cos, evict_sin;

    // Scratch for one batch.
    std::vector<float> x, xn, q, k, v, attn_out, gate, up, logits_rows;
    std::vector<uint8_t> act;         // activations quantised for the integer dot products
    std::vector<float> split_partials; // decode split attention: [group][split] acc, max, sum
    std::vector<float> attn_scratch;  // per thread: scores [group][block] + acc [group][hd] + m, l
    std::vector<float> rope_cos, rope_sin; // [n][rope_dim/2]
    std::vector<double> inv_freq;          // [rope_dim/2]

    // Recency statistics: off when recency_window == 0.
    int32_t recency_window = 0;
    recency_stats stats;
    std::vector<double> stats_scratch; // per thread: [n_head][3 + n_bins] sums for the current layer
    std::vector<key_range> copy_targets; // [position] keys whose weights the copy mass adds
    context::layer_observer observer; // distillation hook (empty: off)

    impl(const model &mm, const context_params &p)
        : m(mm), hp(mm.hparams()), pool(p.n_threads > 0 ? p.n_threads : thread_pool::default_threads()),
          kv_type(p.kv_type), kv_elem_bytes(p.kv_type == tensor_type::F32 ? 4 : 2), n_ctx(p.n_ctx),
          n_batch(p.n_batch) {}

    size_t kv_offset(int layer, int kv_head, int pos) const {
        const int32_t slot = slot_of[size_t(layer)][size_t(kv_head)];
        return (size_t(slot) * n_ctx + pos) * hp.head_dim * kv_elem_bytes;
    }

    // Recurrent heads see unrotated q/k; window groups are attention and keep RoPE.
    bool group_recurrent(int layer, int group) const {
        const hybrid_layer &H = m.hybrid()[size_t(layer)];
        return H.group_replaced[size_t(group)] && H.group_window[size_t(group)] == 0;
    }

    // out_i[t][0..n_out_i) = W_i in[t] for every pair (W_i, out_i). Matrices that read the same
    // input (q/k/v, gate/up) share one activation quantisation and one parallel_for, so a decode
    // step synchronises the threads fewer times.
    void matmul_many(std::initializer_list<std::pair<const weight_matrix *, float *>> jobs, const float *in, int n) {
        const weight_matrix &w0 = *jobs.begin()->first;
        const tensor_type at = activation_type(w0.type);
        for (auto &j : jobs)
            if (activation_type(j.first->type) != at || j.first->n_in != w0.n_in) {
                for (auto &k : jobs) matmul(*k.first, in, n, k.second);
                return;
            }
        const uint8_t *a;
        size_t a_row;
        if (at == tensor_type::F32) {
            a = reinterpret_cast<const uint8_t *>(in);
            a_row = size_t(w0.n_in) * sizeof(float);
        } else {
            a_row = row_bytes(at, w0.n_in);
            uint8_t *dst = act.data();
            pool.parallel_for(n, [&](int64_t r, int) {
                quantize_activation(at, in + r * w0.n_in, dst + r * a_row, w0.n_in);
            });
            a = dst;
        }
        const int nt = pool.n_threads();
        struct tile_plan {
            const weight_matrix *w;
            float *out;
            int64_t rows_per_task, cols_per_task, row_tasks, first_task;
        };
        std::vector<tile_plan> plans;
        int64_t total = 0;
        for (auto &j : jobs) {
            const weight_matrix &w = *j.first;
            tile_plan tp{&w, j.second, 64, 64, 0, total};
            if (n == 1) {
                // Decode: rows split finely so every thread streams its share of the weights.
                tp.rows_per_task = std::max<int64_t>(16, (w.n_out / (int64_t(nt) * 8) + 15) / 16 * 16);
                tp.cols_per_task = 1;
            }
            tp.row_tasks = (w.n_out + tp.rows_per_task - 1) / tp.rows_per_task;
            total += tp.row_tasks * ((n + tp.cols_per_task - 1) / tp.cols_per_task);
            plans.push_back(tp);
        }
        pool.parallel_for(total, [&](int64_t task, int) {
            size_t i = plans.size() - 1;
            while (plans[i].first_task > task) --i;
            const tile_plan &tp = plans[i];
            const int64_t t = task - tp.first_task;
            const int64_t r0 = (t % tp.row_tasks) * tp.rows_per_task, c0 = (t / tp.row_tasks) * tp.cols_per_task;
            const int64_t nr = std::min(tp.rows_per_task, tp.w->n_out - r0);
            const int64_t nc = std::min<int64_t>(tp.cols_per_task, n - c0);
            gemm_block(tp.w->type, tp.w->n_in, tp.w->data + r0 * tp.w->row_bytes, tp.w->row_bytes, nr, a + c0 * a_row,
                       a_row, nc, tp.out + c0 * tp.w->n_out + r0, tp.w->n_out);
        });
    }

    void matmul(const weight_matrix &w, const float *in, int n, float *out) { matmul_many({{&w, out}}, in, n); }

    void prepare_rope(int32_t pos0, int n) {
        const int half = hp.rope_dim / 2;
        if (inv_freq.empty()) {
            inv_freq.resize(half);
            const auto &factors = m.rope_freq_factors();
            for (int i = 0; i < half; ++i) {
                inv_freq[i] = std::pow(double(hp.rope_freq_base), -2.0 * i / hp.rope_dim);
                if (!factors.empty()) inv_freq[i] /= factors[i];
            }
        }
        rope_cos.resize(size_t(n) * half);
        rope_sin.resize(size_t(n) * half);
        for (int t = 0; t < n; ++t) {
            const double p = double(pos0 + t) / hp.rope_scale;
            for (int i = 0; i < half; ++i) {
                rope_cos[size_t(t) * half + i] = float(std::cos(p * inv_freq[i]));
                rope_sin[size_t(t) * half + i] = float(std::sin(p * inv_freq[i]));
            }
        }
    }

    // Rotates n_heads vectors of head_dim for token t in place; heads of replaced groups keep
    // their unrotated q/k (the recurrent head has no positions). heads_per_group: 1 for K.
    void apply_rope(int layer, float *vecs, int n_heads, int heads_per_group, int t) const {
        const int half = hp.rope_dim / 2, hd = hp.head_dim;
        const float *c = rope_cos.data() + size_t(t) * half, *s = rope_sin.data() + size_t(t) * half;
        for (int h = 0; h < n_heads; ++h) {
            if (group_recurrent(layer, h / heads_per_group)) continue;
            float *v = vecs + size_t(h) * hd;
            if (hp.rope == rope_style::normal) {
                for (int i = 0; i < half; ++i) {
                    const float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c[i] - b * s[i];
                    v[2 * i + 1] = a * s[i] + b * c[i];
                }
            } else {
                for (int i = 0; i < half; ++i) {
                    const float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = a * s[i] + b * c[i];
                }
            }
        }
    }

    void store_kv(int layer, int32_t pos0, int n) {
        const int hd = hp.head_dim, n_kv = hp.n_head_kv;
        const auto &groups = attention_groups[size_t(layer)];
        const int n_att = int(groups.size());
        auto store_one = [&](int64_t task, int) {
            const int t = int(task / n_att), h = groups[size_t(task % n_att)];
            const float *ks = k.data() + (size_t(t) * n_kv + h) * hd;
            const float *vs = v.data() + (size_t(t) * n_kv + h) * hd;
            uint8_t *kd = k_cache.get() + kv_offset(layer, h, pos0 + t);
            uint8_t *vd = v_cache.get() + kv_offset(layer, h, pos0 + t);
            if (kv_type == tensor_type::F32) {
                std::memcpy(kd, ks, hd * sizeof(float));
                std::memcpy(vd, vs, hd * sizeof(float));
            } else {
                auto *k16 = reinterpret_cast<uint16_t *>(kd);
                auto *v16 = reinterpret_cast<uint16_t *>(vd);
                for (int d = 0; d < hd; ++d) {
                    k16[d] = fp32_to_fp16(ks[d]);
                    v16[d] = fp32_to_fp16(vs[d]);
                }
            }
        };
        // A decode step stores a few rows: cheaper inline than a thread synchronisation.
        if (n == 1) {
            for (int64_t task = 0; task < n_att; ++task) store_one(task, 0);
        } else {
            pool.parallel_for(int64_t(n) * n_att, store_one);
        }
    }

    // attn_out[t][h*hd..] = softmax(q_t·K[0..pos]ᵀ/√hd) V for every query head of the batch.
    // A run of consecutive key positions [first_pos, first_pos + count) stored as rows `stride`
    // elements apart, F16 or F32.
    struct key_segment {
        const void *k, *v;
        size_t stride;
        bool f32;
        int64_t first_pos;
        int count;
    };

    // attn_out[t][h*hd..] = softmax(q_t·Kᵀ/√hd) V for every query head of the batch, over the
    // whole cache (attention groups) or the last W positions (window groups).
    void attention(int layer, int32_t pos0, int n) {
        const int hd = hp.head_dim, g = hp.group_size(), nkv = hp.n_head_kv * hd;
        const float scale = 1.0f / std::sqrt(float(hd));
        const int n_bins = stats.n_bins;
        const bool collect = recency_window > 0;
        // Per head: running recency, sink and histogram mass, rescaled with the accumulator.
        const size_t stat_floats = collect ? size_t(g) * (3 + n_bins) : 0;
        const size_t per_thread = size_t(g) * attn_key_block + size_t(g) * hd + 2 * size_t(g) + stat_floats;
        attn_scratch.resize(per_thread * pool.n_threads());
        const size_t stat_stride = 3 + size_t(n_bins); // recency, sink, hist[n_bins], copy
        if (collect) stats_scratch.assign(size_t(pool.n_threads()) * hp.n_head * stat_stride, 0.0);
        const hybrid_layer &H = m.hybrid()[size_t(layer)];
        std::vector<int32_t> groups;
        // A decode step over a long cache splits each group's keys across the threads
        // (flash-decoding); otherwise a few groups would leave threads idle.
        const bool split_decode = n == 1 && !collect && pos0 + 1 >= 2 * decode_split_keys;
        if (split_decode) attention_decode_split(layer, pos0);
        else groups = attention_groups[size_t(layer)];
        groups.insert(groups.end(), H.window_groups.begin(), H.window_groups.end());
        const int n_att = int(groups.size());
        const bool f32_cache = kv_type == tensor_type::F32;
        const bool gated_wr = !H.gate_b.empty();
        pool.parallel_for(int64_t(n) * n_att, [&](int64_t task, int thread) {
            const int t = int(task / n_att), kvh = groups[size_t(task % n_att)];
            const int64_t i = int64_t(pos0) + t; // absolute position of this query
            key_segment segs[5];
            int n_segs = 0;
            const int32_t W = H.group_window.empty() ? 0 : H.group_window[size_t(kvh)];
            if (W == 0) {
                segs[n_segs++] = {k_cache.get() + kv_offset(layer, kvh, 0), v_cache.get() + kv_offset(layer, kvh, 0),
                                  size_t(hd), f32_cache, 0, int(i + 1)};
            } else {
                // Positions before the batch come from the sink rows and the ring (possibly
                // wrapping), the batch's own positions from its fp32 K/V rows; both are written
                // after attention. Sinks: positions [0, S) not already inside the window.
                const int64_t lo = std::max<int64_t>(0, i - W + 1);
                const size_t elem = kv_elem_bytes;
                const int32_t S = H.group_sinks[size_t(kvh)];
                const uint8_t *sk = window_k.get() + window_offset[size_t(layer)][size_t(kvh)];
                const uint8_t *sv = window_v.get() + window_offset[size_t(layer)][size_t(kvh)];
                const int64_t sink_end = std::min<int64_t>(S, lo);
                if (sink_end > 0 && pos0 > 0)
                    segs[n_segs++] = {sk, sv, size_t(hd), f32_cache, 0, int(std::min<int64_t>(sink_end, pos0))};
                if (sink_end > pos0)
                    segs[n_segs++] = {k.data() + size_t(kvh) * hd, v.data() + size_t(kvh) * hd, size_t(nkv), true, pos0,
                                      int(sink_end - pos0)};
                const uint8_t *rk = sk + size_t(S) * hd * elem, *rv = sv + size_t(S) * hd * elem;
                for (int64_t p = lo; p < pos0;) {
                    const int64_t row = p % W, run = std::min<int64_t>(pos0 - p, W - row);
                    segs[n_segs++] = {rk + size_t(row) * hd * elem, rv + size_t(row) * hd * elem, size_t(hd), f32_cache,
                                      p, int(run)};
                    p += run;
                }
                const int64_t b0 = std::max<int64_t>(lo, pos0);
                segs[n_segs++] = {k.data() + size_t(b0 - pos0) * nkv + size_t(kvh) * hd,
                                  v.data() + size_t(b0 - pos0) * nkv + size_t(kvh) * hd, size_t(nkv), true, b0,
                                  int(i - b0 + 1)};
            }
            float *scores = attn_scratch.data() + per_thread * thread;
            float *acc = scores + size_t(g) * attn_key_block;
            float *run_max = acc + size_t(g) * hd, *run_sum = run_max + g;
            const float *qg = q.data() + (size_t(t) * hp.n_head + size_t(kvh) * g) * hd;
            std::fill(acc, acc + size_t(g) * hd, 0.0f);
            std::fill(run_max, run_max + g, -std::numeric_limits<float>::infinity());
            std::fill(run_sum, run_sum + g, 0.0f);
            const bool collect_here = collect && i >= recency_window;
            float *stat = run_sum + g; // [g][3 + n_bins]: recency, sink, hist, copy
            const key_range copy_keys = collect ? copy_target_of(i) : key_range{};
            if (collect_here) std::fill(stat, stat + stat_floats, 0.0f);
            for (int sidx = 0; sidx < n_segs; ++sidx) {
                const key_segment &sg = segs[sidx];
                for (int b0 = 0; b0 < sg.count; b0 += attn_key_block) {
                    const int nb = std::min(attn_key_block, sg.count - b0);
                    if (sg.f32)
                        attn_scores_f32(qg, g, hd, static_cast<const float *>(sg.k) + size_t(b0) * sg.stride, sg.stride,
                                        nb, scale, scores);
                    else
                        attn_scores_f16(qg, g, hd, static_cast<const uint16_t *>(sg.k) + size_t(b0) * sg.stride,
                                        sg.stride, nb, scale, scores);
                    for (int h = 0; h < g; ++h) {
                        float *sh = scores + size_t(h) * nb;
                        const float block_max = *std::max_element(sh, sh + nb);
                        const float new_max = std::max(run_max[h], block_max);
                        const float correction = std::exp(run_max[h] - new_max); // 0 on the first block
                        run_sum[h] = run_sum[h] * correction + exp_shift_sum(sh, nb, new_max);
                        run_max[h] = new_max;
                        if (correction != 1.0f)
                            for (int d = 0; d < hd; ++d) acc[size_t(h) * hd + d] *= correction;
                        if (collect_here)
                            accumulate_recency(sh, nb, sg.first_pos + b0, i, copy_keys, correction,
                                               stat + size_t(h) * stat_stride);
                    }
                    if (sg.f32)
                        attn_accum_f32(scores, g, hd, static_cast<const float *>(sg.v) + size_t(b0) * sg.stride,
                                       sg.stride, nb, acc);
                    else
                        attn_accum_f16(scores, g, hd, static_cast<const uint16_t *>(sg.v) + size_t(b0) * sg.stride,
                                       sg.stride, nb, acc);
                }
            }
            float *out = attn_out.data() + (size_t(t) * hp.n_head + size_t(kvh) * g) * hd;
            for (int h = 0; h < g; ++h)
                for (int d = 0; d < hd; ++d) out[size_t(h) * hd + d] = acc[size_t(h) * hd + d] / run_sum[h];
            if (gated_wr && H.group_is(kvh, replacement_kind::window_recurrent))
                for (int h = 0; h < g; ++h)
                    wr_lse[size_t(t) * hp.n_head + size_t(kvh) * g + h] = run_max[h] + std::log(run_sum[h]);
            if (collect_here) {
                double *tot = stats_scratch.data() + (size_t(thread) * hp.n_head + size_t(kvh) * g) * stat_stride;
                for (int h = 0; h < g; ++h)
                    for (size_t s2 = 0; s2 < stat_stride; ++s2)
                        tot[size_t(h) * stat_stride + s2] += double(stat[size_t(h) * stat_stride + s2]) / run_sum[h];
            }
        });
        if (collect) {
            const int64_t first = std::max<int64_t>(pos0, recency_window);
            stats.n_queries[size_t(layer)] += std::max<int64_t>(0, int64_t(pos0) + n - first);
            for (int64_t i = first; i < int64_t(pos0) + n && size_t(i) < copy_targets.size(); ++i)
                stats.n_copy_queries[size_t(layer)] += copy_target_of(i).lo < copy_target_of(i).hi;
            for (int th = 0; th < pool.n_threads(); ++th)
                for (int h = 0; h < hp.n_head; ++h) {
                    const double *tot = stats_scratch.data() + (size_t(th) * hp.n_head + h) * stat_stride;
                    const size_t lh = size_t(layer) * hp.n_head + h;
                    stats.recency_sum[lh] += tot[0];
                    stats.sink_sum[lh] += tot[1];
                    for (int b = 0; b < n_bins; ++b) stats.hist_sum[lh * n_bins + b] += tot[2 + b];
                    stats.copy_sum[lh] += tot[2 + n_bins];
                }
        }
    }

    // Decode (one query at position pos) over the full-attention groups, each group's keys split
    // into chunks of about decode_split_keys processed in parallel; partial softmax states
    // (max, sum, unnormalised output) are merged per group afterwards.
    void attention_decode_split(int layer, int32_t pos) {
        const int hd = hp.head_dim, g = hp.group_size();
        const float scale = 1.0f / std::sqrt(float(hd));
        const auto &groups = attention_groups[size_t(layer)];
        const int n_keys = pos + 1;
        const int splits = std::min((n_keys + decode_split_keys - 1) / decode_split_keys, 4 * pool.n_threads());
        const int per_split = (n_keys + splits - 1) / splits;
        const size_t part = size_t(g) * hd + 2 * size_t(g); // acc [g][hd], max [g], sum [g]
        split_partials.resize(groups.size() * size_t(splits) * part);
        const size_t per_thread = size_t(g) * attn_key_block;
        attn_scratch.resize(std::max(attn_scratch.size(), per_thread * pool.n_threads()));
        const bool f32_cache = kv_type == tensor_type::F32;
        pool.parallel_for(int64_t(groups.size()) * splits, [&](int64_t task, int thread) {
            const int gi = int(task / splits), sp = int(task % splits), kvh = groups[size_t(gi)];
            const int j_begin = sp * per_split, j_end = std::min(n_keys, j_begin + per_split);
            float *acc = split_partials.data() + size_t(task) * part;
            float *run_max = acc + size_t(g) * hd, *run_sum = run_max + g;
            std::fill(acc, acc + size_t(g) * hd, 0.0f);
            std::fill(run_max, run_max + g, -std::numeric_limits<float>::infinity());
            std::fill(run_sum, run_sum + g, 0.0f);
            float *scores = attn_scratch.data() + per_thread * thread;
            const float *qg = q.data() + size_t(kvh) * g * hd;
            const uint8_t *kb = k_cache.get() + kv_offset(layer, kvh, 0), *vb = v_cache.get() + kv_offset(layer, kvh, 0);
            for (int j0 = j_begin; j0 < j_end; j0 += attn_key_block) {
                const int nb = std::min(attn_key_block, j_end - j0);
                if (f32_cache)
                    attn_scores_f32(qg, g, hd, reinterpret_cast<const float *>(kb) + size_t(j0) * hd, hd, nb, scale, scores);
                else
                    attn_scores_f16(qg, g, hd, reinterpret_cast<const uint16_t *>(kb) + size_t(j0) * hd, hd, nb, scale,
                                    scores);
                for (int h = 0; h < g; ++h) {
                    float *sh = scores + size_t(h) * nb;
                    const float new_max = std::max(run_max[h], *std::max_element(sh, sh + nb));
                    const float correction = std::exp(run_max[h] - new_max);
                    run_sum[h] = run_sum[h] * correction + exp_shift_sum(sh, nb, new_max);
                    run_max[h] = new_max;
                    if (correction != 1.0f)
                        for (int d = 0; d < hd; ++d) acc[size_t(h) * hd + d] *= correction;
                }
                if (f32_cache)
                    attn_accum_f32(scores, g, hd, reinterpret_cast<const float *>(vb) + size_t(j0) * hd, hd, nb, acc);
                else
                    attn_accum_f16(scores, g, hd, reinterpret_cast<const uint16_t *>(vb) + size_t(j0) * hd, hd, nb, acc);
            }
        });
        for (size_t gi = 0; gi < groups.size(); ++gi) {
            const int kvh = groups[gi];
            float *out = attn_out.data() + size_t(kvh) * g * hd;
            for (int h = 0; h < g; ++h) {
                float m_all = -std::numeric_limits<float>::infinity();
                for (int sp = 0; sp < splits; ++sp)
                    m_all = std::max(m_all, split_partials[(gi * splits + sp) * part + size_t(g) * hd + h]);
                double sum = 0;
                std::vector<double> o(size_t(hd), 0.0);
                for (int sp = 0; sp < splits; ++sp) {
                    const float *pp = split_partials.data() + (gi * splits + sp) * part;
                    const float w = std::exp(pp[size_t(g) * hd + h] - m_all);
                    sum += double(w) * pp[size_t(g) * hd + g + h];
                    for (int d = 0; d < hd; ++d) o[size_t(d)] += double(w) * pp[size_t(h) * hd + d];
                }
                for (int d = 0; d < hd; ++d) out[size_t(h) * hd + d] = float(o[size_t(d)] / sum);
            }
        }
    }

    // Writes the batch's positions below S into each window group's sink rows and its last W
    // positions into the ring.
    void store_window(int layer, int32_t pos0, int n) {
        const hybrid_layer &H = m.hybrid()[size_t(layer)];
        const int hd = hp.head_dim, nkv = hp.n_head_kv * hd;
        for (int32_t grp : H.window_groups) {
            const int32_t W = H.group_window[size_t(grp)], S = H.group_sinks[size_t(grp)];
            uint8_t *rk = window_k.get() + window_offset[size_t(layer)][size_t(grp)];
            uint8_t *rv = window_v.get() + window_offset[size_t(layer)][size_t(grp)];
            auto put = [&](int64_t p, size_t row) {
                const float *ks = k.data() + size_t(p - pos0) * nkv + size_t(grp) * hd;
                const float *vs = v.data() + size_t(p - pos0) * nkv + size_t(grp) * hd;
                const size_t off = row * hd * kv_elem_bytes;
                if (kv_type == tensor_type::F32) {
                    std::memcpy(rk + off, ks, hd * sizeof(float));
                    std::memcpy(rv + off, vs, hd * sizeof(float));
                } else {
                    auto *k16 = reinterpret_cast<uint16_t *>(rk + off);
                    auto *v16 = reinterpret_cast<uint16_t *>(rv + off);
                    for (int d = 0; d < hd; ++d) k16[d] = fp32_to_fp16(ks[d]), v16[d] = fp32_to_fp16(vs[d]);
                }
            };
            for (int64_t p = pos0; p < std::min<int64_t>(S, int64_t(pos0) + n); ++p) put(p, size_t(p));
            for (int64_t p = std::max<int64_t>(pos0, int64_t(pos0) + n - W); p < pos0 + n; ++p) put(p, size_t(S + p % W));
        }
    }

    // The replaced groups' query heads: y = recurrent head(q, k, v, dt(xn)) written where the
    // head's attention output would be. xn still holds the attention-normed input here.
    void recurrent_heads(int layer, int32_t pos0, int n) {
        const hybrid_layer &H = m.hybrid()[size_t(layer)];
        const int g = hp.group_size(), hd = hp.head_dim, nq = hp.n_head * hd, nkv = hp.n_head_kv * hd;
        const int R = int(H.recurrent_groups.size()) * g;
        pool.parallel_for(R, [&](int64_t r, int thread) {
            const int group = H.recurrent_groups[size_t(r / g)], head = group * g + int(r % g);
            if (H.group_is(group, replacement_kind::window_recurrent)) {
                window_recurrent_head(layer, int(r), pos0, n, thread);
                return;
            }
            const recurrent_head_weights w = head_weights(H, int(r));
            float *scratch = rec_scratch.data() + rec_scratch_per_thread * size_t(thread);
            float *dt = scratch + recurrent_scan_scratch_floats(hd, recurrent_chunk);
            float *state = rec_state.data() + (rec_base[size_t(layer)] + size_t(r)) * recurrent_state_floats(hd);
            const float *qh = q.data() + size_t(head) * hd, *kh = k.data() + size_t(group) * hd;
            const float *vh = v.data() + size_t(group) * hd;
            float *y = attn_out.data() + size_t(head) * hd;
            recurrent_compute_dt(w, n, xn.data(), size_t(hp.n_embd), dt);
            const bool mixed = !H.q_proj.empty();
            const float *qs = qh, *ks = kh, *vs = vh;
            size_t stride = size_t(nq);
            if (mixed || nq != nkv) {
                // Gather this head's q/k/v rows into one layout (the scan takes one stride),
                // applying the trained per-head transforms q' = Mq q, k' = Mk k, v' = Mv v.
                float *kq = dt + n_batch, *vq = kq + size_t(n_batch) * hd, *qq = vq + size_t(n_batch) * hd;
                const float *mq = mixed ? H.q_proj.data() + size_t(r) * hd * hd : nullptr;
                const float *mk = mixed ? H.k_proj.data() + size_t(r) * hd * hd : nullptr;
                const float *mv = mixed ? H.v_proj.data() + size_t(r) * hd * hd : nullptr;
                for (int t = 0; t < n; ++t) {
                    transform_head_row(qq + size_t(t) * hd, qh + size_t(t) * nq, mq, hd);
                    transform_head_row(kq + size_t(t) * hd, kh + size_t(t) * nkv, mk, hd);
                    transform_head_row(vq + size_t(t) * hd, vh + size_t(t) * nkv, mv, hd);
                }
                qs = qq, ks = kq, vs = vq, stride = size_t(hd);
            }
            if (n == 1)
                recurrent_step(w, qs, ks, vs, dt[0], state, y);
            else
                recurrent_scan_chunked(w, n, qs, ks, vs, stride, dt, state, y, size_t(nq), recurrent_chunk, scratch);
        });
    }

    // Inverse RoPE of one head vector at position e (in [evict_pos0, pos0 + n)): the same angles
    // as prepare_rope, from the per-forward table.
    void unrope(int64_t e, float *v) const {
        const int half = hp.rope_dim / 2;
        const float *c = evict_cos.data() + size_t(e - evict_pos0) * half, *s = evict_sin.data() + size_t(e - evict_pos0) * half;
        for (int i = 0; i < half; ++i) {
            float &a = hp.rope == rope_style::normal ? v[2 * i] : v[i];
            float &b = hp.rope == rope_style::normal ? v[2 * i + 1] : v[i + half];
            const float x0 = a, y0 = b;
            a = x0 * c[i] + y0 * s[i];
            b = -x0 * s[i] + y0 * c[i];
        }
    }

    // The parameters of recurrent head r of a layer (r indexes H.dt_b, H.a_log: [R] heads ordered
    // by group then head; H.dt_w: [R][n_embd], H.d: [R][head_dim]).
    recurrent_head_weights head_weights(const hybrid_layer &H, int r) const {
        recurrent_head_weights w;
        w.head_dim = hp.head_dim;
        w.n_embd = hp.n_embd;
        w.dt_w = H.dt_w.data() + size_t(r) * hp.n_embd;
        w.dt_b = H.dt_b[size_t(r)];
        w.a_log = H.a_log[size_t(r)];
        w.d = H.d.data() + size_t(r) * hp.head_dim;
        w.delta_rule = H.delta_rule;
        if (!H.a_chan.empty()) w.a_chan = H.a_chan.data() + size_t(r) * hp.head_dim;
        return w;
    }

    // Window + recurrent head r of this layer (docs/FORMAT.md "Window + recurrent"). The window
    // part (softmax over positions [i-W+1, i]) is already in attn_out; this adds the recurrent
    // read-out. Token e enters the head's state when it leaves the window, i.e. at query
    // i = e + W, so over the batch's queries i in [pos0, pos0+n) the scan runs over the
    // m = (pos0+n-W) - max(0, pos0-W) evicted tokens e with
    //   k_e, v_e, dt_e of the evicted token and q_i = q_{e+W} of the query that evicts it:
    //   S_e = a_e S_{e-1} + dt_e k'_e v'_eᵀ,  attn_out_i += S_eᵀ q'_i / √hd + d ⊙ v'_e.
    // Queries i < W have evicted nothing and get no recurrent term. With S sink rows the tokens
    // e < S never leave (they are kept exactly), so the stream starts at e = S: queries i < W + S
    // get no recurrent term. k_e and v_e are taken as the
    // ring holds them (RoPE-rotated k rounded to the cache type, then rotated back), for tokens
    // still in the batch too, so the result does not depend on how a text is cut into batches.
    void window_recurrent_head(int layer, int r, int32_t pos0, int n, int thread) {
        const hybrid_layer &H = m.hybrid()[size_t(layer)];
        const int g = hp.group_size(), hd = hp.head_dim, nq = hp.n_head * hd, nkv = hp.n_head_kv * hd;
        const int group = H.recurrent_groups[size_t(r / g)], head = group * g + r % g;
        const int32_t W = H.group_window[size_t(group)], S = H.group_sinks[size_t(group)];
        const recurrent_head_weights w = head_weights(H, r);
        // Scratch: scan | dt of the batch [n_batch] | dt of the evicted [n_batch] | q', k', v', y [n_batch][hd] | tmp [hd]
        float *scratch = rec_scratch.data() + rec_scratch_per_thread * size_t(thread);
        float *dt_b = scratch + recurrent_scan_scratch_floats(hd, recurrent_chunk), *dt_e = dt_b + n_batch;
        float *qq = dt_e + n_batch, *kq = qq + size_t(n_batch) * hd, *vq = kq + size_t(n_batch) * hd;
        float *yr = vq + size_t(n_batch) * hd, *tmp = yr + size_t(n_batch) * hd;
        float *state = rec_state.data() + (rec_base[size_t(layer)] + size_t(r)) * recurrent_state_floats(hd);
        float *ring_dt = dt_ring.data() + dt_ring_off[size_t(layer)][size_t(r)];
        recurrent_compute_dt(w, n, xn.data(), size_t(hp.n_embd), dt_b);
        const bool mixed = !H.q_proj.empty();
        const float *mq = mixed ? H.q_proj.data() + size_t(r) * hd * hd : nullptr;
        const float *mk = mixed ? H.k_proj.data() + size_t(r) * hd * hd : nullptr;
        const float *mv = mixed ? H.v_proj.data() + size_t(r) * hd * hd : nullptr;
        // A K or V row as the ring holds it, in float: from the ring (before the batch) or from
        // the batch's rows rounded to the cache type.
        auto row_as_cached = [&](int64_t e, bool is_k, float *dst) {
            if (e < pos0) {
                const uint8_t *ring = (is_k ? window_k : window_v).get() + window_offset[size_t(layer)][size_t(group)] +
                                      size_t(S + e % W) * hd * kv_elem_bytes;
                if (kv_type == tensor_type::F32) std::memcpy(dst, ring, hd * sizeof(float));
                else
                    for (int d = 0; d < hd; ++d) dst[d] = fp16_to_fp32(reinterpret_cast<const uint16_t *>(ring)[d]);
            } else {
                const float *src = (is_k ? k : v).data() + size_t(e - pos0) * nkv + size_t(group) * hd;
                if (kv_type == tensor_type::F32) std::memcpy(dst, src, hd * sizeof(float));
                else
                    for (int d = 0; d < hd; ++d) dst[d] = fp16_to_fp32(fp32_to_fp16(src[d]));
            }
        };
        const int64_t e0 = std::max<int64_t>(S, int64_t(pos0) - W), e1 = int64_t(pos0) + n - W;
        const int mm = int(std::max<int64_t>(0, e1 - e0));
        for (int j = 0; j < mm; ++j) {
            const int64_t e = e0 + j, ti = e + W - pos0; // evicted token, its evicting query's batch row
            transform_head_row(qq + size_t(j) * hd, q_raw.data() + size_t(ti) * nq + size_t(head) * hd, mq, hd);
            row_as_cached(e, true, tmp);
            unrope(e, tmp); // the recurrent head reads unrotated k
            transform_head_row(kq + size_t(j) * hd, tmp, mk, hd);
            row_as_cached(e, false, tmp);
            transform_head_row(vq + size_t(j) * hd, tmp, mv, hd);
            dt_e[j] = e < pos0 ? ring_dt[e % W] : dt_b[e - pos0];
        }
        // The batch's last W tokens' dt into the ring (after the evicted ones were read).
        for (int64_t p = std::max<int64_t>(pos0, int64_t(pos0) + n - W); p < pos0 + n; ++p) ring_dt[p % W] = dt_b[p - pos0];
        if (mm == 0) return;
        if (mm == 1)
            recurrent_step(w, qq, kq, vq, dt_e[0], state, yr);
        else
            recurrent_scan_chunked(w, mm, qq, kq, vq, size_t(hd), dt_e, state, yr, size_t(hd), recurrent_chunk, scratch);
        if (H.gate_b.empty()) { // additive read-out
            for (int j = 0; j < mm; ++j) {
                float *out = attn_out.data() + size_t(e0 + j + W - pos0) * nq + size_t(head) * hd;
                for (int d = 0; d < hd; ++d) out[d] += yr[size_t(j) * hd + d];
            }
            return;
        }
        // Shared normaliser: g = Z_out / (Z_window + Z_out) with log Z_out = gate_w·xn_i + gate_b
        // + gate_n·log(n_out) learned and log Z_window the window's own log-sum-exp. At query
        // i = e + W the tokens S..e have left: n_out = e − S + 1.
        const float *gw = H.gate_w.data() + size_t(r) * hp.n_embd;
        for (int j = 0; j < mm; ++j) {
            const int64_t ti = e0 + j + W - pos0;
            float *out = attn_out.data() + size_t(ti) * nq + size_t(head) * hd;
            const float log_n_out = std::log(float(e0 + j - S + 1));
            const float gate = wr_gate(gw, H.gate_b[size_t(r)], H.gate_n[size_t(r)], log_n_out,
                                       xn.data() + size_t(ti) * hp.n_embd, hp.n_embd,
                                       wr_lse[size_t(ti) * hp.n_head + size_t(head)]);
            for (int d = 0; d < hd; ++d) out[d] = (1.0f - gate) * out[d] + gate * yr[size_t(j) * hd + d];
        }
    }

    // The copy-mass target keys of the query at position i, clipped to the keys it sees
    // (empty when it has none).
    key_range copy_target_of(int64_t i) const {
        if (size_t(i) >= copy_targets.size()) return {};
        key_range r = copy_targets[size_t(i)];
        r.lo = std::max(r.lo, 0);
        r.hi = int32_t(std::min<int64_t>(r.hi, i + 1));
        return r.lo < r.hi ? r : key_range{};
    }

    // Adds one key block's unnormalised weights p[0..nb) (keys j0.., query at position i, copy
    // target keys copy_keys) to a head's running sums, after rescaling them by the block's
    // softmax correction.
    void accumulate_recency(const float *p, int nb, int j0, int64_t i, key_range copy_keys, float correction,
                            float *stat) const {
        const int n_bins = stats.n_bins;
        if (correction != 1.0f)
            for (int s2 = 0; s2 < 3 + n_bins; ++s2) stat[s2] *= correction;
        auto range_sum = [&](int64_t lo, int64_t hi) { // keys [lo, hi] clipped to the block
            lo = std::max<int64_t>(lo, j0);
            hi = std::min<int64_t>(hi, int64_t(j0) + nb - 1);
            float sum = 0;
            for (int64_t j = lo; j <= hi; ++j) sum += p[j - j0];
            return sum;
        };
        stat[0] += range_sum(i - recency_window + 1, i);
        if (copy_keys.lo < copy_keys.hi) stat[2 + n_bins] += range_sum(copy_keys.lo, copy_keys.hi - 1);
        if (j0 == 0) stat[1] += p[0];
        const int64_t d_min = i - (int64_t(j0) + nb - 1), d_max = i - j0;
        for (int b = recency_bin(d_min); b <= recency_bin(d_max) && b < n_bins; ++b) {
            const int64_t lo_d = b == 0 ? 0 : (int64_t(1) << (b - 1)), hi_d = b == 0 ? 0 : (int64_t(1) << b) - 1;
            stat[2 + b] += range_sum(i - hi_d, i - lo_d);
        }
    }

    // Runs n tokens at positions [pos0, pos0+n). Writes logits of the rows asked for.
    void forward(const int32_t *tokens, int n, int32_t pos0, bool all_logits, float *logits) {
        const int E = hp.n_embd, hd = hp.head_dim, nq = hp.n_head * hd, nkv = hp.n_head_kv * hd;
        // Embedding rows, dequantised.
        const weight_matrix &emb = m.token_embd();
        for (int t = 0; t < n; ++t)
            dequantize_row(emb.type, emb.data + size_t(tokens[t]) * emb.row_bytes, x.data() + size_t(t) * E, E);
        prepare_rope(pos0, n);
        if (wr_wmax > 0) {
            const int half = hp.rope_dim / 2;
            evict_pos0 = std::max<int64_t>(0, int64_t(pos0) - wr_wmax);
            const int64_t rows = int64_t(pos0) + n - evict_pos0;
            evict_cos.resize(size_t(rows) * half);
            evict_sin.resize(size_t(rows) * half);
            for (int64_t r = 0; r < rows; ++r) {
                const double p = double(evict_pos0 + r) / hp.rope_scale;
                for (int i = 0; i < half; ++i) {
                    evict_cos[size_t(r) * half + i] = float(std::cos(p * inv_freq[size_t(i)]));
                    evict_sin[size_t(r) * half + i] = float(std::sin(p * inv_freq[size_t(i)]));
                }
            }
        }

        for (int l = 0; l < hp.n_layer; ++l) {
            const layer_weights &L = m.layers()[size_t(l)];
            pool.parallel_for(n, [&](int64_t t, int) {
                rmsnorm(x.data() + t * E, L.attn_norm.data(), xn.data() + t * E, E, hp.rms_eps);
            });
            matmul_many({{&L.wq, q.data()}, {&L.wk, k.data()}, {&L.wv, v.data()}}, xn.data(), n);
            const bool has_wr = !dt_ring_off[size_t(l)].empty();
            pool.parallel_for(n, [&](int64_t t, int) {
                float *qt = q.data() + t * nq, *kt = k.data() + t * nkv, *vt = v.data() + t * nkv;
                if (!L.bq.empty())
                    for (int i = 0; i < nq; ++i) qt[i] += L.bq[size_t(i)];
                if (!L.bk.empty())
                    for (int i = 0; i < nkv; ++i) kt[i] += L.bk[size_t(i)];
                if (!L.bv.empty())
                    for (int i = 0; i < nkv; ++i) vt[i] += L.bv[size_t(i)];
                if (has_wr) std::memcpy(q_raw.data() + t * nq, qt, size_t(nq) * sizeof(float));
                apply_rope(l, qt, hp.n_head, hp.group_size(), int(t));
                apply_rope(l, kt, hp.n_head_kv, 1, int(t));
            });
            store_kv(l, pos0, n);
            if (!attention_groups[size_t(l)].empty() || !m.hybrid()[size_t(l)].window_groups.empty())
                attention(l, pos0, n);
            if (!m.hybrid()[size_t(l)].recurrent_groups.empty()) recurrent_heads(l, pos0, n);
            if (!m.hybrid()[size_t(l)].window_groups.empty()) store_window(l, pos0, n);
            if (observer) observer(l, n, xn.data(), attn_out.data()); // distillation hook
            matmul(L.wo, attn_out.data(), n, xn.data());
            pool.parallel_for(n, [&](int64_t t, int) {
                for (int i = 0; i < E; ++i) x[size_t(t) * E + i] += xn[size_t(t) * E + i];
                rmsnorm(x.data() + t * E, L.ffn_norm.data(), xn.data() + t * E, E, hp.rms_eps);
            });
            matmul_many({{&L.w_gate, gate.data()}, {&L.w_up, up.data()}}, xn.data(), n);
            const int F = hp.n_ff;
            pool.parallel_for(n, [&](int64_t t, int) {
                float *gt = gate.data() + t * F;
                const float *ut = up.data() + t * F;
                for (int i = 0; i < F; ++i) gt[i] = gt[i] / (1.0f + std::exp(-gt[i])) * ut[i];
            });
            matmul(L.w_down, gate.data(), n, xn.data());
            pool.parallel_for(n, [&](int64_t t, int) {
                for (int i = 0; i < E; ++i) x[size_t(t) * E + i] += xn[size_t(t) * E + i];
            });
        }

        const int first = all_logits ? 0 : n - 1, rows = n - first;
        for (int t = first; t < n; ++t)
            rmsnorm(x.data() + size_t(t) * E, m.output_norm().data(), xn.data() + size_t(t - first) * E, E, hp.rms_eps);
        matmul(m.output(), xn.data(), rows, logits);
    }
};

context::context(const model &m, const context_params &p) : model_(m), params_(p) {
    const model_hparams &hp = m.hparams();
    if (p.n_ctx <= 0) throw error("context: n_ctx must be positive");
    if (p.n_batch <= 0) throw error("context: n_batch must be positive");
    if (p.kv_type != tensor_type::F16 && p.kv_type != tensor_type::F32)
        throw error("context: the KV cache type must be F16 or F32");
    params_.n_batch = std::min(p.n_batch, p.n_ctx);
    const memory_report need = plan(m, params_);
    const size_t avail = available_memory_bytes();
    if (need.kv_bytes + need.scratch_bytes > avail)
        throw error("context: " + std::to_string(p.n_ctx) + " tokens need " + mib(need.kv_bytes) + " of KV cache and " +
                    mib(need.scratch_bytes) + " of buffers, but only " + mib(avail) +
                    " of memory is available; choose a smaller context (-c)");

    impl_ = std::make_unique<impl>(m, params_);
    impl &s = *impl_;
    int32_t slots = 0;
    size_t rec_heads = 0, dt_ring_floats = 0;
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const hybrid_layer &H = m.hybrid()[size_t(l)];
        s.slot_of.emplace_back(size_t(hp.n_head_kv), -1);
        s.attention_groups.emplace_back();
        for (int32_t grp = 0; grp < hp.n_head_kv; ++grp)
            if (!H.group_replaced[size_t(grp)]) {
                s.slot_of.back()[size_t(grp)] = slots++;
                s.attention_groups.back().push_back(grp);
            }
        s.rec_base.push_back(rec_heads);
        rec_heads += H.recurrent_groups.size() * size_t(hp.group_size());
        s.dt_ring_off.emplace_back();
        for (size_t gi = 0; gi < H.recurrent_groups.size(); ++gi)
            for (int j = 0; j < hp.group_size(); ++j) {
                const int32_t grp = H.recurrent_groups[gi];
                if (!H.group_is(grp, replacement_kind::window_recurrent)) continue;
                s.dt_ring_off.back().resize(H.recurrent_groups.size() * size_t(hp.group_size()), SIZE_MAX);
                s.dt_ring_off.back()[gi * size_t(hp.group_size()) + size_t(j)] = dt_ring_floats;
                s.wr_wmax = std::max(s.wr_wmax, H.group_window[size_t(grp)]);
                dt_ring_floats += size_t(H.group_window[size_t(grp)]);
            }
        s.window_offset.emplace_back(size_t(hp.n_head_kv), SIZE_MAX);
        for (int32_t grp : H.window_groups) {
            s.window_offset.back()[size_t(grp)] = s.window_bytes;
            s.window_bytes += size_t(H.group_window[size_t(grp)] + H.group_sinks[size_t(grp)]) * hp.head_dim * s.kv_elem_bytes;
        }
    }
    s.window_k.reset(new uint8_t[std::max<size_t>(s.window_bytes, 1)]);
    s.window_v.reset(new uint8_t[std::max<size_t>(s.window_bytes, 1)]);
    s.kv_cache_bytes = need.kv_bytes / 2;
    s.k_cache.reset(new uint8_t[std::max<size_t>(s.kv_cache_bytes, 1)]);
    s.v_cache.reset(new uint8_t[std::max<size_t>(s.kv_cache_bytes, 1)]);
    s.rec_state.assign(rec_heads * recurrent_state_floats(hp.head_dim), 0.0f);
    s.dt_ring.assign(dt_ring_floats, 0.0f);
    if (dt_ring_floats > 0) {
        s.q_raw.resize(size_t(params_.n_batch) * hp.n_head * hp.head_dim);
        s.wr_lse.resize(size_t(params_.n_batch) * hp.n_head);
    }
    if (rec_heads > 0) {
        // Recurrent heads need dt + q/k/v [n_batch][hd]; window + recurrent heads two dt rows,
        // q/k/v/y [n_batch][hd] and one row [hd].
        s.rec_scratch_per_thread = recurrent_scan_scratch_floats(hp.head_dim, recurrent_chunk) +
                                   size_t(params_.n_batch) * (2 + 4 * size_t(hp.head_dim)) + size_t(hp.head_dim);
        s.rec_scratch.assign(s.rec_scratch_per_thread * size_t(s.pool.n_threads()), 0.0f);
    }
    const size_t B = size_t(params_.n_batch);
    const size_t nq = size_t(hp.n_head) * hp.head_dim, nkv = size_t(hp.n_head_kv) * hp.head_dim;
    const size_t widest = std::max<size_t>({size_t(hp.n_embd), nq, size_t(hp.n_ff)});
    s.x.resize(B * hp.n_embd);
    s.xn.resize(B * std::max<size_t>(hp.n_embd, nq));
    s.q.resize(B * nq);
    s.k.resize(B * nkv);
    s.v.resize(B * nkv);
    s.attn_out.resize(B * nq);
    s.gate.resize(B * hp.n_ff);
    s.up.resize(B * hp.n_ff);
    s.act.resize(B * widest * sizeof(float));
}

context::~context() = default;

int context::n_threads() const { return impl_->pool.n_threads(); }

void context::eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits,
                   const progress_callback &progress) {
    const model_hparams &hp = model_.hparams();
    if (tokens.empty()) throw error("eval: no tokens given");
    if (int64_t(n_past_) + int64_t(tokens.size()) > params_.n_ctx)
        throw error("eval: " + std::to_string(tokens.size()) + " tokens do not fit: " + std::to_string(n_past_) +
                    " of the context's " + std::to_string(params_.n_ctx) + " positions are used");
    for (int32_t id : tokens)
        if (id < 0 || id >= hp.n_vocab)
            throw error("eval: token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                        std::to_string(hp.n_vocab - 1) + ")");
    const int64_t total = int64_t(tokens.size());
    logits_out.resize(size_t(all_logits ? total : 1) * hp.n_vocab);
    for (int64_t done = 0; done < total;) {
        if (progress && !progress(done, total)) throw cancelled_error("evaluation cancelled");
        const int n = int(std::min<int64_t>(params_.n_batch, total - done));
        const bool last = done + n == total;
        float *dst = all_logits ? logits_out.data() + size_t(done) * hp.n_vocab : logits_out.data();
        if (all_logits || last) {
            impl_->forward(tokens.data() + done, n, n_past_, all_logits, dst);
        } else {
            // Intermediate batches need no logits; the output projection runs on one row only.
            impl_->forward(tokens.data() + done, n, n_past_, false, dst);
        }
        history_.insert(history_.end(), tokens.begin() + done, tokens.begin() + done + n);
        n_past_ += n;
        done += n;
    }
    const float *last = logits_out.data() + (all_logits ? size_t(total - 1) * hp.n_vocab : 0);
    last_logits_.assign(last, last + hp.n_vocab);
    if (progress) progress(total, total);
}

void context::truncate(int32_t n) {
    if (n < 0 || n > n_past_) throw error("truncate: position out of range");
    // A recurrent state holds every token it has seen and cannot be rewound to an earlier
    // position; only a full reset (n = 0) is possible for a hybrid model.
    if (n != n_past_ && n != 0 && (!impl_->rec_state.empty() || impl_->window_bytes > 0))
        throw error("truncate: a hybrid model's recurrent state and windows can only be reset to position 0");
    if (n == 0) std::fill(impl_->rec_state.begin(), impl_->rec_state.end(), 0.0f);
    if (n != n_past_) last_logits_.clear();
    n_past_ = n;
    history_.resize(size_t(n));
}

memory_report context::plan(const model &m, const context_params &p) {
    const model_hparams &hp = m.hparams();
    memory_report r;
    r.n_ctx = p.n_ctx;
    r.weights_bytes = m.weights_bytes();
    const size_t elem = p.kv_type == tensor_type::F32 ? 4 : 2;
    const size_t group_kv = 2 * size_t(p.n_ctx) * hp.head_dim * elem; // K and V of one group
    const size_t head_state = recurrent_state_floats(hp.head_dim) * sizeof(float);
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const hybrid_layer &H = m.hybrid()[size_t(l)];
        layer_memory lm;
        lm.replaced_groups = int32_t(H.replaced_groups.size());
        lm.attention_groups = hp.n_head_kv - lm.replaced_groups;
        lm.kv_bytes = group_kv * size_t(lm.attention_groups);
        lm.recurrent_bytes = head_state * H.recurrent_groups.size() * size_t(hp.group_size());
        for (int32_t grp : H.window_groups) {
            // K and V rows: the ring of W plus S sink rows
            lm.window_bytes += 2 * size_t(H.group_window[size_t(grp)] + H.group_sinks[size_t(grp)]) * hp.head_dim * elem;
            // window + recurrent: plus one float of dt per head and position of the ring
            if (H.group_is(grp, replacement_kind::window_recurrent))
                lm.window_bytes += size_t(H.group_window[size_t(grp)]) * size_t(hp.group_size()) * sizeof(float);
        }
        lm.full_attention_kv_bytes = group_kv * size_t(hp.n_head_kv);
        r.kv_bytes += lm.kv_bytes;
        r.recurrent_bytes += lm.recurrent_bytes;
        r.window_bytes += lm.window_bytes;
        r.full_attention_kv_bytes += lm.full_attention_kv_bytes;
        r.layers.push_back(lm);
    }
    const size_t B = size_t(std::min(p.n_batch, p.n_ctx));
    const size_t nq = size_t(hp.n_head) * hp.head_dim, nkv = size_t(hp.n_head_kv) * hp.head_dim;
    const size_t widest = std::max<size_t>({size_t(hp.n_embd), nq, size_t(hp.n_ff)});
    r.scratch_bytes = sizeof(float) * B * (hp.n_embd + std::max<size_t>(hp.n_embd, nq) + 2 * nq + 2 * nkv + 2 * hp.n_ff) +
                      B * widest * sizeof(float);
    return r;
}

memory_report context::memory() const {
    memory_report r = plan(model_, params_);
    r.n_past = n_past_;
    const model_hparams &hp = model_.hparams();
    const size_t elem = params_.kv_type == tensor_type::F32 ? 4 : 2;
    for (auto &lm : r.layers) {
        lm.kv_used_bytes = 2 * size_t(n_past_) * hp.head_dim * elem * size_t(lm.attention_groups);
        r.kv_used_bytes += lm.kv_used_bytes;
    }
    return r;
}

size_t context::allocated_kv_bytes() const { return 2 * impl_->kv_cache_bytes; }
size_t context::allocated_recurrent_bytes() const { return impl_->rec_state.size() * sizeof(float); }
size_t context::allocated_window_bytes() const { return 2 * impl_->window_bytes + impl_->dt_ring.size() * sizeof(float); }

void context::collect_recency(int32_t window) {
    if (window < 0) throw error("recency window must not be negative");
    impl_->recency_window = window;
    if (window > 0)
        impl_->stats.reset(model_.hparams().n_layer, model_.hparams().n_head, recency_bin(params_.n_ctx) + 1, window);
}

void context::set_copy_targets(std::vector<key_range> targets) { impl_->copy_targets = std::move(targets); }

const recency_stats &context::recency() const { return impl_->stats; }

// distillation hook
void context::set_layer_observer(layer_observer obs) { impl_->observer = std::move(obs); }

} // namespace recur

// ---- state files (the format and its checks: recur/state_file.h) -----------------------------
namespace recur {

void context::save_state(const std::string &path) const {
    const impl &s = *impl_;
    state_view v;
    v.kv_elem_bytes = uint32_t(s.kv_elem_bytes);
    v.tokens = history_;
    for (int l = 0; l < model_.hparams().n_layer; ++l)
        for (int32_t grp : s.attention_groups[size_t(l)]) {
            v.k_rows.push_back(s.k_cache.get() + s.kv_offset(l, grp, 0));
            v.v_rows.push_back(s.v_cache.get() + s.kv_offset(l, grp, 0));
        }
    v.recurrent = s.rec_state.data();
    v.window_k = s.window_k.get();
    v.window_v = s.window_v.get();
    v.dt_rings = s.dt_ring.data();
    v.logits = last_logits_.empty() ? nullptr : last_logits_.data();
    write_state_file(path, model_, v);
}

void context::load_state(const std::string &path) {
    const model_hparams &hp = model_.hparams();
    impl &s = *impl_;
    // Everything is read and checked first, so a damaged file leaves the context untouched.
    loaded_state ls = read_state_file(path, model_, params_.n_ctx, uint32_t(s.kv_elem_bytes));
    const int32_t n_past = ls.n_past();
    const size_t row = size_t(hp.head_dim) * s.kv_elem_bytes;
    size_t i = 0;
    for (int l = 0; l < hp.n_layer; ++l)
        for (int32_t grp : s.attention_groups[size_t(l)]) {
            std::memcpy(s.k_cache.get() + s.kv_offset(l, grp, 0), ls.k_rows[i], row * size_t(n_past));
            std::memcpy(s.v_cache.get() + s.kv_offset(l, grp, 0), ls.v_rows[i], row * size_t(n_past));
            ++i;
        }
    s.rec_state = std::move(ls.recurrent);
    s.dt_ring = std::move(ls.dt_rings);
    if (s.window_bytes) {
        std::memcpy(s.window_k.get(), ls.window_k, s.window_bytes);
        std::memcpy(s.window_v.get(), ls.window_v, s.window_bytes);
    }
    history_ = std::move(ls.tokens);
    n_past_ = n_past;
    last_logits_ = std::move(ls.logits);
}

} // namespace recur
