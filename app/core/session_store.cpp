#include "core/session_store.h"

#include "core/sqlite_util.h"

#include <cerrno>
#include <cstring>
#include <bit>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>

namespace recur_app {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- sqlite helpers

namespace sql {

void fail(sqlite3 *db, int rc, const std::string &what, const std::string &file) {
    const std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    const std::string where = " ('" + file + "')";
    switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        throw store_error(store_error::kind::busy,
                          what + " failed: the session database is locked by another program; close it or try again" + where);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        throw store_error(store_error::kind::corrupt,
                          what + " failed: the session database is damaged or not a RecurDesk database (" + detail + ")" + where);
    case SQLITE_READONLY:
        throw store_error(store_error::kind::read_only,
                          what + " failed: the session database cannot be written (read-only file or folder)" + where);
    case SQLITE_FULL:
        throw store_error(store_error::kind::disk_full,
                          what + " failed: the disk is full; nothing saved before was lost, free some space and retry" + where);
    case SQLITE_IOERR: {
        // SQLite reports a failed write as a generic I/O error; the errno says whether it was space.
        const int sys = db ? sqlite3_system_errno(db) : 0;
        if (sys == ENOSPC || sys == EDQUOT)
            throw store_error(store_error::kind::disk_full,
                              what + " failed: the disk is full (or over quota); nothing saved before was lost, free "
                                     "some space and retry" + where);
        if (sys == EFBIG)
            throw store_error(store_error::kind::disk_full,
                              what + " failed: a file size limit was reached (ulimit -f); nothing saved before was lost" +
                                  where);
        if (rc == SQLITE_IOERR_WRITE || rc == SQLITE_IOERR_TRUNCATE || rc == SQLITE_IOERR_FSYNC)
            // The errno is often gone by the time the error reaches us (SQLite's rollback made
            // more calls): say what the usual causes are rather than just "disk I/O error".
            throw store_error(store_error::kind::io,
                              what + " failed: could not write to the disk (is it full, over quota, or past a file "
                                     "size limit?); nothing saved before was lost" +
                                  (sys ? std::string(" (") + std::strerror(sys) + ")" : "") + where);
        throw store_error(store_error::kind::io,
                          what + " failed: " + detail + (sys ? std::string(" (") + std::strerror(sys) + ")" : "") + where);
    }
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        throw store_error(store_error::kind::io, what + " failed: " + detail + where);
    default:
        throw store_error(store_error::kind::other, what + " failed: " + detail + where);
    }
}

statement::statement(sqlite3 *db, std::string_view text, const std::string &file) : db_(db), file_(file) {
    const int rc = sqlite3_prepare_v2(db, text.data(), int(text.size()), &st_, nullptr);
    if (rc != SQLITE_OK) fail(db, rc, "preparing a query", file);
}

statement &statement::bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
}
statement &statement::bind(int i, double v) {
    sqlite3_bind_double(st_, i, v);
    return *this;
}
statement &statement::bind(int i, std::string_view v) {
    sqlite3_bind_text64(st_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    return *this;
}
statement &statement::bind_blob(int i, const void *p, size_t n) {
    sqlite3_bind_blob64(st_, i, n ? p : "", n, SQLITE_TRANSIENT);
    return *this;
}
statement &statement::bind_null(int i) {
    sqlite3_bind_null(st_, i);
    return *this;
}

bool statement::step(const std::string &what) {
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    sqlite3_reset(st_);
    fail(db_, rc, what, file_);
}

void exec(sqlite3 *db, const std::string &text, const std::string &what, const std::string &file) {
    char *msg = nullptr;
    const int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK) fail(db, rc, what, file);
}

transaction::transaction(sqlite3 *db, const std::string &what, const std::string &file)
    : db_(db), what_(what), file_(file) {
    exec(db, "BEGIN IMMEDIATE", what, file);
}

