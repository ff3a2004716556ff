// recur ask -m MODEL --doc FILE -q QUESTION [--session DB | --no-session] [--new-session] [--json]
//
// Imports the document, continues (or starts) the session on it in the session database, and
// answers through the same pipeline as the desktop app (app/core/ask.h): the whole document when
// it fits the context, else the passages most relevant to the question; an engine snapshot lets
// the next question skip reading the document again. Ctrl-C stops the answer cleanly (what was
// generated is kept, marked "cancelled").
#include "cmd_ask.h"

#include "cli_common.h"
#include "json_writer.h"

#include "core/ask.h"
#include "core/document_import.h"
#include "core/paths.h"
#include "core/session_store.h"

#include "recur/error.h"
#include "recur/model.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <unistd.h>

namespace {

using recur_cli::json_writer;

// --no-session and --new-session are parsed by options.cpp once it knows them; until then they
// are off, so this file builds against either version of options.h.
template <class O> bool no_session_of(const O &o) {
    if constexpr (requires { o.no_session; }) return o.no_session;
    else return false;
}
template <class O> bool new_session_of(const O &o) {
    if constexpr (requires { o.new_session; }) return o.new_session;
    else return false;
}

std::atomic<bool> g_interrupted{false};
void on_ask_sigint(int) { g_interrupted.store(true); }

// Restores the previous SIGINT handler when the command ends.
struct sigint_guard {
    using handler = void (*)(int);
    handler previous;
    sigint_guard() : previous(std::signal(SIGINT, on_ask_sigint)) {}
    ~sigint_guard() { std::signal(SIGINT, previous == SIG_ERR ? SIG_DFL : previous); }
};

bool same_sampling(const recur::sampling_params &a, const recur::sampling_params &b) {
    return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p && a.min_p == b.min_p &&
           a.repeat_penalty == b.repeat_penalty && a.repeat_last_n == b.repeat_last_n;
}

std::string mib(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
    return buf;
}

} // namespace

