#pragma once
// Internal helpers over the SQLite C API for the store and the passage index: a statement RAII
// wrapper, a transaction guard, and the mapping of SQLite result codes to store_error kinds.
#include "core/session_store.h"

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace recur_app::sql {

// Throws store_error for result code rc (the connection's message when it has one). `what` says
// what was being done ("appending a message"); `file` names the database.
[[noreturn]] void fail(sqlite3 *db, int rc, const std::string &what, const std::string &file);

class statement {
  public:
    statement(sqlite3 *db, std::string_view sql, const std::string &file);
    ~statement() { sqlite3_finalize(st_); }
    statement(const statement &) = delete;
    statement &operator=(const statement &) = delete;

    statement &bind(int i, int64_t v);
    statement &bind(int i, int v) { return bind(i, int64_t(v)); }
    statement &bind(int i, double v);
    statement &bind(int i, std::string_view v);
    statement &bind(int i, const std::string &v) { return bind(i, std::string_view(v)); }
    statement &bind(int i, const char *v) { return bind(i, std::string_view(v)); }
    statement &bind_blob(int i, const void *p, size_t n);
    statement &bind_null(int i);

    // Steps once: true when a row is available, false when done. Throws on errors.
    bool step(const std::string &what);
    // Steps to completion (for statements without rows).
    void run(const std::string &what) {
        while (step(what)) {}
    }
    void reset() {
        sqlite3_reset(st_);
        sqlite3_clear_bindings(st_);
    }

    int64_t int64(int col) const { return sqlite3_column_int64(st_, col); }
    double real(int col) const { return sqlite3_column_double(st_, col); }
    std::string text(int col) const {
        const auto *p = reinterpret_cast<const char *>(sqlite3_column_text(st_, col));
        return p ? std::string(p, size_t(sqlite3_column_bytes(st_, col))) : std::string();
    }
    std::vector<uint8_t> blob(int col) const {
        const auto *p = static_cast<const uint8_t *>(sqlite3_column_blob(st_, col));
        return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(st_, col)) : std::vector<uint8_t>();
    }
    bool is_null(int col) const { return sqlite3_column_type(st_, col) == SQLITE_NULL; }

  private:
    sqlite3 *db_;
    sqlite3_stmt *st_ = nullptr;
    const std::string &file_;
};

// Runs one or more statements without results.
void exec(sqlite3 *db, const std::string &sql, const std::string &what, const std::string &file);

// BEGIN IMMEDIATE (takes the write lock at once, so a busy database fails here, before any work)
// ... commit(); rolled back on destruction if not committed.
class transaction {
  public:
    transaction(sqlite3 *db, const std::string &what, const std::string &file);
    ~transaction();
    void commit();
    transaction(const transaction &) = delete;
    transaction &operator=(const transaction &) = delete;

  private:
    sqlite3 *db_;
    std::string what_;
    const std::string &file_;
    bool done_ = false;
};

int64_t now_ms();

} // namespace recur_app::sql
