// Sampler tests. Expected values are worked out by hand from the definitions in sampling.h
// (probabilities written out in the comments), not taken from the implementation.
#include "recur/sampling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace {

using recur::sampler;
using recur::sampling_params;

// Every filter off, temperature 1: a plain draw from softmax(logits).
sampling_params plain_params(uint64_t seed = 1234) {
    sampling_params p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = seed;
    return p;
}

std::vector<float> logits_from_probs(const std::vector<double> &probs) {
    std::vector<float> l;
    for (double p : probs)
        l.push_back(static_cast<float>(std::log(p)));
    return l;
}

std::vector<int> histogram(sampler &s, const std::vector<float> &logits, int draws) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) {
        const int32_t t = s.sample(logits.data(), static_cast<int32_t>(logits.size()));
        EXPECT_GE(t, 0);
        EXPECT_LT(t, static_cast<int32_t>(logits.size()));
        if (t >= 0 && t < static_cast<int32_t>(logits.size())) ++counts[static_cast<size_t>(t)];
    }
    return counts;
}

// Tokens with expected probability 0 must never appear; the rest must pass a chi-square test.
// 30 is far beyond the 99.99% point of chi-square with <= 4 degrees of freedom (23.5), yet a
// wrong support or a wrong renormalisation at 20k draws gives statistics in the hundreds.
void expect_frequencies(const std::vector<int> &counts, const std::vector<double> &expected, int draws) {
    ASSERT_EQ(counts.size(), expected.size());
    double chi2 = 0.0;
    for (size_t i = 0; i < counts.size(); ++i) {
        if (expected[i] == 0.0) {
            EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the support";
            continue;
        }
        const double e = expected[i] * draws;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    std::string seen;
    for (int c : counts)
        seen += std::to_string(c) + " ";
    EXPECT_LT(chi2, 30.0) << "counts: " << seen;
}

TEST(Sampling, GreedyIsArgmax) {
    const std::vector<float> logits = {0.1f, -3.0f, 2.5f, 2.4f, 7.0f, 6.99f, -0.5f};
    sampling_params p;
    p.temperature = 0.0f;
    for (uint64_t seed : {1ull, 2ull, 99ull}) {
        p.seed = seed;
        sampler s(p);
        for (int i = 0; i < 20; ++i)
            EXPECT_EQ(s.sample(logits.data(), 7), 4);
    }
    p.temperature = -1.0f; // any non-positive temperature is greedy
    sampler s(p);
    EXPECT_EQ(s.sample(logits.data(), 7), 4);
}

TEST(Sampling, GreedyTiesGoToLowestId) {
    const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
    sampling_params p;
    p.temperature = 0.0f;
    p.seed = 5;
    sampler s(p);
    EXPECT_EQ(s.sample(logits.data(), 5), 1);
}

TEST(Sampling, GreedyTieWithPenalisedTokenGoesToLowestId) {
    // Token 2's 4.0 halves to 2.0, tying token 0: the lower id wins even though token 2 is
    // considered later.
    const std::vector<float> logits = {2.0f, 1.0f, 4.0f};
    sampling_params p;
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.seed = 5;
    sampler s(p);
    s.accept(2);
    EXPECT_EQ(s.sample(logits.data(), 3), 0);
}

TEST(Sampling, SingleTokenVocabulary) {
    const float logit = -7.0f;
    sampler g(sampling_params{0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1});
    EXPECT_EQ(g.sample(&logit, 1), 0);
    sampler s(sampling_params{});
    EXPECT_EQ(s.sample(&logit, 1), 0);
}

TEST(Sampling, TopK1IsGreedyAtAnyTemperature) {
    std::mt19937 gen(7);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::vector<float> logits(1000);
    for (auto &l : logits)
        l = nd(gen);
    const int32_t best =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    for (float t : {0.1f, 0.8f, 1.0f, 5.0f, 1000.0f}) {
        sampling_params p = plain_params(42);
        p.temperature = t;
        p.top_k = 1;
        sampler s(p);
        for (int i = 0; i < 200; ++i)
            ASSERT_EQ(s.sample(logits.data(), 1000), best) << "temperature " << t;
    }
}

TEST(Sampling, TopKKeepsOnlyTheKLargest) {
    // Ids are scrambled so that the k best are not simply the first k.
    const std::vector<float> logits = {0.0f, 5.0f, 1.0f, 4.0f, 2.0f, 3.0f};
    sampling_params p = plain_params(3);
    p.top_k = 3;
    p.temperature = 50.0f; // nearly flat, so every survivor shows up
    sampler s(p);
    const auto counts = histogram(s, logits, 3000);
    EXPECT_EQ(counts[0], 0);
    EXPECT_EQ(counts[2], 0);
    EXPECT_EQ(counts[4], 0);
    EXPECT_GT(counts[1], 800);
    EXPECT_GT(counts[3], 800);
    EXPECT_GT(counts[5], 800);
}

TEST(Sampling, TopKTieAtBoundaryKeepsLowerIds) {
    const std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
    sampling_params p = plain_params(11);
    p.top_k = 2;
    sampler s(p);
    const auto counts = histogram(s, logits, 2000);
    EXPECT_EQ(counts[2], 0);
    EXPECT_EQ(counts[3], 0);
    EXPECT_GT(counts[0], 800);
    EXPECT_GT(counts[1], 800);
}

TEST(Sampling, TopPTiesKeepLowerIds) {
    // Four equal logits: 0.25 each, so top-p 0.5 keeps two of them, the two lowest ids, whether
    // top-k is off (0.25 + 0.25 = 0.5 exactly) or leaves three (1/3 + 1/3 >= 0.5).
    const std::vector<float> logits = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int32_t k : {0, 3}) {
        sampling_params p = plain_params(13);
        p.top_p = 0.5f;
        p.top_k = k;
        sampler s(p);
        const auto counts = histogram(s, logits, 2000);
        EXPECT_EQ(counts[2], 0) << "top_k " << k;
        EXPECT_EQ(counts[3], 0) << "top_k " << k;
        EXPECT_GT(counts[0], 800) << "top_k " << k;
        EXPECT_GT(counts[1], 800) << "top_k " << k;
    }
}

