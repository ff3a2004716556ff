// recur kl and recur passkey (issue 4 item 4): the engine-independent pieces in app/cli/quality.h
// against hand-worked values, then the commands themselves on stories260K.
#include "../../app/cli/quality.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace q = recur_cli::quality;

namespace {

// ------------------------------------------------------------ KL of one position

TEST(QualityMath, IdenticalRowsHaveZeroDivergence) {
    const std::vector<float> p = {1.5f, -2.0f, 0.25f, 3.0f, -40.0f};
    const q::row_comparison r = q::compare_logit_rows(p.data(), p.data(), 5, 3);
    EXPECT_EQ(r.kl, 0.0);
    EXPECT_TRUE(r.same_top1);
    EXPECT_DOUBLE_EQ(r.nll_p, r.nll_q);
}

TEST(QualityMath, TwoTokenDivergenceByHand) {
    // P = softmax(0, 0) = (1/2, 1/2); Q = softmax(0, ln 3) = (1/4, 3/4).
    // KL(P‖Q) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3); -log P(1) = ln 2; -log Q(1) = ln(4/3).
    const float p[2] = {0.0f, 0.0f};
    const float qq[2] = {0.0f, float(std::log(3.0))};
    const q::row_comparison r = q::compare_logit_rows(p, qq, 2, 1);
    EXPECT_NEAR(r.kl, 0.5 * std::log(4.0 / 3.0), 1e-7);
    EXPECT_NEAR(r.nll_p, std::log(2.0), 1e-12);
    EXPECT_NEAR(r.nll_q, std::log(4.0 / 3.0), 1e-7);
    EXPECT_FALSE(r.same_top1) << "a tie in P goes to the lowest id, 0; Q's argmax is 1";
}

TEST(QualityMath, TopOneDisagreementAndShiftInvariance) {
    const float p[3] = {2.0f, 1.0f, 0.0f};
    const float qq[3] = {1.0f, 2.0f, 0.0f};
    const q::row_comparison r = q::compare_logit_rows(p, qq, 3, 0);
    EXPECT_FALSE(r.same_top1);
    EXPECT_GT(r.kl, 0.0);
    // Adding a constant to every logit leaves both distributions, and so every figure, unchanged.
    const float p2[3] = {1002.0f, 1001.0f, 1000.0f};
    const q::row_comparison r2 = q::compare_logit_rows(p2, qq, 3, 0);
    EXPECT_NEAR(r2.kl, r.kl, 1e-9);
    EXPECT_NEAR(r2.nll_p, r.nll_p, 1e-9);
}

TEST(QualityMath, NoUnderflowForFarApartLogits) {
    // Naive softmax in float would give P(1) = 0 and an infinite -log; log-softmax does not.
    const float p[2] = {0.0f, -200.0f};
    const float qq[2] = {-200.0f, 0.0f};
    const q::row_comparison r = q::compare_logit_rows(p, qq, 2, 1);
    EXPECT_NEAR(r.nll_p, 200.0, 1e-9);
    EXPECT_NEAR(r.kl, 200.0, 1e-6); // ≈ 1 · (0 - (-200))
    EXPECT_TRUE(std::isfinite(r.kl));
}

// ------------------------------------------------------------ passkey prompt builder

q::passkey_parts toy_parts() {
    q::passkey_parts p;
    p.bos = 1;
    p.preamble = {10, 11, 12};
    p.needle = {20, 21, 22, 23};
    p.question = {30, 31};
    for (int i = 0; i < 50; ++i) p.filler.push_back(100 + i);
    p.word_start.assign(p.filler.size(), 1);
    return p;
}

// Checks the layout: BOS, preamble, cyclic filler around the needle, question last.
void expect_layout(const q::passkey_parts &parts, const q::passkey_prompt &pr, size_t n) {
    ASSERT_EQ(pr.tokens.size(), n);
    EXPECT_EQ(pr.tokens[0], parts.bos);
    EXPECT_EQ(pr.filler_begin, 1 + parts.preamble.size());
    for (size_t i = 0; i < parts.preamble.size(); ++i) EXPECT_EQ(pr.tokens[1 + i], parts.preamble[i]);
    for (size_t i = 0; i < parts.needle.size(); ++i) EXPECT_EQ(pr.tokens[pr.needle_begin + i], parts.needle[i]);
    EXPECT_EQ(pr.question_begin, n - parts.question.size());
    for (size_t i = 0; i < parts.question.size(); ++i) EXPECT_EQ(pr.tokens[pr.question_begin + i], parts.question[i]);
    // Filler: contiguous in the cyclic stream from filler_start, skipping the needle.
    size_t f = 0;
    for (size_t i = pr.filler_begin; i < pr.question_begin; ++i) {
        if (i >= pr.needle_begin && i < pr.needle_begin + parts.needle.size()) continue;
        EXPECT_EQ(pr.tokens[i], parts.filler[(pr.filler_start + f) % parts.filler.size()]) << "at " << i;
        ++f;
    }
    EXPECT_EQ(f, pr.filler_tokens);
    EXPECT_EQ(pr.filler_tokens, n - q::passkey_overhead(parts));
    EXPECT_DOUBLE_EQ(pr.depth, double(pr.needle_begin - pr.filler_begin) / double(pr.filler_tokens));
}

TEST(Passkey, NeedleSitsAtTheRequestedDepth) {
    const q::passkey_parts parts = toy_parts();
    const size_t n = 40; // overhead 10, so 30 filler tokens
    for (double depth : {0.0, 0.1, 0.5, 0.77, 1.0}) {
        const q::passkey_prompt pr = q::build_passkey_prompt(parts, n, depth, 7);
        expect_layout(parts, pr, n);
        EXPECT_EQ(pr.needle_begin - pr.filler_begin, size_t(std::llround(depth * 30))) << depth;
        EXPECT_EQ(pr.filler_start, 7u);
    }
    EXPECT_EQ(q::build_passkey_prompt(parts, n, 0.0, 0).needle_begin, 4u); // right after BOS + preamble
    EXPECT_EQ(q::build_passkey_prompt(parts, n, 1.0, 0).needle_begin + 4, 38u); // right before the question
}

TEST(Passkey, FillerWrapsAroundAShortFile) {
    const q::passkey_parts parts = toy_parts(); // 50 filler tokens
    const q::passkey_prompt pr = q::build_passkey_prompt(parts, 200, 0.5, 45);
    expect_layout(parts, pr, 200);
    EXPECT_EQ(pr.tokens[pr.filler_begin], 145);
    EXPECT_EQ(pr.tokens[pr.filler_begin + 5], 100); // wrapped
}

TEST(Passkey, NeedleAndExcerptStartAtWordStarts) {
    q::passkey_parts parts = toy_parts();
    for (size_t i = 0; i < parts.filler.size(); ++i) parts.word_start[i] = i % 4 == 0; // words of 4 tokens
    for (uint64_t start : {0ull, 1ull, 13ull, 49ull}) {
        for (double depth : {0.0, 0.2, 0.45, 0.9, 1.0}) {
            const q::passkey_prompt pr = q::build_passkey_prompt(parts, 60, depth, start);
            expect_layout(parts, pr, 60);
            EXPECT_EQ(pr.filler_start % 4, 0u);
            const size_t k = pr.needle_begin - pr.filler_begin;
            // The needle follows a whole word: the next filler token begins one (or the filler ends).
            if (k > 0 && k < pr.filler_tokens) {
                EXPECT_TRUE(parts.word_start[(pr.filler_start + k) % parts.filler.size()]) << depth;
            }
            EXPECT_GE(int64_t(k), std::llround(depth * double(pr.filler_tokens))); // moved forward only
        }
    }
}

TEST(Passkey, NoBosAndExactFit) {
    q::passkey_parts parts = toy_parts();
    parts.bos = -1;
    const q::passkey_prompt pr = q::build_passkey_prompt(parts, q::passkey_overhead(parts), 0.5, 0);
    EXPECT_EQ(pr.tokens.size(), 9u);
    EXPECT_EQ(pr.filler_tokens, 0u);
    EXPECT_EQ(pr.tokens[0], 10);
}

TEST(Passkey, BadInputThrows) {
    q::passkey_parts parts = toy_parts();
    EXPECT_THROW(q::build_passkey_prompt(parts, 9, 0.5, 0), std::invalid_argument); // overhead is 10
    parts.filler.clear();
    parts.word_start.clear();
    EXPECT_THROW(q::build_passkey_prompt(parts, 100, 0.5, 0), std::invalid_argument);
}

TEST(Passkey, TrialsAreReproducibleAndVaried) {
    std::set<int> keys;
    for (int t = 0; t < 20; ++t) {
        const q::passkey_trial a = q::make_passkey_trial(42, 1024, t), b = q::make_passkey_trial(42, 1024, t);
        EXPECT_EQ(a.passkey, b.passkey);
        EXPECT_EQ(a.depth, b.depth);
        EXPECT_EQ(a.filler_start, b.filler_start);
        EXPECT_GE(a.passkey, 10000);
        EXPECT_LE(a.passkey, 99999);
        EXPECT_GE(a.depth, 0.0);
        EXPECT_LT(a.depth, 1.0);
        keys.insert(a.passkey);
    }
    EXPECT_GT(keys.size(), 15u);
    EXPECT_NE(q::make_passkey_trial(42, 1024, 0).passkey, q::make_passkey_trial(43, 1024, 0).passkey);
    EXPECT_NE(q::make_passkey_trial(42, 1024, 0).passkey, q::make_passkey_trial(42, 2048, 0).passkey);
}

TEST(Passkey, NeedleTextAndScoring) {
    EXPECT_EQ(q::passkey_needle(48213), "The pass key is 48213. Remember it. 48213 is the pass key.");
    EXPECT_EQ(q::first_digit_run(" 48213. Remember"), "48213");
    EXPECT_EQ(q::first_digit_run("no digits"), "");
    EXPECT_EQ(q::first_digit_run("4 8213"), "4");
}

TEST(Passkey, ParseLengths) {
    EXPECT_EQ(q::parse_lengths("1k,2k,4K,3000"), (std::vector<int64_t>{1024, 2048, 4096, 3000}));
    for (const char *bad : {"", "1k,", "abc", "0", "-5", "1m", "1.5k", ",1k"})
        EXPECT_THROW(q::parse_lengths(bad), std::invalid_argument) << bad;
}

} // namespace

