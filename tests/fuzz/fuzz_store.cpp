// libFuzzer target: the SQLite session store opened on arbitrary or damaged database files.
// Opening either succeeds or throws store_error; an opened store answers every read without
// crashing; a write that returned is there when the file is opened again. Snapshot paths in a
// hostile database must never make the store delete a file outside its snapshot folder.
//
// Seeds: LLVMFuzzerInitialize writes a real database (documents, sessions, messages, statistics,
// samples, a snapshot row) into $RECUR_FUZZ_SEED_DIR when that is set (tests/fuzz/run.sh does).
#include "core/document_import.h"
#include "core/session_store.h"

#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

using namespace recur_app;
namespace fs = std::filesystem;

namespace {

std::string work_dir() {
    static const std::string dir = [] {
        // tmpfs when there is one: every transaction is fsync'ed (synchronous=FULL), which on a
        // disk would make the fuzzer measure the disk.
        const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        std::string d = (base / ("recur-fuzz-store-" + std::to_string(getpid()))).string();
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

// A file outside the snapshot folder that a hostile snapshot row may name; it must survive.
std::string canary() { return work_dir() + "/canary.txt"; }

void fill(session_store &s) {
    const int64_t doc = s.add_document(import_bytes("It is a truth universally acknowledged.\n", "seed.txt"));
    const int64_t sid = s.create_session("seed", doc, "/models/m.gguf", "00000000000000aa");
    message_record m;
    m.role = "user";
    m.content = "Who is single?";
    s.append_message(sid, m);
    m.role = "assistant";
    m.content = "A man in possession of a good fortune.";
    m.prompt_tokens = 40;
    m.decode_tokens = 9;
    m.stop_reason = "eos";
    m.passages = {{0, 0, 40}};
    s.append_message(sid, m);
    s.save_head_stats(sid, 32, {{0, 0, 0.75, 0.1, {0.5, 0.25, 0.25}}, {0, 1, 0.2, 0.6, {0.1, 0.9}}});
    s.add_memory_samples(sid, 0, {{10, 1000, 50, 2000}});
    s.set_snapshot({sid, canary(), "00000000000000aa", 40, 2048, 0});
}

void exercise(session_store &s) {
    for (const session_info &si : s.list_sessions()) {
        (void)s.find_session(si.id);
        for (const message_record &m : s.messages(si.id)) (void)m.content.size();
        (void)s.head_stats(si.id);
        (void)s.memory_samples(si.id);
        (void)s.snapshot(si.id);
        (void)s.export_markdown(si.id);
        if (auto d = s.find_document(si.document_id)) {
            (void)s.document_text(d->id);
            (void)s.snapshots_for_document(d->id, si.model_fingerprint);
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *seed_dir = std::getenv("RECUR_FUZZ_SEED_DIR");
    if (!seed_dir) return 0;
    const std::string seed = std::string(seed_dir) + "/seed.db";
    if (fs::exists(seed)) return 0;
    {
        session_store s(seed);
        fill(s);
    } // closing the last connection checkpoints the WAL into the main file
    // Small pages keep the whole database under the fuzzer's input size limit (64 KiB): with
    // 4 KiB pages it is 94 KB and would be cut short, never reaching the code behind a valid file.
    sqlite3 *db = nullptr;
    if (sqlite3_open(seed.c_str(), &db) == SQLITE_OK)
        sqlite3_exec(db, "PRAGMA journal_mode=DELETE; PRAGMA page_size=512; VACUUM;", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string db = work_dir() + "/fuzz.db";
    for (const char *suffix : {"", "-wal", "-shm"}) fs::remove(db + suffix);
    FILE *out = std::fopen(db.c_str(), "wb");
    if (!out) return 0;
    std::fwrite(data, 1, size, out);
    std::fclose(out);
    {
        FILE *c = std::fopen(canary().c_str(), "wb");
        if (c) std::fputs("keep me", c), std::fclose(c);
    }

    try { // read-only first: nothing may be written
        session_store::open_options ro;
        ro.read_only = true;
        ro.busy_timeout_ms = 0;
        session_store s(db, ro);
        exercise(s);
    } catch (const store_error &) {
    }
    int64_t written = 0, session = 0;
    try { // then as the app opens it: migrate, read, write, delete
        session_store::open_options rw;
        rw.busy_timeout_ms = 0;
        session_store s(db, rw);
        exercise(s);
        const auto sessions = s.list_sessions();
        for (const session_info &si : sessions) {
            s.clear_snapshot(si.id);
            s.delete_session(si.id);
        }
        const int64_t doc = s.add_document(import_bytes("fuzz document\n", "f.txt"));
        session = s.create_session("fuzz", doc, "/m", "00000000000000bb");
        message_record m;
        m.role = "user";
        m.content = "still here?";
        written = s.append_message(session, m);
    } catch (const store_error &) {
    }
    if (!fs::exists(canary())) __builtin_trap(); // a hostile snapshot row deleted a file outside the store
    if (written) {
        session_store s(db); // must open, and the committed message must be there
        const auto msgs = s.messages(session);
        if (msgs.empty() || msgs.back().id != written || msgs.back().content != "still here?") __builtin_trap();
    }
    return 0;
}
