// The recurrent head's sequential forms (recurrent_head_sequential.h): the delta-rule read-out and
// per-channel decay, forward and reverse mode. Included twice, with RECUR_SEQ_NS naming the
// namespace: by recurrent_head_sequential.cpp (baseline x86-64, plus the dispatch) and by
// recurrent_head_sequential_avx2.cpp (compiled with AVX2 + FMA, so the same loops vectorise 8
// wide); the dispatch picks by recurrent_force_scalar and the CPU, as the other kernels do. With a decay per row r of the state (a k dimension),
// a_t[r] = exp(−dt_t·A_r), A_r = exp(a_log + a_chan[r]) (A_r = exp(a_log) without a_chan):
//   additive  S_t[r][c] = a_t[r]·S_{t-1}[r][c] + dt_t·k_t[r]·v_t[c]
//   delta     u_t = S_{t-1}ᵀ k̂_t,  S_t[r][c] = a_t[r]·(S_{t-1}[r][c] − β_t k̂_t[r] u_t[c]) + β_t k̂_t[r] v_t[c]
//   y_t = scale·S_tᵀ q_t + d ⊙ v_t
// (docs/FORMAT.md "Delta rule", "Per-channel decay"). The additive head with one decay per head
// has a chunked (SSD) prefill because its update commutes into matrix products; the delta rule's
// update depends on the state it corrects (its chunked form needs the WY representation of a
// product of Householder-like factors, Gated DeltaNet), and per-channel decays break the one
// decay matrix of the SSD form (GLA needs a second level of chunking). The sequential form costs
// the same O(T·hd²) multiply-adds, about 3 passes over the state per token against the chunked
// form's 2, a small share of a layer's work on a CPU at hd = 64, so it serves prefill, decode and
// training alike and is its own reference.
#include <algorithm>
#include <cmath>
#include <vector>

#include "recur/recurrent_head.h"
#include "recurrent_head_sequential.h"

