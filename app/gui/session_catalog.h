#pragma once
// The GUI thread's read-mostly view of the session database (recur_app::session_store through
// its own SQLite connection, in Qt types): listing sessions, showing a stored conversation at
// once, rename, delete, export. The worker holds the other connection, the one that answers
// and writes messages; SQLite's WAL lets both work on the file at the same time.
//
// Store errors do not throw here: a failed call returns an empty value or false and sets
// lastError() to the store's one-line message.
#include "engine_types.h"

#include <memory>

namespace recur_app {
class session_store;
}

class SessionCatalog {
  public:
    SessionCatalog();
    ~SessionCatalog();
    SessionCatalog(const SessionCatalog &) = delete;
    SessionCatalog &operator=(const SessionCatalog &) = delete;

    // $XDG_DATA_HOME/RecurDesk/sessions.db (the path `recur ask --session` uses by default).
    static QString defaultPath();

    enum class OpenResult { Ok, Corrupt, TooNew, Failed };
    OpenResult open(const QString &path);
    // Moves a damaged database aside (PATH.corrupt-DATE) so that open() can make a new one;
    // returns the new name, empty on failure.
    static QString moveAside(const QString &path);
    bool isOpen() const { return bool(m_store); }
    QString path() const { return m_path; }
    QString lastError() const { return m_lastError; }

    QVector<SessionInfo> sessions();
    QVector<MessageRecord> messages(qint64 sessionId);
    bool rename(qint64 sessionId, const QString &name);
    bool remove(qint64 sessionId);
    QString exportMarkdown(qint64 sessionId);
    // Head statistics and memory samples stored with a session (shown when it is reopened);
    // `model` supplies the shape (heads per KV group, replaced groups).
    HeadStats headStats(qint64 sessionId, const ModelInfo &model);
    QVector<MemorySample> memorySamples(qint64 sessionId);

  private:
    std::unique_ptr<recur_app::session_store> m_store;
    QString m_path;
    QString m_lastError;
    template <typename F, typename R> R guarded(R fallback, F &&body);
};