transaction::~transaction() {
    // A failed statement may already have rolled back (SQLITE_FULL, some I/O errors).
    if (!done_ && !sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void transaction::commit() {
    exec(db_, "COMMIT", what_, file_);
    done_ = true;
}

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

} // namespace sql

using sql::statement;
using sql::transaction;

namespace {
// "Last used" must order sessions even when two changes land in the same millisecond, so a
// session's updated_at is never behind another's: max(now, newest + 1).
constexpr const char *next_update_time = "max(?, coalesce((SELECT max(updated_at) FROM sessions), 0) + 1)";
} // namespace

// ---------------------------------------------------------------- open and migrate

session_store::session_store(const std::string &path) : session_store(path, open_options{}) {}

session_store::session_store(const std::string &path, const open_options &opt) : path_(path) {
    try {
        open(opt);
    } catch (...) {
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw;
    }
}

session_store::~session_store() { sqlite3_close_v2(db_); }

int session_store::schema_version() { return detail::migrations().empty() ? 0 : detail::migrations().back().version; }

void session_store::open(const open_options &opt) {
    if (!opt.read_only) {
        const fs::path dir = fs::path(path_).parent_path();
        std::error_code ec;
        if (!dir.empty()) fs::create_directories(dir, ec);
        if (ec)
            throw store_error(store_error::kind::io,
                              "cannot create the folder '" + dir.string() + "' for the session database: " + ec.message());
    }
    std::error_code ec;
    if (fs::is_directory(path_, ec))
        throw store_error(store_error::kind::io, "the session database '" + path_ + "' is a folder");
    const int flags = (opt.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) sql::fail(db_, rc, "opening the session database", path_);
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, opt.busy_timeout_ms);
    // SQLite opens a file it may not write read-only without saying so; ask.
    read_only_ = opt.read_only || sqlite3_db_readonly(db_, "main") == 1;

    // Checks the whole file's structure (not the index contents: quick_check skips those, which
    // keeps opening fast); a damaged file is refused here rather than failing later mid-write.
    {
        statement st(db_, "PRAGMA quick_check", path_);
        std::string problems;
        while (st.step("checking the session database")) {
            const std::string row = st.text(0);
            if (row == "ok") continue;
            if (problems.size() < 300) problems += (problems.empty() ? "" : "; ") + row;
        }
        if (!problems.empty())
            throw store_error(store_error::kind::corrupt,
                              "the session database '" + path_ + "' is damaged (" + problems + ")");
    }
    sql::exec(db_, "PRAGMA foreign_keys = ON", "opening the session database", path_);
    if (!read_only_) {
        // WAL: readers never block the writer, and a commit is one append to the log. FULL
        // syncs the log on every commit, so a committed message survives a power cut too.
        sql::exec(db_, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL", "opening the session database", path_);
    }
    migrate();
}

void session_store::migrate() {
    const auto &list = detail::migrations();
    const std::string what = "upgrading the session database";
    auto user_version = [&] {
        statement st(db_, "PRAGMA user_version", path_);
        st.step(what);
        return int(st.int64(0));
    };
    const int current = user_version();
    const int latest = schema_version();
    if (current > latest)
        throw store_error(store_error::kind::too_new, "the session database '" + path_ + "' has schema version " +
                                                          std::to_string(current) + ", written by a newer RecurDesk (this one knows up to " +
                                                          std::to_string(latest) + "); update RecurDesk");
    if (current == latest) return;
    if (read_only_)
        throw store_error(store_error::kind::read_only, "the session database '" + path_ + "' needs an upgrade (schema " +
                                                            std::to_string(current) + " to " + std::to_string(latest) +
                                                            ") but cannot be written");
    for (size_t i = 0; i < list.size(); ++i) {
        const detail::migration &m = list[i];
        if (m.version != int(i) + 1)
            throw store_error(store_error::kind::other, "internal error: migrations are not numbered 1, 2, 3, ...");
        const std::string step = what + " to version " + std::to_string(m.version) + " (" + m.name + ")";
        transaction t(db_, step, path_);
        // Read again under the write lock: another process may have migrated meanwhile.
        if (user_version() >= m.version) continue;
        sql::exec(db_, m.sql, step, path_);
        sql::exec(db_, "PRAGMA user_version = " + std::to_string(m.version), step, path_);
        t.commit();
    }
}

std::string session_store::move_aside(const std::string &path) {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    const std::string target = path + ".corrupt-" + stamp;
    std::error_code ec;
    fs::rename(path, target, ec);
    if (ec) throw store_error(store_error::kind::io, "cannot move '" + path + "' aside: " + ec.message());
    for (const char *suffix : {"-wal", "-shm"}) {
        std::error_code ignored;
        if (fs::exists(path + suffix, ignored)) fs::rename(path + suffix, target + suffix, ignored);
    }
    return target;
}

std::string session_store::snapshot_dir() const {
    const fs::path dir = fs::path(path_).parent_path();
    return (dir.empty() ? fs::path("snapshots") : dir / "snapshots").string();
}

// ---------------------------------------------------------------- documents

namespace {

document_record read_document(const statement &st) {
    document_record d;
    d.id = st.int64(0);
    d.title = st.text(1);
    d.path = st.text(2);
    d.format = st.text(3);
    d.sha256 = st.text(4);
    d.n_bytes = st.int64(5);
    d.n_tokens = int32_t(st.int64(6));
    d.n_tokens_model = st.text(7);
    d.added_at = st.int64(8);
    return d;
}

constexpr const char *document_columns = "id, title, path, format, sha256, n_bytes, n_tokens, n_tokens_model, added_at";

} // namespace

int64_t session_store::add_document(const document &doc) {
    const std::string what = "saving the document '" + doc.title + "'";
    transaction t(db_, what, path_);
    int64_t id = 0;
    {
        statement st(db_, "SELECT id FROM documents WHERE sha256 = ?", path_);
        st.bind(1, doc.sha256);
        if (st.step(what)) id = st.int64(0);
    }
    if (id) {
        statement st(db_, "UPDATE documents SET title = ?, path = ? WHERE id = ?", path_);
        st.bind(1, doc.title).bind(2, doc.path).bind(3, id).run(what);
    } else {
        statement st(db_,
                     "INSERT INTO documents (sha256, title, path, format, text, n_bytes, added_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     path_);
        st.bind(1, doc.sha256).bind(2, doc.title).bind(3, doc.path).bind(4, doc.format).bind(5, doc.text);
        st.bind(6, int64_t(doc.text.size())).bind(7, sql::now_ms()).run(what);
        id = sqlite3_last_insert_rowid(db_);
    }
    t.commit();
    return id;
}

std::optional<document_record> session_store::find_document(int64_t id) {
    statement st(db_, std::string("SELECT ") + document_columns + " FROM documents WHERE id = ?", path_);
    st.bind(1, id);
    if (!st.step("reading a document")) return std::nullopt;
    return read_document(st);
}

std::optional<document_record> session_store::find_document_by_hash(const std::string &sha256) {
    statement st(db_, std::string("SELECT ") + document_columns + " FROM documents WHERE sha256 = ?", path_);
    st.bind(1, sha256);
    if (!st.step("reading a document")) return std::nullopt;
    return read_document(st);
}

std::string session_store::document_text(int64_t id) {
    statement st(db_, "SELECT text FROM documents WHERE id = ?", path_);
    st.bind(1, id);
    if (!st.step("reading a document"))
        throw store_error(store_error::kind::not_found, "no document " + std::to_string(id) + " in '" + path_ + "'");
    return st.text(0);
}

void session_store::set_document_tokens(int64_t id, int32_t n_tokens, const std::string &model_fingerprint) {
    const std::string what = "saving the document's token count";
    transaction t(db_, what, path_);
    statement st(db_, "UPDATE documents SET n_tokens = ?, n_tokens_model = ? WHERE id = ?", path_);
    st.bind(1, n_tokens).bind(2, model_fingerprint).bind(3, id).run(what);
    t.commit();
}

// ---------------------------------------------------------------- sessions

namespace {

constexpr const char *session_query =
    "SELECT s.id, s.name, s.document_id, d.title, s.model_path, s.model_fingerprint, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM messages m WHERE m.session_id = s.id) "
    "FROM sessions s JOIN documents d ON d.id = s.document_id ";

session_info read_session(const statement &st) {
    session_info s;
    s.id = st.int64(0);
    s.name = st.text(1);
    s.document_id = st.int64(2);
    s.document_title = st.text(3);
    s.model_path = st.text(4);
    s.model_fingerprint = st.text(5);
    s.created_at = st.int64(6);
    s.updated_at = st.int64(7);
    s.n_messages = st.int64(8);
    return s;
}

} // namespace

int64_t session_store::create_session(const std::string &name, int64_t document_id, const std::string &model_path,
                                      const std::string &model_fingerprint) {
    const std::string what = "creating the session '" + name + "'";
    transaction t(db_, what, path_);
    {
        statement st(db_, "SELECT 1 FROM documents WHERE id = ?", path_);
        st.bind(1, document_id);
        if (!st.step(what))
            throw store_error(store_error::kind::not_found, what + " failed: no document " + std::to_string(document_id));
    }
    const int64_t now = sql::now_ms();
    statement st(db_,
                 std::string("INSERT INTO sessions (name, document_id, model_path, model_fingerprint, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ") + next_update_time + ")",
                 path_);
    st.bind(1, name).bind(2, document_id).bind(3, model_path).bind(4, model_fingerprint).bind(5, now).bind(6, now);
    st.run(what);
    const int64_t id = sqlite3_last_insert_rowid(db_);
    t.commit();
    return id;
}

void session_store::rename_session(int64_t session_id, const std::string &name) {
    const std::string what = "renaming a session";
    transaction t(db_, what, path_);
    statement st(db_, std::string("UPDATE sessions SET name = ?, updated_at = ") + next_update_time + " WHERE id = ?", path_);
    st.bind(1, name).bind(2, sql::now_ms()).bind(3, session_id).run(what);
    if (sqlite3_changes(db_) != 1)
        throw store_error(store_error::kind::not_found, "no session " + std::to_string(session_id) + " to rename");
    t.commit();
}

void session_store::delete_session(int64_t session_id) {
    const std::string what = "deleting a session";
    std::string snapshot_file;
    {
        transaction t(db_, what, path_);
        {
            statement st(db_, "SELECT path FROM engine_snapshots WHERE session_id = ?", path_);
            st.bind(1, session_id);
            if (st.step(what)) snapshot_file = st.text(0);
        }
        statement st(db_, "DELETE FROM sessions WHERE id = ?", path_);
        st.bind(1, session_id).run(what);
        if (sqlite3_changes(db_) != 1)
            throw store_error(store_error::kind::not_found, "no session " + std::to_string(session_id) + " to delete");
        t.commit();
    }
    // After the commit: a crash in between leaves a stray file, never a row without its file.
    remove_snapshot_file(snapshot_file);
}

void session_store::set_session_model(int64_t session_id, const std::string &model_path,
                                      const std::string &model_fingerprint) {
    const std::string what = "recording the session's model";
    transaction t(db_, what, path_);
    statement st(db_, "UPDATE sessions SET model_path = ?, model_fingerprint = ? WHERE id = ?", path_);
    st.bind(1, model_path).bind(2, model_fingerprint).bind(3, session_id).run(what);
    if (sqlite3_changes(db_) != 1)
        throw store_error(store_error::kind::not_found, "no session " + std::to_string(session_id));
    t.commit();
}

std::vector<session_info> session_store::list_sessions() {
    statement st(db_, std::string(session_query) + "ORDER BY s.updated_at DESC, s.id DESC", path_);
    std::vector<session_info> out;
    while (st.step("listing sessions")) out.push_back(read_session(st));
    return out;
}

std::optional<session_info> session_store::find_session(int64_t session_id) {
    statement st(db_, std::string(session_query) + "WHERE s.id = ?", path_);
    st.bind(1, session_id);
    if (!st.step("reading a session")) return std::nullopt;
    return read_session(st);
}

std::optional<session_info> session_store::latest_session_for_document(int64_t document_id) {
    statement st(db_, std::string(session_query) + "WHERE s.document_id = ? ORDER BY s.updated_at DESC, s.id DESC LIMIT 1",
                 path_);
    st.bind(1, document_id);
    if (!st.step("reading a session")) return std::nullopt;
    return read_session(st);
}

// ---------------------------------------------------------------- messages

int64_t session_store::append_message(int64_t session_id, const message_record &m) {
    const std::string what = "saving a message";
    transaction t(db_, what, path_);
    const int64_t now = m.created_at ? m.created_at : sql::now_ms();
    {
        statement st(db_, std::string("UPDATE sessions SET updated_at = ") + next_update_time + " WHERE id = ?", path_);
        st.bind(1, now).bind(2, session_id).run(what);
        if (sqlite3_changes(db_) != 1)
            throw store_error(store_error::kind::not_found, what + " failed: no session " + std::to_string(session_id));
    }
    statement st(db_,
                 "INSERT INTO messages (session_id, role, content, created_at, prompt_tokens, prefill_tokens, "
                 "prefill_tok_s, decode_tokens, decode_tok_s, stop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 path_);
    st.bind(1, session_id).bind(2, m.role).bind(3, m.content).bind(4, now).bind(5, m.prompt_tokens);
    st.bind(6, m.prefill_tokens).bind(7, m.prefill_tok_s).bind(8, m.decode_tokens).bind(9, m.decode_tok_s);
    st.bind(10, m.stop_reason).run(what);
    const int64_t id = sqlite3_last_insert_rowid(db_);
    if (!m.passages.empty()) {
        statement pst(db_, "INSERT OR REPLACE INTO message_passages (message_id, ordinal, begin_byte, end_byte) VALUES (?, ?, ?, ?)",
                      path_);
        for (const passage_ref &p : m.passages) {
            pst.bind(1, id).bind(2, p.ordinal).bind(3, p.begin).bind(4, p.end).run(what);
            pst.reset();
        }
    }
    t.commit();
    return id;
}

std::vector<message_record> session_store::messages(int64_t session_id) {
    const std::string what = "reading messages";
    std::vector<message_record> out;
    std::map<int64_t, size_t> index;
    {
        statement st(db_,
                     "SELECT id, role, content, created_at, prompt_tokens, prefill_tokens, prefill_tok_s, decode_tokens, "
                     "decode_tok_s, stop_reason FROM messages WHERE session_id = ? ORDER BY id",
                     path_);
        st.bind(1, session_id);
        while (st.step(what)) {
            message_record m;
            m.id = st.int64(0);
            m.session_id = session_id;
            m.role = st.text(1);
            m.content = st.text(2);
            m.created_at = st.int64(3);
            m.prompt_tokens = int32_t(st.int64(4));
            m.prefill_tokens = int32_t(st.int64(5));
            m.prefill_tok_s = st.real(6);
            m.decode_tokens = int32_t(st.int64(7));
            m.decode_tok_s = st.real(8);
            m.stop_reason = st.text(9);
            index[m.id] = out.size();
            out.push_back(std::move(m));
        }
    }
    statement st(db_,
                 "SELECT p.message_id, p.ordinal, p.begin_byte, p.end_byte FROM message_passages p "
                 "JOIN messages m ON m.id = p.message_id WHERE m.session_id = ? ORDER BY p.message_id, p.ordinal",
                 path_);
    st.bind(1, session_id);
    while (st.step(what)) {
        auto it = index.find(st.int64(0));
        if (it == index.end()) continue;
        out[it->second].passages.push_back({int32_t(st.int64(1)), st.int64(2), st.int64(3)});
    }
    return out;
}

// ---------------------------------------------------------------- statistics

// The histogram is kept as raw float64 values; every machine RecurDesk builds for is
// little-endian, and the assertion keeps it that way.
static_assert(std::endian::native == std::endian::little, "head_stats.hist blobs are little-endian float64");

void session_store::save_head_stats(int64_t session_id, int32_t window, const std::vector<head_stat> &stats) {
    const std::string what = "saving head statistics";
    transaction t(db_, what, path_);
    {
        statement st(db_, "DELETE FROM head_stats WHERE session_id = ?", path_);
        st.bind(1, session_id).run(what);
    }
    statement st(db_,
                 "INSERT INTO head_stats (session_id, layer, head, window, recency, sink, hist) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 path_);
    for (const head_stat &h : stats) {
        st.bind(1, session_id).bind(2, h.layer).bind(3, h.head).bind(4, window).bind(5, h.recency).bind(6, h.sink);
        st.bind_blob(7, h.hist.data(), h.hist.size() * sizeof(double)).run(what);
        st.reset();
    }
    t.commit();
}

std::vector<head_stat> session_store::head_stats(int64_t session_id, int32_t *window) {
    statement st(db_,
                 "SELECT layer, head, window, recency, sink, hist FROM head_stats WHERE session_id = ? ORDER BY layer, head",
                 path_);
    st.bind(1, session_id);
    std::vector<head_stat> out;
    if (window) *window = 0;
    while (st.step("reading head statistics")) {
        head_stat h;
        h.layer = int32_t(st.int64(0));
        h.head = int32_t(st.int64(1));
        if (window) *window = int32_t(st.int64(2));
        h.recency = st.real(3);
        h.sink = st.real(4);
        const std::vector<uint8_t> blob = st.blob(5);
        h.hist.resize(blob.size() / sizeof(double));
        if (!h.hist.empty()) std::memcpy(h.hist.data(), blob.data(), h.hist.size() * sizeof(double));
        out.push_back(std::move(h));
    }
    return out;
}

void session_store::add_memory_samples(int64_t session_id, int64_t message_id, const std::vector<memory_sample> &samples) {
    if (samples.empty()) return;
    const std::string what = "saving memory samples";
    transaction t(db_, what, path_);
    statement st(db_,
                 "INSERT INTO memory_samples (session_id, message_id, tokens, kv_bytes, fixed_state_bytes, "
                 "full_attention_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 path_);
    const int64_t now = sql::now_ms();
    for (const memory_sample &s : samples) {
        st.bind(1, session_id);
        if (message_id) st.bind(2, message_id);
        else st.bind_null(2);
        st.bind(3, s.tokens).bind(4, s.kv_bytes).bind(5, s.fixed_state_bytes).bind(6, s.full_attention_bytes).bind(7, now);
        st.run(what);
        st.reset();
    }
    t.commit();
}

std::vector<memory_sample> session_store::memory_samples(int64_t session_id) {
    statement st(db_,
                 "SELECT tokens, kv_bytes, fixed_state_bytes, full_attention_bytes FROM memory_samples WHERE session_id = ? "
                 "ORDER BY id",
                 path_);
    st.bind(1, session_id);
    std::vector<memory_sample> out;
    while (st.step("reading memory samples")) out.push_back({st.int64(0), st.int64(1), st.int64(2), st.int64(3)});
    return out;
}

// ---------------------------------------------------------------- snapshots

namespace {
snapshot_record read_snapshot(const statement &st) {
    snapshot_record s;
    s.session_id = st.int64(0);
    s.path = st.text(1);
    s.model_fingerprint = st.text(2);
    s.n_past = int32_t(st.int64(3));
    s.n_ctx = int32_t(st.int64(4));
    s.created_at = st.int64(5);
    return s;
}
} // namespace

void session_store::set_snapshot(const snapshot_record &s) {
    const std::string what = "recording an engine snapshot";
    transaction t(db_, what, path_);
    statement st(db_,
                 "INSERT OR REPLACE INTO engine_snapshots (session_id, path, model_fingerprint, n_past, n_ctx, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)",
                 path_);
    st.bind(1, s.session_id).bind(2, s.path).bind(3, s.model_fingerprint).bind(4, s.n_past).bind(5, s.n_ctx);
    st.bind(6, s.created_at ? s.created_at : sql::now_ms()).run(what);
    t.commit();
}

std::optional<snapshot_record> session_store::snapshot(int64_t session_id) {
    statement st(db_,
                 "SELECT session_id, path, model_fingerprint, n_past, n_ctx, created_at FROM engine_snapshots "
                 "WHERE session_id = ?",
                 path_);
    st.bind(1, session_id);
    if (!st.step("reading an engine snapshot")) return std::nullopt;
    return read_snapshot(st);
}

std::vector<snapshot_record> session_store::snapshots_for_document(int64_t document_id, const std::string &model_fingerprint) {
    statement st(db_,
                 "SELECT e.session_id, e.path, e.model_fingerprint, e.n_past, e.n_ctx, e.created_at FROM engine_snapshots e "
                 "JOIN sessions s ON s.id = e.session_id WHERE s.document_id = ? AND e.model_fingerprint = ? "
                 "ORDER BY e.created_at DESC, e.session_id DESC",
                 path_);
    st.bind(1, document_id).bind(2, model_fingerprint);
    std::vector<snapshot_record> out;
    while (st.step("reading engine snapshots")) out.push_back(read_snapshot(st));
    return out;
}

void session_store::clear_snapshot(int64_t session_id) {
    const std::string what = "removing an engine snapshot";
    std::string file;
    {
        transaction t(db_, what, path_);
        {
            statement st(db_, "SELECT path FROM engine_snapshots WHERE session_id = ?", path_);
            st.bind(1, session_id);
            if (st.step(what)) file = st.text(0);
        }
        statement st(db_, "DELETE FROM engine_snapshots WHERE session_id = ?", path_);
        st.bind(1, session_id).run(what);
        t.commit();
    }
    remove_snapshot_file(file);
}

void session_store::remove_snapshot_file(const std::string &file) const {
    if (file.empty()) return;
    // The path comes from the database, which may have been edited or damaged: remove only a
    // regular file that really lies in this store's snapshot folder, never anything else.
    std::error_code ec;
    const fs::path target = fs::weakly_canonical(fs::path(file), ec);
    if (ec) return;
    const fs::path dir = fs::weakly_canonical(fs::path(snapshot_dir()), ec);
    if (ec || target.parent_path() != dir || !fs::is_regular_file(fs::symlink_status(target, ec))) return;
    fs::remove(target, ec);
}

// ---------------------------------------------------------------- export

namespace {

std::string utc_time(int64_t ms) {
    const std::time_t t = std::time_t(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
    return buf;
}

std::string fixed1(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
}

} // namespace

std::string session_store::export_markdown(int64_t session_id) {
    const std::optional<session_info> s = find_session(session_id);
    if (!s) throw store_error(store_error::kind::not_found, "no session " + std::to_string(session_id) + " to export");
    const std::optional<document_record> d = find_document(s->document_id);
    std::string md = "# " + s->name + "\n\n";
    if (d) {
        md += "- Document: " + d->title + " (`" + d->path + "`, " + std::to_string(d->n_bytes) + " bytes";
        if (d->n_tokens >= 0) md += ", " + std::to_string(d->n_tokens) + " tokens";
        md += ")\n";
    }
    md += "- Model: `" + s->model_path + "` (fingerprint " + s->model_fingerprint + ")\n";
    md += "- Created " + utc_time(s->created_at) + ", last used " + utc_time(s->updated_at) + "\n";
    for (const message_record &m : messages(session_id)) {
        const std::string role = m.role == "user" ? "Question" : m.role == "assistant" ? "Answer" : "System";
        md += "\n## " + role + " — " + utc_time(m.created_at) + "\n\n" + m.content + "\n";
        if (m.role == "assistant") {
            md += "\n*" + std::to_string(m.prompt_tokens) + " prompt tokens (" + std::to_string(m.prefill_tokens) +
                  " read at " + fixed1(m.prefill_tok_s) + " tok/s), " + std::to_string(m.decode_tokens) +
                  " answer tokens at " + fixed1(m.decode_tok_s) + " tok/s";
            if (!m.stop_reason.empty()) md += ", stop: " + m.stop_reason;
            md += "*\n";
            if (!m.passages.empty()) {
                md += "\nPassages used:";
                for (const passage_ref &p : m.passages)
                    md += " #" + std::to_string(p.ordinal) + " (bytes " + std::to_string(p.begin) + "–" +
                          std::to_string(p.end) + ")";
                md += "\n";
            }
        }
    }
    return md;
}

} // namespace recur_app
