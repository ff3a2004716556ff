// The recurrent head (recurrent_head.h):
//  - golden data from the float64 numpy reference (tests/reference/recurrent_ref.py ->
//    tests/unit/data/recurrent_golden.bin) for dt, the sequential scan, the chunked scan and the step;
//  - chunked and repeated-step against the sequential reference over lengths × chunk sizes, on the
//    AVX2 and the scalar kernels; a sequence split over two calls equals one call;
//  - long sequences with fast, slow and wildly mixed decays stay finite and still agree;
//  - the state and the scratch are exactly the documented size (canaries), whatever the length.
// Errors are normalised: max|got - want| / max|want| over the whole output (as test-backend-ops).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
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

// max|a-b| / max|b| over n values (b = the reference); +inf if a has a non-finite value.
double norm_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
        den = std::max(den, std::fabs(double(b[i])));
    }
    return den > 0 ? num / den : num;
}

// y rows strided: compares the first hd of each row.
double norm_err_rows(const float *a, size_t a_stride, const float *b, size_t b_stride, int rows, int hd) {
    std::vector<float> x, z;
    for (int t = 0; t < rows; ++t) {
        x.insert(x.end(), a + size_t(t) * a_stride, a + size_t(t) * a_stride + hd);
        z.insert(z.end(), b + size_t(t) * b_stride, b + size_t(t) * b_stride + hd);
    }
    return norm_err(x.data(), z.data(), x.size());
}

