#pragma once
// Token sampling: turns one row of logits into a token id.
//
// The chain and its semantics follow llama.cpp's common defaults (common/sampling.cpp, sampler
// order "penalties; top_k; top_p; min_p; temperature"; the DRY/typical/XTC/top-n-sigma stages of
// that chain are off by default and not implemented here):
//
//   1. repetition penalty  on the last `repeat_last_n` accepted tokens: a token that occurs there
//                          (any number of times) has its logit divided by `repeat_penalty` when
//                          the logit is > 0 and multiplied by it otherwise.
//   2. top-k               keep the k largest logits (k <= 0: off).
//   3. top-p               softmax at temperature 1, sort descending, keep the smallest prefix
//                          whose cumulative probability is >= top_p (top_p >= 1: off; top_p <= 0
//                          keeps only the first token).
//   4. min-p               keep tokens whose probability is >= min_p * (largest probability),
//                          i.e. logit >= max_logit + ln(min_p) (min_p <= 0: off).
//   5. temperature         divide the surviving logits by `temperature`, softmax, draw one.
//
// Temperature comes last, as in llama.cpp: top-p and min-p choose the support from the
// temperature-1 distribution, and temperature only reshapes the probabilities inside it. (This
// differs from Hugging Face's warper order, where temperature is applied before top-p.)
// temperature <= 0 is greedy: the argmax of the penalised logits, ties going to the lowest id;
// top-k/top-p/min-p cannot change that answer, so they are skipped.
//
// Ties in ordering (top-k boundary, top-p prefix) are broken by lower token id so that results
// do not depend on the standard library's sort.
//
// Non-finite logits: NaN is treated as -inf (the token can never be drawn). -inf tokens are
// dropped. If any logit is +inf, only the +inf tokens remain and they are equally likely
// (greedy picks the lowest such id). If no token has a usable logit (all NaN/-inf), sample()
// throws recur::error rather than invent a token.
//
// Randomness: a xoshiro256** generator seeded through splitmix64 from `seed`; one draw uses the
// top 53 bits of one 64-bit output as a uniform double in [0, 1) and walks the cumulative
// weights. No std:: distribution is involved (their output is implementation-defined), so the
// same seed and logits give the same tokens with any standard library; across math libraries
// only the last-bit rounding of exp() can differ, which changes a draw only when it lands within
// rounding of a boundary.
//
// Cost per call, for the 50k-150k vocabularies of current models: with top-k on (the default),
// one read-only pass over the logits (a comparison per token against the k-th best so far) plus
// O(k log k); greedy is the same with k = 1. With top-k off, a copy of the logits, one exp per
// token, and a sort of only the tokens near the top-p cut (a logit histogram finds it).
//
// A sampler is not thread-safe; use one per generation stream.
#include "recur/error.h"

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

namespace recur {

struct sampling_params {
    float temperature = 0.8f;    // <= 0 -> greedy
    int32_t top_k = 40;          // <= 0 -> off
    float top_p = 0.95f;         // >= 1 -> off
    float min_p = 0.05f;         // <= 0 -> off
    float repeat_penalty = 1.0f; // 1 -> off; must be > 0 and finite
    int32_t repeat_last_n = 64;  // 0 -> off; < 0 -> every token accepted since the last reset()
    uint64_t seed = 0xFFFFFFFF;  // this value -> a random seed from std::random_device
};

// Seed value that asks for a random seed (llama.cpp's LLAMA_DEFAULT_SEED).
inline constexpr uint64_t random_seed = 0xFFFFFFFF;

class sampler {
  public:
    // Throws recur::error on NaN parameters or a repeat_penalty that is not a positive finite number.
    explicit sampler(const sampling_params &p);

    // Picks a token from logits[0 .. n_vocab). The logits are not modified. Throws recur::error
    // when logits is null, n_vocab <= 0 or no logit is usable (see above).
    int32_t sample(const float *logits, int32_t n_vocab);

    // Appends a token to the repetition-penalty history. Feed it the prompt tokens too if the
    // penalty should cover them (llama.cpp's CLI does). Ids outside [0, n_vocab) are kept but
    // have no effect.
    void accept(int32_t token);

    // Clears the history and restarts the generator from seed(), so a reset sampler repeats
    // the same draws for the same inputs.
    void reset();

    // The seed actually in use (the random one when params.seed == random_seed).
    uint64_t seed() const { return seed_; }

    const sampling_params &params() const { return params_; }

  private:
    struct candidate {
        int32_t id;
        float logit;
    };

    float penalised(float logit) const;
    size_t load_top_k(const float *logits, int32_t n_vocab, size_t k);
    size_t load_all(const float *logits, int32_t n_vocab);
    size_t drop_non_finite(size_t n);
    size_t top_p_unsorted(size_t n, float lmax);
    uint64_t next_u64();
    void seed_rng(uint64_t s);

    sampling_params params_;
    uint64_t seed_ = 0;
    uint64_t rng_[4] = {0, 0, 0, 0};

    std::deque<int32_t> history_;                 // the last repeat_last_n accepted tokens
    std::unordered_map<int32_t, int32_t> counts_; // occurrences of each token in history_

    // Scratch, reused between calls so that a 150k-entry vocabulary costs no allocation per token.
    std::vector<candidate> cand_;
    std::vector<uint8_t> penalised_mark_; // all zero between calls
    std::vector<double> bucket_mass_;
    std::vector<float> weights_;
};

} // namespace recur
