// Passkey prompts for a vocabulary and greedy answers (recur/passkey.h).
#include "recur/passkey.h"

#include "recur/logit_compare.h"
#include "recur/model.h"
#include "recur/sampling.h"
#include "recur/tokenizer.h"

namespace recur {

namespace {
std::vector<int32_t> words(const tokenizer &vocab, const std::string &s) {
    return vocab.encode(vocab.adds_space_prefix() ? s : " " + s, false, false);
}
} // namespace

passkey_parts make_passkey_parts(const tokenizer &vocab, std::vector<int32_t> filler, bool with_bos) {
    passkey_parts parts;
    parts.bos = with_bos ? vocab.bos() : -1;
    parts.preamble = vocab.encode(passkey_preamble(), false, false);
    parts.question = words(vocab, passkey_question());
    parts.filler = std::move(filler);
    parts.word_start.resize(parts.filler.size());
    for (size_t i = 0; i < parts.filler.size(); ++i) {
        const std::string piece = vocab.token_to_piece(parts.filler[i]);
        parts.word_start[i] = !piece.empty() && (piece[0] == ' ' || piece[0] == '\n' || piece[0] == '\t');
    }
    return parts;
}

std::vector<int32_t> passkey_needle_tokens(const tokenizer &vocab, int passkey) {
    return words(vocab, passkey_needle(passkey));
}

std::vector<int32_t> passkey_answer_tokens(const tokenizer &vocab, int passkey) {
    return words(vocab, std::to_string(passkey));
}

passkey_prompt passkey_trial_prompt(const tokenizer &vocab, passkey_parts &parts, const passkey_trial &trial,
                                    size_t length) {
    parts.needle = passkey_needle_tokens(vocab, trial.passkey);
    return build_passkey_prompt(parts, length, trial.depth, trial.filler_start);
}

namespace {
class context_sequence final : public eval_sequence {
  public:
    explicit context_sequence(context &c) : c_(c) {}
    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits, bool all_logits) override {
        c_.eval(tokens, logits, all_logits);
    }
    void truncate(int32_t n) override { c_.truncate(n); }

  private:
    context &c_;
};
} // namespace

passkey_answer_score score_passkey_answer(context &ctx, const std::vector<int32_t> &prompt,
                                          const std::vector<int32_t> &answer) {
    context_sequence seq(ctx);
    return score_passkey_answer(seq, prompt, answer);
}

std::string passkey_continuation(context &ctx, const tokenizer &vocab, std::vector<float> &logits, int max_new) {
    context_sequence seq(ctx);
    return passkey_continuation(seq, vocab, logits, max_new);
}

passkey_answer_score score_passkey_answer(eval_sequence &seq, const std::vector<int32_t> &prompt,
                                          const std::vector<int32_t> &answer) {
    if (answer.empty()) throw std::invalid_argument("passkey_answer_nll: the answer has no tokens");
    std::vector<float> logits;
    seq.truncate(0);
    seq.eval(prompt, logits, false);
    const int32_t V = int32_t(logits.size());
    passkey_answer_score s;
    int32_t argmax = 0;
    s.nll = log_sum_exp(logits.data(), V, argmax) - logits[size_t(answer[0])];
    s.top1 = argmax == answer[0];
    if (answer.size() > 1) {
        std::vector<float> rows; // [answer.size() - 1][V]: row j predicts answer[j + 1]
        seq.eval(std::vector<int32_t>(answer.begin(), answer.end() - 1), rows, true);
        for (size_t j = 1; j < answer.size(); ++j) {
            const float *row = rows.data() + (j - 1) * size_t(V);
            s.nll += log_sum_exp(row, V, argmax) - row[size_t(answer[j])];
            s.top1 = s.top1 && argmax == answer[j];
        }
    }
    return s;
}

std::string passkey_continuation(eval_sequence &seq, const tokenizer &vocab, std::vector<float> &logits, int max_new) {
    sampling_params greedy;
    greedy.temperature = 0;
    greedy.repeat_penalty = 1.0f;
    sampler pick(greedy);
    const int32_t n_vocab = int32_t(logits.size());
    std::vector<int32_t> generated;
    std::string text;
    for (int step = 0; step < max_new; ++step) {
        const int32_t tok = pick.sample(logits.data(), n_vocab);
        if (vocab.is_end_of_generation(tok)) break;
        generated.push_back(tok);
        text = vocab.decode(generated);
        const std::string run = first_digit_run(text);
        if (!run.empty() && text.find(run) + run.size() < text.size()) break;
        if (step + 1 < max_new) seq.eval({tok}, logits, false);
    }
    return text;
}

} // namespace recur