bool all_finite(const std::vector<float> &v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// The first hd of each of `rows` rows (y padding between rows is NaN on purpose).
bool rows_finite(const std::vector<float> &y, size_t stride, int rows, int hd) {
    for (int t = 0; t < rows; ++t)
        for (int c = 0; c < hd; ++c)
            if (!std::isfinite(y[size_t(t) * stride + c])) return false;
    return true;
}

// One head's weights and a token sequence, laid out as the forward pass has them: q, k, v of a
// token interleaved in one row (stride 3·hd + 5), y rows with a stride larger than hd.
struct problem {
    int hd = 64, T = 0;
    size_t stride = 0, y_stride = 0;
    std::vector<float> qkv, dt, d, state0;
    recurrent_head_weights w;
    const float *q() const { return qkv.data(); }
    const float *k() const { return qkv.data() + hd; }
    const float *v() const { return qkv.data() + 2 * hd; }
};

// dt_of(t) gives dt; q, k, v ~ N(0,1); d ~ N(0, 0.5²); state0 ~ N(0, 0.5²) (zero if !nonzero_state).
template <typename DtFn>
problem make_problem(int hd, int T, float a_log, DtFn dt_of, uint32_t seed, bool nonzero_state = true) {
    problem p;
    p.hd = hd;
    p.T = T;
    p.stride = size_t(3 * hd + 5);
    p.y_stride = size_t(hd + 3);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    p.qkv.resize(std::max<size_t>(1, size_t(T) * p.stride));
    for (auto &x : p.qkv)
        x = nd(rng);
    p.dt.resize(std::max(T, 1));
    for (int t = 0; t < T; ++t)
        p.dt[t] = dt_of(t, rng);
    p.d.resize(hd);
    for (auto &x : p.d)
        x = 0.5f * nd(rng);
    p.state0.assign(size_t(hd) * hd, 0.0f);
    if (nonzero_state)
        for (auto &x : p.state0)
            x = 0.5f * nd(rng);
    p.w.head_dim = hd;
    p.w.a_log = a_log;
    p.w.d = p.d.data();
    return p;
}

problem make_default(int hd, int T, uint32_t seed) {
    // dt in ~[0.04, 0.3] and exp(a_log) = 0.5: decays ~exp(-0.06), memory of tens of tokens.
    return make_problem(
        hd, T, std::log(0.5f),
        [](int, std::mt19937 &r) { return std::uniform_real_distribution<float>(0.04f, 0.3f)(r); }, seed);
}

struct result {
    std::vector<float> y, state;
};

result run_ref(const problem &p) {
    result r{std::vector<float>(std::max<size_t>(1, size_t(p.T) * p.y_stride), NAN), p.state0};
    recurrent_scan_ref(p.w, p.T, p.q(), p.k(), p.v(), p.stride, p.dt.data(), r.state.data(), r.y.data(),
                       p.y_stride);
    return r;
}

result run_chunked(const problem &p, int chunk) {
    result r{std::vector<float>(std::max<size_t>(1, size_t(p.T) * p.y_stride), NAN), p.state0};
    std::vector<float> scratch(recurrent_scan_scratch_floats(p.hd, chunk),
                               NAN); // NaN: contents must not matter
    recurrent_scan_chunked(p.w, p.T, p.q(), p.k(), p.v(), p.stride, p.dt.data(), r.state.data(), r.y.data(),
                           p.y_stride, chunk, scratch.data());
    return r;
}

result run_steps(const problem &p) {
    result r{std::vector<float>(std::max<size_t>(1, size_t(p.T) * p.y_stride), NAN), p.state0};
    for (int t = 0; t < p.T; ++t)
        recurrent_step(p.w, p.q() + size_t(t) * p.stride, p.k() + size_t(t) * p.stride,
                       p.v() + size_t(t) * p.stride, p.dt[t], r.state.data(),
                       r.y.data() + size_t(t) * p.y_stride);
    return r;
}

// The recurrence in double precision, token by token: an oracle independent of the code under test
// for inputs where float32 itself is the limit (decays within a few ulps of 1).
result run_f64(const problem &p) {
    const int hd = p.hd;
    const double A = std::exp(double(p.w.a_log)), scale = 1.0 / std::sqrt(double(hd));
    std::vector<double> S(p.state0.begin(), p.state0.end()), yd(hd);
    result r{std::vector<float>(std::max<size_t>(1, size_t(p.T) * p.y_stride), NAN), {}};
    for (int t = 0; t < p.T; ++t) {
        const float *q = p.q() + size_t(t) * p.stride, *k = p.k() + size_t(t) * p.stride,
                    *v = p.v() + size_t(t) * p.stride;
        const double dt = p.dt[t], a = std::exp(-dt * A);
        std::fill(yd.begin(), yd.end(), 0.0);
        for (int i = 0; i < hd; ++i)
            for (int j = 0; j < hd; ++j) {
                double &s = S[size_t(i) * hd + j];
                s = a * s + dt * k[i] * v[j];
                yd[j] += q[i] * s;
            }
        for (int j = 0; j < hd; ++j)
            r.y[size_t(t) * p.y_stride + j] = float(scale * yd[j] + double(p.d[j]) * v[j]);
    }
    r.state.assign(S.begin(), S.end());
    return r;
}

uint16_t rd16(std::ifstream &f) {
    uint16_t x;
    f.read(reinterpret_cast<char *>(&x), 2);
    return x;
}

// ---- golden data from the numpy reference ----

struct golden {
    int hd = 0, n_embd = 0, T = 0;
    std::vector<float> xn, dt_w, d, q, k, v, state0; // bf16 inputs, widened exactly
    float dt_b = 0, a_log = 0;
    std::vector<float> dt, y, state; // float64 results rounded to float32
};

// delta: the delta-rule read-out's file (recurrent_ref.py --delta).
golden load_golden(bool delta = false) {
    const std::string path = std::string(RECUR_SOURCE_DIR) + "/tests/unit/data/" +
                             (delta ? "recurrent_delta_golden.bin" : "recurrent_golden.bin");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    char magic[4];
    uint32_t hdr[3];
    f.read(magic, 4);
    f.read(reinterpret_cast<char *>(hdr), sizeof hdr);
    if (!f || std::memcmp(magic, delta ? "RRD1" : "RRH1", 4) != 0) throw std::runtime_error("bad header in " + path);
    golden g;
    g.hd = int(hdr[0]);
    g.n_embd = int(hdr[1]);
    g.T = int(hdr[2]);
    auto bf16 = [&](size_t n) {
        std::vector<float> out(n);
        for (auto &x : out) {
            const uint32_t u = uint32_t(rd16(f)) << 16;
            std::memcpy(&x, &u, 4);
        }
        return out;
    };
    auto f32 = [&](size_t n) {
        std::vector<float> out(n);
        f.read(reinterpret_cast<char *>(out.data()), std::streamsize(n * 4));
        return out;
    };
    const size_t T = size_t(g.T), hd = size_t(g.hd), ne = size_t(g.n_embd);
    g.xn = bf16(T * ne);
    g.dt_w = bf16(ne);
    g.dt_b = bf16(1)[0];
    g.a_log = bf16(1)[0];
    g.d = bf16(hd);
    g.q = bf16(T * hd);
    g.k = bf16(T * hd);
    g.v = bf16(T * hd);
    g.state0 = bf16(hd * hd);
    g.dt = f32(T);
    g.y = f32(T * hd);
    g.state = f32(hd * hd);
    if (!f) throw std::runtime_error("truncated " + path);
    f.peek();
    if (!f.eof()) throw std::runtime_error("trailing bytes in " + path);
    return g;
}

// The golden file's head parameters (pointers into g).
recurrent_head_weights weights_of(const golden &g) {
    recurrent_head_weights w;
    w.head_dim = g.hd;
    w.n_embd = g.n_embd;
    w.dt_w = g.dt_w.data();
    w.dt_b = g.dt_b;
    w.a_log = g.a_log;
    w.d = g.d.data();
    return w;
}

} // namespace

