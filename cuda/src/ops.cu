// cuda_ops: each op as a host function over host vectors, for the parity tests. Each call
// uploads its inputs, runs exactly the launcher the model runs, and downloads the result.
#include "kernels.cuh"
#include "recur/cuda_backend.h"
#include "recur/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace recur::cuda_ops {

using namespace cuda_detail;

namespace {

template <typename T> dev_buf<T> up(const std::vector<T> &v) {
    dev_buf<T> b(v.size());
    b.upload(v.data(), v.size());
    return b;
}
template <typename T> std::vector<T> down(const dev_buf<T> &b, size_t n) {
    std::vector<T> v(n);
    b.download(v.data(), n);
    return v;
}
dev_buf<uint8_t> up_bytes(const void *p, size_t n) {
    dev_buf<uint8_t> b(n);
    b.upload(static_cast<const uint8_t *>(p), n);
    return b;
}
void sync() { CUDA_CHECK(cudaDeviceSynchronize()); }

void check_matrix(tensor_type t, int64_t n_in, const char *what) {
    require_device();
    require_type(t, what);
    const int64_t be = type_traits(t).block_elems;
    if (n_in <= 0 || n_in % be != 0)
        throw error(std::string(what) + ": row length " + std::to_string(n_in) + " is not a multiple of " +
                    std::to_string(be) + " (" + type_name(uint32_t(t)) + ")");
}

void check_size(size_t got, size_t want, const char *what) {
    if (got != want)
        throw error(std::string("cuda_ops: ") + what + " has " + std::to_string(got) + " values, expected " +
                    std::to_string(want));
}

// The ring of a window group as the engine keeps it: row p % W holds position p, for the last W
// positions before `end` (exclusive).
std::vector<uint16_t> make_rings(const std::vector<uint16_t> &cache, int n_kv, int n_ctx, int hd, int W, int64_t end) {
    std::vector<uint16_t> ring(size_t(n_kv) * W * hd, 0);
    for (int h = 0; h < n_kv; ++h)
        for (int64_t p = std::max<int64_t>(0, end - W); p < end; ++p)
            std::memcpy(&ring[(size_t(h) * W + size_t(p % W)) * hd], &cache[(size_t(h) * n_ctx + size_t(p)) * hd],
                        size_t(hd) * 2);
    return ring;
}

} // namespace

std::vector<float> dequantize(tensor_type t, const void *src, int64_t n) {
    check_matrix(t, n, "dequantize");
    auto s = up_bytes(src, row_bytes(t, n));
    dev_buf<float> out{size_t(n)};
    launch_dequantize_f32(t, s.get(), out.get(), 1, n, nullptr);
    sync();
    return down(out, size_t(n));
}

std::vector<uint16_t> dequantize_f16(tensor_type t, const void *src, int64_t n) {
    check_matrix(t, n, "dequantize_f16");
    auto s = up_bytes(src, row_bytes(t, n));
    dev_buf<__half> out{size_t(n)};
    launch_dequantize_f16(t, s.get(), out.get(), 1, n, nullptr);
    sync();
    std::vector<uint16_t> v(static_cast<size_t>(n));
    CUDA_CHECK(cudaMemcpy(v.data(), out.get(), size_t(n) * 2, cudaMemcpyDeviceToHost));
    return v;
}

std::vector<float> gemv(tensor_type t, const void *w, int64_t n_rows, int64_t n_in, const std::vector<float> &x) {
    check_matrix(t, n_in, "gemv");
    check_size(x.size(), size_t(n_in), "gemv x");
    auto dw = up_bytes(w, size_t(n_rows) * row_bytes(t, n_in));
    auto dx = up(x);
    dev_buf<float> dy{size_t(n_rows)};
    gemv_args a;
    a.type = t, a.w = dw.get(), a.n_rows = n_rows, a.n_in = n_in, a.x = dx.get(), a.y = dy.get();
    launch_gemv(a, nullptr);
    sync();
    return down(dy, size_t(n_rows));
}

