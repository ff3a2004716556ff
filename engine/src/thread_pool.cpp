#include "recur/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace recur {

namespace {
inline void cpu_relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
}
// A worker first spins with pause (a few µs: the next job of a decode step usually follows at
// once), then keeps polling with sched_yield so that on a loaded machine the thread the others
// wait for gets the core, and after that goes to sleep on the condition variable.
constexpr int pause_iterations = 500;
constexpr int yield_iterations = 2000;
} // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

thread_pool::~thread_pool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto &w : workers_) w.join();
}

int thread_pool::default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : int(n);
}

void thread_pool::run_tasks(int thread_index) {
    for (;;) {
        int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
        if (t >= n_tasks_) break;
        (*job_)(t, thread_index);
    }
}

void thread_pool::parallel_for(int64_t n_tasks, const std::function<void(int64_t, int)> &fn) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
        return;
    }
    job_ = &fn;
    n_tasks_ = n_tasks;
    next_task_.store(0, std::memory_order_relaxed);
    busy_workers_.store(int(workers_.size()), std::memory_order_relaxed);
    {
        // The lock orders the job fields before the generation bump for sleeping workers;
        // spinning workers see them through the release on generation_.
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_tasks(0);
    for (int spins = 0; busy_workers_.load(std::memory_order_acquire) != 0; ++spins) {
        if (spins < pause_iterations) cpu_relax();
        else std::this_thread::yield();
    }
    job_ = nullptr;
}

void thread_pool::worker_loop(int thread_index) {
    uint64_t seen = 0;
    for (;;) {
        for (int spins = 0; generation_.load(std::memory_order_acquire) == seen &&
                            spins < pause_iterations + yield_iterations;
             ++spins) {
            if (spins < pause_iterations) cpu_relax();
            else std::this_thread::yield();
        }
        if (generation_.load(std::memory_order_acquire) == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_.load()) return;
        run_tasks(thread_index);
        busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

} // namespace recur