// Every implementation against the float64 numpy reference, on both kernel sets.
TEST(RecurrentHead, GoldenFromNumpy) {
    const golden g = load_golden();
    ASSERT_EQ(g.hd, 64);
    const int hd = g.hd, T = g.T;
    recurrent_head_weights w = weights_of(g);
    const double tol = 1e-4; // float32 against float64 over 200 tokens; measured ~1e-6

    for (bool scalar : {false, true}) {
        scalar_guard sg(scalar);
        std::vector<float> dt(T);
        recurrent_compute_dt(w, T, g.xn.data(), size_t(g.n_embd), dt.data());
        const double e_dt = norm_err(dt.data(), g.dt.data(), T);
        std::printf("[%s] dt: err %.2e\n", recurrent_simd_level(), e_dt);
        EXPECT_LT(e_dt, tol);

        auto check = [&](const char *what, const std::vector<float> &y, const std::vector<float> &s) {
            const double ey = norm_err(y.data(), g.y.data(), y.size()),
                         es = norm_err(s.data(), g.state.data(), s.size());
            std::printf("[%s] %-12s y err %.2e  state err %.2e\n", recurrent_simd_level(), what, ey, es);
            EXPECT_LT(ey, tol) << what;
            EXPECT_LT(es, tol) << what;
        };
        {
            std::vector<float> y(size_t(T) * hd), s = g.state0;
            recurrent_scan_ref(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(),
                               hd);
            check("ref", y, s);
        }
        for (int chunk : {16, 64, 100}) {
            std::vector<float> y(size_t(T) * hd), s = g.state0;
            std::vector<float> scratch(recurrent_scan_scratch_floats(hd, chunk));
            recurrent_scan_chunked(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(),
                                   y.data(), hd, chunk, scratch.data());
            check(("chunked/" + std::to_string(chunk)).c_str(), y, s);
        }
        {
            std::vector<float> y(size_t(T) * hd), s = g.state0;
            for (int t = 0; t < T; ++t)
                recurrent_step(w, &g.q[size_t(t) * hd], &g.k[size_t(t) * hd], &g.v[size_t(t) * hd], dt[t],
                               s.data(), &y[size_t(t) * hd]);
            check("step", y, s);
        }
        {   // per-channel decay with all offsets 0: the sequential code, one decay per head
            const std::vector<float> zeros(size_t(hd), 0.0f);
            recurrent_head_weights wc = w;
            wc.a_chan = zeros.data();
            std::vector<float> y(size_t(T) * hd), s = g.state0;
            recurrent_scan_ref(wc, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(), hd);
            check("a_chan = 0", y, s);
            std::vector<float> y2(size_t(T) * hd), s2 = g.state0;
            for (int t = 0; t < T; ++t)
                recurrent_step(wc, &g.q[size_t(t) * hd], &g.k[size_t(t) * hd], &g.v[size_t(t) * hd], dt[t], s2.data(),
                               &y2[size_t(t) * hd]);
            check("a_chan step", y2, s2);
        }
    }
}