// Probabilities by id: 0.12, 0.40, 0.08, 0.25, 0.15 (sorted: 0.40, 0.25, 0.15, 0.12, 0.08;
// cumulative 0.40, 0.65, 0.80, 0.92, 1.00).
const std::vector<double> five = {0.12, 0.40, 0.08, 0.25, 0.15};

TEST(Sampling, TopPKeepsSmallestPrefixReachingP) {
    constexpr int draws = 20000;
    const auto logits = logits_from_probs(five);
    {
        // 0.70: 0.65 < 0.70 <= 0.80, so ids 1, 3, 4 stay; renormalised by 0.80.
        sampling_params p = plain_params(101);
        p.top_p = 0.70f;
        sampler s(p);
        expect_frequencies(histogram(s, logits, draws), {0.0, 0.5, 0.0, 0.3125, 0.1875}, draws);
    }
    {
        // 0.64: 0.65 >= 0.64 already after two tokens: ids 1 and 3, renormalised by 0.65.
        sampling_params p = plain_params(102);
        p.top_p = 0.64f;
        sampler s(p);
        expect_frequencies(histogram(s, logits, draws), {0.0, 0.40 / 0.65, 0.0, 0.25 / 0.65, 0.0}, draws);
    }
    {
        // 0.91: 0.80 < 0.91 <= 0.92, so four tokens stay (all but 0.08), renormalised by 0.92.
        sampling_params p = plain_params(103);
        p.top_p = 0.91f;
        sampler s(p);
        expect_frequencies(histogram(s, logits, draws),
                           {0.12 / 0.92, 0.40 / 0.92, 0.0, 0.25 / 0.92, 0.15 / 0.92}, draws);
    }
    {
        // top_p <= 0 keeps the first token only.
        sampling_params p = plain_params(104);
        p.top_p = 0.0f;
        sampler s(p);
        expect_frequencies(histogram(s, logits, 500), {0.0, 1.0, 0.0, 0.0, 0.0}, 500);
    }
}

TEST(Sampling, NoFiltersMatchesSoftmax) {
    constexpr int draws = 20000;
    sampling_params p = plain_params(105);
    sampler s(p);
    expect_frequencies(histogram(s, logits_from_probs(five), draws), five, draws);
}

