#pragma once
// The sessions in the store, most recently used first. Renaming in place (EditRole) updates the
// row and emits renameRequested, which the window passes on to the store. Tested with
// QAbstractItemModelTester.
#include "engine_types.h"

#include <QAbstractListModel>

class SessionListModel : public QAbstractListModel {
    Q_OBJECT
  public:
    enum Roles {
        IdRole = Qt::UserRole + 1, // qint64
        DocumentTitleRole,         // QString
        UpdatedRole,               // QDateTime (local)
        MessageCountRole,          // qint64
        SubtitleRole,              // QString, "Pride and Prejudice · 4 messages · 14:02"
    };

    explicit SessionListModel(QObject *parent = nullptr);

    int rowCount(const QModelIndex &parent = QModelIndex()) const override;
    QVariant data(const QModelIndex &index, int role = Qt::DisplayRole) const override;
    bool setData(const QModelIndex &index, const QVariant &value, int role = Qt::EditRole) override;
    Qt::ItemFlags flags(const QModelIndex &index) const override;
    QHash<int, QByteArray> roleNames() const override;

    void setSessions(const QVector<SessionInfo> &sessions);
    // Inserts the session at the top, or updates it and moves it there.
    void upsert(const SessionInfo &session);
    bool removeSession(qint64 id);
    int rowOf(qint64 id) const;
    QModelIndex indexOf(qint64 id) const { return index(rowOf(id)); }
    SessionInfo session(int row) const { return m_sessions.value(row); }

  signals:
    void renameRequested(qint64 id, const QString &name);

  private:
    QVector<SessionInfo> m_sessions;
};
