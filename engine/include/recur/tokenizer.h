#pragma once
// Tokenizers for the two vocabulary kinds a GGUF file can carry (tokenizer.ggml.model):
//   "llama" — sentencepiece. The ModelProto is rebuilt from the GGUF vocabulary and handed to the
//             sentencepiece library, so segmentation is sentencepiece's own, not a re-implementation.
//   "gpt2"  — byte-level BPE with merge ranks, after the pre-tokenizer named by tokenizer.ggml.pre.
//
// Conventions shared by both (decided here, relied on by the engine and the app):
//  * encode(text, add_special, parse_special)
//      add_special   — prepend BOS / append EOS when the vocabulary asks for it (add_bos / add_eos).
//      parse_special — text spelling a control token ("<|im_start|>", "</s>") becomes that token.
//                      User-defined tokens (type 4) are always matched, as llama.cpp does.
//  * token_to_piece(id) is the text a token stands for in generated output:
//      normal / user-defined tokens  → their text (SPM: U+2581 "▁" → ' '; BPE: bytes un-mapped)
//      byte tokens "<0x0A>"          → that single byte (may be part of a multi-byte UTF-8 char)
//      control tokens (BOS, <|im_end|>, ...) and unused tokens → "" (markers, not text; their
//                                      spelling is available through token_text())
//      the unknown token             → U+FFFD
//    A piece is raw bytes and need not be valid UTF-8 on its own; streaming callers must buffer.
//    An id outside [0, n_vocab) throws recur::error.
//  * decode(ids) concatenates pieces; for sentencepiece vocabularies that add a dummy space prefix,
//    one leading space of the first text piece is removed, so decode(encode(x, ., false)) == x.
//  * Invalid UTF-8 input never throws. BPE keeps the bytes as they are (byte-level BPE can spell any
//    byte, and an invalid byte is pre-tokenized as a symbol), so the round trip is lossless.
//    Sentencepiece replaces each malformed sequence with U+FFFD (the library's normalizer does), so
//    decode gives U+FFFD where the bad bytes were.
#include "recur/error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace recur {

class gguf_file;

// Token types as GGUF (and sentencepiece's ModelProto) number them.
enum class token_type : int32_t {
    undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

// What tokenizer.ggml.* holds. load_vocab fills every vector to tokens.size(): scores are 0 and
// types are `normal` where the file has none.
struct vocab_data {
    std::string model; // "llama" (sentencepiece) or "gpt2" (byte-level BPE)
    std::string pre;   // tokenizer.ggml.pre, "" if absent
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> token_types;
    std::vector<std::string> merges; // "left right", in rank order (gpt2 only)
    int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1; // -1 when absent
    bool add_bos = false, add_eos = false, add_space_prefix = true;
};

// Reads tokenizer.ggml.* from a GGUF file. Throws recur::format_error naming the key when the
// vocabulary is missing, has the wrong type, or is inconsistent (array lengths differ, a special
// token id is out of range, add_bos_token set without a BOS id, gpt2 without merges, ...).
// Defaults follow llama.cpp: for "llama" BOS=1, EOS=2, UNK=0 and add_bos=true unless the file says
// otherwise; for "gpt2" add_bos=false except the llama3 family of pre-tokenizers.
vocab_data load_vocab(const gguf_file &f);

class tokenizer {
  public:
    virtual ~tokenizer() = default;

    virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                        bool parse_special) const = 0;
    virtual std::string token_to_piece(int32_t id) const = 0;

    std::string decode(const std::vector<int32_t> &ids) const;

    int32_t n_vocab() const { return static_cast<int32_t>(vocab_.tokens.size()); }
    int32_t bos() const { return vocab_.bos; }
    int32_t eos() const { return vocab_.eos; }
    int32_t eot() const { return vocab_.eot; }
    int32_t unk() const { return vocab_.unk; }
    bool adds_bos() const { return vocab_.add_bos && vocab_.bos >= 0; }
    bool adds_eos() const { return vocab_.add_eos && vocab_.eos >= 0; }
    // True for sentencepiece vocabularies that prefix text with a space ("▁"); decode() then drops
    // the first piece's leading space, and a streaming caller should do the same.
    bool adds_space_prefix() const { return space_prefix_; }

    // EOS, EOT and the end-of-turn tokens chat models use (<|im_end|>, <|eot_id|>, <|eom_id|>,
    // <|end_of_text|>, <|endoftext|>, <end_of_turn>, <|end|>, ...) when the vocabulary has them.
    bool is_end_of_generation(int32_t id) const;
    // The id whose vocabulary string is exactly `text` (e.g. "<|im_start|>", "▁Hello", "Ġthe").
    std::optional<int32_t> find_token(std::string_view text) const;
    // The vocabulary string of a token, as stored (no un-mapping); throws on a bad id.
    const std::string &token_text(int32_t id) const;
    token_type type_of(int32_t id) const;
    const vocab_data &vocab() const { return vocab_; }

  protected:
    explicit tokenizer(vocab_data v);
    void check_id(int32_t id) const;

    // A stretch of the input: either raw text or an already decided token.
    struct fragment {
        std::string_view text; // raw text when token < 0
        int32_t token = -1;
    };
    // Splits `text` at special tokens: user-defined ones always, control and unknown ones when
    // parse_special. Leftmost match wins, the longest at that position.
    std::vector<fragment> split_special(std::string_view text, bool parse_special,
                                        bool include_user_defined) const;

    vocab_data vocab_;
    std::unordered_map<std::string, int32_t> token_to_id_;
    std::vector<int32_t> eog_ids_;
    bool space_prefix_ = false;

  private:
    struct trie_node {
        std::vector<std::pair<unsigned char, int32_t>> next; // sorted by byte
        int32_t token = -1;
    };
    std::vector<trie_node> special_trie_; // node 0 is the root
    void add_special(const std::string &text, int32_t id);
};

// Builds the tokenizer the vocabulary asks for. Throws recur::format_error for an unknown
// model, or a vocabulary sentencepiece rejects. An unknown `pre` for gpt2 falls back to the GPT-2
// regex with a one-line warning on stderr.
std::unique_ptr<tokenizer> make_tokenizer(const vocab_data &v);
// Loads a sentencepiece .model protobuf directly (throws recur::error if it cannot be read).
std::unique_ptr<tokenizer> load_sentencepiece_file(const std::string &model_path);

namespace detail {
// Unicode general-category class of a code point (from tests/reference/gen_unicode_tables.py).
enum class ucat : uint8_t { other = 0, letter, mark, number, punct, symbol, separator };
ucat unicode_category(uint32_t cp);
bool unicode_is_whitespace(uint32_t cp); // the Unicode White_Space property (regex \s)

// The pre-tokenizer of a gpt2 vocabulary, exposed for tests: splits `text` into the words that
// BPE then merges within. `pre` as in tokenizer.ggml.pre; throws recur::format_error if unknown.
std::vector<std::string> pre_tokenize(std::string_view text, std::string_view pre);
// Builds the serialized sentencepiece ModelProto for a "llama" vocabulary (exposed for tests).
std::string build_sentencepiece_proto(const vocab_data &v);
} // namespace detail

} // namespace recur