TEST(Sampling, MinPCut) {
    constexpr int draws = 20000;
    // By id: 0.04, 0.50, 0.10, 0.16, 0.20. min_p 0.25 -> threshold 0.25 * 0.50 = 0.125:
    // 0.50, 0.16, 0.20 stay; renormalised by 0.86.
    const std::vector<double> probs = {0.04, 0.50, 0.10, 0.16, 0.20};
    sampling_params p = plain_params(106);
    p.min_p = 0.25f;
    sampler s(p);
    expect_frequencies(histogram(s, logits_from_probs(probs), draws),
                       {0.0, 0.50 / 0.86, 0.0, 0.16 / 0.86, 0.20 / 0.86}, draws);
}

TEST(Sampling, MinPAndTopPTogetherKeepTheShorterPrefix) {
    constexpr int draws = 20000;
    const auto logits = logits_from_probs(five);
    // top_p 0.91 alone keeps four tokens (see above); min_p 0.5 -> threshold 0.20 keeps 0.40, 0.25.
    sampling_params p = plain_params(107);
    p.top_p = 0.91f;
    p.min_p = 0.5f;
    sampler s(p);
    expect_frequencies(histogram(s, logits, draws), {0.0, 0.40 / 0.65, 0.0, 0.25 / 0.65, 0.0}, draws);
    // min_p above 1 cuts down to the best token rather than to nothing.
    sampling_params q = plain_params(108);
    q.min_p = 3.0f;
    sampler s2(q);
    expect_frequencies(histogram(s2, logits, 500), {0.0, 1.0, 0.0, 0.0, 0.0}, 500);
}

TEST(Sampling, TemperatureAppliedAfterTruncation) {
    constexpr int draws = 20000;
    const auto logits = logits_from_probs(five);
    // As in llama.cpp, top-p picks the support at temperature 1: {0.40, 0.25, 0.15} for 0.70.
    // Temperature 3 then gives weights p^(1/3): 0.7368, 0.6300, 0.5313 (sum 1.8981).
    // (Had temperature come first, the flatter distribution would need a fourth token.)
    sampling_params p = plain_params(109);
    p.top_p = 0.70f;
    p.temperature = 3.0f;
    sampler s(p);
    const double w1 = std::cbrt(0.40), w3 = std::cbrt(0.25), w4 = std::cbrt(0.15);
    const double sum = w1 + w3 + w4;
    expect_frequencies(histogram(s, logits, draws), {0.0, w1 / sum, 0.0, w3 / sum, w4 / sum}, draws);
}

TEST(Sampling, RepetitionPenaltyHandExample) {
    sampling_params p;
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 64;
    p.seed = 1;
    {
        // Positive logit divided: 3.0 -> 1.5, below token 2's 2.0.
        const std::vector<float> logits = {3.0f, -1.0f, 2.0f, 0.5f};
        sampler s(p);
        EXPECT_EQ(s.sample(logits.data(), 4), 0);
        s.accept(0);
        EXPECT_EQ(s.sample(logits.data(), 4), 2);
        s.reset();
        EXPECT_EQ(s.sample(logits.data(), 4), 0);
    }
    {
        // Negative logit multiplied: -1.0 -> -2.0, below -1.5. (Dividing would give -0.5.)
        const std::vector<float> logits = {-1.0f, -1.5f};
        sampler s(p);
        s.accept(0);
        EXPECT_EQ(s.sample(logits.data(), 2), 1);
    }
    {
        // Applied once per token however often it occurs: 4.0 -> 2.0 > 1.5 (twice would be 1.0).
        const std::vector<float> logits = {4.0f, 1.5f};
        sampler s(p);
        s.accept(0);
        s.accept(0);
        s.accept(0);
        EXPECT_EQ(s.sample(logits.data(), 2), 0);
    }
    {
        // Out-of-range ids in the history are ignored.
        const std::vector<float> logits = {4.0f, 1.5f};
        sampler s(p);
        s.accept(-3);
        s.accept(100000);
        EXPECT_EQ(s.sample(logits.data(), 2), 0);
    }
}

TEST(Sampling, RepetitionPenaltyWindow) {
    const std::vector<float> logits = {3.0f, -1.0f, 2.0f, 0.5f};
    sampling_params p;
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    p.seed = 1;
    sampler s(p);
    s.accept(0);
    s.accept(3);
    EXPECT_EQ(s.sample(logits.data(), 4), 2); // 0 is in the last two
    s.accept(1);
    EXPECT_EQ(s.sample(logits.data(), 4), 0); // history {3, 1}: 0 has left the window

    p.repeat_last_n = 0; // off
    sampler off(p);
    off.accept(0);
    EXPECT_EQ(off.sample(logits.data(), 4), 0);

    p.repeat_last_n = -1; // everything since reset
    sampler all(p);
    all.accept(0);
    for (int i = 0; i < 500; ++i)
        all.accept(3);
    EXPECT_EQ(all.sample(logits.data(), 4), 2);
}

