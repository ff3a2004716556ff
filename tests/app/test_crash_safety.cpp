// Crash safety of the document Q&A pipeline with a session store (issue 7): the process answering
// is killed with SIGKILL at random moments (loading, reading the document, generating, committing
// messages, writing the engine snapshot), 50 times; after every kill the database must pass
// `PRAGMA integrity_check` and hold every message the process reported as committed, and the
// next process must be able to continue the same session. Then a write limit (RLIMIT_FSIZE, what
// a full disk looks like to a process) while answering: a clear error or warning, nothing lost.
#include "app_test_util.h"

#include "core/ask.h"
#include "core/document_import.h"
#include "core/session_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <map>
#include <memory>
#include <random>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace recur_app;
using app_test::temp_dir;

namespace {

std::string model_path() { return app_test::shared_path("models/stories260K.gguf"); }

ask_params quick_params() {
    ask_params p;
    p.sampling.temperature = 0;
    p.max_answer_tokens = 16;
    p.n_ctx = 2048; // the whole chapter fits, so every answer can reuse or write a snapshot
    p.n_threads = 1;
    return p;
}

// A stretch of a real novel, long enough that reading it takes a noticeable share of each answer.
std::string document_text() {
    const std::string novel = app_test::read_file(app_test::shared_path("data/prideprejudice.txt"));
    return novel.substr(novel.size() / 3, 1500);
}

// What a child reports through the pipe after ask() returned: both messages are committed.
struct committed {
    int64_t user_id, assistant_id;
    int32_t question;
};

std::string question_text(int32_t q) { return "Question number " + std::to_string(q) + ": who is in the story?"; }

// The model, the ask engine and the store, with a request on a session of the document at doc_path
// (the one most recently used, or a new one).
struct answering_session {
    std::unique_ptr<recur::model> model = recur::model::load(model_path());
    ask_engine engine{*model, model_path(), quick_params()};
    session_store store;
    ask_request request;
    answering_session(const std::string &db, const std::string &doc_path, bool new_session) : store(db) {
        const document doc = import_document(doc_path);
        request.store = &store;
        request.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint(), new_session);
    }
    ask_result ask(const std::string &question) {
        request.question = question;
        return engine.ask(request);
    }
};

// Child: answers questions q0, q0+1, ... forever, reporting each commit. A new session starts from
// another session's snapshot and writes its own, so kills also land in snapshot writes.
[[noreturn]] void answer_forever(const std::string &db, const std::string &doc_path, int32_t q0, bool new_session,
                                 int report_fd) {
    try {
        answering_session s(db, doc_path, new_session);
        for (int32_t q = q0;; ++q) {
            const ask_result r = s.ask(question_text(q));
            const committed c{r.user_message_id, r.assistant_message_id, q};
            if (write(report_fd, &c, sizeof c) != sizeof c) _exit(3);
            if (q % 3 == 2) s.engine.reset(); // the next answer restarts from the snapshot on disk
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "child failed: %s\n", e.what());
        _exit(2);
    }
}

std::string integrity_of(const std::string &db) {
    sqlite3 *h = nullptr;
    std::string result = "cannot open";
    if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
        sqlite3_stmt *st = nullptr;
        if (sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            result = reinterpret_cast<const char *>(sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return result;
}

} // namespace

TEST(CrashSafety, FiftySigkillsWhileAnsweringAndSavingLoseNothingCommitted) {
    temp_dir dir;
    const std::string db = dir.file("sessions.db"), doc_path = dir.file("chapter.txt");
    app_test::write_file(doc_path, document_text());

    // Calibrate the kill times: how long one answer cycle takes on this machine (model load included).
    std::map<int64_t, int32_t> acked; // message id -> question number, for user and assistant rows
    std::mt19937 rng(20261128);
    int32_t next_question = 0;
    double cycle_ms = 0;
    const int kills = 50;
    int killed_before_first_answer = 0, killed_after_answers = 0, snapshots = 0;
    for (int round = 0; round < kills; ++round) {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        const auto started = std::chrono::steady_clock::now();
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            answer_forever(db, doc_path, next_question, round % 2 == 1, fds[1]);
        }
        close(fds[1]);
        if (round == 0) {
            // Round 0 runs three answers to learn the cycle time, then is killed like the rest.
            committed c{};
            for (int k = 0; k < 3; ++k) {
                ASSERT_EQ(read(fds[0], &c, sizeof c), ssize_t(sizeof c)) << "the first child died before answering";
                acked[c.user_id] = c.question;
                acked[c.assistant_id] = c.question;
            }
            cycle_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count() / 3;
        } else {
            // Anywhere from start-up to a few answers in: load, prefill, decode, commit, snapshot.
            // (Bounded by the measured cycle, so the test takes ~50 cycles under any build.)
            std::uniform_real_distribution<double> when(0.0, 2.5 * cycle_ms);
            usleep(useconds_t(when(rng) * 1000));
        }
        kill(pid, SIGKILL);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            << "round " << round << ": the child exited by itself (status " << status << ") instead of being killed";
        committed c{};
        int answered = 0;
        while (read(fds[0], &c, sizeof c) == ssize_t(sizeof c)) {
            acked[c.user_id] = c.question;
            acked[c.assistant_id] = c.question;
            next_question = std::max(next_question, c.question + 1);
            ++answered;
        }
        close(fds[0]);
        (answered ? killed_after_answers : killed_before_first_answer) += 1;
        next_question += 1; // the question in flight may or may not be stored; never reuse its number

        ASSERT_EQ(integrity_of(db), "ok") << "round " << round;
        session_store store(db);
        std::map<int64_t, message_record> stored;
        for (const session_info &si : store.list_sessions())
            for (const message_record &m : store.messages(si.id)) stored[m.id] = m;
        snapshots = 0;
        for (const session_info &si : store.list_sessions()) snapshots += store.snapshot(si.id) ? 1 : 0;
        for (const auto &[id, q] : acked) {
            ASSERT_TRUE(stored.count(id)) << "round " << round << ": message " << id << " was reported committed but is missing";
            if (stored[id].role == "user") EXPECT_EQ(stored[id].content, question_text(q));
            else EXPECT_EQ(stored[id].role, "assistant");
        }
    }
    std::printf("[ kills ] %d kills: %d before the child's first answer, %d after at least one; %zu messages "
                "committed and all present; %d sessions with a snapshot; one answer cycle %.0f ms\n",
                kills, killed_before_first_answer, killed_after_answers, acked.size(), snapshots, cycle_ms);
    EXPECT_GT(snapshots, 1) << "the sessions should have written engine snapshots";
    EXPECT_GT(killed_after_answers, 0) << "no kill landed after an answer: the timing is off";
}

