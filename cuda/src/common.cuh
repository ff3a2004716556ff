#pragma once
// Error checking and device buffers shared by the backend's translation units.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "recur/error.h"

namespace recur::cuda_detail {

// Throws recur::error naming the failed statement, its file and line, and the runtime's reason.
[[noreturn]] void fail_cuda(cudaError_t err, const char *stmt, const char *file, int line);
[[noreturn]] void fail_cublas(cublasStatus_t st, const char *stmt, const char *file, int line);

} // namespace recur::cuda_detail

// Every CUDA runtime call goes through CUDA_CHECK, every cuBLAS call through CUBLAS_CHECK:
// a failure becomes a recur::error such as
//   "CUDA error: out of memory (cudaErrorMemoryAllocation) in `cudaMalloc(&p, bytes)` at cuda/src/x.cu:12".
#define CUDA_CHECK(stmt)                                                                                   \
    do {                                                                                                   \
        const cudaError_t recur_err_ = (stmt);                                                             \
        if (recur_err_ != cudaSuccess) ::recur::cuda_detail::fail_cuda(recur_err_, #stmt, __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(stmt)                                                                                   \
    do {                                                                                                     \
        const cublasStatus_t recur_st_ = (stmt);                                                             \
        if (recur_st_ != CUBLAS_STATUS_SUCCESS)                                                              \
            ::recur::cuda_detail::fail_cublas(recur_st_, #stmt, __FILE__, __LINE__);                         \
    } while (0)

// After a kernel launch: a bad configuration is reported at the launch, not at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaPeekAtLastError())

namespace recur::cuda_detail {

// An owning device allocation of n elements of T (cudaMalloc, freed on destruction).
template <typename T> class dev_buf {
  public:
    dev_buf() = default;
    explicit dev_buf(size_t n) { resize(n); }
    ~dev_buf() { release(); }
    dev_buf(const dev_buf &) = delete;
    dev_buf &operator=(const dev_buf &) = delete;
    dev_buf(dev_buf &&o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    dev_buf &operator=(dev_buf &&o) noexcept {
        if (this != &o) {
            release();
            p_ = std::exchange(o.p_, nullptr);
            n_ = std::exchange(o.n_, 0);
        }
        return *this;
    }
    void resize(size_t n) {
        release();
        if (n == 0) return;
        CUDA_CHECK(cudaMalloc(reinterpret_cast<void **>(&p_), n * sizeof(T)));
        n_ = n;
    }
    void upload(const T *src, size_t n) {
        if (n > n_) resize(n);
        if (n) CUDA_CHECK(cudaMemcpy(p_, src, n * sizeof(T), cudaMemcpyHostToDevice));
    }
    void download(T *dst, size_t n) const {
        if (n) CUDA_CHECK(cudaMemcpy(dst, p_, n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    void zero() {
        if (n_) CUDA_CHECK(cudaMemset(p_, 0, n_ * sizeof(T)));
    }
    T *get() const { return p_; }
    size_t size() const { return n_; }
    size_t bytes() const { return n_ * sizeof(T); }

  private:
    void release() noexcept {
        if (p_) cudaFree(p_); // a failure here cannot be reported from a destructor
        p_ = nullptr;
        n_ = 0;
    }
    T *p_ = nullptr;
    size_t n_ = 0;
};

// Throws a clear error when no device is usable (the single ops call this first).
void require_device();

// The process-wide cuBLAS handle of the current device (created on first use).
cublasHandle_t cublas_handle();

inline unsigned ceil_div(int64_t a, int64_t b) { return unsigned((a + b - 1) / b); }

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// (Shared by the row kernels, the recurrent heads' dt and the gated read-out's gate.)
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    __syncthreads(); // part may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < n_warps ? part[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- programmatic dependent launch (PDL, sm_90 and later) --------------------------------------
//
// A decode step is ~8 small kernels a layer, each of which used to start only after the previous
// one had drained: a few microseconds of idle GPU per kernel, and the weight stream of every GEMV
// restarting from nothing. With PDL a kernel's blocks may start while the previous kernel's last
// blocks still run; they must not touch anything the previous kernels write or read until
// pdl_wait() returns (it waits for the previous grid's completion and its memory), but they may
// read what never changes, the weights: the GEMV issues its first weight loads before waiting.
// Every kernel launched through launch_kernel while pdl_on is set therefore calls pdl_wait()
// before its first access to activations, caches or outputs; pdl_trigger() then lets the next
// kernel's blocks be scheduled. Both are no-ops for a kernel launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Set (per thread) around the launches that may overlap their predecessor: cuda_model's decode
// step on a device of compute capability 9.0 or later, with RECUR_CUDA_PDL=1 (opt-in until a GPU
// run has checked and measured it).
extern thread_local bool pdl_on;
struct pdl_scope {
    bool saved;
    explicit pdl_scope(bool on) : saved(pdl_on) { pdl_on = on; }
    ~pdl_scope() { pdl_on = saved; }
    pdl_scope(const pdl_scope &) = delete;
    pdl_scope &operator=(const pdl_scope &) = delete;
};

// kernel<<<grid, block, smem, s>>>(args...), with the PDL attribute while pdl_on is set. A
// driver that refuses the attribute gets the plain launch, and pdl_on is cleared.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
    cfg.attrs = attr, cfg.numAttrs = pdl_on ? 1 : 0;
    cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
    if (err != cudaSuccess && cfg.numAttrs == 1) {
        (void)cudaGetLastError();
        pdl_on = false;
        cfg.numAttrs = 0;
        err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
    }
    if (err != cudaSuccess) fail_cuda(err, "cudaLaunchKernelEx(kernel)", __FILE__, __LINE__);
}

} // namespace recur::cuda_detail
