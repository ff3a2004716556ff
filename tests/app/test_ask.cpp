// The document Q&A pipeline on the tiny stories260K model (fast): whole-document prompts,
// reuse of the engine state (in memory and through snapshots, so a document is read once),
// passages for documents longer than the context, cancellation, and `recur ask` end to end.
#include "app_test_util.h"

#include "core/ask.h"
#include "core/document_import.h"
#include "core/paths.h"
#include "core/session_store.h"

#include "recur/tokenizer.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <regex>
#include <sys/wait.h>

using namespace recur_app;
using app_test::temp_dir;

namespace {

const std::string tiny_doc_text =
    "Lily had a red ball. She played with the ball in the park every day.\n\n"
    "One day the ball rolled into the pond. A big frog jumped out and gave the ball back to Lily.\n\n"
    "Lily said thank you to the frog, and they became friends.\n";

class Ask : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { model_ = recur::model::load(model_path()).release(); }
    static void TearDownTestSuite() {
        delete model_;
        model_ = nullptr;
    }
    static std::string model_path() { return app_test::shared_path("models/stories260K.gguf"); }
    static const recur::model &model() { return *model_; }

    // Greedy, short answers: deterministic and fast.
    static ask_params params() {
        ask_params p;
        p.sampling.temperature = 0;
        p.max_answer_tokens = 24;
        p.n_ctx = 1024;
        p.n_threads = 2;
        return p;
    }
    // Tokens of the document alone, counted here with the tokenizer (not by the pipeline).
    static int32_t doc_tokens(const std::string &text) {
        return int32_t(model().vocab().encode(text, false, false).size());
    }

    static recur::model *model_;
};
recur::model *Ask::model_ = nullptr;

} // namespace

TEST_F(Ask, WholeDocumentWithoutAStore) {
    ask_engine engine(model(), model_path(), params());
    const document doc = import_bytes(tiny_doc_text, "lily.txt");
    ask_request req;
    req.question = "What did the frog give Lily?";
    req.doc = &doc;
    std::string streamed;
    int plans = 0;
    int64_t last_done = -1, last_total = -1;
    std::vector<memory_sample> samples;
    std::vector<head_stat> heads;
    ask_callbacks cb;
    cb.on_plan = [&](const ask_plan &p) {
        ++plans;
        EXPECT_TRUE(p.whole_document);
    };
    cb.on_progress = [&](int64_t d, int64_t t) { last_done = d, last_total = t; };
    cb.on_memory = [&](const memory_sample &m) { samples.push_back(m); };
    cb.on_head_stats = [&](const std::vector<head_stat> &h, int32_t) { heads = h; };
    cb.on_token = [&](std::string_view piece) {
        EXPECT_EQ(find_invalid_utf8(piece), std::string_view::npos);
        streamed += piece;
        return true;
    };
    const ask_result r = engine.ask(req, cb);
    EXPECT_EQ(plans, 1);
    EXPECT_TRUE(r.plan.whole_document);
    EXPECT_EQ(r.plan.document_tokens, doc_tokens(doc.text));
    EXPECT_TRUE(r.passages.empty());
    EXPECT_EQ(r.reused_from, reuse_source::none);
    EXPECT_EQ(r.reused_tokens, 0);
    EXPECT_EQ(r.prefill_tokens, r.prompt_tokens);
    EXPECT_GT(r.prompt_tokens, r.plan.document_tokens); // the document plus instructions and question
    EXPECT_EQ(last_done, last_total);
    EXPECT_EQ(last_total, r.prefill_tokens);
    EXPECT_GT(r.decode_tokens, 0);
    EXPECT_LE(r.decode_tokens, 24);
    EXPECT_GT(r.prefill_tok_s, 0);
    EXPECT_FALSE(r.answer.empty());
    EXPECT_EQ(streamed.substr(0, r.answer.size()), r.answer) << "streamed text differs from the answer";
    // Every answer token is evaluated except one cut by a stop string.
    EXPECT_EQ(r.memory.n_past, r.prompt_tokens + r.decode_tokens - (r.stop_reason == "stop" ? 1 : 0));
    ASSERT_FALSE(samples.empty());
    EXPECT_EQ(samples.back().tokens, r.memory.n_past);
    EXPECT_EQ(samples.back().kv_bytes, int64_t(r.memory.kv_used_bytes));
    // Head statistics for every layer and query head (the prompt is longer than the window).
    ASSERT_GT(r.prompt_tokens, params().recency_window);
    EXPECT_EQ(heads.size(), size_t(model().hparams().n_layer * model().hparams().n_head));
    for (const head_stat &h : heads) {
        EXPECT_GE(h.recency, 0.0);
        EXPECT_LE(h.recency, 1.0 + 1e-6);
        double mass = 0;
        for (double x : h.hist) mass += x;
        EXPECT_NEAR(mass, 1.0, 1e-3) << "layer " << h.layer << " head " << h.head;
    }

    // The same question again: everything but the last prompt token is still in the context,
    // and greedy decoding gives the same answer.
    const ask_result again = engine.ask(req);
    EXPECT_EQ(again.reused_from, reuse_source::context);
    EXPECT_EQ(again.reused_tokens, again.prompt_tokens - 1);
    EXPECT_EQ(again.prefill_tokens, 1);
    EXPECT_EQ(again.answer, r.answer);
}