// The delta rule against its float64 numpy reference (the projector formed as a matrix there):
// the sequential scan, the chunked entry point (which runs the same sequential form) and the step.
TEST(RecurrentHead, DeltaRuleGoldenFromNumpy) {
    const golden g = load_golden(true);
    ASSERT_EQ(g.hd, 64);
    const int hd = g.hd, T = g.T;
    recurrent_head_weights w = weights_of(g);
    w.delta_rule = true;
    const double tol = 1e-4;
    std::vector<float> dt(T);
    recurrent_compute_dt(w, T, g.xn.data(), size_t(g.n_embd), dt.data());
    auto check = [&](const char *what, const std::vector<float> &y, const std::vector<float> &s) {
        const double ey = norm_err(y.data(), g.y.data(), y.size()), es = norm_err(s.data(), g.state.data(), s.size());
        std::printf("[delta] %-12s y err %.2e  state err %.2e\n", what, ey, es);
        EXPECT_LT(ey, tol) << what;
        EXPECT_LT(es, tol) << what;
    };
    {
        std::vector<float> y(size_t(T) * hd), s = g.state0;
        recurrent_scan_ref(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(), hd);
        check("ref", y, s);
    }
    {
        std::vector<float> y(size_t(T) * hd), s = g.state0;
        std::vector<float> scratch(recurrent_scan_scratch_floats(hd, 32));
        recurrent_scan_chunked(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(), hd, 32,
                               scratch.data());
        check("chunked", y, s);
    }
    {
        std::vector<float> y(size_t(T) * hd), s = g.state0;
        for (int t = 0; t < T; ++t)
            recurrent_step(w, &g.q[size_t(t) * hd], &g.k[size_t(t) * hd], &g.v[size_t(t) * hd], dt[t], s.data(),
                           &y[size_t(t) * hd]);
        check("step", y, s);
    }
    // Per-channel decay with all offsets 0 is one decay per head, through the sequential code.
    {
        const std::vector<float> zeros(size_t(hd), 0.0f);
        w.a_chan = zeros.data();
        std::vector<float> y(size_t(T) * hd), s = g.state0;
        recurrent_scan_ref(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(), hd);
        check("a_chan = 0", y, s);
        w.a_chan = nullptr;
    }
    // The additive read-out on the same inputs is far from it: the comparison can fail.
    w.delta_rule = false;
    std::vector<float> y(size_t(T) * hd), s = g.state0;
    recurrent_scan_ref(w, T, g.q.data(), g.k.data(), g.v.data(), hd, dt.data(), s.data(), y.data(), hd);
    EXPECT_GT(norm_err(y.data(), g.y.data(), y.size()), 1e-2);
}

// The golden comparison can fail: a small change of one parameter is far outside its tolerance.
TEST(RecurrentHead, GoldenIsSensitive) {
    const golden g = load_golden();
    const int hd = g.hd, T = g.T;
    recurrent_head_weights w = weights_of(g);
    w.a_log = g.a_log + 0.01f; // decays 1% faster
    std::vector<float> y(size_t(T) * hd), s = g.state0;
    recurrent_scan_ref(w, T, g.q.data(), g.k.data(), g.v.data(), hd, g.dt.data(), s.data(), y.data(), hd);
    const double e = norm_err(y.data(), g.y.data(), y.size());
    std::printf("a_log + 0.01: y err %.2e (must exceed the 1e-4 tolerance)\n", e);
    EXPECT_GT(e, 1e-3);
}

// Chunked and repeated steps against the sequential reference, lengths × chunks, both kernel sets.
TEST(RecurrentHead, ChunkedAndStepMatchReference) {
    const int lengths[] = {1, 2, 63, 64, 65, 127, 1000, 4096};
    const int chunks[] = {1, 16, 64, 100};
    for (bool scalar : {false, true}) {
        scalar_guard sg(scalar);
        for (int T : lengths) {
            const problem p = make_default(64, T, 1000u + uint32_t(T));
            const result ref = run_ref(p);
            ASSERT_TRUE(all_finite(ref.state));
            // float32 throughout; measured <= 3.2e-7 at every length (the two summation orders
            // drift apart slowly with length, hence the larger bound for long sequences).
            const double tol = T <= 127 ? 5e-6 : 1e-5;
            for (int chunk : chunks) {
                if (scalar && T == 4096 && chunk != 64)
                    continue; // the scalar path is slow; one chunk suffices
                const result c = run_chunked(p, chunk);
                const double ey = norm_err_rows(c.y.data(), p.y_stride, ref.y.data(), p.y_stride, T, p.hd);
                const double es = norm_err(c.state.data(), ref.state.data(), c.state.size());
                std::printf("[%s] T=%4d chunk=%3d  y err %.2e  state err %.2e  (tol %.0e)\n",
                            recurrent_simd_level(), T, chunk, ey, es, tol);
                EXPECT_LT(ey, tol) << "T=" << T << " chunk=" << chunk;
                EXPECT_LT(es, tol) << "T=" << T << " chunk=" << chunk;
            }
            const result st = run_steps(p);
            const double ey = norm_err_rows(st.y.data(), p.y_stride, ref.y.data(), p.y_stride, T, p.hd);
            const double es = norm_err(st.state.data(), ref.state.data(), st.state.size());
            std::printf("[%s] T=%4d step       y err %.2e  state err %.2e  (tol %.0e)\n",
                        recurrent_simd_level(), T, ey, es, tol);
            EXPECT_LT(ey, tol) << "T=" << T << " step";
            EXPECT_LT(es, tol) << "T=" << T << " step";
        }
    }
}

