// Quantised formats: fp16/bf16 conversion, the readable reference (de)quantisers, the scalar
// dot products, and the run-time dispatch to the AVX2 kernels in quants_avx2.cpp.
//
// This file is compiled for plain x86-64 (no AVX), so everything here runs on any CPU; the
// AVX2 entry points are only called after a CPUID check.
#include "recur/quants.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>

#include "recur/error.h"

namespace recur {

#if defined(RECUR_X86)
// Defined in quants_avx2.cpp (compiled with -mavx2 -mfma -mf16c). Each returns false when it
// has no kernel for the type, and the caller falls back to the scalar code.
namespace avx2 {
bool dequantize_row(tensor_type t, const void *src, float *dst, int64_t n);
bool quantize_activation(tensor_type t, const float *src, void *dst, int64_t n);
bool vec_dot(tensor_type t, int64_t n, const void *w, const void *a, float *result);
bool gemm_block(tensor_type t, int64_t n, const uint8_t *w, size_t w_row_bytes, int64_t n_rows,
                const uint8_t *act, size_t act_row_bytes, int64_t n_cols, float *out, int64_t out_stride);
} // namespace avx2
#endif

// ---- fp16 / bf16 -------------------------------------------------------------------------------

static uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | (mant << 13)); // inf / NaN (payload kept)
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return bits_f32(sign); // +-0
    // Subnormal: value = mant * 2^-24; normalise the mantissa.
    int e = -1;
    do {
        mant <<= 1;
        ++e;
    } while ((mant & 0x400) == 0);
    return bits_f32(sign | static_cast<uint32_t>(113 - 1 - e) << 23 | ((mant & 0x3ff) << 13));
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
    const uint32_t abs = u & 0x7fffffff;
    if (abs > 0x7f800000) return sign | 0x7e00 | static_cast<uint16_t>((abs >> 13) & 0x3ff); // quiet NaN
    if (abs >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to inf (65504 is the max)
    if (abs >= 0x38800000) {                     // normal half (>= 2^-14)
        // Rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even;
        // a carry out of the mantissa correctly bumps the exponent.
        const uint32_t r = abs - (112u << 23);
        const uint32_t rounded = r + 0xfff + ((r >> 13) & 1);
        return sign | static_cast<uint16_t>(rounded >> 13);
    }
    if (abs < 0x33000000) return sign; // < 2^-25: rounds to zero (exactly 2^-25 is a tie to 0)
    // Subnormal half: value = m * 2^-24 with m = round(abs * 2^24), ties to even.
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffff) | 0x800000; // 24 significant bits
    const uint32_t shift = 126 - exp;                  // 14..24
    const uint32_t half_ulp = 1u << (shift - 1);
    uint32_t m = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1);
    if (rest > half_ulp || (rest == half_ulp && (m & 1))) ++m;
    return sign | static_cast<uint16_t>(m);
}

float bf16_to_fp32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

uint16_t fp32_to_bf16(float f) {
    const uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 0x40); // quiet NaN
    return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// ---- helpers -----------------------------------------------------------------------------------

static int64_t check_blocks(tensor_type t, int64_t n, const char *what) {
    const auto tr = type_traits(t);
    if (tr.block_elems == 0)
        throw error(std::string(what) + ": unsupported tensor type " + type_name(static_cast<uint32_t>(t)));
    if (n < 0 || n % tr.block_elems != 0)
        throw error(std::string(what) + ": " + std::to_string(n) + " elements is not a multiple of " +
                    std::to_string(tr.block_elems) + " for " + tr.name);
    return n / tr.block_elems;
}

// Q4_K's packed 6-bit (scale, min) of sub-block j (see block_q4_K).
static void q4_K_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The 6-bit value q (0..63) of element e (0..255) of a Q6_K block.
static int q6_K_value(const block_q6_K &b, int e) {
    const int h = e / 128, i = e % 128, quarter = i / 32, l = i % 32;
    const uint8_t *ql = b.ql + 64 * h, *qh = b.qh + 32 * h;
    const int low = quarter & 1 ? ql[l + 32] : ql[l];
    const int lo4 = quarter < 2 ? low & 15 : low >> 4;
    const int hi2 = (qh[l] >> (2 * quarter)) & 3;
    return lo4 | hi2 << 4;
}