namespace recur::RECUR_SEQ_NS {

// This build's definitions below must match these (the dispatch declares the same).
RECUR_SEQUENTIAL_FUNCTIONS

namespace {

// Per-channel decay rates A_r: [hd].
void decay_rates(const recurrent_head_weights &w, float *rates) {
    for (int r = 0; r < w.head_dim; ++r)
        rates[r] = std::exp(w.a_log + (w.a_chan ? w.a_chan[r] : 0.0f));
}

// The token's decays a[r] = exp(−dt·A_r); for the delta rule also k̂ = k/‖k‖ and β = 1 − exp(−dt).
struct token_terms {
    float inv_norm = 1, beta = 0;
};

token_terms prepare(const recurrent_head_weights &w, const float *rates, const float *k, float dt, float *a,
                    float *khat) {
    const int hd = w.head_dim;
    for (int r = 0; r < hd; ++r)
        a[r] = std::exp(-dt * rates[r]);
    token_terms t;
    if (w.delta_rule) {
        float kk = 0;
        for (int r = 0; r < hd; ++r)
            kk += k[r] * k[r];
        t.inv_norm = 1.0f / std::sqrt(kk + delta_key_eps);
        t.beta = -std::expm1(-dt);
        for (int r = 0; r < hd; ++r)
            khat[r] = k[r] * t.inv_norm;
    }
    return t;
}

// S_{t-1} (s_in) -> S_t (s_out; may be s_in). u: [hd] scratch, out: u_t (delta rule).
void advance(const recurrent_head_weights &w, const token_terms &tt, const float *a, const float *k,
             const float *khat, const float *v, float dt, const float *s_in, float *s_out, float *u) {
    const int hd = w.head_dim;
    if (w.delta_rule) {
        std::fill(u, u + hd, 0.0f);
        for (int r = 0; r < hd; ++r) {
            const float kr = khat[r];
            const float *si = s_in + size_t(r) * hd;
            for (int c = 0; c < hd; ++c)
                u[c] += kr * si[c];
        }
        for (int r = 0; r < hd; ++r) {
            const float bk = tt.beta * khat[r], ar = a[r];
            const float *si = s_in + size_t(r) * hd;
            float *so = s_out + size_t(r) * hd;
            for (int c = 0; c < hd; ++c)
                so[c] = ar * (si[c] - bk * u[c]) + bk * v[c];
        }
    } else {
        for (int r = 0; r < hd; ++r) {
            const float dk = dt * k[r], ar = a[r];
            const float *si = s_in + size_t(r) * hd;
            float *so = s_out + size_t(r) * hd;
            for (int c = 0; c < hd; ++c)
                so[c] = ar * si[c] + dk * v[c];
        }
    }
}

// y = scale·Sᵀ q + d ⊙ v
void read_out(int hd, float scale, const float *q, const float *v, const float *d, const float *s, float *y) {
    for (int c = 0; c < hd; ++c)
        y[c] = d[c] * v[c];
    for (int r = 0; r < hd; ++r) {
        const float qr = scale * q[r];
        const float *sr = s + size_t(r) * hd;
        for (int c = 0; c < hd; ++c)
            y[c] += qr * sr[c];
    }
}

// Tokens between stored states in the backward (as recurrent_head_grad.cpp).
constexpr int seg_len = 32;


} // namespace

void scan(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
          size_t stride, const float *dt, float *state, float *y, size_t y_stride) {
    const int hd = w.head_dim;
    float small[4 * 256]; // the forward allocates nothing for ordinary head sizes
    std::vector<float> big(hd > 256 ? 4 * size_t(hd) : 0);
    float *rates = hd > 256 ? big.data() : small, *a = rates + hd, *khat = a + hd, *u = khat + hd;
    decay_rates(w, rates);
    const float scale = 1.0f / std::sqrt(float(hd));
    for (int t = 0; t < n_tokens; ++t) {
        const size_t o = size_t(t) * stride;
        const token_terms tt = prepare(w, rates, k + o, dt[t], a, khat);
        advance(w, tt, a, k + o, khat, v + o, dt[t], state, state, u);
        read_out(hd, scale, q + o, v + o, w.d, state, y + size_t(t) * y_stride);
    }
}

void step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt, float *state,
          float *y) {
    scan(w, 1, q, k, v, 0, &dt, state, y, 0); // one token: the strides are never used
}

void scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
                   size_t stride, const float *dt, const float *state0, const float *dy, size_t dy_stride,
                   float *dq, float *dk, float *dv, size_t g_stride, float *ddt, float *dstate,
                   recurrent_head_grads &grads) {
    const int hd = w.head_dim;
    const size_t hh = size_t(hd) * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    const bool delta = w.delta_rule;

    const int n_seg = (n_tokens + seg_len - 1) / seg_len;
    std::vector<float> ckpt(size_t(n_seg) * hh);         // S entering segment s
    std::vector<float> states(size_t(seg_len + 1) * hh); // one segment: S_{c0-1} .. S_{c0+n-1}
    std::vector<float> us(size_t(seg_len) * hd);         // the delta rule's u_t = S_{t-1}ᵀ k̂_t, per token of the segment
    std::vector<float> g(hh), buf(12 * size_t(hd));
    float *rates = buf.data(), *a = rates + hd, *khat = a + hd, *u = khat + hd, *dq_t = u + hd;
    float *g_v = dq_t + hd, *g_u = g_v + hd, *s_g = g_u + hd; // per row: Σ_c G·v, Σ_c G·u, Σ_c S_{t-1}·G
    float *g_k = s_g + hd, *h_k = g_k + hd;                    // per column: Σ_r G·k, Σ_r a_r·G·k
    float *dkey = h_k + hd;                                    // dL/dk (additive) or dL/dk̂ (delta)
    decay_rates(w, rates);

    // Forward once, keeping only the segment entry states.
    std::copy(state0, state0 + hh, ckpt.begin());
    std::copy(state0, state0 + hh, states.begin());
    for (int s = 0; s + 1 < n_seg; ++s) {
        float *cur = states.data();
        for (int t = s * seg_len; t < (s + 1) * seg_len; ++t) {
            const float *kt = k + size_t(t) * stride;
            const token_terms tt = prepare(w, rates, kt, dt[t], a, khat);
            advance(w, tt, a, kt, khat, v + size_t(t) * stride, dt[t], cur, cur, u);
        }
        std::copy(cur, cur + hh, ckpt.begin() + size_t(s + 1) * hh);
    }

    // G = dL/dS_t, starting from dL/dS_{n-1} (what used the final state) without y's part.
    if (dstate)
        std::copy(dstate, dstate + hh, g.begin());
    else
        std::fill(g.begin(), g.end(), 0.0f);
    float da_log = 0.0f;

    for (int s = n_seg - 1; s >= 0; --s) {
        const int c0 = s * seg_len, n = std::min(seg_len, n_tokens - c0);
        std::copy(ckpt.begin() + size_t(s) * hh, ckpt.begin() + size_t(s + 1) * hh, states.begin());
        for (int i = 0; i < n; ++i) {
            const int t = c0 + i;
            const float *kt = k + size_t(t) * stride;
            const token_terms tt = prepare(w, rates, kt, dt[t], a, khat);
            advance(w, tt, a, kt, khat, v + size_t(t) * stride, dt[t], states.data() + size_t(i) * hh,
                    states.data() + size_t(i + 1) * hh, us.data() + size_t(i) * hd);
        }
        for (int i = n - 1; i >= 0; --i) {
            const int t = c0 + i;
            const float *qt = q + size_t(t) * stride, *kt = k + size_t(t) * stride, *vt = v + size_t(t) * stride;
            const float *dyt = dy + size_t(t) * dy_stride;
            const float *s_t = states.data() + size_t(i + 1) * hh, *s_prev = states.data() + size_t(i) * hh;
            const token_terms tt = prepare(w, rates, kt, dt[t], a, khat);
            const float *key = delta ? khat : kt; // what the update writes with
            const float *u_t = us.data() + size_t(i) * hd; // kept by the recomputation above

            // y_t = scale·S_tᵀ q_t + d ⊙ v_t: dq_t = scale·S_t dy_t, and G += scale·q_t dy_tᵀ.
            for (int r = 0; r < hd; ++r) {
                const float *sr = s_t + size_t(r) * hd;
                float *gr = g.data() + size_t(r) * hd;
                const float qr = scale * qt[r];
                float acc = 0;
                for (int c = 0; c < hd; ++c) {
                    acc += sr[c] * dyt[c];
                    gr[c] += qr * dyt[c];
                }
                dq_t[r] = scale * acc;
            }
            // Row and column sums of G that every term below needs (G = dL/dS_t, complete now).
            std::fill(g_k, g_k + hd, 0.0f);
            std::fill(h_k, h_k + hd, 0.0f);
            for (int r = 0; r < hd; ++r) {
                const float *gr = g.data() + size_t(r) * hd, *sp = s_prev + size_t(r) * hd;
                float gv = 0, gu = 0, sg = 0;
                const float kr = key[r], akr = a[r] * key[r];
                for (int c = 0; c < hd; ++c) {
                    gv += gr[c] * vt[c];
                    sg += sp[c] * gr[c];
                    g_k[c] += kr * gr[c];
                    h_k[c] += akr * gr[c];
                }
                if (delta)
                    for (int c = 0; c < hd; ++c)
                        gu += gr[c] * u_t[c];
                g_v[r] = gv, g_u[r] = gu, s_g[r] = sg;
            }
            // dL/da_t[r] (the decay of row r): additive Σ_c G·S_{t-1}; delta Σ_c G·(S_{t-1} − β k̂ uᵀ).
            // Through a_t[r] = exp(−dt·A_r): ∂/∂dt = −A_r·a_t[r], ∂/∂log A_r = −dt·A_r·a_t[r].
            float ddt_t = 0;
            for (int r = 0; r < hd; ++r) {
                const float d_a = delta ? s_g[r] - tt.beta * khat[r] * g_u[r] : s_g[r];
                const float d_log_rate = -d_a * dt[t] * rates[r] * a[r];
                ddt_t += -d_a * rates[r] * a[r];
                da_log += d_log_rate;
                if (grads.a_chan) grads.a_chan[r] += d_log_rate;
            }
            if (delta) {
                // S_t = D·P + β k̂ vᵀ with P = S_{t-1} − β k̂ uᵀ, u = S_{t-1}ᵀ k̂, H = D·G = dL/dP:
                //   dv = β Gᵀk̂,  du = −β Hᵀk̂,  dβ = k̂ᵀG v − k̂ᵀH u,
                //   dk̂ = β G v − β H u + S_{t-1} du,  G_{t-1} = H + k̂ duᵀ.
                float dbeta = 0;
                for (int r = 0; r < hd; ++r) {
                    dbeta += khat[r] * (g_v[r] - a[r] * g_u[r]);
                    dkey[r] = tt.beta * (g_v[r] - a[r] * g_u[r]);
                }
                float *du = h_k; // −β Hᵀk̂, in place
                for (int c = 0; c < hd; ++c)
                    du[c] *= -tt.beta;
                for (int r = 0; r < hd; ++r) {
                    const float *sp = s_prev + size_t(r) * hd;
                    float *gr = g.data() + size_t(r) * hd;
                    const float ar = a[r], kr = khat[r];
                    float acc = 0;
                    for (int c = 0; c < hd; ++c) {
                        acc += sp[c] * du[c];
                        gr[c] = ar * gr[c] + kr * du[c];
                    }
                    dkey[r] += acc;
                }
                ddt_t += dbeta * (1.0f - tt.beta); // β = 1 − exp(−dt)
                if (dk) { // k̂ = k / n: dk = (dk̂ − k̂ (k̂·dk̂)) / n
                    float kd = 0;
                    for (int r = 0; r < hd; ++r)
                        kd += khat[r] * dkey[r];
                    float *o = dk + size_t(t) * g_stride;
                    for (int r = 0; r < hd; ++r)
                        o[r] += (dkey[r] - khat[r] * kd) * tt.inv_norm;
                }
                if (dv) {
                    float *o = dv + size_t(t) * g_stride;
                    for (int c = 0; c < hd; ++c)
                        o[c] += tt.beta * g_k[c] + w.d[c] * dyt[c];
                }
            } else {
                // S_t = D·S_{t-1} + dt·k vᵀ: dk = dt·G v, dv = dt·Gᵀk, ddt += kᵀG v, G_{t-1} = D·G.
                float kgv = 0;
                for (int r = 0; r < hd; ++r)
                    kgv += kt[r] * g_v[r];
                ddt_t += kgv;
                if (dk) {
                    float *o = dk + size_t(t) * g_stride;
                    for (int r = 0; r < hd; ++r)
                        o[r] += dt[t] * g_v[r];
                }
                if (dv) {
                    float *o = dv + size_t(t) * g_stride;
                    for (int c = 0; c < hd; ++c)
                        o[c] += dt[t] * g_k[c] + w.d[c] * dyt[c];
                }
                for (int r = 0; r < hd; ++r) {
                    float *gr = g.data() + size_t(r) * hd;
                    const float ar = a[r];
                    for (int c = 0; c < hd; ++c)
                        gr[c] *= ar;
                }
            }
            if (dq) {
                float *o = dq + size_t(t) * g_stride;
                for (int r = 0; r < hd; ++r)
                    o[r] += dq_t[r];
            }
            if (grads.d)
                for (int c = 0; c < hd; ++c)
                    grads.d[c] += dyt[c] * vt[c];
            if (ddt) ddt[t] += ddt_t;
        }
    }
    grads.a_log += da_log;
    if (dstate) std::copy(g.begin(), g.end(), dstate);
}

} // namespace recur::RECUR_SEQ_NS