std::vector<float> gemv_norm_swiglu(tensor_type t, const void *w_gate, const void *w_up, int64_t n_rows, int64_t n_in,
                                    const std::vector<float> &x, const std::vector<float> &norm_w, float eps) {
    check_matrix(t, n_in, "gemv_norm_swiglu");
    check_size(x.size(), size_t(n_in), "gemv_norm_swiglu x");
    check_size(norm_w.size(), size_t(n_in), "gemv_norm_swiglu norm_w");
    auto dg = up_bytes(w_gate, size_t(n_rows) * row_bytes(t, n_in));
    auto du = up_bytes(w_up, size_t(n_rows) * row_bytes(t, n_in));
    auto dx = up(x), dn = up(norm_w);
    dev_buf<float> dy{size_t(n_rows)};
    gemv_args a;
    a.type = t, a.w = dg.get(), a.w_up = du.get(), a.n_rows = n_rows, a.n_in = n_in, a.x = dx.get(), a.y = dy.get();
    a.input = gemv_input::rmsnorm, a.norm_w = dn.get(), a.eps = eps;
    launch_gemv(a, nullptr);
    sync();
    return down(dy, size_t(n_rows));
}

std::vector<float> gemm(tensor_type t, const void *w, int64_t n_rows, int64_t n_in, const std::vector<float> &x,
                        int64_t n_cols) {
    check_matrix(t, n_in, "gemm");
    check_size(x.size(), size_t(n_in * n_cols), "gemm x");
    const tensor_type op = gemm_operand_type(t);
    const size_t op_elem = op == tensor_type::F32 ? 4 : 2;
    auto dw = up_bytes(w, size_t(n_rows) * row_bytes(t, n_in));
    dev_buf<uint8_t> wdq;
    const void *wop = dw.get();
    if (op != t) { // quantised: dequantised to F16 once, as the model does per matrix in prefill
        wdq.resize(size_t(n_rows * n_in) * 2);
        launch_dequantize_f16(t, dw.get(), reinterpret_cast<__half *>(wdq.get()), n_rows, n_in, nullptr);
        wop = wdq.get();
    }
    auto dx = up(x);
    dev_buf<uint8_t> act(x.size() * op_elem);
    launch_cast(dx.get(), act.get(), op, int64_t(x.size()), nullptr);
    dev_buf<float> out{size_t(n_rows * n_cols)};
    gemm_cublas(cublas_handle(), nullptr, op, wop, act.get(), n_rows, n_in, n_cols, out.get(), n_rows, false);
    sync();
    return down(out, size_t(n_rows * n_cols));
}

std::vector<float> rmsnorm(const std::vector<float> &x, const std::vector<float> &weight, float eps) {
    require_device();
    const int n = int(weight.size());
    if (n == 0 || x.size() % size_t(n) != 0) throw error("cuda_ops::rmsnorm: x is not whole rows of the weight's length");
    auto dx = up(x), dw = up(weight);
    dev_buf<float> out(x.size());
    launch_rmsnorm(dx.get(), dw.get(), int(x.size() / size_t(n)), n, eps, out.get(), nullptr);
    sync();
    return down(out, x.size());
}

void rope(std::vector<float> &x, int n_tokens, int32_t pos0, const rope_params &p) {
    require_device();
    check_size(x.size(), size_t(n_tokens) * p.n_head * p.head_dim, "rope x");
    if (p.rope_dim > p.head_dim || p.rope_dim % 2 != 0) throw error("cuda_ops::rope: rope_dim must be even and <= head_dim");
    const int half = p.rope_dim / 2;
    std::vector<double> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        inv[size_t(i)] = std::pow(double(p.freq_base), -2.0 * i / p.rope_dim);
        if (!p.freq_factors.empty()) inv[size_t(i)] /= p.freq_factors[size_t(i)];
    }
    auto dx = up(x);
    auto dinv = up(inv);
    auto dpos = up(std::vector<int32_t>{pos0});
    std::vector<uint8_t> rot(size_t(p.n_head), 1);
    for (size_t h = 0; h < p.skip_head.size() && h < rot.size(); ++h) rot[h] = p.skip_head[h] ? 0 : 1;
    auto drot = up(rot);
    rope_store_args a;
    a.qkv = dx.get(), a.ld = int64_t(p.n_head) * p.head_dim, a.n_tokens = n_tokens, a.pos0 = dpos.get();
    a.n_head = p.n_head, a.n_kv = 0, a.hd = p.head_dim, a.rope_dim = p.rope_dim, a.neox = p.style == rope_style::neox;
    a.freq_scale = p.freq_scale, a.inv_freq = dinv.get(), a.rot_q = drot.get();
    launch_rope_store(a, nullptr);
    sync();
    dx.download(x.data(), x.size());
}