// ---- dequantisation (reference) ----------------------------------------------------------------

void dequantize_row_ref(tensor_type t, const void *src, float *y, int64_t n) {
    const int64_t nb = check_blocks(t, n, "dequantize_row_ref");
    switch (t) {
    case tensor_type::F32: std::memcpy(y, src, static_cast<size_t>(n) * 4); return;
    case tensor_type::F16: {
        const auto *x = static_cast<const uint16_t *>(src);
        for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
        return;
    }
    case tensor_type::BF16: {
        const auto *x = static_cast<const uint16_t *>(src);
        for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
        return;
    }
    case tensor_type::Q4_0: {
        const auto *x = static_cast<const block_q4_0 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) {
            const float d = fp16_to_fp32(x[b].d);
            for (int i = 0; i < 16; ++i) {
                y[i] = static_cast<float>((x[b].qs[i] & 15) - 8) * d;
                y[i + 16] = static_cast<float>((x[b].qs[i] >> 4) - 8) * d;
            }
        }
        return;
    }
    case tensor_type::Q4_1: {
        const auto *x = static_cast<const block_q4_1 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) {
            const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
            for (int i = 0; i < 16; ++i) {
                y[i] = static_cast<float>(x[b].qs[i] & 15) * d + m;
                y[i + 16] = static_cast<float>(x[b].qs[i] >> 4) * d + m;
            }
        }
        return;
    }
    case tensor_type::Q8_0: {
        const auto *x = static_cast<const block_q8_0 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) {
            const float d = fp16_to_fp32(x[b].d);
            for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(x[b].qs[i]) * d;
        }
        return;
    }
    case tensor_type::Q8_1: {
        const auto *x = static_cast<const block_q8_1 *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 32) {
            const float d = fp16_to_fp32(x[b].d);
            for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(x[b].qs[i]) * d;
        }
        return;
    }
    case tensor_type::Q4_K: {
        const auto *x = static_cast<const block_q4_K *>(src);
        for (int64_t b = 0; b < nb; ++b) {
            const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
            for (int c = 0; c < 4; ++c) { // 64-element chunk: two sub-blocks sharing qs[32c..]
                const uint8_t *q = x[b].qs + 32 * c;
                int sc0, m0, sc1, m1;
                q4_K_scale_min(x[b].scales, 2 * c, &sc0, &m0);
                q4_K_scale_min(x[b].scales, 2 * c + 1, &sc1, &m1);
                const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
                const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
                for (int l = 0; l < 32; ++l) *y++ = d0 * static_cast<float>(q[l] & 15) - mm0;
                for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] >> 4) - mm1;
            }
        }
        return;
    }
    case tensor_type::Q6_K: {
        const auto *x = static_cast<const block_q6_K *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 256) {
            const float d = fp16_to_fp32(x[b].d);
            for (int e = 0; e < 256; ++e) {
                const float ds = d * static_cast<float>(x[b].scales[e / 16]);
                y[e] = ds * static_cast<float>(q6_K_value(x[b], e) - 32);
            }
        }
        return;
    }
    case tensor_type::Q8_K: {
        const auto *x = static_cast<const block_q8_K *>(src);
        for (int64_t b = 0; b < nb; ++b, y += 256)
            for (int i = 0; i < 256; ++i) y[i] = static_cast<float>(x[b].qs[i]) * x[b].d;
        return;
    }
    }
}

// ---- quantisation (reference) ------------------------------------------------------------------

// Activation quantisers (Q8_0 via quantize_activation, Q8_1, Q8_K): d = amax / 127 and
// q = round_to_nearest_even(x * (1 / d)), so |q| <= 127. The AVX2 versions do exactly these
// float operations and produce the same bytes.
static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    return amax;
}

static int quantize_q8_activation_block(const float *x, int n, int8_t *q, float *d_out) {
    const float amax = absmax(x, n);
    const float d = amax / 127.0f;
    // Blocks below 1e-30 quantise to zero: 1 / d would overflow for subnormal d.
    const float id = amax >= 1e-30f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < n; ++i) {
        const int v = static_cast<int>(std::nearbyint(x[i] * id)); // default mode: ties to even
        q[i] = static_cast<int8_t>(std::clamp(v, -127, 127));
        sum += q[i];
    }
    *d_out = d;
    return sum;
}

