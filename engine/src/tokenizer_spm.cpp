// Sentencepiece vocabularies (tokenizer.ggml.model = "llama") run through the sentencepiece
// library itself, so segmentation is exactly what the model was trained with.
//
// A GGUF file carries the pieces, scores and types but not the ModelProto, and the Debian
// libsentencepiece-dev ships no generated protobuf header, so the ModelProto is written here by
// hand in protobuf wire format (field numbers from sentencepiece_model.proto) and loaded with
// LoadFromSerializedProto. The reverse (a .model file) is read with a small bounds-checked
// wire-format reader, to recover piece types and the normalizer settings the public API hides.
#include "recur/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cmath>
#include <cstring>

namespace recur {

namespace {

// ---- protobuf wire format ---------------------------------------------------------------------

enum wire : uint32_t { wire_varint = 0, wire_fixed64 = 1, wire_bytes = 2, wire_fixed32 = 5 };

void put_varint(std::string &out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
void put_key(std::string &out, uint32_t field, wire w) { put_varint(out, (uint64_t{field} << 3) | w); }
// int32 fields are varints of the sign-extended 64-bit value (so -1 takes ten bytes).
void put_int(std::string &out, uint32_t field, int64_t v) {
    put_key(out, field, wire_varint);
    put_varint(out, static_cast<uint64_t>(v));
}
void put_bool(std::string &out, uint32_t field, bool v) { put_int(out, field, v ? 1 : 0); }
void put_bytes(std::string &out, uint32_t field, std::string_view b) {
    put_key(out, field, wire_bytes);
    put_varint(out, b.size());
    out.append(b);
}
void put_float(std::string &out, uint32_t field, float f) {
    put_key(out, field, wire_fixed32);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((u >> (8 * i)) & 0xFF)); // little-endian
}

// Reads one message's fields; every length is checked against the buffer.
class pb_reader {
  public:
    explicit pb_reader(std::string_view buf) : buf_(buf) {}
    bool done() const { return pos_ >= buf_.size(); }
    // Next field: number and wire type; the value is read by the matching call below.
    std::pair<uint32_t, uint32_t> key() {
        const uint64_t k = varint();
        return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
    }
    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= buf_.size()) fail("truncated varint");
            const auto b = static_cast<uint8_t>(buf_[pos_++]);
            v |= uint64_t{b & 0x7Fu} << shift;
            if (b < 0x80) return v;
        }
        fail("varint longer than 10 bytes");
    }
    std::string_view bytes() {
        const uint64_t n = varint();
        if (n > buf_.size() - pos_) fail("length-delimited field runs past the end");
        std::string_view s = buf_.substr(pos_, static_cast<size_t>(n));
        pos_ += static_cast<size_t>(n);
        return s;
    }
    float fixed32_float() {
        if (buf_.size() - pos_ < 4) fail("truncated fixed32");
        uint32_t u = 0;
        for (int i = 0; i < 4; ++i) u |= uint32_t{static_cast<uint8_t>(buf_[pos_ + i])} << (8 * i);
        pos_ += 4;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    void skip(uint32_t w) {
        switch (w) {
        case wire_varint: varint(); break;
        case wire_fixed64: advance(8); break;
        case wire_bytes: bytes(); break;
        case wire_fixed32: advance(4); break;
        default: fail("unsupported wire type " + std::to_string(w));
        }
    }

  private:
    void advance(size_t n) {
        if (buf_.size() - pos_ < n) fail("truncated field");
        pos_ += n;
    }
    [[noreturn]] void fail(const std::string &what) const {
        throw format_error("sentencepiece model: " + what + " at byte " + std::to_string(pos_));
    }
    std::string_view buf_;
    size_t pos_ = 0;
};

// Field numbers of sentencepiece_model.proto.
namespace field {
constexpr uint32_t model_pieces = 1, model_trainer_spec = 2, model_normalizer_spec = 3;
constexpr uint32_t piece_piece = 1, piece_score = 2, piece_type = 3;
constexpr uint32_t trainer_model_type = 3, trainer_vocab_size = 4, trainer_treat_whitespace_as_suffix = 24,
                   trainer_byte_fallback = 35,
                   trainer_unk_id = 40, trainer_bos_id = 41, trainer_eos_id = 42, trainer_pad_id = 43,
                   trainer_unk_piece = 45, trainer_bos_piece = 46, trainer_eos_piece = 47,
                   trainer_pad_piece = 48;
constexpr uint32_t norm_name = 1, norm_precompiled_charsmap = 2, norm_add_dummy_prefix = 3, norm_remove_extra_whitespaces = 4,
                   norm_escape_whitespaces = 5;
} // namespace field
constexpr int64_t model_type_unigram = 1, model_type_bpe = 2;

