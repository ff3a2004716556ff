// Error reporting, the device query, the shared cuBLAS handle and the two micro-benchmarks the
// GPU check uses as its yardsticks.
#include "common.cuh"
#include "kernels.cuh"
#include "recur/cuda_backend.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace recur {

namespace cuda_detail {

thread_local bool pdl_on = false;

void fail_cuda(cudaError_t err, const char *stmt, const char *file, int line) {
    cudaGetLastError(); // clear a sticky launch error so the next call starts clean
    throw error(std::string("CUDA error: ") + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ") in `" + stmt +
                "` at " + file + ":" + std::to_string(line));
}

void fail_cublas(cublasStatus_t st, const char *stmt, const char *file, int line) {
    throw error(std::string("cuBLAS error: ") + cublasGetStatusString(st) + " (" + cublasGetStatusName(st) + ") in `" +
                stmt + "` at " + file + ":" + std::to_string(line));
}

void require_device() {
    const cuda_device d = cuda_device_info(0);
    if (!d.available) throw error("CUDA backend: " + d.error);
}

cublasHandle_t cublas_handle() {
    static std::mutex mu;
    static cublasHandle_t handle = nullptr;
    std::lock_guard<std::mutex> lock(mu);
    if (!handle) CUBLAS_CHECK(cublasCreate(&handle));
    return handle;
}

} // namespace cuda_detail

cuda_device cuda_device_info(int device) {
    cuda_device info;
    info.index = device;
    try {
        int count = 0;
        const cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess) {
            cudaGetLastError();
            if (e == cudaErrorNoDevice) info.error = "no CUDA device";
            else if (e == cudaErrorInsufficientDriver)
                info.error = "no CUDA driver (or one older than this build's CUDA runtime)";
            else info.error = std::string("CUDA unavailable: ") + cudaGetErrorString(e);
            return info;
        }
        info.count = count;
        if (count == 0) {
            info.error = "no CUDA device";
            return info;
        }
        if (device < 0 || device >= count) {
            info.error = "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)";
            return info;
        }
        cudaDeviceProp prop{};
        CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
        CUDA_CHECK(cudaSetDevice(device));
        CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
        info.name = prop.name;
        info.cc_major = prop.major;
        info.cc_minor = prop.minor;
        info.sm_count = prop.multiProcessorCount;
        info.available = true;
    } catch (const std::exception &ex) {
        info.available = false;
        info.error = ex.what();
    }
    return info;
}

bool cuda_available() { return cuda_device_info().available; }

namespace {
// Device milliseconds of the work `enqueue` puts on stream s, between two events.
template <class Enqueue> float device_ms(cudaStream_t s, Enqueue &&enqueue) {
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaEventRecord(e0, s));
    enqueue();
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return ms;
}
} // namespace

double cuda_copy_bandwidth(size_t bytes, int repeats) {
    using namespace cuda_detail;
    require_device();
    dev_buf<uint8_t> a(bytes), b(bytes);
    a.zero();
    CUDA_CHECK(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice)); // warm-up
    const float ms = device_ms(nullptr, [&] {
        for (int i = 0; i < repeats; ++i) CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice));
    });
    return 2.0 * double(bytes) * repeats / (double(ms) * 1e-3); // read + written
}

double cuda_gemv_bandwidth(int64_t rows, int64_t n_in, bool pair, int split, bool overlapped, int repeats) {
    using namespace cuda_detail;
    require_device();
    if (rows <= 0 || n_in <= 0 || n_in % 8 != 0 || repeats <= 0) throw error("cuda_gemv_bandwidth: bad shape");
    const size_t mat = size_t(rows) * size_t(n_in) * (pair ? 2 : 1);      // halves per copy
    const int copies = int(std::max<size_t>(2, (size_t(256) << 20) / (2 * mat) + 1)); // > 256 MiB in all: past L2
    dev_buf<__half> w(mat * size_t(copies));
    CUDA_CHECK(cudaMemset(w.get(), 0x11, w.bytes())); // small finite values (0x1111 ≈ 6e-4)
    dev_buf<float> x{size_t(n_in)}, y{size_t(rows)};
    CUDA_CHECK(cudaMemset(x.get(), 0, x.bytes()));
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    auto launches = [&] {
        pdl_scope pdl(overlapped);
        for (int i = 0; i < repeats; ++i) {
            gemv_args a;
            a.type = tensor_type::F16, a.n_rows = rows, a.n_in = n_in, a.x = x.get(), a.y = y.get(), a.split = split;
            a.w = w.get() + mat * size_t(i % copies);
            if (pair) a.w_up = w.get() + mat * size_t(i % copies) + size_t(rows) * size_t(n_in);
            launch_gemv(a, s);
        }
    };
    launches(); // warm-up, eagerly
    CUDA_CHECK(cudaStreamSynchronize(s));
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    launches();
    CUDA_CHECK(cudaStreamEndCapture(s, &g));
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, s)); // warm-up of the graph
    const float ms = device_ms(s, [&] { CUDA_CHECK(cudaGraphLaunch(exec, s)); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
    return 2.0 * double(mat) * repeats / (double(ms) * 1e-3);
}

double cuda_gemm_f16_flops(int m, int n, int k, int repeats) {
    using namespace cuda_detail;
    require_device();
    dev_buf<__half> w(size_t(m) * k), x(size_t(n) * k);
    dev_buf<float> y(size_t(m) * n);
    // Small random-looking values: a matrix of zeros can run faster than real data.
    std::vector<float> host(std::max(w.size(), x.size()));
    for (size_t i = 0; i < host.size(); ++i) host[i] = float(int((i * 2654435761u) >> 20 & 255) - 128) / 512.0f;
    dev_buf<float> tmp(host.size());
    tmp.upload(host.data(), host.size());
    launch_cast(tmp.get(), w.get(), tensor_type::F16, int64_t(w.size()), nullptr);
    launch_cast(tmp.get(), x.get(), tensor_type::F16, int64_t(x.size()), nullptr);
    cublasHandle_t h = cublas_handle();
    gemm_cublas(h, nullptr, tensor_type::F16, w.get(), x.get(), m, k, n, y.get(), m, false); // warm-up
    const float ms = device_ms(nullptr, [&] {
        for (int i = 0; i < repeats; ++i) gemm_cublas(h, nullptr, tensor_type::F16, w.get(), x.get(), m, k, n, y.get(), m, false);
    });
    return 2.0 * double(m) * n * k * repeats / (double(ms) * 1e-3);
}

} // namespace recur
