// The session database: schema and migrations from every earlier version, durability under
// SIGKILL, and clear errors for locked, damaged, read-only and full databases.
#include "app_test_util.h"

#include "core/document_import.h"
#include "core/session_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <random>
#include <set>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace recur_app;
using app_test::temp_dir;

namespace {

// A raw connection, independent of the store, for checking what is on disk.
class raw_db {
  public:
    explicit raw_db(const std::string &path, int flags = SQLITE_OPEN_READWRITE) {
        if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) ADD_FAILURE() << sqlite3_errmsg(db_);
    }
    ~raw_db() { sqlite3_close(db_); }
    // First column of each row as text; "ERROR: ..." when the statement fails.
    std::vector<std::string> rows(const std::string &sql) {
        std::vector<std::string> out;
        sqlite3_stmt *st = nullptr;
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
            return {std::string("ERROR: ") + sqlite3_errmsg(db_)};
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            std::string row;
            for (int c = 0; c < sqlite3_column_count(st); ++c) {
                const auto *t = reinterpret_cast<const char *>(sqlite3_column_text(st, c));
                if (c) row += '|'; // appended separately: GCC 12 warns (-Wrestrict) on a temporary's operator+
                row += t ? t : "NULL";
            }
            out.push_back(row);
        }
        if (rc != SQLITE_DONE) out.push_back(std::string("ERROR: ") + sqlite3_errmsg(db_));
        sqlite3_finalize(st);
        return out;
    }
    std::string one(const std::string &sql) {
        auto r = rows(sql);
        return r.empty() ? "" : r[0];
    }
    int exec(const std::string &sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
    sqlite3 *get() { return db_; }

  private:
    sqlite3 *db_ = nullptr;
};

store_error::kind open_error(const std::string &path, session_store::open_options opt = {}) {
    try {
        session_store s(path, opt);
    } catch (const store_error &e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message should name the file: " << e.what();
        return e.reason();
    }
    ADD_FAILURE() << "opening " << path << " succeeded";
    return store_error::kind::other;
}

document make_doc(const std::string &text, const std::string &name = "doc.txt") { return import_bytes(text, name); }

// The store's schema as SQLite records it, for comparing databases.
std::vector<std::string> schema_of(const std::string &path) {
    raw_db db(path);
    return db.rows("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name");
}

int migration_files() {
    int n = 0;
    for (auto &e : std::filesystem::directory_iterator(std::string(RECUR_SOURCE_DIR) + "/resources/migrations"))
        if (e.path().extension() == ".sql") ++n;
    return n;
}

} // namespace