TEST_F(Ask, SecondQuestionRestoresTheSnapshotInsteadOfRereading) {
    temp_dir dir;
    const std::string db = dir.file("sessions.db");
    const document doc = import_bytes(tiny_doc_text, "lily.txt");
    const int32_t n_doc = doc_tokens(doc.text);
    int64_t sid;
    ask_result first;
    {
        session_store store(db);
        ask_engine engine(model(), model_path(), params());
        sid = session_for_document(store, doc, model_path(), engine.model_fingerprint());
        ask_request req;
        req.question = "What color was the ball?";
        req.store = &store;
        req.session_id = sid;
        first = engine.ask(req);
        EXPECT_EQ(first.reused_tokens, 0);
        EXPECT_GE(first.prefill_tokens, n_doc) << "the first question reads the document";
        ASSERT_FALSE(first.snapshot_path.empty());
        EXPECT_TRUE(std::filesystem::exists(first.snapshot_path));
        const auto snap = store.snapshot(sid);
        ASSERT_TRUE(snap);
        EXPECT_EQ(snap->model_fingerprint, fingerprint_hex(model().fingerprint()));
        EXPECT_GT(snap->n_past, n_doc);
        // Recorded: question, answer with timings, statistics, samples.
        const auto msgs = store.messages(sid);
        ASSERT_EQ(msgs.size(), 2u);
        EXPECT_EQ(msgs[0].content, "What color was the ball?");
        EXPECT_EQ(msgs[1].content, first.answer);
        EXPECT_EQ(msgs[1].prefill_tokens, first.prefill_tokens);
        EXPECT_EQ(msgs[1].decode_tokens, first.decode_tokens);
        EXPECT_EQ(store.head_stats(sid).size(), size_t(model().hparams().n_layer * model().hparams().n_head));
        EXPECT_FALSE(store.memory_samples(sid).empty());
        EXPECT_EQ(store.find_document(store.find_session(sid)->document_id)->n_tokens, n_doc);
    }
    // "Tomorrow": a new process (new store connection, new engine, empty context).
    session_store store(db);
    ask_engine engine(model(), model_path(), params());
    EXPECT_EQ(session_for_document(store, doc, model_path(), engine.model_fingerprint()), sid);
    ask_request req;
    req.question = "Who gave the ball back?";
    req.store = &store;
    req.session_id = sid;
    const ask_result second = engine.ask(req);
    EXPECT_EQ(second.reused_from, reuse_source::snapshot);
    EXPECT_GT(second.reused_tokens, n_doc) << "the document should come from the snapshot";
    EXPECT_LT(second.prefill_tokens, n_doc) << "the document was read again";
    EXPECT_EQ(second.prefill_tokens + second.reused_tokens, second.prompt_tokens);
    // The second prompt holds the first turn too.
    EXPECT_GT(second.prompt_tokens, first.prompt_tokens);
    EXPECT_EQ(store.messages(sid).size(), 4u);

    // A third question in the same process continues from the in-memory context.
    req.question = "Where did the ball roll?";
    const ask_result third = engine.ask(req);
    EXPECT_EQ(third.reused_from, reuse_source::context);
    EXPECT_LT(third.prefill_tokens, n_doc);
    EXPECT_EQ(store.messages(sid).size(), 6u);
}

