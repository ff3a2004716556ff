// EngineWorker on its own thread, with the tiny stories260K model: requests go in as queued
// calls, results come back as signals on the GUI thread, the GUI's event loop keeps running
// during a long prefill, cancel stops a prefill within a batch, and shutdown is clean even in
// the middle of one.
#include "engine_worker.h"
#include "qt_tsan.h"
#include "queued_spy.h"

#include <QElapsedTimer>
#include <QFile>
#include <QPointer>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>

namespace {

const QString kModel = QStringLiteral(RECUR_SHARED_DIR "/models/stories260K.gguf");

// A document that makes stories260K prefill for a few seconds: the first chapters of
// Pride and Prejudice when the shared data is there, else generated sentences.
QString longDocumentText(int chars) {
    QFile f(QStringLiteral(RECUR_SHARED_DIR "/data/prideprejudice.txt"));
    QString text;
    if (f.open(QIODevice::ReadOnly)) text = QString::fromUtf8(f.readAll()).mid(4000, chars);
    for (int i = 0; text.size() < chars; ++i)
        text += QStringLiteral("Lily went to the park on day %1 and saw a big red ball. ").arg(i);
    return text;
}

// On the CPU: these tests time prefills and count reused tokens, which the device would change;
// deviceSettingSelectsAndFallsBack and cudaAnswersEqualCpu cover the other devices.
EngineConfig testConfig(const QString &device = QStringLiteral("cpu")) {
    EngineConfig c;
    c.modelPath = kModel;
    c.device = device;
    c.contextLength = 4096; // beyond the model's 2048: longer prefills, it is only a timing test
    c.batch = 32;           // many progress reports
    c.threads = 2;
    c.recencyWindow = 16;
    return c;
}

SamplingConfig testSampling(int maxTokens = 24) {
    SamplingConfig s;
    s.temperature = 0; // greedy: the same answer every run
    s.maxTokens = maxTokens;
    s.seed = 7;
    return s;
}

// Calls a worker slot on the worker's thread, as a queued signal would.
// PostScope tells a TSan build that the functor's copy happens before the worker runs it.
template <typename F> void post(EngineWorker *w, F &&f) {
    qt_tsan::PostScope posting;
    QMetaObject::invokeMethod(w, std::forward<F>(f), Qt::QueuedConnection);
}

} // namespace

class TestEngineWorker : public QObject {
    Q_OBJECT
  private:
    QTemporaryDir m_dir;
    QString m_docPath, m_shortPath;

    // A host with store and model ready; fails the test otherwise.
    bool prepare(EngineHost &host, const EngineConfig &config = testConfig()) {
        EngineWorker *w = host.worker();
        QueuedSpy loaded(w, &EngineWorker::modelLoaded);
        QueuedSpy stored(w, &EngineWorker::storeOpened);
        const QString db =
            m_dir.filePath(QStringLiteral("sessions-%1.db").arg(QDateTime::currentMSecsSinceEpoch()));
        post(w, [w, db] { w->openStore(db); });
        post(w, [w, config] { w->loadModel(config, testSampling()); });
        return loaded.wait(20000) && stored.count() == 1;
    }

    qint64 openDoc(EngineHost &host, const QString &path, bool newSession = true) {
        EngineWorker *w = host.worker();
        QueuedSpy opened(w, &EngineWorker::documentOpened);
        post(w, [w, path, newSession] { w->openDocument(path, newSession, false); });
        if (!opened.wait(20000)) return 0;
        return opened.value<DocumentInfo>(0).sessionId;
    }

  private slots:
    void initTestCase() {
        if (!QFile::exists(kModel)) QSKIP("stories260K.gguf is not in ../shared/models");
        QVERIFY(m_dir.isValid());
        m_docPath = m_dir.filePath(QStringLiteral("long.txt"));
        QFile f(m_docPath);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(longDocumentText(5200).toUtf8());
        f.close();
        m_shortPath = m_dir.filePath(QStringLiteral("short.md"));
        QFile g(m_shortPath);
        QVERIFY(g.open(QIODevice::WriteOnly));
        g.write("# Lily\n\nLily had a red ball. She liked to play with it in the park.\n");
    }

