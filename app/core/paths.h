#pragma once
// Where RecurDesk keeps its files on Linux (XDG base directories). The CLI and the GUI use the
// same functions so that `recur ask` and the desktop app see the same sessions and model.
#include <cstdint>
#include <string>

namespace recur_app {

// $XDG_DATA_HOME/RecurDesk, else $HOME/.local/share/RecurDesk (created by nobody here: callers
// that write there create it, the session store does for its own file).
std::string default_data_dir();

// default_data_dir() + "/sessions.db".
std::string default_session_db_path();

// The model used when none is given: $RECUR_MODEL when set, else the model installer/setup.sh
// puts in default_data_dir() + "/models/" (SmolLM2-135M-Instruct.Q4_1.gguf). The file may not
// exist; callers check and say how to get it.
std::string default_model_path();

// A model fingerprint (recur::model::fingerprint()) as the 16-digit lowercase hex string the
// store keeps (SQLite integers are signed, so the text form avoids sign games).
std::string fingerprint_hex(uint64_t fingerprint);

} // namespace recur_app
