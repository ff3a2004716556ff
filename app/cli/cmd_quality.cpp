// recur kl and recur passkey: how far a hybrid has moved from its original (DESIGN §5).
#include "cmd_quality.h"

#include "cli_common.h"
#include "quality.h"

#include "recur/model.h"
#include "recur/sampling.h"
#include "recur/tokenizer.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

using namespace recur;

namespace recur_cli {

namespace {

// Filler when -f is absent: the novel in the project's shared/ folder, as seen from the
// repository root (where the tools and the harness run).
constexpr const char *default_filler = "../shared/data/prideprejudice.txt";
// Tokens generated after the question: room for a leading space, five digits one token each
// (SPM and SmolLM2's BPE both split digits), and what follows them.
constexpr int passkey_max_new = 12;
// passkey without --seed: a fixed seed, so two models run with the same defaults get the same
// prompts and their accuracies compare.
constexpr uint64_t default_passkey_seed = 42;

// The passkey scorer's view of a session (CPU or GPU).
class session_sequence final : public recur::eval_sequence {
  public:
    explicit session_sequence(recur_app::inference_session &s) : s_(s) {}
    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits, bool all_logits) override {
        s_.eval(tokens, logits, all_logits);
    }
    void truncate(int32_t n) override { s_.truncate(n); }

  private:
    recur_app::inference_session &s_;
};

// Both models must read the text as the same token ids, or their distributions are over
// different things.
void check_same_vocabulary(const model &a, const model &b, const std::string &b_path) {
    const auto &va = a.vocab().vocab(), &vb = b.vocab().vocab();
    if (a.hparams().n_vocab != b.hparams().n_vocab || va.tokens != vb.tokens || va.bos != vb.bos ||
        va.add_bos != vb.add_bos)
        throw error("kl: '" + b_path + "' has another vocabulary (" + std::to_string(b.hparams().n_vocab) +
                    " tokens) than the original (" + std::to_string(a.hparams().n_vocab) +
                    " tokens); compare a hybrid with the model it was converted from");
}

} // namespace

int cmd_kl(const options &o) {
    if (o.hybrid_path.empty()) throw error("kl needs the model to compare with the original (--hybrid H.gguf)");
    if (o.file.empty()) throw error("kl needs a text file (-f FILE)");
    auto orig = load_model(o);
    auto hyb = model::load(o.hybrid_path);
    check_same_vocabulary(*orig, *hyb, o.hybrid_path);
    // The chunking of `recur perplexity`, so ppl_original here equals its ppl.
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : 512;
    const text_chunks tc = make_text_chunks(orig->vocab(), read_file(o.file), n_ctx, o.chunks, o.no_bos, "kl");
    const int64_t n_chunks = tc.n_chunks;

    context_params cp = make_context_params(o, *orig, n_ctx);
    cp.n_ctx = n_ctx;
    const std::unique_ptr<recur_app::inference_session> session_o = make_session(o, *orig, cp);
    const std::unique_ptr<recur_app::inference_session> session_h = make_session(o, *hyb, cp);
    recur_app::inference_session &ctx_o = *session_o, &ctx_h = *session_h;
    const int32_t n_vocab = orig->hparams().n_vocab;
    // Logits of both models for every position are compared a batch at a time, so memory stays
    // at 2 × batch × n_vocab floats whatever -c is (49k-token vocabularies make a row 192 KiB).
    const size_t piece = size_t(std::max(1, std::min(n_ctx, o.n_batch)));

    double kl = 0, kl_max = 0, nll_o = 0, nll_h = 0;
    int64_t scored = 0, agree = 0;
    std::vector<float> lo, lh;
    auto t0 = clock_type::now();
    for (int64_t c = 0; c < n_chunks; ++c) {
        const std::vector<int32_t> chunk = tc.chunk(c);
        ctx_o.truncate(0);
        ctx_h.truncate(0);
        for (size_t b = 0; b < chunk.size(); b += piece) {
            const size_t e = std::min(chunk.size(), b + piece);
            const std::vector<int32_t> sub(chunk.begin() + ptrdiff_t(b), chunk.begin() + ptrdiff_t(e));
            ctx_o.eval(sub, lo, true);
            ctx_h.eval(sub, lh, true);
            for (size_t i = b; i < e && i + 1 < chunk.size(); ++i) {
                const size_t row = (i - b) * size_t(n_vocab);
                const quality::row_comparison r =
                    quality::compare_logit_rows(lo.data() + row, lh.data() + row, n_vocab, chunk[i + 1]);
                kl += r.kl;
                kl_max = std::max(kl_max, r.kl);
                nll_o += r.nll_p;
                nll_h += r.nll_q;
                agree += r.same_top1 ? 1 : 0;
                ++scored;
            }
        }
        if (!o.json)
            fprintf(stderr, "[%lld/%lld] kl so far %.6f, ppl %.4f vs %.4f\n", (long long)(c + 1),
                    (long long)n_chunks, kl / double(scored), std::exp(nll_o / double(scored)),
                    std::exp(nll_h / double(scored)));
    }
    const double secs = seconds_since(t0);
    const double n = double(scored);
    const double ppl_o = std::exp(nll_o / n), ppl_h = std::exp(nll_h / n);
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("kl", kl / n).field("kl_max", kl_max);
        j.field("ppl_original", ppl_o).field("ppl_hybrid", ppl_h).field("ppl_ratio", ppl_h / ppl_o);
        j.field("top1_agreement", double(agree) / n);
        j.field("n_tokens", int64_t(scored)).field("n_chunks", int64_t(n_chunks)).field("n_ctx", int64_t(n_ctx));
        j.field("replaced_groups", int64_t(hyb->replaced_group_count())).field("seconds", secs);
        j.field("device", recur_app::device_kind_name(ctx_o.kind()));
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("KL(original || hybrid) %.6f nats/token (max %.4f); perplexity %.4f -> %.4f (x%.4f); "
               "top-1 agreement %.2f%% over %lld scored tokens in %lld chunks of %d (%.1f s)\n",
               kl / n, kl_max, ppl_o, ppl_h, ppl_h / ppl_o, 100.0 * double(agree) / n, (long long)scored,
               (long long)n_chunks, n_ctx, secs);
    }
    return 0;
}

