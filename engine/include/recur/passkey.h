#pragma once
// Passkey (needle-in-a-haystack) prompts and greedy answers: `recur passkey` measures retrieval
// with them, and `recur convert --kind auto` checks that the hybrid it keeps still retrieves like
// the original (docs/FORMAT.md "Choosing the kind").
//
//  * The prompt is laid out in tokens so that every length is exact:
//        [BOS] preamble  filler[s, s+k)  needle  filler[s+k, s+budget)  question
//    The filler is a cyclic token stream (a short file repeats); `s` and the insertion point k
//    are moved forward to the next word start so neither the needle nor the excerpt begins
//    inside a word.
//  * Randomness is splitmix64 arithmetic only (no std:: distribution, whose output is
//    implementation-defined), so a seed gives the same passkeys and depths everywhere, and each
//    (length, trial) pair draws from its own stream: adding a length changes no other length.
#include "recur/splitmix64.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace recur {

class context;
class tokenizer;

// What one trial hides and where; a pure function of (seed, length, trial).
struct passkey_trial {
    int passkey = 0;           // 10000..99999
    double depth = 0;          // requested fraction of the filler before the needle, [0, 1)
    uint64_t filler_start = 0; // requested start in the cyclic filler stream (reduced mod its size)
};

inline passkey_trial make_passkey_trial(uint64_t seed, int64_t length, int trial) {
    uint64_t s = seed;
    uint64_t t = uint64_t(length);
    uint64_t u = uint64_t(trial) + 1;
    s ^= splitmix64(t) ^ (splitmix64(u) << 1);
    passkey_trial r;
    r.passkey = 10000 + int(splitmix64(s) % 90000);
    r.depth = double(splitmix64(s) >> 11) * 0x1.0p-53;
    r.filler_start = splitmix64(s);
    return r;
}

inline std::string passkey_needle(int passkey) {
    const std::string k = std::to_string(passkey);
    return "The pass key is " + k + ". Remember it. " + k + " is the pass key.";
}
// The instruction llama.cpp's passkey example opens with, so an instruction-following model
// knows what is asked; plain completion, no chat template.
inline const char *passkey_preamble() {
    return "There is an important piece of information hidden inside a lot of irrelevant text. "
           "Find it and memorize it. I will quiz you about it.";
}
inline const char *passkey_question() { return "What is the pass key? The pass key is"; }

// Token ids of the pieces, tokenised by the caller (each without BOS).
struct passkey_parts {
    int32_t bos = -1; // prepended when >= 0
    std::vector<int32_t> preamble, needle, question;
    std::vector<int32_t> filler;     // the filler text's tokens, used cyclically
    std::vector<uint8_t> word_start; // [filler.size()] 1 where a filler token begins a word
};

struct passkey_prompt {
    std::vector<int32_t> tokens;  // exactly the requested length
    size_t filler_begin = 0;      // index in tokens of the first filler token
    size_t needle_begin = 0;      // needle occupies [needle_begin, needle_begin + needle.size())
    size_t question_begin = 0;    // the question runs to the end
    size_t filler_tokens = 0;     // filler tokens in the prompt (before + after the needle)
    size_t filler_start = 0;      // where in the filler stream the excerpt starts (after snapping)
    double depth = 0;             // filler before the needle / filler_tokens (after snapping)
};

// Fixed tokens around the filler: what a prompt of n_tokens leaves for filler is n_tokens minus this.
inline size_t passkey_overhead(const passkey_parts &p) {
    return (p.bos >= 0 ? 1 : 0) + p.preamble.size() + p.needle.size() + p.question.size();
}

