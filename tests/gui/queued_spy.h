#pragma once
// QSignalSpy records a signal in the thread that emits it (a direct connection, no lock), which
// races when the sender is the worker thread. QueuedSpy records on its own (the test's) thread:
// the signal crosses threads as a queued call, exactly as it reaches the GUI.
#include <QEventLoop>
#include <QList>
#include <QObject>
#include <QTimer>
#include <QVariant>

class QueuedSpy : public QObject {
  public:
    template <typename Sender, typename... Args>
    QueuedSpy(const Sender *sender, void (Sender::*signal)(Args...)) {
        connect(
            sender, signal, this,
            [this](Args... args) {
                m_calls.append(QVariantList{QVariant::fromValue(std::decay_t<Args>(args))...});
                if (m_loop) m_loop->quit();
            },
            Qt::QueuedConnection);
    }

    qsizetype count() const { return m_calls.size(); }
    const QVariantList &at(qsizetype i) const { return m_calls.at(i); }
    const QVariantList &last() const { return m_calls.last(); }
    template <typename T> T value(qsizetype call, int arg = 0) const {
        return m_calls.at(call).at(arg).template value<T>();
    }
    const QList<QVariantList> &calls() const { return m_calls; }

    // Waits for one more call (like QSignalSpy::wait).
    bool wait(int timeoutMs = 5000) {
        const qsizetype before = m_calls.size();
        QEventLoop loop;
        m_loop = &loop;
        QTimer::singleShot(timeoutMs, &loop, &QEventLoop::quit);
        if (m_calls.size() == before) loop.exec();
        m_loop = nullptr;
        return m_calls.size() > before;
    }

  private:
    QList<QVariantList> m_calls;
    QEventLoop *m_loop = nullptr;
};
