#pragma once
// Errors inside the engine are exceptions with a precise message (which file, key, tensor,
// offset); the CLI and the app catch them at the boundary and print one line.
#include <stdexcept>
#include <string>

namespace recur {

class error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A malformed or unsupported model file.
class format_error : public error {
  public:
    using error::error;
};

} // namespace recur
