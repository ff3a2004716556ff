#pragma once
// Teaching ThreadSanitizer how Qt hands work between threads.
//
// A queued signal or QMetaObject::invokeMethod copies its arguments into an event, appends the
// event to the receiving thread's queue under a QMutex, and that thread runs the slot later. The
// happens-before edge lives in libQt6Core: Debian's Qt is not built with -fsanitize=thread and
// its QMutex is a futex, so TSan never sees it and reports every argument the slot reads as a race
// with the thread that wrote it (58 reports in tests/gui/test_engine_worker.cpp, none real).
//
// In a TSan build these hooks model the queue with one std::recursive_mutex, which TSan does see:
//   * every signal emission holds it from Qt's signal-begin to signal-end callback, so whatever
//     the emitting thread wrote before and while posting (argument copies, the event itself) is
//     released when the emission ends;
//   * every event delivery, in any thread, takes and releases it before the receiver runs, so the
//     slot acquires everything released so far;
//   * posts that are not signals (invokeMethod with a functor) hold it through PostScope.
// One lock for all threads is coarser than Qt's per-thread queues: it also orders a post on
// thread A before an unrelated delivery on thread B. RecurDesk has two threads that talk only
// through queued calls, so that hides nothing the app could get wrong; the engine's own thread
// pool is tested under TSan without these hooks (ThreadPool.*).
//
// Outside TSan builds every function here is empty and PostScope holds nothing.
//
// The signal hooks use qt_register_signal_spy_callbacks, the exported hook Qt Test's -vs option
// uses (declared in Qt's private qobject_p.h; mirrored here): do not combine with -vs.

#if defined(__SANITIZE_THREAD__)
#define RECUR_QT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RECUR_QT_TSAN 1
#endif
#endif

#ifdef RECUR_QT_TSAN
#include <mutex>
#endif

namespace qt_tsan {

// Registers the hooks once per process (idempotent, thread-safe). EngineHost calls it.
void install();

// Acquires everything other threads released through the hooks and releases this thread's
// writes so far: for code that learns of another thread's end without an event (QThread::wait).
void handoff();

#ifdef RECUR_QT_TSAN
std::recursive_mutex &queueLock();
class PostScope {
  public:
    PostScope() : m_lock(queueLock()) {}
  private:
    std::lock_guard<std::recursive_mutex> m_lock;
};
#else
class PostScope {
  public:
    PostScope() {} // user-provided, so a scope's unused PostScope draws no warning
};
#endif

} // namespace qt_tsan
