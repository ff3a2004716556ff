#pragma once
// One position's next-token distributions of two models compared (`recur kl`, and the end-to-end
// check of `convert --kind auto`): in double and through log-softmax (log Z = max + log Σ
// exp(x - max)), so no probability underflows before it is used and identical rows give exactly 0.
// Header-only, so unit tests check it without running a model.
#include <cmath>
#include <cstdint>

namespace recur {

struct row_comparison {
    double kl = 0;          // KL(P ‖ Q) in nats
    double nll_p = 0;       // -log P(target)
    double nll_q = 0;       // -log Q(target)
    bool same_top1 = false; // argmax P == argmax Q (ties go to the lowest id)
};

// log Σ exp(x[v]) over v in [0, n), and the argmax (lowest id on ties).
inline double log_sum_exp(const float *x, int32_t n, int32_t &argmax) {
    argmax = 0;
    for (int32_t v = 1; v < n; ++v)
        if (x[v] > x[argmax]) argmax = v;
    const double mx = x[argmax];
    double sum = 0;
    for (int32_t v = 0; v < n; ++v) sum += std::exp(double(x[v]) - mx);
    return mx + std::log(sum);
}

// p, q: logits rows [n] of the two models at one position; target: the token that came next.
inline row_comparison compare_logit_rows(const float *p, const float *q, int32_t n, int32_t target) {
    row_comparison r;
    int32_t top_p = 0, top_q = 0;
    const double lzp = log_sum_exp(p, n, top_p);
    const double lzq = log_sum_exp(q, n, top_q);
    double kl = 0;
    for (int32_t v = 0; v < n; ++v) {
        const double lp = double(p[v]) - lzp, lq = double(q[v]) - lzq;
        kl += std::exp(lp) * (lp - lq);
    }
    // Rounding can leave a few ulps below zero where the rows (nearly) agree; KL is never negative.
    r.kl = kl > 0 ? kl : 0.0;
    r.nll_p = lzp - double(p[target]);
    r.nll_q = lzq - double(q[target]);
    r.same_top1 = top_p == top_q;
    return r;
}

} // namespace recur
