// Quantised formats and dot-product kernels.
//  - The reference dequantisers (and Q4_0/Q4_1/Q8_0/F16/BF16 quantisers) against golden data from
//    gguf-py (tests/reference/quant_golden.py -> tests/unit/data/quant_golden.bin).
//  - fp16/bf16 conversion edge cases, and against the CPU's own F16C instructions.
//  - Round-trip error bounds of every quantiser.
//  - vec_dot / gemm_block (SIMD and forced scalar) against dequantize_row_ref + a double dot.
#include <gtest/gtest.h>

#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "recur/quants.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

using namespace recur;

namespace {

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Restores the dispatch after a test that forces the scalar path.
struct scalar_guard {
    explicit scalar_guard(bool on) { set_force_scalar(on); }
    ~scalar_guard() { set_force_scalar(false); }
};

// ---- golden file ----

struct golden_record {
    uint32_t kind; // 0: bytes -> floats (dequantize), 1: floats -> bytes (quantize)
    tensor_type type;
    std::vector<uint8_t> bytes;
    std::vector<float> values;
};

std::vector<golden_record> load_golden() {
    const std::string path = std::string(RECUR_SOURCE_DIR) + "/tests/unit/data/quant_golden.bin";
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    char magic[4];
    uint32_t count = 0;
    f.read(magic, 4);
    f.read(reinterpret_cast<char *>(&count), 4);
    if (std::memcmp(magic, "RQG1", 4) != 0) throw std::runtime_error("bad magic in " + path);
    std::vector<golden_record> out;
    for (uint32_t i = 0; i < count; ++i) {
        uint32_t hdr[4];
        f.read(reinterpret_cast<char *>(hdr), sizeof hdr);
        golden_record r{hdr[0], static_cast<tensor_type>(hdr[1]), std::vector<uint8_t>(hdr[3]),
                        std::vector<float>(hdr[2])};
        auto read_bytes = [&] { f.read(reinterpret_cast<char *>(r.bytes.data()), r.bytes.size()); };
        auto read_values = [&] { f.read(reinterpret_cast<char *>(r.values.data()), r.values.size() * 4); };
        if (r.kind == 0)
            read_bytes(), read_values();
        else
            read_values(), read_bytes();
        if (!f) throw std::runtime_error("truncated " + path);
        out.push_back(std::move(r));
    }
    return out;
}

// ---- random data ----

uint16_t random_scale(std::mt19937 &rng) {
    std::uniform_real_distribution<float> e(-8.0f, 0.0f);
    const float mag = std::exp2(e(rng));
    return fp32_to_fp16(rng() & 1 ? mag : -mag);
}

// A weight row of n elements: random floats for the float types, random bytes with sane fp16
// scales for the block types (so every nibble / 6-bit / int8 pattern, -128 included, is used).
std::vector<uint8_t> random_weights(tensor_type t, int64_t n, std::mt19937 &rng) {
    std::vector<uint8_t> b(row_bytes(t, n));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    if (t == tensor_type::F32 || t == tensor_type::F16 || t == tensor_type::BF16) {
        std::vector<float> x(n);
        for (auto &v : x) v = nd(rng);
        quantize_row_ref(t, x.data(), b.data(), n);
        return b;
    }
    for (auto &v : b) v = static_cast<uint8_t>(rng());
    const auto tr = type_traits(t);
    for (size_t off = 0; off < b.size(); off += tr.block_bytes) {
        auto put = [&](size_t at) {
            const uint16_t s = random_scale(rng);
            std::memcpy(&b[off + at], &s, 2);
        };
        switch (t) {
        case tensor_type::Q4_0:
        case tensor_type::Q8_0: put(0); break;
        case tensor_type::Q4_1:
        case tensor_type::Q4_K: put(0), put(2); break;
        case tensor_type::Q6_K: put(208); break;
        default: break;
        }
    }
    return b;
}

std::vector<float> random_floats(int64_t n, std::mt19937 &rng, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> x(n);
    for (auto &v : x) v = nd(rng);
    // Some outliers, as real activations have.
    for (int64_t i = 0; i < n; i += 97) x[i] *= 8.0f;
    return x;
}

} // namespace

// ---- type traits ----

