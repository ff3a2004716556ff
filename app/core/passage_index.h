#pragma once
// Passages of a document and their full-text index (SQLite FTS5, BM25 ranking), used when a
// document is longer than the model's context: for each question the passages most relevant to
// it are put in the prompt (DESIGN §7).
//
// Splitting is paragraph-aware: paragraphs (text between blank lines) are packed in order into
// passages of about split_params::target_tokens; a paragraph longer than max_tokens is cut at a
// sentence end, else at a line break, else at a space, else at a UTF-8 character boundary.
// Passages cover the text in order, do not overlap, and never split a UTF-8 character; leading
// and trailing whitespace is left out of each passage's [begin, end).
//
// Sizes are estimated while splitting (a fixed bytes-per-token ratio, or a counter you give), so
// one index serves every model; select() counts the real tokens of the candidates it considers
// with the model's tokenizer, so the budget holds exactly for the passage texts.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;

namespace recur_app {

class session_store;

// Returns the number of tokens `text` takes (e.g. the model's tokenizer, without BOS).
using token_counter = std::function<int32_t(std::string_view text)>;

// About 4 bytes per token, the usual ratio of English text in BPE/SPM vocabularies; used when no
// counter is given. Never less than 1 for non-empty text.
int32_t estimate_tokens(std::string_view text);

struct split_params {
    int32_t target_tokens = 200; // pack paragraphs until a passage reaches this
    int32_t max_tokens = 400;    // never exceed (a longer paragraph is cut)
    token_counter count;         // empty: estimate_tokens
};

struct passage {
    int64_t id = 0;        // row id in the index (stable for a stored document)
    int32_t ordinal = 0;   // 0-based position in the document
    size_t begin = 0;      // byte offsets into the document text: [begin, end)
    size_t end = 0;
    int32_t n_tokens = 0;  // estimate from splitting; select() fills the exact count
    double score = 0;      // BM25 relevance from select() (larger is more relevant), else 0
    std::string text;      // document text [begin, end)
};

// Splits without indexing (pure function; the index uses it). `id` is left 0.
std::vector<passage> split_passages(std::string_view text, const split_params &p = {});

struct selection {
    std::vector<passage> passages; // in document order (ascending ordinal)
    int32_t n_tokens = 0;          // sum of passages[i].n_tokens (exact, by the counter)
    bool matched = false;          // false: no passage matched the question's words, and the
                                   // passages are the document's beginning instead
    int32_t n_candidates = 0;      // passages that matched the question
};

// The index of one document's passages. Either private and in memory (for a document not in a
// session store), or kept in the session store's database (tables `passages` and `passage_fts`,
// built once per document and reused by every session and model).
// Not thread-safe; one thread at a time (like the store it may share a connection with).
class passage_index {
  public:
    // In-memory index of `text` (a private SQLite connection).
    explicit passage_index(std::string_view text, const split_params &p = {});
    // The index of a document stored in `store` (session_store::add_document's id); splits and
    // indexes it on first use, in one transaction. `store` must outlive the index.
    // Throws store_error (see session_store.h) on database errors.
    passage_index(session_store &store, int64_t document_id, const split_params &p = {});
    ~passage_index();
    passage_index(const passage_index &) = delete;
    passage_index &operator=(const passage_index &) = delete;

    int32_t size() const;                      // number of passages
    std::vector<passage> all() const;          // every passage, in order (estimated n_tokens)
    passage at(int32_t ordinal) const;         // throws recur::error when out of range

    // The passages most relevant to `question` (BM25 over the question's words, English stop
    // words dropped, Porter stemming, so "letters" finds "letter") whose exact token counts
    // (`count`, applied to each passage's text plus `per_passage_overhead` tokens for the
    // caller's separators) fit in `token_budget`, returned in document order. Candidates are
    // taken by rank; one that does not fit is skipped and smaller ones are still tried. When no
    // passage matches, the document's first passages are returned (matched = false).
    selection select(std::string_view question, int32_t token_budget, const token_counter &count = {},
                     int32_t per_passage_overhead = 0) const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// The FTS5 query select() runs for a question: its words (letters and digits; non-ASCII bytes
// count as letters), lowercased, stop words removed, each quoted, joined with OR. Empty when no
// word is left. Exposed for tests and for the GUI's "why this passage" display.
std::string fts_query_for(std::string_view question);

} // namespace recur_app