TEST(Sampling, RepetitionPenaltyShiftsDistribution) {
    constexpr int draws = 20000;
    // Logits ln 0.5, ln 0.5 with penalty 2 on token 0: ln 0.5 < 0, so it becomes 2 ln 0.5 = ln 0.25.
    // softmax(ln 0.25, ln 0.5) = 1/3, 2/3.
    sampling_params p = plain_params(110);
    p.repeat_penalty = 2.0f;
    sampler s(p);
    s.accept(0);
    expect_frequencies(histogram(s, logits_from_probs({0.5, 0.5}), draws), {1.0 / 3.0, 2.0 / 3.0}, draws);
}

TEST(Sampling, PenaltyInteractsWithTopK) {
    // Penalties come before top-k: 5, 4, 3, 2 with token 0 penalised by 10 -> 0.5, so top-2 is
    // {1, 2}; a penalty below 1 boosts instead: token 3 at 2 / 0.1 = 20 becomes the best.
    const std::vector<float> logits = {5.0f, 4.0f, 3.0f, 2.0f};
    sampling_params p = plain_params(120);
    p.top_k = 2;
    p.temperature = 100.0f;
    p.repeat_penalty = 10.0f;
    sampler s(p);
    s.accept(0);
    auto counts = histogram(s, logits, 2000);
    EXPECT_EQ(counts[0], 0);
    EXPECT_EQ(counts[3], 0);
    EXPECT_GT(counts[1], 800);
    EXPECT_GT(counts[2], 800);

    p.repeat_penalty = 0.1f;
    p.top_k = 1;
    sampler b(p);
    b.accept(3);
    counts = histogram(b, logits, 200);
    EXPECT_EQ(counts[3], 200);
}

// The exact support for top-p/min-p over a larger vocabulary, through each internal path (top-k
// on: sorted; top-k off: histogram cut, or min-p survivors sorted when they are few). A huge
// temperature makes the draw nearly uniform inside the support (temperature acts after the cut),
// so enough draws hit every member: the drawn set must equal the expected set exactly.
TEST(Sampling, ExactSupportOnEveryPath) {
    constexpr int32_t n_vocab = 3000;
    std::mt19937 gen(99);
    std::normal_distribution<float> nd(0.0f, 0.8f);
    std::vector<float> logits(n_vocab);
    for (auto &l : logits)
        l = nd(gen);

    std::vector<int32_t> order(n_vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
        return la > lb || (la == lb && a < b);
    });
    const double lmax = logits[static_cast<size_t>(order[0])];
    double z = 0.0;
    for (float l : logits)
        z += std::exp(l - lmax);

    struct test_case {
        float top_p, min_p;
        int32_t top_k;
        size_t min_size, max_size; // keeps the case meaningful: the expected support's size
        bool min_p_binds;          // and which cut is the shorter one
    };
    const test_case cases[] = {
        {0.30f, 0.0f, 0, 100, 600, false},           // top-p alone: histogram cut
        {0.30f, 0.0f, n_vocab - 1, 100, 600, false}, // the same support through the sorted path
        {0.95f, 0.20f, 0, 257, 1000, true}, // min-p cuts first, > 256 survivors: histogram cut, then min-p
        {0.95f, 0.40f, 0, 20, 256, true},   // min-p cuts first, few survivors: only they are sorted
        {0.05f, 0.05f, 0, 5, 100, false},   // top-p cuts first
    };
    for (const auto &c : cases) {
        size_t n_top = 0;
        for (double cum = 0.0; n_top < order.size();) {
            cum += std::exp(logits[static_cast<size_t>(order[n_top])] - lmax) / z;
            ++n_top;
            if (cum >= c.top_p) break;
        }
        size_t n_min = order.size();
        if (c.min_p > 0.0f) {
            const float thr = static_cast<float>(lmax) + std::log(c.min_p);
            n_min = 0;
            while (n_min < order.size() && logits[static_cast<size_t>(order[n_min])] >= thr)
                ++n_min;
        }
        const size_t expected_size = std::min(n_top, n_min);
        ASSERT_EQ(n_min < n_top, c.min_p_binds) << "top_p " << c.top_p << " min_p " << c.min_p;
        ASSERT_GE(expected_size, c.min_size) << "top_p " << c.top_p << " min_p " << c.min_p;
        ASSERT_LE(expected_size, c.max_size) << "top_p " << c.top_p << " min_p " << c.min_p;
        std::vector<char> expected(n_vocab, 0), seen(n_vocab, 0);
        for (size_t i = 0; i < expected_size; ++i)
            expected[static_cast<size_t>(order[i])] = 1;

        sampling_params p = plain_params(500);
        p.top_p = c.top_p;
        p.min_p = c.min_p;
        p.top_k = c.top_k;
        p.temperature = 1e4f;
        sampler s(p);
        const int draws = static_cast<int>(expected_size) * 16 + 200; // misses a member with p < 1e-3
        for (int i = 0; i < draws; ++i) {
            const int32_t t = s.sample(logits.data(), n_vocab);
            ASSERT_TRUE(expected[static_cast<size_t>(t)])
                << "token " << t << " outside the support (top_p " << c.top_p << ", min_p " << c.min_p << ")";
            seen[static_cast<size_t>(t)] = 1;
        }
        EXPECT_EQ(seen, expected) << "some support token never drawn (top_p " << c.top_p << ", min_p "
                                  << c.min_p << ", size " << expected_size << ")";
    }
}