std::vector<float> swiglu(const std::vector<float> &gate, const std::vector<float> &up_) {
    require_device();
    check_size(up_.size(), gate.size(), "swiglu up");
    std::vector<float> gu(gate);
    gu.insert(gu.end(), up_.begin(), up_.end());
    auto d = up(gu);
    dev_buf<float> out(gate.size());
    const int n = int(gate.size());
    launch_swiglu(d.get(), 2 * int64_t(n), n, 1, n, out.get(), tensor_type::F32, nullptr);
    sync();
    return down(out, gate.size());
}

std::vector<float> add(const std::vector<float> &a, const std::vector<float> &b) {
    require_device();
    check_size(b.size(), a.size(), "add b");
    auto da = up(a), db = up(b);
    launch_add(da.get(), db.get(), int64_t(a.size()), nullptr);
    sync();
    return down(da, a.size());
}

namespace {

struct attention_setup {
    dev_buf<float> q, out;
    dev_buf<uint16_t> k, v, kb, vb, sink_k, sink_v;
    dev_buf<kv_source> src;
    dev_buf<int32_t> pos;
    dev_buf<double> stats;
    dev_buf<float> lse;
    attn_args a;
};

// Uploads a problem: the caches (or, for window groups, rings holding positions before `ring_end`
// and the batch rows), and one source per KV group.
void setup_attention(const attention_problem &p, attention_setup &s, int64_t ring_end) {
    require_device();
    if (p.n_head <= 0 || p.n_head_kv <= 0 || p.n_head % p.n_head_kv != 0) throw error("cuda_ops attention: bad head counts");
    const int hd = p.head_dim, g = p.n_head / p.n_head_kv, nkv = p.n_head_kv * hd;
    if (int64_t(p.pos0) + p.n_tokens > p.n_ctx) throw error("cuda_ops attention: positions beyond n_ctx");
    check_size(p.q.size(), size_t(p.n_tokens) * p.n_head * hd, "attention q");
    check_size(p.k_cache.size(), size_t(p.n_head_kv) * p.n_ctx * hd, "attention k_cache");
    check_size(p.v_cache.size(), size_t(p.n_head_kv) * p.n_ctx * hd, "attention v_cache");
    s.q = up(p.q);
    s.out.resize(p.q.size());
    s.pos = up(std::vector<int32_t>{p.pos0});
    std::vector<kv_source> srcs(static_cast<size_t>(p.n_head_kv));
    if (p.window == 0) {
        s.k = up(p.k_cache);
        s.v = up(p.v_cache);
        for (int h = 0; h < p.n_head_kv; ++h)
            srcs[size_t(h)] = {reinterpret_cast<const __half *>(s.k.get()) + size_t(h) * p.n_ctx * hd,
                               reinterpret_cast<const __half *>(s.v.get()) + size_t(h) * p.n_ctx * hd, h, 0};
    } else {
        s.k = up(make_rings(p.k_cache, p.n_head_kv, p.n_ctx, hd, p.window, ring_end));
        s.v = up(make_rings(p.v_cache, p.n_head_kv, p.n_ctx, hd, p.window, ring_end));
        // Sink rows: position p < sinks at row p, for the positions stored before ring_end.
        const int S = std::max(p.sinks, 0);
        std::vector<uint16_t> sk(size_t(p.n_head_kv) * std::max(S, 1) * hd, 0), sv(sk.size(), 0);
        for (int h = 0; h < p.n_head_kv; ++h)
            for (int64_t q = 0; q < std::min<int64_t>(S, ring_end); ++q) {
                const size_t from = (size_t(h) * p.n_ctx + size_t(q)) * hd, to = (size_t(h) * S + size_t(q)) * hd;
                std::memcpy(&sk[to], &p.k_cache[from], size_t(hd) * 2);
                std::memcpy(&sv[to], &p.v_cache[from], size_t(hd) * 2);
            }
        s.sink_k = up(sk);
        s.sink_v = up(sv);
        std::vector<uint16_t> kb(size_t(p.n_tokens) * nkv), vb(kb.size());
        for (int t = 0; t < p.n_tokens; ++t)
            for (int h = 0; h < p.n_head_kv; ++h)
                for (int d = 0; d < hd; ++d) {
                    const size_t from = (size_t(h) * p.n_ctx + size_t(p.pos0 + t)) * hd + d;
                    kb[size_t(t) * nkv + size_t(h) * hd + d] = p.k_cache[from];
                    vb[size_t(t) * nkv + size_t(h) * hd + d] = p.v_cache[from];
                }
        s.kb = up(kb);
        s.vb = up(vb);
        for (int h = 0; h < p.n_head_kv; ++h)
            srcs[size_t(h)] = {reinterpret_cast<const __half *>(s.k.get()) + size_t(h) * p.window * hd,
                               reinterpret_cast<const __half *>(s.v.get()) + size_t(h) * p.window * hd,
                               h,
                               p.window,
                               reinterpret_cast<const __half *>(s.sink_k.get()) + size_t(h) * S * hd,
                               reinterpret_cast<const __half *>(s.sink_v.get()) + size_t(h) * S * hd,
                               S};
    }
    s.src = up(srcs);
    attn_args &a = s.a;
    a.q = s.q.get(), a.q_ld = int64_t(p.n_head) * hd, a.out = s.out.get(), a.out_ld = a.q_ld;
    a.n_tokens = p.n_tokens, a.pos0 = s.pos.get(), a.hd = hd, a.g = g, a.scale = 1.0f / std::sqrt(float(hd));
    a.src = s.src.get(), a.n_src = p.n_head_kv;
    a.kb = reinterpret_cast<const __half *>(s.kb.get()), a.vb = reinterpret_cast<const __half *>(s.vb.get());
    a.kvb_ld = nkv;
    s.lse.resize(size_t(p.n_tokens) * p.n_head);
    a.lse = s.lse.get(), a.lse_ld = p.n_head;
    if (p.recency_window > 0) {
        if (p.n_bins <= 0) throw error("cuda_ops attention: n_bins must be positive when gathering statistics");
        s.stats.resize(size_t(p.n_head) * (2 + p.n_bins));
        s.stats.zero();
        a.recency_window = p.recency_window, a.n_bins = p.n_bins, a.stats = s.stats.get();
    }
}

} // namespace

