// Byte-level BPE (tokenizer.ggml.model = "gpt2"): GPT-2, Llama 3, Qwen 2, SmolLM, ...
//
//   text ──split_special──> raw fragments ──pre-tokenizer──> words ──byte map + merges──> ids
//
// The pre-tokenizers are the regexes the original tokenizers use (named by tokenizer.ggml.pre).
// std::regex has no \p{L}/\p{N}, so each regex is written out by hand as a matcher over code
// points that follows the regex's alternation order and backtracking exactly; the comment above
// each matcher gives the regex. Categories come from unicode_tables.cpp.
#include "recur/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <queue>
#include <unordered_map>

namespace recur {

namespace {

// ---- UTF-8 ------------------------------------------------------------------------------------

// One code point of the input and where its bytes are. An invalid byte becomes a code point of
// its own (U+FFFD, one byte long), so the pre-tokenizer treats it like a symbol but the word keeps
// the original byte: byte-level BPE then spells it exactly and decode gives it back.
struct cpt {
    uint32_t cp;
    uint32_t offset; // byte offset in the fragment
    uint8_t cls;     // one of the k_* classes below
    bool crlf;       // '\r' or '\n'
};
enum : uint8_t { k_other = 0, k_letter = 1, k_number = 2, k_space = 3 };

uint8_t classify(uint32_t cp) {
    // ASCII is nearly all of most text: answer it from a table built once.
    static const std::array<uint8_t, 128> ascii = [] {
        std::array<uint8_t, 128> t{};
        for (uint32_t c = 0; c < 128; ++c) {
            if (detail::unicode_is_whitespace(c)) t[c] = k_space;
            else if (detail::unicode_category(c) == detail::ucat::letter) t[c] = k_letter;
            else if (detail::unicode_category(c) == detail::ucat::number) t[c] = k_number;
            else t[c] = k_other;
        }
        return t;
    }();
    if (cp < 128) return ascii[cp];
    if (detail::unicode_is_whitespace(cp)) return k_space;
    switch (detail::unicode_category(cp)) {
    case detail::ucat::letter: return k_letter;
    case detail::ucat::number: return k_number;
    default: return k_other;
    }
}

// Decodes one code point at s[i]; returns its length, or 0 for an invalid sequence (overlong,
// surrogate, above U+10FFFF, truncated, stray continuation byte).
size_t utf8_decode(std::string_view s, size_t i, uint32_t &cp) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    size_t len;
    uint32_t min;
    if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; min = 0x80; }
    else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; min = 0x800; }
    else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; min = 0x10000; }
    else return 0;
    if (i + len > s.size()) return 0;
    for (size_t k = 1; k < len; ++k) {
        const auto b = static_cast<uint8_t>(s[i + k]);
        if ((b & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void utf8_append(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

std::vector<cpt> to_cpts(std::string_view s) {
    std::vector<cpt> out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        size_t len = utf8_decode(s, i, cp);
        if (len == 0) {
            cp = 0xFFFD;
            len = 1;
        }
        out.push_back({cp, static_cast<uint32_t>(i), classify(cp), cp == '\r' || cp == '\n'});
        i += len;
    }
    return out;
}

// ---- pre-tokenizers ---------------------------------------------------------------------------

enum class pre_regex { gpt2, llama3 };
struct pre_config {
    pre_regex regex = pre_regex::gpt2;
    size_t max_digits = 3;       // llama3: \p{N}{1,3}; qwen2: \p{N}
    bool digits_first = false;   // smollm & co: "\p{N}" splits first, then the GPT-2 regex
    bool ignore_merges = false;  // llama3: a word that is a whole token is taken as it is
};

bool lower_is(uint32_t cp, char c) { return cp < 128 && static_cast<char>(cp | 0x20) == c; }

// Contractions. case_insensitive: (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])
// otherwise: 's|'t|'re|'ve|'m|'ll|'d. Returns the end, or i when nothing matches.
size_t match_contraction(const std::vector<cpt> &c, size_t i, size_t e, bool case_insensitive) {
    if (c[i].cp != '\'' || i + 1 >= e) return i;
    auto is = [&](size_t k, char ch) {
        return case_insensitive ? lower_is(c[k].cp, ch) : c[k].cp == static_cast<uint32_t>(ch);
    };
    if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return i + 2;
    if (i + 2 < e && ((is(i + 1, 'r') && is(i + 2, 'e')) || (is(i + 1, 'v') && is(i + 2, 'e')) ||
                      (is(i + 1, 'l') && is(i + 2, 'l'))))
        return i + 3;
    return i;
}

size_t run_of(const std::vector<cpt> &c, size_t i, size_t e, uint8_t cls) {
    while (i < e && c[i].cls == cls) ++i;
    return i;
}

// Whitespace at i, the tail alternatives both regexes end with:  \s+(?!\S)|\s+
// The first backs off one character when the run is followed by a non-space, so that the space
// goes with the next word; the second takes a lone whitespace character that is followed by one.
size_t match_space_tail(const std::vector<cpt> &c, size_t i, size_t e) {
    const size_t k = run_of(c, i, e, k_space);
    if (k == e || k - i < 2) return k;
    return k - 1;
}

// GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const std::vector<cpt> &c, size_t i, size_t e) {
    if (size_t m = match_contraction(c, i, e, false); m > i) return m;
    // The optional space is only taken when what follows can complete the match.
    const size_t j = (c[i].cp == ' ' && i + 1 < e && c[i + 1].cls != k_space) ? i + 1 : i;
    switch (c[j].cls) {
    case k_letter: return run_of(c, j, e, k_letter);
    case k_number: return run_of(c, j, e, k_number);
    case k_other: return run_of(c, j, e, k_other);
    default: return match_space_tail(c, i, e);
    }
}

// Llama 3 (max_digits 3) and Qwen 2 (max_digits 1):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const std::vector<cpt> &c, size_t i, size_t e, size_t max_digits) {
    if (size_t m = match_contraction(c, i, e, true); m > i) return m;
    // [^\r\n\p{L}\p{N}]?\p{L}+ — one leading space or symbol (not a newline) may join the word.
    if (c[i].cls == k_letter) return run_of(c, i, e, k_letter);
    if (c[i].cls != k_number && !c[i].crlf && i + 1 < e && c[i + 1].cls == k_letter)
        return run_of(c, i + 1, e, k_letter);
    // \p{N}{1,3}
    if (c[i].cls == k_number) {
        size_t k = i;
        while (k < e && k - i < max_digits && c[k].cls == k_number) ++k;
        return k;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t j = (c[i].cp == ' ' && i + 1 < e && c[i + 1].cls == k_other) ? i + 1 : i;
    if (c[j].cls == k_other) {
        size_t k = run_of(c, j, e, k_other);
        while (k < e && c[k].crlf) ++k;
        return k;
    }
    // \s*[\r\n]+ — greedy \s* backs off to the last newline of the whitespace run.
    const size_t k = run_of(c, i, e, k_space);
    for (size_t m = k; m > i; --m)
        if (c[m - 1].crlf) return m;
    return match_space_tail(c, i, e);
}

void split_words(const pre_config &cfg, std::string_view text, std::vector<std::string_view> &words) {
    const std::vector<cpt> c = to_cpts(text);
    auto byte_at = [&](size_t k) { return k < c.size() ? c[k].offset : text.size(); };
    auto split_range = [&](size_t b, size_t e) {
        for (size_t i = b; i < e;) {
            size_t m = cfg.regex == pre_regex::gpt2 ? match_gpt2(c, i, e) : match_llama3(c, i, e, cfg.max_digits);
            if (m <= i) m = i + 1; // cannot happen (every class is covered); never loop forever
            words.push_back(text.substr(byte_at(i), byte_at(m) - byte_at(i)));
            i = m;
        }
    };
    if (!cfg.digits_first) {
        split_range(0, c.size());
        return;
    }
    // \p{N} first: every digit is a word by itself, and the main regex runs between them (its
    // lookahead sees the end of each stretch as the end of text, as a sequence of splits does).
    size_t start = 0;
    for (size_t i = 0; i < c.size(); ++i) {
        if (c[i].cls != k_number) continue;
        split_range(start, i);
        split_range(i, i + 1);
        start = i + 1;
    }
    split_range(start, c.size());
}

// Pre-tokenizer names, as llama.cpp's convert script writes them, grouped by regex.
std::optional<pre_config> find_pre(std::string_view pre) {
    auto in = [&](std::initializer_list<std::string_view> names) {
        return std::find(names.begin(), names.end(), pre) != names.end();
    };
    pre_config cfg;
    if (in({"default", "gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-v1-en",
            "jina-v2-es", "jina-v2-de", "jina-es", "jina-de", "jina-v2-code", "gigachat", "exaone4",
            "trillion", "mellum"}))
        return cfg;
    if (in({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})) {
        cfg.regex = pre_regex::llama3;
        cfg.ignore_merges = true;
        return cfg;
    }
    if (in({"dbrx", "smaug-bpe", "chatglm-bpe", "glm4"})) {
        cfg.regex = pre_regex::llama3;
        return cfg;
    }
    if (in({"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan"})) {
        cfg.regex = pre_regex::llama3;
        cfg.max_digits = 1;
        return cfg;
    }
    if (in({"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"})) {
        cfg.digits_first = true;
        return cfg;
    }
    return std::nullopt;
}

// ---- GPT-2's byte <-> character map -----------------------------------------------------------

// Printable bytes stand for themselves; the others (controls, space, 0x7F-0xA0, 0xAD) are moved
// to U+0100 and up, in byte order, so every byte is a visible character in vocab strings.
struct byte_map {
    std::array<uint32_t, 256> to_cp{};
    std::array<int16_t, 324> to_byte{}; // indexed by code point; -1 where no byte maps there
    byte_map() {
        to_byte.fill(-1);
        uint32_t next = 256;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            to_cp[b] = printable ? b : next++;
            to_byte[to_cp[b]] = static_cast<int16_t>(b);
        }
    }
};
const byte_map &bytes() {
    static const byte_map m;
    return m;
}

// ---- the tokenizer ----------------------------------------------------------------------------

class bpe_tokenizer final : public tokenizer {
  public:
    bpe_tokenizer(vocab_data v, pre_config cfg) : tokenizer(std::move(v)), cfg_(cfg) {
        const byte_map &bm = bytes();
        const auto n = static_cast<int32_t>(vocab_.tokens.size());
        for (int b = 0; b < 256; ++b) {
            std::string s;
            utf8_append(s, bm.to_cp[b]);
            byte_text_[b] = s;
            auto it = token_to_id_.find(s);
            byte_id_[b] = it != token_to_id_.end() ? it->second : -1;
        }

        // Merges are keyed by the pair of ids. A merge whose parts or result are not vocabulary
        // tokens still takes part (a later merge may build a real token from it): such strings
        // get ids past the vocabulary, and a word left holding one is spelled out byte by byte.
        std::unordered_map<std::string, int32_t> extra;
        auto id_of = [&](const std::string &s) -> int32_t {
            auto it = token_to_id_.find(s);
            if (it != token_to_id_.end()) return it->second;
            auto [e, inserted] = extra.emplace(s, n + static_cast<int32_t>(extra_text_.size()));
            if (inserted) extra_text_.push_back(s);
            return e->second;
        };
        merges_.reserve(vocab_.merges.size());
        for (size_t r = 0; r < vocab_.merges.size(); ++r) {
            const std::string &m = vocab_.merges[r];
            const size_t sp = m.find(' ', 1); // a part may itself be a space-like character
            if (sp == std::string::npos || sp + 1 >= m.size()) continue;
            const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
            const int32_t a = id_of(left), b = id_of(right), ab = id_of(left + right);
            merges_.emplace(pair_key(a, b), merge{static_cast<int32_t>(r), ab}); // first rank wins
        }

        pieces_.resize(vocab_.tokens.size());
        for (size_t i = 0; i < pieces_.size(); ++i) pieces_[i] = render(i);
    }

    std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
        std::vector<int32_t> out;
        if (add_special && adds_bos()) out.push_back(vocab_.bos);
        std::unordered_map<std::string_view, std::vector<int32_t>> cache; // repeated words, this call
        std::vector<std::string_view> words;
        scratch s;
        for (const fragment &f : split_special(text, parse_special, /*include_user_defined=*/true)) {
            if (f.token >= 0) {
                out.push_back(f.token);
                continue;
            }
            words.clear();
            split_words(cfg_, f.text, words);
            for (std::string_view w : words) {
                if (w.size() <= 32) {
                    auto it = cache.find(w);
                    if (it == cache.end()) {
                        std::vector<int32_t> ids;
                        encode_word(w, ids, s);
                        it = cache.emplace(w, std::move(ids)).first;
                    }
                    out.insert(out.end(), it->second.begin(), it->second.end());
                } else {
                    encode_word(w, out, s);
                }
            }
        }
        if (add_special && adds_eos()) out.push_back(vocab_.eos);
        return out;
    }

    std::string token_to_piece(int32_t id) const override {
        check_id(id);
        return pieces_[static_cast<size_t>(id)];
    }

  private:
    struct merge {
        int32_t rank;
        int32_t result;
    };
    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    struct candidate {
        int32_t rank;
        uint32_t pos; // index of the left symbol; lower first among equal ranks
        int32_t left, right, result;
        bool operator>(const candidate &o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    struct scratch {
        std::vector<int32_t> id;
        std::vector<int32_t> prev, next;
        std::vector<candidate> heap;
    };

    void push_pair(scratch &s, int32_t l, int32_t r) const {
        if (l < 0 || r < 0) return;
        auto it = merges_.find(pair_key(s.id[l], s.id[r]));
        if (it == merges_.end()) return;
        s.heap.push_back({it->second.rank, static_cast<uint32_t>(l), s.id[l], s.id[r], it->second.result});
        std::push_heap(s.heap.begin(), s.heap.end(), std::greater<>());
    }

    void emit(int32_t id, std::vector<int32_t> &out) const {
        if (id < n_vocab()) {
            out.push_back(id);
            return;
        }
        // A merge result that is not a token: its bytes, one token each.
        const std::string &t = extra_text_[static_cast<size_t>(id - n_vocab())];
        for (size_t i = 0; i < t.size();) {
            uint32_t cp = 0;
            size_t len = utf8_decode(t, i, cp);
            if (len == 0) len = 1;
            if (cp < bytes().to_byte.size() && bytes().to_byte[cp] >= 0) emit_byte(static_cast<uint8_t>(bytes().to_byte[cp]), out);
            i += len;
        }
    }
    void emit_byte(uint8_t b, std::vector<int32_t> &out) const {
        if (byte_id_[b] >= 0) out.push_back(byte_id_[b]);
        else if (vocab_.unk >= 0) out.push_back(vocab_.unk); // a vocabulary without this byte
    }

    void encode_word(std::string_view w, std::vector<int32_t> &out, scratch &s) const {
        if (cfg_.ignore_merges) {
            std::string mapped;
            for (unsigned char b : w) mapped += byte_text_[b];
            auto it = token_to_id_.find(mapped);
            if (it != token_to_id_.end()) {
                out.push_back(it->second);
                return;
            }
        }
        const size_t n = w.size();
        s.id.resize(n);
        s.prev.resize(n);
        s.next.resize(n);
        s.heap.clear();
        for (size_t i = 0; i < n; ++i) {
            const auto b = static_cast<unsigned char>(w[i]);
            // A byte the vocabulary lacks is kept as a symbol that no merge will touch.
            s.id[i] = byte_id_[b] >= 0 ? byte_id_[b] : INT32_MIN + b;
            s.prev[i] = static_cast<int32_t>(i) - 1;
            s.next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
        }
        for (size_t i = 0; i + 1 < n; ++i) push_pair(s, static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
        // Lowest rank first, leftmost among equals; an entry is stale when either symbol has
        // changed since it was queued.
        while (!s.heap.empty()) {
            std::pop_heap(s.heap.begin(), s.heap.end(), std::greater<>());
            const candidate c = s.heap.back();
            s.heap.pop_back();
            const auto l = static_cast<int32_t>(c.pos);
            const int32_t r = s.next[l];
            if (s.id[l] != c.left || r < 0 || s.id[r] != c.right) continue;
            s.id[l] = c.result;
            s.id[r] = INT32_MIN + 256; // dead
            s.next[l] = s.next[r];
            if (s.next[r] >= 0) s.prev[s.next[r]] = l;
            push_pair(s, s.prev[l], l);
            push_pair(s, l, s.next[l]);
        }
        for (int32_t i = 0; i >= 0; i = s.next[i]) {
            const int32_t id = s.id[i];
            if (id >= 0) emit(id, out);
            else emit_byte(static_cast<uint8_t>(id - INT32_MIN), out);
        }
    }

    std::string render(size_t i) const {
        const std::string &t = vocab_.tokens[i];
        switch (static_cast<token_type>(vocab_.token_types[i])) {
        case token_type::control:
        case token_type::unused:
            return {};
        case token_type::unknown:
            return "\xEF\xBF\xBD";
        case token_type::user_defined:
            return t; // added tokens are stored as plain text, not byte-mapped
        default: {
            // Un-map every character back to its byte; a character outside the map (a vocabulary
            // that stores some text unmapped) is kept as its UTF-8.
            std::string s;
            for (size_t k = 0; k < t.size();) {
                uint32_t cp = 0;
                size_t len = utf8_decode(t, k, cp);
                if (len == 0) {
                    s.push_back(t[k++]);
                    continue;
                }
                if (cp < bytes().to_byte.size() && bytes().to_byte[cp] >= 0) s.push_back(static_cast<char>(bytes().to_byte[cp]));
                else s.append(t, k, len);
                k += len;
            }
            return s;
        }
        }
    }

    pre_config cfg_;
    std::array<std::string, 256> byte_text_;
    std::array<int32_t, 256> byte_id_{};
    std::unordered_map<uint64_t, merge> merges_;
    std::vector<std::string> extra_text_;
    std::vector<std::string> pieces_;
};

} // namespace

std::unique_ptr<tokenizer> make_bpe_tokenizer(const vocab_data &v) {
    std::optional<pre_config> cfg = find_pre(v.pre);
    if (!cfg) {
        if (v.pre.empty())
            std::fprintf(stderr, "recur: warning: the vocabulary names no pre-tokenizer; using the GPT-2 regex\n");
        else
            std::fprintf(stderr, "recur: warning: unknown pre-tokenizer '%s'; using the GPT-2 regex\n", v.pre.c_str());
        cfg = pre_config{};
    }
    if (v.merges.empty()) throw format_error("tokenizer: gpt2 vocabulary without merges");
    return std::make_unique<bpe_tokenizer>(v, *cfg);
}

namespace detail {
std::vector<std::string> pre_tokenize(std::string_view text, std::string_view pre) {
    const std::optional<pre_config> cfg = find_pre(pre);
    if (!cfg) throw format_error("unknown pre-tokenizer '" + std::string(pre) + "'");
    std::vector<std::string_view> words;
    split_words(*cfg, text, words);
    return {words.begin(), words.end()};
}
} // namespace detail

} // namespace recur
