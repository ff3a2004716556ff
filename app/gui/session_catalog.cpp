#include "session_catalog.h"

#include "core/paths.h"
#include "core/session_store.h"

#include <QFile>

#include <algorithm>

namespace {
QString qs(const std::string &s) {
    return QString::fromStdString(s);
}
} // namespace

SessionCatalog::SessionCatalog() = default;
SessionCatalog::~SessionCatalog() = default;

QString SessionCatalog::defaultPath() {
    return QFile::decodeName(recur_app::default_session_db_path().c_str());
}

template <typename F, typename R> R SessionCatalog::guarded(R fallback, F &&body) {
    if (!m_store) {
        m_lastError = QStringLiteral("no session database is open");
        return fallback;
    }
    try {
        return body(*m_store);
    } catch (const std::exception &e) {
        m_lastError = QString::fromStdString(e.what());
        return fallback;
    }
}

SessionCatalog::OpenResult SessionCatalog::open(const QString &path) {
    m_store.reset();
    m_path = path;
    try {
        m_store = std::make_unique<recur_app::session_store>(QFile::encodeName(path).toStdString());
        return OpenResult::Ok;
    } catch (const recur_app::store_error &e) {
        m_lastError = QString::fromStdString(e.what());
        if (e.reason() == recur_app::store_error::kind::corrupt) return OpenResult::Corrupt;
        if (e.reason() == recur_app::store_error::kind::too_new) return OpenResult::TooNew;
        return OpenResult::Failed;
    } catch (const std::exception &e) {
        m_lastError = QString::fromStdString(e.what());
        return OpenResult::Failed;
    }
}

QString SessionCatalog::moveAside(const QString &path) {
    try {
        return QFile::decodeName(
            recur_app::session_store::move_aside(QFile::encodeName(path).toStdString()).c_str());
    } catch (const std::exception &) {
        return QString();
    }
}

QVector<SessionInfo> SessionCatalog::sessions() {
    return guarded(QVector<SessionInfo>(), [](recur_app::session_store &s) {
        QVector<SessionInfo> out;
        for (const recur_app::session_info &i : s.list_sessions()) {
            SessionInfo o;
            o.id = i.id;
            o.name = qs(i.name);
            o.documentId = i.document_id;
            o.documentTitle = qs(i.document_title);
            o.modelPath = qs(i.model_path);
            o.createdAt = i.created_at;
            o.updatedAt = i.updated_at;
            o.messageCount = i.n_messages;
            out.push_back(o);
        }
        return out;
    });
}

QVector<MessageRecord> SessionCatalog::messages(qint64 sessionId) {
    return guarded(QVector<MessageRecord>(), [sessionId](recur_app::session_store &s) {
        QVector<MessageRecord> out;
        for (const recur_app::message_record &m : s.messages(sessionId)) {
            MessageRecord o;
            o.id = m.id;
            o.role = qs(m.role);
            o.content = qs(m.content);
            o.createdAt = m.created_at;
            o.promptTokens = m.prompt_tokens;
            o.prefillTokens = m.prefill_tokens;
            o.decodeTokens = m.decode_tokens;
            o.prefillTokPerSec = m.prefill_tok_s;
            o.decodeTokPerSec = m.decode_tok_s;
            o.stopReason = qs(m.stop_reason);
            for (const recur_app::passage_ref &p : m.passages)
                o.passages.push_back({p.ordinal, p.begin, p.end});
            out.push_back(o);
        }
        return out;
    });
}

bool SessionCatalog::rename(qint64 sessionId, const QString &name) {
    return guarded(false, [&](recur_app::session_store &s) {
        s.rename_session(sessionId, name.toStdString());
        return true;
    });
}

bool SessionCatalog::remove(qint64 sessionId) {
    return guarded(false, [&](recur_app::session_store &s) {
        s.delete_session(sessionId);
        return true;
    });
}

QString SessionCatalog::exportMarkdown(qint64 sessionId) {
    return guarded(QString(), [&](recur_app::session_store &s) { return qs(s.export_markdown(sessionId)); });
}

HeadStats SessionCatalog::headStats(qint64 sessionId, const ModelInfo &model) {
    return guarded(HeadStats(), [&](recur_app::session_store &s) {
        int32_t window = 0;
        const std::vector<recur_app::head_stat> stats = s.head_stats(sessionId, &window);
        HeadStats h;
        if (stats.empty()) return h;
        for (const recur_app::head_stat &st : stats) {
            h.nLayer = std::max(h.nLayer, st.layer + 1);
            h.nHead = std::max(h.nHead, st.head + 1);
            h.nBins = std::max(h.nBins, int(st.hist.size()));
        }
        h.window = window;
        const bool sameShape = model.nLayer == h.nLayer && model.nHead == h.nHead && model.nHeadKv > 0;
        h.nHeadKv = sameShape ? model.nHeadKv : h.nHead;
        h.recency.fill(0.0, h.nLayer * h.nHead);
        h.sink.fill(0.0, h.nLayer * h.nHead);
        h.hist.fill(0.0, h.nLayer * h.nHead * h.nBins);
        for (const recur_app::head_stat &st : stats) {
            const int i = st.layer * h.nHead + st.head;
            h.recency[i] = st.recency;
            h.sink[i] = st.sink;
            for (size_t b = 0; b < st.hist.size(); ++b)
                h.hist[i * h.nBins + int(b)] = st.hist[b];
        }
        h.replaced = sameShape && model.replaced.size() == h.nLayer * h.nHeadKv
                         ? model.replaced
                         : QVector<quint8>(h.nLayer * h.nHeadKv, 0);
        return h;
    });
}

QVector<MemorySample> SessionCatalog::memorySamples(qint64 sessionId) {
    return guarded(QVector<MemorySample>(), [&](recur_app::session_store &s) {
        QVector<MemorySample> out;
        for (const recur_app::memory_sample &m : s.memory_samples(sessionId)) {
            MemorySample o;
            o.tokens = m.tokens;
            o.kvUsedBytes = m.kv_bytes;
            o.fixedStateBytes = m.fixed_state_bytes;
            o.fullAttentionUsedBytes = m.full_attention_bytes;
            out.push_back(o);
        }
        return out;
    });
}