// Head sizes that are not a multiple of 8 or of the register tiles take the tails of every kernel.
TEST(RecurrentHead, OddHeadDims) {
    for (bool scalar : {false, true}) {
        scalar_guard sg(scalar);
        for (int hd : {1, 3, 8, 12, 40, 72, 128}) {
            const problem p = make_default(hd, 150, 77u + uint32_t(hd));
            const result ref = run_ref(p);
            for (int chunk : {7, 64}) {
                const result c = run_chunked(p, chunk);
                const double ey = norm_err_rows(c.y.data(), p.y_stride, ref.y.data(), p.y_stride, p.T, hd);
                const double es = norm_err(c.state.data(), ref.state.data(), c.state.size());
                EXPECT_LT(ey, 5e-6) << recurrent_simd_level() << " hd=" << hd << " chunk=" << chunk;
                EXPECT_LT(es, 5e-6) << recurrent_simd_level() << " hd=" << hd << " chunk=" << chunk;
            }
            const result st = run_steps(p);
            EXPECT_LT(norm_err_rows(st.y.data(), p.y_stride, ref.y.data(), p.y_stride, p.T, hd), 5e-6)
                << "hd=" << hd;
            EXPECT_LT(norm_err(st.state.data(), ref.state.data(), st.state.size()), 5e-6) << "hd=" << hd;
        }
    }
}

// Splitting a sequence into two calls (state carried) equals one call, for every implementation.
TEST(RecurrentHead, SplitCallsEqualOneCall) {
    const problem p = make_default(64, 1000, 4242u);
    const result whole_ref = run_ref(p), whole_chunked = run_chunked(p, 64);
    for (int cut : {1, 37, 64, 500, 999}) {
        for (int impl = 0; impl < 3; ++impl) { // 0 ref, 1 chunked, 2 chunked then steps
            std::vector<float> y(size_t(p.T) * p.y_stride, NAN), s = p.state0;
            std::vector<float> scratch(recurrent_scan_scratch_floats(p.hd, 64));
            auto part = [&](int t0, int n, bool step) {
                const size_t o = size_t(t0) * p.stride;
                float *yo = y.data() + size_t(t0) * p.y_stride;
                if (step) {
                    for (int t = 0; t < n; ++t)
                        recurrent_step(p.w, p.q() + o + t * p.stride, p.k() + o + t * p.stride,
                                       p.v() + o + t * p.stride, p.dt[t0 + t], s.data(), yo + t * p.y_stride);
                } else if (impl == 0) {
                    recurrent_scan_ref(p.w, n, p.q() + o, p.k() + o, p.v() + o, p.stride, &p.dt[t0], s.data(),
                                       yo, p.y_stride);
                } else {
                    recurrent_scan_chunked(p.w, n, p.q() + o, p.k() + o, p.v() + o, p.stride, &p.dt[t0],
                                           s.data(), yo, p.y_stride, 64, scratch.data());
                }
            };
            part(0, cut, false);
            part(cut, p.T - cut, impl == 2);
            const result &want = impl == 0 ? whole_ref : whole_chunked;
            const double ey = norm_err_rows(y.data(), p.y_stride, want.y.data(), p.y_stride, p.T, p.hd);
            const double es = norm_err(s.data(), want.state.data(), s.size());
            // ref split at any point does exactly the same float operations; chunked split moves
            // chunk boundaries, so it matches to rounding.
            const double tol = impl == 0 ? 0.0 : 5e-6;
            EXPECT_LE(ey, tol) << "cut " << cut << " impl " << impl;
            EXPECT_LE(es, tol) << "cut " << cut << " impl " << impl;
        }
    }
    // n_tokens == 0 leaves the state alone.
    std::vector<float> s = p.state0, scratch(recurrent_scan_scratch_floats(p.hd, 64));
    recurrent_scan_chunked(p.w, 0, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(), nullptr, p.y_stride,
                           64, scratch.data());
    recurrent_scan_ref(p.w, 0, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(), nullptr, p.y_stride);
    EXPECT_EQ(s, p.state0);
}

