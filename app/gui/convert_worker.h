#pragma once
// ConvertWorker: "Make a hybrid" in the app. The default conversion of core/conversion.h — the
// one `recur convert -m M -f TEXT --fraction F -o OUT` runs — on a thread of its own, so the
// chat keeps answering (more slowly: both use the cores) while a model converts for minutes.
//
//   ConvertHost host;
//   connect(dialog, &ConvertDialog::startRequested, host.worker(), &ConvertWorker::convert); // queued
//   connect(host.worker(), &ConvertWorker::progress, dialog, &ConvertDialog::showProgress);
//   host.worker()->cancel();   // direct call, any thread
//
// A conversion ends with exactly one of finished (the file is written) or failed (nothing is
// written at outputPath: the engine writes through a temporary file; a cancelled distillation
// leaves its checkpoint, OUT.ckpt*, which `recur convert --resume` continues).
#include "engine_types.h"

#include <QObject>
#include <QThread>

#include <atomic>

class ConvertWorker : public QObject {
    Q_OBJECT
  public:
    explicit ConvertWorker(QObject *parent = nullptr);

    // Thread-safe, called directly: stops the running conversion at its next progress report.
    void cancel();

  public slots:
    void convert(const ConvertRequest &request);

  signals:
    void started(const ConvertRequest &request);
    void progress(const ConvertProgress &progress);
    void finished(const ConvertSummary &summary);
    // cancelled: the user stopped it (message says so); otherwise an error worth showing.
    void failed(const QString &message, bool cancelled);

  private:
    std::atomic<bool> m_cancel{false};
};

// Owns the worker's thread, as EngineHost does the engine's: on destruction it cancels, quits and
// waits, so a conversion never outlives the window.
class ConvertHost {
  public:
    ConvertHost();
    ~ConvertHost();
    ConvertHost(const ConvertHost &) = delete;
    ConvertHost &operator=(const ConvertHost &) = delete;
    ConvertWorker *worker() const { return m_worker; }

  private:
    QThread m_thread;
    ConvertWorker *m_worker = nullptr; // deleted on m_thread when it finishes
};