// ------------------------------------------------------------ the commands on stories260K

#ifdef RECUR_CLI_PATH

namespace {

struct run_result {
    int exit_code = -1;
    std::string out, err;
};

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs the CLI with args, in the directory cwd when given.
run_result run_cli(const std::string &args, const std::string &cwd = "") {
    // Per-process names: ctest runs several of these tests at once, all in the same TempDir.
    const std::string dir = recur_test::scratch("run");
    const std::string cmd = (cwd.empty() ? "" : "cd " + cwd + " && ") + std::string(RECUR_CLI_PATH) + " " + args +
                            " >" + dir + "-quality.out 2>" + dir + "-quality.err";
    const int status = std::system(cmd.c_str());
    run_result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir + "-quality.out");
    r.err = slurp(dir + "-quality.err");
    return r;
}

// The number after "key": in a one-object JSON line (first occurrence); NaN when absent.
double json_number(const std::string &json, const std::string &key) {
    const std::regex re("\"" + key + "\":(-?[0-9.eE+-]+)");
    std::smatch m;
    if (!std::regex_search(json, m, re)) return std::nan("");
    return std::stod(m[1].str());
}

void expect_clean_error(const run_result &r, const std::string &must_contain) {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("recur: error: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
    EXPECT_NE(r.err.find(must_contain), std::string::npos) << r.err;
}

const std::string shared_dir = RECUR_SHARED_DIR;
const std::string stories = shared_dir + "/models/stories260K.gguf";
const std::string novel = shared_dir + "/data/prideprejudice.txt";

} // namespace

