// Hybrid models: conversion, zero-replacement identity, memory accounting against real
// allocations, state save/load, and malformed hybrid files.
#include "recur/convert.h"
#include "recur/gguf_writer.h"
#include "recur/model.h"
#include "recur/passkey.h"
#include "recur/tokenizer.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

using namespace recur;

namespace {

const std::string stories = std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf";
const std::string models_dir = RECUR_TEST_MODELS_DIR;

std::vector<int32_t> calibration_tokens(const model &m, int n) {
    std::ifstream in(std::string(RECUR_SHARED_DIR) + "/data/prideprejudice.txt");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.resize(20000);
    auto ids = m.vocab().encode(text, true, false);
    ids.resize(size_t(n));
    return ids;
}

std::vector<int32_t> greedy(context &ctx, const std::vector<int32_t> &prompt, int n) {
    std::vector<float> logits;
    if (!prompt.empty()) ctx.eval(prompt, logits);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
        const auto &lg = ctx.last_logits();
        const int32_t best = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
        out.push_back(best);
        ctx.eval({best}, logits);
    }
    return out;
}

// Per process: ctest runs the tests of this file as parallel processes (-j2) in one folder.
std::string tmp(const std::string &name) { return recur_test::scratch(name); }

float max_logit_diff(const float *a, const float *b, int n_vocab) {
    float d = 0;
    for (int v = 0; v < n_vocab; ++v) d = std::max(d, std::fabs(a[v] - b[v]));
    return d;
}

// 40 tokens of a hybrid with an F32 cache (so rings hold exactly the batch's rows): the logits of
// one batch equal those of batches of 1, 3 and 8, and those after a state saved at token 23 (every
// window has wrapped) is loaded and the rest read. With load_over_other the loading context has
// first read 23 other tokens, so whatever the file does not restore would show. Returns the tokens
// and the one-batch logits [40][n_vocab].
std::pair<std::vector<int32_t>, std::vector<float>> expect_batches_and_state_agree(const model &m, const std::string &state,
                                                                                   bool load_over_other) {
    const int n_vocab = m.hparams().n_vocab;
    std::vector<int32_t> tokens;
    for (int i = 0; i < 40; ++i) tokens.push_back(1 + (i * 37 + 11) % (n_vocab - 1));
    context_params cp;
    cp.n_ctx = 64;
    cp.kv_type = tensor_type::F32;
    context whole(m, cp);
    std::vector<float> ref, lg;
    whole.eval(tokens, ref, true);
    for (int n_batch : {1, 3, 8}) {
        context_params c2 = cp;
        c2.n_batch = n_batch;
        context ctx(m, c2);
        ctx.eval(tokens, lg, true);
        for (size_t t = 0; t < tokens.size(); ++t)
            EXPECT_LE(max_logit_diff(lg.data() + t * n_vocab, ref.data() + t * n_vocab, n_vocab), 2e-4f)
                << "batch " << n_batch << " t " << t;
    }
    context first(m, cp);
    first.eval(std::vector<int32_t>(tokens.begin(), tokens.begin() + 23), lg, true);
    first.save_state(state);
    context second(m, cp);
    if (load_over_other) {
        std::vector<int32_t> other(23);
        for (int i = 0; i < 23; ++i) other[size_t(i)] = 1 + (i * 53 + 5) % (n_vocab - 1);
        second.eval(other, lg, true);
    }
    second.load_state(state);
    second.eval(std::vector<int32_t>(tokens.begin() + 23, tokens.end()), lg, true);
    for (size_t t = 23; t < tokens.size(); ++t)
        EXPECT_LE(max_logit_diff(lg.data() + (t - 23) * n_vocab, ref.data() + t * n_vocab, n_vocab), 2e-4f)
            << "after load, t " << t;
    return {tokens, ref};
}

} // namespace

TEST(Hybrid, ZeroReplacedGroupsGivesExactlyTheOriginalLogits) {
    auto m = model::load(stories);
    convert_params p;
    p.fraction = 0;
    const auto r = convert_to_hybrid(*m, calibration_tokens(*m, 300), p, tmp("zero.gguf"));
    EXPECT_EQ(r.replaced_groups, 0);
    auto h = model::load(tmp("zero.gguf"));
    EXPECT_TRUE(h->is_hybrid());
    const auto tokens = calibration_tokens(*m, 200);
    context_params cp;
    cp.n_ctx = 256;
    context a(*m, cp), b(*h, cp);
    std::vector<float> la, lb;
    a.eval(tokens, la, true);
    b.eval(tokens, lb, true);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0);
    // Every original tensor is in the hybrid file, byte for byte.
    for (auto &t : m->file().tensors()) {
        const gguf_tensor_info *u = h->file().find_tensor(t.name);
        ASSERT_NE(u, nullptr) << t.name;
        ASSERT_EQ(u->n_bytes, t.n_bytes);
        EXPECT_EQ(std::memcmp(u->data, t.data, t.n_bytes), 0) << t.name;
    }
}

TEST(Hybrid, ConvertChoosesTheMostRecencyAwareGroups) {
    auto m = model::load(stories);
    convert_params p;
    p.fraction = 0.5;
    const auto r = convert_to_hybrid(*m, calibration_tokens(*m, 400), p, tmp("half.gguf"));
    const int total = m->hparams().n_layer * m->hparams().n_head_kv;
    EXPECT_EQ(r.total_groups, total);
    EXPECT_EQ(r.replaced_groups, total / 2);
    double min_replaced = 1, max_kept = 0;
    for (auto &g : r.groups)
        (g.replaced ? min_replaced : max_kept) = g.replaced ? std::min(min_replaced, g.recency) : std::max(max_kept, g.recency);
    EXPECT_GE(min_replaced, max_kept);
    auto h = model::load(tmp("half.gguf"));
    EXPECT_EQ(h->replaced_group_count(), total / 2);
    // The analysis recorded in the file is the one the choice used.
    for (auto &g : r.groups)
        EXPECT_NEAR(h->hybrid()[size_t(g.layer)].group_recency[size_t(g.group)], g.recency, 1e-6);
}

