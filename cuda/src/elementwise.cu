// Row-wise and elementwise kernels: RMSNorm, casts, SwiGLU, residual add, RoPE with the KV
// stores, the window rings, and the sampling reductions.
#include "kernels.cuh"

#include <cfloat>
#include <string>
#include <type_traits>

namespace recur::cuda_detail {

namespace {

__device__ float block_max(float v) {
    __shared__ float part[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < n_warps ? part[lane] : -FLT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__global__ void rmsnorm_kernel(const float *__restrict__ x, const float *__restrict__ w, int n, float eps,
                               float *__restrict__ out) {
    pdl_wait();
    pdl_trigger();
    const float *xr = x + int64_t(blockIdx.x) * n;
    float *o = out + int64_t(blockIdx.x) * n;
    float ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    const float scale = rsqrtf(block_sum(ss) / float(n) + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

template <typename Out> __global__ void cast_kernel(const float *__restrict__ x, Out *__restrict__ out, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    if constexpr (std::is_same_v<Out, __half>) out[i] = __float2half_rn(x[i]);
    else if constexpr (std::is_same_v<Out, __nv_bfloat16>) out[i] = __float2bfloat16_rn(x[i]);
    else out[i] = x[i];
}

// Out: F32, or the F16/BF16 operand of the w_down GEMM written directly (no separate cast pass).
template <typename Out>
__global__ void swiglu_kernel(const float *__restrict__ gu, int64_t ld, int64_t up_offset, int n_ff, Out *__restrict__ out) {
    const float *g = gu + int64_t(blockIdx.y) * ld;
    Out *o = out + int64_t(blockIdx.y) * n_ff;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ff) return;
    const float v = g[i];
    const float r = v / (1.0f + expf(-v)) * g[i + up_offset];
    if constexpr (std::is_same_v<Out, __half>) o[i] = __float2half_rn(r);
    else if constexpr (std::is_same_v<Out, __nv_bfloat16>) o[i] = __float2bfloat16_rn(r);
    else o[i] = r;
}

__global__ void add_kernel(float *__restrict__ x, const float *__restrict__ y, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

__global__ void rope_store_kernel(rope_store_args a) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x;
    const int64_t pos = int64_t(*a.pos0) + t;
    float *row = a.qkv + int64_t(t) * a.ld;
    const int nq = a.n_head * a.hd, nkv = a.n_kv * a.hd, total = nq + 2 * nkv;
    if (a.bias) {
        for (int i = threadIdx.x; i < total; i += blockDim.x) row[i] += a.bias[i];
        __syncthreads();
    }
    const int half = a.rope_dim / 2;
    if (half > 0) {
        // The angle in double, as the CPU computes it: at 16k positions a float product would be
        // off by ~1e-3 rad. FP64 throughput is no concern for a few thousand angles per token.
        // Every head of the token turns by the same half angles: computed once per token into
        // shared memory (rope_dim <= head_dim <= 128), not once per head.
        __shared__ float cos_i[64], sin_i[64];
        const double p = double(pos) / double(a.freq_scale);
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            // Reduced to [-π, π] in double (exact to ~1e-12 rad at any context length), then a
            // float sincos: a double sincos of an argument in the thousands takes its slow
            // range-reduction path, ~8 µs per decode step and layer on an H200.
            constexpr double two_pi = 6.283185307179586476925286766559;
            double ang = p * a.inv_freq[i];
            ang -= two_pi * rint(ang / two_pi);
            float sf, cf;
            sincosf(float(ang), &sf, &cf);
            cos_i[i] = cf, sin_i[i] = sf;
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < (a.n_head + a.n_kv) * half; idx += blockDim.x) {
            const int h = idx / half, i = idx % half;
            float *vec;
            if (h < a.n_head) {
                if (a.rot_q && !a.rot_q[h]) continue;
                vec = row + h * a.hd;
            } else {
                if (a.rot_k && !a.rot_k[h - a.n_head]) continue;
                vec = row + nq + (h - a.n_head) * a.hd;
            }
            const float c = cos_i[i], s = sin_i[i];
            const int i0 = a.neox ? i : 2 * i, i1 = a.neox ? i + half : 2 * i + 1;
            const float x0 = vec[i0], x1 = vec[i1];
            vec[i0] = x0 * c - x1 * s;
            vec[i1] = x0 * s + x1 * c;
        }
        __syncthreads();
    }
    if (nkv == 0) return;
    for (int e = threadIdx.x; e < nkv; e += blockDim.x) {
        const __half kh = __float2half_rn(row[nq + e]), vh = __float2half_rn(row[nq + nkv + e]);
        if (a.kb) {
            a.kb[int64_t(t) * nkv + e] = kh;
            a.vb[int64_t(t) * nkv + e] = vh;
        }
        if (a.k_cache) {
            const int slot = a.slot_of[e / a.hd];
            if (slot >= 0) {
                const int64_t off = (int64_t(slot) * a.n_ctx + pos) * a.hd + e % a.hd;
                a.k_cache[off] = kh;
                a.v_cache[off] = vh;
            }
        }
    }
}

__global__ void ring_store_kernel(const ring_desc *__restrict__ rings, const __half *__restrict__ kb,
                                  const __half *__restrict__ vb, int64_t ld, int hd, const int32_t *pos0, int n_tokens) {
    pdl_wait();
    pdl_trigger();
    const ring_desc r = rings[blockIdx.y];
    const int t = blockIdx.x;
    const int64_t p = int64_t(*pos0) + t, end = int64_t(*pos0) + n_tokens;
    if (p < r.sinks)
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            r.sink_k[p * hd + d] = kb[int64_t(t) * ld + int64_t(r.kv_head) * hd + d];
            r.sink_v[p * hd + d] = vb[int64_t(t) * ld + int64_t(r.kv_head) * hd + d];
        }
    if (p < end - r.window) return; // overwritten later in this batch anyway
    const int64_t row = p % r.window;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        r.k[row * hd + d] = kb[int64_t(t) * ld + int64_t(r.kv_head) * hd + d];
        r.v[row * hd + d] = vb[int64_t(t) * ld + int64_t(r.kv_head) * hd + d];
    }
}

__global__ void argmax_kernel(const float *__restrict__ x, int n, int32_t *out) {
    __shared__ float best_v[1024];
    __shared__ int best_i[1024];
    float bv = -FLT_MAX;
    int bi = n; // larger than any index: loses every tie
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        if (x[i] > bv) bv = x[i], bi = i; // strided ascending: the first maximum of this thread
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float v2 = best_v[threadIdx.x + s];
            const int i2 = best_i[threadIdx.x + s];
            if (v2 > best_v[threadIdx.x] || (v2 == best_v[threadIdx.x] && i2 < best_i[threadIdx.x]))
                best_v[threadIdx.x] = v2, best_i[threadIdx.x] = i2;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = best_i[0] < n ? best_i[0] : 0;
}

__global__ void softmax_kernel(const float *__restrict__ x, int n, float inv_temp, float *__restrict__ out) {
    float m = -FLT_MAX;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i] * inv_temp);
    m = block_max(m);
    float s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(x[i] * inv_temp - m);
        out[i] = e;
        s += e;
    }
    const float inv = 1.0f / block_sum(s);
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] *= inv;
}

} // namespace

