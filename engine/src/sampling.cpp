// Sampling chain (see recur/sampling.h for the semantics and why the order is what it is).
#include "recur/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

namespace recur {

namespace {

// splitmix64: expands one 64-bit seed into the xoshiro state; recommended by xoshiro's authors
// because it never yields the all-zero state from any seed.
uint64_t splitmix64(uint64_t &x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// The order every stage agrees on: larger logit first, lower id on ties. A strict weak order
// because NaN has been removed before any comparison happens.
struct by_logit_desc {
    template <class C> bool operator()(const C &a, const C &b) const {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    }
};

} // namespace

sampler::sampler(const sampling_params &p) : params_(p) {
    if (std::isnan(p.temperature) || std::isnan(p.top_p) || std::isnan(p.min_p))
        throw error("sampler: temperature, top_p and min_p must not be NaN");
    if (!(p.repeat_penalty > 0.0f) || !std::isfinite(p.repeat_penalty))
        throw error("sampler: repeat_penalty must be a positive finite number, got " +
                    std::to_string(p.repeat_penalty));
    if (p.seed == random_seed) {
        // random_device yields 32 bits per call; two calls fill the 64-bit seed.
        std::random_device rd;
        seed_ = (static_cast<uint64_t>(rd()) << 32) | static_cast<uint64_t>(rd());
    } else {
        seed_ = p.seed;
    }
    seed_rng(seed_);
}

void sampler::seed_rng(uint64_t s) {
    uint64_t x = s;
    for (auto &w : rng_) w = splitmix64(x);
}

// xoshiro256** (Blackman & Vigna): small, fast, and fully specified, unlike the standard
// distributions whose output differs between library implementations.
uint64_t sampler::next_u64() {
    const uint64_t result = rotl(rng_[1] * 5, 7) * 9;
    const uint64_t t = rng_[1] << 17;
    rng_[2] ^= rng_[0];
    rng_[3] ^= rng_[1];
    rng_[1] ^= rng_[2];
    rng_[0] ^= rng_[3];
    rng_[2] ^= t;
    rng_[3] = rotl(rng_[3], 45);
    return result;
}

void sampler::accept(int32_t token) {
    const int32_t last_n = params_.repeat_last_n;
    if (last_n == 0) return;
    ++counts_[token];
    if (last_n < 0) return; // unbounded window: the counts alone are enough
    history_.push_back(token);
    if (history_.size() > static_cast<size_t>(last_n)) {
        const int32_t old = history_.front();
        history_.pop_front();
        auto it = counts_.find(old);
        if (--it->second == 0) counts_.erase(it);
    }
}

void sampler::reset() {
    history_.clear();
    counts_.clear();
    seed_rng(seed_);
}

void sampler::apply_penalties(int32_t n_vocab) {
    if (params_.repeat_last_n == 0 || params_.repeat_penalty == 1.0f) return;
    const float pen = params_.repeat_penalty;
    for (const auto &[tok, count] : counts_) {
        if (tok < 0 || tok >= n_vocab) continue;
        float &l = cand_[static_cast<size_t>(tok)].logit; // cand_ is still indexed by id here
        // Dividing a negative logit would raise it; llama.cpp multiplies instead so the penalty
        // always makes the token less likely.
        if (l <= 0.0f)
            l *= pen;
        else
            l /= pen;
    }
}

int32_t sampler::sample(const float *logits, int32_t n_vocab) {
    if (logits == nullptr || n_vocab <= 0)
        throw error("sampler: no logits to sample from (n_vocab = " + std::to_string(n_vocab) + ")");

    constexpr float inf = std::numeric_limits<float>::infinity();
    cand_.resize(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) cand_[static_cast<size_t>(i)] = {i, logits[i]};
    apply_penalties(n_vocab);

    // Drop NaN and -inf; if anything is +inf, it outranks every finite logit, so only the +inf
    // tokens stay, as equals (logit 0), which keeps the softmax free of inf - inf.
    bool any_pos_inf = false;
    for (const auto &c : cand_) any_pos_inf |= (c.logit == inf);
    size_t n = 0;
    for (const auto &c : cand_) {
        float l = c.logit;
        if (std::isnan(l) || l == -inf) continue;
        if (any_pos_inf) {
            if (l != inf) continue;
            l = 0.0f;
        }
        cand_[n++] = {c.id, l};
    }
    cand_.resize(n);
    if (n == 0) throw error("sampler: every logit is NaN or -inf");

    // Greedy: cand_ is in id order, so the first strict maximum is the lowest id among ties.
    if (!(params_.temperature > 0.0f)) {
        size_t best = 0;
        for (size_t i = 1; i < n; ++i)
            if (cand_[i].logit > cand_[best].logit) best = i;
        return cand_[best].id;
    }

    const by_logit_desc cmp;
    size_t n_sorted = 0; // cand_[0 .. n_sorted) holds the n_sorted best, in order

    // top-k: selection then a sort of only k elements, O(n + k log k), instead of sorting the vocab.
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
        const size_t k = static_cast<size_t>(params_.top_k);
        std::nth_element(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k), cand_.end(), cmp);
        cand_.resize(k);
        std::sort(cand_.begin(), cand_.end(), cmp);
        n = k;
        n_sorted = k;
    }

