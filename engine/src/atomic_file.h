#pragma once
// Writing a file so that a reader never sees half of it: the bytes go to PATH.part, are flushed
// and fsync'ed, and only then renamed over PATH. A failure (a short write, a full disk, an
// exception from the body) removes the .part and throws recur::error; PATH is untouched.
// Shared by the GGUF writer and the engine's state files.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

#include "recur/error.h"

namespace recur {

// body(FILE *) writes the content and returns false when a write failed. `what` names the kind of
// file in the messages ("state file " or "").
template <class Body> void write_file_atomically(const std::string &path, const char *what, Body &&body) {
    const std::string tmp = path + ".part";
    FILE *f = fopen(tmp.c_str(), "wb");
    if (!f) throw error(std::string("cannot create ") + what + "'" + tmp + "': " + std::strerror(errno));
    bool wrote = false;
    try {
        wrote = body(f);
    } catch (...) {
        fclose(f);
        std::remove(tmp.c_str());
        throw;
    }
    const bool flushed = fflush(f) == 0 && fsync(fileno(f)) == 0;
    const bool closed = fclose(f) == 0;
    if (!wrote || !flushed || !closed) {
        const int err = errno;
        std::remove(tmp.c_str());
        throw error(std::string("writing ") + what + "'" + path + "' failed: " + std::strerror(err));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        std::remove(tmp.c_str());
        throw error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(err));
    }
}

} // namespace recur