TEST(SessionStore, FreshDatabaseSettings) {
    temp_dir dir;
    const std::string path = dir.file("sub/folder/sessions.db"); // folders are created
    { session_store s(path); }
    EXPECT_EQ(session_store::schema_version(), migration_files());
    raw_db db(path);
    EXPECT_EQ(db.one("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(db.one("PRAGMA user_version"), std::to_string(migration_files()));
    EXPECT_EQ(db.one("PRAGMA integrity_check"), "ok");
    for (const char *table : {"documents", "sessions", "messages", "passages", "passage_fts", "head_stats",
                              "memory_samples", "engine_snapshots"})
        EXPECT_EQ(db.one(std::string("SELECT count(*) FROM sqlite_master WHERE name = '") + table + "'"), "1") << table;
}

TEST(SessionStore, DocumentsSessionsMessagesRoundTrip) {
    temp_dir dir;
    session_store s(dir.file("s.db"));
    const document d = make_doc("The quick brown fox.\n\nJumps over the lazy dog.\n", "fox.txt");
    const int64_t doc_id = s.add_document(d);
    EXPECT_EQ(s.add_document(d), doc_id) << "same text must dedupe";
    EXPECT_NE(s.add_document(make_doc("Another text.")), doc_id);
    EXPECT_EQ(s.document_text(doc_id), d.text);
    ASSERT_TRUE(s.find_document_by_hash(d.sha256));
    EXPECT_EQ(s.find_document_by_hash(d.sha256)->id, doc_id);
    s.set_document_tokens(doc_id, 17, "00000000000000ab");
    EXPECT_EQ(s.find_document(doc_id)->n_tokens, 17);
    EXPECT_EQ(s.find_document(doc_id)->n_tokens_model, "00000000000000ab");

    const int64_t a = s.create_session("first", doc_id, "/m.gguf", "0123456789abcdef");
    const int64_t b = s.create_session("second", doc_id, "/m.gguf", "0123456789abcdef");
    EXPECT_THROW(s.create_session("x", 9999, "", ""), store_error);

    message_record q;
    q.role = "user";
    q.content = "What jumps?";
    const int64_t qid = s.append_message(a, q);
    message_record ans;
    ans.role = "assistant";
    ans.content = "The fox — \xC3\xA9t\xC3\xA9.";
    ans.prompt_tokens = 120, ans.prefill_tokens = 100, ans.prefill_tok_s = 1234.5;
    ans.decode_tokens = 9, ans.decode_tok_s = 55.5, ans.stop_reason = "eos";
    ans.passages = {{0, 0, 20}, {3, 40, 64}};
    const int64_t aid = s.append_message(a, ans);
    EXPECT_GT(aid, qid);
    EXPECT_THROW(s.append_message(424242, q), store_error);

    const auto msgs = s.messages(a);
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(msgs[0].role, "user");
    EXPECT_EQ(msgs[1].content, ans.content);
    EXPECT_EQ(msgs[1].prompt_tokens, 120);
    EXPECT_EQ(msgs[1].prefill_tokens, 100);
    EXPECT_DOUBLE_EQ(msgs[1].prefill_tok_s, 1234.5);
    EXPECT_EQ(msgs[1].decode_tokens, 9);
    EXPECT_EQ(msgs[1].stop_reason, "eos");
    ASSERT_EQ(msgs[1].passages.size(), 2u);
    EXPECT_EQ(msgs[1].passages[1].ordinal, 3);
    EXPECT_EQ(msgs[1].passages[1].end, 64);

    // The session with the newest message comes first.
    auto list = s.list_sessions();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].id, a);
    EXPECT_EQ(list[0].n_messages, 2);
    EXPECT_EQ(list[0].document_title, "fox");
    EXPECT_EQ(s.latest_session_for_document(doc_id)->id, a);

    s.rename_session(b, "renamed");
    EXPECT_EQ(s.find_session(b)->name, "renamed");
    EXPECT_THROW(s.rename_session(31337, "x"), store_error);

    const std::string md = s.export_markdown(a);
    EXPECT_NE(md.find("# first"), std::string::npos) << md;
    EXPECT_NE(md.find("What jumps?"), std::string::npos);
    EXPECT_NE(md.find(ans.content), std::string::npos);
    EXPECT_NE(md.find("1234.5 tok/s"), std::string::npos) << md;
    EXPECT_NE(md.find("#3"), std::string::npos) << md;
}

TEST(SessionStore, StatisticsSnapshotsAndCascadingDelete) {
    temp_dir dir;
    session_store s(dir.file("s.db"));
    const int64_t doc = s.add_document(make_doc("text"));
    const int64_t sid = s.create_session("s", doc, "/m", "00000000000000aa");
    std::vector<head_stat> stats = {{0, 0, 0.75, 0.125, {0.5, 0.25, 0.125, 0.125}}, {1, 3, 0.5, 0.0, {1.0}}};
    s.save_head_stats(sid, 32, stats);
    int32_t window = 0;
    const auto back = s.head_stats(sid, &window);
    EXPECT_EQ(window, 32);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[1].head, 3);
    EXPECT_DOUBLE_EQ(back[0].recency, 0.75);
    EXPECT_EQ(back[0].hist, stats[0].hist);
    s.save_head_stats(sid, 16, {stats[1]}); // replaces
    EXPECT_EQ(s.head_stats(sid).size(), 1u);

    s.add_memory_samples(sid, 0, {{10, 100, 5, 200}, {20, 200, 5, 400}});
    const auto mem = s.memory_samples(sid);
    ASSERT_EQ(mem.size(), 2u);
    EXPECT_EQ(mem[1].full_attention_bytes, 400);

    std::filesystem::create_directories(s.snapshot_dir());
    const std::string snap = s.snapshot_dir() + "/snap.state";
    app_test::write_file(snap, "state bytes");
    s.set_snapshot({sid, snap, "00000000000000aa", 123, 2048, 0});
    ASSERT_TRUE(s.snapshot(sid));
    EXPECT_EQ(s.snapshot(sid)->n_past, 123);
    EXPECT_EQ(s.snapshots_for_document(doc, "00000000000000aa").size(), 1u);
    EXPECT_TRUE(s.snapshots_for_document(doc, "00000000000000bb").empty());

    message_record m;
    m.role = "user";
    m.content = "q";
    s.append_message(sid, m);
    s.delete_session(sid);
    EXPECT_FALSE(s.find_session(sid));
    EXPECT_TRUE(s.messages(sid).empty());
    EXPECT_TRUE(s.head_stats(sid).empty());
    EXPECT_TRUE(s.memory_samples(sid).empty());
    EXPECT_FALSE(s.snapshot(sid));
    EXPECT_FALSE(std::filesystem::exists(snap)) << "the snapshot file should go with its session";
    EXPECT_TRUE(s.find_document(doc)) << "documents outlive sessions";
    raw_db db(s.path());
    EXPECT_EQ(db.rows("PRAGMA foreign_key_check").size(), 0u);
}

