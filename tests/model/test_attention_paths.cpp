// The attention code paths agree: a decode step over a long cache (keys split across threads,
// partial softmax states merged) equals the same position computed inside a prefill batch,
// and every thread count gives the same logits.
#include "recur/model.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace recur;

namespace {
std::vector<int32_t> pseudo_tokens(int n, int n_vocab) {
    std::vector<int32_t> t{1};
    uint32_t x = 12345;
    while (int(t.size()) < n) {
        x = x * 1664525u + 1013904223u;
        t.push_back(int32_t(3 + (x >> 8) % uint32_t(n_vocab - 3)));
    }
    return t;
}
double max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
    return m;
}
} // namespace

TEST(AttentionPaths, SplitDecodeEqualsPrefillAtLongContext) {
    auto m = model::load(std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf");
    const auto tokens = pseudo_tokens(1800, m->hparams().n_vocab); // > 2 x 512 keys: split path
    for (tensor_type kv : {tensor_type::F32, tensor_type::F16}) {
        context_params cp;
        cp.n_ctx = 2048;
        cp.n_batch = 2048;
        cp.kv_type = kv;
        context whole(*m, cp), stepwise(*m, cp);
        std::vector<float> a, b;
        whole.eval(tokens, a);
        stepwise.eval(std::vector<int32_t>(tokens.begin(), tokens.end() - 1), b);
        stepwise.eval({tokens.back()}, b);
        const double diff = max_abs_diff(a, b);
        printf("kv %s: max |prefill - split decode| = %.2e\n", kv == tensor_type::F32 ? "f32" : "f16", diff);
        EXPECT_LE(diff, 1e-4);
    }
}

TEST(AttentionPaths, ThreadCountDoesNotChangeLogits) {
    auto m = model::load(std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf");
    const auto tokens = pseudo_tokens(300, m->hparams().n_vocab);
    std::vector<float> ref;
    for (int threads : {1, 2, 3}) {
        context_params cp;
        cp.n_ctx = 512;
        cp.n_threads = threads;
        context ctx(*m, cp);
        std::vector<float> logits;
        ctx.eval(tokens, logits, true);
        if (ref.empty()) ref = logits;
        EXPECT_LE(max_abs_diff(ref, logits), 1e-5) << threads << " threads";
    }
}