// Throws std::invalid_argument when n_tokens cannot hold the fixed parts or the filler is empty.
inline passkey_prompt build_passkey_prompt(const passkey_parts &p, size_t n_tokens, double depth,
                                           uint64_t filler_start) {
    if (p.filler.empty()) throw std::invalid_argument("the filler text has no tokens");
    if (p.word_start.size() != p.filler.size())
        throw std::invalid_argument("passkey: word_start must have one flag per filler token");
    const size_t overhead = passkey_overhead(p);
    if (n_tokens < overhead)
        throw std::invalid_argument("a passkey prompt of " + std::to_string(n_tokens) + " tokens cannot hold the " +
                                    std::to_string(overhead) + " tokens of instruction, needle and question");
    const size_t n = p.filler.size();
    const size_t budget = n_tokens - overhead;
    // The first word start at or after `from` in the cyclic stream (from itself when none).
    auto next_word = [&](size_t from) {
        for (size_t i = 0; i < n; ++i)
            if (p.word_start[(from + i) % n]) return (from + i) % n;
        return from % n;
    };
    passkey_prompt r;
    r.filler_start = next_word(size_t(filler_start % n));
    depth = depth < 0 ? 0 : depth > 1 ? 1 : depth;
    size_t k = size_t(std::llround(depth * double(budget)));
    if (k > budget) k = budget;
    while (k > 0 && k < budget && !p.word_start[(r.filler_start + k) % n]) ++k; // to a word start
    r.filler_tokens = budget;
    r.depth = budget ? double(k) / double(budget) : 0.0;

    r.tokens.reserve(n_tokens);
    if (p.bos >= 0) r.tokens.push_back(p.bos);
    r.tokens.insert(r.tokens.end(), p.preamble.begin(), p.preamble.end());
    r.filler_begin = r.tokens.size();
    for (size_t i = 0; i < k; ++i) r.tokens.push_back(p.filler[(r.filler_start + i) % n]);
    r.needle_begin = r.tokens.size();
    r.tokens.insert(r.tokens.end(), p.needle.begin(), p.needle.end());
    for (size_t i = k; i < budget; ++i) r.tokens.push_back(p.filler[(r.filler_start + i) % n]);
    r.question_begin = r.tokens.size();
    r.tokens.insert(r.tokens.end(), p.question.begin(), p.question.end());
    return r;
}

// The first run of ASCII digits in text ("" when there is none): the model's answer.
inline std::string first_digit_run(const std::string &text) {
    size_t i = 0;
    while (i < text.size() && !(text[i] >= '0' && text[i] <= '9')) ++i;
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    return text.substr(i, j - i);
}

// The pieces of a prompt for this vocabulary: preamble, question and filler tokenised, the
// filler's word starts marked; needle left empty (passkey_needle_tokens gives it per trial).
// Pieces after the preamble continue running text, so they start with a space (a sentencepiece
// vocabulary that prefixes one by itself gets none added). with_bos: prepend the vocabulary's BOS.
passkey_parts make_passkey_parts(const tokenizer &vocab, std::vector<int32_t> filler, bool with_bos);
std::vector<int32_t> passkey_needle_tokens(const tokenizer &vocab, int passkey);
// The answer's tokens as they follow the question ("... The pass key is" then " 12345").
std::vector<int32_t> passkey_answer_tokens(const tokenizer &vocab, int passkey);
// One trial's prompt of `length` tokens: its needle tokenised into parts.needle, then laid out.
passkey_prompt passkey_trial_prompt(const tokenizer &vocab, passkey_parts &parts, const passkey_trial &trial,
                                    size_t length);

// What the scoring below needs of one model's sequence: recur::context through the overloads
// that take one, or anything else that evaluates tokens (the app's inference_session, CPU or
// GPU) through its own small adapter.
class eval_sequence {
  public:
    virtual ~eval_sequence() = default;
    // As context::eval: appends tokens; logits of the last token, or [n][n_vocab] when all_logits.
    virtual void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits, bool all_logits) = 0;
    // As context::truncate (0 always works).
    virtual void truncate(int32_t n) = 0;
};

// A passkey answer scored teacher-forced (the prompt, then the key's tokens one after another):
// nll = -log P(answer | prompt) in nats, summed over the key's tokens, a continuous measure of
// retrieval, far less noisy than whether a greedy answer is right; top1 = every key token was
// the model's first choice given the ones before it (greedy decoding would write the key, up to
// how it continues after it). Resets ctx (n_past 0) and leaves it holding the prompt and all but
// the answer's last token. answer: non-empty.
struct passkey_answer_score {
    double nll = 0;
    bool top1 = false;
};
passkey_answer_score score_passkey_answer(eval_sequence &seq, const std::vector<int32_t> &prompt,
                                          const std::vector<int32_t> &answer);
passkey_answer_score score_passkey_answer(context &ctx, const std::vector<int32_t> &prompt,
                                          const std::vector<int32_t> &answer);
inline double passkey_answer_nll(context &ctx, const std::vector<int32_t> &prompt, const std::vector<int32_t> &answer) {
    return score_passkey_answer(ctx, prompt, answer).nll;
}

// Greedy continuation of a prompt already evaluated in the sequence (logits: its last row),
// stopped at the end of generation, after max_new tokens, or once a run of digits has ended.
// Returns the text.
std::string passkey_continuation(eval_sequence &seq, const tokenizer &vocab, std::vector<float> &logits, int max_new);
std::string passkey_continuation(context &ctx, const tokenizer &vocab, std::vector<float> &logits, int max_new);

} // namespace recur
