// "Make a Hybrid Model": ConvertWorker on its own thread runs the default conversion of
// stories260K (a few distillation steps instead of the fixed-time default) and writes a hybrid;
// Stop ends a conversion with nothing written; bad requests fail with a reason; the dialog
// sends the request, shows progress and offers the written model.
#include "convert_dialog.h"
#include "convert_worker.h"
#include "qt_tsan.h"
#include "queued_spy.h"

#include <QFile>
#include <QFileInfo>
#include <QPushButton>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

namespace {

const QString kModel = QStringLiteral(RECUR_SHARED_DIR "/models/stories260K.gguf");

// Calibration text in stories260K's language: Pride and Prejudice when the shared data is there
// (its vocabulary reads it), else generated sentences; about 5k tokens, a few training sequences.
QString calibrationText() {
    QFile f(QStringLiteral(RECUR_SHARED_DIR "/data/prideprejudice.txt"));
    QString text;
    if (f.open(QIODevice::ReadOnly)) text = QString::fromUtf8(f.readAll()).mid(4000, 16000);
    for (int i = 0; text.size() < 16000; ++i)
        text += QStringLiteral("Lily went to the park on day %1 and saw a big red ball. ").arg(i);
    return text;
}

template <typename F> void post(ConvertWorker *w, F &&f) {
    qt_tsan::PostScope posting;
    QMetaObject::invokeMethod(w, std::forward<F>(f), Qt::QueuedConnection);
}

// Waits until one of the two spies has a call (or the time is up).
bool waitEither(QueuedSpy &a, QueuedSpy &b, int timeoutMs) {
    QElapsedTimer t;
    t.start();
    while (a.count() == 0 && b.count() == 0 && t.elapsed() < timeoutMs) a.wait(200);
    return a.count() + b.count() > 0;
}

bool isGguf(const QString &path) {
    QFile f(path);
    return f.open(QIODevice::ReadOnly) && f.read(4) == "GGUF";
}

} // namespace

class TestConvert : public QObject {
    Q_OBJECT
  private:
    QTemporaryDir m_dir;
    QString m_calibration;

    ConvertRequest request(const QString &out, int steps) const {
        ConvertRequest r;
        r.modelPath = kModel;
        r.calibrationPath = m_calibration;
        r.fraction = 0.25;
        r.outputPath = m_dir.filePath(out);
        r.threads = 2;
        r.steps = steps;
        return r;
    }

  private slots:
    void initTestCase() {
        if (!QFileInfo::exists(kModel)) QSKIP("stories260K.gguf not found in the shared folder");
        QVERIFY(m_dir.isValid());
        m_calibration = m_dir.filePath(QStringLiteral("calibration.txt"));
        QFile f(m_calibration);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(calibrationText().toUtf8());
    }

    void workerWritesAHybrid() {
        ConvertHost host;
        ConvertWorker *w = host.worker();
        QueuedSpy finished(w, &ConvertWorker::finished), failed(w, &ConvertWorker::failed);
        QueuedSpy progress(w, &ConvertWorker::progress);
        const ConvertRequest r = request(QStringLiteral("stories-hybrid-25.gguf"), 30);
        post(w, [w, r] { w->convert(r); });
        QVERIFY(waitEither(finished, failed, 300000));
        QCOMPARE(failed.count(), 0);
        const auto s = finished.value<ConvertSummary>(0);
        QCOMPARE(s.outputPath, r.outputPath);
        QCOMPARE(s.totalGroups, 20); // stories260K: 5 layers x 4 KV groups
        QCOMPARE(s.replacedGroups, 5);
        QCOMPARE(s.recurrentGroups + s.windowGroups + s.windowRecurrentGroups, s.replacedGroups);
        QVERIFY(s.kvFractionKept > 0.7 && s.kvFractionKept < 0.8);
        QVERIFY(isGguf(r.outputPath));
        QVERIFY(!QFileInfo::exists(r.outputPath + QStringLiteral(".part")));
        // Progress: the analysis and the training were reported, each phase's count never went back.
        // Each phase is one stage, numbered from 1 without a gap, out of the default conversion's
        // seven (analysis, capture and training of both trained kinds, the end-to-end comparison,
        // the retrieval check).
        QStringList phases;
        QString phase;
        qint64 last = -1;
        for (qsizetype i = 0; i < progress.count(); ++i) {
            const auto p = progress.value<ConvertProgress>(i);
            if (p.phase != phase) {
                phase = p.phase, last = -1;
                phases << phase;
            }
            QCOMPARE(p.stage, int(phases.size()));
            QCOMPARE(p.stages, 7);
            QVERIFY2(p.done >= last, qPrintable(phase));
            QVERIFY(p.done <= p.total);
            last = p.done;
        }
        QCOMPARE(phases, (QStringList{QStringLiteral("analysis"), QStringLiteral("capture"), QStringLiteral("train"),
                                      QStringLiteral("capture"), QStringLiteral("train"), QStringLiteral("compare"),
                                      QStringLiteral("retrieval")}));

        // The hybrid is no model to convert again.
        ConvertRequest again = request(QStringLiteral("twice.gguf"), 30);
        again.modelPath = r.outputPath;
        post(w, [w, again] { w->convert(again); });
        QVERIFY(failed.wait(60000));
        QVERIFY2(failed.value<QString>(0).contains(QStringLiteral("already a hybrid")), qPrintable(failed.value<QString>(0)));
        QVERIFY(!QFileInfo::exists(again.outputPath));
    }