// Runs one of the library's loaders (LoadFromSerializedProto, Load). The library reports most
// problems as a Status, but its double-array trie (Darts) throws on some pieces — a piece that
// begins with a NUL byte is a "zero-length key" to it — so exceptions become a Status too (found
// by tests/fuzz/fuzz_gguf: the exception used to end the process).
template <class Load> sentencepiece::util::Status load_status(Load &&load) {
    try {
        return load();
    } catch (const std::exception &e) {
        return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInvalidArgument, e.what());
    }
}
sentencepiece::util::Status load_proto(sentencepiece::SentencePieceProcessor &sp, std::string_view proto) {
    return load_status([&] { return sp.LoadFromSerializedProto(absl::string_view(proto.data(), proto.size())); });
}

// ---- the tokenizer ----------------------------------------------------------------------------

class spm_tokenizer final : public tokenizer {
  public:
    // `sp` encodes text that starts a fragment (dummy prefix as the model says); `sp_cont`, when
    // given, is the same model without the dummy prefix and encodes the rest of a fragment that
    // was cut at a newline. Cutting is exact only when no piece contains a newline and the
    // normalizer does not look across the cut (identity, no whitespace folding): the caller
    // passes sp_cont only then.
    spm_tokenizer(vocab_data v, std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_cont)
        : tokenizer(std::move(v)), sp_(std::move(sp)), sp_cont_(std::move(sp_cont)) {
        space_prefix_ = vocab_.add_space_prefix;
        pieces_.resize(vocab_.tokens.size());
        for (size_t i = 0; i < pieces_.size(); ++i) pieces_[i] = render(i);
    }

    std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
        std::vector<int32_t> out;
        if (add_special && adds_bos()) out.push_back(vocab_.bos);
        // User-defined pieces are left to sentencepiece, which always matches them itself.
        // Each raw fragment gets its own dummy prefix, which is also what llama.cpp does after a
        // special token.
        for (const fragment &f : split_special(text, parse_special, /*include_user_defined=*/false)) {
            if (f.token >= 0) out.push_back(f.token);
            else encode_fragment(f.text, out);
        }
        if (add_special && adds_eos()) out.push_back(vocab_.eos);
        return out;
    }

    std::string token_to_piece(int32_t id) const override {
        check_id(id);
        return pieces_[static_cast<size_t>(id)];
    }

  private:
    void encode_with(const sentencepiece::SentencePieceProcessor &sp, std::string_view text,
                     std::vector<int> &ids, std::vector<int32_t> &out) const {
        // Like the loaders (load_status above), the library may throw rather than return a
        // Status; callers expect recur::error for anything a text can provoke.
        sentencepiece::util::Status status;
        try {
            status = sp.Encode(absl::string_view(text.data(), text.size()), &ids);
        } catch (const std::exception &e) {
            throw error(std::string("sentencepiece: ") + e.what());
        }
        if (!status.ok()) throw error("sentencepiece: " + std::string(status.message()));
        out.insert(out.end(), ids.begin(), ids.end());
    }

    // The library's BPE slows down on long inputs (a whole book in one call takes about twice as
    // long as line by line), so long text is encoded in newline-terminated chunks when that is
    // known to give the same ids.
    void encode_fragment(std::string_view text, std::vector<int32_t> &out) const {
        std::vector<int> ids;
        constexpr size_t k_chunk = 256;
        if (!sp_cont_ || text.size() <= k_chunk) {
            encode_with(*sp_, text, ids, out);
            return;
        }
        size_t start = 0;
        while (start < text.size()) {
            size_t end = text.size();
            if (text.size() - start > k_chunk) {
                const size_t nl = text.find('\n', start + k_chunk);
                if (nl != std::string_view::npos) end = nl + 1;
            }
            encode_with(start == 0 ? *sp_ : *sp_cont_, text.substr(start, end - start), ids, out);
            start = end;
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
            return t;
        case token_type::byte:
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
                char *end = nullptr;
                const std::string hex = t.substr(3, 2);
                const unsigned long b = std::strtoul(hex.c_str(), &end, 16);
                if (end && *end == '\0') return std::string(1, static_cast<char>(b));
            }
            return t;
        default: {
            // "▁" (U+2581, E2 96 81) is sentencepiece's escaped space.
            std::string s;
            s.reserve(t.size());
            for (size_t k = 0; k < t.size();) {
                if (t.compare(k, 3, "\xE2\x96\x81") == 0) {
                    s.push_back(' ');
                    k += 3;
                } else {
                    s.push_back(t[k++]);
                }
            }
            return s;
        }
        }
    }

    std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_, sp_cont_;
    std::vector<std::string> pieces_;
};

