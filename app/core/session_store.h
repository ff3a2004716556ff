#pragma once
// The session database (DESIGN §7): one SQLite file holding documents, sessions, messages with
// their timings, head statistics, memory samples and references to engine snapshots, so that a
// session reopened tomorrow shows its conversation at once and does not read its document again.
//
// Durability and safety:
//  * WAL journal, synchronous=FULL, foreign keys on, a busy timeout (open_options).
//  * Every write method is one transaction, committed before it returns; append_message in
//    particular, so a crash or SIGKILL loses at most the message still being generated.
//  * On open: `PRAGMA quick_check` must say "ok" (else store_error::kind::corrupt); the schema is
//    brought to schema_version() by numbered migrations (resources/migrations/NNN_name.sql,
//    embedded at build time), each in its own transaction that also sets PRAGMA user_version, so
//    an interrupted upgrade leaves the previous version intact. A database newer than this build
//    is refused (never downgraded).
//  * Errors are store_error with a kind the GUI can act on and a one-line message naming the
//    file. Nothing already committed is lost by a failed write (SQLite rolls the transaction back).
//
// Threading: a session_store is one connection; use it from one thread at a time. Several
// processes (the GUI and `recur ask`) may open the same file; writers then wait up to the busy
// timeout for each other.
//
// Times are milliseconds since the Unix epoch (UTC).
#include "core/document_import.h"
#include "recur/error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace recur_app {

class store_error : public recur::error {
  public:
    enum class kind {
        busy,      // locked by another process longer than the busy timeout
        corrupt,   // not a database, damaged, or quick_check failed
        read_only, // the file or its folder cannot be written
        disk_full, // no space (or SQLite's page limit)
        too_new,   // written by a newer RecurDesk (user_version above schema_version())
        not_found, // no such session / document / message
        io,        // cannot open or create the file, other I/O errors
        other,     // anything else SQLite reports (constraint, misuse, ...)
    };
    store_error(kind k, const std::string &message) : recur::error(message), kind_(k) {}
    kind reason() const { return kind_; }

  private:
    kind kind_;
};

struct document_record {
    int64_t id = 0;
    std::string title, path, format, sha256;
    int64_t n_bytes = 0;
    int32_t n_tokens = -1;           // token count for n_tokens_model's tokenizer, -1 unknown
    std::string n_tokens_model;      // fingerprint_hex of the model that counted, "" unknown
    int64_t added_at = 0;
};

struct session_info {
    int64_t id = 0;
    std::string name;
    int64_t document_id = 0;
    std::string document_title;
    std::string model_path;
    std::string model_fingerprint; // fingerprint_hex()
    int64_t created_at = 0, updated_at = 0;
    int64_t n_messages = 0;
};

// A passage of the document an answer was given from (passage_index ordinals and offsets).
struct passage_ref {
    int32_t ordinal = 0;
    int64_t begin = 0, end = 0;
};

struct message_record {
    int64_t id = 0;         // set by append_message
    int64_t session_id = 0;
    std::string role;       // "user" | "assistant" | "system"
    std::string content;
    int64_t created_at = 0; // set by append_message when 0
    // Timing of an assistant message (0 for user messages).
    int32_t prompt_tokens = 0;  // tokens in the context when the answer started
    int32_t prefill_tokens = 0; // of which evaluated for this answer (the rest was reused)
    double prefill_tok_s = 0;
    int32_t decode_tokens = 0;
    double decode_tok_s = 0;
    std::string stop_reason;    // "eos" | "stop" | "length" | "context" | "cancelled" | ""
    std::vector<passage_ref> passages; // empty when the whole document was in the context
};

// Recency statistics of one attention head (DESIGN §4) for a session's document.
struct head_stat {
    int32_t layer = 0, head = 0;
    double recency = 0, sink = 0;
    std::vector<double> hist; // mass per distance bin {0}, {1}, [2,3], [4,7], ...
};

// Memory in use after `tokens` tokens were processed (bytes).
struct memory_sample {
    int64_t tokens = 0;
    int64_t kv_bytes = 0;             // attention KV cache rows in use
    int64_t fixed_state_bytes = 0;    // the replaced groups' fixed-size state: recurrent states and window rows
    int64_t full_attention_bytes = 0; // what the KV cache would hold with every group attention
};