attention_result attention_prefill(const attention_problem &p, bool force_scalar) {
    attention_setup s;
    setup_attention(p, s, p.pos0);
    launch_attention_prefill(s.a, force_scalar, nullptr);
    sync();
    attention_result r;
    r.out = down(s.out, p.q.size());
    r.lse = down(s.lse, s.lse.size());
    if (p.recency_window > 0) r.stats = down(s.stats, s.stats.size());
    return r;
}

std::vector<float> attention_decode(const attention_problem &p, int n_splits, std::vector<float> *lse) {
    if (p.n_tokens != 1) throw error("cuda_ops::attention_decode: n_tokens must be 1");
    attention_setup s;
    setup_attention(p, s, int64_t(p.pos0) + 1); // decode stores the ring before attending
    if (n_splits <= 0) n_splits = choose_decode_splits(p.n_ctx, p.n_head_kv, cuda_device_info().sm_count);
    dev_buf<float> partials(decode_partials_floats(p.n_head_kv, s.a.g, p.head_dim, n_splits));
    launch_attention_decode(s.a, n_splits, partials.get(), nullptr);
    sync();
    if (lse) *lse = down(s.lse, s.lse.size());
    return down(s.out, p.q.size());
}

recurrent_result recurrent(const recurrent_problem &p, int chunk) {
    require_device();
    const int R = p.n_heads, n = p.n_tokens, hd = p.head_dim;
    const size_t qkv = size_t(R) * n * hd;
    check_size(p.q.size(), qkv, "recurrent q");
    check_size(p.k.size(), qkv, "recurrent k");
    check_size(p.v.size(), qkv, "recurrent v");
    check_size(p.xn.size(), size_t(n) * p.n_embd, "recurrent xn");
    check_size(p.dt_w.size(), size_t(R) * p.n_embd, "recurrent dt_w");
    check_size(p.d.size(), size_t(R) * hd, "recurrent d");
    check_size(p.state.size(), size_t(R) * hd * hd, "recurrent state");
    if (!p.a_chan.empty()) check_size(p.a_chan.size(), size_t(R) * hd, "recurrent a_chan");
    auto xn = up(p.xn), dt_w = up(p.dt_w), dt_b = up(p.dt_b), a_log = up(p.a_log), d = up(p.d), state = up(p.state);
    dev_buf<float> a_chan;
    if (!p.a_chan.empty()) a_chan = up(p.a_chan);
    dev_buf<float> dt{size_t(R) * n}, y{qkv};
    rec_args a;
    a.R = R, a.n = n, a.hd = hd, a.n_embd = p.n_embd, a.xn = xn.get(), a.xn_ld = p.n_embd;
    a.dt_w = dt_w.get(), a.dt_b = dt_b.get(), a.a_log = a_log.get(), a.d = d.get(), a.dt = dt.get();
    a.state = state.get(), a.y = y.get();
    a.delta = p.delta, a.a_chan = p.a_chan.empty() ? nullptr : a_chan.get();
    launch_recurrent_dt(a, nullptr);
    recurrent_result r;
    if (chunk > 0) {
        auto q = up(p.q), k = up(p.k), v = up(p.v);
        a.q = q.get(), a.k = k.get(), a.v = v.get();
        dev_buf<float> scratch{recurrent_scan_scratch_floats(R, n, hd, chunk)};
        launch_recurrent_scan(a, chunk, scratch.get(), nullptr);
        sync();
        r.y = down(y, qkv);
    } else {
        // Token by token through the decode kernel, with [R][1][hd] slices as the model has them;
        // the kernel computes each token's dt itself, and r.dt returns those.
        std::vector<float> step_dt(size_t(R) * n);
        r.y.assign(qkv, 0.0f);
        dev_buf<float> qt{size_t(R) * hd}, kt{size_t(R) * hd}, vt{size_t(R) * hd}, dtt{size_t(R)}, yt{size_t(R) * hd};
        std::vector<float> hq(static_cast<size_t>(R) * hd), hk(hq.size()), hv(hq.size()), hdt(static_cast<size_t>(R)), hy(hq.size());
        for (int t = 0; t < n; ++t) {
            for (int h = 0; h < R; ++h) {
                const size_t from = (size_t(h) * n + t) * hd;
                std::copy_n(&p.q[from], hd, &hq[size_t(h) * hd]);
                std::copy_n(&p.k[from], hd, &hk[size_t(h) * hd]);
                std::copy_n(&p.v[from], hd, &hv[size_t(h) * hd]);
            }
            qt.upload(hq.data(), hq.size());
            kt.upload(hk.data(), hk.size());
            vt.upload(hv.data(), hv.size());
            rec_args s1 = a;
            s1.n = 1, s1.q = qt.get(), s1.k = kt.get(), s1.v = vt.get(), s1.dt = dtt.get(), s1.y = yt.get();
            s1.xn = xn.get() + size_t(t) * p.n_embd;
            launch_recurrent_step(s1, nullptr, nullptr);
            sync();
            yt.download(hy.data(), hy.size());
            dtt.download(hdt.data(), hdt.size());
            for (int h = 0; h < R; ++h) {
                std::copy_n(&hy[size_t(h) * hd], hd, &r.y[(size_t(h) * n + t) * hd]);
                step_dt[size_t(h) * n + t] = hdt[size_t(h)];
            }
        }
        r.state = down(state, p.state.size());
        r.dt = step_dt;
        return r;
    }
    r.state = down(state, p.state.size());
    r.dt = down(dt, size_t(R) * n);
    return r;
}

int32_t argmax(const std::vector<float> &logits) {
    require_device();
    if (logits.empty()) throw error("cuda_ops::argmax: no logits");
    auto x = up(logits);
    dev_buf<int32_t> out(1);
    launch_argmax(x.get(), int(logits.size()), out.get(), nullptr);
    sync();
    return down(out, 1)[0];
}

std::vector<float> softmax(const std::vector<float> &logits, float temperature) {
    require_device();
    if (logits.empty() || !(temperature > 0)) throw error("cuda_ops::softmax: no logits or a non-positive temperature");
    auto x = up(logits);
    dev_buf<float> out(logits.size());
    launch_softmax(x.get(), int(logits.size()), temperature, out.get(), nullptr);
    sync();
    return down(out, logits.size());
}

} // namespace recur::cuda_ops