int cmd_passkey(const options &o) {
    const std::vector<int64_t> lengths = quality::parse_lengths(o.lengths);
    if (o.trials <= 0) throw error("--trials must be positive");
    const std::string filler_path = o.file.empty() ? default_filler : o.file;
    if (!std::ifstream(filler_path)) {
        if (o.file.empty())
            throw error("passkey needs filler text (-f FILE); the default " + filler_path +
                        " is not there (it is relative to the current directory)");
        throw error("cannot read filler text '" + filler_path + "'");
    }
    auto m = load_model(o);
    const tokenizer &vocab = m->vocab();
    const int32_t n_ctx_train = m->hparams().n_ctx_train;
    const uint64_t seed = o.sampling.seed == random_seed ? default_passkey_seed : o.sampling.seed;

    quality::passkey_parts parts = recur::make_passkey_parts(vocab, vocab.encode(read_file(filler_path), false, false),
                                                             vocab.adds_bos() && !o.no_bos);
    if (parts.filler.empty()) throw error("the filler text '" + filler_path + "' has no tokens");

    struct trial_result {
        double depth;
        int passkey;
        std::string answer, output;
        bool correct;
        double answer_nll = -1; // --answer-nll
    };
    struct length_result {
        int64_t tokens;
        int correct = 0;
        double prefill_tokens = 0, prefill_s = 0, answer_nll = 0;
        bool beyond;
        std::vector<trial_result> trials;
    };
    std::vector<length_result> results;
    std::string device = "cpu";
    auto t_all = clock_type::now();
    for (const int64_t len : lengths) {
        if (len + passkey_max_new > int64_t(INT32_MAX)) throw error("--lengths: " + std::to_string(len) + " is too long");
        length_result lr;
        lr.tokens = len;
        lr.beyond = len > n_ctx_train; // still run: how a model degrades past it is worth knowing
        context_params cp = make_context_params(o, *m, int(len) + passkey_max_new);
        cp.n_ctx = int32_t(len) + passkey_max_new;
        // Made once the first prompt is built: a length too short for the prompt is refused
        // before anything else is said (auto's note about the device included).
        std::unique_ptr<recur_app::inference_session> session;
        std::vector<float> logits;
        for (int t = 0; t < o.trials; ++t) {
            const quality::passkey_trial tr = quality::make_passkey_trial(seed, len, t);
            const quality::passkey_prompt p = recur::passkey_trial_prompt(vocab, parts, tr, size_t(len));
            if (!session) {
                session = make_session(o, *m, cp);
                device = recur_app::device_kind_name(session->kind());
            }
            session_sequence ctx(*session);
            double nll = -1;
            if (o.answer_nll) {
                nll = recur::score_passkey_answer(ctx, p.tokens, recur::passkey_answer_tokens(vocab, tr.passkey)).nll;
                lr.answer_nll += nll;
            }
            ctx.truncate(0);
            auto t0 = clock_type::now();
            ctx.eval(p.tokens, logits, false);
            lr.prefill_s += seconds_since(t0);
            lr.prefill_tokens += double(p.tokens.size());
            // Greedy continuation, stopped once a run of digits has ended.
            const std::string text = recur::passkey_continuation(ctx, vocab, logits, passkey_max_new);
            trial_result r;
            r.depth = p.depth;
            r.passkey = tr.passkey;
            r.answer = quality::first_digit_run(text);
            r.output = sanitize_utf8(text);
            r.correct = r.answer == std::to_string(tr.passkey);
            r.answer_nll = nll;
            lr.correct += r.correct ? 1 : 0;
            if (!o.json)
                fprintf(stderr, "[%lld tokens, trial %d/%d] needle at depth %.2f, key %d, answer '%s' %s\n",
                        (long long)len, t + 1, o.trials, r.depth, r.passkey, r.answer.c_str(),
                        r.correct ? "correct" : "wrong");
            lr.trials.push_back(std::move(r));
        }
        results.push_back(std::move(lr));
    }
    const double secs = seconds_since(t_all);

    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("model", sanitize_utf8(m->name())).field("seed", uint64_t(seed)).field("filler", filler_path);
        j.field("n_ctx_train", int64_t(n_ctx_train)).field("replaced_groups", int64_t(m->replaced_group_count()));
        j.field("device", device);
        j.key("lengths").begin_array();
        for (const auto &lr : results) {
            j.begin_object().field("tokens", int64_t(lr.tokens));
            j.field("accuracy", double(lr.correct) / double(lr.trials.size()));
            j.field("trials", int64_t(lr.trials.size())).field("correct", int64_t(lr.correct));
            j.field("prefill_tok_s", lr.prefill_tokens / lr.prefill_s);
            j.field("beyond_training_context", lr.beyond);
            if (o.answer_nll) j.field("answer_nll", lr.answer_nll / double(lr.trials.size()));
            j.key("results").begin_array();
            for (const auto &r : lr.trials) {
                j.begin_object()
                    .field("depth", r.depth)
                    .field("passkey", int64_t(r.passkey))
                    .field("answer", r.answer)
                    .field("output", r.output)
                    .field("correct", r.correct);
                if (o.answer_nll) j.field("answer_nll", r.answer_nll);
                j.end_object();
            }
            j.end_array().end_object();
        }
        j.end_array();
        j.field("seconds", secs);
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        auto nll_text = [&](const length_result &lr) {
            if (!o.answer_nll) return std::string();
            char buf[64];
            snprintf(buf, sizeof buf, ", answer NLL %.3f nats", lr.answer_nll / double(lr.trials.size()));
            return std::string(buf);
        };
        printf("passkey retrieval, %s, seed %llu, filler %s\n", m->name().c_str(), (unsigned long long)seed,
               filler_path.c_str());
        for (const auto &lr : results)
            printf("%7lld tokens: %d/%zu correct (accuracy %.2f)%s, prefill %.1f tok/s%s\n", (long long)lr.tokens,
                   lr.correct, lr.trials.size(), double(lr.correct) / double(lr.trials.size()),
                   nll_text(lr).c_str(),
                   lr.prefill_tokens / lr.prefill_s,
                   lr.beyond ? ("  [beyond the training context of " + std::to_string(n_ctx_train) + "]").c_str()
                             : "");
    }
    return 0;
}

} // namespace recur_cli