TEST(SessionStore, SnapshotPathOutsideTheSnapshotFolderIsNeverDeleted) {
    // A damaged or edited database may name any file as a session's snapshot; deleting the
    // session must not delete that file.
    temp_dir dir;
    session_store s(dir.file("s.db"));
    const int64_t doc = s.add_document(make_doc("text"));
    const std::string precious = dir.file("precious.txt");
    app_test::write_file(precious, "user's file");
    std::filesystem::create_directories(s.snapshot_dir());
    const std::string sneaky = s.snapshot_dir() + "/../precious.txt";
    for (const std::string &target : {precious, sneaky}) {
        const int64_t sid = s.create_session("s", doc, "/m", "00000000000000aa");
        s.set_snapshot({sid, target, "00000000000000aa", 1, 16, 0});
        s.delete_session(sid);
        EXPECT_TRUE(std::filesystem::exists(precious)) << target;
    }
    const int64_t sid = s.create_session("s", doc, "/m", "00000000000000aa");
    s.set_snapshot({sid, precious, "00000000000000aa", 1, 16, 0});
    s.clear_snapshot(sid);
    EXPECT_TRUE(std::filesystem::exists(precious));
    EXPECT_FALSE(s.snapshot(sid));
}

// ---------------------------------------------------------------- migrations

class Migration : public ::testing::TestWithParam<int> {};