TEST(Hybrid, ChooseGroupsByThresholdAndFraction) {
    const std::vector<double> rec = {0.9, 0.2, 0.5, 0.95, 0.5};
    auto t = choose_groups(rec, -1, 0.5);
    EXPECT_EQ(t, (std::vector<bool>{true, false, true, true, true}));
    auto f = choose_groups(rec, 0.4, -1);
    EXPECT_EQ(f, (std::vector<bool>{true, false, false, true, false}));
    EXPECT_THROW(choose_groups(rec, 0.4, 0.5), error);
    EXPECT_THROW(choose_groups(rec, -1, -1), error);
    // Excluded groups are never picked; a fraction still picks its count from the others.
    const std::vector<bool> ex = {false, false, false, true, false};
    EXPECT_EQ(choose_groups(rec, 0.4, -1, ex), (std::vector<bool>{true, false, true, false, false}));
    EXPECT_EQ(choose_groups(rec, -1, 0.5, ex), (std::vector<bool>{true, false, true, false, true}));
    EXPECT_THROW(choose_groups(rec, 0.4, -1, std::vector<bool>(3, false)), error);
}

// The default window sizes follow docs/FORMAT.md's memory table, worked by hand here: a window +
// recurrent group keeps min(16, round(g·hd/3)) rows below 37.5% of groups replaced, min(8, ...)
// from there; the equal-memory windows divide the bytes by a row's 2·hd·2 (rounded down).
TEST(Hybrid, DefaultWindowSizesFollowTheMemoryTable) {
    model_hparams smol; // SmolLM2-135M: 9 query heads over 3 KV heads (g 3), head_dim 64
    smol.n_head = 9, smol.n_head_kv = 3, smol.head_dim = 64;
    const auto s = default_windows(smol);
    EXPECT_EQ(s.recurrent_bytes, 3u * 64 * 64 * 4);           // 48 KiB
    EXPECT_EQ(s.window_equal_recurrent, 192);                  // 49152 / 256
    EXPECT_EQ(s.wr_window, 16);                                // g·hd/3 = 64, capped at 16
    EXPECT_EQ(s.wr_bytes, 49152u + 16u * (256 + 3 * 4));       // 53440
    EXPECT_EQ(s.window_equal_wr, 208);                         // 53440 / 256 = 208.75
    EXPECT_EQ(default_windows(smol, 64).wr_window, 64);        // --wr-window overrides
    EXPECT_EQ(default_windows(smol, 64).window_equal_wr, 259); // session 4-11's 255 + 4
    // From 37.5% of groups replaced the default is 8 rows (the 50% measurements).
    EXPECT_EQ(default_windows(smol, 0, 0.25).wr_window, 16);
    EXPECT_EQ(default_windows(smol, 0, 0.37).wr_window, 16);
    EXPECT_EQ(default_windows(smol, 0, 0.375).wr_window, 8);
    const auto half = default_windows(smol, 0, 0.5);
    EXPECT_EQ(half.wr_window, 8);
    EXPECT_EQ(half.wr_bytes, 49152u + 8u * (256 + 3 * 4));     // 51296
    EXPECT_EQ(half.window_equal_wr, 200);                      // 51296 / 256 = 200.4
    EXPECT_EQ(default_windows(smol, 64, 0.5).wr_window, 64);   // --wr-window still overrides
    model_hparams st; // stories260K: 8 query heads over 4 KV heads (g 2), head_dim 8
    st.n_head = 8, st.n_head_kv = 4, st.head_dim = 8;
    const auto t = default_windows(st);
    EXPECT_EQ(t.wr_window, 5);                                 // round(16/3), under the cap
    EXPECT_EQ(t.window_equal_recurrent, 16);                   // 512 / 32
    EXPECT_EQ(t.window_equal_wr, 22);                          // (512 + 5·(32 + 8)) / 32 = 22.25
    EXPECT_EQ(default_windows(st, 0, 0.5).wr_window, 5);       // under the 8-row cap too
}

// --layers: only groups of the given layers are replaced, as many as without the range (the next
// most recency-aware of those layers take the others' places); a range the model lacks is refused.
TEST(Hybrid, ConvertReplacesOnlyGroupsOfTheGivenLayers) {
    auto m = model::load(stories);
    const auto calib = calibration_tokens(*m, 400);
    convert_params p;
    p.fraction = 0.25;
    const auto all = convert_to_hybrid(*m, calib, p, tmp("layers_all.gguf"));
    p.first_layer = 2, p.last_layer = 3;
    const auto some = convert_to_hybrid(*m, calib, p, tmp("layers_some.gguf"));
    EXPECT_EQ(some.replaced_groups, all.replaced_groups);
    std::vector<double> kept_in_range;
    double min_replaced = 1;
    for (auto &g : some.groups) {
        if (g.replaced) {
            EXPECT_GE(g.layer, 2);
            EXPECT_LE(g.layer, 3);
            min_replaced = std::min(min_replaced, g.recency);
        } else if (g.layer >= 2 && g.layer <= 3) {
            kept_in_range.push_back(g.recency);
        }
    }
    for (double r : kept_in_range) EXPECT_LE(r, min_replaced) << "the most recency-aware of the range go first";
    bool moved = false; // the full choice had groups outside 2-3, so the range changed it
    for (auto &g : all.groups) moved = moved || (g.replaced && (g.layer < 2 || g.layer > 3));
    EXPECT_TRUE(moved);
    auto h = model::load(tmp("layers_some.gguf"));
    EXPECT_EQ(h->replaced_group_count(), some.replaced_groups);
    p.first_layer = 3, p.last_layer = m->hparams().n_layer;
    EXPECT_THROW(convert_to_hybrid(*m, calib, p, tmp("layers_bad.gguf")), error);
    p.first_layer = 3, p.last_layer = 2;
    EXPECT_THROW(convert_to_hybrid(*m, calib, p, tmp("layers_bad.gguf")), error);
}