TEST(CliQuality, KlOfAModelAgainstItselfIsZero) {
    const run_result r = run_cli("kl -m " + stories + " --hybrid " + stories + " -f " + novel +
                                 " -c 128 --chunks 3 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.front(), '{');
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1);
    EXPECT_NEAR(json_number(r.out, "kl"), 0.0, 1e-9) << r.out;
    EXPECT_EQ(json_number(r.out, "top1_agreement"), 1.0);
    EXPECT_EQ(json_number(r.out, "ppl_original"), json_number(r.out, "ppl_hybrid"));
    EXPECT_EQ(json_number(r.out, "n_chunks"), 3.0);
    EXPECT_EQ(json_number(r.out, "n_tokens"), 3.0 * 127); // BOS first, 127 scored per chunk
}

TEST(CliQuality, KlAgainstAnUntrainedHybridIsPositiveAndMatchesPerplexity) {
    const std::string hybrid = recur_test::scratch("stories_half.gguf");
    const run_result conv = run_cli("convert -m " + stories + " -f " + novel + " -c 256 --fraction 0.5 --steps 0 -o " +
                                    hybrid + " --json");
    ASSERT_EQ(conv.exit_code, 0) << conv.err;
    const std::string text = " -f " + novel + " -c 128 --chunks 4 --json";
    const run_result r = run_cli("kl -m " + stories + " --hybrid " + hybrid + text);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double kl = json_number(r.out, "kl");
    EXPECT_GT(kl, 1e-4) << r.out;
    EXPECT_TRUE(std::isfinite(kl));
    const double agree = json_number(r.out, "top1_agreement");
    EXPECT_GE(agree, 0.0);
    EXPECT_LT(agree, 1.0);
    // Same chunking as `recur perplexity`, so both perplexities equal what it reports.
    const run_result po = run_cli("perplexity -m " + stories + text);
    const run_result ph = run_cli("perplexity -m " + hybrid + text);
    ASSERT_EQ(po.exit_code, 0) << po.err;
    ASSERT_EQ(ph.exit_code, 0) << ph.err;
    EXPECT_NEAR(json_number(r.out, "ppl_original"), json_number(po.out, "ppl"), 1e-4 * json_number(po.out, "ppl"));
    EXPECT_NEAR(json_number(r.out, "ppl_hybrid"), json_number(ph.out, "ppl"), 1e-4 * json_number(ph.out, "ppl"));
    std::remove(hybrid.c_str());
}