bool scores_look_like_bpe(const vocab_data &v) {
    // Sentencepiece BPE stores -(merge order) as the score of each piece, so every score is a
    // whole number; unigram stores log-probabilities. (llama.cpp merges by score for every
    // "llama" vocabulary, which is the BPE algorithm, so BPE is the compatible default.)
    for (size_t i = 0; i < v.tokens.size(); ++i) {
        if (v.token_types[i] != static_cast<int32_t>(token_type::normal)) continue;
        const float s = v.scores[i];
        if (std::isfinite(s) && s != std::floor(s)) return false;
    }
    return true;
}

// True when no piece that segmentation can produce contains a newline other than the newline
// itself, so cutting text after a newline cannot change the ids.
bool newline_is_a_boundary(const vocab_data &v) {
    for (size_t i = 0; i < v.tokens.size(); ++i) {
        const auto t = static_cast<token_type>(v.token_types[i]);
        if (t == token_type::control || t == token_type::unknown || t == token_type::byte) continue;
        if (v.tokens[i] != "\n" && v.tokens[i].find('\n') != std::string::npos) return false;
    }
    return true;
}

// The same model with add_dummy_prefix off, for the chunks after the first. Appending a second
// normalizer_spec to the serialized ModelProto overrides just that field: protobuf merges
// repeated occurrences of a message field.
std::unique_ptr<sentencepiece::SentencePieceProcessor> continuation_processor(std::string proto) {
    std::string norm;
    put_bool(norm, field::norm_add_dummy_prefix, false);
    put_bytes(proto, field::model_normalizer_spec, norm);
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    if (!load_proto(*sp, proto).ok()) return nullptr;
    return sp;
}

} // namespace

namespace detail {

std::string build_sentencepiece_proto(const vocab_data &in) {
    vocab_data v = in;
    const size_t n = v.tokens.size();
    v.scores.resize(n, 0.0f);
    v.token_types.resize(n, static_cast<int32_t>(token_type::normal));

    std::string model;
    bool has_byte = false;
    for (size_t i = 0; i < n; ++i) {
        int32_t type = v.token_types[i];
        if (type < 1 || type > 6) type = static_cast<int32_t>(token_type::normal);
        // Sentencepiece needs exactly one UNKNOWN piece; trust the declared id over the type.
        if (static_cast<int32_t>(i) == v.unk) type = static_cast<int32_t>(token_type::unknown);
        else if (type == static_cast<int32_t>(token_type::unknown) && v.unk >= 0)
            type = static_cast<int32_t>(token_type::control);
        if (type == static_cast<int32_t>(token_type::byte)) has_byte = true;
        // Sentencepiece rejects empty pieces; the placeholder keeps the ids aligned.
        const std::string text = v.tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : v.tokens[i];
        std::string piece;
        put_bytes(piece, field::piece_piece, text);
        put_float(piece, field::piece_score, v.scores[i]);
        put_int(piece, field::piece_type, type);
        put_bytes(model, field::model_pieces, piece);
    }

    std::string trainer;
    put_int(trainer, field::trainer_model_type, scores_look_like_bpe(v) ? model_type_bpe : model_type_unigram);
    put_int(trainer, field::trainer_vocab_size, static_cast<int64_t>(n));
    put_bool(trainer, field::trainer_byte_fallback, has_byte);
    put_int(trainer, field::trainer_unk_id, v.unk);
    put_int(trainer, field::trainer_bos_id, v.bos);
    put_int(trainer, field::trainer_eos_id, v.eos);
    put_int(trainer, field::trainer_pad_id, v.pad);
    // The library looks BOS/EOS/UNK/PAD up by piece text, so name them as this vocabulary does.
    auto name = [&](int32_t id, uint32_t f) {
        if (id >= 0 && static_cast<size_t>(id) < n && !v.tokens[static_cast<size_t>(id)].empty())
            put_bytes(trainer, f, v.tokens[static_cast<size_t>(id)]);
    };
    name(v.unk, field::trainer_unk_piece);
    name(v.bos, field::trainer_bos_piece);
    name(v.eos, field::trainer_eos_piece);
    name(v.pad, field::trainer_pad_piece);
    put_bytes(model, field::model_trainer_spec, trainer);

    // GGUF vocabularies carry no normalization rules: identity, with spaces escaped to "▁" and
    // kept as they are (llama.cpp tokenizes "  a" with both spaces).
    std::string norm;
    put_bytes(norm, field::norm_name, "identity");
    put_bool(norm, field::norm_add_dummy_prefix, v.add_space_prefix);
    put_bool(norm, field::norm_remove_extra_whitespaces, false);
    put_bool(norm, field::norm_escape_whitespaces, true);
    put_bytes(model, field::model_normalizer_spec, norm);
    return model;
}

} // namespace detail