// The copy probe scores every group; with a limit, the groups at or above it stay whole and the
// next most recency-aware groups are replaced instead, the count unchanged.
TEST(Hybrid, CopyProbeKeepsHighScoringGroupsWhole) {
    auto m = model::load(stories);
    convert_params p;
    p.fraction = 0.5;
    p.copy_probe_spans = 32;
    const auto calib = calibration_tokens(*m, 1500);
    const auto scored = convert_to_hybrid(*m, calib, p, tmp("copy_scored.gguf"));
    convert_params no_probe;
    no_probe.fraction = 0.5;
    const auto plain = convert_to_hybrid(*m, calib, no_probe, tmp("copy_plain.gguf"));
    ASSERT_EQ(scored.groups.size(), plain.groups.size());
    std::vector<double> scores;
    for (size_t i = 0; i < scored.groups.size(); ++i) {
        const group_choice &g = scored.groups[i];
        EXPECT_GE(g.copy, 0.0);
        EXPECT_LE(g.copy, 1.0);
        EXPECT_FALSE(g.copy_excluded);
        EXPECT_EQ(g.replaced, plain.groups[i].replaced) << "limit 1: the probe changes nothing";
        EXPECT_LT(plain.groups[i].copy, 0.0) << "no probe: no score";
        if (g.replaced) scores.push_back(g.copy);
    }
    ASSERT_GE(scores.size(), 2u);
    std::sort(scores.begin(), scores.end());
    ASSERT_GT(scores.back(), 0.0) << "some attention reaches the copies";
    // A limit between the chosen groups' scores: those at or above it are kept, others replace them.
    p.copy_limit = (scores[scores.size() - 2] + scores.back()) / 2;
    const auto limited = convert_to_hybrid(*m, calib, p, tmp("copy_limited.gguf"));
    EXPECT_EQ(limited.replaced_groups, plain.replaced_groups);
    int excluded = 0;
    for (size_t i = 0; i < limited.groups.size(); ++i) {
        const group_choice &g = limited.groups[i];
        EXPECT_NEAR(g.copy, scored.groups[i].copy, 1e-12) << "the probe is deterministic";
        if (g.copy >= p.copy_limit) {
            EXPECT_FALSE(g.replaced);
            EXPECT_EQ(g.copy_excluded, plain.groups[i].replaced);
        }
        excluded += g.copy_excluded;
    }
    EXPECT_GE(excluded, 1);
    // A limit without a span count probes with copy_probe_spans_for_limit spans (32, as above).
    p.copy_probe_spans = 0;
    const auto implied = convert_to_hybrid(*m, calib, p, tmp("copy_implied.gguf"));
    for (size_t i = 0; i < implied.groups.size(); ++i) {
        EXPECT_NEAR(implied.groups[i].copy, limited.groups[i].copy, 1e-12); // summed per thread
        EXPECT_EQ(implied.groups[i].replaced, limited.groups[i].replaced);
    }
}

TEST(Hybrid, MemoryReportEqualsRealAllocationsAndPlan) {
    for (const std::string name :
         {"hybrid-mixed", "hybrid-partial", "hybrid-window", "hybrid-winrec", "hybrid-sinks", "llama-gqa-f32"}) {
        auto m = model::load(models_dir + "/" + name + ".gguf");
        for (int n_ctx : {64, 1000}) {
            context_params cp;
            cp.n_ctx = n_ctx;
            const memory_report planned = context::plan(*m, cp);
            context ctx(*m, cp);
            const memory_report rep = ctx.memory();
            EXPECT_EQ(rep.kv_bytes, ctx.allocated_kv_bytes()) << name;
            EXPECT_EQ(rep.recurrent_bytes, ctx.allocated_recurrent_bytes()) << name;
            EXPECT_EQ(rep.window_bytes, ctx.allocated_window_bytes()) << name;
            EXPECT_EQ(planned.kv_bytes, rep.kv_bytes);
            EXPECT_EQ(planned.recurrent_bytes, rep.recurrent_bytes);
            // Independent arithmetic: 2 (K, V) x positions x head_dim x 2 bytes (F16) per attention group.
            const auto &hp = m->hparams();
            size_t attention_groups = 0, replaced_heads = 0, window_rows = 0, dt_ring_floats = 0;
            for (auto &H : m->hybrid()) {
                attention_groups += size_t(hp.n_head_kv) - H.replaced_groups.size();
                for (size_t i = 0; i < H.replaced_groups.size(); ++i) {
                    if (H.kinds[i] != replacement_kind::window) replaced_heads += size_t(hp.group_size());
                    // the ring and the sink rows
                    if (H.kinds[i] != replacement_kind::recurrent) window_rows += size_t(H.windows[i] + H.sinks[i]);
                    // window + recurrent: one float of dt per head and ring position
                    if (H.kinds[i] == replacement_kind::window_recurrent)
                        dt_ring_floats += size_t(H.windows[i]) * size_t(hp.group_size());
                }
            }
            EXPECT_EQ(rep.window_bytes, window_rows * 2 * hp.head_dim * 2 + dt_ring_floats * 4);
            EXPECT_EQ(rep.kv_bytes, attention_groups * 2 * size_t(n_ctx) * hp.head_dim * 2);
            EXPECT_EQ(rep.recurrent_bytes, replaced_heads * size_t(hp.head_dim) * hp.head_dim * 4);
            EXPECT_EQ(rep.full_attention_kv_bytes, size_t(hp.n_layer) * hp.n_head_kv * 2 * size_t(n_ctx) * hp.head_dim * 2);
            size_t sum = 0;
            for (auto &lm : rep.layers) sum += lm.kv_bytes;
            EXPECT_EQ(sum, rep.kv_bytes);
        }
    }
}

TEST(Hybrid, RecurrentStateDoesNotGrowWithTheDocument) {
    auto m = model::load(models_dir + "/hybrid-mixed.gguf");
    context_params small, large;
    small.n_ctx = 128;
    large.n_ctx = 4096;
    EXPECT_EQ(context::plan(*m, small).recurrent_bytes, context::plan(*m, large).recurrent_bytes);
    EXPECT_GT(context::plan(*m, large).kv_bytes, context::plan(*m, small).kv_bytes);
}

class StateRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(StateRoundTrip, SaveLoadContinueEqualsUninterruptedRun) {
    const std::string path = GetParam() == "stories260K" ? stories : models_dir + "/" + GetParam() + ".gguf";
    auto m = model::load(path);
    const auto prompt = std::vector<int32_t>{1, 20, 30, 40, 50, 60, 70, 80, 90, 100};
    context_params cp;
    cp.n_ctx = 128;
    context whole(*m, cp);
    const auto expected = greedy(whole, prompt, 24);

    context first(*m, cp);
    const auto head = greedy(first, prompt, 10);
    first.save_state(tmp("state.bin"));
    context second(*m, cp);
    second.load_state(tmp("state.bin"));
    EXPECT_EQ(second.n_past(), first.n_past());
    EXPECT_EQ(second.tokens(), first.tokens());
    auto tail = greedy(second, {}, 14);
    std::vector<int32_t> joined = head;
    joined.insert(joined.end(), tail.begin(), tail.end());
    EXPECT_EQ(joined, expected);
}

INSTANTIATE_TEST_SUITE_P(Models, StateRoundTrip,
                         ::testing::Values("stories260K", "hybrid-partial", "hybrid-window", "qwen2-hybrid",
                                           "hybrid-winrec", "qwen2-winrec", "hybrid-sinks", "qwen2-sinks"),
                         [](const auto &param_info) {
                             std::string s = param_info.param;
                             for (char &c : s)
                                 if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                             return s;
                         });

