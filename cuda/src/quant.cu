// Weights on the GPU: dequantisation, the decode GEMV, the embedding lookup and the cuBLAS GEMM.
//
// Quantised weights stay quantised in device memory and are dequantised inside the kernels:
// a decode step is bound by the bytes it streams from memory, so reading Q4_0 (4.5 bits per
// weight) instead of F16 is what makes it fast, and a workstation GPU has room for the model
// only in its stored size. Prefill is bound by arithmetic instead, so there each quantised matrix
// is dequantised to an F16 scratch (one matrix at a time, a cost shared by the whole batch) and
// multiplied by cuBLAS on the tensor cores.
//
// Every kernel reads a weight through dq8<T>: 8 consecutive elements of the flattened matrix
// (element group g = elements 8g..8g+7). Rows are packed and every row holds whole blocks, so
// the flattened index needs no per-row arithmetic; the F16 case is one 16-byte load, coalesced
// across a warp. Float matrices whose rows are not a multiple of 8 (stories260K's n_ff = 172)
// take an elementwise path (dq1).
#include "kernels.cuh"

#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "recur/quants.h"

namespace recur::cuda_detail {

namespace {

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
__device__ __forceinline__ uint16_t ld16(const uint8_t *p) { return *reinterpret_cast<const uint16_t *>(p); }
// 8 bytes from a 2-byte aligned address (the fp16-scaled blocks are 18, 20, 34 and 210 bytes).
__device__ __forceinline__ uint2 ld8_a2(const uint8_t *p) {
    const uint16_t *h = reinterpret_cast<const uint16_t *>(p);
    return make_uint2(uint32_t(h[0]) | uint32_t(h[1]) << 16, uint32_t(h[2]) | uint32_t(h[3]) << 16);
}
__device__ __forceinline__ uint32_t byte_of(uint2 v, int i) { return ((i < 4 ? v.x : v.y) >> (8 * (i & 3))) & 0xff; }

// Elements 8g..8g+7 of the flattened matrix at base.
template <tensor_type T> __device__ __forceinline__ void dq8(const uint8_t *__restrict__ base, int64_t g, float o[8]) {
    if constexpr (T == tensor_type::F32) {
        const float4 *p = reinterpret_cast<const float4 *>(base) + 2 * g;
        const float4 a = p[0], b = p[1];
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else if constexpr (T == tensor_type::F16) {
        const uint4 u = reinterpret_cast<const uint4 *>(base)[g];
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&w[i]));
            o[2 * i] = f.x, o[2 * i + 1] = f.y;
        }
    } else if constexpr (T == tensor_type::BF16) {
        const uint4 u = reinterpret_cast<const uint4 *>(base)[g];
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) o[2 * i] = __uint_as_float(w[i] << 16), o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    } else if constexpr (T == tensor_type::Q8_0) {
        const uint8_t *blk = base + (g >> 2) * 34;
        const float d = h2f(ld16(blk));
        const uint2 q = ld8_a2(blk + 2 + (g & 3) * 8);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = d * float(int8_t(byte_of(q, i)));
    } else if constexpr (T == tensor_type::Q4_0) {
        // Elements 0..15 are the low nibbles of qs[0..15], 16..31 the high ones.
        const int sub = int(g & 3);
        const uint8_t *blk = base + (g >> 2) * 18;
        const float d = h2f(ld16(blk));
        const uint2 q = ld8_a2(blk + 2 + (sub & 1) * 8);
        const int shift = (sub >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = d * float(int((byte_of(q, i) >> shift) & 15) - 8);
    } else if constexpr (T == tensor_type::Q4_1) {
        const int sub = int(g & 3);
        const uint8_t *blk = base + (g >> 2) * 20;
        const float d = h2f(ld16(blk)), m = h2f(ld16(blk + 2));
        const uint2 q = ld8_a2(blk + 4 + (sub & 1) * 8);
        const int shift = (sub >> 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = d * float((byte_of(q, i) >> shift) & 15) + m;
    } else if constexpr (T == tensor_type::Q4_K) {
        // 32 groups per 256-element block; sub-block j = 32 elements, 4 groups of 8.
        const int w = int(g & 31), j = w >> 2, sub = w & 3;
        const uint8_t *blk = base + (g >> 5) * 144;
        const float d = h2f(ld16(blk)), dmin = h2f(ld16(blk + 2));
        const uint8_t *sc = blk + 4;
        int s, m;
        if (j < 4) {
            s = sc[j] & 63, m = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        const uint2 q = *reinterpret_cast<const uint2 *>(blk + 16 + 32 * (j >> 1) + sub * 8); // 8-byte aligned
        const int shift = (j & 1) * 4;
        const float ds = d * float(s), dm = dmin * float(m);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[i] = ds * float((byte_of(q, i) >> shift) & 15) - dm;
    } else if constexpr (T == tensor_type::Q6_K) {
        // Group w of the block: 32-element piece j (half h = j/4, quarter qq = j%4), lanes
        // l = 8·sub .. 8·sub+7 of that quarter (see quants.h for the bit layout).
        const int w = int(g & 31), j = w >> 2, sub = w & 3, h = j >> 2, qq = j & 3;
        const uint8_t *blk = base + (g >> 5) * 210;
        const float d = h2f(ld16(blk + 208));
        const int l0 = sub * 8;
        const uint2 ql = ld8_a2(blk + 64 * h + (qq & 1) * 32 + l0);
        const uint2 qh = ld8_a2(blk + 128 + 32 * h + l0);
        const float ds = d * float(reinterpret_cast<const int8_t *>(blk + 192)[8 * h + 2 * qq + (l0 >> 4)]);
        const int lshift = qq < 2 ? 0 : 4, hshift = 2 * qq;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = int((byte_of(ql, i) >> lshift) & 15) | int((byte_of(qh, i) >> hshift) & 3) << 4;
            o[i] = ds * float(q - 32);
        }
    }
}

// One element of a float-typed matrix (the path for rows that are not a multiple of 8).
template <tensor_type T> __device__ __forceinline__ float dq1(const uint8_t *__restrict__ base, int64_t i) {
    if constexpr (T == tensor_type::F32) return reinterpret_cast<const float *>(base)[i];
    else if constexpr (T == tensor_type::F16) return h2f(reinterpret_cast<const uint16_t *>(base)[i]);
    else if constexpr (T == tensor_type::BF16) return bf2f(reinterpret_cast<const uint16_t *>(base)[i]);
    else return 0.0f; // block types always have rows of whole 32-element blocks: never here
}

template <tensor_type T> constexpr bool is_float_type() {
    return T == tensor_type::F32 || T == tensor_type::F16 || T == tensor_type::BF16;
}

// The 8-element path applies to every block type, and to float types with n_in % 8 == 0.
bool vec8(tensor_type t, int64_t n_in) {
    return !(t == tensor_type::F32 || t == tensor_type::F16 || t == tensor_type::BF16) || n_in % 8 == 0;
}

template <typename Fn> void dispatch(tensor_type t, Fn &&fn) {
    switch (t) {
    case tensor_type::F32: fn(std::integral_constant<tensor_type, tensor_type::F32>{}); break;
    case tensor_type::F16: fn(std::integral_constant<tensor_type, tensor_type::F16>{}); break;
    case tensor_type::BF16: fn(std::integral_constant<tensor_type, tensor_type::BF16>{}); break;
    case tensor_type::Q8_0: fn(std::integral_constant<tensor_type, tensor_type::Q8_0>{}); break;
    case tensor_type::Q4_0: fn(std::integral_constant<tensor_type, tensor_type::Q4_0>{}); break;
    case tensor_type::Q4_1: fn(std::integral_constant<tensor_type, tensor_type::Q4_1>{}); break;
    case tensor_type::Q4_K: fn(std::integral_constant<tensor_type, tensor_type::Q4_K>{}); break;
    case tensor_type::Q6_K: fn(std::integral_constant<tensor_type, tensor_type::Q6_K>{}); break;
    default: require_type(t, "dispatch");
    }
}

// ---- dequantisation ---------------------------------------------------------------------------

template <tensor_type T, bool VEC, typename Out>
__global__ void dequantize_kernel(const uint8_t *__restrict__ src, Out *__restrict__ dst, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if constexpr (VEC) {
        if (i >= n / 8) return;
        float v[8];
        dq8<T>(src, i, v);
        if constexpr (std::is_same_v<Out, float>) {
            float4 *o = reinterpret_cast<float4 *>(dst) + 2 * i;
            o[0] = make_float4(v[0], v[1], v[2], v[3]);
            o[1] = make_float4(v[4], v[5], v[6], v[7]);
        } else {
            __half2 h[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
            reinterpret_cast<uint4 *>(dst)[i] = *reinterpret_cast<const uint4 *>(h);
        }
    } else {
        if (i >= n) return;
        const float v = dq1<T>(src, i);
        if constexpr (std::is_same_v<Out, float>) dst[i] = v;
        else dst[i] = __float2half_rn(v);
    }
}

template <typename Out> void dequantize(tensor_type t, const void *src, Out *dst, int64_t n_rows, int64_t n_in, cudaStream_t s) {
    const int64_t n = n_rows * n_in;
    if (n == 0) return;
    const bool v = vec8(t, n_in);
    dispatch(t, [&](auto tag) {
        constexpr tensor_type T = decltype(tag)::value;
        const auto *p = static_cast<const uint8_t *>(src);
        if (v) dequantize_kernel<T, true, Out><<<ceil_div(n / 8, 256), 256, 0, s>>>(p, dst, n);
        else if constexpr (is_float_type<T>()) dequantize_kernel<T, false, Out><<<ceil_div(n, 256), 256, 0, s>>>(p, dst, n);
    });
    CUDA_CHECK_LAUNCH();
}

// ---- GEMV ---------------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + __expf(-v)); }

__device__ __forceinline__ float dot8(const float w[8], float4 a, float4 b) {
    return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

// Decode is bound by the bytes of the weights, so the kernel does nothing but stream them: a row
// (or gate/up row pair) per warp or per ks warps, four warps per block, lane l of split k takes
// element groups 32k + l, 32k + l + 32·ks, ... with U groups' loads issued before any is used
// (U·16 bytes per lane in flight for F16).
// x (and the norm weight) are read straight from global memory: a few KiB that every warp of
// the SM shares through L1, where staging them in shared memory cost each block a pass and two
// barriers before its first weight load (the earlier kernel reached 0.9-2.4 TB/s on an H200).
constexpr int gemv_warps = 4, gemv_unroll = 8;

// Bytes [p, p + n) into L2 (a hint: nothing is loaded into registers), widened to 16-byte
// boundaries as the bulk copy unit needs (cudaMalloc'd buffers are 256-byte aligned, so the
// widened range stays inside the allocation's pages).
__device__ __forceinline__ void prefetch_row_l2(const uint8_t *p, int64_t n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const uint64_t a0 = reinterpret_cast<uint64_t>(p) & ~uint64_t(15), a1 = (reinterpret_cast<uint64_t>(p + n) + 15) & ~uint64_t(15);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a0), "r"(uint32_t(a1 - a0)) : "memory");
#endif
}

// ks warps share a row (ks in {1, 2, 4}; a block holds 4 / ks rows): short matrices (o_proj,
// down: 2048 rows on a 132-SM GPU) otherwise have too few warps in flight to cover the memory
// latency, each walking its long row in several dependent rounds. The ks partial sums meet in
// shared memory.
// ks is a runtime argument: as a template parameter it tripled the instances (8 types × norm ×
// pair), and with them the binaries, for no measurable gain. prefetch_row_bytes: the bytes of a
// row (row_bytes(type, n_in), from the host's type table) when the launch overlaps its
// predecessor (PDL) and the row is worth asking L2 for; 0 otherwise.
template <tensor_type T, bool NORM, bool PAIR>
__global__ void __launch_bounds__(gemv_warps * 32) gemv_vec_kernel(gemv_args a, int ks, int64_t prefetch_row_bytes) {
    __shared__ float part[gemv_warps][3];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, split = warp % ks;
    const int64_t row = int64_t(blockIdx.x) * (gemv_warps / ks) + warp / ks;
    const bool live = row < a.n_rows;
    const int G = int(a.n_in / 8);
    const int64_t g0 = row * G;
    const auto *wg = static_cast<const uint8_t *>(a.w);
    const auto *wu = static_cast<const uint8_t *>(a.w_up);
    const float4 *x4 = reinterpret_cast<const float4 *>(a.x);
    const float4 *n4 = reinterpret_cast<const float4 *>(a.norm_w);
    float acc = 0, acc_up = 0, ss = 0;
    auto consume = [&](int g, const float w[8], const float u[8]) {
        float4 xa = __ldg(x4 + 2 * g), xb = __ldg(x4 + 2 * g + 1);
        if constexpr (NORM) {
            ss += xa.x * xa.x + xa.y * xa.y + xa.z * xa.z + xa.w * xa.w + xb.x * xb.x + xb.y * xb.y + xb.z * xb.z + xb.w * xb.w;
            const float4 na = __ldg(n4 + 2 * g), nb = __ldg(n4 + 2 * g + 1);
            xa = make_float4(xa.x * na.x, xa.y * na.y, xa.z * na.z, xa.w * na.w);
            xb = make_float4(xb.x * nb.x, xb.y * nb.y, xb.z * nb.z, xb.w * nb.w);
        }
        acc += dot8(w, xa, xb);
        if constexpr (PAIR) acc_up += dot8(u, xa, xb);
    };
    const int stride = 32 * ks; // groups between one lane's consecutive loads
    // The weights never change: before waiting for the previous kernel (PDL), one lane of the
    // row asks L2 for the whole row (a bulk prefetch, sm_90), so the weight stream starts while
    // that kernel finishes. Into L2, not registers: holding a round of converted weights across
    // the wait took 107-192 registers a thread (44-48 without), a quarter of the resident
    // warps; per-lane line prefetches cost 8-10 registers.
    if (prefetch_row_bytes > 0 && live && lane == 0 && split == 0) {
        prefetch_row_l2(wg + row * prefetch_row_bytes, prefetch_row_bytes);
        if constexpr (PAIR) prefetch_row_l2(wu + row * prefetch_row_bytes, prefetch_row_bytes);
    }
    pdl_wait();
    pdl_trigger();
    if (live) {
        int g = split * 32 + lane;
        for (; g + stride * (gemv_unroll - 1) < G; g += stride * gemv_unroll) {
            float w[gemv_unroll][8], u[PAIR ? gemv_unroll : 1][8];
#pragma unroll
            for (int k = 0; k < gemv_unroll; ++k) {
                dq8<T>(wg, g0 + g + stride * k, w[k]);
                if constexpr (PAIR) dq8<T>(wu, g0 + g + stride * k, u[k]);
            }
#pragma unroll
            for (int k = 0; k < gemv_unroll; ++k) consume(g + stride * k, w[k], u[PAIR ? k : 0]);
        }
        for (; g < G; g += stride) {
            float w[8], u[8];
            dq8<T>(wg, g0 + g, w);
            if constexpr (PAIR) dq8<T>(wu, g0 + g, u);
            consume(g, w, u);
        }
    }
    acc = warp_sum(acc);
    if constexpr (PAIR) acc_up = warp_sum(acc_up);
    if constexpr (NORM) ss = warp_sum(ss);
    if (ks > 1) { // uniform over the block
        if (lane == 0) part[warp][0] = acc, part[warp][1] = acc_up, part[warp][2] = ss;
        __syncthreads();
        if (split != 0 || lane != 0 || !live) return;
        for (int k = 1; k < ks; ++k) acc += part[warp + k][0], acc_up += part[warp + k][1], ss += part[warp + k][2];
    } else {
        if (lane != 0 || !live) return;
    }
    if constexpr (NORM) {
        const float scale = rsqrtf(ss / float(a.n_in) + a.eps);
        acc *= scale, acc_up *= scale;
    }
    const float r = PAIR ? silu(acc) * acc_up : acc;
    a.y[row] = a.accumulate ? a.y[row] + r : r;
}

template <tensor_type T, bool NORM, bool PAIR> void launch_gemv_vec(const gemv_args &a, cudaStream_t s) {
    // Enough warps to keep ~32 per SM of a large GPU busy: rows alone when there are many.
    const int ks = a.split == 1 || a.split == 2 || a.split == 4 ? a.split : a.n_rows >= 8192 ? 1 : a.n_rows >= 4096 ? 2 : 4;
    launch_kernel(gemv_vec_kernel<T, NORM, PAIR>, dim3(ceil_div(a.n_rows, gemv_warps / ks)), dim3(gemv_warps * 32), 0, s, a, ks,
                  pdl_on ? int64_t(row_bytes(a.type, a.n_in)) : int64_t(0));
}

// Float rows whose length is not a multiple of 8 (stories260K's n_ff = 172): elementwise, with
// the (normed) input staged in shared memory once per block.
template <tensor_type T> __global__ void __launch_bounds__(gemv_warps * 32) gemv_scalar_kernel(gemv_args a) {
    extern __shared__ float xs[];
    pdl_wait();
    pdl_trigger();
    const int tid = threadIdx.x, n_in = int(a.n_in);
    __shared__ float red[gemv_warps];
    float scale = 1.0f;
    if (a.input == gemv_input::rmsnorm) {
        float ss = 0;
        for (int i = tid; i < n_in; i += blockDim.x) ss += a.x[i] * a.x[i];
        ss = warp_sum(ss);
        if ((tid & 31) == 0) red[tid >> 5] = ss;
        __syncthreads();
        ss = 0;
        for (int w = 0; w < gemv_warps; ++w) ss += red[w];
        scale = rsqrtf(ss / float(n_in) + a.eps);
    }
    for (int i = tid; i < n_in; i += blockDim.x) xs[i] = a.input == gemv_input::rmsnorm ? a.x[i] * scale * a.norm_w[i] : a.x[i];
    __syncthreads();
    const int lane = tid & 31;
    const int64_t row = int64_t(blockIdx.x) * gemv_warps + (tid >> 5);
    if (row >= a.n_rows) return;
    const auto *base = static_cast<const uint8_t *>(a.w), *up = static_cast<const uint8_t *>(a.w_up);
    float acc = 0, acc_up = 0;
    for (int i = lane; i < n_in; i += 32) {
        acc += dq1<T>(base, row * n_in + i) * xs[i];
        if (up) acc_up += dq1<T>(up, row * n_in + i) * xs[i];
    }
    acc = warp_sum(acc);
    acc_up = warp_sum(acc_up);
    if (lane != 0) return;
    const float r = up ? silu(acc) * acc_up : acc;
    a.y[row] = a.accumulate ? a.y[row] + r : r;
}

template <tensor_type T, bool VEC>
__global__ void get_rows_kernel(const uint8_t *__restrict__ w, int64_t n_in, const int32_t *__restrict__ ids,
                                float *__restrict__ out) {
    pdl_wait(); // (ids are written before the graph; out is read by the previous step's kernels)
    pdl_trigger();
    const int t = blockIdx.x;
    const int64_t row = ids[t];
    float *o = out + int64_t(t) * n_in;
    if constexpr (VEC) {
        const int64_t G = n_in / 8;
        for (int64_t g = threadIdx.x; g < G; g += blockDim.x) {
            float v[8];
            dq8<T>(w, row * G + g, v);
#pragma unroll
            for (int k = 0; k < 8; ++k) o[8 * g + k] = v[k];
        }
    } else {
        for (int64_t i = threadIdx.x; i < n_in; i += blockDim.x) o[i] = dq1<T>(w, row * n_in + i);
    }
}

} // namespace