    void workerRunsOnItsOwnThread() {
        EngineHost host;
        QVERIFY(host.worker()->thread() == host.thread());
        QVERIFY(host.thread()->isRunning());
        QVERIFY(host.thread() != QThread::currentThread());
    }

    void loadModelReportsInfoAndMemory() {
        EngineHost host;
        EngineWorker *w = host.worker();
        QueuedSpy loaded(w, &EngineWorker::modelLoaded);
        QueuedSpy memory(w, &EngineWorker::memoryChanged);
        QueuedSpy busy(w, &EngineWorker::busyChanged);
        post(w, [w] { w->loadModel(testConfig(), testSampling()); });
        QVERIFY(loaded.wait(20000));
        const ModelInfo info = loaded.value<ModelInfo>(0);
        QCOMPARE(info.nLayer, 5);
        QCOMPARE(info.nHead, 8);
        QCOMPARE(info.nHeadKv, 4);
        QCOMPARE(info.contextLength, 4096);
        QCOMPARE(info.replaced.size(), 5 * 4);
        QTRY_VERIFY(memory.count() >= 1);
        const MemorySample m = memory.last().at(0).value<MemorySample>();
        QCOMPARE(m.tokens, 0);
        QCOMPARE(m.layers.size(), 5);
        QVERIFY(m.kvAllocatedBytes > 0);
        QTRY_COMPARE(busy.count(), 2); // (true, "load") then (false, "load")
        QCOMPARE(busy.at(0).at(0).toBool(), true);
        QCOMPARE(busy.at(1).at(0).toBool(), false);
    }

    void errorsArriveAsSignals() {
        EngineHost host;
        EngineWorker *w = host.worker();
        QueuedSpy error(w, &EngineWorker::errorOccurred);
        QueuedSpy busy(w, &EngineWorker::busyChanged);
        EngineConfig c = testConfig();
        c.modelPath = m_dir.filePath(QStringLiteral("missing.gguf"));
        post(w, [w, c] { w->loadModel(c, testSampling()); });
        QVERIFY(error.wait(10000));
        QVERIFY2(error.at(0).at(0).toString().contains(QStringLiteral("missing.gguf")),
                 qPrintable(error.at(0).at(0).toString()));
        QTRY_COMPARE(busy.count(), 2);
        // Asking without a model is an error too, not a crash.
        post(w, [w] { w->ask(1, QStringLiteral("why?")); });
        QVERIFY(error.wait(10000));
    }