TEST(QuantTypeTraits, BlockSizes) {
    struct {
        tensor_type t;
        int64_t elems;
        size_t bytes;
    } expect[] = {{tensor_type::F32, 1, 4},        {tensor_type::F16, 1, 2},        {tensor_type::BF16, 1, 2},
                  {tensor_type::Q4_0, 32, 18},     {tensor_type::Q4_1, 32, 20},     {tensor_type::Q8_0, 32, 34},
                  {tensor_type::Q8_1, 32, 36},     {tensor_type::Q4_K, 256, 144},   {tensor_type::Q6_K, 256, 210},
                  {tensor_type::Q8_K, 256, 292}};
    for (auto &e : expect) {
        auto tr = type_traits(e.t);
        EXPECT_EQ(tr.block_elems, e.elems) << tr.name;
        EXPECT_EQ(tr.block_bytes, e.bytes) << tr.name;
    }
    EXPECT_EQ(type_name(12), "Q4_K");
    EXPECT_EQ(type_traits(uint32_t{6}).block_elems, 0); // Q5_0: not supported
    EXPECT_EQ(type_name(6), "unknown(6)");
    EXPECT_EQ(type_name(1000), "unknown(1000)");
    EXPECT_EQ(row_bytes(tensor_type::Q4_K, 1536), 6u * 144u);
}

// ---- fp16 / bf16 ----

TEST(QuantFp16, SpecialValues) {
    EXPECT_EQ(fp16_to_fp32(0x3c00), 1.0f);
    EXPECT_EQ(fp16_to_fp32(0xc000), -2.0f);
    EXPECT_EQ(fp16_to_fp32(0x7bff), 65504.0f);
    EXPECT_EQ(fp16_to_fp32(0x0400), std::ldexp(1.0f, -14)); // smallest normal
    EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
    EXPECT_EQ(fp16_to_fp32(0x03ff), std::ldexp(1023.0f, -24));
    EXPECT_EQ(bits(fp16_to_fp32(0x8000)), 0x80000000u);
    EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7c00)) && fp16_to_fp32(0x7c00) > 0);
    EXPECT_TRUE(std::isinf(fp16_to_fp32(0xfc00)) && fp16_to_fp32(0xfc00) < 0);
    EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7e00)));
    EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7c01))); // signalling NaN stays NaN

    EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
    EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
    EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7bff); // below the tie to inf
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);  // tie between 65504 (odd) and 2^16: to even = inf
    EXPECT_EQ(fp32_to_fp16(1e9f), 0x7c00);
    EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xfc00);
    const uint16_t nan = fp32_to_fp16(NAN);
    EXPECT_EQ(nan & 0x7c00, 0x7c00);
    EXPECT_NE(nan & 0x03ff, 0);
    EXPECT_EQ(fp32_to_fp16(from_bits(0x7f800001)) & 0x7e00, 0x7e00); // sNaN -> quiet NaN
    // Ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1; 1 + 3*2^-11 -> 1 + 2^-9.
    EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
    EXPECT_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
    EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
    // Subnormals and underflow: 2^-25 is a tie between 0 and 2^-24 -> 0; just above -> 2^-24.
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
    EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002); // 1.5 ulp -> 2 (even)
    EXPECT_EQ(fp32_to_fp16(std::ldexp(5.0f, -25)), 0x0002); // 2.5 ulp -> 2 (even)
    EXPECT_EQ(fp32_to_fp16(-std::ldexp(1023.5f, -24)), 0x8400); // rounds up into the normal range
    EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
}

TEST(QuantFp16, AllHalvesRoundTrip) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        if (std::isnan(f)) {
            EXPECT_EQ(h & 0x7c00, 0x7c00u);
            continue;
        }
        ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
    }
}

// Independent check: the CPU's F16C conversion (round to nearest even) on random bit patterns.
#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t hw_fp32_to_fp16(float f) {
    return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
#endif

TEST(QuantFp16, MatchesF16CInstructions) {
#if defined(__x86_64__)
    // CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know "f16c").
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 29))) GTEST_SKIP() << "no F16C";
    std::mt19937 rng(7);
    int checked = 0;
    for (int i = 0; i < 2000000; ++i) {
        // Bias exponents towards the half range so subnormals/overflow/ties all occur.
        uint32_t u = rng();
        u = (u & 0x807fffff) | ((100 + (u >> 23) % 50) << 23);
        if (i % 3 == 0) u &= ~0xfffu; // many exact ties
        const float f = from_bits(u);
        ASSERT_EQ(fp32_to_fp16(f), hw_fp32_to_fp16(f)) << std::hex << u;
        ++checked;
    }
    EXPECT_EQ(checked, 2000000);
