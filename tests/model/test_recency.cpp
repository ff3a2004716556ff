// Recency statistics gathered inside the streaming attention against tests/reference/recency_ref.py,
// which materialises every attention matrix (512 tokens, window 32).
#include "recur/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

using namespace recur;

namespace {

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Pulls every number that follows `"key":` (scalars) in document order.
std::vector<double> numbers_after(const std::string &json, const std::string &key) {
    std::vector<double> out;
    const std::string pat = "\"" + key + "\": ";
    for (size_t p = json.find(pat); p != std::string::npos; p = json.find(pat, p + 1)) {
        size_t start = p + pat.size();
        if (json[start] == '[') {
            size_t end = json.find(']', start);
            std::istringstream ss(json.substr(start + 1, end - start - 1));
            std::string item;
            while (std::getline(ss, item, ',')) out.push_back(std::stod(item));
        } else {
            out.push_back(std::stod(json.substr(start, 32)));
        }
    }
    return out;
}

class Recency : public ::testing::TestWithParam<std::string> {};

TEST_P(Recency, StreamingStatisticsMatchMaterialisedReference) {
    const std::string name = GetParam();
    const std::string dir = RECUR_TEST_MODELS_DIR;
    const std::string path = name == "stories260K" ? std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf"
                                                   : dir + "/" + name + ".gguf";
    const std::string json = slurp(dir + "/" + name + ".recency.json");
    ASSERT_FALSE(json.empty()) << "run the generate_recency_reference fixture";
    const auto tokens_d = numbers_after(json, "tokens");
    const auto rec = numbers_after(json, "recency"), sink = numbers_after(json, "sink"), hist = numbers_after(json, "hist");
    const int ref_bins = int(numbers_after(json, "n_bins").at(0));
    std::vector<int32_t> tokens(tokens_d.begin(), tokens_d.end());
    const auto copy = numbers_after(json, "copy"), copy_pos = numbers_after(json, "copy_positions"),
               copy_key = numbers_after(json, "copy_keys");
    ASSERT_EQ(copy_pos.size(), copy_key.size());
    ASSERT_GT(copy_pos.size(), 100u);
    const auto copy_end = numbers_after(json, "copy_key_ends");
    ASSERT_EQ(copy_end.size(), copy_key.size());
    std::vector<key_range> targets(tokens.size());
    for (size_t c = 0; c < copy_pos.size(); ++c) targets[size_t(copy_pos[c])] = {int32_t(copy_key[c]), int32_t(copy_end[c])};

    auto m = model::load(path);
    const int n_head = m->hparams().n_head, n_layer = m->hparams().n_layer;
    ASSERT_EQ(rec.size(), size_t(n_layer * n_head));
    for (int n_batch : {512, 100}) { // batches that split the text exercise the position bookkeeping
        context_params cp;
        cp.n_ctx = 512;
        cp.n_batch = n_batch;
        cp.kv_type = tensor_type::F32;
        context ctx(*m, cp);
        ctx.collect_recency(32);
        ctx.set_copy_targets(targets);
        std::vector<float> logits;
        ctx.eval(tokens, logits);
        const recency_stats &s = ctx.recency();
        ASSERT_EQ(s.n_queries[0], 512 - 32);
        ASSERT_EQ(s.n_copy_queries[0], int64_t(copy_pos.size()));
        ASSERT_EQ(copy.size(), rec.size());
        double worst = 0, copy_max = 0;
        for (int l = 0; l < n_layer; ++l)
            for (int h = 0; h < n_head; ++h) {
                const size_t lh = size_t(l) * n_head + h;
                worst = std::max(worst, std::abs(s.mean_recency(l, h) - rec[lh]));
                worst = std::max(worst, std::abs(s.mean_sink(l, h) - sink[lh]));
                worst = std::max(worst, std::abs(s.mean_copy(l, h) - copy[lh]));
                copy_max = std::max(copy_max, copy[lh]);
                for (int b = 0; b < std::min(ref_bins, s.n_bins); ++b)
                    worst = std::max(worst, std::abs(s.mean_hist(l, h, b) - hist[lh * ref_bins + b]));
                double total = 0;
                for (int b = 0; b < s.n_bins; ++b) total += s.mean_hist(l, h, b);
                EXPECT_NEAR(total, 1.0, 1e-4) << "histogram of layer " << l << " head " << h;
            }
        printf("%s batch %d: max |engine - reference| = %.2e\n", name.c_str(), n_batch, worst);
        EXPECT_LE(worst, 1e-4);
        EXPECT_GT(copy_max, 1e-3) << "the copy mass compared should not be all zeros";
    }
}

INSTANTIATE_TEST_SUITE_P(Models, Recency, ::testing::Values("stories260K", "llama-gqa-f32", "qwen2-gqa-f32"),
                         [](const auto &param_info) {
                             std::string s = param_info.param;
                             for (char &c : s)
                                 if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                             return s;
                         });

} // namespace
