// Sampling chain (see recur/sampling.h for the semantics and why the order is what it is).
#include "recur/sampling.h"
#include "recur/splitmix64.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

namespace recur {

namespace {

inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

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
    for (auto &w : rng_)
        w = splitmix64(x);
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

float sampler::penalised(float l) const {
    // Dividing a negative logit would raise it; llama.cpp multiplies instead so that a penalty
    // above 1 always makes the token less likely.
    const float pen = params_.repeat_penalty;
    return l <= 0.0f ? l * pen : l / pen;
}

// Removes NaN and -inf from cand_[0 .. n), keeping order. If anything is +inf it outranks every
// finite logit, so only the +inf tokens stay, as equals (logit 0), which also keeps the softmax
// free of inf - inf.
size_t sampler::drop_non_finite(size_t n) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    bool any_pos_inf = false;
    for (size_t i = 0; i < n; ++i)
        any_pos_inf |= (cand_[i].logit == inf);
    size_t m = 0;
    for (size_t i = 0; i < n; ++i) {
        float l = cand_[i].logit;
        if (std::isnan(l) || l == -inf) continue;
        if (any_pos_inf) {
            if (l != inf) continue;
            l = 0.0f;
        }
        cand_[m++] = {cand_[i].id, l};
    }
    cand_.resize(m);
    return m;
}

// Top-k (and greedy, as k = 1) in one pass over the logits, without copying the vocabulary: a
// heap of the k best so far, whose worst entry is a threshold that almost every logit fails.
// Penalised tokens are skipped in the scan and offered afterwards with their penalised logits.
// Leaves cand_ sorted best first.
size_t sampler::load_top_k(const float *logits, int32_t n_vocab, size_t k) {
    const by_logit_desc cmp; // as a heap order: front() is the worst candidate kept
    const bool penalties = params_.repeat_last_n != 0 && params_.repeat_penalty != 1.0f && !counts_.empty();
    if (penalties) {
        if (penalised_mark_.size() < static_cast<size_t>(n_vocab))
            penalised_mark_.resize(static_cast<size_t>(n_vocab), 0);
        for (const auto &kv : counts_)
            if (kv.first >= 0 && kv.first < n_vocab) penalised_mark_[static_cast<size_t>(kv.first)] = 1;
    }

    cand_.clear();
    auto offer = [&](candidate c) {
        if (cand_.size() < k) {
            cand_.push_back(c);
            std::push_heap(cand_.begin(), cand_.end(), cmp);
        } else if (cmp(c, cand_.front())) {
            std::pop_heap(cand_.begin(), cand_.end(), cmp);
            cand_.back() = c;
            std::push_heap(cand_.begin(), cand_.end(), cmp);
        }
    };

    int32_t i = 0;
    for (; i < n_vocab && cand_.size() < k; ++i) { // filling: everything but NaN goes in
        const float l = logits[i];
        if (std::isnan(l) || (penalties && penalised_mark_[static_cast<size_t>(i)])) continue;
        offer({i, l});
    }
    if (cand_.size() == k) {
        // Ids rise during the scan, so a logit equal to the threshold loses the tie; NaN fails
        // the comparison too. This one comparison is all most of the vocabulary costs.
        float threshold = cand_.front().logit;
        for (; i < n_vocab; ++i) {
            const float l = logits[i];
            if (!(l > threshold)) continue;
            if (penalties && penalised_mark_[static_cast<size_t>(i)]) continue;
            offer({i, l});
            threshold = cand_.front().logit;
        }
    }
    if (penalties) {
        for (const auto &kv : counts_) {
            if (kv.first < 0 || kv.first >= n_vocab) continue;
            penalised_mark_[static_cast<size_t>(kv.first)] = 0;
            const float l = penalised(logits[kv.first]);
            if (!std::isnan(l)) offer({kv.first, l});
        }
    }
    std::sort(cand_.begin(), cand_.end(), cmp);
    return drop_non_finite(cand_.size());
}

// The whole vocabulary, in id order, penalised and with non-finite logits dealt with.
size_t sampler::load_all(const float *logits, int32_t n_vocab) {
    const size_t n = static_cast<size_t>(n_vocab);
    cand_.resize(n);
    bool non_finite = false;
    for (size_t i = 0; i < n; ++i) {
        const float l = logits[i];
        cand_[i] = {static_cast<int32_t>(i), l};
        non_finite |= (l - l != 0.0f); // NaN for inf and NaN, 0 for every finite value
    }
    if (params_.repeat_last_n != 0 && params_.repeat_penalty != 1.0f) {
        for (const auto &kv : counts_) {
            if (kv.first < 0 || kv.first >= n_vocab) continue;
            float &l = cand_[static_cast<size_t>(kv.first)].logit;
            l = penalised(l);
            non_finite |= (l - l != 0.0f); // a penalty below 1 can overflow
        }
    }
    return non_finite ? drop_non_finite(n) : n;
}

// top-p over cand_[0 .. n) in no particular order. Returns m such that cand_[0 .. m) is the
// top-p set (the smallest prefix of the sorted order with mass >= top_p), without sorting the
// vocabulary: the mass is histogrammed by logit, the bucket where the cumulative mass crosses
// top_p is found, and only that bucket's tokens are sorted to find the exact cut.
size_t sampler::top_p_unsorted(size_t n, float lmax) {
    constexpr size_t n_buckets = 1024;
    // Tokens more than 32 below the max (relative weight < 1.3e-14) share the last bucket.
    constexpr float span_max = 32.0f;
    const by_logit_desc cmp;
    const double p = params_.top_p;
    auto first = cand_.begin();

    float lmin = lmax;
    for (size_t i = 0; i < n; ++i)
        lmin = std::min(lmin, cand_[i].logit);
    const float span = std::min(lmax - lmin, span_max);
    const float scale = span > 0.0f ? static_cast<float>(n_buckets - 1) / span : 0.0f;
    auto bucket_of = [&](float l) -> size_t {
        const float d = (lmax - l) * scale;
        return d >= static_cast<float>(n_buckets - 1) ? n_buckets - 1 : static_cast<size_t>(d);
    };

    bucket_mass_.assign(n_buckets, 0.0);
    double z = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const float w = std::exp(cand_[i].logit - lmax);
        bucket_mass_[bucket_of(cand_[i].logit)] += w;
        z += w;
    }
    size_t cut = n_buckets - 1;
    double before = 0.0; // mass of the buckets above the cut
    for (size_t b = 0; b < n_buckets; ++b) {
        if (b == n_buckets - 1 || (before + bucket_mass_[b]) / z >= p) {
            cut = b;
            break;
        }
        before += bucket_mass_[b];
    }

