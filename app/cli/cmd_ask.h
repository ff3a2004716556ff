#pragma once
// `recur ask`: document question answering from the command line (DESIGN §6, issue 5 item 7),
// through the same pipeline as the desktop app (app/core/ask.h).
#include "options.h"

// Returns the process exit code; throws recur::error (main prints it as one line).
int cmd_ask(const recur_cli::options &o);
