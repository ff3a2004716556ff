// GPU parity, one op at a time: each test body runs one cuda_ops function over every tensor type
// or shape of its parameter list and compares it with the engine's CPU reference (quants.h
// dequantize_row_ref, recurrent_head.h recurrent_scan_ref / recurrent_compute_dt) or with a plain
// fp64 loop written here (matmul, rmsnorm, RoPE, attention, recency statistics, softmax).
// Tolerances on the normalised MSE Σ(got-want)²/Σwant²: 1e-6 where the GPU computes in F32,
// 1e-3 where it rounds operands to F16/BF16 (tensor-core GEMM and attention). Every case prints
// its max absolute error. Without a CUDA device every test skips (RECUR_REQUIRE_GPU), except the
// two that check exactly that situation.
#include "gpu_test_util.h"
#include "recur/error.h"
#include "recur/quants.h"
#include "recur/recency.h"
#include "recur/recurrent_head.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <numeric>

using namespace recur;
using gpu_test::compare;
using gpu_test::error_stats;
using gpu_test::random_floats;

namespace {

constexpr double tol_f32 = 1e-6, tol_f16 = 1e-3;

std::string tname(tensor_type t) { return type_name(uint32_t(t)); }

void report(const std::string &what, const error_stats &e) {
    printf("  %-44s nmse=%.3e max_abs=%.3e\n", what.c_str(), e.nmse, e.max_abs);
}

// n_rows × n_in random N(0,1) values stored as type t (quantised by the reference quantisers).
std::vector<uint8_t> make_matrix(tensor_type t, int64_t n_rows, int64_t n_in, uint32_t seed) {
    const auto f = random_floats(size_t(n_rows * n_in), seed);
    const size_t rb = row_bytes(t, n_in);
    std::vector<uint8_t> out(size_t(n_rows) * rb);
    for (int64_t r = 0; r < n_rows; ++r) {
        const float *src = f.data() + r * n_in;
        uint8_t *dst = out.data() + size_t(r) * rb;
        if (t == tensor_type::F32) {
            std::memcpy(dst, src, rb);
        } else if (t == tensor_type::F16 || t == tensor_type::BF16) {
            auto *h = reinterpret_cast<uint16_t *>(dst);
            for (int64_t i = 0; i < n_in; ++i) h[i] = t == tensor_type::F16 ? fp32_to_fp16(src[i]) : fp32_to_bf16(src[i]);
        } else {
            quantize_row_ref(t, src, dst, n_in);
        }
    }
    return out;
}

std::vector<float> dequant_ref(tensor_type t, const std::vector<uint8_t> &data, int64_t n_rows, int64_t n_in) {
    std::vector<float> out(size_t(n_rows * n_in));
    const size_t rb = row_bytes(t, n_in);
    for (int64_t r = 0; r < n_rows; ++r) dequantize_row_ref(t, data.data() + size_t(r) * rb, out.data() + r * n_in, n_in);
    return out;
}

// ---- device query and the no-device path (these two run everywhere) ---------------------------

TEST(GpuDevice, QueryNeverThrowsAndExplains) {
    const cuda_device d = cuda_device_info();
    printf("  device: %s (%s) count=%d free=%zu total=%zu cc=%d.%d sms=%d\n", d.name.c_str(),
           d.available ? "available" : d.error.c_str(), d.count, d.free_bytes, d.total_bytes, d.cc_major, d.cc_minor,
           d.sm_count);
    if (d.available) {
        EXPECT_NE(d.name, "no device");
        EXPECT_GT(d.total_bytes, 0u);
        EXPECT_GE(d.cc_major, 8) << "the kernels are built for sm_80 and sm_90";
    } else {
        EXPECT_EQ(d.name, "no device");
        EXPECT_FALSE(d.error.empty());
    }
    const cuda_device bad = cuda_device_info(4096); // a device that does not exist: no throw either
    EXPECT_FALSE(bad.available);
    EXPECT_FALSE(bad.error.empty());
}

TEST(GpuDevice, WithoutDeviceOpsFailWithAClearError) {
    if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; this checks the no-device path";
    try {
        cuda_ops::argmax({1.0f, 2.0f});
        FAIL() << "expected recur::error";
    } catch (const recur::error &e) {
        EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
    }
}

// ---- weights: dequantisation, GEMV, GEMM -----------------------------------------------------

struct mat_case {
    tensor_type t;
    int64_t n_rows, n_in, n_cols;
};
std::string mat_name(const ::testing::TestParamInfo<mat_case> &i) {
    return tname(i.param.t) + "_" + std::to_string(i.param.n_rows) + "x" + std::to_string(i.param.n_in) + "_" +
           std::to_string(i.param.n_cols);
}
std::vector<mat_case> mat_cases(int64_t n_cols) {
    std::vector<mat_case> v;
    for (tensor_type t : {tensor_type::F32, tensor_type::F16, tensor_type::BF16, tensor_type::Q8_0, tensor_type::Q4_0,
                          tensor_type::Q4_1, tensor_type::Q4_K, tensor_type::Q6_K}) {
        v.push_back({t, 300, 2048, n_cols});
        v.push_back({t, 33, 256, n_cols});
    }
    // Long rows: the GEMV's unrolled loop several times, then its remainder (8448 = 33·256).
    for (tensor_type t : {tensor_type::F16, tensor_type::Q4_0, tensor_type::Q4_K}) v.push_back({t, 70, 8448, n_cols});
    // Many rows: the GEMV gives a row 2 warps (4096 <= rows < 8192) or 1 (>= 8192) instead of 4.
    v.push_back({tensor_type::F16, 4100, 256, n_cols});
    v.push_back({tensor_type::Q4_0, 8200, 256, n_cols});
    // Rows that are not a multiple of 8 (stories260K's n_ff = 172) take the elementwise path.
    for (tensor_type t : {tensor_type::F32, tensor_type::F16, tensor_type::BF16}) v.push_back({t, 1, 172, n_cols});
    return v;
}

class GpuDequantize : public ::testing::TestWithParam<mat_case> {};
TEST_P(GpuDequantize, MatchesDequantizeRowRef) {
    RECUR_REQUIRE_GPU();
    const mat_case c = GetParam();
    const auto data = make_matrix(c.t, c.n_rows, c.n_in, 11);
    const auto want = dequant_ref(c.t, data, c.n_rows, c.n_in);
    const auto got = cuda_ops::dequantize(c.t, data.data(), c.n_rows * c.n_in);
    const error_stats e = compare(got, want);
    report(tname(c.t) + " -> F32", e);
    EXPECT_LE(e.nmse, tol_f32);
    // To F16 (the prefill GEMM operand): the reference values rounded to F16.
    const auto got16 = cuda_ops::dequantize_f16(c.t, data.data(), c.n_rows * c.n_in);
    std::vector<float> g16(got16.size()), w16(want.size());
    for (size_t i = 0; i < got16.size(); ++i) g16[i] = fp16_to_fp32(got16[i]);
    for (size_t i = 0; i < want.size(); ++i) w16[i] = fp16_to_fp32(fp32_to_fp16(want[i]));
    const error_stats e16 = compare(g16, w16);
    report(tname(c.t) + " -> F16", e16);
    EXPECT_LE(e16.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(Types, GpuDequantize, ::testing::ValuesIn(mat_cases(1)), mat_name);

// out[c][r] = Σ_i W[r][i]·x[c][i] in fp64 over the reference-dequantised weights.
std::vector<double> matmul_ref(const std::vector<float> &w, const std::vector<float> &x, int64_t n_rows, int64_t n_in,
                               int64_t n_cols) {
    std::vector<double> out(size_t(n_rows * n_cols));
    for (int64_t c = 0; c < n_cols; ++c)
        for (int64_t r = 0; r < n_rows; ++r) {
            double s = 0;
            for (int64_t i = 0; i < n_in; ++i) s += double(w[size_t(r * n_in + i)]) * x[size_t(c * n_in + i)];
            out[size_t(c * n_rows + r)] = s;
        }
    return out;
}

class GpuGemv : public ::testing::TestWithParam<mat_case> {};
TEST_P(GpuGemv, MatchesFp64MatmulOfDequantizedWeights) {
    RECUR_REQUIRE_GPU();
    const mat_case c = GetParam();
    const auto data = make_matrix(c.t, c.n_rows, c.n_in, 12);
    const auto x = random_floats(size_t(c.n_in), 13);
    const auto want = matmul_ref(dequant_ref(c.t, data, c.n_rows, c.n_in), x, c.n_rows, c.n_in, 1);
    const auto got = cuda_ops::gemv(c.t, data.data(), c.n_rows, c.n_in, x);
    const error_stats e = compare(got, want);
    report("gemv " + tname(c.t), e);
    // Weights are dequantised exactly and accumulated in F32: F32 tolerance for every type.
    EXPECT_LE(e.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(Types, GpuGemv, ::testing::ValuesIn(mat_cases(1)), mat_name);

// The decode FFN's gate/up GEMV with the norm and SwiGLU fused in, against fp64: n = x/rms(x)·w,
// then silu(G·n)·(U·n) row by row.
TEST_P(GpuGemv, NormAndSwigluFusedMatchFp64) {
    RECUR_REQUIRE_GPU();
    const mat_case c = GetParam();
    const auto gate = make_matrix(c.t, c.n_rows, c.n_in, 16), upm = make_matrix(c.t, c.n_rows, c.n_in, 17);
    auto x = random_floats(size_t(c.n_in), 18), norm_w = random_floats(size_t(c.n_in), 19);
    for (float &v : x) v *= 3.0f; // a residual stream well away from unit scale
    const float eps = 1e-5f;
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double scale = 1.0 / std::sqrt(ss / double(c.n_in) + eps);
    std::vector<float> n(x.size());
    for (size_t i = 0; i < x.size(); ++i) n[i] = float(double(x[i]) * scale * norm_w[i]);
    const auto g = matmul_ref(dequant_ref(c.t, gate, c.n_rows, c.n_in), n, c.n_rows, c.n_in, 1);
    const auto u = matmul_ref(dequant_ref(c.t, upm, c.n_rows, c.n_in), n, c.n_rows, c.n_in, 1);
    std::vector<double> want(g.size());
    for (size_t r = 0; r < g.size(); ++r) want[r] = g[r] / (1.0 + std::exp(-g[r])) * u[r];
    const auto got = cuda_ops::gemv_norm_swiglu(c.t, gate.data(), upm.data(), c.n_rows, c.n_in, x, norm_w, eps);
    const error_stats e = compare(got, want);
    report("gemv norm+swiglu " + tname(c.t), e);
    EXPECT_LE(e.nmse, tol_f32);
}

class GpuGemm : public ::testing::TestWithParam<mat_case> {};
TEST_P(GpuGemm, MatchesFp64MatmulOfDequantizedWeights) {
    RECUR_REQUIRE_GPU();
    const mat_case c = GetParam();
    const auto data = make_matrix(c.t, c.n_rows, c.n_in, 14);
    const auto x = random_floats(size_t(c.n_in * c.n_cols), 15);
    const auto want = matmul_ref(dequant_ref(c.t, data, c.n_rows, c.n_in), x, c.n_rows, c.n_in, c.n_cols);
    const auto got = cuda_ops::gemm(c.t, data.data(), c.n_rows, c.n_in, x, c.n_cols);
    const error_stats e = compare(got, want);
    report("gemm " + tname(c.t), e);
    // F32 weights multiply in F32; all others as F16/BF16 operands with F32 accumulation.
    EXPECT_LE(e.nmse, c.t == tensor_type::F32 ? tol_f32 : tol_f16);
}
INSTANTIATE_TEST_SUITE_P(Types, GpuGemm, ::testing::ValuesIn(mat_cases(37)), mat_name);

// ---- norms and elementwise ops -----------------------------------------------------------------

class GpuRmsNorm : public ::testing::TestWithParam<int> {};
TEST_P(GpuRmsNorm, MatchesFp64Reference) {
    RECUR_REQUIRE_GPU();
    const int n = GetParam(), rows = 7;
    const float eps = 1e-5f;
    const auto x = random_floats(size_t(rows) * n, 21, 3.0f), w = random_floats(size_t(n), 22);
    std::vector<double> want(x.size());
    for (int r = 0; r < rows; ++r) {
        double ss = 0;
        for (int i = 0; i < n; ++i) ss += double(x[size_t(r) * n + i]) * x[size_t(r) * n + i];
        const double s = 1.0 / std::sqrt(ss / n + eps);
        for (int i = 0; i < n; ++i) want[size_t(r) * n + i] = x[size_t(r) * n + i] * s * w[size_t(i)];
    }
    const error_stats e = compare(cuda_ops::rmsnorm(x, w, eps), want);
    report("rmsnorm n=" + std::to_string(n), e);
    EXPECT_LE(e.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(Sizes, GpuRmsNorm, ::testing::Values(64, 172, 576, 2048, 5120));

struct rope_case {
    rope_style style;
    int head_dim, rope_dim;
    float scale;
    bool factors, skip;
    int32_t pos0;
};
class GpuRope : public ::testing::TestWithParam<rope_case> {};
TEST_P(GpuRope, MatchesTheCpuFormula) {
    RECUR_REQUIRE_GPU();
    const rope_case c = GetParam();
    cuda_ops::rope_params p;
    p.n_head = 6, p.head_dim = c.head_dim, p.rope_dim = c.rope_dim, p.style = c.style, p.freq_base = 10000.0f,
    p.freq_scale = c.scale;
    const int half = c.rope_dim / 2, n_tok = 5;
    if (c.factors)
        for (int i = 0; i < half; ++i) p.freq_factors.push_back(1.0f + 0.25f * float(i % 5));
    if (c.skip) p.skip_head = {0, 1, 0, 0, 1, 0};
    const auto x = random_floats(size_t(n_tok) * p.n_head * c.head_dim, 31);
    // context.cpp: angles in double, cos/sin rounded to float, the rotation in float.
    std::vector<float> want = x;
    for (int t = 0; t < n_tok; ++t)
        for (int h = 0; h < p.n_head; ++h) {
            if (c.skip && p.skip_head[size_t(h)]) continue;
            float *v = want.data() + (size_t(t) * p.n_head + h) * c.head_dim;
            for (int i = 0; i < half; ++i) {
                double inv = std::pow(double(p.freq_base), -2.0 * i / c.rope_dim);
                if (c.factors) inv /= p.freq_factors[size_t(i)];
                const double ang = double(c.pos0 + t) / c.scale * inv;
                const float cs = float(std::cos(ang)), sn = float(std::sin(ang));
                const int i0 = c.style == rope_style::neox ? i : 2 * i, i1 = c.style == rope_style::neox ? i + half : 2 * i + 1;
                const float a = v[i0], b = v[i1];
                v[i0] = a * cs - b * sn;
                v[i1] = a * sn + b * cs;
            }
        }
    std::vector<float> got = x;
    cuda_ops::rope(got, n_tok, c.pos0, p);
    const error_stats e = compare(got, want);
    report(std::string(c.style == rope_style::neox ? "neox" : "normal") + " pos0=" + std::to_string(c.pos0), e);
    EXPECT_LE(e.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(Styles, GpuRope,
                         ::testing::Values(rope_case{rope_style::normal, 64, 64, 1.0f, false, false, 0},
                                           rope_case{rope_style::neox, 64, 64, 1.0f, false, false, 0},
                                           rope_case{rope_style::normal, 64, 32, 2.0f, true, true, 16000},
                                           rope_case{rope_style::neox, 128, 64, 1.0f, true, false, 16000},
                                           rope_case{rope_style::normal, 8, 8, 1.0f, false, true, 123}),
                         [](const ::testing::TestParamInfo<rope_case> &i) {
                             const rope_case &c = i.param;
                             return std::string(c.style == rope_style::neox ? "neox" : "normal") + "_hd" +
                                    std::to_string(c.head_dim) + "_rd" + std::to_string(c.rope_dim) +
                                    (c.factors ? "_factors" : "") + (c.skip ? "_skip" : "") + "_p" + std::to_string(c.pos0);
                         });

TEST(GpuElementwise, SwigluAndAddMatchFp64) {
    RECUR_REQUIRE_GPU();
    const auto a = random_floats(1000, 41, 3.0f), b = random_floats(1000, 42);
    std::vector<double> sw(a.size()), sum(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
        sw[i] = a[i] / (1.0 + std::exp(-double(a[i]))) * b[i];
        sum[i] = double(a[i]) + b[i];
    }
    const error_stats e1 = compare(cuda_ops::swiglu(a, b), sw), e2 = compare(cuda_ops::add(a, b), sum);
    report("swiglu", e1);
    report("add", e2);
    EXPECT_LE(e1.nmse, tol_f32);
    EXPECT_LE(e2.nmse, tol_f32);
}

// ---- attention -------------------------------------------------------------------------------

struct attn_case {
    int hd, g, n_kv, n_tokens, pos0, window, recency_window;
    bool force_scalar;
    int splits;    // decode only
    int sinks = 0; // attention-sink rows of the window groups
};
std::string attn_name(const ::testing::TestParamInfo<attn_case> &i) {
    const attn_case &c = i.param;
    return "hd" + std::to_string(c.hd) + "_g" + std::to_string(c.g) + "_kv" + std::to_string(c.n_kv) + "_n" +
           std::to_string(c.n_tokens) + "_p" + std::to_string(c.pos0) + "_w" + std::to_string(c.window) + "_k" +
           std::to_string(c.recency_window) + (c.force_scalar ? "_scalar" : "") + "_s" + std::to_string(c.splits) +
           (c.sinks ? "_sink" + std::to_string(c.sinks) : "");
}

cuda_ops::attention_problem make_attention(const attn_case &c) {
    cuda_ops::attention_problem p;
    p.n_head = c.g * c.n_kv, p.n_head_kv = c.n_kv, p.head_dim = c.hd, p.pos0 = c.pos0, p.n_tokens = c.n_tokens;
    p.n_ctx = c.pos0 + c.n_tokens + 3;
    p.window = c.window, p.recency_window = c.recency_window, p.sinks = c.sinks;
    p.n_bins = recency_bin(p.n_ctx) + 1;
    p.q = random_floats(size_t(c.n_tokens) * p.n_head * c.hd, 51);
    const auto k = random_floats(size_t(c.n_kv) * p.n_ctx * c.hd, 52), v = random_floats(k.size(), 53);
    for (float x : k) p.k_cache.push_back(fp32_to_fp16(x));
    for (float x : v) p.v_cache.push_back(fp32_to_fp16(x));
    return p;
}

// Plain fp64 attention over the F16 cache values: the full softmax row per query, and the
// recency statistics of recency.h from it.
// lse (when given): each query row's log Σ exp(scaled score), as the gated window + recurrent
// read-out reads it.
void attention_ref(const cuda_ops::attention_problem &p, std::vector<double> &out, std::vector<double> &stats,
                   std::vector<double> *lse = nullptr) {
    const int hd = p.head_dim, g = p.n_head / p.n_head_kv, nb = p.n_bins;
    const double scale = 1.0 / std::sqrt(double(hd));
    out.assign(p.q.size(), 0.0);
    stats.assign(size_t(p.n_head) * (2 + nb), 0.0);
    if (lse) lse->assign(size_t(p.n_tokens) * p.n_head, 0.0);
    for (int t = 0; t < p.n_tokens; ++t)
        for (int h = 0; h < p.n_head; ++h) {
            const int kvh = h / g;
            const int64_t i = p.pos0 + t, lo = p.window > 0 ? std::max<int64_t>(0, i - p.window + 1) : 0;
            const float *q = p.q.data() + (size_t(t) * p.n_head + h) * hd;
            // The keys: [lo, i], and with a window also the sink positions [0, sinks) before lo.
            std::vector<int64_t> keys;
            for (int64_t j = 0; j < std::min<int64_t>(p.window > 0 ? p.sinks : 0, lo); ++j) keys.push_back(j);
            for (int64_t j = lo; j <= i; ++j) keys.push_back(j);
            std::vector<double> s;
            for (int64_t j : keys) {
                double d = 0;
                for (int c = 0; c < hd; ++c)
                    d += double(q[c]) * fp16_to_fp32(p.k_cache[(size_t(kvh) * p.n_ctx + size_t(j)) * hd + c]);
                s.push_back(d * scale);
            }
            const double mx = *std::max_element(s.begin(), s.end());
            double sum = 0;
            for (double &x : s) sum += (x = std::exp(x - mx));
            if (lse) (*lse)[size_t(t) * p.n_head + h] = mx + std::log(sum);
            for (double &x : s) x /= sum;
            double *o = out.data() + (size_t(t) * p.n_head + h) * hd;
            for (size_t x = 0; x < keys.size(); ++x)
                for (int c = 0; c < hd; ++c)
                    o[c] += s[x] * fp16_to_fp32(p.v_cache[(size_t(kvh) * p.n_ctx + size_t(keys[x])) * hd + c]);
            if (p.recency_window > 0 && i >= p.recency_window) {
                double *st = stats.data() + size_t(h) * (2 + nb);
                for (size_t x = 0; x < keys.size(); ++x) {
                    const int64_t j = keys[x];
                    const double a = s[x];
                    if (j > i - p.recency_window) st[0] += a;
                    if (j == 0) st[1] += a;
                    const int b = recency_bin(i - j);
                    if (b < nb) st[2 + b] += a;
                }
            }
        }
}

class GpuAttentionPrefill : public ::testing::TestWithParam<attn_case> {};
TEST_P(GpuAttentionPrefill, MatchesFp64Attention) {
    RECUR_REQUIRE_GPU();
    const attn_case c = GetParam();
    const auto p = make_attention(c);
    std::vector<double> want, want_stats, want_lse;
    attention_ref(p, want, want_stats, &want_lse);
    const auto r = cuda_ops::attention_prefill(p, c.force_scalar);
    const bool tensor_cores = !c.force_scalar && c.hd % 16 == 0;
    const double tol = tensor_cores ? tol_f16 : tol_f32; // Q and P rounded to F16 on the tensor cores
    const error_stats e = compare(r.out, want);
    report(std::string(tensor_cores ? "tensor cores" : "CUDA cores") + " output", e);
    EXPECT_LE(e.nmse, tol);
    const error_stats el = compare(r.lse, want_lse);
    report("log-sum-exp", el);
    EXPECT_LE(el.nmse, tol);
    if (c.recency_window > 0) {
        const error_stats es = compare(r.stats, want_stats);
        report("recency statistics", es);
        EXPECT_LE(es.nmse, tol);
    }
}
INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuAttentionPrefill,
    ::testing::Values(attn_case{64, 1, 2, 77, 0, 0, 0, false, 0}, attn_case{64, 4, 2, 200, 0, 0, 8, false, 0},
                      attn_case{128, 2, 2, 65, 300, 0, 0, false, 0}, attn_case{64, 3, 2, 100, 250, 50, 16, false, 0},
                      attn_case{8, 2, 4, 77, 10, 0, 4, false, 0}, attn_case{64, 4, 2, 130, 70, 0, 32, true, 0},
                      attn_case{80, 1, 3, 33, 5, 20, 0, false, 0}, attn_case{64, 4, 2, 1, 500, 0, 8, false, 0},
                      attn_case{8, 2, 4, 40, 100, 30, 8, false, 0}, attn_case{128, 4, 1, 300, 0, 0, 32, true, 0},
                      // attention sinks: tensor cores and CUDA cores, a batch that starts inside the
                      // sink rows, sinks beyond one key tile, statistics (the sink mass)
                      attn_case{64, 3, 2, 100, 250, 50, 16, false, 0, 4}, attn_case{64, 4, 2, 130, 70, 20, 8, true, 0, 4},
                      attn_case{64, 2, 2, 90, 2, 16, 0, false, 0, 4}, attn_case{8, 2, 4, 40, 300, 30, 8, false, 0, 70},
                      // the register-resident MMA kernel (hd 64/128, no statistics): several row
                      // blocks and key tiles, GQA widths, windows, sinks, a batch after a long prefix
                      attn_case{64, 4, 2, 300, 100, 0, 0, false, 0}, attn_case{128, 4, 1, 300, 0, 0, 0, false, 0},
                      attn_case{64, 3, 2, 100, 250, 50, 0, false, 0}, attn_case{128, 8, 1, 70, 2000, 0, 0, false, 0},
                      attn_case{64, 4, 2, 130, 70, 20, 0, false, 0, 4}, attn_case{128, 2, 1, 64, 1000, 100, 0, false, 0, 70},
                      attn_case{64, 1, 1, 257, 0, 0, 0, false, 0},
                      attn_case{128, 2, 1, 64, 1000, 100, 32, false, 0, 1}),
    attn_name);

class GpuAttentionDecode : public ::testing::TestWithParam<attn_case> {};
TEST_P(GpuAttentionDecode, SplitAndMergeMatchFp64Attention) {
    RECUR_REQUIRE_GPU();
    const attn_case c = GetParam();
    const auto p = make_attention(c);
    std::vector<double> want, unused, want_lse;
    attention_ref(p, want, unused, &want_lse);
    std::vector<float> lse;
    const error_stats e = compare(cuda_ops::attention_decode(p, c.splits, &lse), want);
    report("decode splits=" + std::to_string(c.splits), e);
    EXPECT_LE(e.nmse, tol_f32); // F32 arithmetic on F16 cache values
    const error_stats el = compare(lse, want_lse);
    report("log-sum-exp", el);
    EXPECT_LE(el.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuAttentionDecode,
    ::testing::Values(attn_case{64, 4, 2, 1, 0, 0, 0, false, 0}, attn_case{64, 4, 2, 1, 1000, 0, 0, false, 0},
                      attn_case{64, 4, 2, 1, 1000, 0, 0, false, 7}, attn_case{128, 2, 2, 1, 5000, 0, 0, false, 0},
                      attn_case{8, 2, 4, 1, 300, 0, 0, false, 3}, attn_case{64, 3, 2, 1, 700, 100, 0, false, 0},
                      attn_case{64, 3, 2, 1, 50, 100, 0, false, 5}, attn_case{96, 7, 1, 1, 2000, 0, 0, false, 0},
                      attn_case{64, 4, 2, 1, 16383, 0, 0, false, 1},
                      // attention sinks: one split and several, sinks longer than a key tile, a
                      // position still inside the sink rows
                      attn_case{64, 3, 2, 1, 700, 100, 0, false, 0, 4}, attn_case{64, 3, 2, 1, 700, 100, 0, false, 5, 4},
                      attn_case{8, 2, 4, 1, 300, 30, 0, false, 3, 70}, attn_case{64, 4, 2, 1, 3, 100, 0, false, 2, 4}),
    attn_name);

// ---- recurrent heads ------------------------------------------------------------------------

struct rec_case {
    int R, n, hd, n_embd, chunk; // chunk 0: the decode step kernel, token by token
    bool delta = false, per_channel = false; // the sequential kernel (docs/FORMAT.md "Delta rule", "Per-channel decay")
};
class GpuRecurrent : public ::testing::TestWithParam<rec_case> {};
TEST_P(GpuRecurrent, MatchesRecurrentScanRef) {
    RECUR_REQUIRE_GPU();
    const rec_case c = GetParam();
    cuda_ops::recurrent_problem p;
    p.n_heads = c.R, p.n_tokens = c.n, p.head_dim = c.hd, p.n_embd = c.n_embd;
    const size_t qkv = size_t(c.R) * c.n * c.hd;
    p.q = random_floats(qkv, 61), p.k = random_floats(qkv, 62), p.v = random_floats(qkv, 63);
    p.xn = random_floats(size_t(c.n) * c.n_embd, 64);
    p.dt_w = random_floats(size_t(c.R) * c.n_embd, 65, 0.1f);
    p.dt_b = random_floats(size_t(c.R), 66, 0.5f);
    for (float &b : p.dt_b) b -= 1.0f;
    p.a_log = random_floats(size_t(c.R), 67, 0.5f);
    p.d = random_floats(size_t(c.R) * c.hd, 68, 0.5f);
    p.state = random_floats(size_t(c.R) * c.hd * c.hd, 69, 0.1f);
    p.delta = c.delta;
    if (c.per_channel) p.a_chan = random_floats(size_t(c.R) * c.hd, 70, 1.0f);

    std::vector<float> want_y(qkv), want_state = p.state, want_dt(size_t(c.R) * c.n);
    for (int r = 0; r < c.R; ++r) {
        recurrent_head_weights w;
        w.head_dim = c.hd, w.n_embd = c.n_embd, w.dt_w = p.dt_w.data() + size_t(r) * c.n_embd;
        w.dt_b = p.dt_b[size_t(r)], w.a_log = p.a_log[size_t(r)], w.d = p.d.data() + size_t(r) * c.hd;
        w.delta_rule = c.delta;
        if (c.per_channel) w.a_chan = p.a_chan.data() + size_t(r) * c.hd;
        float *dt = want_dt.data() + size_t(r) * c.n;
        recurrent_compute_dt(w, c.n, p.xn.data(), size_t(c.n_embd), dt);
        const size_t off = size_t(r) * c.n * c.hd;
        recurrent_scan_ref(w, c.n, p.q.data() + off, p.k.data() + off, p.v.data() + off, size_t(c.hd), dt,
                           want_state.data() + size_t(r) * c.hd * c.hd, want_y.data() + off, size_t(c.hd));
    }
    const auto got = cuda_ops::recurrent(p, c.chunk);
    const error_stats ey = compare(got.y, want_y), es = compare(got.state, want_state), ed = compare(got.dt, want_dt);
    const std::string form = c.chunk > 0 ? "chunk " + std::to_string(c.chunk) : "step";
    report(form + " y", ey);
    report(form + " state", es);
    report(form + " dt", ed);
    EXPECT_LE(ey.nmse, tol_f32);
    EXPECT_LE(es.nmse, tol_f32);
    EXPECT_LE(ed.nmse, tol_f32);
}
INSTANTIATE_TEST_SUITE_P(Forms, GpuRecurrent,
                         ::testing::Values(rec_case{3, 100, 64, 96, 64}, rec_case{2, 77, 64, 64, 16},
                                           rec_case{2, 50, 128, 64, 32}, rec_case{2, 70, 128, 64, 64},
                                           rec_case{4, 33, 8, 64, 64}, rec_case{2, 40, 64, 64, 1},
                                           rec_case{3, 20, 64, 96, 0}, rec_case{2, 9, 8, 32, 0},
                                           rec_case{1, 5, 128, 64, 0},
                                           // many chunks (the carry pass), the last one partial
                                           rec_case{4, 300, 64, 96, 64}, rec_case{2, 200, 128, 64, 32},
                                           // the sequential kernel: delta rule, per-channel decay, both
                                           rec_case{3, 100, 64, 96, 64, true, false}, rec_case{2, 20, 64, 96, 0, true, false},
                                           rec_case{2, 77, 64, 64, 16, false, true}, rec_case{2, 9, 8, 32, 0, false, true},
                                           rec_case{2, 150, 128, 64, 32, true, true}, rec_case{4, 33, 8, 64, 0, true, true}),
                         [](const ::testing::TestParamInfo<rec_case> &i) {
                             const rec_case &c = i.param;
                             return (c.chunk > 0 ? "chunk" + std::to_string(c.chunk) : std::string("step")) + "_R" +
                                    std::to_string(c.R) + "_n" + std::to_string(c.n) + "_hd" + std::to_string(c.hd) +
                                    (c.delta ? "_delta" : "") + (c.per_channel ? "_chan" : "");
                         });

// ---- sampling support ------------------------------------------------------------------------

TEST(GpuSampling, ArgmaxTakesTheFirstMaximumAndSoftmaxMatchesFp64) {
    RECUR_REQUIRE_GPU();
    auto logits = random_floats(32000, 71, 4.0f);
    logits[777] = 50.0f;
    logits[31000] = 50.0f; // a tie: the first wins, as std::max_element
    EXPECT_EQ(cuda_ops::argmax(logits), 777);
    logits[31000] = 51.0f;
    EXPECT_EQ(cuda_ops::argmax(logits), 31000);
    for (float temp : {1.0f, 0.7f}) {
        const double mx = *std::max_element(logits.begin(), logits.end()) / double(temp);
        std::vector<double> want(logits.size());
        double sum = 0;
        for (size_t i = 0; i < logits.size(); ++i) sum += (want[i] = std::exp(logits[i] / double(temp) - mx));
        for (double &w : want) w /= sum;
        const error_stats e = compare(cuda_ops::softmax(logits, temp), want);
        report("softmax temp=" + std::to_string(temp), e);
        EXPECT_LE(e.nmse, tol_f32);
    }
}

} // namespace
