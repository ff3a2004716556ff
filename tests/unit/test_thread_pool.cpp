// The engine's thread pool: every task runs exactly once per call, on a thread index in range,
// across thousands of back-to-back jobs (as a decode step issues them), after the workers went
// to sleep, and through construction and destruction. Also run under TSan (tests/sanitizers/run.sh)
// where a missing happens-before between the job fields and the workers would be reported.
#include "recur/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

using recur::thread_pool;

namespace {
// Runs one job of n tasks and checks that each task ran once and on a valid thread.
void run_and_check(thread_pool &pool, int64_t n, std::vector<int> &hits, int call) {
    hits.assign(size_t(n), 0);
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    std::atomic<int> bad_thread{0};
    pool.parallel_for(n, [&](int64_t task, int thread) {
        if (thread < 0 || thread >= pool.n_threads()) bad_thread.fetch_add(1);
        seen[size_t(task)].fetch_add(1, std::memory_order_relaxed);
        hits[size_t(task)] += 1; // plain write: each task index belongs to one thread only
    });
    ASSERT_EQ(bad_thread.load(), 0) << "call " << call;
    for (int64_t t = 0; t < n; ++t) {
        ASSERT_EQ(seen[size_t(t)].load(), 1) << "task " << t << " of " << n << ", call " << call;
        ASSERT_EQ(hits[size_t(t)], 1) << "task " << t << " of " << n << ", call " << call;
    }
}
} // namespace

TEST(ThreadPool, EveryTaskRunsExactlyOnceAcrossManyJobs) {
    for (int threads : {1, 2, 3, 4}) {
        thread_pool pool(threads);
        EXPECT_EQ(pool.n_threads(), threads);
        std::vector<int> hits;
        for (int call = 0; call < 3000; ++call) {
            const int64_t n = 1 + (call * 7919) % 97; // 1..97 tasks, fewer and more than threads
            run_and_check(pool, n, hits, call);
            if (HasFatalFailure()) return;
        }
    }
}

TEST(ThreadPool, ResultsWrittenByWorkersAreVisibleToTheCaller) {
    thread_pool pool(4);
    std::vector<double> out(1000);
    for (int round = 0; round < 200; ++round) {
        pool.parallel_for(int64_t(out.size()), [&](int64_t t, int) { out[size_t(t)] = double(t) * round; });
        // Read without atomics: parallel_for's return must order every worker's writes before it.
        const double sum = std::accumulate(out.begin(), out.end(), 0.0);
        ASSERT_DOUBLE_EQ(sum, round * 999.0 * 1000.0 / 2.0) << "round " << round;
    }
}

TEST(ThreadPool, WorksAfterTheWorkersFellAsleep) {
    thread_pool pool(3);
    std::vector<int> hits;
    run_and_check(pool, 50, hits, 0);
    // Longer than the spin and yield phases: the workers are waiting on the condition variable.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    run_and_check(pool, 50, hits, 1);
}

TEST(ThreadPool, ZeroAndOneTaskAndImmediateDestruction) {
    for (int i = 0; i < 50; ++i) {
        thread_pool pool(4);
        int calls = 0;
        pool.parallel_for(0, [&](int64_t, int) { ++calls; });
        EXPECT_EQ(calls, 0);
        pool.parallel_for(1, [&](int64_t t, int thread) { calls += int(t) + 1 + thread; });
        EXPECT_EQ(calls, 1) << "a single task runs on the calling thread";
    } // destroyed right after use, workers possibly still spinning
    thread_pool never_used(4);
}

TEST(ThreadPool, NonPositiveThreadCountMeansTheCallerOnly) {
    thread_pool pool(0);
    EXPECT_EQ(pool.n_threads(), 1);
    std::vector<int> hits;
    run_and_check(pool, 10, hits, 0);
}
