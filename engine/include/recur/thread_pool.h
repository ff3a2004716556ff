#pragma once
// A persistent pool of worker threads. parallel_for hands out task indices from an atomic
// counter; the calling thread works too. Workers spin briefly between jobs (a decode step
// issues a few hundred small jobs per token, and a futex wake per job would cost more than
// the job) and then sleep on a condition variable so an idle app uses no CPU.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace recur {

class thread_pool {
  public:
    // n_threads counts the caller: 1 means no worker threads at all.
    explicit thread_pool(int n_threads);
    ~thread_pool();
    thread_pool(const thread_pool &) = delete;
    thread_pool &operator=(const thread_pool &) = delete;

    int n_threads() const { return n_threads_; }

    // Runs fn(task, thread_index) for task in [0, n_tasks); returns when all are done.
    // Not reentrant: fn must not call parallel_for on the same pool.
    void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int thread)> &fn);

    // Physical cores as seen by the OS (the default thread count).
    static int default_threads();

  private:
    void worker_loop(int thread_index);
    void run_tasks(int thread_index);

    int n_threads_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t, int)> *job_ = nullptr;
    int64_t n_tasks_ = 0;
    std::atomic<int64_t> next_task_{0};
    std::atomic<int> busy_workers_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
};

} // namespace recur