namespace {
// Child: one question on the session under RLIMIT_FSIZE = limit; returns what happened, as text.
std::string answer_under_file_limit(const std::string &db, const std::string &doc_path, rlim_t limit,
                                    const std::string &question) {
    int fds[2];
    if (pipe(fds) != 0) return "pipe failed";
    const pid_t pid = fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {
        close(fds[0]);
        signal(SIGXFSZ, SIG_IGN); // the write then fails with EFBIG instead of killing the process
        std::string outcome;
        try {
            // A new session: it has no snapshot of its own yet, so it tries to write one.
            answering_session s(db, doc_path, true);
            struct rlimit lim {limit, limit};
            setrlimit(RLIMIT_FSIZE, &lim);
            const ask_result r = s.ask(question);
            outcome = "answered";
            for (const std::string &w : r.warnings) outcome += "; warning: " + w;
        } catch (const store_error &e) {
            outcome = std::string("store_error: ") + e.what();
        } catch (const std::exception &e) {
            outcome = std::string("error: ") + e.what();
        }
        (void)!write(fds[1], outcome.data(), outcome.size());
        _exit(0);
    }
    close(fds[1]);
    std::string outcome;
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof buf)) > 0) outcome.append(buf, size_t(got));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "crashed: status " + std::to_string(status);
    return outcome;
}
} // namespace

TEST(CrashSafety, FileSizeLimitWhileAnsweringLosesNothing) {
    // RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk makes writes
    // fail with ENOSPC: the store (its WAL) and the engine snapshot writer both meet it.
    temp_dir dir;
    const std::string db = dir.file("sessions.db"), doc_path = dir.file("chapter.txt");
    app_test::write_file(doc_path, document_text());
    {
        answering_session s(db, doc_path, false);
        ASSERT_GT(s.ask(question_text(0)).assistant_message_id, 0);
    }
    auto stored_messages = [&] { // every session's, oldest first
        session_store store(db);
        std::vector<message_record> all;
        for (const session_info &si : store.list_sessions())
            for (message_record &m : store.messages(si.id)) all.push_back(std::move(m));
        std::sort(all.begin(), all.end(), [](auto &a, auto &b) { return a.id < b.id; });
        return all;
    };
    // 4 KiB: not even one WAL frame fits, so the question itself cannot be committed. 96 KiB: the
    // messages fit, the engine snapshot (hundreds of KiB) does not.
    for (rlim_t limit : {rlim_t(4096), rlim_t(96 << 10)}) {
        const auto before = stored_messages();
        const std::string q = question_text(int32_t(limit));
        const std::string outcome = answer_under_file_limit(db, doc_path, limit, q);
        std::printf("[ fsize %llu ] %s\n", (unsigned long long)limit, outcome.c_str());
        ASSERT_EQ(outcome.rfind("crashed", 0), std::string::npos) << outcome;
        EXPECT_EQ(integrity_of(db), "ok");
        const auto after = stored_messages();
        ASSERT_GE(after.size(), before.size());
        for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i].content, before[i].content) << "message " << i;
        if (outcome.rfind("answered", 0) == 0) {
            // Answered: both new messages must be there, and a failed snapshot must have been said.
            ASSERT_EQ(after.size(), before.size() + 2) << outcome;
            EXPECT_EQ(after[before.size()].content, q);
            EXPECT_NE(outcome.find("engine snapshot not saved"), std::string::npos)
                << "the snapshot cannot fit; say so: " << outcome;
        } else {
            // Refused: a store_error naming the database; nothing half-written.
            EXPECT_EQ(outcome.rfind("store_error: ", 0), 0u) << outcome;
            EXPECT_NE(outcome.find(db), std::string::npos) << "the message should name the database: " << outcome;
            EXPECT_LE(after.size(), before.size() + 1) << outcome;
        }
        if (limit == 4096) {
            EXPECT_EQ(outcome.rfind("store_error: ", 0), 0u) << outcome;
            EXPECT_NE(outcome.find("could not write to the disk"), std::string::npos) << "say why the write failed: " << outcome;
        }
    }
}
