// Vocabulary loading from GGUF, the tokenizer factory, and what both tokenizer kinds share:
// special-token splitting, decode, end-of-generation detection.
#include "recur/tokenizer.h"

#include "recur/gguf.h"

#include <algorithm>
#include <cstdio>

namespace recur {

// Defined in tokenizer_spm.cpp and tokenizer_bpe.cpp.
std::unique_ptr<tokenizer> make_spm_tokenizer(const vocab_data &v);
std::unique_ptr<tokenizer> make_bpe_tokenizer(const vocab_data &v);

namespace {

const gguf_value *find_array(const gguf_file &f, const std::string &key, bool required) {
    const gguf_value *v = f.find(key);
    if (!v) {
        if (required) throw format_error("GGUF: missing key " + key);
        return nullptr;
    }
    if (!v->is_array()) throw format_error("GGUF: key " + key + " is not an array");
    return v;
}

// A special-token id key: -1 when absent. 0xFFFFFFFF (and any negative) is how several converters
// write "none", so it means absent too. Any other value outside the vocabulary is an error: the
// file promises a token it does not have.
int32_t special_id(const gguf_file &f, const std::string &key, int32_t fallback, size_t n_tokens) {
    const gguf_value *v = f.find(key);
    if (!v) return fallback >= 0 && static_cast<size_t>(fallback) < n_tokens ? fallback : -1;
    const int64_t id = v->as_int();
    if (id < 0 || id == 0xFFFFFFFFLL) return -1;
    if (static_cast<uint64_t>(id) >= n_tokens)
        throw format_error("GGUF: " + key + " = " + std::to_string(id) + " is outside the vocabulary of " +
                           std::to_string(n_tokens) + " tokens");
    return static_cast<int32_t>(id);
}

bool is_llama3_family(const std::string &pre) {
    return pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" || pre == "pixtral";
}

} // namespace

vocab_data load_vocab(const gguf_file &f) {
    vocab_data v;
    const gguf_value *model = f.find("tokenizer.ggml.model");
    if (!model) throw format_error("GGUF: missing key tokenizer.ggml.model (the file has no vocabulary)");
    v.model = model->as_string();
    v.pre = f.get_string("tokenizer.ggml.pre", "");

    find_array(f, "tokenizer.ggml.tokens", true);
    v.tokens = f.get_string_array("tokenizer.ggml.tokens");
    const size_t n = v.tokens.size();
    if (n == 0) throw format_error("GGUF: tokenizer.ggml.tokens is empty");
    if (n > static_cast<size_t>(INT32_MAX)) throw format_error("GGUF: tokenizer.ggml.tokens is too long");

    if (find_array(f, "tokenizer.ggml.scores", false)) {
        const std::vector<double> s = f.get_float_array("tokenizer.ggml.scores");
        if (s.size() != n)
            throw format_error("GGUF: tokenizer.ggml.scores has " + std::to_string(s.size()) +
                               " entries but tokenizer.ggml.tokens has " + std::to_string(n));
        v.scores.assign(s.begin(), s.end());
    } else {
        v.scores.assign(n, 0.0f);
    }
    if (find_array(f, "tokenizer.ggml.token_type", false)) {
        const std::vector<int64_t> t = f.get_int_array("tokenizer.ggml.token_type");
        if (t.size() != n)
            throw format_error("GGUF: tokenizer.ggml.token_type has " + std::to_string(t.size()) +
                               " entries but tokenizer.ggml.tokens has " + std::to_string(n));
        v.token_types.resize(n);
        for (size_t i = 0; i < n; ++i) {
            // Unknown numbers are treated as normal tokens rather than rejected: the type only
            // steers special handling, and llama.cpp does the same.
            v.token_types[i] = (t[i] >= 1 && t[i] <= 6) ? static_cast<int32_t>(t[i]) : 1;
        }
    } else {
        v.token_types.assign(n, static_cast<int32_t>(token_type::normal));
    }

    const bool spm = v.model == "llama";
    if (v.model == "gpt2") {
        find_array(f, "tokenizer.ggml.merges", true);
        v.merges = f.get_string_array("tokenizer.ggml.merges");
    }

    v.bos = special_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
    v.eos = special_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
    v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
    v.eot = special_id(f, "tokenizer.ggml.eot_token_id", -1, n);
    // The padding id only matters for batching, which this engine does not do; a bad one (some
    // converters write the vocabulary size) is ignored rather than refusing the model.
    try {
        v.pad = special_id(f, "tokenizer.ggml.padding_token_id", -1, n);
    } catch (const format_error &) {
        v.pad = -1;
    }

    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", spm || is_llama3_family(v.pre));
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", spm);
    // An explicit request we cannot honour is an inconsistent file; a default we cannot honour is
    // simply dropped.
    if (v.add_bos && v.bos < 0) {
        if (f.find("tokenizer.ggml.add_bos_token"))
            throw format_error("GGUF: tokenizer.ggml.add_bos_token is true but there is no BOS token id");
        v.add_bos = false;
    }
    if (v.add_eos && v.eos < 0)
        throw format_error("GGUF: tokenizer.ggml.add_eos_token is true but there is no EOS token id");
    return v;
}

// ---------------------------------------------------------------------------------------------

tokenizer::tokenizer(vocab_data v) : vocab_(std::move(v)) {
    const size_t n = vocab_.tokens.size();
    if (vocab_.scores.size() != n) vocab_.scores.resize(n, 0.0f);
    if (vocab_.token_types.size() != n) vocab_.token_types.resize(n, static_cast<int32_t>(token_type::normal));
    auto in_range = [n](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n; };
    for (int32_t *id : {&vocab_.bos, &vocab_.eos, &vocab_.unk, &vocab_.pad, &vocab_.eot})
        if (!in_range(*id)) *id = -1;

    token_to_id_.reserve(n);
    for (size_t i = 0; i < n; ++i) token_to_id_.emplace(vocab_.tokens[i], static_cast<int32_t>(i)); // first wins

    special_trie_.emplace_back();
    for (size_t i = 0; i < n; ++i) {
        const auto t = static_cast<token_type>(vocab_.token_types[i]);
        if ((t == token_type::control || t == token_type::user_defined || t == token_type::unknown) &&
            !vocab_.tokens[i].empty())
            add_special(vocab_.tokens[i], static_cast<int32_t>(i));
    }

    // End of generation: the declared EOS/EOT, plus the end-of-turn markers of the common chat
    // formats, which GGUF files often do not declare (llama.cpp finds them by text the same way).
    static const char *const k_eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
        "<|eom_id|>", "<EOT>", "_<EOT>",
        ("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"), // split: \x9C would take the "e"
        "<end_of_utterance>",
    };
    if (vocab_.eos >= 0) eog_ids_.push_back(vocab_.eos);
    if (vocab_.eot >= 0) eog_ids_.push_back(vocab_.eot);
    for (const char *t : k_eog_texts) {
        auto it = token_to_id_.find(t);
        // Only marker tokens count: a normal token spelled like this would be ordinary text.
        if (it != token_to_id_.end() && type_of(it->second) != token_type::normal &&
            type_of(it->second) != token_type::byte)
            eog_ids_.push_back(it->second);
    }
    std::sort(eog_ids_.begin(), eog_ids_.end());
    eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());
}

