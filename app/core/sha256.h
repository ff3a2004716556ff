#pragma once
// SHA-256 (FIPS 180-4), enough to identify a document by its content. Written here rather than
// pulling in a crypto library for one hash.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace recur_app {

class sha256 {
  public:
    sha256();
    void update(const void *data, size_t n);
    void update(std::string_view s) { update(s.data(), s.size()); }
    std::array<uint8_t, 32> finish(); // the object must be reset (assigned anew) before reuse

  private:
    void block(const uint8_t *p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

// Lowercase hex digest of `data`, 64 characters.
std::string sha256_hex(std::string_view data);

} // namespace recur_app