// Builds a database at version `v` with the migrations as they were (applied here, by hand), puts
// data in every table that version has, then lets the store upgrade it.
TEST_P(Migration, FromEarlierVersion) {
    const int v = GetParam();
    const auto &migs = detail::migrations();
    ASSERT_LE(v, int(migs.size()));
    temp_dir dir;
    const std::string path = dir.file("old.db");
    {
        raw_db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        for (int i = 0; i < v; ++i) ASSERT_EQ(db.exec(migs[size_t(i)].sql), SQLITE_OK) << migs[size_t(i)].name;
        ASSERT_EQ(db.exec("PRAGMA user_version = " + std::to_string(v)), SQLITE_OK);
        if (v >= 1) {
            ASSERT_EQ(db.exec("INSERT INTO documents (id, sha256, title, path, format, text, n_bytes, added_at) "
                              "VALUES (1, 'h', 'Old doc', '/old.txt', 'txt', 'Old text about letters.', 23, 1000);"
                              "INSERT INTO sessions VALUES (1, 'old session', 1, '/m.gguf', '00000000000000ff', 1000, 2000);"
                              "INSERT INTO messages (session_id, role, content, created_at) VALUES (1, 'user', 'old question', 1500);"),
                      SQLITE_OK);
        }
        if (v >= 2) {
            ASSERT_EQ(db.exec("INSERT INTO passages (document_id, ordinal, begin_byte, end_byte, est_tokens, text) "
                              "VALUES (1, 0, 0, 23, 6, 'Old text about letters.');"
                              "INSERT INTO passage_sets VALUES (1, 200, 400, 1);"),
                      SQLITE_OK);
        }
        if (v >= 3) {
            ASSERT_EQ(db.exec("INSERT INTO head_stats VALUES (1, 0, 0, 32, 0.5, 0.1, x'000000000000F03F');"), SQLITE_OK);
            // Columns named as this version names them (version 5 renames recurrent_bytes).
            const std::string fixed = v >= 5 ? "fixed_state_bytes" : "recurrent_bytes";
            ASSERT_EQ(db.exec("INSERT INTO memory_samples (session_id, message_id, tokens, kv_bytes, " + fixed +
                              ", full_attention_bytes, created_at) VALUES (1, NULL, 100, 2000, 777, 4000, 1500);"),
                      SQLITE_OK);
        }
    }
    {
        session_store s(path);
        ASSERT_EQ(session_store::schema_version(), int(migs.size()));
        if (v >= 1) {
            const auto msgs = s.messages(1);
            ASSERT_EQ(msgs.size(), 1u);
            EXPECT_EQ(msgs[0].content, "old question");
            EXPECT_EQ(s.find_session(1)->name, "old session");
            EXPECT_EQ(s.document_text(1), "Old text about letters.");
        }
        if (v >= 3) {
            const auto hs = s.head_stats(1);
            ASSERT_EQ(hs.size(), 1u);
            EXPECT_EQ(hs[0].hist, std::vector<double>{1.0});
            const auto mem = s.memory_samples(1);
            ASSERT_EQ(mem.size(), 1u);
            EXPECT_EQ(mem[0].tokens, 100);
            EXPECT_EQ(mem[0].kv_bytes, 2000);
            EXPECT_EQ(mem[0].fixed_state_bytes, 777) << "the fixed-state column keeps its values through the rename";
            EXPECT_EQ(mem[0].full_attention_bytes, 4000);
        }
        // Everything the newest schema has works on the upgraded file.
        const int64_t doc = s.add_document(make_doc("New document text."));
        const int64_t sid = s.create_session("new", doc, "/m.gguf", "00000000000000ff");
        message_record m;
        m.role = "assistant";
        m.content = "new answer";
        m.passages = {{0, 0, 5}};
        s.append_message(sid, m);
        s.save_head_stats(sid, 32, {{0, 1, 0.5, 0.5, {0.5, 0.5}}});
        s.add_memory_samples(sid, 0, {{1, 2, 3, 4}});
        s.set_snapshot({sid, dir.file("x.state"), "00000000000000ff", 10, 64, 0});
        EXPECT_EQ(s.messages(sid).size(), 1u);
    }
    raw_db db(path);
    EXPECT_EQ(db.one("PRAGMA user_version"), std::to_string(migs.size()));
    EXPECT_EQ(db.one("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(db.rows("PRAGMA foreign_key_check").size(), 0u);
    if (v >= 2) {
        EXPECT_EQ(db.one("SELECT count(*) FROM passage_fts WHERE passage_fts MATCH 'letter'"), "1");
    }
    // An upgraded database has exactly the schema of a new one.
    const std::string fresh = dir.file("fresh.db");
    { session_store s(fresh); }
    EXPECT_EQ(schema_of(path), schema_of(fresh));
}

INSTANTIATE_TEST_SUITE_P(EveryVersion, Migration, ::testing::Range(0, session_store::schema_version()),
                         [](const ::testing::TestParamInfo<int> &p) { return "v" + std::to_string(p.param); });

TEST(SessionStore, FailedMigrationKeepsThePreviousVersion) {
    const auto &migs = detail::migrations();
    ASSERT_GE(migs.size(), 2u);
    temp_dir dir;
    const std::string path = dir.file("v1.db");
    {
        raw_db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        ASSERT_EQ(db.exec(migs[0].sql), SQLITE_OK);
        ASSERT_EQ(db.exec("PRAGMA user_version = 1; CREATE TABLE message_passages (x);"
                          "INSERT INTO documents VALUES (1, 'h', 't', '/p', 'txt', 'text', 4, -1, '', 0);"),
                  SQLITE_OK); // a table in migration 2's way makes it fail halfway
    }
    EXPECT_EQ(open_error(path), store_error::kind::other);
    raw_db db(path);
    EXPECT_EQ(db.one("PRAGMA user_version"), "1");
    EXPECT_EQ(db.one("SELECT count(*) FROM sqlite_master WHERE name = 'passages'"), "0") << "migration 2 half applied";
    EXPECT_EQ(db.one("SELECT text FROM documents WHERE id = 1"), "text");
}

TEST(SessionStore, NewerSchemaIsRefused) {
    temp_dir dir;
    const std::string path = dir.file("future.db");
    { session_store s(path); }
    {
        raw_db db(path);
        db.exec("PRAGMA user_version = 999");
    }
    EXPECT_EQ(open_error(path), store_error::kind::too_new);
}

// ---------------------------------------------------------------- durability

// A child process appends messages as fast as it can and reports each one after append_message
// returned; the parent kills it with SIGKILL at some point. Every reported message must be in
// the database, and the database must be intact.
TEST(SessionStore, SigkillDuringWritesLosesNothingCommitted) {
    temp_dir dir;
    const std::string path = dir.file("kill.db");
    int64_t sid;
    {
        session_store s(path);
        sid = s.create_session("kill", s.add_document(make_doc("doc")), "/m", "00000000000000aa");
    }
    std::set<int32_t> acked;
    std::mt19937 rng(1234);
    int32_t next = 0;
    for (int round = 0; round < 3; ++round) {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        const int32_t first = next;
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            try {
                session_store s(path);
                std::mt19937 r{uint32_t(first)};
                for (int32_t i = first;; ++i) {
                    message_record m;
                    m.role = i % 2 ? "assistant" : "user";
                    m.content = "message " + std::to_string(i) + " " + std::string(r() % 3000, 'x');
                    s.append_message(sid, m);
                    if (write(fds[1], &i, sizeof i) != sizeof i) _exit(3);
                }
            } catch (...) {
                _exit(2);
            }
        }
        close(fds[1]);
        const int kill_after = 20 + int(rng() % 60);
        int32_t i;
        int got = 0;
        while (got < kill_after && read(fds[0], &i, sizeof i) == sizeof i) acked.insert(i), ++got;
        ASSERT_EQ(got, kill_after) << "the writer died early";
        usleep(rng() % 3000); // land the kill at varying points of a write
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read(fds[0], &i, sizeof i) == sizeof i) acked.insert(i); // reported before it died
        close(fds[0]);
        next = *acked.rbegin() + 100; // later rounds use fresh numbers

        {
            raw_db db(path);
            EXPECT_EQ(db.one("PRAGMA integrity_check"), "ok") << "round " << round;
        }
        session_store s(path);
        std::set<int32_t> stored;
        for (const message_record &m : s.messages(sid)) stored.insert(std::stoi(m.content.substr(8)));
        for (int32_t a : acked) ASSERT_TRUE(stored.count(a)) << "message " << a << " was acknowledged but is missing";
    }
}