void tokenizer::add_special(const std::string &text, int32_t id) {
    int32_t node = 0;
    for (unsigned char c : text) {
        auto &next = special_trie_[node].next;
        auto it = std::lower_bound(next.begin(), next.end(), c,
                                   [](const std::pair<unsigned char, int32_t> &e, unsigned char b) { return e.first < b; });
        if (it != next.end() && it->first == c) {
            node = it->second;
        } else {
            const auto child = static_cast<int32_t>(special_trie_.size());
            next.insert(it, {c, child}); // `next` may dangle after emplace_back below; not used again
            special_trie_.emplace_back();
            node = child;
        }
    }
    if (special_trie_[node].token < 0) special_trie_[node].token = id; // first id of a duplicate wins
}

std::vector<tokenizer::fragment> tokenizer::split_special(std::string_view text, bool parse_special,
                                                           bool include_user_defined) const {
    std::vector<fragment> out;
    if (text.empty()) return out;
    auto accepts = [&](int32_t id) {
        const token_type t = type_of(id);
        if (t == token_type::user_defined) return include_user_defined;
        return parse_special; // control, unknown
    };
    const auto &root = special_trie_[0];
    size_t raw_start = 0;
    size_t i = 0;
    while (i < text.size()) {
        // Quick reject: most bytes cannot start any special token.
        const auto c0 = static_cast<unsigned char>(text[i]);
        const bool can_start = std::binary_search(
            root.next.begin(), root.next.end(), std::pair<unsigned char, int32_t>{c0, 0},
            [](const auto &a, const auto &b) { return a.first < b.first; });
        if (!can_start) {
            ++i;
            continue;
        }
        // Longest accepted special token starting at i.
        int32_t node = 0, best = -1;
        size_t best_len = 0;
        for (size_t j = i; j < text.size(); ++j) {
            const auto c = static_cast<unsigned char>(text[j]);
            const auto &next = special_trie_[node].next;
            auto it = std::lower_bound(next.begin(), next.end(), c,
                                       [](const std::pair<unsigned char, int32_t> &e, unsigned char b) { return e.first < b; });
            if (it == next.end() || it->first != c) break;
            node = it->second;
            const int32_t tok = special_trie_[node].token;
            if (tok >= 0 && accepts(tok)) {
                best = tok;
                best_len = j + 1 - i;
            }
        }
        if (best < 0) {
            ++i;
            continue;
        }
        if (i > raw_start) out.push_back({text.substr(raw_start, i - raw_start), -1});
        out.push_back({{}, best});
        i += best_len;
        raw_start = i;
    }
    if (raw_start < text.size()) out.push_back({text.substr(raw_start), -1});
    return out;
}

void tokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab())
        throw error("token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(n_vocab()) + " tokens");
}

const std::string &tokenizer::token_text(int32_t id) const {
    check_id(id);
    return vocab_.tokens[static_cast<size_t>(id)];
}

token_type tokenizer::type_of(int32_t id) const {
    check_id(id);
    return static_cast<token_type>(vocab_.token_types[static_cast<size_t>(id)]);
}

std::optional<int32_t> tokenizer::find_token(std::string_view text) const {
    auto it = token_to_id_.find(std::string(text));
    if (it == token_to_id_.end()) return std::nullopt;
    return it->second;
}

bool tokenizer::is_end_of_generation(int32_t id) const {
    return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

std::string tokenizer::decode(const std::vector<int32_t> &ids) const {
    std::string out;
    bool first_text = true;
    for (int32_t id : ids) {
        std::string piece = token_to_piece(id);
        if (piece.empty()) continue;
        // Sentencepiece put a "▁" in front of the text; the first piece carries it.
        if (first_text && space_prefix_ && piece[0] == ' ') piece.erase(0, 1);
        first_text = false;
        out += piece;
    }
    return out;
}

std::unique_ptr<tokenizer> make_tokenizer(const vocab_data &v) {
    if (v.tokens.empty()) throw format_error("tokenizer: the vocabulary is empty");
    if (!v.scores.empty() && v.scores.size() != v.tokens.size())
        throw format_error("tokenizer: " + std::to_string(v.scores.size()) + " scores for " +
                           std::to_string(v.tokens.size()) + " tokens");
    if (!v.token_types.empty() && v.token_types.size() != v.tokens.size())
        throw format_error("tokenizer: " + std::to_string(v.token_types.size()) + " token types for " +
                           std::to_string(v.tokens.size()) + " tokens");
    if (v.model == "llama") return make_spm_tokenizer(v);
    if (v.model == "gpt2") return make_bpe_tokenizer(v);
    throw format_error("tokenizer: unsupported tokenizer.ggml.model '" + v.model +
                       "' (supported: llama, gpt2)");
}

namespace detail {
bool unicode_is_whitespace(uint32_t cp) {
    // The White_Space property, which is what \s means in the Oniguruma / PCRE / Rust regexes
    // that the original tokenizers ran.
    switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}
} // namespace detail

} // namespace recur
