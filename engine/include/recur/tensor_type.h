#pragma once
// Tensor element types, numbered as in ggml/GGUF (the numbers are part of the file format).
#include <cstddef>
#include <cstdint>
#include <string>

namespace recur {

enum class tensor_type : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q8_1 = 9,
    Q4_K = 12,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
};

// Elements per block (1 for float types) and bytes per block; block_size == 0 marks a type
// this engine does not know.
struct tensor_type_traits {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
};

// Returns traits for a raw GGUF type number; block_elems == 0 when unsupported.
tensor_type_traits type_traits(uint32_t raw_type);
inline tensor_type_traits type_traits(tensor_type t) { return type_traits(static_cast<uint32_t>(t)); }
std::string type_name(uint32_t raw_type);

// Bytes of one row of n elements; n must be a multiple of block_elems.
inline size_t row_bytes(tensor_type t, int64_t n) {
    auto tr = type_traits(t);
    return static_cast<size_t>(n / tr.block_elems) * tr.block_bytes;
}

} // namespace recur