TEST(State, RejectsOtherModelsAndDamage) {
    auto a = model::load(stories);
    auto b = model::load(models_dir + "/hybrid-partial.gguf");
    context_params cp;
    cp.n_ctx = 64;
    context ca(*a, cp);
    std::vector<float> logits;
    ca.eval({1, 5, 6, 7}, logits);
    ca.save_state(tmp("a.state"));
    context cb(*b, cp);
    try {
        cb.load_state(tmp("a.state"));
        FAIL() << "state of another model accepted";
    } catch (const error &e) {
        EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
    }
    // Flip one byte in the cache area: the checksum catches it and the context is unchanged.
    std::ifstream in(tmp("a.state"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bytes[bytes.size() / 2] ^= 0x40;
    std::ofstream(tmp("bad.state"), std::ios::binary) << bytes;
    context cc(*a, cp);
    cc.eval({1, 9}, logits);
    EXPECT_THROW(cc.load_state(tmp("bad.state")), error);
    EXPECT_EQ(cc.n_past(), 2);
    std::ofstream(tmp("short.state"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
    EXPECT_THROW(cc.load_state(tmp("short.state")), error);
    EXPECT_THROW(cc.load_state(tmp("missing.state")), error);
    // Too many tokens for a smaller context.
    context_params tiny;
    tiny.n_ctx = 2;
    context ct(*a, tiny);
    EXPECT_THROW(ct.load_state(tmp("a.state")), error);
}

namespace {
// Copies a model into a new file with altered hybrid metadata/tensors.
void write_variant(const gguf_file &src, const std::string &out, const std::function<void(gguf_writer &)> &edit,
                   const std::string &skip_tensor = "") {
    gguf_writer w;
    w.copy_metadata(src);
    for (auto &t : src.tensors())
        if (t.name != skip_tensor) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
    edit(w);
    w.write(out);
}
std::string load_error(const std::string &path) {
    try {
        model::load(path);
    } catch (const format_error &e) {
        return e.what();
    }
    return "";
}

// The largest difference between the last-position logits of the model at `path` (F32 cache) on
// `tokens` and `ref` (the reference model's logits for all positions): a variant that must change
// the output shows it here.
float last_logits_diff(const std::string &path, const std::vector<int32_t> &tokens, const std::vector<float> &ref) {
    auto a = model::load(path);
    const int n_vocab = a->hparams().n_vocab;
    context_params cp;
    cp.n_ctx = 64;
    cp.kv_type = tensor_type::F32;
    context ctx(*a, cp);
    std::vector<float> lg;
    ctx.eval(tokens, lg, true);
    return max_logit_diff(lg.data() + (tokens.size() - 1) * n_vocab, ref.data() + (tokens.size() - 1) * n_vocab, n_vocab);
}
} // namespace

TEST(HybridFormat, BadHybridFilesGiveClearErrors) {
    auto base = gguf_file::open(models_dir + "/hybrid-partial.gguf");
    write_variant(*base, tmp("g9.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.replaced_groups", {9}); });
    EXPECT_NE(load_error(tmp("g9.gguf")).find("names KV group 9"), std::string::npos);
    write_variant(*base, tmp("dup.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.replaced_groups", {1, 1}); });
    EXPECT_NE(load_error(tmp("dup.gguf")).find("out of order or twice"), std::string::npos);
    write_variant(*base, tmp("shape.gguf"),
                  [](gguf_writer &w) {
                      w.add_tensor("blk.0.rec.d", tensor_type::F32, {32, 2}, std::vector<uint8_t>(32 * 2 * 4, 0));
                  },
                  "blk.0.rec.d");
    EXPECT_NE(load_error(tmp("shape.gguf")).find("blk.0.rec.d' has shape [32, 2]"), std::string::npos)
        << load_error(tmp("shape.gguf"));
    write_variant(*base, tmp("missing.gguf"), [](gguf_writer &) {}, "blk.1.rec.dt_w");
    EXPECT_NE(load_error(tmp("missing.gguf")).find("'blk.1.rec.dt_w' is missing"), std::string::npos);
    write_variant(*base, tmp("version.gguf"), [](gguf_writer &w) { w.set_uint32("recurformer.version", 99); });
    EXPECT_NE(load_error(tmp("version.gguf")).find("version 99"), std::string::npos);
    write_variant(*base, tmp("kind.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.group_kinds", {7}); });
    EXPECT_NE(load_error(tmp("kind.gguf")).find("kind 7"), std::string::npos);
}

TEST(Hybrid, WindowKindAtEqualMemory) {
    auto m = model::load(stories);
    convert_params p;
    p.fraction = 0.5;
    const auto tokens = calibration_tokens(*m, 300);
    convert_to_hybrid(*m, tokens, p, tmp("rec.gguf"));
    p.kind = replacement_kind::window;
    convert_to_hybrid(*m, tokens, p, tmp("win.gguf"));
    auto r = model::load(tmp("rec.gguf")), w = model::load(tmp("win.gguf"));
    const auto &hp = m->hparams();
    for (size_t l = 0; l < w->hybrid().size(); ++l) {
        const auto &H = w->hybrid()[l];
        EXPECT_TRUE(H.recurrent_groups.empty());
        EXPECT_EQ(H.window_groups, r->hybrid()[l].recurrent_groups); // the same groups, another kind
        // default_sinks of the group_size x head_dim rows are sink rows, the rest the ring
        for (int32_t grp : H.window_groups) {
            EXPECT_EQ(H.group_sinks[size_t(grp)], default_sinks);
            EXPECT_EQ(H.group_window[size_t(grp)] + H.group_sinks[size_t(grp)], hp.group_size() * hp.head_dim);
        }
    }
    context_params cp;
    cp.n_ctx = 512;
    // Equal memory by construction: a ring of group_size x head_dim F16 K/V rows costs what
    // group_size recurrent states of head_dim^2 floats cost.
    EXPECT_EQ(context::plan(*w, cp).window_bytes, context::plan(*r, cp).recurrent_bytes);
    EXPECT_EQ(context::plan(*w, cp).kv_bytes, context::plan(*r, cp).kv_bytes);
    p.steps = 10;
    EXPECT_THROW(convert_to_hybrid(*m, tokens, p, tmp("bad.gguf")), error);
}

// Window + recurrent groups: whatever the batch size (tokens leaving the window inside a batch or
// from the ring) and across a state save/load, the logits are those of one batch. The golden test
// compares with the numpy reference.
TEST(Hybrid, WindowRecurrentBatchDecodeAndStateAgree) {
    auto m = model::load(models_dir + "/hybrid-winrec.gguf");
    const int n_vocab = m->hparams().n_vocab;
    const auto [tokens, ref] = expect_batches_and_state_agree(*m, tmp("winrec.state"), false);
    // A context that has not seen the first part differs (the test can fail).
    context_params cp;
    cp.n_ctx = 64;
    cp.kv_type = tensor_type::F32;
    context fresh(*m, cp);
    std::vector<float> lg;
    fresh.eval(std::vector<int32_t>(tokens.begin() + 23, tokens.end()), lg, true);
    EXPECT_GT(max_logit_diff(lg.data() + (tokens.size() - 24) * n_vocab, ref.data() + (tokens.size() - 1) * n_vocab, n_vocab),
              1e-3f);
}

// The gated (shared-normaliser) window + recurrent read-out: batches, decode and state agree as
// for the additive one; the gate matters (without rec.gate_* the logits differ); a file with one
// of the two tensors, with a gate on a layer without window + recurrent groups, or with a
// non-finite gate value is refused. The golden test compares hybrid-gated with the numpy reference.
TEST(Hybrid, GatedWindowRecurrentBatchDecodeStateAndBadFiles) {
    auto m = model::load(models_dir + "/hybrid-gated.gguf");
    ASSERT_FALSE(m->hybrid()[0].gate_b.empty());
    const auto [tokens, ref] = expect_batches_and_state_agree(*m, tmp("gated.state"), true);
    auto base = gguf_file::open(models_dir + "/hybrid-gated.gguf");
    write_variant(*base, tmp("ungated.gguf"), [](gguf_writer &) {}, "blk.0.rec.gate_w");
    EXPECT_NE(load_error(tmp("ungated.gguf")).find("only some of rec.gate_w/gate_b/gate_n"), std::string::npos)
        << load_error(tmp("ungated.gguf"));
    {
        gguf_writer w;
        w.copy_metadata(*base);
        for (auto &t : base->tensors())
            if (t.name.find(".rec.gate_") == std::string::npos) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
        w.write(tmp("additive.gguf"));
        EXPECT_GT(last_logits_diff(tmp("additive.gguf"), tokens, ref), 1e-2f);
    }
    write_variant(*base, tmp("nan_gate.gguf"), [&](gguf_writer &w) {
        const gguf_tensor_info *t = base->find_tensor("blk.0.rec.gate_b");
        std::vector<uint8_t> b(t->n_bytes);
        std::memcpy(b.data(), t->data, b.size());
        const float nan = std::nanf("");
        std::memcpy(b.data(), &nan, sizeof nan);
        w.add_tensor("blk.0.rec.gate_b", tensor_type::F32, t->ne, b);
    }, "blk.0.rec.gate_b");
    EXPECT_NE(load_error(tmp("nan_gate.gguf")).find("not finite"), std::string::npos) << load_error(tmp("nan_gate.gguf"));
    auto winrec = gguf_file::open(models_dir + "/hybrid-partial.gguf");
    write_variant(*winrec, tmp("gate_on_rec.gguf"), [&](gguf_writer &w) {
        const gguf_tensor_info *dtb = winrec->find_tensor("blk.0.rec.dt_b");
        const gguf_tensor_info *dtw = winrec->find_tensor("blk.0.rec.dt_w");
        w.add_tensor("blk.0.rec.gate_b", tensor_type::F32, dtb->ne, std::vector<uint8_t>(dtb->n_bytes, 0));
        w.add_tensor("blk.0.rec.gate_w", tensor_type::F32, dtw->ne, std::vector<uint8_t>(dtw->n_bytes, 0));
        w.add_tensor("blk.0.rec.gate_n", tensor_type::F32, dtb->ne, std::vector<uint8_t>(dtb->n_bytes, 0));
    });
    EXPECT_NE(load_error(tmp("gate_on_rec.gguf")).find("no window + recurrent group to gate"), std::string::npos)
        << load_error(tmp("gate_on_rec.gguf"));
}

// The delta-rule read-out (recurformer.read_out = delta; its logits are checked against the numpy
// reference in ModelGolden): batches, decode and saved states agree; the same tensors read out
// additively give other logits (so the key is honoured); an unknown read-out is refused by name.
TEST(Hybrid, DeltaRuleBatchDecodeStateAndBadKey) {
    auto m = model::load(models_dir + "/hybrid-delta.gguf");
    for (const hybrid_layer &H : m->hybrid()) EXPECT_TRUE(H.delta_rule);
    const auto [tokens, ref] = expect_batches_and_state_agree(*m, tmp("delta.state"), true);
    auto base = gguf_file::open(models_dir + "/hybrid-delta.gguf");
    write_variant(*base, tmp("delta_additive.gguf"), [](gguf_writer &w) { w.set_string("recurformer.read_out", "additive"); });
    EXPECT_FALSE(model::load(tmp("delta_additive.gguf"))->hybrid()[0].delta_rule);
    EXPECT_GT(last_logits_diff(tmp("delta_additive.gguf"), tokens, ref), 1e-2f);
    write_variant(*base, tmp("delta_bogus.gguf"), [](gguf_writer &w) { w.set_string("recurformer.read_out", "softmax"); });
    EXPECT_NE(load_error(tmp("delta_bogus.gguf")).find("recurformer.read_out is 'softmax'"), std::string::npos)
        << load_error(tmp("delta_bogus.gguf"));
}

// Per-channel decay (rec.a_chan; its logits are checked against the numpy reference in
// ModelGolden): batches, decode and saved states agree; without the offsets the logits differ;
// a bad tensor is refused by name.
TEST(Hybrid, PerChannelDecayBatchDecodeStateAndBadFiles) {
    auto m = model::load(models_dir + "/hybrid-chan.gguf");
    ASSERT_FALSE(m->hybrid()[1].a_chan.empty());
    const auto [tokens, ref] = expect_batches_and_state_agree(*m, tmp("chan.state"), true);
    auto base = gguf_file::open(models_dir + "/hybrid-chan.gguf");
    write_variant(*base, tmp("chan_none.gguf"), [](gguf_writer &) {}, "blk.1.rec.a_chan");
    EXPECT_TRUE(model::load(tmp("chan_none.gguf"))->hybrid()[1].a_chan.empty());
    EXPECT_GT(last_logits_diff(tmp("chan_none.gguf"), tokens, ref), 1e-2f);
    write_variant(*base, tmp("chan_nan.gguf"), [&](gguf_writer &w) {
        const gguf_tensor_info *t = base->find_tensor("blk.1.rec.a_chan");
        std::vector<uint8_t> b(t->n_bytes);
        std::memcpy(b.data(), t->data, b.size());
        const float inf = INFINITY;
        std::memcpy(b.data() + 4, &inf, sizeof inf);
        w.add_tensor("blk.1.rec.a_chan", tensor_type::F32, t->ne, b);
    }, "blk.1.rec.a_chan");
    EXPECT_NE(load_error(tmp("chan_nan.gguf")).find("'blk.1.rec.a_chan' holds a value that is not finite"),
              std::string::npos)
        << load_error(tmp("chan_nan.gguf"));
    write_variant(*base, tmp("chan_shape.gguf"), [&](gguf_writer &w) {
        w.add_tensor("blk.1.rec.a_chan", tensor_type::F32, {3, 2}, std::vector<uint8_t>(3 * 2 * 4, 0));
    }, "blk.1.rec.a_chan");
    EXPECT_NE(load_error(tmp("chan_shape.gguf")).find("'blk.1.rec.a_chan' has shape [3, 2]"), std::string::npos)
        << load_error(tmp("chan_shape.gguf"));
}

// The recurrent part matters: with the recurrent tensors' d and transforms the logits differ from
// the same groups served as plain windows (kind 1), so a window-only engine path would fail the
// golden test.
TEST(Hybrid, WindowRecurrentDiffersFromPlainWindow) {
    auto base = gguf_file::open(models_dir + "/hybrid-winrec.gguf");
    gguf_writer w;
    w.copy_metadata(*base);
    w.set_int32_array("recurformer.blk.0.group_kinds", {1, 1});
    w.set_int32_array("recurformer.blk.1.group_kinds", {1, 1});
    for (auto &t : base->tensors())
        if (t.name.find(".rec.") == std::string::npos) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
    w.write(tmp("winonly.gguf"));
    auto a = model::load(models_dir + "/hybrid-winrec.gguf"), b = model::load(tmp("winonly.gguf"));
    std::vector<int32_t> tokens;
    for (int i = 0; i < 20; ++i) tokens.push_back(5 + i * 7);
    context_params cp;
    cp.n_ctx = 32;
    context ca(*a, cp), cb(*b, cp);
    std::vector<float> la, lb;
    ca.eval(tokens, la, true);
    cb.eval(tokens, lb, true);
    const int V = a->hparams().n_vocab;
    float first = 0, last = 0;
    for (int v = 0; v < V; ++v) {
        first = std::max(first, std::fabs(la[size_t(v)] - lb[size_t(v)]));
        last = std::max(last, std::fabs(la[size_t(19 * V + v)] - lb[size_t(19 * V + v)]));
    }
    EXPECT_LT(first, 1e-4f); // position 0: nothing has left any window yet
    EXPECT_GT(last, 1e-2f);
}

// Attention sinks (docs/FORMAT.md "Attention sinks"): window and window + recurrent groups that
// keep positions 0..S-1 besides their ring. The golden test compares hybrid-sinks with the numpy
// reference; these check batch/decode/state agreement (batches of 1, 3 and 8: sinks from storage,
// from the batch, and both in one query; the state loaded over other tokens must bring the sink
// rows back), that the sinks are used at all, and that files without the key load as before.
TEST(Hybrid, SinksBatchDecodeAndStateAgree) {
    auto m = model::load(models_dir + "/hybrid-sinks.gguf");
    const auto &H0 = m->hybrid()[0], &H1 = m->hybrid()[1];
    EXPECT_EQ(H0.sinks, (std::vector<int32_t>{2, 3}));
    EXPECT_EQ(H1.sinks, (std::vector<int32_t>{1, 7}));
    expect_batches_and_state_agree(*m, tmp("sinks.state"), true);
}

TEST(Hybrid, SinksChangeTheOutputAndMissingKeyMeansNone) {
    // hybrid-sinks without its group_sinks keys: a file as older converts wrote it. It loads with
    // no sinks, its memory is the rings only, and its late logits differ from the sink model's.
    auto base = gguf_file::open(models_dir + "/hybrid-sinks.gguf");
    gguf_writer w;
    w.copy_metadata(*base);
    w.remove("recurformer.blk.0.group_sinks");
    w.remove("recurformer.blk.1.group_sinks");
    for (auto &t : base->tensors()) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
    w.write(tmp("nosinks.gguf"));
    auto a = model::load(models_dir + "/hybrid-sinks.gguf"), b = model::load(tmp("nosinks.gguf"));
    for (auto &H : b->hybrid()) {
        for (int32_t s : H.sinks) EXPECT_EQ(s, 0);
        for (int32_t s : H.group_sinks) EXPECT_EQ(s, 0);
    }
    context_params cp;
    cp.n_ctx = 32;
    const auto &hp = a->hparams();
    size_t sink_rows = 0;
    for (auto &H : a->hybrid())
        for (int32_t s : H.sinks) sink_rows += size_t(s);
    EXPECT_EQ(context::plan(*a, cp).window_bytes - context::plan(*b, cp).window_bytes, sink_rows * 2 * hp.head_dim * 2);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 20; ++i) tokens.push_back(5 + i * 7);
    context ca(*a, cp), cb(*b, cp);
    std::vector<float> la, lb;
    ca.eval(tokens, la, true);
    cb.eval(tokens, lb, true);
    const int V = hp.n_vocab;
    float first = 0, last = 0;
    for (int v = 0; v < V; ++v) {
        first = std::max(first, std::fabs(la[size_t(v)] - lb[size_t(v)]));
        last = std::max(last, std::fabs(la[size_t(19 * V + v)] - lb[size_t(19 * V + v)]));
    }
    EXPECT_LT(first, 1e-4f); // position 0: every window still holds everything
    EXPECT_GT(last, 1e-2f);
    // Explicit zeros are the same as no key, bit for bit.
    write_variant(*base, tmp("zerosinks.gguf"), [](gguf_writer &w2) {
        w2.set_int32_array("recurformer.blk.0.group_sinks", {0, 0});
        w2.set_int32_array("recurformer.blk.1.group_sinks", {0, 0});
    });
    auto z = model::load(tmp("zerosinks.gguf"));
    context cz(*z, cp);
    std::vector<float> lz;
    cz.eval(tokens, lz, true);
    EXPECT_EQ(lz, lb);
}

