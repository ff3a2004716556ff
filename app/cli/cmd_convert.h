#pragma once
#include "options.h"

namespace recur_cli {
int cmd_convert(const options &o);
}