static void quantize_activation_scalar(tensor_type t, const float *x, void *dst, int64_t n) {
    const int64_t nb = check_blocks(t, n, "quantize_activation");
    switch (t) {
    case tensor_type::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
    case tensor_type::Q8_0: {
        auto *y = static_cast<block_q8_0 *>(dst);
        for (int64_t b = 0; b < nb; ++b) {
            float d;
            quantize_q8_activation_block(x + 32 * b, 32, y[b].qs, &d);
            y[b].d = fp32_to_fp16(d);
        }
        return;
    }
    case tensor_type::Q8_1: {
        auto *y = static_cast<block_q8_1 *>(dst);
        for (int64_t b = 0; b < nb; ++b) {
            float d;
            const int sum = quantize_q8_activation_block(x + 32 * b, 32, y[b].qs, &d);
            y[b].d = fp32_to_fp16(d);
            y[b].s = fp32_to_fp16(d * static_cast<float>(sum));
        }
        return;
    }
    case tensor_type::Q8_K: {
        auto *y = static_cast<block_q8_K *>(dst);
        for (int64_t b = 0; b < nb; ++b) {
            quantize_q8_activation_block(x + 256 * b, 256, y[b].qs, &y[b].d);
            for (int j = 0; j < 16; ++j) {
                int s = 0;
                for (int i = 0; i < 16; ++i) s += y[b].qs[16 * j + i];
                y[b].bsums[j] = static_cast<int16_t>(s);
            }
        }
        return;
    }
    default:
        throw error("quantize_activation: " + type_name(static_cast<uint32_t>(t)) + " is not an activation type");
    }
}

