// Gradients of the recurrent head (recurrent_head.h, "gradients"): reverse mode of the sequential
// recurrence with checkpointed recomputation of the states, and the chain through dt's softplus.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "recur/error.h"
#include "recur/recurrent_head.h"
#include "recurrent_head_sequential.h"
#include "recurrent_head_kernels.h"

namespace recur {

namespace {
// Tokens between stored states. The backward keeps ceil(n/seg) checkpoints plus one segment's
// seg + 1 states: for 4096 tokens at hd = 64 that is (128 + 33) · 16 KiB ≈ 2.5 MiB. 32 measured
// fastest (7.7 ms vs 8.6 ms for 16 or 64 at T = 4096, hd = 64): one segment's states stay in L2.
constexpr int seg_len = 32;
} // namespace

void recurrent_scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,
                             const float *v, size_t stride, const float *dt, const float *state0,
                             const float *dy, size_t dy_stride, float *dq, float *dk, float *dv,
                             size_t g_stride, float *ddt, float *dstate, recurrent_head_grads &grads) {
    if (w.head_dim <= 0)
        throw error("recurrent_scan_backward: head_dim must be positive, got " + std::to_string(w.head_dim));
    if (n_tokens < 0) throw error("recurrent_scan_backward: negative n_tokens " + std::to_string(n_tokens));
    if (n_tokens == 0) return;
    if (w.delta_rule || w.a_chan)
        return sequential::scan_backward(w, n_tokens, q, k, v, stride, dt, state0, dy, dy_stride, dq, dk, dv, g_stride,
                                    ddt, dstate, grads);
    const int hd = w.head_dim;
    const size_t hh = size_t(hd) * hd;
    const rec_kernels::kernel_set kn = rec_kernels::select(hd);
    const float A = std::exp(w.a_log), scale = 1.0f / std::sqrt(float(hd));
    auto decay = [&](int t) { return std::exp(-dt[t] * A); }; // as the forward computes a_t

    const int n_seg = (n_tokens + seg_len - 1) / seg_len;
    std::vector<float> ckpt(size_t(n_seg) * hh);         // S_{s·seg_len - 1}: the state entering segment s
    std::vector<float> states(size_t(seg_len + 1) * hh); // one segment: S_{c0-1} .. S_{c0+n-1}
    std::vector<float> g(hh), tmp(3 * size_t(hd));
    float *dq_t = tmp.data(), *gv = dq_t + hd, *gtk = gv + hd; // per-token outputs of grad_token

    // Forward once, keeping only the segment entry states.
    std::copy(state0, state0 + hh, ckpt.begin());
    std::copy(state0, state0 + hh, states.begin());
    for (int s = 0; s + 1 < n_seg; ++s) {
        float *cur = states.data();
        for (int t = s * seg_len; t < (s + 1) * seg_len; ++t)
            kn.advance(hd, decay(t), dt[t], k + size_t(t) * stride, v + size_t(t) * stride, cur, cur);
        std::copy(cur, cur + hh, ckpt.begin() + size_t(s + 1) * hh);
    }

    // G starts as dL/dS_{n-1}; it is kept one decay behind (a_next is applied inside grad_token,
    // in the same pass that adds the token's own contribution).
    if (dstate)
        std::copy(dstate, dstate + hh, g.begin());
    else
        std::fill(g.begin(), g.end(), 0.0f);
    float a_next = 1.0f, da_log = 0.0f;

    for (int s = n_seg - 1; s >= 0; --s) {
        const int c0 = s * seg_len, n = std::min(seg_len, n_tokens - c0);
        std::copy(ckpt.begin() + size_t(s) * hh, ckpt.begin() + size_t(s + 1) * hh, states.begin());
        for (int i = 0; i < n; ++i) {
            const int t = c0 + i;
            kn.advance(hd, decay(t), dt[t], k + size_t(t) * stride, v + size_t(t) * stride,
                       states.data() + size_t(i) * hh, states.data() + size_t(i + 1) * hh);
        }
        for (int i = n - 1; i >= 0; --i) {
            const int t = c0 + i;
            const float *qt = q + size_t(t) * stride, *kt = k + size_t(t) * stride,
                        *vt = v + size_t(t) * stride;
            const float *dyt = dy + size_t(t) * dy_stride;
            const float a_t = decay(t);
            const float sg =
                kn.grad_token(hd, a_next, scale, qt, dyt, kt, vt, states.data() + size_t(i + 1) * hh,
                              states.data() + size_t(i) * hh, g.data(), dq_t, gv, gtk);
            float kgv = 0;
            for (int r = 0; r < hd; ++r)
                kgv += kt[r] * gv[r];
            if (dq) {
                float *o = dq + size_t(t) * g_stride;
                for (int r = 0; r < hd; ++r)
                    o[r] += dq_t[r];
            }
            if (dk) {
                float *o = dk + size_t(t) * g_stride;
                for (int r = 0; r < hd; ++r)
                    o[r] += dt[t] * gv[r];
            }
            if (dv) {
                float *o = dv + size_t(t) * g_stride;
                for (int c = 0; c < hd; ++c)
                    o[c] += dt[t] * gtk[c] + w.d[c] * dyt[c];
            }
            if (grads.d)
                for (int c = 0; c < hd; ++c)
                    grads.d[c] += dyt[c] * vt[c];
            if (ddt) ddt[t] += kgv - A * a_t * sg;
            da_log += -dt[t] * A * a_t * sg;
            a_next = a_t;
        }
    }
    grads.a_log += da_log;
    if (dstate)
        for (size_t i = 0; i < hh; ++i)
            dstate[i] = a_next * g[i];
}

void recurrent_dt_backward(const recurrent_head_weights &w, int n_tokens, const float *xn, size_t xn_stride,
                           const float *ddt, recurrent_head_grads &grads, float *dxn, size_t dxn_stride) {
    if (w.n_embd <= 0)
        throw error("recurrent_dt_backward: n_embd must be positive, got " + std::to_string(w.n_embd));
    if (!grads.dt_w) throw error("recurrent_dt_backward: grads.dt_w is null");
    const auto dot = rec_kernels::select(w.head_dim).dot;
    const int ne = w.n_embd;
    for (int t = 0; t < n_tokens; ++t) {
        const float *x = xn + size_t(t) * xn_stride;
        const float z = dot(w.dt_w, x, ne) + w.dt_b;
        // d softplus(z)/dz = sigmoid(z), written so that exp never overflows.
        const float sig = z >= 0 ? 1.0f / (1.0f + std::exp(-z)) : std::exp(z) / (1.0f + std::exp(z));
        const float dz = ddt[t] * sig;
        for (int i = 0; i < ne; ++i)
            grads.dt_w[i] += dz * x[i];
        grads.dt_b += dz;
        if (dxn) {
            float *o = dxn + size_t(t) * dxn_stride;
            for (int i = 0; i < ne; ++i)
                o[i] += dz * w.dt_w[i];
        }
    }
}

} // namespace recur
