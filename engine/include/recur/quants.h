#pragma once
// Quantised block formats (bit-compatible with ggml/GGUF), fp16/bf16 conversion, and the
// dot-product kernels the model's matmuls are built on.
//
// A row of n elements of a block type is n / block_elems consecutive blocks (see
// tensor_type.h); every n passed below must be a multiple of the type's block_elems. Rows need
// only their elements' natural alignment (2 bytes for F16/BF16 and the fp16 block types, 4 for
// F32 and Q8_K), never SIMD alignment.
// Weights stay in their file format. Activations are quantised on the fly to the type
// activation_type(weight_type) so the inner loops are integer dot products:
//
//   weight type      activation type   per-block math (w: weight block, a: activation block)
//   F32/F16/BF16     F32               plain float dot
//   Q8_0, Q4_0       Q8_0              d_w*d_a*sum(q_w*q_a)          (Q4_0: q_w = nibble - 8)
//   Q4_1             Q8_1              d_w*d_a*sum(q_w*q_a) + m_w*s_a (s_a = d_a*sum(q_a))
//   Q4_K, Q6_K       Q8_K              per-sub-block integer scales, one float d per 256
//
// Activation quantisers keep |q| <= 127 (never -128); the SIMD kernels rely on it.
#include <cstddef>
#include <cstdint>

#include "recur/tensor_type.h"

namespace recur {

// ---- block layouts (little-endian, packed exactly as in ggml-common.h) ----------------------

constexpr int qk4_0 = 32, qk4_1 = 32, qk8_0 = 32, qk8_1 = 32, qk_k = 256;

// 32 weights: x[i] = d * ((qs[i] & 15) - 8), x[i+16] = d * ((qs[i] >> 4) - 8), i < 16.
struct block_q4_0 {
    uint16_t d;              // fp16 scale
    uint8_t qs[qk4_0 / 2];   // nibbles: low = element i, high = element i + 16
};
// 32 weights: x[i] = d * (qs[i] & 15) + m, x[i+16] = d * (qs[i] >> 4) + m.
struct block_q4_1 {
    uint16_t d;              // fp16 scale
    uint16_t m;              // fp16 offset (block minimum)
    uint8_t qs[qk4_1 / 2];
};
// 32 values: x[i] = d * qs[i].
struct block_q8_0 {
    uint16_t d;              // fp16 scale
    int8_t qs[qk8_0];
};
// Q8_0 plus s = d * sum(qs) (fp16), so Q4_1's offset term costs one multiply per block.
struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[qk8_1];
};
// 256 weights in 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc[j] and 6-bit min m[j]:
// x = d * sc[j] * q - dmin * m[j], q a nibble. Element layout: 64-element chunk c (0..3) uses
// qs[32c .. 32c+31]; low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
// scales[12] packs (sc, m) for j < 4 as scales[j] & 63, scales[j+4] & 63; for j >= 4 as
// sc = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4, m = (scales[j+4] >> 4) | (scales[j] >> 6) << 4.
struct block_q4_K {
    uint16_t d;              // fp16 super-scale for sc
    uint16_t dmin;           // fp16 super-scale for m
    uint8_t scales[12];
    uint8_t qs[qk_k / 2];
};
// 256 weights in 16 sub-blocks of 16, x = d * scales[j] * (q - 32), q 6 bits: low 4 bits in ql,
// high 2 bits in qh. Per 128-element half h (ql += 64h, qh += 32h, scales += 8h), l < 32:
//   q[l]    = ql[l] & 15      | ((qh[l] >> 0) & 3) << 4
//   q[l+32] = ql[l+32] & 15   | ((qh[l] >> 2) & 3) << 4
//   q[l+64] = ql[l] >> 4      | ((qh[l] >> 4) & 3) << 4
//   q[l+96] = ql[l+32] >> 4   | ((qh[l] >> 6) & 3) << 4
// and element e of the half belongs to sub-block 8h + e / 16.
struct block_q6_K {
    uint8_t ql[qk_k / 2];
    uint8_t qh[qk_k / 4];
    int8_t scales[qk_k / 16];
    uint16_t d;              // fp16
};
// Activation block for the K-quants: x[i] = d * qs[i]; bsums[j] = sum(qs[16j .. 16j+15]).
struct block_q8_K {
    float d;
    int8_t qs[qk_k];
    int16_t bsums[qk_k / 16];
};

static_assert(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20 && sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q8_1) == 36 && sizeof(block_q4_K) == 144 && sizeof(block_q6_K) == 210);
static_assert(sizeof(block_q8_K) == 292);

// ---- scalar conversions ----------------------------------------------------------------------

// IEEE binary16 <-> binary32; fp32_to_fp16 rounds to nearest even, overflows to inf, keeps NaN
// a (quiet) NaN with the top payload bits.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
// bfloat16 (the top half of a binary32); fp32_to_bf16 rounds to nearest even, NaN stays NaN.
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

// ---- readable reference code (one block at a time, next to the spec above) -----------------

// src holds n elements of type t (n / block_elems blocks); dst gets n floats. All 10 types.
void dequantize_row_ref(tensor_type t, const void *src, float *dst, int64_t n);
// The inverse: Q4_0/Q4_1/Q8_0 follow ggml's reference quantisers (bit-exact with gguf-py);
// Q4_K/Q6_K use plain round-to-nearest with scales from the block maxima; Q8_1/Q8_K are the
// activation quantisers. Throws recur::error for an unknown type or a bad n.
void quantize_row_ref(tensor_type t, const float *src, void *dst, int64_t n);

// ---- fast paths (AVX2 when the CPU has it, else the scalar code) ----------------------------

void dequantize_row(tensor_type t, const void *src, float *dst, int64_t n);

// F32/F16/BF16 -> F32; Q8_0, Q4_0 -> Q8_0; Q4_1 -> Q8_1; Q4_K, Q6_K -> Q8_K.
tensor_type activation_type(tensor_type weight_type);
// Quantise one activation row of n floats to act_type (a result of activation_type); F32 copies.
// The scalar and SIMD paths give identical bytes.
void quantize_activation(tensor_type act_type, const float *src, void *dst, int64_t n);

// dot(weight row of w_type, activation row of activation_type(w_type)), n elements.
float vec_dot(tensor_type w_type, int64_t n, const void *w_row, const void *act_row);

// Micro-GEMM, the matmul inner kernel (callers split rows/columns across threads):
//   out[c * out_stride + r] = dot(weight row r, activation row c),  0 <= r < n_rows, 0 <= c < n_cols,
// weight row r at w + r * w_row_bytes, activation row c at act + c * act_row_bytes (rows of n
// elements of activation_type(w_type)). n_cols == 1 is the decode GEMV. Thread-safe; uses a
// small thread-local scratch buffer.
void gemm_block(tensor_type w_type, int64_t n, const uint8_t *w, size_t w_row_bytes, int64_t n_rows,
                const uint8_t *act, size_t act_row_bytes, int64_t n_cols, float *out, int64_t out_stride);

// "avx2" or "scalar": what the dispatch currently uses.
const char *simd_level();
// Force the scalar paths (tests compare them with the SIMD ones). Default off; global.
void set_force_scalar(bool on);

} // namespace recur