TEST(HybridFormat, BadSinkKeysGiveClearErrors) {
    auto base = gguf_file::open(models_dir + "/hybrid-partial.gguf"); // recurrent groups only
    write_variant(*base, tmp("sinkrec.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.group_sinks", {2}); });
    EXPECT_NE(load_error(tmp("sinkrec.gguf")).find("not a window group"), std::string::npos) << load_error(tmp("sinkrec.gguf"));
    auto sk = gguf_file::open(models_dir + "/hybrid-sinks.gguf");
    write_variant(*sk, tmp("sinklen.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.group_sinks", {1}); });
    EXPECT_NE(load_error(tmp("sinklen.gguf")).find("group_sinks does not match"), std::string::npos);
    write_variant(*sk, tmp("sinkneg.gguf"), [](gguf_writer &w) { w.set_int32_array("recurformer.blk.0.group_sinks", {-1, 2}); });
    EXPECT_NE(load_error(tmp("sinkneg.gguf")).find("-1 sink rows"), std::string::npos) << load_error(tmp("sinkneg.gguf"));
}

// convert --sinks S: the sink rows come out of the group's rows (equal memory), the file records
// them, and S too large for the rows is refused.
TEST(Hybrid, ConvertWithSinksKeepsTheMemory) {
    auto m = model::load(stories);
    const auto tokens = calibration_tokens(*m, 300);
    convert_params p;
    p.fraction = 0.5;
    p.kind = replacement_kind::window;
    p.sinks = 0;
    convert_to_hybrid(*m, tokens, p, tmp("w0.gguf"));
    p.sinks = 3;
    const convert_result res = convert_to_hybrid(*m, tokens, p, tmp("w3.gguf"));
    auto a = model::load(tmp("w0.gguf")), b = model::load(tmp("w3.gguf"));
    const auto &hp = m->hparams();
    for (size_t l = 0; l < b->hybrid().size(); ++l)
        for (int32_t grp : b->hybrid()[l].window_groups) {
            EXPECT_EQ(b->hybrid()[l].group_sinks[size_t(grp)], 3);
            EXPECT_EQ(b->hybrid()[l].group_window[size_t(grp)], hp.group_size() * hp.head_dim - 3);
            EXPECT_EQ(a->hybrid()[l].group_sinks[size_t(grp)], 0);
        }
    for (auto &c : res.groups) {
        if (c.replaced) {
            EXPECT_EQ(c.sinks, 3);
        }
    }
    EXPECT_EQ(b->file().get_int("recurformer.sinks", -1), 3);
    context_params cp;
    cp.n_ctx = 256;
    EXPECT_EQ(context::plan(*a, cp).window_bytes, context::plan(*b, cp).window_bytes);
    p.sinks = hp.group_size() * hp.head_dim; // no ring left
    EXPECT_THROW(convert_to_hybrid(*m, tokens, p, tmp("wbad.gguf")), error);
}