    void stopWritesNothing() {
        ConvertHost host;
        ConvertWorker *w = host.worker();
        QueuedSpy finished(w, &ConvertWorker::finished), failed(w, &ConvertWorker::failed);
        QueuedSpy progress(w, &ConvertWorker::progress);
        const ConvertRequest r = request(QStringLiteral("stopped.gguf"), 100000); // far longer than the test
        post(w, [w, r] { w->convert(r); });
        QElapsedTimer t;
        t.start();
        auto training = [&] {
            for (qsizetype i = 0; i < progress.count(); ++i)
                if (progress.value<ConvertProgress>(i).phase == QLatin1String("train")) return true;
            return false;
        };
        while (!training() && failed.count() == 0 && t.elapsed() < 120000) progress.wait(500);
        QVERIFY(training());
        w->cancel();
        QVERIFY(waitEither(finished, failed, 60000));
        QCOMPARE(finished.count(), 0);
        QCOMPARE(failed.count(), 1);
        QVERIFY(failed.value<bool>(0, 1)); // cancelled
        QVERIFY(!QFileInfo::exists(r.outputPath));
    }

    void badRequestsFailWithAReason() {
        ConvertHost host;
        ConvertWorker *w = host.worker();
        QueuedSpy failed(w, &ConvertWorker::failed);
        ConvertRequest same = request(QString(), 10);
        same.outputPath = kModel;
        post(w, [w, same] { w->convert(same); });
        QVERIFY(failed.wait(20000));
        QVERIFY2(failed.value<QString>(0).contains(QStringLiteral("another file")), qPrintable(failed.value<QString>(0)));
        QVERIFY(!failed.value<bool>(0, 1));

        ConvertRequest missing = request(QStringLiteral("never.gguf"), 10);
        missing.calibrationPath = m_dir.filePath(QStringLiteral("no-such-text.txt"));
        post(w, [w, missing] { w->convert(missing); });
        QVERIFY(failed.wait(20000));
        QVERIFY2(failed.value<QString>(1).contains(QStringLiteral("no-such-text.txt")), qPrintable(failed.value<QString>(1)));
        QVERIFY(!QFileInfo::exists(missing.outputPath));

        const QString empty = m_dir.filePath(QStringLiteral("empty.txt"));
        QFile(empty).open(QIODevice::WriteOnly);
        ConvertRequest blank = request(QStringLiteral("never2.gguf"), 10);
        blank.calibrationPath = empty;
        post(w, [w, blank] { w->convert(blank); });
        QVERIFY(failed.wait(20000));
        QVERIFY(!QFileInfo::exists(blank.outputPath));
    }

    void dialogRunsAndOffersTheModel() {
        ConvertHost host;
        ConvertDialog dlg(host.worker(), kModel, m_calibration);
        QCOMPARE(dlg.outputPath(), QFileInfo(kModel).absoluteDir().filePath(QStringLiteral("stories260K-hybrid-25.gguf")));
        dlg.setFraction(0.5);
        QCOMPARE(dlg.outputPath(), QFileInfo(kModel).absoluteDir().filePath(QStringLiteral("stories260K-hybrid-50.gguf")));
        QCOMPARE(dlg.request().fraction, 0.5);
        dlg.setFraction(0.25);
        const QString out = m_dir.filePath(QStringLiteral("dialog.gguf"));
        dlg.setOutputPath(out);
        dlg.setSteps(20);
        QSignalSpy use(&dlg, &ConvertDialog::useModelRequested);
        dlg.start();
        QVERIFY(dlg.isRunning());
        // Progress names the stage, how many there are, and the phase ("Stage 2 of 7 · Recording
        // what the original heads do: ...").
        QTRY_VERIFY_WITH_TIMEOUT(dlg.statusText().startsWith(QStringLiteral("Stage ")) || !dlg.isRunning(), 60000);
        QVERIFY2(dlg.statusText().contains(QStringLiteral(" of 7 · ")) || !dlg.isRunning(), qPrintable(dlg.statusText()));
        QVERIFY2(dlg.isRunning(), "finished before any progress was shown");
        QTRY_VERIFY_WITH_TIMEOUT(!dlg.isRunning(), 300000);
        QVERIFY2(dlg.statusText().startsWith(QStringLiteral("Wrote dialog.gguf")), qPrintable(dlg.statusText()));
        QVERIFY(isGguf(out));
        QPushButton *useButton = nullptr;
        for (QPushButton *b : dlg.findChildren<QPushButton *>())
            if (b->text() == QStringLiteral("Use This Model")) useButton = b;
        QVERIFY(useButton && useButton->isEnabled());
        useButton->click();
        QCOMPARE(use.count(), 1);
        QCOMPARE(use.at(0).at(0).toString(), out);
    }

    void dialogAsksBeforeStarting() {
        ConvertDialog dlg(nullptr, kModel, QString());
        dlg.start(); // no calibration text: says so, sends nothing
        QVERIFY(!dlg.isRunning());
        QVERIFY2(dlg.statusText().contains(QStringLiteral("calibration text")), qPrintable(dlg.statusText()));
    }
};

QTEST_MAIN(TestConvert)
#include "test_convert.moc"