std::unique_ptr<tokenizer> make_spm_tokenizer(const vocab_data &v) {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const std::string proto = detail::build_sentencepiece_proto(v);
    const auto status = load_proto(*sp, proto);
    if (!status.ok())
        throw format_error("tokenizer: sentencepiece rejects the GGUF vocabulary: " + std::string(status.message()));
    if (sp->GetPieceSize() != static_cast<int>(v.tokens.size()))
        throw format_error("tokenizer: sentencepiece built " + std::to_string(sp->GetPieceSize()) +
                           " pieces from " + std::to_string(v.tokens.size()) + " tokens");
    // The normalizer built above is the identity, so only the vocabulary decides about chunking.
    auto cont = newline_is_a_boundary(v) ? continuation_processor(proto) : nullptr;
    return std::make_unique<spm_tokenizer>(v, std::move(sp), std::move(cont));
}

std::unique_ptr<tokenizer> load_sentencepiece_file(const std::string &model_path) {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = load_status([&] { return sp->Load(absl::string_view(model_path)); });
    if (!status.ok()) throw error("cannot load sentencepiece model " + model_path + ": " + std::string(status.message()));

    // The public API cannot tell normal from user-defined pieces, nor report add_dummy_prefix, so
    // read those from the proto the library just validated.
    vocab_data v;
    v.model = "llama";
    v.add_bos = true; // the Llama convention; a .model file does not say
    v.add_space_prefix = true; // proto default
    int64_t unk = 0, bos = 1, eos = 2, pad = -1; // proto defaults
    bool remove_extra_ws = true;                 // proto default
    bool chunkable_normalizer = true;
    const std::string serialized = sp->serialized_model_proto();
    pb_reader model(serialized);
    while (!model.done()) {
        const auto [f, w] = model.key();
        if (f == field::model_pieces && w == wire_bytes) {
            pb_reader piece(model.bytes());
            std::string text;
            float score = 0.0f;
            int32_t type = static_cast<int32_t>(token_type::normal);
            while (!piece.done()) {
                const auto [pf, pw] = piece.key();
                if (pf == field::piece_piece && pw == wire_bytes) text = std::string(piece.bytes());
                else if (pf == field::piece_score && pw == wire_fixed32) score = piece.fixed32_float();
                else if (pf == field::piece_type && pw == wire_varint) type = static_cast<int32_t>(piece.varint());
                else piece.skip(pw);
            }
            v.tokens.push_back(std::move(text));
            v.scores.push_back(score);
            v.token_types.push_back(type >= 1 && type <= 6 ? type : 1);
        } else if (f == field::model_trainer_spec && w == wire_bytes) {
            pb_reader t(model.bytes());
            while (!t.done()) {
                const auto [tf, tw] = t.key();
                if (tw != wire_varint) {
                    t.skip(tw);
                    continue;
                }
                const auto val = static_cast<int64_t>(static_cast<int32_t>(t.varint())); // int32 fields
                if (tf == field::trainer_treat_whitespace_as_suffix) chunkable_normalizer &= val == 0;
                else if (tf == field::trainer_unk_id) unk = val;
                else if (tf == field::trainer_bos_id) bos = val;
                else if (tf == field::trainer_eos_id) eos = val;
                else if (tf == field::trainer_pad_id) pad = val;
            }
        } else if (f == field::model_normalizer_spec && w == wire_bytes) {
            pb_reader nspec(model.bytes());
            while (!nspec.done()) {
                const auto [nf, nw] = nspec.key();
                if (nf == field::norm_add_dummy_prefix && nw == wire_varint) v.add_space_prefix = nspec.varint() != 0;
                else if (nf == field::norm_remove_extra_whitespaces && nw == wire_varint) remove_extra_ws = nspec.varint() != 0;
                else if (nf == field::norm_precompiled_charsmap && nw == wire_bytes) chunkable_normalizer &= nspec.bytes().empty();
                else nspec.skip(nw);
            }
        } else {
            model.skip(w);
        }
    }
    chunkable_normalizer &= !remove_extra_ws;
    if (v.tokens.size() != static_cast<size_t>(sp->GetPieceSize()))
        throw format_error("sentencepiece model " + model_path + ": piece count does not match the library's");
    const auto n = static_cast<int64_t>(v.tokens.size());
    auto valid = [n](int64_t id) { return id >= 0 && id < n ? static_cast<int32_t>(id) : -1; };
    v.unk = valid(unk);
    v.bos = valid(bos);
    v.eos = valid(eos);
    v.pad = valid(pad);
    if (v.bos < 0) v.add_bos = false;
    // Chunking also needs a normalizer that treats each character on its own: no rule table, no
    // whitespace folding, no whitespace suffix.
    auto cont = (chunkable_normalizer && newline_is_a_boundary(v)) ? continuation_processor(serialized) : nullptr;
    return std::make_unique<spm_tokenizer>(std::move(v), std::move(sp), std::move(cont));
}

} // namespace recur