#else
    GTEST_SKIP();
#endif
}

TEST(QuantBf16, Conversions) {
    EXPECT_EQ(bf16_to_fp32(0x3f80), 1.0f);
    EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(fp32_to_bf16(from_bits(0x3f808000)), 0x3f80); // tie -> even
    EXPECT_EQ(fp32_to_bf16(from_bits(0x3f818000)), 0x3f82); // tie -> even (up)
    EXPECT_EQ(fp32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    EXPECT_EQ(fp32_to_bf16(from_bits(0x7f7fffff)), 0x7f80); // max float rounds to inf
    EXPECT_EQ(fp32_to_bf16(INFINITY), 0x7f80);
    EXPECT_EQ(fp32_to_bf16(from_bits(0x00000001)), 0x0000); // float subnormals are kept/rounded
    EXPECT_EQ(fp32_to_bf16(from_bits(0x00018000)), 0x0002);
    const uint16_t nan = fp32_to_bf16(from_bits(0x7f800001)); // NaN whose payload is all below bit 16
    EXPECT_TRUE(std::isnan(bf16_to_fp32(nan)));
    EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(from_bits(0xffffffff)))));
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = bf16_to_fp32(static_cast<uint16_t>(h));
        if (!std::isnan(f)) {
            ASSERT_EQ(fp32_to_bf16(f), h);
        }
    }
}

// ---- golden data from gguf-py ----

TEST(QuantGolden, DequantizeMatchesGgufPy) {
    const auto records = load_golden();
    int checked = 0;
    for (const auto &r : records) {
        if (r.kind != 0) continue;
        const int64_t n = static_cast<int64_t>(r.values.size());
        ASSERT_EQ(row_bytes(r.type, n), r.bytes.size()) << type_name(static_cast<uint32_t>(r.type));
        for (int fast = 0; fast < 2; ++fast) {
            std::vector<float> got(n);
            if (fast)
                dequantize_row(r.type, r.bytes.data(), got.data(), n);
            else
                dequantize_row_ref(r.type, r.bytes.data(), got.data(), n);
            double max_rel = 0;
            for (int64_t i = 0; i < n; ++i) {
                const float want = r.values[i];
                if (r.type == tensor_type::F16 || r.type == tensor_type::BF16) {
                    ASSERT_EQ(bits(got[i]), bits(want)) << type_name(static_cast<uint32_t>(r.type)) << " i=" << i;
                } else {
                    const double rel = std::fabs(got[i] - want) / std::max(1e-30, std::fabs(double(want)));
                    max_rel = std::max(max_rel, want == 0 ? std::fabs(got[i]) : rel);
                }
            }
            EXPECT_LE(max_rel, 1e-6) << type_name(static_cast<uint32_t>(r.type)) << (fast ? " fast" : " ref");
            ++checked;
        }
    }
    EXPECT_EQ(checked, 14); // F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; ref and fast
}

TEST(QuantGolden, QuantizeMatchesGgufPy) {
    const auto records = load_golden();
    int checked = 0;
    for (const auto &r : records) {
        if (r.kind != 1) continue;
        const int64_t n = static_cast<int64_t>(r.values.size());
        std::vector<uint8_t> got(row_bytes(r.type, n));
        ASSERT_EQ(got.size(), r.bytes.size());
        quantize_row_ref(r.type, r.values.data(), got.data(), n);
        size_t first_diff = got.size();
        for (size_t i = 0; i < got.size(); ++i)
            if (got[i] != r.bytes[i]) {
                first_diff = i;
                break;
            }
        EXPECT_EQ(first_diff, got.size()) << type_name(static_cast<uint32_t>(r.type)) << ": first byte differing";
        ++checked;
    }
    EXPECT_EQ(checked, 5); // F16, BF16, Q8_0, Q4_0, Q4_1
}

// ---- round trips ----