std::vector<int32_t> run_sequence(sampler &s, const std::vector<float> &logits, int n) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i)
        out.push_back(s.sample(logits.data(), static_cast<int32_t>(logits.size())));
    return out;
}

TEST(Sampling, SameSeedReproducibleDifferentSeedsDiffer) {
    std::vector<float> logits(1000);
    for (size_t i = 0; i < logits.size(); ++i)
        logits[i] = static_cast<float>(std::sin(static_cast<double>(i)));
    sampling_params p = plain_params(777);
    p.top_k = 0;
    sampler a(p), b(p);
    const auto sa = run_sequence(a, logits, 300);
    EXPECT_EQ(sa, run_sequence(b, logits, 300));
    EXPECT_EQ(a.seed(), 777u);

    a.reset();
    EXPECT_EQ(sa, run_sequence(a, logits, 300)) << "reset restarts the generator";

    p.seed = 778;
    sampler c(p);
    const auto sc = run_sequence(c, logits, 300);
    EXPECT_NE(sa, sc);
    // Over ~1000 near-uniform tokens, two independent streams agree on ~0.1% of draws.
    int same = 0;
    for (size_t i = 0; i < sa.size(); ++i)
        same += (sa[i] == sc[i]);
    EXPECT_LT(same, 15);
}

TEST(Sampling, RandomSeedIsReportedAndReusable) {
    sampling_params p = plain_params(recur::random_seed);
    sampler a(p), b(p);
    EXPECT_NE(a.seed(), b.seed()); // 64 random bits each: a collision is not a realistic outcome
    std::vector<float> logits(500);
    for (size_t i = 0; i < logits.size(); ++i)
        logits[i] = static_cast<float>(std::cos(0.37 * static_cast<double>(i)));
    const auto sa = run_sequence(a, logits, 100);
    sampling_params q = plain_params(a.seed());
    sampler replay(q);
    EXPECT_EQ(sa, run_sequence(replay, logits, 100)) << "the reported seed replays the run";
}

