#pragma once
// GGUF v3 writer: metadata and tensors, data aligned to general.alignment (32). Used by
// `recur quantize` and by the hybrid converter; metadata and tensors taken from a source
// file are copied bit for bit.
#include "recur/gguf.h"

#include <cstdint>
#include <string>
#include <vector>

namespace recur {

class gguf_writer {
  public:
    // Metadata, in insertion order; setting an existing key replaces its value in place.
    void set(const std::string &key, const gguf_value &value);
    void set_string(const std::string &key, const std::string &v);
    void set_int32(const std::string &key, int32_t v);
    void set_uint32(const std::string &key, uint32_t v);
    void set_float32(const std::string &key, float v);
    void set_bool(const std::string &key, bool v);
    void set_int32_array(const std::string &key, const std::vector<int32_t> &v);
    void set_float32_array(const std::string &key, const std::vector<float> &v);
    void remove(const std::string &key);
    // Copies every metadata key of `src` (optionally skipping keys starting with `skip_prefix`).
    void copy_metadata(const gguf_file &src, const std::string &skip_prefix = "");

    // A tensor; `data` must hold exactly the bytes of ne in `type` and stay alive until write().
    void add_tensor(const std::string &name, tensor_type type, const std::vector<int64_t> &ne, const void *data,
                    size_t n_bytes);
    // A tensor that owns its bytes.
    void add_tensor(const std::string &name, tensor_type type, const std::vector<int64_t> &ne,
                    std::vector<uint8_t> bytes);

    // Writes to `path` through a temporary file and a rename, so a failed write never leaves a
    // half-written model under the final name. Throws recur::error on I/O failure.
    void write(const std::string &path) const;

  private:
    struct tensor_entry {
        std::string name;
        tensor_type type;
        std::vector<int64_t> ne;
        const void *data;
        size_t n_bytes;
        std::vector<uint8_t> owned;
    };
    std::vector<std::pair<std::string, gguf_value>> kv_;
    std::vector<tensor_entry> tensors_;
};

} // namespace recur
