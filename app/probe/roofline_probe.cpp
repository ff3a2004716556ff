// recur-probe: measures the two ceilings the CPU benchmarks are compared with, on this machine,
// with the same thread count:
//   - memory read bandwidth (GB/s): threads summing disjoint slices of a 1 GiB array, the
//     access pattern of a decode step streaming weights;
//   - FP32 GEMM rate (GFLOP/s): a register-blocked AVX2/FMA kernel (6x16 tile) on packed
//     operands that stay in cache, the ceiling for prefill arithmetic.
// Prints one JSON object. Usage: recur-probe [-t THREADS] [--mib N]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <immintrin.h>

namespace {

using clock_type = std::chrono::steady_clock;

template <typename F> void run_threads(int n, F f) {
    std::vector<std::thread> ts;
    for (int i = 1; i < n; ++i) ts.emplace_back(f, i);
    f(0);
    for (auto &t : ts) t.join();
}

double bandwidth_gb_s(int threads, size_t bytes) {
    const size_t n = bytes / sizeof(float);
    float *a = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
    run_threads(threads, [&](int t) { // first touch by the thread that reads the slice
        const size_t lo = n * size_t(t) / threads, hi = n * size_t(t + 1) / threads;
        for (size_t i = lo; i < hi; ++i) a[i] = float(i & 7);
    });
    double best = 0;
    std::atomic<double> sink{0};
    for (int rep = 0; rep < 5; ++rep) {
        auto t0 = clock_type::now();
        run_threads(threads, [&](int t) {
            const size_t lo = n * size_t(t) / threads, hi = n * size_t(t + 1) / threads;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t i = lo; i + 32 <= hi; i += 32) {
                s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
                s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
                s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
                s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
            }
            float out[8];
            _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
            double s = 0;
            for (float v : out) s += v;
            double cur = sink.load();
            while (!sink.compare_exchange_weak(cur, cur + s)) {}
        });
        const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
        best = std::max(best, double(n * sizeof(float)) / secs / 1e9);
    }
    std::free(a);
    return best + (sink.load() == -1 ? 1 : 0);
}

// C[6][16] += A[6][k] * B[k][16], A packed column-major by k (6 floats per k), B packed (16 per k).
void kernel_6x16(int k, const float *a, const float *b, float *c, int ldc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_load_ps(b + 16 * p), b1 = _mm256_load_ps(b + 16 * p + 8);
        const float *ap = a + 6 * p;
        __m256 x = _mm256_broadcast_ss(ap + 0);
        c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(ap + 1);
        c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(ap + 2);
        c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(ap + 3);
        c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(ap + 4);
        c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(ap + 5);
        c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    __m256 rows[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (int r = 0; r < 6; ++r) {
        _mm256_storeu_ps(c + r * ldc, _mm256_add_ps(_mm256_loadu_ps(c + r * ldc), rows[2 * r]));
        _mm256_storeu_ps(c + r * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + r * ldc + 8), rows[2 * r + 1]));
    }
}

double gemm_gflop_s(int threads) {
    // Each thread multiplies its own 96 x 256 panel of A by a shared 256 x 512 B (in L2).
    const int M = 96, K = 256, N = 512, reps = 200;
    std::vector<float> b(size_t(K) * N);
    for (size_t i = 0; i < b.size(); ++i) b[i] = float(i % 13) * 0.01f;
    float *bp = static_cast<float *>(std::aligned_alloc(64, b.size() * sizeof(float)));
    for (int j0 = 0; j0 < N; j0 += 16) // pack B in 16-column strips
        for (int p = 0; p < K; ++p)
            for (int j = 0; j < 16; ++j) bp[size_t(j0) * K + size_t(p) * 16 + j] = b[size_t(p) * N + j0 + j];
    double best = 0;
    for (int trial = 0; trial < 3; ++trial) {
        auto t0 = clock_type::now();
        run_threads(threads, [&](int) {
            std::vector<float> ap(size_t(M) * K), c(size_t(M) * N, 0.0f);
            for (size_t i = 0; i < ap.size(); ++i) ap[i] = float(i % 7) * 0.01f;
            for (int r = 0; r < reps; ++r)
                for (int i0 = 0; i0 < M; i0 += 6)
                    for (int j0 = 0; j0 < N; j0 += 16)
                        kernel_6x16(K, ap.data() + size_t(i0) * K, bp + size_t(j0) * K, c.data() + size_t(i0) * N + j0, N);
            volatile float keep = c[5];
            (void)keep;
        });
        const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
        best = std::max(best, 2.0 * M * N * K * reps * threads / secs / 1e9);
    }
    std::free(bp);
    return best;
}

} // namespace

int main(int argc, char **argv) {
    int threads = int(std::thread::hardware_concurrency());
    size_t mib = 1024;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "-t") && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--mib") && i + 1 < argc) mib = size_t(std::atol(argv[++i]));
        else {
            fprintf(stderr, "usage: recur-probe [-t THREADS] [--mib N]\n");
            return 2;
        }
    }
    if (threads < 1) threads = 1;
    const double bw = bandwidth_gb_s(threads, mib << 20);
    const double gf = gemm_gflop_s(threads);
    printf("{\"threads\":%d,\"memory_read_gb_s\":%.2f,\"fp32_gemm_gflop_s\":%.1f}\n", threads, bw, gf);
    return 0;
}
