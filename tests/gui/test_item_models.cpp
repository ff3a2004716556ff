// ChatModel and SessionListModel under QAbstractItemModelTester (fatal on any violation of the
// model contract), through every mutation the window uses.
#include "chat_model.h"
#include "session_list_model.h"

#include <QAbstractItemModelTester>
#include <QSignalSpy>
#include <QTest>

class TestItemModels : public QObject {
    Q_OBJECT
  private slots:
    void chatModelContract() {
        ChatModel model;
        QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
        QCOMPARE(model.rowCount(), 0);
        QCOMPARE(model.streamingRow(), -1);

        model.addNotice(QStringLiteral("The document fits."));
        const int q = model.addUserMessage(QStringLiteral("Who is Darcy?"));
        QCOMPARE(q, 1);
        QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
        const int a = model.beginAnswer();
        QCOMPARE(a, 2);
        QCOMPARE(model.streamingRow(), 2);
        QVERIFY(model.index(a).data(ChatModel::StreamingRole).toBool());
        model.appendToAnswer(QStringLiteral("\n Mr."));
        model.appendToAnswer(QStringLiteral(" Darcy"));
        model.appendToAnswer(QStringLiteral(" is proud."));
        QCOMPARE(model.index(a).data().toString(),
                 QStringLiteral("Mr. Darcy is proud.")); // leading space dropped
        QCOMPARE(changed.count(), 3);
        QVERIFY(
            model.index(a).data(ChatModel::StatsRole).toString().startsWith(QStringLiteral("generating")));

        AnswerStats s;
        s.answer = QStringLiteral("Mr. Darcy is proud.");
        s.generatedTokens = 6;
        s.decodeTokPerSec = 41.25;
        s.prefillTokens = 1200;
        s.prefillTokPerSec = 350;
        s.reusedTokens = 800;
        s.stopReason = QStringLiteral("eos");
        s.assistantMessageId = 17;
        s.passages = {{2, 100, 200}, {7, 900, 1000}};
        model.finishAnswer(s);
        QCOMPARE(model.streamingRow(), -1);
        QVERIFY(!model.index(a).data(ChatModel::StreamingRole).toBool());
        QCOMPARE(model.index(a).data(ChatModel::MessageIdRole).toLongLong(), 17);
        QCOMPARE(model.index(a).data(ChatModel::DecodeTokPerSecRole).toDouble(), 41.25);
        const QString stats = model.index(a).data(ChatModel::StatsRole).toString();
        QVERIFY2(stats.contains(QStringLiteral("6 tokens")) && stats.contains(QStringLiteral("41.3 tok/s")) &&
                     stats.contains(QStringLiteral("from passages 3, 8")) &&
                     stats.contains(QStringLiteral("800 reused")),
                 qPrintable(stats));
        const QVariantList passages = model.index(a).data(ChatModel::PassagesRole).toList();
        QCOMPARE(passages.size(), 2);
        QCOMPARE(passages.at(1).toMap().value(QStringLiteral("begin")).toLongLong(), 900);
        QCOMPARE(model.index(q).data(ChatModel::KindRole).value<ChatModel::Kind>(), ChatModel::Kind::User);
        QVERIFY(model.index(q).data(ChatModel::StatsRole).toString().isEmpty());

        // A token without an open answer starts one; an error ends up as its own row.
        model.appendToAnswer(QStringLiteral("stray"));
        QCOMPARE(model.streamingRow(), 4 - 1);
        model.addError(QStringLiteral("the model could not be loaded"));
        QCOMPARE(model.index(4).data(ChatModel::KindRole).value<ChatModel::Kind>(), ChatModel::Kind::Error);
        // beginAnswer closes a streaming row left open.
        model.beginAnswer();
        QVERIFY(!model.index(3).data(ChatModel::StreamingRole).toBool());
        AnswerStats cancelled;
        cancelled.stopReason = QStringLiteral("cancelled");
        model.finishAnswer(cancelled);
        QVERIFY(model.index(5).data(ChatModel::StatsRole).toString().contains(QStringLiteral("stopped")));

        QVector<MessageRecord> stored(3);
        stored[0].role = QStringLiteral("user");
        stored[0].content = QStringLiteral("q");
        stored[1].role = QStringLiteral("assistant");
        stored[1].content = QStringLiteral("a");
        stored[1].decodeTokens = 3;
        stored[1].decodeTokPerSec = 10;
        stored[1].promptTokens = 500;
        stored[1].prefillTokens = 20;
        stored[2].role = QStringLiteral("system");
        stored[2].content = QStringLiteral("note");
        model.setMessages(stored);
        QCOMPARE(model.rowCount(), 3);
        QVERIFY(model.index(1).data(ChatModel::StatsRole).toString().contains(QStringLiteral("480 reused")));
        QCOMPARE(model.index(2).data(ChatModel::KindRole).value<ChatModel::Kind>(), ChatModel::Kind::Notice);
        model.clear();
        QCOMPARE(model.rowCount(), 0);
        QVERIFY(!model.index(0).isValid());
        QVERIFY(model.roleNames().contains(ChatModel::TextRole));
    }