    auto mid = std::partition(first, first + static_cast<std::ptrdiff_t>(n),
                              [&](const candidate &c) { return bucket_of(c.logit) < cut; });
    auto end = std::partition(mid, first + static_cast<std::ptrdiff_t>(n),
                              [&](const candidate &c) { return bucket_of(c.logit) == cut; });
    std::sort(mid, end, cmp);
    double cum = before / z;
    for (auto it = mid; it != end; ++it) {
        cum += static_cast<double>(std::exp(it->logit - lmax)) / z;
        if (cum >= p) return static_cast<size_t>(it - first) + 1;
    }
    return static_cast<size_t>(end - first); // not reached only through rounding: keep the bucket
}

int32_t sampler::sample(const float *logits, int32_t n_vocab) {
    if (logits == nullptr || n_vocab <= 0)
        throw error("sampler: no logits to sample from (n_vocab = " + std::to_string(n_vocab) + ")");

    constexpr float inf = std::numeric_limits<float>::infinity();
    const by_logit_desc cmp;
    const bool greedy = !(params_.temperature > 0.0f);
    // Greedy is top-1: the best under the same order, so ties go to the lowest id.
    const size_t k = greedy ? 1 : (params_.top_k > 0 ? static_cast<size_t>(params_.top_k) : 0);
    const bool sorted = k > 0 && k < static_cast<size_t>(n_vocab);
    const size_t n = sorted ? load_top_k(logits, n_vocab, k) : load_all(logits, n_vocab);
    if (n == 0) throw error("sampler: every logit is NaN or -inf");

    // Greedy took the top-k path with k = 1 unless the vocabulary has a single token; either
    // way the answer is cand_[0].
    if (greedy) return cand_[0].id;

    float lmax = -inf;
    if (sorted) {
        lmax = cand_[0].logit;
    } else {
        for (size_t i = 0; i < n; ++i)
            lmax = std::max(lmax, cand_[i].logit);
    }

    // min-p in logit space: p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p). min_p > 1
    // would cut every token; clamping to lmax keeps the best one(s), as min_p = 1 does.
    const bool use_min_p = params_.min_p > 0.0f;
    const float min_logit = use_min_p ? std::min(lmax, lmax + std::log(params_.min_p)) : -inf;
    size_t n_min = n;
    if (use_min_p) {
        n_min = 0;
        for (size_t i = 0; i < n; ++i)
            n_min += (cand_[i].logit >= min_logit);
    }
    auto keep_min_p = [&](size_t m) { // moves the min-p survivors among cand_[0 .. m) to the front
        size_t j = 0;
        for (size_t i = 0; i < m; ++i)
            if (cand_[i].logit >= min_logit) cand_[j++] = cand_[i];
        return j;
    };

    // Both top-p and min-p keep a prefix of the sorted order (min-p: every logit above a
    // threshold), so applying one after the other keeps the shorter of the two prefixes.
    size_t keep = n;
    if (params_.top_p < 1.0f) {
        constexpr size_t small = 256;
        bool prefix_sorted = sorted;
        if (!sorted && use_min_p && n_min <= small) {
            // Few min-p survivors: the top-p cut is among them, so only they need sorting.
            std::partition(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(n),
                           [&](const candidate &c) { return c.logit >= min_logit; });
            std::sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(n_min), cmp);
            prefix_sorted = true;
        }
        if (prefix_sorted) {
            double z = 0.0; // over every candidate: top-p uses the full temperature-1 softmax
            for (size_t i = 0; i < n; ++i)
                z += std::exp(cand_[i].logit - lmax);
            const double p = params_.top_p;
            double cum = 0.0;
            keep = n_min;
            for (size_t i = 0; i < n_min; ++i) {
                cum += static_cast<double>(std::exp(cand_[i].logit - lmax)) / z;
                if (cum >= p) {
                    keep = i + 1;
                    break;
                }
            }
        } else {
            keep = top_p_unsorted(n, lmax);
            if (use_min_p && n_min < keep) keep = keep_min_p(keep);
        }
    } else if (use_min_p) {
        keep = keep_min_p(n);
    }

    // Temperature, softmax over the survivors, one draw. The best token always survives, so
    // the largest weight is exactly 1 and the total cannot underflow. The scaled difference is
    // formed in double so that a tiny temperature cannot turn 0 * inf into NaN.
    const double inv_t = 1.0 / static_cast<double>(params_.temperature);
    weights_.resize(keep);
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) {
        // Clamped before narrowing (an out-of-range double -> float conversion is undefined);
        // expf already underflows to 0 well above -200.
        const double x = std::max((static_cast<double>(cand_[i].logit) - lmax) * inv_t, -200.0);
        weights_[i] = std::exp(static_cast<float>(x));
        total += weights_[i];
    }
    // Uniform in [0, 1) from the top 53 bits: every value is an exact double.
    const double u = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    const double target = u * total;
    double acc = 0.0;
    size_t last_positive = 0;
    for (size_t i = 0; i < keep; ++i) {
        if (weights_[i] <= 0.0f) continue;
        acc += weights_[i];
        last_positive = i;
        if (target < acc) return cand_[i].id;
    }
    return cand_[last_positive].id; // only reached through rounding in the running sum
}

} // namespace recur