// ---------------------------------------------------------------- error cases

TEST(SessionStore, LockedDatabaseTimesOutWithAClearError) {
    temp_dir dir;
    const std::string path = dir.file("locked.db");
    session_store::open_options opt;
    opt.busy_timeout_ms = 300;
    session_store s(path, opt);
    const int64_t sid = s.create_session("l", s.add_document(make_doc("doc")), "/m", "00000000000000aa");
    message_record m;
    m.role = "user";
    m.content = "before the lock";
    s.append_message(sid, m);

    raw_db other(path);
    ASSERT_EQ(other.exec("BEGIN EXCLUSIVE"), SQLITE_OK); // another program holds the write lock
    m.content = "during the lock";
    const auto t0 = std::chrono::steady_clock::now();
    try {
        s.append_message(sid, m);
        FAIL() << "append succeeded while the database was locked";
    } catch (const store_error &e) {
        EXPECT_EQ(e.reason(), store_error::kind::busy) << e.what();
        EXPECT_NE(std::string(e.what()).find("locked"), std::string::npos) << e.what();
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(waited, 0.25) << "the busy timeout was not honoured";
    EXPECT_LT(waited, 5.0);
    ASSERT_EQ(other.exec("ROLLBACK"), SQLITE_OK);
    m.content = "after the lock";
    s.append_message(sid, m);
    const auto msgs = s.messages(sid);
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(msgs[0].content, "before the lock");
    EXPECT_EQ(msgs[1].content, "after the lock");
}

TEST(SessionStore, RandomBytesAreNotADatabase) {
    temp_dir dir;
    const std::string path = dir.file("random.db");
    std::mt19937 rng(7);
    std::string junk(8192, '\0');
    for (char &c : junk) c = char(rng());
    app_test::write_file(path, junk);
    EXPECT_EQ(open_error(path), store_error::kind::corrupt);
    EXPECT_EQ(app_test::read_file(path), junk) << "a damaged file must not be modified";
}

namespace {
// A database with enough rows to span many pages, closed (so the WAL is checkpointed into it).
void fill_database(const std::string &path) {
    session_store s(path);
    const int64_t sid = s.create_session("big", s.add_document(make_doc(std::string(20000, 'd'))), "/m", "00000000000000aa");
    for (int i = 0; i < 200; ++i) {
        message_record m;
        m.role = "user";
        m.content = "message " + std::to_string(i) + std::string(500, 'm');
        s.append_message(sid, m);
    }
}
} // namespace

TEST(SessionStore, TruncatedDatabaseIsReportedCorrupt) {
    temp_dir dir;
    const std::string path = dir.file("trunc.db");
    fill_database(path);
    ASSERT_FALSE(std::filesystem::exists(path + "-wal")) << "expected a checkpointed database";
    const auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size / 2);
    EXPECT_EQ(open_error(path), store_error::kind::corrupt);
}