    void sessionListModelContract() {
        SessionListModel model;
        QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
        auto make = [](qint64 id, const QString &name, qint64 n) {
            SessionInfo s;
            s.id = id;
            s.name = name;
            s.documentTitle = QStringLiteral("Pride and Prejudice");
            s.messageCount = n;
            s.updatedAt = QDateTime::currentMSecsSinceEpoch();
            return s;
        };
        model.setSessions({make(3, QStringLiteral("c"), 2), make(2, QStringLiteral("b"), 0),
                           make(1, QStringLiteral("a"), 1)});
        QCOMPARE(model.rowCount(), 3);
        QCOMPARE(model.rowOf(2), 1);
        QCOMPARE(model.rowOf(99), -1);
        QCOMPARE(model.index(0).data(SessionListModel::IdRole).toLongLong(), 3);
        QVERIFY(model.index(0)
                    .data(SessionListModel::SubtitleRole)
                    .toString()
                    .contains(QStringLiteral("2 messages")));
        QVERIFY(model.index(2)
                    .data(SessionListModel::SubtitleRole)
                    .toString()
                    .contains(QStringLiteral("1 message")));
        QVERIFY(model.flags(model.index(0)) & Qt::ItemIsEditable);

        // Upsert: an existing session moves to the top; a new one is inserted there.
        model.upsert(make(1, QStringLiteral("a, updated"), 3));
        QCOMPARE(model.rowOf(1), 0);
        QCOMPARE(model.index(0).data().toString(), QStringLiteral("a, updated"));
        QCOMPARE(model.rowCount(), 3);
        model.upsert(make(4, QStringLiteral("d"), 0));
        QCOMPARE(model.rowOf(4), 0);
        QCOMPARE(model.rowCount(), 4);
        model.upsert(make(4, QStringLiteral("d2"), 1)); // already on top: updated in place
        QCOMPARE(model.index(0).data().toString(), QStringLiteral("d2"));

        // Rename in place asks the store through renameRequested.
        QSignalSpy rename(&model, &SessionListModel::renameRequested);
        QVERIFY(model.setData(model.index(1), QStringLiteral("  Darcy   questions ")));
        QCOMPARE(rename.count(), 1);
        QCOMPARE(rename.at(0).at(0).toLongLong(), 1);
        QCOMPARE(rename.at(0).at(1).toString(), QStringLiteral("Darcy questions"));
        QVERIFY(!model.setData(model.index(1), QStringLiteral("   "))); // an empty name is refused
        QVERIFY(!model.setData(model.index(1), QStringLiteral("x"), Qt::DisplayRole));
        QCOMPARE(rename.count(), 1);

        QVERIFY(model.removeSession(2));
        QVERIFY(!model.removeSession(2));
        QCOMPARE(model.rowCount(), 3);
        model.setSessions({});
        QCOMPARE(model.rowCount(), 0);
    }
};

QTEST_GUILESS_MAIN(TestItemModels)
#include "test_item_models.moc"