    float lmax = -inf;
    if (n_sorted > 0) {
        lmax = cand_[0].logit;
    } else {
        for (const auto &c : cand_) lmax = std::max(lmax, c.logit);
    }

    // min-p in logit space: p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p).
    const bool use_min_p = params_.min_p > 0.0f;
    // min_p > 1 would cut every token; clamping to lmax keeps the best one(s), as min_p = 1 does.
    const float min_logit = use_min_p ? std::min(lmax, lmax + std::log(params_.min_p)) : -inf;
    size_t n_min = n;
    if (use_min_p) {
        n_min = 0;
        for (const auto &c : cand_) n_min += (c.logit >= min_logit);
    }

    size_t keep = n;
    if (params_.top_p < 1.0f) {
        // Both cuts keep a prefix of the sorted order (min-p: all logits >= a threshold), so the
        // result is the shorter prefix. The top-p prefix therefore never needs to be looked for
        // past n_min, and the vocabulary is sorted only as far as the scan actually goes.
        double z = 0.0;
        for (const auto &c : cand_) z += std::exp(static_cast<double>(c.logit) - lmax);
        const double p = params_.top_p;
        double cum = 0.0;
        keep = n_min;
        for (size_t i = 0; i < n_min; ++i) {
            if (i == n_sorted) {
                // Extend the sorted prefix geometrically: select the next block, sort only it.
                const size_t end = std::min(n, std::max<size_t>(2 * n_sorted, 256));
                auto first = cand_.begin() + static_cast<std::ptrdiff_t>(n_sorted);
                auto last = cand_.begin() + static_cast<std::ptrdiff_t>(end);
                if (end < n) std::nth_element(first, last, cand_.end(), cmp);
                std::sort(first, last, cmp);
                n_sorted = end;
            }
            cum += std::exp(static_cast<double>(cand_[i].logit) - lmax) / z;
            if (cum >= p) {
                keep = i + 1;
                break;
            }
        }
    } else if (use_min_p) {
        // Filter in place; order (sorted or by id) is preserved.
        size_t m = 0;
        for (size_t i = 0; i < n; ++i)
            if (cand_[i].logit >= min_logit) cand_[m++] = cand_[i];
        keep = m;
    }

    // Temperature, softmax over the survivors, one draw. lmax is a survivor (every cut keeps the
    // best token), so the largest weight is exactly 1 and the total never underflows.
    const double inv_t = 1.0 / static_cast<double>(params_.temperature);
    weights_.resize(keep);
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) {
        weights_[i] = std::exp((static_cast<double>(cand_[i].logit) - lmax) * inv_t);
        total += weights_[i];
    }
    // Uniform in [0, 1) from the top 53 bits: every value is an exact double.
    const double u = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    const double target = u * total;
    double acc = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < keep; ++i) {
        if (weights_[i] <= 0.0) continue;
        acc += weights_[i];
        last_positive = i;
        if (target < acc) return cand_[i].id;
    }
    return cand_[last_positive].id; // only reached through rounding in the running sum
}

} // namespace recur
