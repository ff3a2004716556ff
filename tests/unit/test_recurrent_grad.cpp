// Gradients of the recurrent head (recurrent_scan_backward, recurrent_dt_backward) against central
// finite differences of an independent double-precision forward (written here from the recurrence
// in recurrent_head.h, not from the code under test), on both kernel sets:
//   L = Σ_t wy_t · y_t + <wS, S_{n-1}>    (a random linear functional, so dL/dy = wy, dL/dS_{n-1} = wS)
// and w.r.t. every input: q, k, v, xn, state0 and the parameters dt_w, dt_b, a_log, d.
// Error per group: max|analytic - fd| / max|fd| (float analytic against a double loss).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "recur/error.h"
#include "recur/recurrent_head.h"

using namespace recur;

namespace {

struct scalar_guard {
    explicit scalar_guard(bool on) { recurrent_force_scalar(on); }
    ~scalar_guard() { recurrent_force_scalar(false); }
};

// Inputs in double (every value is a float, so the float code under test sees the same numbers).
struct gproblem {
    int hd = 0, ne = 0, T = 0;
    size_t stride = 0; // q, k, v rows; > hd on purpose
    std::vector<double> xn, dt_w, d, q, k, v, state0, wy, wS;
    double dt_b = 0, a_log = 0;
    bool delta = false; // the delta-rule read-out (recurrent_head_weights::delta_rule)
    std::vector<double> a_chan; // per-channel decay offsets [hd] (recurrent_head_weights::a_chan); empty: none
};

gproblem make_gproblem(int hd, int ne, int T, uint32_t seed, float a_log = std::log(0.5f)) {
    gproblem p;
    p.hd = hd;
    p.ne = ne;
    p.T = T;
    p.stride = size_t(hd + 3);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto fill = [&](std::vector<double> &x, size_t n, float sc) {
        x.resize(n);
        for (auto &e : x)
            e = double(sc * nd(rng));
    };
    fill(p.xn, size_t(T) * ne, 1.0f);
    fill(p.dt_w, size_t(ne), 0.5f / std::sqrt(float(ne)));
    fill(p.d, size_t(hd), 0.5f);
    fill(p.q, size_t(T) * p.stride, 1.0f);
    fill(p.k, size_t(T) * p.stride, 1.0f);
    fill(p.v, size_t(T) * p.stride, 1.0f);
    fill(p.state0, size_t(hd) * hd, 0.5f);
    fill(p.wy, size_t(T) * hd, 1.0f);
    fill(p.wS, size_t(hd) * hd, 1.0f);
    p.dt_b = -1.5; // dt ~ 0.2: decays ~0.9 per token, memory of tens of tokens
    p.a_log = double(a_log);
    return p;
}

double softplus(double x) {
    return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

double loss_f64(const gproblem &p) {
    const int hd = p.hd;
    const double A = std::exp(p.a_log), scale = 1.0 / std::sqrt(double(hd));
    std::vector<double> S = p.state0;
    double L = 0;
    for (int t = 0; t < p.T; ++t) {
        double z = p.dt_b;
        for (int i = 0; i < p.ne; ++i)
            z += p.dt_w[i] * p.xn[size_t(t) * p.ne + i];
        const double dt = softplus(z);
        std::vector<double> ar(hd); // the decay of each row of S
        for (int r = 0; r < hd; ++r)
            ar[r] = std::exp(-dt * (p.a_chan.empty() ? A : std::exp(p.a_log + p.a_chan[r])));
        const double *q = &p.q[size_t(t) * p.stride], *k = &p.k[size_t(t) * p.stride],
                     *v = &p.v[size_t(t) * p.stride];
        if (p.delta) {
            // S <- a·(I − β k̂ k̂ᵀ)·S + β k̂ vᵀ, written with the projector as a matrix (the code under
            // test never forms it), k̂ = k / sqrt(‖k‖² + eps), β = 1 − exp(−dt).
            double kk = 0;
            for (int r = 0; r < hd; ++r)
                kk += k[r] * k[r];
            const double nrm = std::sqrt(kk + double(delta_key_eps)), beta = 1.0 - std::exp(-dt);
            std::vector<double> kh(hd), P(size_t(hd) * hd), PS(size_t(hd) * hd, 0.0);
            for (int r = 0; r < hd; ++r)
                kh[r] = k[r] / nrm;
            for (int r = 0; r < hd; ++r)
                for (int c = 0; c < hd; ++c)
                    P[size_t(r) * hd + c] = (r == c ? 1.0 : 0.0) - beta * kh[r] * kh[c];
            for (int r = 0; r < hd; ++r)
                for (int m = 0; m < hd; ++m)
                    for (int c = 0; c < hd; ++c)
                        PS[size_t(r) * hd + c] += P[size_t(r) * hd + m] * S[size_t(m) * hd + c];
            for (int r = 0; r < hd; ++r)
                for (int c = 0; c < hd; ++c)
                    S[size_t(r) * hd + c] = ar[r] * PS[size_t(r) * hd + c] + beta * kh[r] * v[c];
        } else {
            for (int r = 0; r < hd; ++r)
                for (int c = 0; c < hd; ++c)
                    S[size_t(r) * hd + c] = ar[r] * S[size_t(r) * hd + c] + dt * k[r] * v[c];
        }
        for (int c = 0; c < hd; ++c) {
            double y = 0;
            for (int r = 0; r < hd; ++r)
                y += S[size_t(r) * hd + c] * q[r];
            y = scale * y + p.d[c] * v[c];
            L += p.wy[size_t(t) * hd + c] * y;
        }
    }
    for (size_t i = 0; i < S.size(); ++i)
        L += p.wS[i] * S[i];
    return L;
}

std::vector<float> to_f(const std::vector<double> &x) {
    return std::vector<float>(x.begin(), x.end());
}

// Analytic gradients from the code under test (float).
struct grads_out {
    std::vector<float> dq, dk, dv, dxn, dstate0, ddt_w, dd, da_chan;
    float ddt_b = 0, da_log = 0;
};

grads_out analytic(const gproblem &p) {
    const int hd = p.hd, T = p.T;
    const auto xn = to_f(p.xn), dt_w = to_f(p.dt_w), d = to_f(p.d), q = to_f(p.q), k = to_f(p.k),
               v = to_f(p.v), s0 = to_f(p.state0), wy = to_f(p.wy);
    recurrent_head_weights w;
    w.head_dim = hd;
    w.n_embd = p.ne;
    w.dt_w = dt_w.data();
    w.dt_b = float(p.dt_b);
    w.a_log = float(p.a_log);
    w.d = d.data();
    w.delta_rule = p.delta;
    const auto a_chan = to_f(p.a_chan);
    if (!a_chan.empty()) w.a_chan = a_chan.data();
    std::vector<float> dt(T);
    recurrent_compute_dt(w, T, xn.data(), size_t(p.ne), dt.data());

    grads_out g;
    g.dq.assign(size_t(T) * p.stride, 0.0f);
    g.dk = g.dq;
    g.dv = g.dq;
    g.dxn.assign(size_t(T) * p.ne, 0.0f);
    g.ddt_w.assign(size_t(p.ne), 0.0f);
    g.dd.assign(size_t(hd), 0.0f);
    g.dstate0 = to_f(p.wS); // in: dL/dS_{n-1}; out: dL/dS_{-1}
    std::vector<float> ddt(T, 0.0f);
    recurrent_head_grads pg;
    pg.dt_w = g.ddt_w.data();
    pg.d = g.dd.data();
    g.da_chan.assign(p.a_chan.size(), 0.0f);
    if (!a_chan.empty()) pg.a_chan = g.da_chan.data();
    recurrent_scan_backward(w, T, q.data(), k.data(), v.data(), p.stride, dt.data(), s0.data(), wy.data(),
                            size_t(hd), g.dq.data(), g.dk.data(), g.dv.data(), p.stride, ddt.data(),
                            g.dstate0.data(), pg);
    recurrent_dt_backward(w, T, xn.data(), size_t(p.ne), ddt.data(), pg, g.dxn.data(), size_t(p.ne));
    g.ddt_b = pg.dt_b;
    g.da_log = pg.a_log;
    return g;
}

// Central difference of loss_f64 in one input; step relative to the value's size.
double fd(gproblem &p, double &x) {
    const double x0 = x, h = 1e-5 * std::max(1.0, std::fabs(x0));
    x = x0 + h;
    const double lp = loss_f64(p);
    x = x0 - h;
    const double lm = loss_f64(p);
    x = x0;
    return (lp - lm) / (2 * h);
}

// Compares the analytic gradient of one input group with finite differences at `idx` (all
// entries when idx is empty); returns max|an - fd| / max|fd|.
double check_group(gproblem &p, const char *name, std::vector<double> &x, const float *an,
                   std::vector<size_t> idx, size_t row_len = 0, size_t row_stride = 0) {
    if (idx.empty())
        for (size_t i = 0; i < x.size(); ++i)
            if (row_len == 0 || i % row_stride < row_len) idx.push_back(i); // skip row padding
    double num = 0, den = 0;
    for (size_t i : idx) {
        const double g = fd(p, x[i]);
        num = std::max(num, std::fabs(double(an[i]) - g));
        den = std::max(den, std::fabs(g));
    }
    const double e = den > 0 ? num / den : num;
    std::printf("  %-7s %5zu entries  max|fd| %.3e  err %.2e\n", name, idx.size(), den, e);
    return e;
}

std::vector<size_t> sample(size_t n_rows, size_t row_len, size_t row_stride, int count, std::mt19937 &rng) {
    std::vector<size_t> out;
    for (int i = 0; i < count; ++i)
        out.push_back(size_t(rng() % n_rows) * row_stride + size_t(rng() % row_len));
    return out;
}

void check_all(gproblem &p, bool sampled, double tol) {
    const grads_out g = analytic(p);
    std::mt19937 rng(7);
    const size_t T = size_t(p.T), hd = size_t(p.hd), ne = size_t(p.ne);
    auto rows = [&](size_t len, size_t st) {
        return sampled ? sample(T, len, st, 24, rng) : std::vector<size_t>{};
    };
    EXPECT_LT(check_group(p, "q", p.q, g.dq.data(), rows(hd, p.stride), hd, p.stride), tol);
    EXPECT_LT(check_group(p, "k", p.k, g.dk.data(), rows(hd, p.stride), hd, p.stride), tol);
    EXPECT_LT(check_group(p, "v", p.v, g.dv.data(), rows(hd, p.stride), hd, p.stride), tol);
    EXPECT_LT(check_group(p, "xn", p.xn, g.dxn.data(), rows(ne, ne)), tol);
    EXPECT_LT(check_group(p, "state0", p.state0, g.dstate0.data(),
                          sampled ? sample(hd, hd, hd, 24, rng) : std::vector<size_t>{}),
              tol);
    EXPECT_LT(check_group(p, "dt_w", p.dt_w, g.ddt_w.data(), {}), tol);
    EXPECT_LT(check_group(p, "d", p.d, g.dd.data(), {}), tol);
    if (!p.a_chan.empty()) {
        EXPECT_LT(check_group(p, "a_chan", p.a_chan, g.da_chan.data(), {}), tol);
    }
    const double fb = fd(p, p.dt_b), fa = fd(p, p.a_log);
    const double eb = std::fabs(g.ddt_b - fb) / std::fabs(fb), ea = std::fabs(g.da_log - fa) / std::fabs(fa);
    std::printf("  dt_b    analytic %.6e fd %.6e err %.2e\n  a_log   analytic %.6e fd %.6e err %.2e\n",
                g.ddt_b, fb, eb, g.da_log, fa, ea);
    EXPECT_LT(eb, tol);
    EXPECT_LT(ea, tol);
}

} // namespace

// Every entry of every input, small head; lengths around the 64-token checkpoint segments.
// hd = 8 takes the AVX2 kernels, hd = 5 the scalar ones.
TEST(RecurrentGrad, MatchesFiniteDifferencesSmall) {
    for (bool scalar : {false, true}) {
        scalar_guard sg(scalar);
        for (int hd : {8, 5})
            for (int T : {1, 2, 64, 65, 150}) {
                gproblem p = make_gproblem(hd, 12, T, 100u + uint32_t(T) + uint32_t(hd));
                std::printf("[%s] hd=%d n_embd=12 T=%d\n", recurrent_simd_level(), hd, T);
                check_all(p, false, 1e-4); // measured ~1e-6 (float analytic vs double loss)
            }
    }
}

// The real head size, sampled entries; and a long-memory head (decay ~1 - 1e-3), where G carries
// gradient across the whole sequence.
TEST(RecurrentGrad, MatchesFiniteDifferencesHd64) {
    for (float a_log : {std::log(0.5f), -5.0f}) {
        gproblem p = make_gproblem(64, 96, 130, 5u, a_log);
        std::printf("[%s] hd=64 n_embd=96 T=130 a_log=%.2f\n", recurrent_simd_level(), a_log);
        check_all(p, true, 1e-4);
    }
}

// Training a long sequence in two segments, last first, chaining dstate, gives the gradients of
// one call; and dstate == nullptr means a zero gradient on the final state.
static void check_segments_chain(bool delta) {
    const gproblem p = make_gproblem(64, 16, 300, 11u);
    const int hd = p.hd, T = p.T, cut = 97;
    const size_t hh = size_t(hd) * hd;
    const auto q = to_f(p.q), k = to_f(p.k), v = to_f(p.v), s0 = to_f(p.state0), wy = to_f(p.wy),
               d = to_f(p.d);
    recurrent_head_weights w;
    w.head_dim = hd;
    w.a_log = float(p.a_log);
    w.d = d.data();
    w.delta_rule = delta;
    std::vector<float> dt(T);
    for (int t = 0; t < T; ++t)
        dt[t] = 0.05f + 0.3f * float(t % 7) / 7.0f;

    auto run = [&](int t0, int n, const float *state_in, float *dstate, std::vector<float> &dq,
                   float &da_log) {
        recurrent_head_grads pg;
        const size_t o = size_t(t0) * p.stride;
        recurrent_scan_backward(w, n, q.data() + o, k.data() + o, v.data() + o, p.stride, dt.data() + t0,
                                state_in, wy.data() + size_t(t0) * hd, size_t(hd), dq.data() + o, nullptr,
                                nullptr, p.stride, nullptr, dstate, pg);
        da_log += pg.a_log;
    };
    std::vector<float> dq_one(q.size(), 0.0f), ds_one = to_f(p.wS);
    float da_one = 0;
    run(0, T, s0.data(), ds_one.data(), dq_one, da_one);

    // state entering the second segment: the forward over the first
    std::vector<float> s_cut = s0, y(size_t(cut) * hd);
    recurrent_scan_ref(w, cut, q.data(), k.data(), v.data(), p.stride, dt.data(), s_cut.data(), y.data(),
                       size_t(hd));
    std::vector<float> dq_two(q.size(), 0.0f), ds_two = to_f(p.wS);
    float da_two = 0;
    run(cut, T - cut, s_cut.data(), ds_two.data(), dq_two, da_two);
    run(0, cut, s0.data(), ds_two.data(), dq_two, da_two);

    double eq = 0, mq = 0, es = 0, ms = 0;
    for (size_t i = 0; i < dq_one.size(); ++i) {
        eq = std::max(eq, double(std::fabs(dq_one[i] - dq_two[i])));
        mq = std::max(mq, double(std::fabs(dq_one[i])));
    }
    for (size_t i = 0; i < hh; ++i) {
        es = std::max(es, double(std::fabs(ds_one[i] - ds_two[i])));
        ms = std::max(ms, double(std::fabs(ds_one[i])));
    }
    std::printf("split at %d: dq err %.2e  dstate0 err %.2e  da_log %.6e vs %.6e\n", cut, eq / mq, es / ms,
                da_one, da_two);
    EXPECT_LT(eq / mq, 1e-5);
    EXPECT_LT(es / ms, 1e-5);
    EXPECT_NEAR(da_one, da_two, 1e-5 * std::fabs(da_one));

    // nullptr dstate == zeros in
    std::vector<float> dq_a(q.size(), 0.0f), dq_b(q.size(), 0.0f), zeros(hh, 0.0f);
    float da_a = 0, da_b = 0;
    run(0, T, s0.data(), nullptr, dq_a, da_a);
    run(0, T, s0.data(), zeros.data(), dq_b, da_b);
    EXPECT_EQ(dq_a, dq_b);
    EXPECT_EQ(da_a, da_b);
}

TEST(RecurrentGrad, SegmentsChainThroughDstate) {
    check_segments_chain(false);
}

// The delta-rule read-out: every entry at small sizes (segments of 32 tokens in its backward), and
// sampled entries at hd = 64 with a long memory.
TEST(RecurrentGrad, DeltaRuleMatchesFiniteDifferences) {
    for (int hd : {8, 5})
        for (int T : {1, 2, 33, 70}) {
            gproblem p = make_gproblem(hd, 12, T, 300u + uint32_t(T) + uint32_t(hd));
            p.delta = true;
            std::printf("[delta] hd=%d n_embd=12 T=%d\n", hd, T);
            check_all(p, false, 1e-4);
        }
    for (float a_log : {std::log(0.5f), -5.0f}) {
        gproblem p = make_gproblem(64, 16, 40, 9u, a_log);
        p.delta = true;
        std::printf("[delta] hd=64 n_embd=16 T=40 a_log=%.2f\n", a_log);
        check_all(p, true, 1e-4);
    }
}

// Per-channel decay, with the additive and with the delta-rule read-out: every entry at small
// sizes, sampled entries at hd = 64 (offsets spread over ±1.5, so rows decay at rates up to 20×
// apart).
TEST(RecurrentGrad, PerChannelDecayMatchesFiniteDifferences) {
  for (bool scalar : {false, true}) { // the AVX2 and the baseline builds of the sequential code
    scalar_guard sg(scalar);
    for (bool delta : {false, true}) {
        for (int hd : {8, 5})
            for (int T : {1, 33, 70}) {
                gproblem p = make_gproblem(hd, 12, T, 500u + uint32_t(T) + uint32_t(hd) + (delta ? 7u : 0u));
                p.delta = delta;
                for (int r = 0; r < hd; ++r)
                    p.a_chan.push_back(-1.5 + 3.0 * r / std::max(1, hd - 1));
                std::printf("[a_chan%s] hd=%d n_embd=12 T=%d\n", delta ? ", delta" : "", hd, T);
                check_all(p, false, 1e-4);
            }
        gproblem p = make_gproblem(64, 16, 40, 13u, std::log(0.5f));
        p.delta = delta;
        for (int r = 0; r < 64; ++r)
            p.a_chan.push_back(-1.5 + 3.0 * r / 63.0);
        std::printf("[%s a_chan%s] hd=64 n_embd=16 T=40\n", recurrent_simd_level(), delta ? ", delta" : "");
        check_all(p, true, 1e-4);
    }
  }
}

TEST(RecurrentGrad, DeltaRuleSegmentsChainThroughDstate) {
    check_segments_chain(true);
}

TEST(RecurrentGrad, BadArgumentsThrow) {
    recurrent_head_weights w;
    recurrent_head_grads g;
    float x = 0;
    EXPECT_THROW(recurrent_scan_backward(w, 1, &x, &x, &x, 1, &x, &x, &x, 1, nullptr, nullptr, nullptr, 1,
                                         nullptr, nullptr, g),
                 recur::error); // head_dim == 0
    w.n_embd = 4;
    EXPECT_THROW(recurrent_dt_backward(w, 1, &x, 4, &x, g, nullptr, 0), recur::error); // grads.dt_w null
}

// Timing of forward + backward for one head (not part of the suite).
TEST(RecurrentGrad, DISABLED_Timing) {
    const int hd = 64, T = 4096;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> qkv(size_t(T) * hd), dt(T, 0.1f), s0(size_t(hd) * hd, 0.0f), d(hd, 0.1f),
        g(qkv.size());
    for (auto &x : qkv)
        x = nd(rng);
    recurrent_head_weights w;
    w.head_dim = hd;
    w.d = d.data();
    recurrent_head_grads pg;
    std::vector<float> dd(hd);
    pg.d = dd.data();
    for (bool scalar : {false, true}) {
        scalar_guard sgd(scalar);
        double s = 1e9;
        for (int rep = 0; rep < 3; ++rep) {
            const auto t0 = std::chrono::steady_clock::now();
            recurrent_scan_backward(w, T, qkv.data(), qkv.data(), qkv.data(), hd, dt.data(), s0.data(),
                                    qkv.data(), hd, g.data(), g.data(), g.data(), hd, dt.data(), nullptr, pg);
            s = std::min(s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        std::printf("[%s] backward T=%d hd=%d: %.2f ms\n", recurrent_simd_level(), T, hd, s * 1e3);
    }
}