    // The device setting (app/core/inference_session.h): auto takes the GPU where one answers,
    // else the CPU, with a one-line notice where a CUDA build found none; cuda without a usable GPU
    // is an error naming the reason; an unknown value is refused. Never a crash, and the worker
    // keeps the model it had and stays usable.
    void deviceSettingSelectsAndFallsBack() {
        const DeviceSupport devices = deviceSupport();
        QVERIFY(devices.cudaAvailable || !devices.reason.isEmpty());
        EngineHost host;
        EngineWorker *w = host.worker();
        QueuedSpy loaded(w, &EngineWorker::modelLoaded);
        QueuedSpy error(w, &EngineWorker::errorOccurred);

        const EngineConfig autoConfig = testConfig(QStringLiteral("auto"));
        post(w, [w, autoConfig] { w->loadModel(autoConfig, testSampling()); });
        QVERIFY(loaded.wait(20000));
        const ModelInfo a = loaded.value<ModelInfo>(0);
        if (devices.cudaAvailable) {
            QCOMPARE(a.device, QStringLiteral("cuda"));
            QCOMPARE(a.deviceName, devices.gpuName);
            QVERIFY2(a.deviceNotice.isEmpty(), qPrintable(a.deviceNotice));
        } else {
            QCOMPARE(a.device, QStringLiteral("cpu"));
            QCOMPARE(a.deviceName, QStringLiteral("cpu"));
            // A CUDA build that found no GPU says why, once; a CPU-only build has nothing to say.
            QCOMPARE(a.deviceNotice.isEmpty(), !devices.cudaBuilt);
            if (devices.cudaBuilt) {
                QVERIFY2(a.deviceNotice.contains(devices.reason), qPrintable(a.deviceNotice));
                QVERIFY(!a.deviceNotice.contains(QLatin1Char('\n')));
            }
        }
        QCOMPARE(error.count(), 0);

        const EngineConfig cudaConfig = testConfig(QStringLiteral("cuda"));
        post(w, [w, cudaConfig] { w->loadModel(cudaConfig, testSampling()); });
        if (devices.cudaAvailable) {
            QVERIFY(loaded.wait(20000));
            QCOMPARE(loaded.value<ModelInfo>(1).device, QStringLiteral("cuda"));
        } else {
            QVERIFY(error.wait(10000));
            const QString message = error.value<QString>(0);
            QVERIFY2(message.startsWith(QStringLiteral("device cuda: ")), qPrintable(message));
            QVERIFY2(message.contains(devices.cudaBuilt ? devices.reason : QStringLiteral("no CUDA backend")),
                     qPrintable(message));
            QCOMPARE(loaded.count(), 1);
        }

        const EngineConfig bogus = testConfig(QStringLiteral("tpu"));
        const qsizetype errorsBefore = error.count();
        post(w, [w, bogus] { w->loadModel(bogus, testSampling()); });
        QVERIFY(error.wait(10000));
        QVERIFY2(error.value<QString>(errorsBefore).contains(QStringLiteral("unknown device 'tpu'")),
                 qPrintable(error.value<QString>(errorsBefore)));

        // Still usable: the CPU loads, quietly, and the planner speaks for the device in use.
        const qsizetype loadsBefore = loaded.count();
        post(w, [w] { w->loadModel(testConfig(QStringLiteral("cpu")), testSampling()); });
        QVERIFY(loaded.wait(20000));
        const ModelInfo c = loaded.value<ModelInfo>(loadsBefore);
        QCOMPARE(c.device, QStringLiteral("cpu"));
        QVERIFY(c.deviceNotice.isEmpty());
    }

    // With a GPU: the same greedy answer from device cuda as from the CPU, through the whole
    // document pipeline. Skips where no GPU answers.
    void cudaAnswersEqualCpu() {
        const DeviceSupport devices = deviceSupport();
        if (!devices.cudaAvailable)
            QSKIP(qPrintable(QStringLiteral("no usable GPU: %1").arg(devices.reason)));
        QString answers[2];
        const QString device[2] = {QStringLiteral("cpu"), QStringLiteral("cuda")};
        for (int i = 0; i < 2; ++i) {
            EngineHost host;
            QVERIFY(prepare(host, testConfig(device[i])));
            EngineWorker *w = host.worker();
            QueuedSpy planned(w, &EngineWorker::memoryPlanned);
            const qint64 session = openDoc(host, m_shortPath);
            QVERIFY(session > 0);
            QTRY_COMPARE(planned.count(), 1);
            QCOMPARE(planned.value<MemoryPlan>(0).device, device[i]);
            QueuedSpy finished(w, &EngineWorker::answerFinished);
            post(w, [w, session] { w->ask(session, QStringLiteral("What did Lily have?")); });
            QVERIFY(finished.wait(30000));
            answers[i] = finished.value<AnswerStats>(0).answer;
        }
        QVERIFY(!answers[0].isEmpty());
        QCOMPARE(answers[1], answers[0]);
    }