TEST_F(Ask, NewSessionOnTheSameDocumentStartsFromAnotherSessionsSnapshot) {
    // Greedy decoding of the same prompt must give the same answer whether the document was read
    // now or restored from the state file another session saved: a check of the restore itself.
    temp_dir dir;
    session_store store(dir.file("sessions.db"));
    const document doc = import_bytes(tiny_doc_text, "lily.txt");
    ask_request req;
    req.question = "What did Lily say to the frog?";
    req.store = &store;
    ask_result a;
    {
        ask_engine engine(model(), model_path(), params());
        req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint(), true);
        a = engine.ask(req);
        EXPECT_EQ(a.reused_tokens, 0);
    }
    ask_engine engine(model(), model_path(), params());
    req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint(), true);
    const ask_result b = engine.ask(req);
    EXPECT_EQ(b.reused_from, reuse_source::snapshot);
    // Identical prompts: the snapshot (saved where the question ends) covers all of it but the
    // assistant prefix of the template.
    const auto snap = store.snapshot(a.session_id);
    ASSERT_TRUE(snap);
    EXPECT_EQ(b.reused_tokens, snap->n_past);
    EXPECT_LT(b.prompt_tokens - b.reused_tokens, 16);
    EXPECT_EQ(b.answer, a.answer);
    EXPECT_EQ(store.list_sessions().size(), 2u);
}

TEST_F(Ask, DamagedSnapshotFallsBackToReading) {
    temp_dir dir;
    session_store store(dir.file("sessions.db"));
    const document doc = import_bytes(tiny_doc_text, "lily.txt");
    ask_request req;
    req.question = "What color was the ball?";
    req.store = &store;
    ask_result a;
    {
        ask_engine engine(model(), model_path(), params());
        req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint());
        a = engine.ask(req);
    }
    std::string bytes = app_test::read_file(a.snapshot_path);
    ASSERT_GT(bytes.size(), 100u);
    bytes[bytes.size() / 2] ^= 0x55;
    app_test::write_file(a.snapshot_path, bytes);
    ask_engine engine(model(), model_path(), params());
    req.question = "Who gave the ball back?";
    const ask_result b = engine.ask(req);
    EXPECT_EQ(b.reused_from, reuse_source::none);
    EXPECT_EQ(b.prefill_tokens, b.prompt_tokens);
    EXPECT_FALSE(b.warnings.empty());
    EXPECT_FALSE(b.answer.empty());
}

TEST_F(Ask, CancelDuringReadingKeepsTheQuestionAndResumes) {
    temp_dir dir;
    session_store store(dir.file("sessions.db"));
    const document doc = import_bytes(tiny_doc_text + tiny_doc_text + tiny_doc_text, "lily3.txt");
    ask_params p = params();
    p.n_batch = 16; // several progress callbacks during the read
    ask_engine engine(model(), model_path(), p);
    ask_request req;
    req.question = "What color was the ball?";
    req.store = &store;
    req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint());
    std::atomic<bool> cancel{false};
    ask_callbacks cb;
    cb.cancel = &cancel;
    cb.on_progress = [&](int64_t done, int64_t) {
        if (done >= 32) cancel = true; // as the GUI's stop button would, from another thread
    };
    bool tokens = false;
    cb.on_token = [&](std::string_view) { return tokens = true; };
    const ask_result r = engine.ask(req, cb);
    EXPECT_TRUE(r.cancelled);
    EXPECT_EQ(r.stop_reason, "cancelled");
    EXPECT_FALSE(tokens);
    EXPECT_GT(r.prefill_tokens, 0);
    EXPECT_LT(r.prefill_tokens, r.prompt_tokens);
    auto msgs = store.messages(req.session_id);
    ASSERT_EQ(msgs.size(), 1u); // the question, no answer
    EXPECT_EQ(msgs[0].role, "user");

    // Asking again continues the read where it stopped.
    const ask_result again = engine.ask(req);
    EXPECT_FALSE(again.cancelled);
    EXPECT_EQ(again.reused_from, reuse_source::context);
    EXPECT_EQ(again.reused_tokens, r.prefill_tokens);
    msgs = store.messages(req.session_id);
    ASSERT_EQ(msgs.size(), 3u);
    EXPECT_EQ(msgs[2].role, "assistant");
}