// `recur info` says how a hybrid's recurrent heads write their state: the delta rule by default,
// the additive form when asked; untrained heads have no per-channel offsets (all 0: per-head).
// A plain model has no such fields.
TEST(CliQuality, InfoNamesTheRecurrentHeadsForm) {
    const std::string hybrid = recur_test::scratch("stories_form.gguf");
    const std::string conv = "convert -m " + stories + " -f " + novel + " -c 256 --fraction 0.25 --kind recurrent --steps 0 -o " + hybrid;
    for (const auto &[flags, read_out] : {std::pair<std::string, std::string>{"", "delta"}, {" --read-out additive", "additive"}}) {
        const run_result c = run_cli(conv + flags);
        ASSERT_EQ(c.exit_code, 0) << c.err;
        const run_result r = run_cli("info -m " + hybrid + " --json");
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_NE(r.out.find("\"read_out\":\"" + read_out + "\""), std::string::npos) << r.out;
        EXPECT_NE(r.out.find("\"decay\":\"per-head\""), std::string::npos) << r.out;
        const run_result t = run_cli("info -m " + hybrid);
        EXPECT_NE(t.out.find("recurrent    " + read_out + " read-out, per-head decay"), std::string::npos) << t.out;
    }
    const run_result plain = run_cli("info -m " + stories + " --json");
    EXPECT_EQ(plain.out.find("read_out"), std::string::npos) << plain.out;
    std::remove(hybrid.c_str());
}

TEST(CliQuality, KlBadInput) {
    expect_clean_error(run_cli("kl -m " + stories + " -f " + novel), "--hybrid");
    expect_clean_error(run_cli("kl -m " + stories + " --hybrid " + stories), "-f FILE");
    expect_clean_error(run_cli("kl -m " + stories + " --hybrid /nonexistent.gguf -f " + novel), "cannot open");
    const std::string tiny = recur_test::scratch("tiny.txt");
    std::ofstream(tiny) << "Once upon a time.";
    expect_clean_error(run_cli("kl -m " + stories + " --hybrid " + stories + " -f " + tiny), "fewer than one chunk");
}

TEST(CliQuality, KlRefusesAnotherVocabulary) {
    const char *home = std::getenv("HOME");
    const std::string smol =
        std::string(home ? home : "") + "/.local/share/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::ifstream(smol)) GTEST_SKIP() << "needs " << smol << " (installer/setup.sh)";
    expect_clean_error(run_cli("kl -m " + stories + " --hybrid " + smol + " -f " + novel), "another vocabulary");
}