    void importProblemsAreExplained() {
        EngineHost host;
        QVERIFY(prepare(host));
        EngineWorker *w = host.worker();
        const QString bin = m_dir.filePath(QStringLiteral("blob.txt"));
        QFile f(bin);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(QByteArray("\x00\x01\x02\x03binary\x00", 11).repeated(100));
        f.close();
        const QString latin1 = m_dir.filePath(QStringLiteral("latin1.txt"));
        QFile g(latin1);
        QVERIFY(g.open(QIODevice::WriteOnly));
        g.write("caf\xe9 au lait, cr\xe8me br\xfbl\xe9"
                "e\n");
        g.close();
        QueuedSpy failed(w, &EngineWorker::importFailed);
        QueuedSpy opened(w, &EngineWorker::documentOpened);
        post(w, [w, bin] { w->openDocument(bin, false, false); });
        QVERIFY(failed.wait(10000));
        QCOMPARE(failed.at(0).at(2).toBool(), false); // not repairable
        post(w, [w, latin1] { w->openDocument(latin1, false, false); });
        QVERIFY(failed.wait(10000));
        QCOMPARE(failed.at(1).at(2).toBool(), true); // not UTF-8: can be opened with replacements
        post(w, [w, latin1] { w->openDocument(latin1, false, true); });
        QVERIFY(opened.wait(10000));
        QVERIFY(!opened.value<DocumentInfo>(0).warnings.isEmpty());
    }

    void answerStreamsToTheGuiThread() {
        EngineHost host;
        QVERIFY(prepare(host));
        EngineWorker *w = host.worker();
        QueuedSpy planned(w, &EngineWorker::memoryPlanned);
        const qint64 session = openDoc(host, m_shortPath);
        QVERIFY(session > 0);
        QTRY_COMPARE(planned.count(), 1);
        const MemoryPlan plan = planned.value<MemoryPlan>(0);
        QVERIFY(plan.wholeDocument);
        QVERIFY(plan.documentTokens > 10);
        QVERIFY(plan.neededBytes > plan.cacheBytes);
        QVERIFY(plan.maxTokensFit > plan.documentTokens);

        QString streamed;
        bool allOnGuiThread = true;
        connect(w, &EngineWorker::token, this, [&](const QString &t) {
            streamed += t;
            allOnGuiThread &= QThread::currentThread() == thread();
        });
        QueuedSpy heads(w, &EngineWorker::headStatsChanged);
        QueuedSpy finished(w, &EngineWorker::answerFinished);
        post(w, [w, session] { w->ask(session, QStringLiteral("What did Lily have?")); });
        QVERIFY(finished.wait(30000));
        const AnswerStats a = finished.value<AnswerStats>(0);
        QVERIFY(allOnGuiThread);
        QCOMPARE(a.sessionId, session);
        QVERIFY(a.generatedTokens > 0);
        QVERIFY(a.assistantMessageId > 0);
        QVERIFY(a.decodeTokPerSec > 0);
        QCOMPARE(streamed.trimmed(), a.answer.trimmed());
        QVERIFY(heads.count() >= 1);
        const HeadStats h = heads.last().at(0).value<HeadStats>();
        QCOMPARE(h.nLayer, 5);
        QCOMPARE(h.nHead, 8);
        QCOMPARE(h.window, 16);
        QVERIFY(h.recencyAt(0, 0) > 0 && h.recencyAt(0, 0) <= 1.0);

        // A follow-up reuses the document already in the context.
        post(w, [w, session] { w->ask(session, QStringLiteral("Where did she play?")); });
        QVERIFY(finished.wait(30000));
        const AnswerStats b = finished.value<AnswerStats>(1);
        QVERIFY2(b.reusedTokens > 0, qPrintable(b.reusedFrom));
        QCOMPARE(b.reusedFrom, QStringLiteral("context"));
    }