int cmd_ask(const recur_cli::options &o) {
    const std::string &doc_path = o.doc_path;
    const std::string &question = o.question;
    if (doc_path.empty()) throw recur::error("ask needs a document (--doc FILE)");
    if (question.empty()) throw recur::error("ask needs a question (-q QUESTION)");
    const recur_app::device_request device = recur_cli::device_request_of(o);
    recur_app::choose_device(device, recur_app::query_gpu(), "--device cuda"); // an unusable GPU: before any work
    // The document first: a bad file is reported before the model is loaded.
    const recur_app::document doc = recur_app::import_document(doc_path);
    for (const std::string &w : doc.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    const std::string model_path = o.model_path.empty() ? recur_cli::default_model_path() : o.model_path;
    std::unique_ptr<recur::model> model = recur_cli::load_model(o);

    recur_app::ask_params params;
    params.n_ctx = o.n_ctx;
    params.n_batch = o.n_batch;
    params.n_threads = o.n_threads;
    params.kv_type = o.kv_f32 ? recur::tensor_type::F32 : recur::tensor_type::F16;
    params.device = device;
    params.max_answer_tokens = o.n_predict;
    params.recency_window = o.window;
    // Without sampling flags, the pipeline's low-temperature defaults suit answering from a text
    // better than generate's; any sampling flag takes the command line's values as given.
    if (!same_sampling(o.sampling, recur::sampling_params{})) params.sampling = o.sampling;
    params.sampling.seed = o.sampling.seed;
    std::unique_ptr<recur_app::ask_engine> engine_holder;
    try {
        engine_holder = std::make_unique<recur_app::ask_engine>(*model, model_path, params);
    } catch (const recur::error &e) {
        if (device == recur_app::device_request::cuda) throw recur::error(std::string("--device cuda: ") + e.what());
        throw;
    }
    recur_app::ask_engine &engine = *engine_holder;
    if (!engine.session().notice().empty()) recur_cli::print_notice(engine.session().notice());

    std::unique_ptr<recur_app::session_store> store;
    recur_app::ask_request req;
    req.question = question;
    if (!no_session_of(o)) {
        const std::string db = o.session_db.empty() ? recur_app::default_session_db_path() : o.session_db;
        store = std::make_unique<recur_app::session_store>(db);
        req.store = store.get();
        req.session_id = recur_app::session_for_document(*store, doc, model_path, engine.model_fingerprint(),
                                                         new_session_of(o));
    } else {
        req.doc = &doc;
    }

    const bool show_progress = !o.json && isatty(STDERR_FILENO);
    recur_app::ask_callbacks cb;
    g_interrupted.store(false);
    cb.cancel = &g_interrupted;
    cb.on_plan = [&](const recur_app::ask_plan &p) {
        if (!p.whole_document)
            std::fprintf(stderr,
                         "note: '%s' has %d tokens; the context holds %d, so the answer comes from the passages most "
                         "relevant to the question (about %.2g%% of the document)\n",
                         doc.title.c_str(), p.document_tokens, p.n_ctx, 100.0 * p.fraction_in_context);
    };
    cb.on_progress = [&](int64_t done, int64_t total) {
        if (show_progress && total > 256)
            std::fprintf(stderr, "\rreading: %lld/%lld tokens", (long long)done, (long long)total);
    };
    cb.on_token = [&](std::string_view piece) {
        if (!o.json) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
        }
        return true;
    };

    recur_app::ask_result r;
    {
        sigint_guard guard;
        r = engine.ask(req, cb);
    }
    if (show_progress) std::fprintf(stderr, "\r\033[K");
    for (const std::string &w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());

    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("answer", recur_app::repair_utf8(r.answer));
        j.field("prompt_tokens", int64_t(r.prompt_tokens));
        j.field("prefill_tokens", int64_t(r.prefill_tokens));
        j.field("reused_tokens", int64_t(r.reused_tokens));
        j.field("reused_from", recur_app::reuse_source_name(r.reused_from));
        j.field("decode_tokens", int64_t(r.decode_tokens));
        j.field("prefill_tok_s", r.prefill_tok_s).field("decode_tok_s", r.decode_tok_s);
        j.field("stop", r.stop_reason);
        j.field("document_tokens", int64_t(r.plan.document_tokens));
        j.field("whole_document", r.plan.whole_document);
        j.field("fraction_in_context", r.plan.fraction_in_context);
        recur_cli::write_memory(j, r.memory);
        j.field("n_past", int64_t(r.memory.n_past)).field("kv_used_bytes", uint64_t(r.memory.kv_used_bytes));
        j.key("passages").begin_array();
        for (const recur_app::passage &p : r.passages) {
            j.begin_object();
            j.field("ordinal", int64_t(p.ordinal)).field("begin", uint64_t(p.begin)).field("end", uint64_t(p.end));
            j.field("tokens", int64_t(p.n_tokens)).field("score", p.score);
            j.end_object();
        }
        j.end_array();
        j.field("passages_total", int64_t(r.plan.passages_total));
        j.field("session_id", int64_t(r.session_id));
        j.field("session_db", store ? store->path() : std::string());
        j.field("snapshot", r.snapshot_path);
        j.field("threads", int64_t(engine.threads()));
        recur_cli::write_device(j, engine.session());
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        std::printf("\n");
        std::fprintf(stderr, "[prompt %d tokens: %d read at %.1f tok/s, %d reused (%s); answer %d tokens at %.1f tok/s; "
                             "stop: %s; KV %s (full attention %s)",
                     r.prompt_tokens, r.prefill_tokens, r.prefill_tok_s, r.reused_tokens,
                     recur_app::reuse_source_name(r.reused_from), r.decode_tokens, r.decode_tok_s, r.stop_reason.c_str(),
                     mib(double(r.memory.kv_used_bytes)).c_str(),
                     mib(double(r.memory.full_attention_kv_bytes) * r.memory.n_past / std::max(1, r.memory.n_ctx)).c_str());
        if (!r.passages.empty()) {
            std::fprintf(stderr, "; passages");
            for (const recur_app::passage &p : r.passages) std::fprintf(stderr, " %d", p.ordinal + 1);
        }
        if (store) std::fprintf(stderr, "; session %lld in %s", (long long)r.session_id, store->path().c_str());
        std::fprintf(stderr, "]\n");
    }
    return r.cancelled ? 130 : 0;
}