// 4096 tokens with extreme decays: nothing overflows or turns NaN, and every implementation stays
// close to the double-precision recurrence. Tolerances per regime, from measured errors (in
// brackets: ref / chunked / step at the time of writing); where the decay sits within a few float
// ulps of 1 the sequential float32 recurrence itself is the least accurate (a_t rounds to 1, tiny
// increments round away), and the chunked form, which applies decays once per chunk, is better.
TEST(RecurrentHead, LongSequenceStability) {
    struct regime {
        const char *name;
        float a_log;
        float (*dt)(int, std::mt19937 &);
        double tol_seq; // ref and step; the chunked form is held to 5e-6 in every regime
    };
    const regime regimes[] = {
        // a_t = exp(-dt·e^2) ~ exp(-370): every decay underflows to 0, the state is the last token only.
        {"fast decay", 2.0f,
         [](int, std::mt19937 &r) { return std::uniform_real_distribution<float>(30.f, 70.f)(r); }, 2e-6},
        // a_t ~ 1 - 1e-8: in float32 a_t == 1 and each increment (~5e-9) is below half an ulp of the state.
        {"tiny dt", 0.0f,
         [](int, std::mt19937 &r) { return std::uniform_real_distribution<float>(1e-9f, 1e-8f)(r); }, 1e-4},
        // a_t ~ 1 - 6e-7 with dt ~ 0.1: 4096 tokens accumulate without forgetting.
        {"long memory", -12.0f,
         [](int, std::mt19937 &r) { return std::uniform_real_distribution<float>(.05f, .15f)(r); }, 5e-5},
        // dt jumps between 1e-6 and 1e4 at random: huge and tiny log-decays mixed inside each chunk
        // (a cumulative sum would lose the small ones next to the huge ones).
        {"mixed", 0.0f,
         [](int, std::mt19937 &r) {
             return std::bernoulli_distribution(0.1)(r)
                        ? 1e4f
                        : std::uniform_real_distribution<float>(1e-6f, 0.02f)(r);
         },
         1e-5},
    };
    for (const regime &rg : regimes) {
        const problem p = make_problem(64, 4096, rg.a_log, rg.dt, 99u);
        const result want = run_f64(p);
        auto check = [&](const std::string &what, const result &got, double tol) {
            ASSERT_TRUE(rows_finite(got.y, p.y_stride, p.T, p.hd) && all_finite(got.state))
                << rg.name << " " << what;
            const double ey = norm_err_rows(got.y.data(), p.y_stride, want.y.data(), p.y_stride, p.T, p.hd);
            const double es = norm_err(got.state.data(), want.state.data(), got.state.size());
            std::printf("%-12s %-11s y err %.2e  state err %.2e  (tol %.0e)\n", rg.name, what.c_str(), ey, es,
                        tol);
            EXPECT_LT(ey, tol) << rg.name << " " << what;
            EXPECT_LT(es, tol) << rg.name << " " << what;
        };
        check("ref", run_ref(p), rg.tol_seq);
        for (int chunk : {16, 64, 100})
            check("chunked/" + std::to_string(chunk), run_chunked(p, chunk), 5e-6);
        check("step", run_steps(p), rg.tol_seq);
    }
}

