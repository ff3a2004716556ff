#include "screenshots.h"

#include "chat_model.h"
#include "convert_dialog.h"
#include "engine_worker.h"
#include "heads_panel.h"
#include "main_window.h"
#include "memory_panel.h"
#include "theme.h"

#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QEventLoop>
#include <QFileInfo>
#include <QTemporaryDir>
#include <QTimer>

#include <cmath>
#include <cstdio>
#include <functional>

namespace {

// Runs the event loop until `done()` holds or the time is up.
bool waitUntil(const std::function<bool()> &done, int timeoutMs) {
    QElapsedTimer t;
    t.start();
    while (!done()) {
        if (t.elapsed() > timeoutMs) return false;
        QEventLoop loop;
        QTimer::singleShot(20, &loop, &QEventLoop::quit);
        loop.exec();
    }
    return true;
}

void settle(int ms = 250) {
    waitUntil([] { return false; }, ms); // lets layouts and repaints finish
}

bool shoot(MainWindow &w, const QString &dir, const QString &name) {
    settle();
    const QString path = QDir(dir).filePath(name);
    const bool ok = w.grab().save(path, "PNG");
    std::fprintf(stderr, "%s %s\n", ok ? "wrote" : "FAILED", qPrintable(path));
    return ok;
}

} // namespace

int runScreenshots(MainWindow &w, const ScreenshotOptions &o) {
    QDir().mkpath(o.directory);
    QTemporaryDir tmp;
    const QString db = o.database.isEmpty() ? tmp.filePath(QStringLiteral("sessions.db")) : o.database;
    const int timeout = o.timeoutSeconds * 1000;

    w.resize(1440, 900);
    w.show();
    w.start(db, false);
    if (!waitUntil([&] { return w.isModelReady(); }, timeout)) {
        std::fprintf(stderr,
                     "screenshots: the model did not load (is it installed? see installer/setup.sh)\n");
        return 1;
    }
    bool ok = shoot(w, o.directory, QStringLiteral("01-empty-window.png"));

    bool shown = false;
    QObject::connect(&w, &MainWindow::documentShown, &w, [&] { shown = true; });
    w.openDocumentFile(o.document);
    if (!waitUntil([&] { return shown && !w.isBusy(); }, timeout)) {
        std::fprintf(stderr, "screenshots: the document did not open: %s\n", qPrintable(o.document));
        return 1;
    }

    int answers = 0;
    QObject::connect(&w, &MainWindow::answerShown, &w, [&] { ++answers; });
    int pieces = 0;
    QObject::connect(w.chatModel(), &QAbstractItemModel::dataChanged, &w, [&] { ++pieces; });

    // First question: the memory chart grows while the passages are read.
    w.askQuestion(o.question);
    w.showPanel(MainWindow::Panel::Memory);
    if (waitUntil([&] { return answers > 0 || w.memoryPanel()->sampleCount() >= 12; }, timeout) &&
        answers == 0)
        ok &= shoot(w, o.directory, QStringLiteral("02a-reading.png"));
    if (!waitUntil([&] { return answers > 0; }, timeout)) {
        std::fprintf(stderr, "screenshots: no answer in %d s\n", o.timeoutSeconds);
        return 1;
    }

    // A follow-up streaming, with the passages the first answer came from marked in the document.
    w.showPanel(MainWindow::Panel::Document);
    pieces = 0;
    w.askQuestion(o.followUp);
    waitUntil([&] { return answers > 1 || pieces >= o.tokensBeforeShot; }, timeout);
    ok &= shoot(w, o.directory, QStringLiteral("02-answer-streaming.png"));
    if (!waitUntil([&] { return answers > 1; }, timeout)) {
        std::fprintf(stderr, "screenshots: no answer in %d s\n", o.timeoutSeconds);
        return 1;
    }

    w.showPanel(MainWindow::Panel::Memory);
    ok &= shoot(w, o.directory, QStringLiteral("03-memory-panel.png"));

    w.showPanel(MainWindow::Panel::Heads);
    const HeadStats &s = w.headsPanel()->stats();
    if (!s.isEmpty()) {
        // A head that splits its attention between near and far tokens: its histogram shows both.
        int bl = 0, bh = 0;
        for (int l = 0; l < s.nLayer; ++l)
            for (int h = 0; h < s.nHead; ++h)
                if (std::abs(s.recencyAt(l, h) - 0.5) < std::abs(s.recencyAt(bl, bh) - 0.5)) bl = l, bh = h;
        w.headsPanel()->selectHead(bl, bh);
    }
    ok &= shoot(w, o.directory, QStringLiteral("04-heads-panel.png"));
    if (!s.isEmpty()) {
        w.headsPanel()->exportPng(QDir(o.directory).filePath(QStringLiteral("04b-heads-export.png")));
    }

    // Make a Hybrid Model, converting the model in use (into the temporary folder), shot during
    // the capture and then stopped: a whole conversion takes minutes.
    // (Not for a hybrid: the window says it is one already, in a message box.)
    if (!w.modelInfo().hybrid) w.showConvertDialog();
    if (ConvertDialog *d = w.convertDialog()) {
        d->setOutputPath(tmp.filePath(QStringLiteral("hybrid-25.gguf")));
        d->start();
        waitUntil([&] { return !d->isRunning() || d->statusText().contains(QStringLiteral(" of ")); }, timeout);
        settle(1500);
        const QString path = QDir(o.directory).filePath(QStringLiteral("06-make-hybrid.png"));
        const bool shot = d->grab().save(path, "PNG");
        std::fprintf(stderr, "%s %s\n", shot ? "wrote" : "FAILED", qPrintable(path));
        ok &= shot;
        d->stopConversion();
        waitUntil([&] { return !d->isRunning(); }, timeout);
        d->close();
    }

    Theme::apply(QStringLiteral("dark"));
    w.refreshTheme();
    w.showPanel(MainWindow::Panel::Memory);
    ok &= shoot(w, o.directory, QStringLiteral("05-dark.png"));
    return ok ? 0 : 1;
}
