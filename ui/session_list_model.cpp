#include "session_list_model.h"

#include <QDateTime>
#include <QLocale>

SessionListModel::SessionListModel(QObject *parent) : QAbstractListModel(parent) {}

int SessionListModel::rowCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : int(m_sessions.size());
}

namespace {
QString when(qint64 ms) {
    const QDateTime t = QDateTime::fromMSecsSinceEpoch(ms).toLocalTime();
    const QDate today = QDate::currentDate();
    const QLocale loc;
    if (t.date() == today) return loc.toString(t.time(), QLocale::ShortFormat);
    if (t.date().year() == today.year()) return loc.toString(t.date(), QStringLiteral("d MMM"));
    return loc.toString(t.date(), QLocale::ShortFormat);
}
} // namespace

QVariant SessionListModel::data(const QModelIndex &index, int role) const {
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return QVariant();
    const SessionInfo &s = m_sessions.at(index.row());
    switch (role) {
    case Qt::DisplayRole:
    case Qt::EditRole:
        return s.name;
    case Qt::ToolTipRole:
        return tr("%1\nDocument: %2\n%3 messages").arg(s.name, s.documentTitle).arg(s.messageCount);
    case IdRole:
        return s.id;
    case DocumentTitleRole:
        return s.documentTitle;
    case UpdatedRole:
        return QDateTime::fromMSecsSinceEpoch(s.updatedAt).toLocalTime();
    case MessageCountRole:
        return s.messageCount;
    case SubtitleRole: {
        QStringList parts;
        if (!s.documentTitle.isEmpty() && s.documentTitle != s.name) parts << s.documentTitle;
        parts << (s.messageCount == 1 ? tr("1 message") : tr("%1 messages").arg(s.messageCount));
        if (s.updatedAt > 0) parts << when(s.updatedAt);
        return parts.join(QStringLiteral(" · "));
    }
    default:
        return QVariant();
    }
}

bool SessionListModel::setData(const QModelIndex &index, const QVariant &value, int role) {
    if (role != Qt::EditRole ||
        !checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return false;
    const QString name = value.toString().simplified();
    SessionInfo &s = m_sessions[index.row()];
    if (name.isEmpty() || name == s.name) return false;
    s.name = name;
    emit dataChanged(index, index, {Qt::DisplayRole, Qt::EditRole, Qt::ToolTipRole});
    emit renameRequested(s.id, name);
    return true;
}

Qt::ItemFlags SessionListModel::flags(const QModelIndex &index) const {
    if (!index.isValid()) return Qt::NoItemFlags;
    return Qt::ItemIsSelectable | Qt::ItemIsEnabled | Qt::ItemIsEditable | Qt::ItemNeverHasChildren;
}

QHash<int, QByteArray> SessionListModel::roleNames() const {
    QHash<int, QByteArray> names = QAbstractListModel::roleNames();
    names.insert(IdRole, "sessionId");
    names.insert(DocumentTitleRole, "documentTitle");
    names.insert(UpdatedRole, "updated");
    names.insert(MessageCountRole, "messageCount");
    names.insert(SubtitleRole, "subtitle");
    return names;
}

void SessionListModel::setSessions(const QVector<SessionInfo> &sessions) {
    beginResetModel();
    m_sessions = sessions;
    endResetModel();
}

int SessionListModel::rowOf(qint64 id) const {
    for (int i = 0; i < m_sessions.size(); ++i)
        if (m_sessions[i].id == id) return i;
    return -1;
}

void SessionListModel::upsert(const SessionInfo &session) {
    const int row = rowOf(session.id);
    if (row < 0) {
        beginInsertRows(QModelIndex(), 0, 0);
        m_sessions.prepend(session);
        endInsertRows();
        return;
    }
    if (row > 0) {
        beginMoveRows(QModelIndex(), row, row, QModelIndex(), 0);
        m_sessions.move(row, 0);
        endMoveRows();
    }
    m_sessions[0] = session;
    emit dataChanged(index(0), index(0));
}

bool SessionListModel::removeSession(qint64 id) {
    const int row = rowOf(id);
    if (row < 0) return false;
    beginRemoveRows(QModelIndex(), row, row);
    m_sessions.removeAt(row);
    endRemoveRows();
    return true;
}
