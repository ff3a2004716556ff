#include "chat_model.h"

#include <QLocale>

ChatModel::ChatModel(QObject *parent) : QAbstractListModel(parent) {}

int ChatModel::rowCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : int(m_messages.size());
}

QVariant ChatModel::data(const QModelIndex &index, int role) const {
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return QVariant();
    const Message &m = m_messages.at(index.row());
    switch (role) {
    case Qt::DisplayRole:
    case TextRole:
        return m.text;
    case Qt::ToolTipRole:
        return m.kind == Kind::Assistant ? statsText(m) : QVariant();
    case KindRole:
        return QVariant::fromValue(m.kind);
    case StreamingRole:
        return m.streaming;
    case StatsRole:
        return m.kind == Kind::Assistant ? statsText(m) : QString();
    case DecodeTokPerSecRole:
        return m.decodeTokPerSec;
    case PassagesRole: {
        QVariantList list;
        for (const PassageRef &p : m.passages)
            list.push_back(QVariantMap{{QStringLiteral("ordinal"), p.ordinal},
                                       {QStringLiteral("begin"), p.begin},
                                       {QStringLiteral("end"), p.end}});
        return list;
    }
    case MessageIdRole:
        return m.id;
    default:
        return QVariant();
    }
}

QHash<int, QByteArray> ChatModel::roleNames() const {
    QHash<int, QByteArray> names = QAbstractListModel::roleNames();
    names.insert(KindRole, "kind");
    names.insert(TextRole, "text");
    names.insert(StreamingRole, "streaming");
    names.insert(StatsRole, "stats");
    names.insert(DecodeTokPerSecRole, "decodeTokPerSec");
    names.insert(PassagesRole, "passages");
    names.insert(MessageIdRole, "messageId");
    return names;
}

QString ChatModel::statsText(const Message &m) {
    if (m.kind != Kind::Assistant) return QString();
    const QLocale loc;
    QStringList parts;
    if (m.streaming) {
        parts << tr("generating…");
        if (m.decodeTokens > 0) parts << tr("%1 tokens").arg(m.decodeTokens);
        return parts.join(QStringLiteral(" · "));
    }
    if (m.decodeTokens > 0 || m.decodeTokPerSec > 0) {
        parts << (m.decodeTokens == 1 ? tr("1 token") : tr("%1 tokens").arg(loc.toString(m.decodeTokens)));
        if (m.decodeTokPerSec > 0) parts << tr("%1 tok/s").arg(m.decodeTokPerSec, 0, 'f', 1);
    }
    if (m.prefillTokens > 0) {
        QString read = tr("read %1 tokens").arg(loc.toString(m.prefillTokens));
        if (m.prefillTokPerSec > 0) read += tr(" at %1 tok/s").arg(m.prefillTokPerSec, 0, 'f', 0);
        parts << read;
    }
    if (m.reusedTokens > 0) parts << tr("%1 reused").arg(loc.toString(m.reusedTokens));
    if (!m.passages.isEmpty()) {
        // Passage numbers as the document view counts them (from 1); a long list is cut short.
        constexpr int kShown = 6;
        QStringList ords;
        for (int i = 0; i < m.passages.size() && i < kShown; ++i)
            ords << QString::number(m.passages[i].ordinal + 1);
        QString list = ords.join(QStringLiteral(", "));
        if (m.passages.size() > kShown) list += tr(" and %1 more").arg(m.passages.size() - kShown);
        parts << (m.passages.size() == 1 ? tr("from passage %1").arg(list)
                                         : tr("from passages %1").arg(list));
    }
    if (m.stopReason == QLatin1String("cancelled"))
        parts << tr("stopped");
    else if (m.stopReason == QLatin1String("length"))
        parts << tr("length limit");
    else if (m.stopReason == QLatin1String("context"))
        parts << tr("context full");
    return parts.join(QStringLiteral(" · "));
}

int ChatModel::append(Message m) {
    const int row = int(m_messages.size());
    beginInsertRows(QModelIndex(), row, row);
    m_messages.push_back(std::move(m));
    endInsertRows();
    return row;
}

void ChatModel::setMessages(const QVector<MessageRecord> &records) {
    beginResetModel();
    m_messages.clear();
    m_streaming = -1;
    for (const MessageRecord &r : records) {
        Message m;
        m.kind = r.role == QLatin1String("user")        ? Kind::User
                 : r.role == QLatin1String("assistant") ? Kind::Assistant
                                                        : Kind::Notice;
        m.text = r.content;
        m.id = r.id;
        m.promptTokens = r.promptTokens;
        m.prefillTokens = r.prefillTokens;
        m.reusedTokens = std::max(0, r.promptTokens - r.prefillTokens);
        m.decodeTokens = r.decodeTokens;
        m.prefillTokPerSec = r.prefillTokPerSec;
        m.decodeTokPerSec = r.decodeTokPerSec;
        m.stopReason = r.stopReason;
        m.passages = r.passages;
        m_messages.push_back(std::move(m));
    }
    endResetModel();
}

void ChatModel::clear() {
    if (m_messages.isEmpty()) return;
    beginResetModel();
    m_messages.clear();
    m_streaming = -1;
    endResetModel();
}

int ChatModel::addUserMessage(const QString &text) {
    Message m;
    m.kind = Kind::User;
    m.text = text;
    return append(std::move(m));
}

int ChatModel::addNotice(const QString &text) {
    Message m;
    m.kind = Kind::Notice;
    m.text = text;
    return append(std::move(m));
}

int ChatModel::addError(const QString &text) {
    Message m;
    m.kind = Kind::Error;
    m.text = text;
    return append(std::move(m));
}

int ChatModel::beginAnswer() {
    if (m_streaming >= 0) {
        m_messages[m_streaming].streaming = false;
        const QModelIndex i = index(m_streaming);
        emit dataChanged(i, i, {StreamingRole, StatsRole, Qt::ToolTipRole});
    }
    Message m;
    m.kind = Kind::Assistant;
    m.streaming = true;
    m_streaming = append(std::move(m));
    return m_streaming;
}

void ChatModel::appendToAnswer(const QString &piece) {
    if (m_streaming < 0) beginAnswer();
    Message &m = m_messages[m_streaming];
    ++m.decodeTokens; // a running count of pieces for "generating…"; finishAnswer sets the tokens
    QStringView add(piece);
    // An answer often starts with the space or newline the prompt left open.
    if (m.text.isEmpty())
        while (!add.isEmpty() && add.front().isSpace())
            add = add.mid(1);
    if (add.isEmpty()) return;
    m.text += add;
    const QModelIndex i = index(m_streaming);
    emit dataChanged(i, i, {Qt::DisplayRole, TextRole, StatsRole, Qt::ToolTipRole});
}

void ChatModel::finishAnswer(const AnswerStats &s) {
    if (m_streaming < 0) beginAnswer();
    Message &m = m_messages[m_streaming];
    if (!s.answer.isEmpty() || m.text.trimmed().isEmpty()) m.text = s.answer;
    m.streaming = false;
    m.id = s.assistantMessageId;
    m.promptTokens = s.promptTokens;
    m.reusedTokens = s.reusedTokens;
    m.prefillTokens = s.prefillTokens;
    m.decodeTokens = s.generatedTokens;
    m.prefillTokPerSec = s.prefillTokPerSec;
    m.decodeTokPerSec = s.decodeTokPerSec;
    m.stopReason = s.stopReason;
    m.passages = s.passages;
    const QModelIndex i = index(m_streaming);
    m_streaming = -1;
    emit dataChanged(i, i);
}