// model::load_windowed serves the named groups exactly as a window hybrid file does (the groups
// convert --kind window wrote, read back by the file loader), a window that covers the whole
// sequence changes nothing, and bad requests are refused.
TEST(Hybrid, LoadWindowedEqualsTheWrittenWindowHybrid) {
    auto m = model::load(stories);
    convert_params p;
    p.fraction = 0.25;
    p.kind = replacement_kind::window;
    p.window_tokens = 9;
    p.sinks = 2;
    const auto tokens = calibration_tokens(*m, 300);
    const convert_result r = convert_to_hybrid(*m, tokens, p, tmp("lw_window.gguf"));
    std::vector<window_group> groups;
    for (const group_choice &g : r.groups)
        if (g.replaced) groups.push_back({g.layer, g.group, g.window, g.sinks});
    ASSERT_GE(groups.size(), 2u);
    EXPECT_EQ(groups[0].window, 7);
    std::reverse(groups.begin(), groups.end()); // any order
    auto file = model::load(tmp("lw_window.gguf"));
    auto mem = model::load_windowed(stories, groups);
    EXPECT_TRUE(mem->is_hybrid());
    EXPECT_EQ(mem->replaced_group_count(), int32_t(groups.size()));
    EXPECT_NE(mem->fingerprint(), m->fingerprint()) << "states saved for one must not load into the other";
    const int V = m->hparams().n_vocab;
    context_params cp;
    cp.n_ctx = 256;
    std::vector<float> a, b, plain;
    const std::vector<int32_t> seq(tokens.begin(), tokens.begin() + 200);
    context(*file, cp).eval(seq, a, true);
    context(*mem, cp).eval(seq, b, true);
    context(*m, cp).eval(seq, plain, true);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "logit " << i;
    float moved = 0;
    for (size_t t = 0; t < seq.size(); ++t) moved = std::max(moved, max_logit_diff(a.data() + t * V, plain.data() + t * V, V));
    EXPECT_GT(moved, 1e-3f) << "a 7-token window changes the logits";
    // A window as long as the sequence is full attention (F32 rows: the window path reads its
    // ring, full attention this batch's unrounded rows).
    auto wide = model::load_windowed(stories, {{groups[0].layer, groups[0].group, 200, 0}});
    std::vector<float> w;
    cp.kv_type = tensor_type::F32;
    context(*wide, cp).eval(seq, w, true);
    context(*m, cp).eval(seq, plain, true);
    for (size_t t = 0; t < seq.size(); ++t)
        EXPECT_LE(max_logit_diff(w.data() + t * V, plain.data() + t * V, V), 1e-4f) << "t " << t;
    const auto &hp = m->hparams();
    EXPECT_THROW(model::load_windowed(stories, {{hp.n_layer, 0, 8, 0}}), error);
    EXPECT_THROW(model::load_windowed(stories, {{0, hp.n_head_kv, 8, 0}}), error);
    EXPECT_THROW(model::load_windowed(stories, {{0, 0, 0, 0}}), error);
    EXPECT_THROW(model::load_windowed(stories, {{0, 0, 8, -1}}), error);
    EXPECT_THROW(model::load_windowed(stories, {{0, 0, 8, 0}, {0, 0, 4, 0}}), error);
    EXPECT_THROW(model::load_windowed(tmp("lw_window.gguf"), {{0, 0, 8, 0}}), error) << "already a hybrid";
    EXPECT_FALSE(model::load_windowed(stories, {})->is_hybrid());
}