TEST_F(Ask, StoppingTheStreamKeepsThePartialAnswer) {
    temp_dir dir;
    session_store store(dir.file("sessions.db"));
    const document doc = import_bytes(tiny_doc_text, "lily.txt");
    ask_engine engine(model(), model_path(), params());
    ask_request req;
    req.question = "Tell me about Lily.";
    req.store = &store;
    req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint());
    int pieces = 0;
    ask_callbacks cb;
    cb.on_token = [&](std::string_view) { return ++pieces < 3; };
    const ask_result r = engine.ask(req, cb);
    EXPECT_TRUE(r.cancelled);
    EXPECT_EQ(pieces, 3);
    const auto msgs = store.messages(req.session_id);
    ASSERT_EQ(msgs.size(), 2u);
    EXPECT_EQ(msgs[1].stop_reason, "cancelled");
    EXPECT_EQ(msgs[1].content, r.answer);
}

TEST_F(Ask, LongDocumentUsesPassagesThatFitTheContext) {
    const std::string text = import_document(app_test::shared_path("data/prideprejudice.txt")).text.substr(0, 120000);
    const document doc = import_bytes(text, "pp-part.txt");
    ask_params p = params();
    p.n_ctx = 768;
    p.max_answer_tokens = 16;
    ask_engine engine(model(), model_path(), p);
    const ask_plan plan = engine.plan(doc.text);
    EXPECT_FALSE(plan.whole_document);
    EXPECT_GT(plan.passages_total, 10);
    EXPECT_LT(plan.fraction_in_context, 0.2);

    temp_dir dir;
    session_store store(dir.file("sessions.db"));
    ask_request req;
    req.question = "Who is Mr. Bingley?";
    req.store = &store;
    req.session_id = session_for_document(store, doc, model_path(), engine.model_fingerprint());
    const ask_result r = engine.ask(req);
    EXPECT_FALSE(r.plan.whole_document);
    ASSERT_FALSE(r.passages.empty());
    EXPECT_LE(r.prompt_tokens + p.max_answer_tokens, p.n_ctx);
    bool bingley = false;
    for (size_t i = 0; i < r.passages.size(); ++i) {
        const passage &x = r.passages[i];
        if (i) {
            EXPECT_LT(r.passages[i - 1].ordinal, x.ordinal);
        }
        EXPECT_EQ(x.text, text.substr(x.begin, x.end - x.begin));
        EXPECT_EQ(x.n_tokens, doc_tokens(x.text));
        bingley = bingley || x.text.find("Bingley") != std::string::npos;
    }
    EXPECT_TRUE(bingley);
    // The answer records which passages it used.
    const auto msgs = store.messages(req.session_id);
    ASSERT_EQ(msgs.size(), 2u);
    ASSERT_EQ(msgs[1].passages.size(), r.passages.size());
    EXPECT_EQ(msgs[1].passages[0].ordinal, r.passages[0].ordinal);
    EXPECT_EQ(size_t(msgs[1].passages[0].begin), r.passages[0].begin);
}

