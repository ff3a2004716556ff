// Block sizes of the GGUF tensor types this engine knows; the numbers follow ggml's type table
// (ggml.c type_traits) because they are part of the file format.
#include "recur/tensor_type.h"

namespace recur {

tensor_type_traits type_traits(uint32_t raw_type) {
    switch (static_cast<tensor_type>(raw_type)) {
    case tensor_type::F32: return {"F32", 1, 4};
    case tensor_type::F16: return {"F16", 1, 2};
    case tensor_type::BF16: return {"BF16", 1, 2};
    case tensor_type::Q4_0: return {"Q4_0", 32, 18};   // f16 d, 16 B nibbles
    case tensor_type::Q4_1: return {"Q4_1", 32, 20};   // f16 d, f16 m, 16 B nibbles
    case tensor_type::Q8_0: return {"Q8_0", 32, 34};   // f16 d, 32 x int8
    case tensor_type::Q8_1: return {"Q8_1", 32, 36};   // f16 d, f16 s, 32 x int8
    case tensor_type::Q4_K: return {"Q4_K", 256, 144}; // f16 d, f16 dmin, 12 B scales, 128 B nibbles
    case tensor_type::Q6_K: return {"Q6_K", 256, 210}; // 128 B ql, 64 B qh, 16 x int8 scales, f16 d
    case tensor_type::Q8_K: return {"Q8_K", 256, 292}; // f32 d, 256 x int8, 16 x int16 bsums
    }
    return {"unknown", 0, 0};
}

std::string type_name(uint32_t raw_type) {
    auto tr = type_traits(raw_type);
    if (tr.block_elems == 0) return "unknown(" + std::to_string(raw_type) + ")";
    return tr.name;
}

} // namespace recur