// The retrieval probe: with no limit it probes exactly the groups recency picks and changes
// nothing; with a limit among their harms, those at or above it are kept whole and the next most
// recency-aware groups take their places.
TEST(Hybrid, RetrievalProbeKeepsHarmfulGroupsWhole) {
    auto m = model::load(stories);
    const auto calib = calibration_tokens(*m, 1500);
    convert_params plain_p;
    plain_p.fraction = 0.5;
    plain_p.distill.seq_len = 400;
    const auto plain = convert_to_hybrid(*m, calib, plain_p, tmp("rp_plain.gguf"));
    convert_params p = plain_p;
    p.retrieval_probe_trials = 3;
    std::vector<std::string> phases;
    const auto probed = convert_to_hybrid(*m, calib, p, tmp("rp_probed.gguf"), {}, [&](const distill_progress &pr) {
        if (phases.empty() || phases.back() != pr.phase) phases.push_back(pr.phase);
        return true;
    });
    EXPECT_EQ(phases, std::vector<std::string>{"retrieval_probe"});
    EXPECT_GT(probed.retrieval_probe_original_nll, 0.0);
    EXPECT_EQ(probed.retrieval_probed_groups, plain.replaced_groups);
    std::vector<double> harms;
    for (size_t i = 0; i < probed.groups.size(); ++i) {
        const group_choice &g = probed.groups[i];
        EXPECT_EQ(g.replaced, plain.groups[i].replaced) << "no limit: the probe changes nothing";
        EXPECT_FALSE(g.retrieval_excluded);
        EXPECT_LT(plain.groups[i].retrieval, -0.5) << "no probe: no harm";
        if (g.replaced) {
            EXPECT_TRUE(std::isfinite(g.retrieval));
            harms.push_back(g.retrieval);
        } else {
            EXPECT_EQ(g.retrieval, -1.0) << "only the picked groups are probed";
        }
    }
    ASSERT_GE(harms.size(), 3u);
    std::vector<double> sorted = harms;
    std::sort(sorted.begin(), sorted.end());
    ASSERT_LT(sorted.front(), sorted.back()) << "the groups differ";
    p.retrieval_limit = (sorted[sorted.size() - 2] + sorted.back()) / 2;
    const auto limited = convert_to_hybrid(*m, calib, p, tmp("rp_limited.gguf"));
    EXPECT_EQ(limited.replaced_groups, plain.replaced_groups);
    EXPECT_GT(limited.retrieval_probed_groups, probed.retrieval_probed_groups);
    int excluded = 0;
    for (size_t i = 0; i < limited.groups.size(); ++i) {
        const group_choice &g = limited.groups[i];
        if (probed.groups[i].replaced) {
            EXPECT_NEAR(g.retrieval, probed.groups[i].retrieval, 1e-9) << "deterministic";
        }
        if (g.replaced) {
            EXPECT_LT(g.retrieval, p.retrieval_limit);
        }
        if (g.retrieval >= p.retrieval_limit) {
            EXPECT_FALSE(g.replaced);
            EXPECT_TRUE(g.retrieval_excluded);
            ++excluded;
        } else {
            EXPECT_FALSE(g.retrieval_excluded);
        }
        // Newly picked groups come next in recency after the plain choice.
        if (g.replaced && !plain.groups[i].replaced) {
            EXPECT_NE(g.retrieval, -1.0);
        }
    }
    EXPECT_GE(excluded, 1);
    // The written file holds the chosen groups.
    auto h = model::load(tmp("rp_limited.gguf"));
    for (const group_choice &g : limited.groups)
        EXPECT_EQ(bool(h->hybrid()[size_t(g.layer)].group_replaced[size_t(g.group)]), g.replaced);
}

