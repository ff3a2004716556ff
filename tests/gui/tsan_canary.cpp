// The TSan job's proof that app/gui/qt_tsan.h hides only Qt's own hand-offs: two threads write
// one int with nothing ordering them (the relaxed atomics below order nothing, for TSan or the
// C++ memory model) after a queued call and an event delivery, exactly where the hooks take and
// release their lock. TSan must still report the race: tests/sanitizers/run.sh expects this
// program to fail with a "data race" report naming tsan_canary.cpp. Built only with
// RECUR_SANITIZE=thread.
#include "qt_tsan.h"

#include <QCoreApplication>
#include <QThread>

#include <atomic>
#include <cstdio>

namespace {
int unguarded = 0;                 // written by both threads
std::atomic<int> phase{0};         // relaxed: lets the threads take turns without ordering them
void waitFor(int value) {
    while (phase.load(std::memory_order_relaxed) != value) QThread::yieldCurrentThread();
}
} // namespace

int main(int argc, char **argv) {
    QCoreApplication app(argc, argv);
    qt_tsan::install();
    QThread thread;
    QObject worker;
    worker.moveToThread(&thread);
    thread.start();

    {
        qt_tsan::PostScope posting;
        QMetaObject::invokeMethod(
            &worker,
            [] {
                phase.store(1, std::memory_order_relaxed);
                waitFor(2);
                unguarded = 42; // races with main()'s write below
                phase.store(3, std::memory_order_relaxed);
            },
            Qt::QueuedConnection);
    }
    waitFor(1);
    unguarded = 7;
    phase.store(2, std::memory_order_relaxed);
    waitFor(3);

    thread.quit();
    thread.wait();
    std::printf("unguarded = %d\n", unguarded);
    return 0;
}