bool type_supported(tensor_type t) {
    switch (t) {
    case tensor_type::F32:
    case tensor_type::F16:
    case tensor_type::BF16:
    case tensor_type::Q8_0:
    case tensor_type::Q4_0:
    case tensor_type::Q4_1:
    case tensor_type::Q4_K:
    case tensor_type::Q6_K: return true;
    default: return false;
    }
}

void require_type(tensor_type t, const char *what) {
    if (!type_supported(t))
        throw error(std::string("CUDA backend: ") + what + ": tensor type " + type_name(uint32_t(t)) +
                    " is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K are)");
}

void set_smem(const void *kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return;
    // Remembered per kernel, so a launcher run again (or inside a graph capture) asks only for more.
    static std::mutex mu;
    static std::unordered_map<const void *, size_t> granted;
    std::lock_guard<std::mutex> lock(mu);
    size_t &have = granted[kernel];
    if (bytes <= have) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    have = bytes;
}

void launch_dequantize_f32(tensor_type t, const void *src, float *dst, int64_t n_rows, int64_t n_in, cudaStream_t s) {
    dequantize<float>(t, src, dst, n_rows, n_in, s);
}
void launch_dequantize_f16(tensor_type t, const void *src, __half *dst, int64_t n_rows, int64_t n_in, cudaStream_t s) {
    dequantize<__half>(t, src, dst, n_rows, n_in, s);
}