void quantize_row_ref(tensor_type t, const float *x, void *dst, int64_t n) {
    const int64_t nb = check_blocks(t, n, "quantize_row_ref");
    switch (t) {
    case tensor_type::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
    case tensor_type::F16: {
        auto *y = static_cast<uint16_t *>(dst);
        for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
        return;
    }
    case tensor_type::BF16: {
        auto *y = static_cast<uint16_t *>(dst);
        for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
        return;
    }
    case tensor_type::Q4_0: {
        // ggml: d = (signed value of largest magnitude) / -8, so that value maps to q = 0 (-8)
        // exactly; q = trunc(x / d + 8.5) clamped to 15.
        auto *y = static_cast<block_q4_0 *>(dst);
        for (int64_t b = 0; b < nb; ++b, x += 32) {
            float amax = 0.0f, max = 0.0f;
            for (int i = 0; i < 32; ++i)
                if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
            const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = fp32_to_fp16(d);
            for (int i = 0; i < 16; ++i) {
                const int q0 = std::min(15, static_cast<int>(x[i] * id + 8.5f));
                const int q1 = std::min(15, static_cast<int>(x[i + 16] * id + 8.5f));
                y[b].qs[i] = static_cast<uint8_t>(q0 | q1 << 4);
            }
        }
        return;
    }
    case tensor_type::Q4_1: {
        // ggml: m = block min, d = (max - min) / 15, q = trunc((x - m) / d + 0.5) clamped to 15.
        auto *y = static_cast<block_q4_1 *>(dst);
        for (int64_t b = 0; b < nb; ++b, x += 32) {
            float lo = x[0], hi = x[0];
            for (int i = 1; i < 32; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
            const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = fp32_to_fp16(d);
            y[b].m = fp32_to_fp16(lo);
            for (int i = 0; i < 16; ++i) {
                const int q0 = std::min(15, static_cast<int>((x[i] - lo) * id + 0.5f));
                const int q1 = std::min(15, static_cast<int>((x[i + 16] - lo) * id + 0.5f));
                y[b].qs[i] = static_cast<uint8_t>(q0 | q1 << 4);
            }
        }
        return;
    }
    case tensor_type::Q8_0: {
        // ggml: d = amax / 127, q = round-half-away-from-zero(x / d).
        auto *y = static_cast<block_q8_0 *>(dst);
        for (int64_t b = 0; b < nb; ++b, x += 32) {
            const float d = absmax(x, 32) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = fp32_to_fp16(d);
            for (int i = 0; i < 32; ++i) y[b].qs[i] = static_cast<int8_t>(std::round(x[i] * id));
        }
        return;
    }
    case tensor_type::Q8_1:
    case tensor_type::Q8_K: quantize_activation_scalar(t, x, dst, n); return;
    case tensor_type::Q4_K: {
        // Round to nearest, two levels: per sub-block of 32, m = max(0, -min) and
        // scale = (max + m) / 15 (so x ~ scale * q - m with q in 0..15); then the 8 scales and
        // 8 mins are themselves quantised to 6 bits against d = max(scale) / 63 and
        // dmin = max(m) / 63. q is recomputed against the quantised scale/min.
        auto *y = static_cast<block_q4_K *>(dst);
        for (int64_t b = 0; b < nb; ++b, x += 256) {
            float scale[8], mn[8], max_scale = 0.0f, max_min = 0.0f;
            for (int j = 0; j < 8; ++j) {
                float lo = x[32 * j], hi = x[32 * j];
                for (int i = 1; i < 32; ++i) lo = std::min(lo, x[32 * j + i]), hi = std::max(hi, x[32 * j + i]);
                mn[j] = std::max(0.0f, -lo);
                scale[j] = (hi + mn[j]) / 15.0f;
                max_scale = std::max(max_scale, scale[j]);
                max_min = std::max(max_min, mn[j]);
            }
            const float d = max_scale / 63.0f, dmin = max_min / 63.0f;
            y[b].d = fp32_to_fp16(d);
            y[b].dmin = fp32_to_fp16(dmin);
            const float dq = fp16_to_fp32(y[b].d), dminq = fp16_to_fp32(y[b].dmin);
            uint8_t sc[8], m[8];
            for (int j = 0; j < 8; ++j) {
                sc[j] = static_cast<uint8_t>(std::clamp(dq > 0 ? std::lround(scale[j] / dq) : 0L, 0L, 63L));
                m[j] = static_cast<uint8_t>(std::clamp(dminq > 0 ? std::lround(mn[j] / dminq) : 0L, 0L, 63L));
            }
            std::memset(y[b].scales, 0, 12);
            for (int j = 0; j < 4; ++j) {
                y[b].scales[j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
                y[b].scales[j + 4] = static_cast<uint8_t>(m[j] | (m[j + 4] >> 4) << 6);
                y[b].scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
            }
            for (int c = 0; c < 4; ++c) {
                uint8_t q[2][32];
                for (int h = 0; h < 2; ++h) {
                    const int j = 2 * c + h;
                    const float ds = dq * sc[j], dm = dminq * m[j];
                    const float ids = ds > 0 ? 1.0f / ds : 0.0f;
                    for (int l = 0; l < 32; ++l)
                        q[h][l] = static_cast<uint8_t>(std::clamp(std::lround((x[32 * j + l] + dm) * ids), 0L, 15L));
                }
                for (int l = 0; l < 32; ++l) y[b].qs[32 * c + l] = static_cast<uint8_t>(q[0][l] | q[1][l] << 4);
            }
        }
        return;
    }
    case tensor_type::Q6_K: {
        // Round to nearest: per sub-block of 16, scale = amax / 31 (q - 32 in -31..31), the 16
        // scales quantised to int8 against d = max(scale) / 127.
        auto *y = static_cast<block_q6_K *>(dst);
        for (int64_t b = 0; b < nb; ++b, x += 256) {
            float scale[16], max_scale = 0.0f;
            for (int j = 0; j < 16; ++j) {
                scale[j] = absmax(x + 16 * j, 16) / 31.0f;
                max_scale = std::max(max_scale, scale[j]);
            }
            y[b].d = fp32_to_fp16(max_scale / 127.0f);
            const float dq = fp16_to_fp32(y[b].d);
            uint8_t q[256];
            for (int j = 0; j < 16; ++j) {
                const long s = dq > 0 ? std::clamp(std::lround(scale[j] / dq), 0L, 127L) : 0L;
                y[b].scales[j] = static_cast<int8_t>(s);
                const float ds = dq * static_cast<float>(s), ids = ds > 0 ? 1.0f / ds : 0.0f;
                for (int l = 0; l < 16; ++l)
                    q[16 * j + l] = static_cast<uint8_t>(std::clamp(std::lround(x[16 * j + l] * ids), -32L, 31L) + 32);
            }
            std::memset(y[b].qh, 0, sizeof y[b].qh);
            for (int e = 0; e < 256; ++e) { // inverse of q6_K_value
                const int h = e / 128, i = e % 128, quarter = i / 32, l = i % 32;
                uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
                uint8_t &low = quarter & 1 ? ql[l + 32] : ql[l];
                if (quarter < 2)
                    low = static_cast<uint8_t>((low & 0xf0) | (q[e] & 15));
                else
                    low = static_cast<uint8_t>((low & 0x0f) | (q[e] & 15) << 4);
                qh[l] = static_cast<uint8_t>(qh[l] | (q[e] >> 4) << (2 * quarter));
            }
        }
        return;
    }
    }
}

// ---- scalar dot products -----------------------------------------------------------------------

static float dot_f32(int64_t n, const float *w, const float *a) {
    float s[4] = {0, 0, 0, 0}; // four partial sums: fewer rounding steps, and vectorisable
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; ++k) s[k] += w[i + k] * a[i + k];
    for (; i < n; ++i) s[0] += w[i] * a[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

template <float (*cvt)(uint16_t)> static float dot_half(int64_t n, const uint16_t *w, const float *a) {
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; ++k) s[k] += cvt(w[i + k]) * a[i + k];
    for (; i < n; ++i) s[0] += cvt(w[i]) * a[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static float vec_dot_scalar(tensor_type t, int64_t n, const void *wv, const void *av) {
    const int64_t nb = n / type_traits(t).block_elems;
    float acc = 0.0f;
    switch (t) {
    case tensor_type::F32: return dot_f32(n, static_cast<const float *>(wv), static_cast<const float *>(av));
    case tensor_type::F16:
        return dot_half<fp16_to_fp32>(n, static_cast<const uint16_t *>(wv), static_cast<const float *>(av));
    case tensor_type::BF16:
        return dot_half<bf16_to_fp32>(n, static_cast<const uint16_t *>(wv), static_cast<const float *>(av));
    case tensor_type::Q4_0: {
        const auto *w = static_cast<const block_q4_0 *>(wv);
        const auto *a = static_cast<const block_q8_0 *>(av);
        for (int64_t b = 0; b < nb; ++b) {
            int isum = 0;
            for (int i = 0; i < 16; ++i)
                isum += ((w[b].qs[i] & 15) - 8) * a[b].qs[i] + ((w[b].qs[i] >> 4) - 8) * a[b].qs[i + 16];
            acc += fp16_to_fp32(w[b].d) * fp16_to_fp32(a[b].d) * static_cast<float>(isum);
        }
        return acc;
    }
    case tensor_type::Q4_1: {
        const auto *w = static_cast<const block_q4_1 *>(wv);
        const auto *a = static_cast<const block_q8_1 *>(av);
        for (int64_t b = 0; b < nb; ++b) {
            int isum = 0;
            for (int i = 0; i < 16; ++i) isum += (w[b].qs[i] & 15) * a[b].qs[i] + (w[b].qs[i] >> 4) * a[b].qs[i + 16];
            acc += fp16_to_fp32(w[b].d) * fp16_to_fp32(a[b].d) * static_cast<float>(isum) +
                   fp16_to_fp32(w[b].m) * fp16_to_fp32(a[b].s);
        }
        return acc;
    }
    case tensor_type::Q8_0: {
        const auto *w = static_cast<const block_q8_0 *>(wv);
        const auto *a = static_cast<const block_q8_0 *>(av);
        for (int64_t b = 0; b < nb; ++b) {
            int isum = 0;
            for (int i = 0; i < 32; ++i) isum += w[b].qs[i] * a[b].qs[i];
            acc += fp16_to_fp32(w[b].d) * fp16_to_fp32(a[b].d) * static_cast<float>(isum);
        }
        return acc;
    }
    case tensor_type::Q4_K: {
        // sum_j d*sc_j*d_a*sum(q*a) - dmin*m_j*d_a*sum(a); sum(a) over a sub-block of 32 comes
        // from the two bsums of its halves.
        const auto *w = static_cast<const block_q4_K *>(wv);
        const auto *a = static_cast<const block_q8_K *>(av);
        for (int64_t b = 0; b < nb; ++b) {
            int sumi = 0, summ = 0;
            for (int j = 0; j < 8; ++j) {
                int sc, m;
                q4_K_scale_min(w[b].scales, j, &sc, &m);
                const uint8_t *q = w[b].qs + 32 * (j / 2);
                const int8_t *qa = a[b].qs + 32 * j;
                int isum = 0;
                for (int l = 0; l < 32; ++l) isum += (j & 1 ? q[l] >> 4 : q[l] & 15) * qa[l];
                sumi += sc * isum;
                summ += m * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
            }
            acc += a[b].d * (fp16_to_fp32(w[b].d) * static_cast<float>(sumi) -
                             fp16_to_fp32(w[b].dmin) * static_cast<float>(summ));
        }
        return acc;
    }
    case tensor_type::Q6_K: {
        const auto *w = static_cast<const block_q6_K *>(wv);
        const auto *a = static_cast<const block_q8_K *>(av);
        for (int64_t b = 0; b < nb; ++b) {
            int sumi = 0;
            for (int j = 0; j < 16; ++j) {
                int isum = 0;
                for (int l = 0; l < 16; ++l) isum += (q6_K_value(w[b], 16 * j + l) - 32) * a[b].qs[16 * j + l];
                sumi += w[b].scales[j] * isum;
            }
            acc += a[b].d * fp16_to_fp32(w[b].d) * static_cast<float>(sumi);
        }
        return acc;
    }
    default: throw error("vec_dot: no kernel for weight type " + type_name(static_cast<uint32_t>(t)));
    }
}

// ---- dispatch ----------------------------------------------------------------------------------

static std::atomic<bool> g_force_scalar{false};

static bool use_avx2() {
#if defined(RECUR_X86)
    // Every CPU with AVX2 also has F16C (clang's builtin cannot test "f16c" by name).
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has && !g_force_scalar.load(std::memory_order_relaxed);
#else
    return false;
#endif
}

const char *simd_level() { return use_avx2() ? "avx2" : "scalar"; }
void set_force_scalar(bool on) { g_force_scalar.store(on); }

tensor_type activation_type(tensor_type w) {
    switch (w) {
    case tensor_type::F32:
    case tensor_type::F16:
    case tensor_type::BF16: return tensor_type::F32;
    case tensor_type::Q4_0:
    case tensor_type::Q8_0: return tensor_type::Q8_0;
    case tensor_type::Q4_1: return tensor_type::Q8_1;
    case tensor_type::Q4_K:
    case tensor_type::Q6_K: return tensor_type::Q8_K;
    default: throw error("activation_type: " + type_name(static_cast<uint32_t>(w)) + " is not a weight type");
    }
}

void dequantize_row(tensor_type t, const void *src, float *dst, int64_t n) {
#if defined(RECUR_X86)
    if (use_avx2() && avx2::dequantize_row(t, src, dst, n)) return;
#endif
    dequantize_row_ref(t, src, dst, n);
}

void quantize_activation(tensor_type t, const float *src, void *dst, int64_t n) {
    check_blocks(t, n, "quantize_activation");
#if defined(RECUR_X86)
    if (use_avx2() && avx2::quantize_activation(t, src, dst, n)) return;
#endif
    quantize_activation_scalar(t, src, dst, n);
}

float vec_dot(tensor_type t, int64_t n, const void *w, const void *a) {
    check_blocks(t, n, "vec_dot");
#if defined(RECUR_X86)
    float r;
    if (use_avx2() && avx2::vec_dot(t, n, w, a, &r)) return r;
#endif
    return vec_dot_scalar(t, n, w, a);
}

void gemm_block(tensor_type t, int64_t n, const uint8_t *w, size_t w_row_bytes, int64_t n_rows,
                const uint8_t *act, size_t act_row_bytes, int64_t n_cols, float *out, int64_t out_stride) {
    check_blocks(t, n, "gemm_block");
    if (n_rows <= 0 || n_cols <= 0) return;
#if defined(RECUR_X86)
    if (use_avx2() && avx2::gemm_block(t, n, w, w_row_bytes, n_rows, act, act_row_bytes, n_cols, out, out_stride))
        return;
#endif
    for (int64_t c = 0; c < n_cols; ++c)
        for (int64_t r = 0; r < n_rows; ++r)
            out[c * out_stride + r] = vec_dot_scalar(t, n, w + r * w_row_bytes, act + c * act_row_bytes);
}

} // namespace recur