void launch_rmsnorm(const float *x, const float *w, int n_rows, int n, float eps, float *out, cudaStream_t s) {
    if (n_rows == 0) return;
    launch_kernel(rmsnorm_kernel, dim3(unsigned(n_rows)), dim3(n >= 1024 ? 1024 : 256), 0, s, x, w, n, eps, out);
    CUDA_CHECK_LAUNCH();
}

void launch_cast(const float *x, void *out, tensor_type to, int64_t n, cudaStream_t s) {
    if (n == 0) return;
    const unsigned blocks = ceil_div(n, 256);
    if (to == tensor_type::F16) cast_kernel<<<blocks, 256, 0, s>>>(x, static_cast<__half *>(out), n);
    else if (to == tensor_type::BF16) cast_kernel<<<blocks, 256, 0, s>>>(x, static_cast<__nv_bfloat16 *>(out), n);
    else cast_kernel<<<blocks, 256, 0, s>>>(x, static_cast<float *>(out), n);
    CUDA_CHECK_LAUNCH();
}

void launch_swiglu(const float *gu, int64_t ld, int64_t up_offset, int n_rows, int n_ff, void *out, tensor_type out_type,
                   cudaStream_t s) {
    if (n_rows == 0) return;
    const dim3 grid(ceil_div(n_ff, 256), unsigned(n_rows));
    if (out_type == tensor_type::F16)
        swiglu_kernel<<<grid, 256, 0, s>>>(gu, ld, up_offset, n_ff, static_cast<__half *>(out));
    else if (out_type == tensor_type::BF16)
        swiglu_kernel<<<grid, 256, 0, s>>>(gu, ld, up_offset, n_ff, static_cast<__nv_bfloat16 *>(out));
    else swiglu_kernel<<<grid, 256, 0, s>>>(gu, ld, up_offset, n_ff, static_cast<float *>(out));
    CUDA_CHECK_LAUNCH();
}

void launch_add(float *x, const float *y, int64_t n, cudaStream_t s) {
    if (n == 0) return;
    add_kernel<<<ceil_div(n, 256), 256, 0, s>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

void launch_rope_store(const rope_store_args &a, cudaStream_t s) {
    if (a.n_tokens == 0) return;
    if (a.rope_dim > 128) throw error("CUDA RoPE: rope_dim " + std::to_string(a.rope_dim) + " is above the supported 128");
    launch_kernel(rope_store_kernel, dim3(unsigned(a.n_tokens)), dim3(256), 0, s, a);
    CUDA_CHECK_LAUNCH();
}

void launch_ring_store(const ring_desc *rings, int n_rings, const __half *kb, const __half *vb, int64_t kvb_ld, int hd,
                       const int32_t *pos0, int n_tokens, cudaStream_t s) {
    if (n_rings == 0 || n_tokens == 0) return;
    launch_kernel(ring_store_kernel, dim3(unsigned(n_tokens), unsigned(n_rings)), dim3(hd < 128 ? 64 : 128), 0, s, rings, kb,
                  vb, kvb_ld, hd, pos0, n_tokens);
    CUDA_CHECK_LAUNCH();
}

void launch_argmax(const float *x, int n, int32_t *out, cudaStream_t s) {
    argmax_kernel<<<1, 1024, 0, s>>>(x, n, out);
    CUDA_CHECK_LAUNCH();
}

void launch_softmax(const float *x, int n, float temperature, float *out, cudaStream_t s) {
    softmax_kernel<<<1, 1024, 0, s>>>(x, n, 1.0f / temperature, out);
    CUDA_CHECK_LAUNCH();
}

} // namespace recur::cuda_detail
