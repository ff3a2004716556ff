// The whole window with a real worker and stories260K: open a document, ask, see the streamed
// answer with its statistics; then, as after a restart, a new window and worker on the same
// database show the conversation at once and answer a follow-up from the engine snapshot,
// without reading the document again.
#include "app_settings.h"
#include "chat_model.h"
#include "engine_worker.h"
#include "main_window.h"
#include "memory_panel.h"
#include "session_list_model.h"
#include "theme.h"

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

namespace {
const QString kModel = QStringLiteral(RECUR_SHARED_DIR "/models/stories260K.gguf");
}

class TestMainWindow : public QObject {
    Q_OBJECT
  private:
    QTemporaryDir m_dir;

    std::unique_ptr<AppSettings> settings() {
        auto s = std::make_unique<AppSettings>(m_dir.filePath(QStringLiteral("settings.ini")));
        EngineConfig c;
        c.modelPath = kModel;
        c.contextLength = 1024;
        c.threads = 2;
        c.recencyWindow = 16;
        s->setEngineConfig(c);
        SamplingConfig sp;
        sp.temperature = 0;
        sp.maxTokens = 16;
        s->setSampling(sp);
        return s;
    }

  private slots:
    void initTestCase() {
        if (!QFile::exists(kModel)) QSKIP("stories260K.gguf is not in ../shared/models");
        QVERIFY(m_dir.isValid());
        Theme::apply(QStringLiteral("light"));
        QFile f(m_dir.filePath(QStringLiteral("lily.md")));
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(
            "# Lily and the ball\n\nLily had a big red ball. Every day she went to the park to play with it. "
            "One day the ball rolled into the pond and a kind frog gave it back.\n");
    }

    void askThenReopen() {
        const QString db = m_dir.filePath(QStringLiteral("sessions.db"));
        auto s = settings();
        qint64 session = 0;
        QString firstAnswer;
        {
            EngineHost host;
            MainWindow w(host.worker(), s.get());
            w.resize(1200, 800);
            w.show();
            w.start(db, false);
            QTRY_VERIFY_WITH_TIMEOUT(w.isModelReady(), 20000);
            QVERIFY(w.statusText().contains(QStringLiteral("CPU")));
            w.openDocumentFile(m_dir.filePath(QStringLiteral("lily.md")));
            QTRY_VERIFY_WITH_TIMEOUT(w.currentSession() > 0 && !w.isBusy(), 20000);
            session = w.currentSession();
            QVERIFY(w.memoryPanel()->planText().contains(QStringLiteral("This document needs")));
            QCOMPARE(w.sessionModel()->rowCount(), 1);

            w.askQuestion(QStringLiteral("What did Lily have?"));
            ChatModel *chat = w.chatModel();
            QTRY_VERIFY_WITH_TIMEOUT(chat->streamingRow() < 0 && !w.isBusy(), 30000);
            const int last = chat->rowCount() - 1;
            QCOMPARE(chat->message(last).kind, ChatModel::Kind::Assistant);
            QVERIFY(chat->message(last).decodeTokens > 0);
            QVERIFY(
                chat->index(last).data(ChatModel::StatsRole).toString().contains(QStringLiteral("tok/s")));
            QCOMPARE(chat->message(last - 1).text, QStringLiteral("What did Lily have?"));
            firstAnswer = chat->message(last).text;
            QVERIFY(w.memoryPanel()->sampleCount() > 0);
            w.close();
        }
        {
            // "Tomorrow": a new worker (empty context) and window on the same database.
            EngineHost host;
            MainWindow w(host.worker(), s.get());
            w.show();
            w.start(db, false);
            QCOMPARE(w.sessionModel()->rowCount(), 1);
            w.openSessionById(session);
            // The conversation is there at once, before the worker has done anything.
            ChatModel *chat = w.chatModel();
            QVERIFY(chat->rowCount() >= 2);
            QCOMPARE(chat->message(chat->rowCount() - 1).text, firstAnswer);
            QTRY_VERIFY_WITH_TIMEOUT(w.isModelReady() && !w.isBusy(), 20000);
            w.askQuestion(QStringLiteral("Who gave the ball back?"));
            QTRY_VERIFY_WITH_TIMEOUT(chat->streamingRow() < 0 && !w.isBusy(), 30000);
            const ChatModel::Message &m = chat->message(chat->rowCount() - 1);
            QCOMPARE(m.kind, ChatModel::Kind::Assistant);
            QVERIFY2(m.reusedTokens > 0, "the follow-up read the document again");
        }
    }
};

QTEST_MAIN(TestMainWindow)
#include "test_main_window.moc"