TEST(CliQuality, PasskeyRunsAndIsWellFormed) {
    // stories260K cannot retrieve anything; the result must still be well formed. Its training
    // context is 2048 (GGUF), so 3000 tokens is flagged.
    const run_result r = run_cli("passkey -m " + stories + " -f " + novel + " --lengths 256,3000 --trials 2 --seed 7 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(r.out.front(), '{');
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1);
    const std::regex len_re("\\{\"tokens\":([0-9]+),\"accuracy\":([0-9.eE+-]+),\"trials\":([0-9]+),\"correct\":([0-9]+),"
                            "\"prefill_tok_s\":([0-9.eE+-]+),\"beyond_training_context\":(true|false)");
    std::vector<std::smatch> found;
    for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), len_re); it != std::sregex_iterator(); ++it)
        found.push_back(*it);
    ASSERT_EQ(found.size(), 2u) << r.out;
    EXPECT_EQ(found[0][1].str(), "256");
    EXPECT_EQ(found[1][1].str(), "3000");
    for (auto &m : found) {
        const double acc = std::stod(m[2].str());
        EXPECT_GE(acc, 0.0);
        EXPECT_LE(acc, 1.0);
        EXPECT_EQ(m[3].str(), "2");
        EXPECT_DOUBLE_EQ(acc, std::stod(m[4].str()) / 2.0);
        EXPECT_GT(std::stod(m[5].str()), 0.0);
    }
    EXPECT_EQ(found[0][6].str(), "false");
    EXPECT_EQ(found[1][6].str(), "true");
    // The same seed gives the same prompts and so the same output.
    const run_result again =
        run_cli("passkey -m " + stories + " -f " + novel + " --lengths 256,3000 --trials 2 --seed 7 --json");
    const std::regex timing("\"(prefill_tok_s|seconds)\":[0-9.eE+-]+");
    EXPECT_EQ(std::regex_replace(r.out, timing, ""), std::regex_replace(again.out, timing, ""));
}

// --answer-nll: each trial's teacher-forced NLL of its key, and per length their mean; the
// greedy answers are those of a run without it.
TEST(CliQuality, PasskeyAnswerNll) {
    const std::string args = "passkey -m " + stories + " -f " + novel + " --lengths 200 --trials 3 --seed 5 --json";
    const run_result with = run_cli(args + " --answer-nll"), without = run_cli(args);
    ASSERT_EQ(with.exit_code, 0) << with.err;
    ASSERT_EQ(without.exit_code, 0) << without.err;
    const std::regex trial_nll("\"correct\":(true|false),\"answer_nll\":([0-9.eE+-]+)\\}");
    double sum = 0;
    int n = 0;
    for (auto it = std::sregex_iterator(with.out.begin(), with.out.end(), trial_nll); it != std::sregex_iterator(); ++it) {
        const double v = std::stod((*it)[2].str());
        EXPECT_GT(v, 0.0);
        sum += v, ++n;
    }
    ASSERT_EQ(n, 3) << with.out;
    EXPECT_NEAR(json_number(with.out, "answer_nll"), sum / 3, 1e-4 * sum) << with.out;
    const std::regex nll_and_timing("(,\"answer_nll\":[0-9.eE+-]+)|\"(prefill_tok_s|seconds)\":[0-9.eE+-]+");
    EXPECT_EQ(std::regex_replace(with.out, nll_and_timing, ""), std::regex_replace(without.out, nll_and_timing, ""));
    EXPECT_EQ(without.out.find("answer_nll"), std::string::npos);
}

TEST(CliQuality, PasskeyBadInput) {
    expect_clean_error(run_cli("passkey -m " + stories + " -f " + novel + " --lengths 1k,abc"), "--lengths");
    expect_clean_error(run_cli("passkey -m " + stories + " -f " + novel + " --lengths 0"), "--lengths");
    expect_clean_error(run_cli("passkey -m " + stories + " -f " + novel + " --trials 0"), "--trials");
    expect_clean_error(run_cli("passkey -m " + stories + " -f " + novel + " --lengths 16"), "cannot hold");
    expect_clean_error(run_cli("passkey -m " + stories + " -f /nonexistent/filler.txt"), "filler");
    // Without -f the default filler is looked up relative to the current directory.
    expect_clean_error(run_cli("passkey -m " + stories + " --lengths 256", "/"), "-f FILE");
    const std::string empty = recur_test::scratch("empty_filler.txt");
    std::ofstream(empty) << "";
    expect_clean_error(run_cli("passkey -m " + stories + " -f " + empty + " --lengths 256"), "no tokens");
}

#endif // RECUR_CLI_PATH
