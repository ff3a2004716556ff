#pragma once
// GGUF reader (v2 and v3), memory-mapped. Every offset and size read from the file is checked
// against the file's length before it is used; a malformed file raises recur::format_error
// naming the problem (offset, key or tensor).
#include "recur/error.h"
#include "recur/tensor_type.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace recur {

// GGUF metadata value types (numbers from the format).
enum class gguf_value_type : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// One metadata value. Scalars are widened (integers to int64/uint64, floats to double);
// arrays keep their element type and hold their elements in `array`.
struct gguf_value {
    gguf_value_type type = gguf_value_type::UINT8;
    std::variant<int64_t, uint64_t, double, bool, std::string> scalar;
    gguf_value_type array_type = gguf_value_type::UINT8;
    std::vector<gguf_value> array;

    bool is_array() const { return type == gguf_value_type::ARRAY; }
    // Conversions throw recur::format_error when the stored type does not fit.
    int64_t as_int() const;
    double as_float() const;
    bool as_bool() const;
    const std::string &as_string() const;
};

struct gguf_tensor_info {
    std::string name;
    tensor_type type = tensor_type::F32;
    std::vector<int64_t> ne; // dimensions, ne[0] is the contiguous (row) dimension, as in ggml
    uint64_t offset = 0;     // relative to the start of the data section
    size_t n_bytes = 0;
    const uint8_t *data = nullptr; // into the mapping; valid while the gguf_file lives

    int64_t n_elements() const;
    int64_t n_rows() const { return ne.empty() ? 0 : n_elements() / ne[0]; }
};

// How gguf_file::open brings the file into memory.
//  * read: copied into private memory. Nothing another process does to the file afterwards
//    (truncate, overwrite, delete) can reach the weights; costs the file's size in RAM and the
//    read time (about 0.1 s per 100 MB from the page cache).
//  * map: mmap, shared page cache, instant. If another process truncates the file while it is
//    mapped, touching a page past the new end raises SIGBUS; open() installs a handler that turns
//    that into one clear line on stderr and exit status 74 (EX_IOERR) instead of a crash dump.
//    Nothing the app saved is lost (the session store commits every message as it is made).
//  * automatic: read when the file is at most 2 GiB and at most a quarter of the available
//    memory, map otherwise. The environment variable RECUR_MMAP=1 / RECUR_MMAP=0 forces map / read.
enum class gguf_load { automatic, read, map };

class gguf_file {
  public:
    // Reads or maps (see gguf_load) and parses `path`. Throws recur::format_error (bad file) or
    // recur::error (I/O).
    static std::unique_ptr<gguf_file> open(const std::string &path, gguf_load how = gguf_load::automatic);
    // Parses an in-memory image (for tests and fuzzing); the bytes are copied.
    static std::unique_ptr<gguf_file> from_memory(const void *bytes, size_t size);
    ~gguf_file();
    gguf_file(const gguf_file &) = delete;
    gguf_file &operator=(const gguf_file &) = delete;

    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    const std::string &path() const { return path_; }
    size_t file_size() const { return size_; }
    const uint8_t *base() const { return base_; }
    bool mapped() const { return mapped_; }
    size_t data_offset() const { return data_offset_; }

    const std::map<std::string, gguf_value> &metadata() const { return kv_; }
    const gguf_value *find(const std::string &key) const;
    // Typed getters: `get_*(key)` throws when absent; `get_*(key, fallback)` does not.
    int64_t get_int(const std::string &key) const;
    int64_t get_int(const std::string &key, int64_t fallback) const;
    double get_float(const std::string &key, double fallback) const;
    bool get_bool(const std::string &key, bool fallback) const;
    std::string get_string(const std::string &key) const;
    std::string get_string(const std::string &key, const std::string &fallback) const;
    std::vector<std::string> get_string_array(const std::string &key) const; // empty if absent
    std::vector<double> get_float_array(const std::string &key) const;       // empty if absent
    std::vector<int64_t> get_int_array(const std::string &key) const;        // empty if absent

    const std::vector<gguf_tensor_info> &tensors() const { return tensors_; }
    const gguf_tensor_info *find_tensor(const std::string &name) const;

  private:
    gguf_file() = default;
    void parse();

    std::string path_;
    const uint8_t *base_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    // Private copy (read mode and from_memory); 64-byte aligned like a page-aligned mapping, so
    // tensor data keeps the file's alignment for SIMD loads.
    struct free_deleter {
        void operator()(uint8_t *p) const;
    };
    std::unique_ptr<uint8_t, free_deleter> owned_;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::map<std::string, gguf_value> kv_;
    std::vector<gguf_tensor_info> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

} // namespace recur