TEST_F(Ask, PlannerFindsTheLargestContextForAMemoryBudget) {
    recur::context_params cp;
    const recur::memory_report at512 = [&] {
        recur::context_params c = cp;
        c.n_ctx = 512;
        return recur::context::plan(model(), c);
    }();
    const size_t need512 = at512.weights_bytes + at512.kv_bytes + at512.recurrent_bytes + at512.scratch_bytes;
    EXPECT_EQ(max_context_for_memory(model(), cp, need512), 512);
    EXPECT_EQ(max_context_for_memory(model(), cp, need512 - 1), 256);
    EXPECT_EQ(max_context_for_memory(model(), cp, size_t(1) << 40), model().hparams().n_ctx_train);
    EXPECT_EQ(max_context_for_memory(model(), cp, 1000), 0);
    EXPECT_GT(available_memory_bytes(), 0u);
}

// ---------------------------------------------------------------- recur ask

namespace {

struct run_result {
    int status;
    std::string out;
};

run_result run(const std::string &cmd) {
    run_result r{-1, {}};
    FILE *p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string json_number(const std::string &json, const std::string &key) {
    std::smatch m;
    if (std::regex_search(json, m, std::regex("\"" + key + "\":(-?[0-9.eE+-]+)"))) return m[1];
    return "";
}

std::string json_string(const std::string &json, const std::string &key) {
    std::smatch m;
    if (std::regex_search(json, m, std::regex("\"" + key + "\":\"([^\"]*)\""))) return m[1];
    return "";
}

} // namespace

TEST_F(Ask, CliEndToEnd) {
#ifndef RECUR_CLI_PATH
    GTEST_SKIP() << "built without the recur CLI";
#else
    temp_dir dir;
    app_test::write_file(dir.file("lily.txt"), tiny_doc_text);
    const std::string base = std::string(RECUR_CLI_PATH) + " ask -m " + model_path() + " --doc " + dir.file("lily.txt") +
                             " --session " + dir.file("s.db") + " --json -n 16 --temp 0 -c 1024 -t 2";
    const run_result a = run(base + " -q 'What color was the ball?'");
    if (a.out.find("unknown command 'ask'") != std::string::npos) GTEST_SKIP() << "main does not dispatch ask yet";
    ASSERT_EQ(a.status, 0) << a.out;
    for (const char *key : {"answer", "prompt_tokens", "prefill_tok_s", "decode_tok_s", "memory", "passages"})
        EXPECT_NE(a.out.find(std::string("\"") + key + "\":"), std::string::npos) << key << " missing in " << a.out;
    const int n_doc = doc_tokens(tiny_doc_text);
    EXPECT_GE(std::stoi(json_number(a.out, "prefill_tokens")), n_doc);
    EXPECT_EQ(json_string(a.out, "reused_from"), "none");

    const run_result b = run(base + " -q 'Who gave the ball back?'");
    ASSERT_EQ(b.status, 0) << b.out;
    EXPECT_EQ(json_string(b.out, "reused_from"), "snapshot") << b.out;
    EXPECT_LT(std::stoi(json_number(b.out, "prefill_tokens")), n_doc) << b.out;
    EXPECT_GT(std::stoi(json_number(b.out, "reused_tokens")), n_doc) << b.out;
    EXPECT_EQ(json_number(a.out, "session_id"), json_number(b.out, "session_id"));
    session_store store(dir.file("s.db"));
    EXPECT_EQ(store.messages(std::stoll(json_number(b.out, "session_id"))).size(), 4u);
#endif
}

TEST_F(Ask, CliRefusesABadDocumentInOneLine) {
#ifndef RECUR_CLI_PATH
    GTEST_SKIP() << "built without the recur CLI";
#else
    temp_dir dir;
    app_test::write_file(dir.file("empty.txt"), "");
    const run_result r = run(std::string(RECUR_CLI_PATH) + " ask -m " + model_path() + " --doc " + dir.file("empty.txt") +
                             " -q 'anything?' --session " + dir.file("s.db"));
    if (r.out.find("unknown command 'ask'") != std::string::npos) GTEST_SKIP() << "main does not dispatch ask yet";
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("empty"), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
#endif
}
