#pragma once
// Document question answering, the pipeline behind both `recur ask` and the desktop app's
// EngineWorker:
//
//   question ─> prompt: system (instructions + the whole document, or the passages most relevant
//               to the question when the document does not fit) + earlier turns + question
//            ─> reuse: the longest prefix of that prompt already in the engine — the in-memory
//               context, else this session's snapshot, else another session's snapshot of the same
//               document and model — so a document is read once, ever
//            ─> prefill the rest (progress, memory samples, head statistics, cancellable)
//            ─> decode, streaming UTF-8 pieces (cancellable)
//            ─> store: question and answer with timings, memory samples, head statistics, and a
//               fresh engine snapshot of the conversation
//
// Prompt decisions:
//  * The document goes into the system message, first, so the prefix that is reused between
//    questions (and sessions) is the document itself.
//  * Whole-document mode keeps earlier complete question/answer turns of the session, dropping the
//    oldest when they do not fit. Passage mode sends each question alone with its own passages
//    (the passages change with the question, so earlier turns would crowd them out).
//  * Text from the document and the user is tokenized with special-token parsing on (the chat
//    markers must become tokens), so any control-token spelling inside it (say "<|im_end|>" or
//    "</s>" in a document) is first broken with a zero-width space: a document cannot end a turn.
//
// Threading: an ask_engine is used by one thread (the GUI's worker thread); all callbacks run on
// that thread, synchronously, inside ask(). Cancel from another thread through the atomic flag:
// it is checked in the engine's progress callback during prefill and between decode steps.
#include "core/document_import.h"
#include "core/inference_session.h"
#include "core/passage_index.h"
#include "core/session_store.h"

#include "recur/model.h"
#include "recur/sampling.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace recur_app {

struct ask_params {
    int32_t n_ctx = 0;        // context tokens; 0: min(model's training context, 4096)
    int32_t n_batch = 256;    // prefill batch
    int32_t n_threads = 0;    // 0: all cores
    // cpu, cuda or auto (inference_session.h): the device the answering context lives on.
    device_request device = device_request::cpu;
    recur::tensor_type kv_type = recur::tensor_type::F16;
    int32_t max_answer_tokens = 256; // decode limit, also reserved in the context for the answer
    recur::sampling_params sampling = default_sampling();
    int32_t recency_window = 32;     // k of the head statistics gathered while reading; 0: off
    bool save_snapshots = true;      // write an engine snapshot after each answer (needs a store)
    std::string system_prompt;       // empty: default_system_prompt()
    split_params split;              // passage sizes for long documents
    int32_t memory_samples_per_prefill = 64; // at most this many samples while reading

    // Low temperature: answers should follow the document, not wander.
    static recur::sampling_params default_sampling() {
        recur::sampling_params s;
        s.temperature = 0.2f;
        s.repeat_penalty = 1.1f;
        return s;
    }
};

// "Answer from the document. ..." — the instructions placed before the document.
const std::string &default_system_prompt();

// How a document relates to the context, decided before anything is read.
struct ask_plan {
    int32_t n_ctx = 0;
    int32_t document_tokens = 0;   // the document alone, with this model's tokenizer
    bool whole_document = false;   // the document (with instructions, question and answer room) fits
    int32_t passage_budget = 0;    // tokens for passages when !whole_document (0 otherwise)
    int32_t passages_total = 0;    // passages in the document's index (0 when whole_document)
    double fraction_in_context = 0; // share of the document's tokens that fit (1 when whole)
    recur::memory_report memory;   // recur::context::plan at n_ctx, before allocating
};

// Where the prompt's already-evaluated prefix came from.
enum class reuse_source {
    none,     // read from the start
    context,  // the engine's in-memory context (same process, earlier question)
    snapshot, // an engine state file (this or another session of the same document and model)
};
const char *reuse_source_name(reuse_source r); // "none", "context", "snapshot"

struct ask_request {
    std::string question;
    // With a store: the session to continue (its document is used); the question, the answer, the
    // statistics and the snapshot are recorded there.
    session_store *store = nullptr;
    int64_t session_id = 0;
    // Without a store: the document to answer from (nothing is recorded).
    const document *doc = nullptr;
};