// Quantise random rows, dequantise, and bound the error per block relative to that block's
// largest magnitude (range for Q4_1). Bounds are the format's half-step plus the fp16 rounding
// of the scales, and for the two-level K-quants the 6-/8-bit rounding of the sub-block scales.
TEST(QuantRoundTrip, ErrorBounds) {
    struct {
        tensor_type t;
        double max_err; // per element, as a fraction of the block's amax (range for Q4_1)
        double rmse;    // relative to the rms of the row (rows have outliers, so steps are coarse)
    } cases[] = {
        {tensor_type::F32, 0, 0},
        {tensor_type::F16, 1.0 / 2048, 1.0 / 2048}, // half an ulp (below 2^-14: of 2^-14)
        {tensor_type::BF16, 1.0 / 256, 1.0 / 256},
        {tensor_type::Q8_0, 0.5 / 127 + 1.0 / 1024, 0.012},
        {tensor_type::Q8_1, 0.5 / 127 + 1.0 / 1024, 0.012},
        {tensor_type::Q8_K, 0.5 / 127 * 1.0001, 0.02},
        {tensor_type::Q4_0, 1.0 / 8 + 1.0 / 512, 0.2},
        {tensor_type::Q4_1, 0.5 / 15 + 1.0 / 512, 0.15},
        {tensor_type::Q4_K, 0.06, 0.13},
        {tensor_type::Q6_K, 0.025, 0.04},
    };
    std::mt19937 rng(11);
    for (auto &c : cases) {
        const int64_t n = 4096;
        const int64_t blk = type_traits(c.t).block_elems;
        auto x = random_floats(n, rng);
        // Vary the scale per 256 elements so both the block scales and the super-scales move.
        for (int64_t i = 0; i < n; ++i) x[i] *= std::exp2(static_cast<float>((i / 256) % 7) - 3.0f);
        std::vector<uint8_t> q(row_bytes(c.t, n));
        std::vector<float> y(n);
        quantize_row_ref(c.t, x.data(), q.data(), n);
        dequantize_row_ref(c.t, q.data(), y.data(), n);
        double worst = 0, se = 0, ss = 0;
        const int64_t group = blk == 1 ? 1 : blk;
        for (int64_t b = 0; b < n; b += group) {
            double amax = 0, lo = x[b], hi = x[b];
            for (int64_t i = b; i < b + group; ++i) {
                amax = std::max(amax, std::fabs(double(x[i])));
                lo = std::min(lo, double(x[i])), hi = std::max(hi, double(x[i]));
            }
            double ref = c.t == tensor_type::Q4_1 ? hi - lo : amax;
            if (c.t == tensor_type::F16) ref = std::max(ref, std::ldexp(1.0, -14)); // subnormal halves
            for (int64_t i = b; i < b + group; ++i) {
                const double e = std::fabs(double(y[i]) - x[i]);
                worst = std::max(worst, ref > 0 ? e / ref : e);
                se += e * e;
                ss += double(x[i]) * x[i];
            }
        }
        const double rmse = std::sqrt(se / ss);
        std::printf("  %-5s max err %.5f of block amax, rmse %.5f of rms\n", type_name(uint32_t(c.t)).c_str(),
                    worst, rmse);
        EXPECT_LE(worst, c.max_err) << type_name(uint32_t(c.t));
        EXPECT_LE(rmse, c.rmse) << type_name(uint32_t(c.t));
    }
}

TEST(QuantRoundTrip, ZeroAndConstantBlocks) {
    for (tensor_type t : {tensor_type::Q4_0, tensor_type::Q4_1, tensor_type::Q8_0, tensor_type::Q8_1,
                          tensor_type::Q4_K, tensor_type::Q6_K, tensor_type::Q8_K}) {
        std::vector<float> x(512, 0.0f), y(512);
        std::vector<uint8_t> q(row_bytes(t, 512));
        quantize_row_ref(t, x.data(), q.data(), 512);
        dequantize_row_ref(t, q.data(), y.data(), 512);
        for (float v : y) ASSERT_EQ(v, 0.0f) << type_name(uint32_t(t));
        std::fill(x.begin(), x.end(), -0.375f);
        quantize_row_ref(t, x.data(), q.data(), 512);
        dequantize_row_ref(t, q.data(), y.data(), 512);
        for (float v : y) ASSERT_NEAR(v, -0.375f, 0.375f * 0.01) << type_name(uint32_t(t));
    }
}