TEST(SessionStore, OverwrittenPagesAreReportedCorrupt) {
    temp_dir dir;
    const std::string path = dir.file("damaged.db");
    fill_database(path);
    std::string bytes = app_test::read_file(path);
    ASSERT_GT(bytes.size(), 40000u);
    std::mt19937 rng(99);
    for (size_t i = 4096 * 3; i < 4096 * 6 && i < bytes.size(); ++i) bytes[i] = char(rng()); // pages 4..6
    app_test::write_file(path, bytes);
    EXPECT_EQ(open_error(path), store_error::kind::corrupt);
    // The app can move the damaged file aside and start afresh.
    const std::string aside = session_store::move_aside(path);
    EXPECT_TRUE(std::filesystem::exists(aside));
    EXPECT_FALSE(std::filesystem::exists(path));
    session_store s(path);
    EXPECT_TRUE(s.list_sessions().empty());
}

TEST(SessionStore, ReadOnlyDatabase) {
    temp_dir dir;
    const std::string path = dir.file("ro.db");
    int64_t sid;
    {
        session_store s(path);
        sid = s.create_session("ro", s.add_document(make_doc("doc")), "/m", "00000000000000aa");
        message_record m;
        m.role = "user";
        m.content = "kept";
        s.append_message(sid, m);
    }
    session_store::open_options opt;
    opt.read_only = true;
    session_store s(path, opt);
    EXPECT_TRUE(s.read_only());
    EXPECT_EQ(s.messages(sid).size(), 1u); // reading works
    EXPECT_FALSE(s.export_markdown(sid).empty());
    message_record m;
    m.role = "user";
    m.content = "not kept";
    try {
        s.append_message(sid, m);
        FAIL() << "wrote to a read-only database";
    } catch (const store_error &e) {
        EXPECT_EQ(e.reason(), store_error::kind::read_only) << e.what();
    }
    EXPECT_EQ(s.messages(sid).size(), 1u);

    // A read-only file (permissions), where the OS enforces them (not for root).
    if (geteuid() != 0) {
        ASSERT_EQ(chmod(path.c_str(), 0444), 0);
        session_store f(path);
        EXPECT_TRUE(f.read_only());
        EXPECT_THROW(f.append_message(sid, m), store_error);
        EXPECT_EQ(f.messages(sid).size(), 1u);
    }
}

TEST(SessionStore, ReadOnlyDatabaseThatNeedsAnUpgradeIsRefused) {
    temp_dir dir;
    const std::string path = dir.file("old.db");
    {
        raw_db db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        db.exec(detail::migrations()[0].sql);
        db.exec("PRAGMA user_version = 1");
    }
    session_store::open_options opt;
    opt.read_only = true;
    EXPECT_EQ(open_error(path, opt), store_error::kind::read_only);
}

TEST(SessionStore, DiskFullLosesNothingCommitted) {
    temp_dir dir;
    session_store s(dir.file("full.db"));
    const int64_t sid = s.create_session("f", s.add_document(make_doc("doc")), "/m", "00000000000000aa");
    message_record m;
    m.role = "user";
    m.content = "small";
    s.append_message(sid, m);
    // SQLite's page limit stands in for a full disk: the write fails the same way (SQLITE_FULL).
    raw_db probe(s.path());
    const std::string pages = probe.one("PRAGMA page_count");
    ASSERT_EQ(sqlite3_exec(s.handle(), ("PRAGMA max_page_count = " + pages).c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    m.content = std::string(200000, 'x');
    try {
        s.append_message(sid, m);
        FAIL() << "a write beyond the page limit succeeded";
    } catch (const store_error &e) {
        EXPECT_EQ(e.reason(), store_error::kind::disk_full) << e.what();
    }
    ASSERT_EQ(s.messages(sid).size(), 1u);
    EXPECT_EQ(s.messages(sid)[0].content, "small");
    ASSERT_EQ(sqlite3_exec(s.handle(), "PRAGMA max_page_count = 1073741823", nullptr, nullptr, nullptr), SQLITE_OK);
    s.append_message(sid, m);
    EXPECT_EQ(s.messages(sid).size(), 2u);
    EXPECT_EQ(probe.one("PRAGMA integrity_check"), "ok");
}

TEST(SessionStore, EmptyFileIsANewDatabase) {
    // SQLite treats a zero-length file as an empty database, and so does the store.
    temp_dir dir;
    app_test::write_file(dir.file("zero.db"), "");
    session_store s(dir.file("zero.db"));
    EXPECT_TRUE(s.list_sessions().empty());
}