struct ask_result {
    std::string answer;          // the generated text (whitespace-trimmed), partial if cancelled
    bool cancelled = false;      // stopped by the flag or on_token; nothing is thrown for it
    std::string stop_reason;     // "eos", "stop" (a chat stop string), "length", "context", "cancelled"
    ask_plan plan;
    std::vector<passage> passages; // the passages in the prompt (exact n_tokens), empty when whole
    int32_t prompt_tokens = 0;   // tokens of the prompt
    int32_t reused_tokens = 0;   // of which already in the engine (reuse_source)
    int32_t prefill_tokens = 0;  // of which evaluated now (prompt_tokens - reused_tokens)
    int32_t decode_tokens = 0;
    double prefill_s = 0, decode_s = 0;
    double prefill_tok_s = 0, decode_tok_s = 0; // prefill_tokens / prefill_s (0 when nothing read)
    reuse_source reused_from = reuse_source::none;
    recur::memory_report memory; // engine memory after the answer
    int64_t session_id = 0, user_message_id = 0, assistant_message_id = 0; // 0 without a store
    std::string snapshot_path;   // written after this answer, "" if none
    std::vector<std::string> warnings; // non-fatal problems (a snapshot that would not load, ...)
};

struct ask_callbacks {
    // Once, before reading: whether the document fits and how much of it does.
    std::function<void(const ask_plan &)> on_plan;
    // During prefill: tokens of this prefill done / total (reused tokens not included).
    std::function<void(int64_t done, int64_t total)> on_progress;
    // Memory after `tokens` tokens in the context: during prefill (at most
    // memory_samples_per_prefill), after prefill, and every 16 decoded tokens.
    std::function<void(const memory_sample &)> on_memory;
    // After a prefill that read the document: per-head recency statistics.
    std::function<void(const std::vector<head_stat> &, int32_t window)> on_head_stats;
    // Streamed answer text: always whole UTF-8 characters, never part of a chat stop string.
    // Return false to stop (like the cancel flag).
    std::function<bool(std::string_view piece)> on_token;
    // Checked in the engine's progress callback and between decode steps (may be null).
    const std::atomic<bool> *cancel = nullptr;
};

class ask_engine {
  public:
    // `model` must outlive the engine. model_path is what sessions record. The context (KV cache)
    // is allocated here, at params.n_ctx. Throws recur::error.
    ask_engine(const recur::model &model, std::string model_path, const ask_params &params = {});
    ~ask_engine();
    ask_engine(const ask_engine &) = delete;
    ask_engine &operator=(const ask_engine &) = delete;

    const ask_params &params() const { return params_; }
    int32_t n_ctx() const;
    int threads() const; // worker threads the engine uses
    const recur::model &model() const { return model_; }
    std::string model_fingerprint() const; // fingerprint_hex of the model
    // Engine memory now (for a status bar).
    recur::memory_report memory() const;
    // The session answering: its device, the auto-fallback notice, the GPU's memory plan.
    const inference_session &session() const;

    // Tokens of `text` with this model's tokenizer (no BOS), for budgets and statistics.
    int32_t count_tokens(std::string_view text) const;

    // Whether a document of this text fits, and the memory plan (for the "this document needs X;
    // N tokens fit" message before reading). `document_tokens` < 0: counted here.
    ask_plan plan(std::string_view document_text, int32_t document_tokens = -1) const;

    // Answers one question (see the top of this file). Throws recur::error (import_error,
    // store_error, recur::error from the engine) for failures; cancellation is a normal result.
    ask_result ask(const ask_request &req, const ask_callbacks &cb = {});

    // Forgets the in-memory context (the next question reuses a snapshot or reads again).
    void reset();

  private:
    struct impl;
    const recur::model &model_;
    std::string model_path_;
    ask_params params_;
    std::unique_ptr<impl> impl_;
};

// Finds or creates the session for asking about `doc` with a store: the document is added (or
// found by hash); unless new_session, the most recently used session on it is continued.
// The session is named after the document's title. Returns the session id.
int64_t session_for_document(session_store &store, const document &doc, const std::string &model_path,
                             const std::string &model_fingerprint, bool new_session = false);

// Per-head statistics from the engine's recency gathering (heads with no query positions yet,
// i.e. a text shorter than the window, give an empty vector).
std::vector<head_stat> head_stats_from(const recur::recency_stats &r);

// Memory this machine has available for a context now (Linux: MemAvailable), 0 if unknown.
size_t available_memory_bytes();
// The largest n_ctx (a multiple of 256, up to the model's training context) whose planned
// weights + KV + recurrent + scratch bytes fit in `budget_bytes`; 0 if none does.
int32_t max_context_for_memory(const recur::model &m, const recur::context_params &base, size_t budget_bytes);

} // namespace recur_app
