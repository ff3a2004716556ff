// libFuzzer target: both tokenizers (sentencepiece from a GGUF vocabulary, byte-level BPE) on
// arbitrary bytes; byte-level BPE must round-trip exactly (it is lossless by construction).
#include "recur/gguf.h"
#include "recur/tokenizer.h"

#include <cstdlib>
#include <memory>
#include <string>

namespace {
std::unique_ptr<recur::tokenizer> load(const char *name) {
    const char *dir = std::getenv("RECUR_SHARED_DIR");
    const std::string path = std::string(dir ? dir : RECUR_SHARED_DIR) + "/models/vocab/" + name;
    auto f = recur::gguf_file::open(path);
    return recur::make_tokenizer(recur::load_vocab(*f));
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static auto spm = load("ggml-vocab-llama-spm.gguf");
    static auto bpe = load("ggml-vocab-gpt-2.gguf");
    const std::string text(reinterpret_cast<const char *>(data), size);
    for (bool special : {false, true}) {
        auto ids = spm->encode(text, true, special);
        (void)spm->decode(ids);
        auto bids = bpe->encode(text, false, special);
        const std::string back = bpe->decode(bids);
        if (!special && back != text) __builtin_trap(); // lossless by construction
    }
    return 0;
}
