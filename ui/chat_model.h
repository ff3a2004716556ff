#pragma once
// The conversation under the chat view: one row per message (question, answer, or a notice
// from the app such as "the document does not fit"). The answer being generated is the
// streaming row: tokens are appended to it as they arrive and it is finished with the answer's
// statistics. Tested with QAbstractItemModelTester.
#include "engine_types.h"

#include <QAbstractListModel>

class ChatModel : public QAbstractListModel {
    Q_OBJECT
  public:
    enum Roles {
        KindRole = Qt::UserRole + 1, // Kind
        TextRole,                    // QString, the message text (also DisplayRole)
        StreamingRole,               // bool, the answer is still being generated
        StatsRole,                   // QString, "128 tokens · 41.3 tok/s · …" under an answer
        DecodeTokPerSecRole,         // double, 0 when unknown
        PassagesRole,                // QVariantList of QVariantMap {ordinal, begin, end}
        MessageIdRole,               // qint64, the store's id (0 when not stored)
    };
    enum class Kind { User, Assistant, Notice, Error };
    Q_ENUM(Kind)

    struct Message {
        Kind kind = Kind::Notice;
        QString text;
        bool streaming = false;
        qint64 id = 0;
        int promptTokens = 0, reusedTokens = 0, prefillTokens = 0, decodeTokens = 0;
        double prefillTokPerSec = 0, decodeTokPerSec = 0;
        QString stopReason;
        QVector<PassageRef> passages;
    };

    explicit ChatModel(QObject *parent = nullptr);

    int rowCount(const QModelIndex &parent = QModelIndex()) const override;
    QVariant data(const QModelIndex &index, int role = Qt::DisplayRole) const override;
    QHash<int, QByteArray> roleNames() const override;

    const Message &message(int row) const { return m_messages.at(row); }
    // Row of the answer being generated, -1 when none.
    int streamingRow() const { return m_streaming; }

  public slots:
    // Replaces everything with a stored conversation.
    void setMessages(const QVector<MessageRecord> &records);
    void clear();
    int addUserMessage(const QString &text);
    int addNotice(const QString &text);
    int addError(const QString &text);
    // Starts the streaming answer row (finishing a previous one that was left open).
    int beginAnswer();
    void appendToAnswer(const QString &piece);
    // Ends the streaming row with the stored answer text and its statistics.
    void finishAnswer(const AnswerStats &stats);

  public:
    // The line under an answer: tokens, speed, what was read, which passages were used.
    static QString statsText(const Message &m);

  private:
    int append(Message m);
    QVector<Message> m_messages;
    int m_streaming = -1;
};
