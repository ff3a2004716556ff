#include "core/paths.h"

#include <cstdio>
#include <cstdlib>

namespace recur_app {

std::string default_data_dir() {
    if (const char *x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/RecurDesk";
    if (const char *home = std::getenv("HOME"); home && *home) return std::string(home) + "/.local/share/RecurDesk";
    return "RecurDesk"; // no HOME at all (a bare service account): the working directory
}

std::string default_session_db_path() { return default_data_dir() + "/sessions.db"; }

std::string default_model_path() {
    if (const char *env = std::getenv("RECUR_MODEL"); env && *env) return env;
    return default_data_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string fingerprint_hex(uint64_t fingerprint) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(fingerprint));
    return buf;
}

} // namespace recur_app
