#pragma once
// EngineWorker: the only way the GUI reaches the engine (STYLE item 7). It is a QObject that
// lives on its own QThread; requests arrive as queued slot calls, results leave as signals, so
// the GUI thread never waits for the engine. The Qt documentation's [worker] pattern:
//
//   EngineHost host;                          // makes the thread and the worker, starts the thread
//   connect(window, &MainWindow::askRequested, host.worker(), &EngineWorker::ask);  // queued
//   connect(host.worker(), &EngineWorker::token, chat, &ChatModel::appendToStreaming);
//   host.worker()->cancel();                  // direct call, any thread: stops the running request
//   // ~EngineHost: cancelAll(); quit(); wait(); the worker is deleted on its own thread
//
// Behind the slots is the app core's document pipeline (recur_app::ask_engine, app/core/ask.h),
// the same one `recur ask` runs: document import, passage selection for documents longer than
// the context, prefix reuse from the context or an engine snapshot, the session store.
//
// Cancellation is a std::atomic<bool> that the pipeline checks in the engine's progress callback
// (every prefill batch) and between decode steps; a cancelled answer ends with answerFinished,
// stopReason "cancelled", and what was generated is kept.
//
// One request runs at a time; others queue in the thread's event loop in the order sent. Every
// request starts with busyChanged(true, what) and ends with busyChanged(false, what), also
// after a failure (errorOccurred or importFailed comes first then).
#include "engine_types.h"

#include <QObject>
#include <QThread>

#include <atomic>
#include <memory>

class EngineWorker : public QObject {
    Q_OBJECT
  public:
    explicit EngineWorker(QObject *parent = nullptr);
    ~EngineWorker() override;

    // Thread-safe, called directly (never queued: the worker's loop is busy with the request it
    // would stop). Cancels the request running now; a request that starts later clears the flag.
    void cancel();
    // Thread-safe: cancels the running request and makes every later one (queued or not) a
    // no-op. For shutdown, so that quit() is not held up by queued work.
    void cancelAll();

    // Registers the value types with Qt's meta-type system (idempotent; the constructor does it).
    static void registerMetaTypes();

  public slots:
    // Opens the session database this worker writes (its own SQLite connection; the GUI thread
    // may hold another on the same file). Emits storeOpened or errorOccurred.
    void openStore(const QString &databasePath);

    // Opens the model (kept when the path is unchanged) and makes the answering context with
    // these settings. Emits modelLoaded and a first memoryChanged, or errorOccurred.
    void loadModel(const EngineConfig &config, const SamplingConfig &sampling);

    // Imports a .txt/.md/.pdf file into the store and picks its session (the latest one on that
    // document, or a new one). Emits documentOpened and memoryPlanned (the planner's answer
    // before reading), or importFailed with a one-sentence message; canRepair is true for a
    // file that is not valid UTF-8, which repairUtf8 = true opens with U+FFFD replacements.
    void openDocument(const QString &path, bool newSession, bool repairUtf8);

    // Makes a stored session current: emits documentOpened and memoryPlanned for its document.
    // Nothing is read: the next question reuses the session's engine snapshot.
    void openSession(qint64 sessionId);

    // Answers `question` in the session: progress while reading (prefill), memoryChanged as the
    // cache grows, headStatsChanged after reading the document, token() per piece of answer,
    // answerFinished at the end. Question and answer are stored with their timings.
    void ask(qint64 sessionId, const QString &question);

    // Forgets the in-memory context (the next question reuses a snapshot or reads again).
    void resetContext();

  signals:
    void storeOpened(const QString &databasePath);
    void modelLoaded(const ModelInfo &info);
    void busyChanged(bool busy, const QString &what);
    void documentOpened(const DocumentInfo &document);
    void importFailed(const QString &path, const QString &message, bool canRepair);
    void memoryPlanned(const MemoryPlan &plan);
    void progress(qint64 done, qint64 total);
    void memoryChanged(const MemorySample &sample);
    void headStatsChanged(const HeadStats &stats);
    void token(const QString &text);
    void answerFinished(const AnswerStats &stats);
    void errorOccurred(const QString &message);

  private:
    struct Engine; // the engine and store objects; in the .cpp so no engine header reaches ui/
    std::unique_ptr<Engine> m_engine; // used only on the worker's thread
    std::atomic<bool> m_cancel{false};
    std::atomic<bool> m_closing{false};

    template <typename F> void run(const QString &what, F &&body);
};

// Owns the worker's thread: starts it on construction; on destruction cancels, quits and waits,
// so the engine is never torn down under a running evaluation.
class EngineHost {
  public:
    EngineHost();
    ~EngineHost();
    EngineHost(const EngineHost &) = delete;
    EngineHost &operator=(const EngineHost &) = delete;

    EngineWorker *worker() const { return m_worker; }
    QThread *thread() { return &m_thread; }
    // cancelAll(), quit() and wait(); idempotent. False if the thread did not end in time.
    bool shutdown(unsigned long timeoutMs = 30000);

  private:
    QThread m_thread;
    EngineWorker *m_worker = nullptr; // deleted on m_thread when it finishes
};