// An engine state file (recur::context::save_state) holding a session's context.
struct snapshot_record {
    int64_t session_id = 0;
    std::string path;
    std::string model_fingerprint; // fingerprint_hex(); the state file checks it again on load
    int32_t n_past = 0;            // tokens in the state
    int32_t n_ctx = 0;             // context size it was saved from
    int64_t created_at = 0;
};

class session_store {
  public:
    struct open_options {
        int busy_timeout_ms = 5000;
        bool read_only = false; // open without writing anything (no migration: an old schema is
                                // then an error)
    };

    // Opens or creates the database (and its folder). Throws store_error.
    explicit session_store(const std::string &path);
    session_store(const std::string &path, const open_options &opt);
    ~session_store();
    session_store(const session_store &) = delete;
    session_store &operator=(const session_store &) = delete;

    // The schema version this build writes (the highest migration).
    static int schema_version();
    // Moves a damaged database file (and its -wal/-shm) aside as PATH.corrupt-YYYYMMDD-HHMMSS so a
    // fresh one can be created; returns the new name. Throws store_error(io) if it cannot.
    static std::string move_aside(const std::string &path);

    const std::string &path() const { return path_; }
    bool read_only() const { return read_only_; }
    // Folder for this store's engine snapshots: "<db folder>/snapshots" (created on demand).
    std::string snapshot_dir() const;

    // --- documents
    // Adds the document, or returns the id of the one with the same sha256 (the stored copy is
    // kept; its path and title are updated to the latest import).
    int64_t add_document(const document &doc);
    std::optional<document_record> find_document(int64_t id);
    std::optional<document_record> find_document_by_hash(const std::string &sha256);
    std::string document_text(int64_t id); // throws store_error(not_found)
    void set_document_tokens(int64_t id, int32_t n_tokens, const std::string &model_fingerprint);

    // --- sessions
    int64_t create_session(const std::string &name, int64_t document_id, const std::string &model_path,
                           const std::string &model_fingerprint);
    void rename_session(int64_t session_id, const std::string &name);
    // Deletes the session with its messages, statistics, samples and snapshot row, and removes
    // its snapshot file. Documents stay (other sessions may use them).
    void delete_session(int64_t session_id);
    // Records the model a session last used.
    void set_session_model(int64_t session_id, const std::string &model_path, const std::string &model_fingerprint);
    std::vector<session_info> list_sessions(); // most recently updated first
    std::optional<session_info> find_session(int64_t session_id);
    // The most recently updated session on this document, if any.
    std::optional<session_info> latest_session_for_document(int64_t document_id);

    // --- messages
    // Appends and commits (the session's updated_at too); returns the new id. The record's id,
    // session_id and created_at are ignored/filled.
    int64_t append_message(int64_t session_id, const message_record &m);
    std::vector<message_record> messages(int64_t session_id);

    // --- statistics
    // Replaces the session's head statistics (window = the recency window k they were taken with).
    void save_head_stats(int64_t session_id, int32_t window, const std::vector<head_stat> &stats);
    std::vector<head_stat> head_stats(int64_t session_id, int32_t *window = nullptr);
    // Appends samples (message_id 0: not tied to a message).
    void add_memory_samples(int64_t session_id, int64_t message_id, const std::vector<memory_sample> &samples);
    std::vector<memory_sample> memory_samples(int64_t session_id);

    // --- engine snapshots (one per session; set replaces it)
    void set_snapshot(const snapshot_record &s);
    std::optional<snapshot_record> snapshot(int64_t session_id);
    // Snapshots of any session on this document saved for this model, newest first (a new
    // session can start from another session's reading of the same document).
    std::vector<snapshot_record> snapshots_for_document(int64_t document_id, const std::string &model_fingerprint);
    void clear_snapshot(int64_t session_id); // removes the row and the file

    // The session as Markdown: title, document, model, then each message with its timings and
    // the passages it used.
    std::string export_markdown(int64_t session_id);

    // The connection, for passage_index (same thread rules). Not for general use.
    sqlite3 *handle() { return db_; }

  private:
    void open(const open_options &opt);
    // Deletes a snapshot file named by the database, only inside snapshot_dir().
    void remove_snapshot_file(const std::string &file) const;
    void migrate();
    std::string path_;
    sqlite3 *db_ = nullptr;
    bool read_only_ = false;
};

namespace detail {
// The embedded migrations, in order: migration i (1-based) takes user_version i-1 to i. Exposed
// so tests can build databases at every earlier version.
struct migration {
    int version;
    const char *name;
    const char *sql;
};
const std::vector<migration> &migrations();
} // namespace detail

} // namespace recur_app