    // The point of the worker: the GUI thread's event loop keeps turning while the engine reads.
    void eventLoopKeepsRunningDuringLongPrefill() {
        EngineHost host;
        QVERIFY(prepare(host));
        EngineWorker *w = host.worker();
        const qint64 session = openDoc(host, m_docPath);
        QVERIFY(session > 0);

        QueuedSpy progress(w, &EngineWorker::progress);
        QueuedSpy memory(w, &EngineWorker::memoryChanged);
        QueuedSpy finished(w, &EngineWorker::answerFinished);
        QElapsedTimer clock;
        int ticks = 0;
        qint64 lastTick = 0, maxGap = 0;
        QTimer timer;
        timer.setInterval(10);
        connect(&timer, &QTimer::timeout, this, [&] {
            const qint64 now = clock.elapsed();
            if (ticks > 0) maxGap = std::max(maxGap, now - lastTick);
            lastTick = now;
            ++ticks;
        });
        clock.start();
        timer.start();
        post(w, [w, session] { w->ask(session, QStringLiteral("Who came to Netherfield?")); });
        QVERIFY(finished.wait(120000));
        timer.stop();
        const qint64 elapsed = clock.elapsed();
        const AnswerStats a = finished.value<AnswerStats>(0);
        qInfo("prefill of %d tokens and %d answer tokens in %lld ms; %d timer ticks, longest gap %lld ms, "
              "%lld progress reports",
              a.prefillTokens, a.generatedTokens, elapsed, ticks, maxGap, qint64(progress.count()));
        QVERIFY2(a.prefillTokens > 2000, "the document is not long enough to test anything");
        QVERIFY2(elapsed > 500, "the prefill was too quick to show anything");
        // A 10 ms timer on a free event loop ticks ~elapsed/10 times; allow for a loaded machine.
        QVERIFY2(ticks >= elapsed / 10 / 3,
                 qPrintable(QStringLiteral("%1 ticks in %2 ms").arg(ticks).arg(elapsed)));
        QVERIFY2(maxGap < 250, qPrintable(QStringLiteral("the event loop stalled for %1 ms").arg(maxGap)));
        QVERIFY(progress.count() > 10);
        qint64 last = -1;
        for (const QVariantList &p : progress.calls()) {
            QVERIFY(p.at(0).toLongLong() >= last);
            last = p.at(0).toLongLong();
        }
        QVERIFY(memory.count() > 10); // the memory chart grows while it reads
        QVERIFY(memory.last().at(0).value<MemorySample>().kvUsedBytes > 0);
    }

    void cancelStopsAPrefillQuickly() {
        EngineHost host;
        QVERIFY(prepare(host));
        EngineWorker *w = host.worker();
        const qint64 session = openDoc(host, m_docPath);
        QVERIFY(session > 0);
        QueuedSpy progress(w, &EngineWorker::progress);
        QueuedSpy finished(w, &EngineWorker::answerFinished);
        post(w, [w, session] { w->ask(session, QStringLiteral("Who came to Netherfield?")); });
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 3, 20000);
        QElapsedTimer t;
        t.start();
        w->cancel(); // direct: the worker's loop is busy
        QVERIFY(finished.wait(10000));
        const AnswerStats a = finished.value<AnswerStats>(0);
        qInfo("cancelled after %lld ms", t.elapsed());
        QCOMPARE(a.stopReason, QStringLiteral("cancelled"));
        QVERIFY(t.elapsed() < 2000);
        QCOMPARE(a.generatedTokens, 0);
        // The worker takes the next request as usual.
        post(w, [w, session] { w->ask(session, QStringLiteral("Who?")); });
        QVERIFY(finished.wait(60000));
        QVERIFY(finished.value<AnswerStats>(1).stopReason != QStringLiteral("cancelled"));
    }

    void shutdownDuringPrefillIsClean() {
        auto host = std::make_unique<EngineHost>();
        QVERIFY(prepare(*host));
        EngineWorker *w = host->worker();
        const qint64 session = openDoc(*host, m_docPath);
        QVERIFY(session > 0);
        QueuedSpy progress(w, &EngineWorker::progress);
        post(w, [w, session] { w->ask(session, QStringLiteral("Who came?")); });
        // Queued behind it: must never run.
        post(w, [w, session] { w->ask(session, QStringLiteral("And then?")); });
        QTRY_VERIFY_WITH_TIMEOUT(progress.count() >= 2, 20000);
        QPointer<EngineWorker> guard(w);
        QElapsedTimer t;
        t.start();
        QVERIFY(host->shutdown(10000));
        qInfo("shutdown took %lld ms", t.elapsed());
        QVERIFY(t.elapsed() < 3000);
        QVERIFY(!host->thread()->isRunning());
        QVERIFY(guard.isNull()); // deleted on its own thread as the thread finished
        host.reset();            // and the host's destructor has nothing left to do
    }
};

QTEST_GUILESS_MAIN(TestEngineWorker)
#include "test_engine_worker.moc"