TEST(QuantRoundTrip, RejectsBadLength) {
    std::vector<float> x(100);
    std::vector<uint8_t> q(1000);
    EXPECT_THROW(quantize_row_ref(tensor_type::Q4_0, x.data(), q.data(), 33), std::exception);
    EXPECT_THROW(dequantize_row_ref(tensor_type::Q4_K, q.data(), x.data(), 32), std::exception);
    EXPECT_THROW(dequantize_row_ref(static_cast<tensor_type>(6), q.data(), x.data(), 32), std::exception);
}

// ---- activation quantisation ----

TEST(QuantActivation, TypesAndScalarSimdAgree) {
    EXPECT_EQ(activation_type(tensor_type::F16), tensor_type::F32);
    EXPECT_EQ(activation_type(tensor_type::BF16), tensor_type::F32);
    EXPECT_EQ(activation_type(tensor_type::F32), tensor_type::F32);
    EXPECT_EQ(activation_type(tensor_type::Q4_0), tensor_type::Q8_0);
    EXPECT_EQ(activation_type(tensor_type::Q8_0), tensor_type::Q8_0);
    EXPECT_EQ(activation_type(tensor_type::Q4_1), tensor_type::Q8_1);
    EXPECT_EQ(activation_type(tensor_type::Q4_K), tensor_type::Q8_K);
    EXPECT_EQ(activation_type(tensor_type::Q6_K), tensor_type::Q8_K);
    std::printf("  simd level: %s\n", simd_level());
    std::mt19937 rng(5);
    for (tensor_type t : {tensor_type::F32, tensor_type::Q8_0, tensor_type::Q8_1, tensor_type::Q8_K}) {
        for (int64_t n : {256, 1536, 4096}) {
            auto x = random_floats(n, rng, 3.0f);
            std::fill(x.begin(), x.begin() + 32, 0.0f); // a zero block
            x[40] = 1e-30f;                            // a tiny (subnormal-scale) block
            std::vector<uint8_t> fast(row_bytes(t, n)), slow(row_bytes(t, n));
            quantize_activation(t, x.data(), fast.data(), n);
            {
                scalar_guard g(true);
                quantize_activation(t, x.data(), slow.data(), n);
            }
            EXPECT_EQ(fast, slow) << type_name(uint32_t(t)) << " n=" << n;
            // Invariants the kernels rely on: |q| <= 127; Q8_1 s and Q8_K bsums consistent.
            std::vector<float> y(n);
            dequantize_row_ref(t, fast.data(), y.data(), n);
            const int64_t blk = type_traits(t).block_elems;
            for (int64_t b = 0; b < n; b += blk) {
                float amax = 0;
                for (int64_t i = b; i < b + blk; ++i) amax = std::max(amax, std::fabs(x[i]));
                // Half a step, plus the fp16 rounding of d (Q8_0/Q8_1) times |q| <= 127.
                const float bound = amax * (0.5f / 127 * 1.001f + 1.0f / 2048);
                for (int64_t i = b; i < b + blk; ++i) ASSERT_LE(std::fabs(y[i] - x[i]), bound) << i;
            }
            if (t == tensor_type::Q8_K) {
                auto *b = reinterpret_cast<const block_q8_K *>(fast.data());
                for (int64_t k = 0; k < n / 256; ++k)
                    for (int j = 0; j < 16; ++j) {
                        int s = 0;
                        for (int i = 0; i < 16; ++i) {
                            ASSERT_GE(b[k].qs[16 * j + i], -127);
                            s += b[k].qs[16 * j + i];
                        }
                        ASSERT_EQ(s, b[k].bsums[j]);
                    }
            }
            if (t == tensor_type::Q8_1) {
                auto *b = reinterpret_cast<const block_q8_1 *>(fast.data());
                for (int64_t k = 0; k < n / 32; ++k) {
                    int s = 0;
                    for (int i = 0; i < 32; ++i) s += b[k].qs[i];
                    ASSERT_NEAR(fp16_to_fp32(b[k].s), fp16_to_fp32(b[k].d) * s,
                                std::fabs(fp16_to_fp32(b[k].d) * s) * 2e-3 + 1e-6);
                }
            }
        }
    }
}

// ---- dot products and the micro-GEMM ----

