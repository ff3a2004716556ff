#pragma once
// Recency statistics of attention heads (DESIGN §4), gathered inside the attention
// computation during prefill: for a query at position i with weights a_ij (j <= i),
//   recency(k) = sum of a_ij over i-k < j <= i     (mass on the last k tokens, the query included)
//   sink       = a_i0                              (mass on the first token)
//   hist[b]    = mass at distance d = i-j in bin b: {0}, {1}, [2,3], [4,7], ... (powers of two)
// summed over query positions i >= k; means divide by the number of such positions.
// Optionally, with target keys [lo(i), hi(i)) for some positions (context::set_copy_targets):
//   copy       = sum of a_ij over lo(i) <= j < hi(i) (mass on the target keys)
// averaged over the targeted positions i >= k. With a text whose spans are written twice and
// the target the key after the earlier copy of token i, it is a head's induction (copy) score;
// with a needle-in-a-haystack prompt and the needle as target of the question's positions, its
// retrieval score: heads that fetch far tokens score high, however recent their attention is on
// average.
#include <cstdint>
#include <vector>

namespace recur {

// Bin of a distance: 0 for d = 0, else bit_width(d) (1 for 1, 2 for 2..3, 3 for 4..7, ...).
inline int recency_bin(int64_t d) {
    int b = 0;
    while (d > 0) {
        ++b;
        d >>= 1;
    }
    return b;
}

// Target keys [lo, hi) of one query position for the copy mass; lo >= hi: none.
struct key_range {
    int32_t lo = 0, hi = 0;
};

struct recency_stats {
    int32_t window = 32;
    int32_t n_layer = 0, n_head = 0, n_bins = 0;
    std::vector<double> recency_sum; // [n_layer][n_head]
    std::vector<double> sink_sum;    // [n_layer][n_head]
    std::vector<double> hist_sum;    // [n_layer][n_head][n_bins]
    std::vector<int64_t> n_queries;  // [n_layer]: query positions summed
    std::vector<double> copy_sum;    // [n_layer][n_head]
    std::vector<int64_t> n_copy_queries; // [n_layer]: targeted query positions summed

    void reset(int32_t layers, int32_t heads, int32_t bins, int32_t k) {
        window = k, n_layer = layers, n_head = heads, n_bins = bins;
        recency_sum.assign(size_t(layers) * heads, 0.0);
        sink_sum.assign(size_t(layers) * heads, 0.0);
        hist_sum.assign(size_t(layers) * heads * bins, 0.0);
        n_queries.assign(size_t(layers), 0);
        copy_sum.assign(size_t(layers) * heads, 0.0);
        n_copy_queries.assign(size_t(layers), 0);
    }
    double mean_recency(int l, int h) const { return avg(recency_sum[size_t(l) * n_head + h], l); }
    double mean_sink(int l, int h) const { return avg(sink_sum[size_t(l) * n_head + h], l); }
    double mean_hist(int l, int h, int b) const { return avg(hist_sum[(size_t(l) * n_head + h) * n_bins + b], l); }
    // A KV group's recency is the minimum over its query heads (DESIGN §4).
    double group_recency(int l, int group, int group_size) const {
        double r = 1.0;
        for (int h = group * group_size; h < (group + 1) * group_size; ++h) r = r < mean_recency(l, h) ? r : mean_recency(l, h);
        return r;
    }

    // Mean copy mass (0 when no position was targeted); a group's is the maximum over its query
    // heads: one copying head is enough to make the group worth keeping.
    double mean_copy(int l, int h) const {
        const int64_t n = n_copy_queries.empty() ? 0 : n_copy_queries[size_t(l)];
        return n > 0 ? copy_sum[size_t(l) * n_head + h] / double(n) : 0.0;
    }
    double group_copy(int l, int group, int group_size) const {
        double c = 0.0;
        for (int h = group * group_size; h < (group + 1) * group_size; ++h) c = c > mean_copy(l, h) ? c : mean_copy(l, h);
        return c;
    }

  private:
    double avg(double s, int l) const { return n_queries[size_t(l)] > 0 ? s / double(n_queries[size_t(l)]) : 0.0; }
};

} // namespace recur
