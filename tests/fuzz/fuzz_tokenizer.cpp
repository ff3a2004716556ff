// libFuzzer target: both tokenizers (sentencepiece from a GGUF vocabulary, byte-level BPE) on
// arbitrary bytes. Round trips where the vocabulary guarantees them: byte-level BPE on any bytes
// (every byte has a token), sentencepiece with byte fallback on valid UTF-8 (every character is
// a piece or its UTF-8 bytes; the dummy-prefix space added by encode is removed by decode).
#include "recur/gguf.h"
#include "recur/tokenizer.h"

#include <cstdint>
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
// Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF), written here so the
// check does not trust the code under test.
bool valid_utf8(const std::string &s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        size_t n;
        uint32_t cp;
        if (c < 0x80) n = 1, cp = c;
        else if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
        else return false;
        if (i + n > s.size()) return false;
        for (size_t k = 1; k < n; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static auto spm = load("ggml-vocab-llama-spm.gguf");
    static auto bpe = load("ggml-vocab-gpt-2.gguf");
    if (size == 0) return 0;
    // The first byte says whether special-token text ("<s>", "<|endoftext|>") is parsed as
    // special tokens: one encode per tokenizer per input, both modes over the run.
    const bool special = data[0] & 1;
    const std::string text(reinterpret_cast<const char *>(data) + 1, size - 1);
    const std::string spm_back = spm->decode(spm->encode(text, true, special));
    if (!special && valid_utf8(text) && spm_back != text) __builtin_trap();
    const std::string bpe_back = bpe->decode(bpe->encode(text, false, special));
    if (!special && bpe_back != text) __builtin_trap(); // lossless by construction
    return 0;
}