namespace {

struct dot_case {
    tensor_type t;
    double tol; // |got - ref| / sum_i |w_i * a_i|
};

// The kernels are exact integer sums times float scales, so the error is float rounding of the
// scale products and the accumulation (~1e-6); Q4_1 also uses the fp16-rounded s = d*sum(q) of
// its Q8_1 activation (relative 2^-11 of one term per block).
const dot_case dot_cases[] = {
    {tensor_type::F32, 2e-6},  {tensor_type::F16, 2e-6},  {tensor_type::BF16, 2e-6}, {tensor_type::Q4_0, 2e-6},
    {tensor_type::Q4_1, 1e-3}, {tensor_type::Q8_0, 2e-6}, {tensor_type::Q4_K, 2e-6}, {tensor_type::Q6_K, 2e-6},
};

struct dot_data {
    int64_t n;
    std::vector<std::vector<float>> w_f, a_f; // dequantised (reference) rows
    std::vector<uint8_t> w, act;              // packed rows with stride
    size_t w_stride, a_stride;
};

// Row placement: offsets and padding keep the blocks' natural alignment (4 bytes covers the fp16
// fields and Q8_K's float; see quants.h) but no SIMD alignment, and strides differ from the row size.
constexpr size_t w_off = 4, a_off = 4;

// n_rows weight rows and n_cols activation rows at w_off / a_off with padded strides.
dot_data make_data(tensor_type t, int64_t n, int n_rows, int n_cols, std::mt19937 &rng) {
    dot_data d;
    d.n = n;
    const tensor_type at = activation_type(t);
    d.w_stride = row_bytes(t, n) + 12;
    d.a_stride = row_bytes(at, n) + 20;
    d.w.assign(d.w_stride * n_rows + 16, 0xAA);
    d.act.assign(d.a_stride * n_cols + 16, 0x55);
    for (int r = 0; r < n_rows; ++r) {
        auto row = random_weights(t, n, rng);
        std::memcpy(&d.w[w_off + r * d.w_stride], row.data(), row.size());
        d.w_f.emplace_back(n);
        dequantize_row_ref(t, row.data(), d.w_f.back().data(), n);
    }
    for (int c = 0; c < n_cols; ++c) {
        auto x = random_floats(n, rng);
        std::vector<uint8_t> q(row_bytes(at, n));
        quantize_activation(at, x.data(), q.data(), n);
        std::memcpy(&d.act[a_off + c * d.a_stride], q.data(), q.size());
        d.a_f.emplace_back(n);
        dequantize_row_ref(at, q.data(), d.a_f.back().data(), n);
    }
    return d;
}

// Relative error of got against the double dot of the dequantised rows.
double rel_err(const dot_data &d, int r, int c, float got) {
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < d.n; ++i) {
        const double p = double(d.w_f[r][i]) * d.a_f[c][i];
        ref += p;
        mag += std::fabs(p);
    }
    if (mag == 0) return std::fabs(got);
    return std::fabs(got - ref) / mag;
}

void check_vec_dot(bool force_scalar) {
    scalar_guard g(force_scalar);
    std::mt19937 rng(21);
    for (const auto &c : dot_cases) {
        const int64_t blk = type_traits(c.t).block_elems;
        double worst = 0;
        for (int64_t n : {256, 512, 1536, 4096, 32 * 3, 576}) {
            if (n % blk) continue;
            auto d = make_data(c.t, n, 2, 2, rng);
            for (int r = 0; r < 2; ++r)
                for (int k = 0; k < 2; ++k) {
                    const float got = vec_dot(c.t, n, &d.w[w_off + r * d.w_stride], &d.act[a_off + k * d.a_stride]);
                    const double e = rel_err(d, r, k, got);
                    worst = std::max(worst, e);
                    EXPECT_LE(e, c.tol) << type_name(uint32_t(c.t)) << " n=" << n;
                }
        }
        std::printf("  vec_dot %-4s %-6s max rel err %.3g (tol %.1g)\n", type_name(uint32_t(c.t)).c_str(),
                    simd_level(), worst, c.tol);
    }
}