// The state is hd*hd floats whatever the length; scans write nothing outside the state and the
// documented scratch (canaries around both).
TEST(RecurrentHead, StateAndScratchAreFixedSize) {
    EXPECT_EQ(recurrent_state_floats(64), size_t(4096));
    EXPECT_EQ(recurrent_state_floats(128), size_t(128 * 128));
    const float canary = 12345.5f;
    const int pad = 64;
    for (int T : {1, 100, 4096}) {
        const problem p = make_default(64, T, 5u);
        const size_t ns = recurrent_state_floats(64);
        std::vector<float> s(ns + 2 * pad, canary);
        std::copy(p.state0.begin(), p.state0.end(), s.begin() + pad);
        for (int chunk : {16, 100}) {
            const size_t nsc = recurrent_scan_scratch_floats(64, chunk);
            std::vector<float> scratch(nsc + 2 * pad, canary), y(size_t(T) * p.y_stride);
            recurrent_scan_chunked(p.w, T, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data() + pad,
                                   y.data(), p.y_stride, chunk, scratch.data() + pad);
            for (int i = 0; i < pad; ++i) {
                ASSERT_EQ(scratch[i], canary);
                ASSERT_EQ(scratch[pad + nsc + i], canary);
            }
        }
        std::vector<float> y(p.hd);
        recurrent_step(p.w, p.q(), p.k(), p.v(), p.dt[0], s.data() + pad, y.data());
        for (int i = 0; i < pad; ++i) {
            ASSERT_EQ(s[i], canary) << "T=" << T;
            ASSERT_EQ(s[pad + ns + i], canary) << "T=" << T;
        }
    }
}

TEST(RecurrentHead, BadArgumentsThrow) {
    const problem p = make_default(8, 4, 1u);
    std::vector<float> s = p.state0, y(64), scratch(recurrent_scan_scratch_floats(8, 4));
    EXPECT_THROW(recurrent_scan_chunked(p.w, 4, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(),
                                        y.data(), 8, 0, scratch.data()),
                 recur::error);
    recurrent_head_weights bad = p.w;
    bad.head_dim = 0;
    EXPECT_THROW(
        recurrent_scan_ref(bad, 4, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(), y.data(), 8),
        recur::error);
    EXPECT_THROW(
        recurrent_scan_ref(p.w, -1, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(), y.data(), 8),
        recur::error);
    EXPECT_THROW(recurrent_compute_dt(p.w, 1, p.q(), 8, y.data()), recur::error); // n_embd == 0
}

// Timing (not part of the suite: run with --gtest_also_run_disabled_tests).
TEST(RecurrentHead, DISABLED_Timing) {
    for (bool scalar : {false, true}) {
        scalar_guard sg(scalar);
        const problem p = make_default(64, 4096, 3u);
        for (int chunk : {16, 32, 64, 128}) {
            std::vector<float> y(size_t(p.T) * p.y_stride), s = p.state0;
            std::vector<float> scratch(recurrent_scan_scratch_floats(64, chunk));
            double best = 1e9;
            for (int rep = 0; rep < 5; ++rep) {
                const auto t0 = std::chrono::steady_clock::now();
                recurrent_scan_chunked(p.w, p.T, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(),
                                       y.data(), p.y_stride, chunk, scratch.data());
                best = std::min(best,
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            std::printf("[%s] chunked T=4096 hd=64 chunk=%3d: %.3f ms (%.1f ns/token)\n",
                        recurrent_simd_level(), chunk, best * 1e3, best * 1e9 / p.T);
        }
        {
            std::vector<float> y(size_t(p.T) * p.y_stride), s = p.state0;
            double best = 1e9;
            for (int rep = 0; rep < 5; ++rep) {
                const auto t0 = std::chrono::steady_clock::now();
                recurrent_scan_ref(p.w, p.T, p.q(), p.k(), p.v(), p.stride, p.dt.data(), s.data(), y.data(),
                                   p.y_stride);
                best = std::min(best,
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            std::printf("[%s] sequential ref T=4096 hd=64: %.3f ms\n", recurrent_simd_level(), best * 1e3);
        }
        {
            std::vector<float> y(p.hd), s = p.state0;
            double sec = 1e9;
            for (int rep = 0; rep < 5; ++rep) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int t = 0; t < p.T; ++t)
                    recurrent_step(p.w, p.q() + t * p.stride, p.k() + t * p.stride, p.v() + t * p.stride,
                                   p.dt[t], s.data(), y.data());
                sec = std::min(sec,
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            const int n = p.T;
            std::printf("[%s] step hd=64: %.1f ns/token\n", recurrent_simd_level(), sec * 1e9 / n);
        }
    }
}