TEST(Sampling, NonFiniteLogits) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    {
        // NaN tokens are never chosen, by greedy or by sampling.
        const std::vector<float> logits = {nan, 1.0f, nan, 2.0f, -inf};
        sampling_params g;
        g.temperature = 0.0f;
        g.seed = 1;
        sampler gs(g);
        EXPECT_EQ(gs.sample(logits.data(), 5), 3);
        sampler s(plain_params(9));
        const auto counts = histogram(s, logits, 2000);
        EXPECT_EQ(counts[0], 0);
        EXPECT_EQ(counts[2], 0);
        EXPECT_EQ(counts[4], 0);
        EXPECT_GT(counts[1], 0);
        EXPECT_GT(counts[3], counts[1]);
    }
    {
        // +inf tokens win outright and are equally likely.
        const std::vector<float> logits = {0.0f, inf, 50.0f, inf, nan};
        sampling_params g;
        g.temperature = 0.0f;
        g.seed = 1;
        sampler gs(g);
        EXPECT_EQ(gs.sample(logits.data(), 5), 1);
        sampler s(plain_params(10));
        expect_frequencies(histogram(s, logits, 4000), {0.0, 0.5, 0.0, 0.5, 0.0}, 4000);
    }
    {
        // A single usable token is returned even with every filter on.
        const std::vector<float> logits = {-inf, nan, 0.25f};
        sampler s(sampling_params{});
        EXPECT_EQ(s.sample(logits.data(), 3), 2);
    }
    {
        // Nothing usable: an error, not an invented token.
        const std::vector<float> logits = {nan, -inf, nan};
        sampler s(sampling_params{});
        EXPECT_THROW(s.sample(logits.data(), 3), recur::error);
        EXPECT_THROW(s.sample(nullptr, 3), recur::error);
        EXPECT_THROW(s.sample(logits.data(), 0), recur::error);
    }
    {
        // Extreme finite logits with a tiny temperature: no overflow into NaN.
        const std::vector<float> logits = {-3e38f, 3e38f, 1e38f};
        sampling_params p = plain_params(12);
        p.temperature = 1e-3f;
        sampler s(p);
        for (int i = 0; i < 50; ++i)
            EXPECT_EQ(s.sample(logits.data(), 3), 1);
    }
}

TEST(Sampling, InvalidParamsRejected) {
    sampling_params p;
    p.repeat_penalty = 0.0f;
    EXPECT_THROW(sampler{p}, recur::error);
    p.repeat_penalty = std::numeric_limits<float>::infinity();
    EXPECT_THROW(sampler{p}, recur::error);
    p = sampling_params{};
    p.temperature = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(sampler{p}, recur::error);
}

// Large vocabulary: the support must equal what a straightforward full sort gives, with top-k
// off (the path that sorts only as far as the nucleus reaches) and on.
TEST(Sampling, LargeVocabSupportMatchesFullSort) {
    constexpr int32_t n_vocab = 150000;
    std::mt19937 gen(2024);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> logits(n_vocab);
    for (auto &l : logits)
        l = nd(gen);
    for (int i = 0; i < 10; ++i)
        logits[static_cast<size_t>(gen() % n_vocab)] += 9.0f; // a few clear favourites

    std::vector<int32_t> order(n_vocab);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
               (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
    });
    const double lmax = logits[static_cast<size_t>(order[0])];
    double z = 0.0;
    for (float l : logits)
        z += std::exp(l - lmax);
    const double top_p = 0.9;
    size_t nucleus = 0;
    for (double cum = 0.0; nucleus < order.size();) {
        cum += std::exp(logits[static_cast<size_t>(order[nucleus])] - lmax) / z;
        ++nucleus;
        if (cum >= top_p) break;
    }
    ASSERT_GT(nucleus, 300u) << "the test wants a nucleus larger than one sorted block";
    std::vector<char> in_nucleus(n_vocab, 0), in_top40(n_vocab, 0);
    for (size_t i = 0; i < nucleus; ++i)
        in_nucleus[static_cast<size_t>(order[i])] = 1;
    for (size_t i = 0; i < 40; ++i)
        in_top40[static_cast<size_t>(order[i])] = 1;

    sampling_params p = plain_params(31);
    p.top_p = static_cast<float>(top_p);
    sampler s(p);
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int draws = 150;
    for (int i = 0; i < draws; ++i)
        ASSERT_TRUE(in_nucleus[static_cast<size_t>(s.sample(logits.data(), n_vocab))]);
    const auto t1 = std::chrono::steady_clock::now();

    sampling_params q = sampling_params{}; // the defaults: top-k 40, top-p 0.95, min-p 0.05
    q.seed = 32;
    sampler d(q);
    for (int i = 0; i < draws; ++i)
        ASSERT_TRUE(in_top40[static_cast<size_t>(d.sample(logits.data(), n_vocab))]);
    const auto t2 = std::chrono::steady_clock::now();
    auto us = [](auto a, auto b) { return std::chrono::duration<double, std::micro>(b - a).count() / draws; };
    std::printf("[ info ] n_vocab %d, nucleus %zu: top-p only %.0f us/token, defaults %.0f us/token\n",
                n_vocab, nucleus, us(t0, t1), us(t1, t2));
}

} // namespace