void check_gemm(bool force_scalar) {
    scalar_guard g(force_scalar);
    std::mt19937 rng(33);
    const int dims[] = {1, 2, 3, 5, 17};
    for (const auto &c : dot_cases) {
        const int64_t blk = type_traits(c.t).block_elems;
        double worst = 0;
        for (int64_t n : {256, 1536, 4096, 32 * 5}) {
            if (n % blk) continue;
            auto d = make_data(c.t, n, 17, 17, rng);
            for (int nr : dims)
                for (int nc : dims) {
                    const int64_t out_stride = nr + 3;
                    std::vector<float> out(out_stride * nc + 8, -12345.0f);
                    gemm_block(c.t, n, &d.w[w_off], d.w_stride, nr, &d.act[a_off], d.a_stride, nc, out.data(), out_stride);
                    for (int k = 0; k < nc; ++k) {
                        for (int r = 0; r < nr; ++r) {
                            const double e = rel_err(d, r, k, out[k * out_stride + r]);
                            worst = std::max(worst, e);
                            ASSERT_LE(e, c.tol) << type_name(uint32_t(c.t)) << " n=" << n << " rows=" << nr
                                                << " cols=" << nc << " r=" << r << " c=" << k;
                        }
                        for (int64_t r = nr; r < out_stride; ++r) // gaps between columns untouched
                            if (k + 1 < nc) {
                                ASSERT_EQ(out[k * out_stride + r], -12345.0f);
                            }
                    }
                }
        }
        std::printf("  gemm    %-4s %-6s max rel err %.3g (tol %.1g)\n", type_name(uint32_t(c.t)).c_str(),
                    simd_level(), worst, c.tol);
    }
}

// A prefill-sized tile, to reach the full register tiles of the SIMD kernels.
void check_gemm_large(bool force_scalar) {
    scalar_guard g(force_scalar);
    std::mt19937 rng(44);
    for (const auto &c : dot_cases) {
        const int64_t n = 1536, nr = 37, nc = 29;
        auto d = make_data(c.t, n, nr, nc, rng);
        std::vector<float> out(nr * nc);
        gemm_block(c.t, n, &d.w[w_off], d.w_stride, nr, &d.act[a_off], d.a_stride, nc, out.data(), nr);
        double worst = 0;
        for (int k = 0; k < nc; ++k)
            for (int r = 0; r < nr; ++r) worst = std::max(worst, rel_err(d, r, k, out[k * nr + r]));
        EXPECT_LE(worst, c.tol) << type_name(uint32_t(c.t));
        std::printf("  gemm37x29 %-4s %-6s max rel err %.3g\n", type_name(uint32_t(c.t)).c_str(), simd_level(), worst);
    }
}

} // namespace

TEST(QuantDot, VecDotSimd) { check_vec_dot(false); }
TEST(QuantDot, VecDotScalar) { check_vec_dot(true); }
TEST(QuantDot, GemmBlockSimd) { check_gemm(false); }
TEST(QuantDot, GemmBlockScalar) { check_gemm(true); }
TEST(QuantDot, GemmBlockLargeSimd) { check_gemm_large(false); }
TEST(QuantDot, GemmBlockLargeScalar) { check_gemm_large(true); }

// SIMD and scalar agree with each other (tighter than either against the double reference).
TEST(QuantDot, SimdMatchesScalar) {
    if (std::string(simd_level()) == "scalar") GTEST_SKIP() << "no SIMD on this CPU";
    std::mt19937 rng(55);
    for (const auto &c : dot_cases) {
        const int64_t n = 4096;
        auto d = make_data(c.t, n, 9, 6, rng);
        std::vector<float> fast(9 * 6), slow(9 * 6);
        gemm_block(c.t, n, &d.w[w_off], d.w_stride, 9, &d.act[a_off], d.a_stride, 6, fast.data(), 9);
        {
            scalar_guard g(true);
            gemm_block(c.t, n, &d.w[w_off], d.w_stride, 9, &d.act[a_off], d.a_stride, 6, slow.data(), 9);
        }
        for (int i = 0; i < 9 * 6; ++i) {
            double mag = 0;
            for (int64_t k = 0; k < n; ++k) mag += std::fabs(double(d.w_f[i % 9][k]) * d.a_f[i / 9][k]);
            EXPECT_LE(std::fabs(fast[i] - slow[i]), c.tol * mag) << type_name(uint32_t(c.t)) << " i=" << i;
        }
    }
}
