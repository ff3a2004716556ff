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

} // namespace recur::cuda_detail
