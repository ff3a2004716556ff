// The delta-rule read-out of the recurrent head (recurrent_head.h, recurrent_head_weights::delta_rule;
// docs/FORMAT.md "Delta rule"): forward and reverse mode, sequential. The additive head has a
// chunked (SSD) prefill because its state update commutes into matrix products; the delta rule's
// update depends on the state it corrects, so its chunked form needs the WY representation of a
// product of Householder-like factors (Gated DeltaNet). The sequential form below costs the same
// O(T·hd²) multiply-adds (about 3 passes over the state per token against the chunked additive
// form's 2), which on a CPU at hd = 64 is a small share of a layer's work, so it serves prefill,
// decode and training alike and is its own reference.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "recur/error.h"
#include "recur/recurrent_head.h"
#include "recurrent_head_delta.h"

namespace recur::delta {

namespace {
// Per-token scalars shared by the forward and the backward, so both compute them identically.
struct token_coeffs {
    float inv_norm; // 1 / sqrt(‖k‖² + eps)
    float beta;     // 1 − exp(−dt): write strength in (0, 1)
    float a;        // exp(−dt·A): decay in (0, 1]
};

inline token_coeffs coeffs(int hd, const float *k, float dt, float A) {
    float kk = 0;
    for (int r = 0; r < hd; ++r)
        kk += k[r] * k[r];
    return {1.0f / std::sqrt(kk + delta_key_eps), -std::expm1(-dt), std::exp(-dt * A)};
}

// S <- a (S − β k̂ uᵀ) + β k̂ vᵀ with u = Sᵀ k̂, i.e. S <- a S + k̂ eᵀ, e = β (v − a u).
// khat: [hd] (already normalised); u, e: [hd] scratch (out: u and e of this token).
// s_in may equal s_out.
inline void advance(int hd, const token_coeffs &c, const float *khat, const float *v, const float *s_in,
                    float *s_out, float *u, float *e) {
    std::fill(u, u + hd, 0.0f);
    for (int r = 0; r < hd; ++r) {
        const float kr = khat[r];
        const float *si = s_in + size_t(r) * hd;
        for (int col = 0; col < hd; ++col)
            u[col] += kr * si[col];
    }
    for (int col = 0; col < hd; ++col)
        e[col] = c.beta * (v[col] - c.a * u[col]);
    for (int r = 0; r < hd; ++r) {
        const float kr = khat[r];
        const float *si = s_in + size_t(r) * hd;
        float *so = s_out + size_t(r) * hd;
        for (int col = 0; col < hd; ++col)
            so[col] = c.a * si[col] + kr * e[col];
    }
}

// y = scale·Sᵀ q + d ⊙ v
inline void read_out(int hd, float scale, const float *q, const float *v, const float *d, const float *s,
                     float *y) {
    for (int col = 0; col < hd; ++col)
        y[col] = d[col] * v[col];
    for (int r = 0; r < hd; ++r) {
        const float qr = scale * q[r];
        const float *sr = s + size_t(r) * hd;
        for (int col = 0; col < hd; ++col)
            y[col] += qr * sr[col];
    }
}

inline void normalise(int hd, const float *k, float inv_norm, float *khat) {
    for (int r = 0; r < hd; ++r)
        khat[r] = k[r] * inv_norm;
}

// Tokens between stored states in the backward (as recurrent_head_grad.cpp).
constexpr int seg_len = 32;
} // namespace

void step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt, float *state,
          float *y, float *scratch) {
    const int hd = w.head_dim;
    const token_coeffs c = coeffs(hd, k, dt, std::exp(w.a_log));
    float *khat = scratch, *u = khat + hd, *e = u + hd;
    normalise(hd, k, c.inv_norm, khat);
    advance(hd, c, khat, v, state, state, u, e);
    read_out(hd, 1.0f / std::sqrt(float(hd)), q, v, w.d, state, y);
}

void scan(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
          size_t stride, const float *dt, float *state, float *y, size_t y_stride) {
    const int hd = w.head_dim;
    float small[3 * 256]; // the forward allocates nothing for ordinary head sizes
    std::vector<float> big(hd > 256 ? 3 * size_t(hd) : 0);
    float *scratch = hd > 256 ? big.data() : small;
    for (int t = 0; t < n_tokens; ++t) {
        const size_t o = size_t(t) * stride;
        step(w, q + o, k + o, v + o, dt[t], state, y + size_t(t) * y_stride, scratch);
    }
}

void scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
                   size_t stride, const float *dt, const float *state0, const float *dy, size_t dy_stride,
                   float *dq, float *dk, float *dv, size_t g_stride, float *ddt, float *dstate,
                   recurrent_head_grads &grads) {
    const int hd = w.head_dim;
    const size_t hh = size_t(hd) * hd;
    const float A = std::exp(w.a_log), scale = 1.0f / std::sqrt(float(hd));

    const int n_seg = (n_tokens + seg_len - 1) / seg_len;
    std::vector<float> ckpt(size_t(n_seg) * hh);         // S entering segment s
    std::vector<float> states(size_t(seg_len + 1) * hh); // one segment: S_{c0-1} .. S_{c0+n-1}
    std::vector<float> g(hh), buf(8 * size_t(hd));
    float *khat = buf.data(), *u = khat + hd, *e = u + hd, *de = e + hd, *dkhat = de + hd, *dq_t = dkhat + hd;

    // Forward once, keeping only the segment entry states.
    std::copy(state0, state0 + hh, ckpt.begin());
    std::copy(state0, state0 + hh, states.begin());
    for (int s = 0; s + 1 < n_seg; ++s) {
        float *cur = states.data();
        for (int t = s * seg_len; t < (s + 1) * seg_len; ++t) {
            const float *kt = k + size_t(t) * stride;
            const token_coeffs c = coeffs(hd, kt, dt[t], A);
            normalise(hd, kt, c.inv_norm, khat);
            advance(hd, c, khat, v + size_t(t) * stride, cur, cur, u, e);
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
            const token_coeffs c = coeffs(hd, kt, dt[t], A);
            normalise(hd, kt, c.inv_norm, khat);
            advance(hd, c, khat, v + size_t(t) * stride, states.data() + size_t(i) * hh,
                    states.data() + size_t(i + 1) * hh, u, e);
        }
        for (int i = n - 1; i >= 0; --i) {
            const int t = c0 + i;
            const float *qt = q + size_t(t) * stride, *kt = k + size_t(t) * stride, *vt = v + size_t(t) * stride;
            const float *dyt = dy + size_t(t) * dy_stride;
            const float *s_t = states.data() + size_t(i + 1) * hh, *s_prev = states.data() + size_t(i) * hh;
            const token_coeffs c = coeffs(hd, kt, dt[t], A);
            normalise(hd, kt, c.inv_norm, khat);
            // u and e of this token, from S_{t-1}.
            std::fill(u, u + hd, 0.0f);
            for (int r = 0; r < hd; ++r)
                for (int col = 0; col < hd; ++col)
                    u[col] += khat[r] * s_prev[size_t(r) * hd + col];
            for (int col = 0; col < hd; ++col)
                e[col] = c.beta * (vt[col] - c.a * u[col]);

            // y_t = scale·S_tᵀ q_t + d ⊙ v_t: dq_t = scale·S_t dy_t, and G += scale·q_t dy_tᵀ.
            for (int r = 0; r < hd; ++r) {
                const float *sr = s_t + size_t(r) * hd;
                float *gr = g.data() + size_t(r) * hd;
                const float qr = scale * qt[r];
                float acc = 0;
                for (int col = 0; col < hd; ++col) {
                    acc += sr[col] * dyt[col];
                    gr[col] += qr * dyt[col];
                }
                dq_t[r] = scale * acc;
            }
            // S_t = a S_{t-1} + k̂ eᵀ: de = Gᵀ k̂, dk̂ = G e (+ the path through u below),
            // da = <S_{t-1}, G> (+ through e).
            std::fill(de, de + hd, 0.0f);
            float sg = 0;
            for (int r = 0; r < hd; ++r) {
                const float *gr = g.data() + size_t(r) * hd, *sp = s_prev + size_t(r) * hd;
                float ge = 0;
                for (int col = 0; col < hd; ++col) {
                    de[col] += khat[r] * gr[col];
                    ge += gr[col] * e[col];
                    sg += sp[col] * gr[col];
                }
                dkhat[r] = ge;
            }
            // e = β (v − a u): dv = β de, dβ = de·(v − a u), da −= β de·u, du = −aβ de;
            // u = S_{t-1}ᵀ k̂: dk̂ += S_{t-1} du, and dS_{t-1} gets k̂ duᵀ.
            float dbeta = 0, de_u = 0;
            for (int col = 0; col < hd; ++col) {
                dbeta += de[col] * (vt[col] - c.a * u[col]);
                de_u += de[col] * u[col];
            }
            const float da = sg - c.beta * de_u, ab = c.a * c.beta;
            for (int r = 0; r < hd; ++r) {
                const float *sp = s_prev + size_t(r) * hd;
                float acc = 0;
                for (int col = 0; col < hd; ++col)
                    acc += sp[col] * de[col];
                dkhat[r] -= ab * acc;
            }
            // G_{t-1} = a G − aβ k̂ deᵀ
            for (int r = 0; r < hd; ++r) {
                float *gr = g.data() + size_t(r) * hd;
                const float kr = ab * khat[r];
                for (int col = 0; col < hd; ++col)
                    gr[col] = c.a * gr[col] - kr * de[col];
            }
            if (dq) {
                float *o = dq + size_t(t) * g_stride;
                for (int r = 0; r < hd; ++r)
                    o[r] += dq_t[r];
            }
            if (dk) { // k̂ = k / n: dk = (dk̂ − k̂ (k̂·dk̂)) / n
                float kd = 0;
                for (int r = 0; r < hd; ++r)
                    kd += khat[r] * dkhat[r];
                float *o = dk + size_t(t) * g_stride;
                for (int r = 0; r < hd; ++r)
                    o[r] += (dkhat[r] - khat[r] * kd) * c.inv_norm;
            }
            if (dv) {
                float *o = dv + size_t(t) * g_stride;
                for (int col = 0; col < hd; ++col)
                    o[col] += c.beta * de[col] + w.d[col] * dyt[col];
            }
            if (grads.d)
                for (int col = 0; col < hd; ++col)
                    grads.d[col] += dyt[col] * vt[col];
            // β = 1 − exp(−dt): dβ/ddt = 1 − β; a = exp(−dt·A): da/ddt = −A·a, da/da_log = −dt·A·a.
            if (ddt) ddt[t] += dbeta * (1.0f - c.beta) - da * A * c.a;
            da_log += -da * dt[t] * A * c.a;
        }
    }
    grads.a_log += da_log;
    if (dstate) std::copy(g.begin(), g.end(), dstate);
}

} // namespace recur::delta