void launch_gemv(const gemv_args &a, cudaStream_t s) {
    if (a.n_rows == 0) return;
    const unsigned blocks = ceil_div(a.n_rows, gemv_warps);
    const bool norm = a.input == gemv_input::rmsnorm, pair = a.w_up != nullptr;
    dispatch(a.type, [&](auto tag) {
        constexpr tensor_type T = decltype(tag)::value;
        if (vec8(a.type, a.n_in)) {
            if (norm && pair) launch_gemv_vec<T, true, true>(a, s);
            else if (norm) launch_gemv_vec<T, true, false>(a, s);
            else if (pair) launch_gemv_vec<T, false, true>(a, s);
            else launch_gemv_vec<T, false, false>(a, s);
        } else if constexpr (is_float_type<T>()) {
            const size_t smem = size_t(a.n_in) * sizeof(float);
            set_smem(reinterpret_cast<const void *>(gemv_scalar_kernel<T>), smem);
            launch_kernel(gemv_scalar_kernel<T>, dim3(blocks), dim3(gemv_warps * 32), smem, s, a);
        }
    });
    CUDA_CHECK_LAUNCH();
}

void launch_get_rows(tensor_type t, const void *w, int64_t n_in, const int32_t *ids, int n, float *out, cudaStream_t s) {
    if (n == 0) return;
    const bool v = vec8(t, n_in);
    dispatch(t, [&](auto tag) {
        constexpr tensor_type T = decltype(tag)::value;
        const auto *p = static_cast<const uint8_t *>(w);
        if (v) launch_kernel(get_rows_kernel<T, true>, dim3(unsigned(n)), dim3(128), 0, s, p, n_in, ids, out);
        else if constexpr (is_float_type<T>())
            launch_kernel(get_rows_kernel<T, false>, dim3(unsigned(n)), dim3(128), 0, s, p, n_in, ids, out);
    });
    CUDA_CHECK_LAUNCH();
}

tensor_type gemm_operand_type(tensor_type t) {
    if (t == tensor_type::F32 || t == tensor_type::BF16) return t;
    return tensor_type::F16;
}

void gemm_cublas(cublasHandle_t h, cudaStream_t s, tensor_type op, const void *w, const void *act, int64_t n_rows,
                 int64_t n_in, int64_t n_cols, float *out, int64_t ld_out, bool accumulate) {
    if (n_rows == 0 || n_cols == 0) return;
    // Row-major W [n_rows][n_in] is column-major Wᵀ with ld n_in, so out (column-major
    // [n_rows][n_cols], i.e. row-major [n_cols][n_rows]) = op_T(W) · act.
    const cudaDataType dt = op == tensor_type::F32 ? CUDA_R_32F : op == tensor_type::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasSetStream(h, s));
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n_rows), int(n_cols), int(n_in), &alpha, w, dt,
                              int(n_in), act, dt, int(n_in), &beta, out, CUDA_R_32F, int(ld_out), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

} // namespace recur::cuda_detail