// passkey_answer_nll against one evaluation of prompt + answer and a log-softmax in long double:
// the answer's first token is scored by the prompt's last row, each next by the row before it.
TEST(Passkey, AnswerNllIsTheTeacherForcedSum) {
    auto plain = model::load(stories);
    auto windowed = model::load_windowed(stories, {{1, 0, 9, 2}, {3, 1, 5, 0}});
    for (const model *m : {plain.get(), windowed.get()}) {
        const auto text = calibration_tokens(*m, 120);
        const std::vector<int32_t> prompt(text.begin(), text.begin() + 100), answer(text.begin() + 100, text.begin() + 106);
        const int V = m->hparams().n_vocab;
        context_params cp;
        cp.n_ctx = 128;
        // F32 rows: with F16 a batch attends to its own unrounded rows but to rounded ones from
        // an earlier batch, so one evaluation and prompt-then-answer would differ by rounding.
        cp.kv_type = tensor_type::F32;
        context whole(*m, cp);
        std::vector<int32_t> all = prompt;
        all.insert(all.end(), answer.begin(), answer.end());
        std::vector<float> rows;
        whole.eval(all, rows, true);
        long double want = 0;
        bool want_top1 = true;
        std::vector<int32_t> argmaxes; // each row's first choice
        for (size_t j = 0; j < answer.size(); ++j) {
            const float *row = rows.data() + (prompt.size() - 1 + j) * size_t(V);
            long double z = 0;
            for (int v = 0; v < V; ++v) z += std::exp((long double)row[v]);
            want += std::log(z) - row[size_t(answer[j])];
            argmaxes.push_back(int32_t(std::max_element(row, row + V) - row));
            want_top1 = want_top1 && argmaxes.back() == answer[j];
        }
        context ctx(*m, cp);
        std::vector<float> other;
        ctx.eval(std::vector<int32_t>(text.begin() + 3, text.begin() + 50), other); // reset first
        const double got = passkey_answer_nll(ctx, prompt, answer);
        EXPECT_NEAR(got, double(want), 1e-4 * std::max(1.0, double(want))) << (m == plain.get() ? "plain" : "windowed");
        EXPECT_GT(got, 0.0);
        EXPECT_EQ(ctx.n_past(), int32_t(prompt.size() + answer.size() - 1));
        // A wrong answer is less likely.
        std::vector<int32_t> wrong = answer;
        wrong[2] = wrong[2] == 5 ? 6 : 5;
        EXPECT_NE(passkey_answer_nll(ctx, prompt, wrong), got);
        EXPECT_THROW(passkey_answer_nll(ctx, prompt, {}), std::invalid_argument);
        EXPECT_EQ(score_passkey_answer(ctx, prompt, answer).top1, want_top1);
        // The rows' own first choices are top-1 by construction (as long as the rows do not change,
        // which they do not: each row depends only on the tokens before it).
        const passkey_answer_score own = score_passkey_answer(ctx, prompt, std::vector<int32_t>(argmaxes.begin(), argmaxes.begin() + 1));
        EXPECT_TRUE(own.top1);
        std::vector<int32_t> not_first = {argmaxes[0] == 7 ? 8 : 7};
        EXPECT_FALSE(score_passkey_answer(ctx, prompt, not_first).top1);
    }
}
