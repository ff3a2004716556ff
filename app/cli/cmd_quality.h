#pragma once
// Quality of a hybrid against its original (DESIGN §5, issue 4 item 4): `recur kl` compares
// next-token distributions, `recur passkey` measures needle-in-a-haystack retrieval.
#include "options.h"

namespace recur_cli {
// Both return the process exit code and throw (main prints one line) on bad input.
int cmd_kl(const options &o);
int cmd_passkey(const options &o);
} // namespace recur_cli
