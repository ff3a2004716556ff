// Distillation of recurrent heads (recur/distill.h): the gradient chain against finite
// differences, training that lowers the loss deterministically, trained hybrids that are closer
// to the original than untrained ones, the reported loss against the engine's own forward, and
// resuming from a checkpoint.
#include "recur/convert.h"
#include "recur/distill.h"
#include "recur/model.h"
#include "recur/tokenizer.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <random>
#include <sys/wait.h>
#include <tuple>

using namespace recur;

namespace {

const std::string stories = std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf";
const std::string models_dir = RECUR_TEST_MODELS_DIR;

// Per process: ctest runs the tests of this file as parallel processes (-j2) in one folder.
std::string tmp(const std::string &name) { return recur_test::scratch(name); }

std::vector<int32_t> text_tokens(const model &m, size_t offset, size_t n_chars, size_t n_tokens) {
    std::ifstream in(std::string(RECUR_SHARED_DIR) + "/data/prideprejudice.txt");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text = text.substr(offset, n_chars);
    auto ids = m.vocab().encode(text, true, false);
    if (ids.size() > n_tokens) ids.resize(n_tokens);
    return ids;
}

// Random chunk data and parameters for a head of size hd with inputs of n_embd; gated: a window +
// recurrent head with the shared-normaliser gate (its first 5 rows have nothing outside the window).
struct random_head {
    head_layout L;
    int n;
    std::vector<float> xn, q, k, v, o, theta, state0, metric, xq, ow, lse, log_n_out;
    std::vector<float> weight; // per-position loss weights; empty: none
    random_head(int E, int hd, int n_tokens, uint32_t seed, bool gated = false, bool per_channel = false)
        : L(E, hd, gated), n(n_tokens) {
        L.per_channel = per_channel;
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        auto fill = [&](std::vector<float> &a, size_t size, float s) {
            a.resize(size);
            for (auto &x : a) x = s * nd(rng);
        };
        fill(xn, size_t(n) * E, 1.0f);
        fill(q, size_t(n) * hd, 1.0f);
        fill(k, size_t(n) * hd, 1.0f);
        fill(v, size_t(n) * hd, 1.0f);
        fill(o, size_t(n) * hd, 0.5f);
        fill(state0, L.hh(), 0.3f);
        fill(theta, L.size(), 0.0f);
        for (int i = 0; i < E; ++i) theta[L.dt_w() + i] = 0.2f * nd(rng);
        theta[L.dt_b()] = -1.0f;
        theta[L.a_log()] = -0.5f;
        for (int i = 0; i < hd; ++i) theta[L.d() + i] = 0.3f * nd(rng);
        for (size_t off : {L.mq(), L.mk(), L.mv()})
            for (int i = 0; i < hd; ++i)
                for (int j = 0; j < hd; ++j) theta[off + size_t(i) * hd + j] = float(i == j) + 0.2f * nd(rng);
        if (per_channel)
            for (int i = 0; i < hd; ++i) theta[L.a_chan() + size_t(i)] = 0.8f * nd(rng);
        if (gated) {
            fill(xq, size_t(n) * E, 1.0f);
            fill(ow, size_t(n) * hd, 0.5f);
            fill(lse, size_t(n), 1.0f);
            for (int t = 0; t < n; ++t) lse[size_t(t)] = t < 5 ? 1e30f : 3.5f + lse[size_t(t)];
            for (int t = 0; t < n; ++t) log_n_out.push_back(t < 5 ? 0.0f : std::log(float(t - 4)));
            for (int i = 0; i < E; ++i) theta[L.gate_w() + i] = 0.2f * nd(rng);
            theta[L.gate_b()] = 1.0f; // g spans (0, 1) over the rows, not saturated
            theta[L.gate_n()] = 0.8f;
        }
        // A random symmetric positive semi-definite metric G = AᵀA.
        std::vector<float> a;
        fill(a, L.hh(), 0.4f);
        metric.assign(L.hh(), 0.0f);
        for (int i = 0; i < hd; ++i)
            for (int j = 0; j < hd; ++j)
                for (int r = 0; r < hd; ++r) metric[size_t(i) * hd + j] += a[size_t(r) * hd + i] * a[size_t(r) * hd + j];
    }
    bool use_metric = false;
    head_chunk chunk() const {
        head_chunk c;
        c.n_tokens = n;
        c.xn = xn.data();
        c.q = q.data();
        c.k = k.data();
        c.v = v.data();
        c.o = o.data();
        if (use_metric) c.metric = metric.data();
        if (!weight.empty()) c.weight = weight.data();
        if (L.gated) c.xq = xq.data(), c.ow = ow.data(), c.lse = lse.data(), c.log_n_out = log_n_out.data();
        return c;
    }
    double loss(const std::vector<float> &th) const {
        std::vector<float> st = state0;
        return head_chunk_loss_grad(L, th.data(), chunk(), st.data(), nullptr, 0.0f).sq_err;
    }
};

std::vector<float> all_logits(const model &m, const std::vector<int32_t> &tokens) {
    context_params cp;
    cp.n_ctx = int32_t(tokens.size());
    cp.n_threads = 2;
    context ctx(m, cp);
    std::vector<float> logits;
    ctx.eval(tokens, logits, true);
    return logits;
}

// Mean KL(p_original || p_other) over positions.
double mean_kl(const std::vector<float> &a, const std::vector<float> &b, int n_vocab) {
    const size_t n = a.size() / size_t(n_vocab);
    double total = 0;
    for (size_t t = 0; t < n; ++t) {
        const float *x = a.data() + t * n_vocab, *y = b.data() + t * n_vocab;
        double mx = -1e30, my = -1e30;
        for (int i = 0; i < n_vocab; ++i) mx = std::max(mx, double(x[i])), my = std::max(my, double(y[i]));
        double sx = 0, sy = 0;
        for (int i = 0; i < n_vocab; ++i) sx += std::exp(x[i] - mx), sy += std::exp(y[i] - my);
        double kl = 0;
        for (int i = 0; i < n_vocab; ++i) {
            const double lp = x[i] - mx - std::log(sx), lq = y[i] - my - std::log(sy);
            kl += std::exp(lp) * (lp - lq);
        }
        total += kl;
    }
    return total / double(n);
}

std::vector<hybrid_layer> init_layers(const model &m, const std::vector<std::vector<int32_t>> &groups) {
    const auto &hp = m.hparams();
    std::vector<hybrid_layer> layers(size_t(hp.n_layer));
    for (int l = 0; l < hp.n_layer; ++l) {
        hybrid_layer &H = layers[size_t(l)];
        if (size_t(l) < groups.size()) H.recurrent_groups = groups[size_t(l)];
        const size_t R = H.recurrent_groups.size() * size_t(hp.group_size());
        H.dt_w.assign(R * hp.n_embd, 0.0f);
        H.dt_b.assign(R, initial_dt_bias(32));
        H.a_log.assign(R, 0.0f);
        H.d.assign(R * hp.head_dim, 0.0f);
    }
    return layers;
}

bool same_params(const std::vector<hybrid_layer> &a, const std::vector<hybrid_layer> &b) {
    for (size_t l = 0; l < a.size(); ++l) {
        const hybrid_layer &x = a[l], &y = b[l];
        if (x.dt_w != y.dt_w || x.dt_b != y.dt_b || x.a_log != y.a_log || x.d != y.d || x.q_proj != y.q_proj ||
            x.k_proj != y.k_proj || x.v_proj != y.v_proj || x.final_loss != y.final_loss || x.a_chan != y.a_chan ||
            x.gate_w != y.gate_w || x.gate_b != y.gate_b || x.gate_n != y.gate_n)
            return false;
    }
    return true;
}

// The analytic gradient grad (computed with grad_scale `scale`) of h's loss against central
// differences, on a sample of every parameter kind (dt_w, dt_b, a_log, d, the three transforms
// and, gated, the gate): each mismatch is reported as a failure, and their count returned.
int finite_difference_mismatches(const random_head &h, const std::vector<float> &grad, float scale) {
    double rms = 0;
    for (float g : grad) rms += double(g) * g;
    rms = std::sqrt(rms / double(grad.size())) / scale;
    std::vector<size_t> idx;
    for (size_t i = 0; i < size_t(h.L.n_embd); i += 3) idx.push_back(h.L.dt_w() + i);
    idx.push_back(h.L.dt_b());
    idx.push_back(h.L.a_log());
    for (int i = 0; i < h.L.head_dim; ++i) idx.push_back(h.L.d() + size_t(i));
    for (size_t off : {h.L.mq(), h.L.mk(), h.L.mv()})
        for (size_t i = 0; i < h.L.hh(); i += 7) idx.push_back(off + i);
    if (h.L.per_channel)
        for (int i = 0; i < h.L.head_dim; ++i) idx.push_back(h.L.a_chan() + size_t(i));
    if (h.L.gated) {
        for (size_t i = 0; i < size_t(h.L.n_embd); i += 2) idx.push_back(h.L.gate_w() + i);
        idx.push_back(h.L.gate_b());
        idx.push_back(h.L.gate_n());
    }
    int bad = 0;
    for (size_t i : idx) {
        const float eps = 2e-3f * std::max(1.0f, std::fabs(h.theta[i]));
        std::vector<float> tp = h.theta, tm = h.theta;
        tp[i] += eps;
        tm[i] -= eps;
        const double fd = (h.loss(tp) - h.loss(tm)) / (double(tp[i]) - double(tm[i]));
        const double an = double(grad[i]) / scale;
        if (std::fabs(fd - an) > 2e-2 * std::fabs(an) + 2e-3 * rms) {
            ++bad;
            ADD_FAILURE() << "hd " << h.L.head_dim << " parameter " << i << ": analytic " << an << ", finite difference " << fd;
        }
    }
    return bad;
}

// What the held-out comparisons share: 512-token sequences (four of the test text), the last
// held out and measured against an untrained 16-token window.
distill_params heldout_params() {
    distill_params p;
    p.seq_len = 512;
    p.chunk = 64;
    p.seed = 5;
    p.n_threads = 2;
    p.holdout_sequences = 1;
    p.compare_window = 16;
    return p;
}

} // namespace

// The whole chain: transforms, dt (softplus of a projection of xn), decay, skip, the scan from a
// non-zero incoming state, and the squared error (plain, and in a metric), against central
// differences; rounds 3 and 4 with the gated window + recurrent read-out (gate_w, gate_b too);
// rounds 5 and 6 with the delta-rule read-out (plain, and gated in a metric); rounds 7 and 8 with
// per-channel decay (additive, and delta + gated in a metric).
TEST(Distill, GradientMatchesFiniteDifferences) {
    for (int round = 0; round < 9; ++round) {
        const int hd = round == 0 || round == 3 || round == 5 || round == 7 ? 8 : 16;
        random_head h(24, hd, 45, 7u + uint32_t(round), round == 3 || round == 4 || round == 6 || round == 8,
                      round >= 7);
        h.L.delta = round == 5 || round == 6 || round == 8;
        h.use_metric = round == 2 || round == 4 || round == 6 || round == 8; // trains in a metric (output_metric)
        std::vector<float> grad(h.L.size(), 0.0f), st = h.state0;
        const float scale = 0.5f; // grad_scale is honoured
        head_chunk_loss_grad(h.L, h.theta.data(), h.chunk(), st.data(), grad.data(), scale);
        EXPECT_EQ(finite_difference_mismatches(h, grad, scale), 0) << "hd " << hd;
        // The state leaves the chunk exactly as a forward without gradients leaves it.
        std::vector<float> st2 = h.state0;
        head_chunk_loss_grad(h.L, h.theta.data(), h.chunk(), st2.data(), nullptr, 0.0f);
        EXPECT_EQ(st, st2);
    }
}

// Per-position loss weights (retrieval drills): the weighted loss's gradient against central
// differences (plain, metric, gated, gated in a metric) with weights that vary by position, zeros
// and a heavy one included; all-ones weights give bit for bit the unweighted loss, gradient and
// state; the weighted loss is linear in the weights.
TEST(Distill, WeightedLossGradientMatchesFiniteDifferences) {
    for (int round = 0; round < 4; ++round) {
        const int hd = round % 2 == 0 ? 8 : 16;
        random_head h(24, hd, 45, 31u + uint32_t(round), round >= 2);
        h.use_metric = round == 1 || round == 3;
        std::mt19937 rng(100u + uint32_t(round));
        std::uniform_real_distribution<float> ud(0.0f, 3.0f);
        std::vector<float> w(size_t(h.n));
        for (auto &x : w) x = ud(rng);
        w[3] = 0.0f;
        w[17] = 0.0f;
        w[40] = 50.0f; // a drill's answer position
        // All ones: bit for bit the unweighted chunk.
        std::vector<float> g0(h.L.size(), 0.0f), g1(h.L.size(), 0.0f), s0 = h.state0, s1 = h.state0;
        const chunk_loss l0 = head_chunk_loss_grad(h.L, h.theta.data(), h.chunk(), s0.data(), g0.data(), 0.25f);
        h.weight.assign(size_t(h.n), 1.0f);
        const chunk_loss l1 = head_chunk_loss_grad(h.L, h.theta.data(), h.chunk(), s1.data(), g1.data(), 0.25f);
        EXPECT_EQ(g0, g1);
        EXPECT_EQ(s0, s1);
        EXPECT_NEAR(l0.sq_err, l1.sq_err, 1e-12 * l0.sq_err);
        EXPECT_NEAR(l0.sq_target, l1.sq_target, 1e-12 * l0.sq_target);
        // Linear in the weights, and the heavy position counts.
        h.weight = w;
        const double lw = h.loss(h.theta);
        std::vector<float> w2(w);
        for (auto &x : w2) x *= 2.0f;
        h.weight = w2;
        EXPECT_NEAR(h.loss(h.theta), 2.0 * lw, 1e-9 * lw);
        h.weight = w;
        EXPECT_GT(std::fabs(lw - l0.sq_err), 1e-3 * l0.sq_err) << "the weights change the loss";

        std::vector<float> grad(h.L.size(), 0.0f), st = h.state0;
        const float scale = 0.5f;
        head_chunk_loss_grad(h.L, h.theta.data(), h.chunk(), st.data(), grad.data(), scale);
        EXPECT_EQ(finite_difference_mismatches(h, grad, scale), 0) << "round " << round;
    }
}

TEST(Distill, ParametersRoundTripThroughAHybridLayer) {
    const random_head h(24, 8, 4, 3u);
    hybrid_layer H;
    const int R = 3;
    H.dt_w.assign(size_t(R) * 24, 0.0f);
    H.dt_b.assign(R, 0.0f);
    H.a_log.assign(R, 0.0f);
    H.d.assign(size_t(R) * 8, 0.0f);
    head_params_to_layer(h.L, h.theta.data(), 1, R, H);
    ASSERT_EQ(H.q_proj.size(), size_t(R) * 64);
    // Other heads keep identity transforms; head 1 gets Mq[o][i] = mq_t[i][o].
    EXPECT_EQ(H.q_proj[0], 1.0f);
    EXPECT_EQ(H.q_proj[1], 0.0f);
    EXPECT_EQ(H.q_proj[64 + 2 * 8 + 5], h.theta[h.L.mq() + 5 * 8 + 2]);
    std::vector<float> back(h.L.size());
    head_params_from_layer(H, 1, h.L, back.data());
    EXPECT_EQ(back, h.theta);
    // An untrained layer (no transforms) reads as identity.
    hybrid_layer U;
    U.dt_w.assign(24, 0.0f);
    U.dt_b.assign(1, 0.5f);
    U.a_log.assign(1, 0.0f);
    U.d.assign(8, 0.0f);
    head_params_from_layer(U, 0, h.L, back.data());
    EXPECT_EQ(back[h.L.dt_b()], 0.5f);
    EXPECT_EQ(back[h.L.mk() + 9], 1.0f);
    EXPECT_EQ(back[h.L.mk() + 1], 0.0f);
    // A gated head's gate goes to gate_w/gate_b and back; a layer without them reads as zeros.
    const random_head hg(24, 8, 4, 5u, true);
    head_params_to_layer(hg.L, hg.theta.data(), 2, R, H);
    ASSERT_EQ(H.gate_w.size(), size_t(R) * 24);
    ASSERT_EQ(H.gate_b.size(), size_t(R));
    EXPECT_EQ(H.gate_b[2], hg.theta[hg.L.gate_b()]);
    EXPECT_EQ(H.gate_w[2 * 24 + 7], hg.theta[hg.L.gate_w() + 7]);
    EXPECT_EQ(H.gate_n[2], hg.theta[hg.L.gate_n()]);
    std::vector<float> back_g(hg.L.size());
    head_params_from_layer(H, 2, hg.L, back_g.data());
    EXPECT_EQ(back_g, hg.theta);
    head_params_from_layer(U, 0, hg.L, back_g.data());
    EXPECT_EQ(back_g[hg.L.gate_b()], 0.0f);
}

// Training on a generated test model cuts the loss by a large factor, and is bit-for-bit
// reproducible (also across thread counts: heads are independent and each runs sequentially).
// Both forms: additive per-head heads, and the default delta rule with per-channel decay, which
// on this random-weight model learns more slowly in 300 steps (measured: losses to ~0.55 of their
// start against the additive form's < 1/3; on SmolLM2-135M's 8000 steps it is the better form).
TEST(Distill, TrainingReducesTheLossDeterministically) {
  for (const bool delta_chan : {false, true}) {
    SCOPED_TRACE(delta_chan ? "delta rule, per-channel decay" : "additive, per-head decay");
    const double per_head = delta_chan ? 1.4 : 3, overall = delta_chan ? 1.4 : 4;
    auto m = model::load(models_dir + "/llama-gqa-f32.gguf");
    const auto tokens = text_tokens(*m, 0, 20000, 1536);
    distill_params p;
    p.steps = 300;
    p.seq_len = 512;
    p.chunk = 64;
    p.batch = 2;
    p.lr = 3e-3f;
    p.seed = 5;
    p.n_threads = 2;
    p.delta_rule = p.per_channel_decay = delta_chan;
    auto a = init_layers(*m, {{1}, {0, 1}});
    const distill_report r = distill_heads(*m, tokens, a, p);
    ASSERT_EQ(r.heads.size(), 6u);
    EXPECT_EQ(r.n_sequences, 4); // 512 tokens each, BOS first (added to the later ones)
    EXPECT_EQ(r.calib_tokens, 1536 + 3);
    double init = 0, fin = 0;
    for (auto &h : r.heads) {
        EXPECT_LT(h.final_loss, h.initial_loss / per_head) << "layer " << h.layer << " head " << h.head;
        init += h.initial_rel, fin += h.final_rel;
    }
    EXPECT_LT(fin, init / overall);
    EXPECT_EQ(a[1].delta_rule, delta_chan);
    EXPECT_EQ(a[1].a_chan.size(), delta_chan ? 4u * 64 : 0u);
    ASSERT_EQ(a[1].final_loss.size(), 4u);
    EXPECT_EQ(a[1].final_loss[3], r.heads[5].final_loss);
    EXPECT_EQ(a[0].q_proj.size(), 2u * 64 * 64);

    auto b = init_layers(*m, {{1}, {0, 1}});
    p.n_threads = 1;
    distill_heads(*m, tokens, b, p);
    EXPECT_TRUE(same_params(a, b));
  }
}

// The loss distill reports for a head of the first replaced layer equals the squared error
// between the original model's head output and what the engine's hybrid forward computes there.
// Both read-outs: additive, and the delta rule (the file says so, and the engine honours it); and
// per-channel decay (rec.a_chan).
TEST(Distill, ReportedLossMatchesTheEngineForward) {
  for (const auto &[delta, per_channel] : {std::pair{false, false}, {true, false}, {false, true}}) {
    SCOPED_TRACE(std::string(delta ? "delta rule" : "additive") + (per_channel ? ", per-channel decay" : ""));
    auto m = model::load(stories);
    const auto tokens = text_tokens(*m, 0, 4000, 300);
    const auto &hp = m->hparams();
    const int hd = hp.head_dim, nq = hp.n_head * hd;
    convert_params cp;
    cp.fraction = 0.25;
    cp.steps = 40;
    cp.distill.seq_len = 512; // one sequence: the whole text
    cp.distill.chunk = 32;
    cp.distill.delta_rule = delta;
    cp.distill.per_channel_decay = per_channel;
    cp.n_threads = 2;
    const auto res = convert_to_hybrid(*m, tokens, cp, tmp("distill_match.gguf"));
    ASSERT_FALSE(res.distill.heads.empty());
    auto h = model::load(tmp("distill_match.gguf"));
    const int l0 = res.distill.heads[0].layer;
    // Each head's output at layer l0 from the original and from the hybrid.
    auto outputs = [&](const model &mm) {
        context_params c;
        c.n_ctx = 512;
        c.n_threads = 2;
        context ctx(mm, c);
        std::vector<float> out;
        ctx.set_layer_observer([&](int layer, int n, const float *, const float *attn) {
            if (layer == l0) out.insert(out.end(), attn, attn + size_t(n) * nq);
        });
        std::vector<float> logits;
        ctx.eval(tokens, logits);
        return out;
    };
    const auto o = outputs(*m), y = outputs(*h);
    ASSERT_EQ(o.size(), tokens.size() * nq);
    for (auto &r : res.distill.heads) {
        if (r.layer != l0) continue;
        double err = 0;
        for (size_t t = 0; t < tokens.size(); ++t)
            for (int i = 0; i < hd; ++i) {
                const double e = y[t * nq + size_t(r.head) * hd + i] - o[t * nq + size_t(r.head) * hd + i];
                err += e * e;
            }
        err /= double(tokens.size());
        EXPECT_NEAR(err, r.final_loss, 1e-3 * r.final_loss + 1e-6) << "head " << r.head;
    }
    // The file carries the losses and the step count.
    const hybrid_layer &H = h->hybrid()[size_t(l0)];
    ASSERT_FALSE(H.final_loss.empty());
    EXPECT_EQ(H.final_loss[0], res.distill.heads[0].final_loss);
    EXPECT_EQ(h->file().get_int("recurformer.distillation_steps", -1), 40);
    EXPECT_FALSE(H.q_proj.empty());
    EXPECT_EQ(H.delta_rule, delta);
    EXPECT_EQ(H.a_chan.size(), per_channel ? H.dt_b.size() * size_t(hd) : 0u);
    if (per_channel) { // trained: the offsets moved away from their start at 0
        EXPECT_GT(*std::max_element(H.a_chan.begin(), H.a_chan.end()) - *std::min_element(H.a_chan.begin(), H.a_chan.end()),
                  1e-3f);
    }
    EXPECT_EQ(h->file().get_string("recurformer.read_out", "additive"), delta ? "delta" : "additive");
  }
}

// The same for window + recurrent groups: the loss distill reports (window softmax computed from
// the captured q/k with RoPE, plus the head run over the tokens leaving the window) equals the
// error of what the engine computes for the group (ring, dt ring, rotation back, scan), so the
// training objective is the engine's function. F32 cache: the engine's ring holds exact rows.
// With S sink rows (the second pass) the window's softmax also covers tokens 0..S-1 and the head's
// stream starts at token S: the reported loss must still be the engine's error. Both read-outs:
// gated (the default: shared normaliser, the window's log-sum-exp from the engine's attention) and
// additive (--wr-additive).
TEST(Distill, WindowRecurrentLossMatchesTheEngineForward) {
  for (const auto &[sinks, gated, delta] :
       {std::tuple<int32_t, bool, bool>{0, true, false}, {3, true, false}, {3, false, false}, {3, true, true}}) {
    SCOPED_TRACE("sinks " + std::to_string(sinks) + (gated ? ", gated" : ", additive") + (delta ? ", delta rule" : ""));
    auto m = model::load(stories);
    const auto tokens = text_tokens(*m, 0, 4000, 300);
    const auto &hp = m->hparams();
    const int hd = hp.head_dim, nq = hp.n_head * hd;
    convert_params cp;
    cp.fraction = 0.25;
    cp.kind = replacement_kind::window_recurrent;
    cp.wr_window = 7; // cache rows: 7 - sinks ring rows and the sinks
    cp.sinks = sinks;
    cp.steps = 40;
    cp.distill.seq_len = 512; // one sequence: the whole text
    cp.distill.chunk = 32;
    cp.distill.wr_gated = gated;
    cp.distill.delta_rule = delta;
    cp.n_threads = 2;
    const auto res = convert_to_hybrid(*m, tokens, cp, tmp("distill_wr.gguf"));
    ASSERT_FALSE(res.distill.heads.empty());
    auto h = model::load(tmp("distill_wr.gguf"));
    const int l0 = res.distill.heads[0].layer;
    EXPECT_EQ(h->hybrid()[size_t(l0)].gate_b.empty(), !gated);
    for (int32_t grp : h->hybrid()[size_t(l0)].recurrent_groups) {
        EXPECT_TRUE(h->hybrid()[size_t(l0)].group_is(grp, replacement_kind::window_recurrent));
        EXPECT_EQ(h->hybrid()[size_t(l0)].group_window[size_t(grp)], 7 - sinks);
        EXPECT_EQ(h->hybrid()[size_t(l0)].group_sinks[size_t(grp)], sinks);
    }
    auto outputs = [&](const model &mm) {
        context_params c;
        c.n_ctx = 512;
        c.n_threads = 2;
        c.n_batch = 64; // several batches: tokens leave the window from the ring and inside a batch
        c.kv_type = tensor_type::F32;
        context ctx(mm, c);
        std::vector<float> out;
        ctx.set_layer_observer([&](int layer, int n, const float *, const float *attn) {
            if (layer == l0) out.insert(out.end(), attn, attn + size_t(n) * nq);
        });
        std::vector<float> logits;
        ctx.eval(tokens, logits);
        return out;
    };
    const auto o = outputs(*m), y = outputs(*h);
    ASSERT_EQ(o.size(), tokens.size() * nq);
    int checked = 0;
    for (auto &r : res.distill.heads) {
        if (r.layer != l0) continue;
        EXPECT_EQ(r.window, 7 - sinks);
        EXPECT_EQ(r.sinks, sinks);
        double err = 0;
        for (size_t t = 0; t < tokens.size(); ++t)
            for (int i = 0; i < hd; ++i) {
                const double e = y[t * nq + size_t(r.head) * hd + i] - o[t * nq + size_t(r.head) * hd + i];
                err += e * e;
            }
        err /= double(tokens.size());
        EXPECT_NEAR(err, r.final_loss, 2e-3 * r.final_loss + 1e-6) << "head " << r.head;
        EXPECT_LT(r.final_loss, r.initial_loss) << "head " << r.head; // better than the window alone
        ++checked;
    }
    EXPECT_GT(checked, 0);
  }
}

// After training, the hybrid's next-token distributions on held-out text are closer to the
// original's than those of the untrained initialisation.
TEST(Distill, TrainedHybridIsCloserToTheOriginalThanTheInitialisation) {
    auto m = model::load(stories);
    const auto calib = text_tokens(*m, 0, 60000, 8192);
    const auto held_out = text_tokens(*m, 200000, 4000, 400);
    convert_params cp;
    cp.fraction = 0.25;
    cp.n_threads = 2;
    cp.analysis_tokens = 1024;
    cp.steps = 0;
    convert_to_hybrid(*m, calib, cp, tmp("distill_untrained.gguf"));
    cp.steps = 300;
    cp.distill.seq_len = 512;
    const auto res = convert_to_hybrid(*m, calib, cp, tmp("distill_trained.gguf"));
    double init = 0, fin = 0;
    for (auto &h : res.distill.heads) init += h.initial_loss, fin += h.final_loss;
    EXPECT_LT(fin, init / 2);
    auto u = model::load(tmp("distill_untrained.gguf"));
    auto t = model::load(tmp("distill_trained.gguf"));
    const auto lo = all_logits(*m, held_out);
    const double kl_untrained = mean_kl(lo, all_logits(*u, held_out), m->hparams().n_vocab);
    const double kl_trained = mean_kl(lo, all_logits(*t, held_out), m->hparams().n_vocab);
    EXPECT_LT(kl_trained, 0.5 * kl_untrained) << "untrained " << kl_untrained << ", trained " << kl_trained;
}

// Stopping at some step (checkpoint written) and resuming gives exactly the uninterrupted run.
TEST(Distill, ResumeFromCheckpointEqualsAnUninterruptedRun) {
    auto m = model::load(models_dir + "/llama-gqa-f32.gguf");
    const auto tokens = text_tokens(*m, 5000, 20000, 1024);
    distill_params p;
    p.steps = 60;
    p.seq_len = 256;
    p.chunk = 32;
    p.n_threads = 2;
    p.checkpoint_path = tmp("distill_resume.ckpt");
    std::remove(p.checkpoint_path.c_str());
    auto full = init_layers(*m, {{0}, {1}});
    distill_heads(*m, tokens, full, p);

    std::remove(p.checkpoint_path.c_str());
    auto part = init_layers(*m, {{0}, {1}});
    int64_t stopped_at = -1;
    EXPECT_THROW(distill_heads(*m, tokens, part, p,
                               [&](const distill_progress &pr) {
                                   if (std::string(pr.phase) == "train" && pr.done >= 20) {
                                       stopped_at = pr.done;
                                       return false;
                                   }
                                   return true;
                               }),
                 cancelled_error);
    ASSERT_GE(stopped_at, 20);
    ASSERT_LT(stopped_at, p.steps);
    auto resumed = init_layers(*m, {{0}, {1}});
    p.resume = true;
    const distill_report r = distill_heads(*m, tokens, resumed, p);
    EXPECT_EQ(r.resumed_from_step, stopped_at);
    EXPECT_TRUE(same_params(full, resumed));

    // A checkpoint of another run is refused with a message.
    auto other = init_layers(*m, {{0}, {1}});
    p.steps = 61;
    try {
        distill_heads(*m, tokens, other, p);
        ADD_FAILURE() << "a mismatched checkpoint was accepted";
    } catch (const cancelled_error &) {
        ADD_FAILURE() << "wrong exception";
    } catch (const error &e) {
        EXPECT_NE(std::string(e.what()).find("another conversion"), std::string::npos) << e.what();
    }
    std::remove(p.checkpoint_path.c_str());
}

// The retrieval check's rule against hand-worked cases (tolerance 0.1 nats): in order of KL, the
// first candidate within the tolerance of the original's answer NLL or no worse than any other.
TEST(Distill, RetrievalRuleKeepsTheLowestKlCandidateThatRetrieves) {
    EXPECT_EQ(retrieval_nll_tolerance, 0.1);
    const std::vector<double> kl2 = {0.01, 0.02}; // a trained mix, then windows
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {2.50, 2.40}), 0u); // as likely as the original's
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {2.59, 2.40}), 0u); // within the tolerance
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {2.61, 2.40}), 1u); // beyond it, windows better
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {2.80, 2.80}), 0u); // beyond it, but no worse than the windows
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {4.00, 4.50}), 0u); // far beyond, windows worse still
    EXPECT_EQ(retrieval_choice(2.52, 20, kl2, {2.81, 2.53}), 1u); // SmolLM2 25% at 1k (60 prompts): +0.28 against +0.004
    EXPECT_EQ(retrieval_choice(2.50, 20, kl2, {2.20, 2.00}), 0u); // better than the original
    // SmolLM2 50%, session 13 (KL on held-out text; NLL of the 60 evaluation prompts at 1k): all
    // windows win on KL and lose retrieval, the mix too; the 8-row window + recurrent groups,
    // third by KL, are within the tolerance.
    EXPECT_EQ(retrieval_choice(2.523, 39, {0.0256, 0.0590, 0.0214}, {3.266, 2.609, 2.866}), 1u);
    // None within the tolerance: the best retriever.
    EXPECT_EQ(retrieval_choice(2.50, 20, {0.01, 0.02, 0.03}, {3.0, 2.9, 3.1}), 1u);
    // A KL tie keeps the earlier.
    EXPECT_EQ(retrieval_choice(2.50, 20, {0.05, 0.05}, {2.5, 2.5}), 0u);
    // The original finds no key: the likelihoods rank noise, the lowest KL is kept (stories260K).
    EXPECT_EQ(retrieval_choice(45.107, 0, {0.121, 0.328, 0.112}, {45.586, 44.632, 45.343}), 2u);
    EXPECT_THROW(retrieval_choice(2.5, 20, {0.1, 0.2}, {2.5}), error);
    EXPECT_THROW(retrieval_choice(2.5, 20, {}, {}), error);
}

// Copy drills: with distinct tokens 0..n-1 the one copied span is visible exactly: a run of
// 8..32 consecutive source tokens, written at least min_gap after its end, everything else as it
// was. Several spans keep the length and position 0; a seed gives the same sequence; a sequence
// too short for a span stays as it is.
TEST(Distill, RepeatSpansCopiesSpansFarEnoughBack) {
    const int32_t n = 300, min_gap = 64;
    std::vector<int32_t> base(n);
    std::iota(base.begin(), base.end(), 0);
    std::set<int32_t> lengths;
    for (uint64_t seed = 0; seed < 200; ++seed) {
        std::vector<int32_t> s = base;
        const auto spans = repeat_spans(s, 1, min_gap, seed);
        ASSERT_EQ(s.size(), base.size());
        ASSERT_EQ(spans.size(), 1u);
        int32_t d = -1, e = -1; // the changed run [d, e)
        for (int32_t i = 0; i < n; ++i)
            if (s[size_t(i)] != i) {
                if (d < 0) d = i;
                ASSERT_TRUE(e < 0 || e == i) << "one contiguous run, seed " << seed;
                e = i + 1;
            }
        ASSERT_GE(d, 0) << "seed " << seed;
        const int32_t len = e - d, src = s[size_t(d)];
        lengths.insert(len);
        EXPECT_GE(len, 8);
        EXPECT_LE(len, 32);
        EXPECT_GE(src, 1) << "BOS is never copied";
        for (int32_t j = 0; j < len; ++j) EXPECT_EQ(s[size_t(d + j)], src + j);
        EXPECT_GE(d - (src + len), min_gap) << "seed " << seed;
        EXPECT_EQ(spans[0].src, src);
        EXPECT_EQ(spans[0].dst, d);
        EXPECT_EQ(spans[0].len, len);
    }
    EXPECT_GT(lengths.size(), 10u) << "span lengths vary";
    std::vector<int32_t> a = base, b = base, c = base;
    repeat_spans(a, 4, min_gap, 7);
    repeat_spans(b, 4, min_gap, 7);
    repeat_spans(c, 4, min_gap, 8);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    EXPECT_EQ(a[0], 0);
    std::vector<int32_t> short_seq(8 + min_gap + 8, 5);
    std::iota(short_seq.begin(), short_seq.end(), 0);
    const std::vector<int32_t> before = short_seq;
    EXPECT_TRUE(repeat_spans(short_seq, 3, min_gap, 1).empty());
    EXPECT_EQ(short_seq, before);
}

// Copy drills change the training sequences only: errors measured on the held-out sequence (the
// untrained window baseline there) are bit for bit those of a run without them, the trained
// heads differ.
TEST(Distill, CopyDrillsLeaveTheHeldOutSequencesAlone) {
    auto m = model::load(models_dir + "/llama-gqa-f32.gguf");
    const auto tokens = text_tokens(*m, 0, 20000, 512 + 3 * 511); // 4 full sequences, BOS-led
    distill_params p = heldout_params();
    p.steps = 20;
    auto a = init_layers(*m, {{1}, {0, 1}});
    const distill_report ra = distill_heads(*m, tokens, a, p);
    p.repeat_spans = 4;
    auto b = init_layers(*m, {{1}, {0, 1}});
    const distill_report rb = distill_heads(*m, tokens, b, p);
    ASSERT_EQ(ra.n_sequences, 4);
    ASSERT_EQ(ra.calib_tokens, 4 * 512);
    ASSERT_EQ(ra.heads.size(), rb.heads.size());
    for (size_t i = 0; i < ra.heads.size(); ++i) {
        EXPECT_GT(ra.heads[i].window_heldout_loss, 0.0f);
        EXPECT_EQ(ra.heads[i].window_heldout_loss, rb.heads[i].window_heldout_loss) << i;
        EXPECT_EQ(ra.heads[i].heldout_target, rb.heads[i].heldout_target) << i;
    }
    EXPECT_FALSE(same_params(a, b)) << "the drills should change what is trained";
}

// A retrieval drill: seq_len tokens, BOS first, the needle and the question in their template
// (not recur passkey's), the needle min_gap..max_gap tokens before the answer, the answer the
// code, heavy weights on exactly the positions that predict the answer's tokens; a seed gives
// the same drill, seeds vary the name, code and distance; too short sequences are refused.
TEST(Distill, RetrievalDrillHidesAFactFarBackAndWeighsItsAnswer) {
    auto m = model::load(models_dir + "/llama-gqa-f32.gguf");
    const tokenizer &vocab = m->vocab();
    const auto filler = text_tokens(*m, 1000, 20000, 3000);
    std::set<int> codes;
    std::set<int64_t> gaps;
    for (uint64_t seed = 0; seed < 30; ++seed) {
        const retrieval_drill d = make_retrieval_drill(vocab, filler, 512, 300, 450, 50.0f, seed);
        ASSERT_EQ(d.tokens.size(), 512u);
        ASSERT_EQ(d.weight.size(), 512u);
        if (vocab.bos() >= 0) {
            EXPECT_EQ(d.tokens[0], vocab.bos());
        }
        EXPECT_GE(d.code, 10000);
        EXPECT_LE(d.code, 99999);
        codes.insert(d.code);
        const int64_t gap = d.answer_begin - d.needle_begin;
        gaps.insert(gap);
        EXPECT_GE(gap, 300) << "seed " << seed;
        EXPECT_LE(gap, 450) << "seed " << seed;
        EXPECT_EQ(d.answer_begin + d.answer_len <= 512, true);
        const std::string code = std::to_string(d.code);
        const std::vector<int32_t> needle(d.tokens.begin() + d.needle_begin, d.tokens.begin() + d.question_begin);
        EXPECT_NE(vocab.decode(needle).find("Note: the locker code of " + d.name + " is " + code + "."), std::string::npos)
            << vocab.decode(needle);
        const std::vector<int32_t> qa(d.tokens.begin() + d.question_begin, d.tokens.begin() + d.answer_begin + d.answer_len);
        const std::string qa_text = vocab.decode(qa);
        EXPECT_NE(qa_text.find("Question: what is the locker code of " + d.name + "? Answer: " + code), std::string::npos)
            << qa_text;
        const std::vector<int32_t> answer(d.tokens.begin() + d.answer_begin, d.tokens.begin() + d.answer_begin + d.answer_len);
        EXPECT_NE(vocab.decode(answer).find(code), std::string::npos);
        EXPECT_EQ(vocab.decode(d.tokens).find("pass key"), std::string::npos) << "not recur passkey's template";
        for (int64_t t = 0; t < 512; ++t) {
            const bool answers = t >= d.answer_begin - 1 && t < d.answer_begin + d.answer_len - 1;
            EXPECT_EQ(d.weight[size_t(t)], answers ? 50.0f : 1.0f) << "seed " << seed << " position " << t;
        }
    }
    EXPECT_GT(codes.size(), 25u);
    EXPECT_GT(gaps.size(), 10u);
    const retrieval_drill a = make_retrieval_drill(vocab, filler, 512, 300, 450, 50.0f, 7);
    const retrieval_drill b = make_retrieval_drill(vocab, filler, 512, 300, 450, 50.0f, 7);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.weight, b.weight);
    EXPECT_THROW(make_retrieval_drill(vocab, filler, 200, 300, 450, 50.0f, 7), error);
}

// Retrieval drills are extra training sequences: the held-out sequence's errors are bit for bit
// those of a run without them, the capture grows by the drills, and their weight reaches the
// training (weight 1 and weight 50 train different heads; the same weight, the same heads).
TEST(Distill, RetrievalDrillsTrainWithTheirWeightsAndLeaveTheHeldOutAlone) {
    auto m = model::load(models_dir + "/llama-gqa-f32.gguf");
    const auto tokens = text_tokens(*m, 0, 20000, 512 + 3 * 511); // 4 full sequences, BOS-led
    distill_params p = heldout_params();
    p.steps = 40;
    p.batch = 2;
    auto a = init_layers(*m, {{1}, {0, 1}});
    const distill_report ra = distill_heads(*m, tokens, a, p);
    p.drills = 3;
    p.drill_weight = 50.0f;
    auto b = init_layers(*m, {{1}, {0, 1}});
    const distill_report rb = distill_heads(*m, tokens, b, p);
    auto b2 = init_layers(*m, {{1}, {0, 1}});
    distill_heads(*m, tokens, b2, p);
    p.drill_weight = 1.0f;
    auto c = init_layers(*m, {{1}, {0, 1}});
    const distill_report rc = distill_heads(*m, tokens, c, p);
    ASSERT_EQ(ra.n_sequences, 4);
    EXPECT_EQ(rb.n_sequences, 7);
    EXPECT_EQ(rb.calib_tokens, ra.calib_tokens + 3 * 512);
    EXPECT_EQ(rb.heldout_tokens, ra.heldout_tokens);
    ASSERT_EQ(ra.heads.size(), rb.heads.size());
    for (size_t i = 0; i < ra.heads.size(); ++i) {
        EXPECT_GT(ra.heads[i].window_heldout_loss, 0.0f);
        EXPECT_EQ(ra.heads[i].window_heldout_loss, rb.heads[i].window_heldout_loss) << i;
        EXPECT_EQ(ra.heads[i].heldout_target, rb.heads[i].heldout_target) << i;
        EXPECT_EQ(rb.heads[i].window_heldout_loss, rc.heads[i].window_heldout_loss) << i;
    }
    EXPECT_FALSE(same_params(a, b)) << "the drills should change what is trained";
    EXPECT_TRUE(same_params(b, b2)) << "drills are seeded";
    EXPECT_FALSE(same_params(b, c)) << "the answer positions' weight should reach the training";
    p.drill_weight = 0.0f;
    auto d = init_layers(*m, {{1}, {0, 1}});
    EXPECT_THROW(distill_heads(*m, tokens, d, p), error);
}

// Sampling calibration text from the model is reproducible and cut into BOS-led sequences.
TEST(Distill, SelfSampledCalibrationIsSeeded) {
    auto m = model::load(stories);
    const auto a = sample_calibration(*m, 300, 128, 9, 2);
    const auto b = sample_calibration(*m, 300, 128, 9, 2);
    const auto c = sample_calibration(*m, 300, 128, 10, 2);
    ASSERT_EQ(a.size(), 300u);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    EXPECT_EQ(a[0], m->vocab().bos());
    EXPECT_EQ(a[128], m->vocab().bos());
    EXPECT_EQ(a[256], m->vocab().bos());
}

#ifdef RECUR_CLI_PATH
// The command: progress on stderr, the JSON keys, the losses in the file, the checkpoint removed.
TEST(Distill, ConvertCommandDistils) {
    const std::string out = tmp("distill_cli.gguf");
    const std::string cmd = std::string(RECUR_CLI_PATH) + " convert -m " + stories + " -f " + RECUR_SHARED_DIR +
                            "/data/prideprejudice.txt -c 256 --calib-tokens 3000 --fraction 0.25 --steps 30 --lr 0.003 "
                            "--kind recurrent --seed 3 -t 2 -o " + out + " --json >" + tmp("distill_cli.out") + " 2>" +
                            tmp("distill_cli.err");
    const int st = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    std::ifstream f(tmp("distill_cli.out"));
    const std::string json((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_NE(json.find("\"steps\":30"), std::string::npos) << json;
    EXPECT_NE(json.find("\"final_loss\":[0."), std::string::npos) << json;
    EXPECT_NE(json.find("\"distillation\":{\"tokens\":30"), std::string::npos) << json; // 3000 + BOS per sequence
    auto h = model::load(out);
    size_t losses = 0;
    for (auto &H : h->hybrid()) losses += H.final_loss.size();
    EXPECT_EQ(losses, size_t(h->replaced_group_count() * h->hparams().group_size()));
    EXPECT_FALSE(std::ifstream(out + ".ckpt").good());

    // Human mode prints a progress line with step/total, tokens/s, loss and ETA.
    const std::string cmd2 = std::string(RECUR_CLI_PATH) + " convert -m " + stories + " -f " + RECUR_SHARED_DIR +
                             "/data/prideprejudice.txt -c 256 --calib-tokens 2000 --fraction 0.25 --steps 10 --kind recurrent -t 2 -o " +
                             out + " >/dev/null 2>" + tmp("distill_cli.err");
    ASSERT_EQ(std::system(cmd2.c_str()), 0);
    std::ifstream e(tmp("distill_cli.err"));
    const std::string err((std::istreambuf_iterator<char>(e)), std::istreambuf_iterator<char>());
    EXPECT_NE(err.find("distil step 10/10"), std::string::npos) << err;
    EXPECT_NE(err.find("tok/s"), std::string::npos);
    EXPECT_NE(err.find("ETA"), std::string::npos);
}

// --kind auto --per-group-only: every replaced group gets the candidate kind with the smallest
// held-out error, and the JSON report, the file's kinds and its group_loss / candidate_loss
// metadata say the same.
TEST(Distill, ConvertAutoChoosesTheKindPerGroup) {
    const std::string out = tmp("distill_auto.gguf");
    // Default sinks, and a 1-row window without sinks (--sinks 0).
    for (const char *window : {"", " --window-tokens 1 --sinks 0"}) {
        const std::string cmd = std::string(RECUR_CLI_PATH) + " convert -m " + stories + " -f " + RECUR_SHARED_DIR +
                                "/data/prideprejudice.txt -c 256 --calib-tokens 3000 --fraction 0.5 --steps 60 "
                                "--write-candidates --per-group-only -t 2 -o " + out + window + " --json >" + tmp("distill_auto.out") +
                                " 2>" + tmp("distill_auto.err");
        const int st = std::system(cmd.c_str());
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << cmd;
        std::ifstream f(tmp("distill_auto.out"));
        const std::string json((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        EXPECT_NE(json.find("\"kind\":\"auto\""), std::string::npos) << json;
        auto h = model::load(out);
        EXPECT_EQ(h->file().get_string("recurformer.kind", ""), "auto");
        const auto &hp = h->hparams();
        const int32_t S = *window ? 0 : default_sinks;
        const int32_t W_win = *window ? 1 : default_windows(hp).window_equal_wr - S;
        int non_window = 0, groups = 0;
        for (int32_t l = 0; l < hp.n_layer; ++l) {
            const hybrid_layer &H = h->hybrid()[size_t(l)];
            if (H.replaced_groups.empty()) continue;
            const std::string key = "recurformer.blk." + std::to_string(l) + ".";
            const auto cand = h->file().get_float_array(key + "candidate_loss");
            const auto chosen = h->file().get_float_array(key + "group_loss");
            ASSERT_EQ(cand.size(), 3 * H.replaced_groups.size());
            ASSERT_EQ(chosen.size(), H.replaced_groups.size());
            for (size_t i = 0; i < H.replaced_groups.size(); ++i) {
                const int k = int(H.kinds[i]);
                ++groups;
                non_window += k != int(replacement_kind::window);
                EXPECT_EQ(chosen[i], cand[3 * i + size_t(k)]);
                // The JSON names the kind of this group.
                const std::string g = "\"layer\":" + std::to_string(l) + ",\"group\":" + std::to_string(H.replaced_groups[i]);
                const size_t at = json.find(g);
                ASSERT_NE(at, std::string::npos) << g;
                static const char *names[3] = {"recurrent", "window", "window+recurrent"};
                EXPECT_EQ(json.find(std::string("\"kind\":\"") + names[k] + "\"", at),
                          json.find("\"kind\":", at)) << g;
                EXPECT_EQ(H.windows[i], k == 1 ? W_win : k == 2 ? default_windows(hp).wr_window - S : 0);
                EXPECT_EQ(H.sinks[i], k == 0 ? 0 : S);
            }
        }
        EXPECT_GT(groups, 0);
        // A 1-token window imitates attention worse than 5 tokens plus a trained recurrent head.
        if (*window) {
            EXPECT_GT(non_window, 0);
        }
        // The candidates: the same groups, all one kind, loadable.
        auto r = model::load(tmp("distill_auto-recurrent.gguf")), w = model::load(tmp("distill_auto-winrec.gguf"));
        for (int32_t l = 0; l < hp.n_layer; ++l) {
            EXPECT_EQ(r->hybrid()[size_t(l)].replaced_groups, h->hybrid()[size_t(l)].replaced_groups);
            for (auto k : r->hybrid()[size_t(l)].kinds) EXPECT_EQ(k, replacement_kind::recurrent);
            for (auto k : w->hybrid()[size_t(l)].kinds) EXPECT_EQ(k, replacement_kind::window_recurrent);
        }
    }
}

// --kind auto (by default) then compares its per-group choice end to end on the held-out sequences
// with all window + recurrent groups (unless the choice is that already), with all plain windows
// (when the choice has trained groups) and with the default sinks also with all windows without
// sinks, by KL and by the retrieval check, and keeps the candidate the rule picks. With 1-token
// windows and --sinks 0 the windows must lose on KL, and by a wide margin: a KL that measured
// nothing (zeros, or the same number twice) fails. The file must be what the report says was
// kept. With --write-candidates a per-group choice that is not kept stays as OUT-mix.gguf (and
// only then).
TEST(Distill, ConvertAutoKeepsTheBetterHybridEndToEnd) {
    const std::string out = tmp("distill_auto_e2e.gguf"), mix_file = tmp("distill_auto_e2e-mix.gguf");
    for (const char *window : {" --window-tokens 1 --sinks 0", ""}) {
        std::remove(mix_file.c_str());
        const std::string cmd = std::string(RECUR_CLI_PATH) + " convert -m " + stories + " -f " + RECUR_SHARED_DIR +
                                "/data/prideprejudice.txt -c 256 --calib-tokens 3000 --fraction 0.5 --steps 60 -t 2 -o " +
                                out + window + " --write-candidates --json >" + tmp("distill_auto_e2e.out") + " 2>" +
                                tmp("distill_auto_e2e.err");
        const int st = std::system(cmd.c_str());
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << cmd;
        std::ifstream f(tmp("distill_auto_e2e.out"));
        const std::string json((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const size_t at = json.find("\"end_to_end\":{");
        auto h = model::load(out);
        int trained = 0, replaced = 0, winrec = 0;
        for (auto &H : h->hybrid())
            for (auto k : H.kinds)
                ++replaced, trained += k != replacement_kind::window, winrec += k == replacement_kind::window_recurrent;
        EXPECT_GT(replaced, 0);
        ASSERT_NE(at, std::string::npos) << "with trained heads or default sinks there is a comparison: " << json;
        auto number = [&](const std::string &key) {
            const size_t k = json.find("\"" + key + "\":", at);
            EXPECT_NE(k, std::string::npos) << key;
            return std::stod(json.substr(k + key.size() + 3));
        };
        const double mix = number("mix_kl"), positions = number("positions");
        auto optional = [&](const std::string &key) {
            return json.find("\"" + key + "\":", at) != std::string::npos ? number(key) : -1.0;
        };
        auto string_field = [&](const std::string &key) {
            const size_t k = json.find("\"" + key + "\":\"", at);
            if (k == std::string::npos) return std::string();
            const size_t from = k + key.size() + 4;
            return json.substr(from, json.find('"', from) - from);
        };
        const double wr = optional("winrec_kl"), win = optional("window_kl"), plain = optional("window_no_sinks_kl");
        const std::string kept = string_field("kept");
        EXPECT_GT(positions, 100);
        EXPECT_GT(mix, 0.0);
        // The mix is a window candidate itself when it has no trained groups: then there is no
        // all-window candidate (window_kl absent).
        const bool mix_is_window = win < 0;
        // Every candidate answered the retrieval check's 32 prompts; its numbers are consistent.
        const double r_trials = number("retrieval_trials"), r_orig = number("retrieval_original"),
                     nll_orig = number("retrieval_original_nll");
        EXPECT_EQ(r_trials, 32.0) << json;
        EXPECT_GT(nll_orig, 0.0);
        std::vector<std::string> names;
        std::vector<double> kls, nlls;
        for (const char *name : {"mix", "winrec", "window", "window_no_sinks"}) {
            const size_t c = json.find(std::string("{\"name\":\"") + name + "\"", at);
            EXPECT_EQ(c != std::string::npos, optional(std::string(name) + "_kl") >= 0) << name;
            if (c == std::string::npos) continue;
            auto field = [&](const std::string &key) {
                const size_t k = json.find("\"" + key + "\":", c);
                EXPECT_LT(k, json.find('}', c)) << name << " " << key;
                return std::stod(json.substr(k + key.size() + 3));
            };
            names.push_back(name);
            kls.push_back(field("kl"));
            nlls.push_back(field("retrieval_nll"));
            EXPECT_EQ(kls.back(), optional(std::string(name) + "_kl"));
            EXPECT_GT(nlls.back(), 0.0) << name;
            const double found = field("retrieval_found"), lost = field("retrieval_lost");
            EXPECT_GE(lost, 0.0);
            EXPECT_LE(lost, r_orig);
            EXPECT_GE(found, r_orig - lost) << "found = the original's minus lost plus gained";
            EXPECT_LE(found, r_trials);
        }
        // The rule, worked again here: in order of KL (a tie keeps the earlier), the first whose
        // keys' mean NLL is within 0.1 nats of the original's or no worse than every other's (the
        // first outright when the original finds no key, as stories260K at 256 tokens).
        std::vector<size_t> order(names.size());
        std::iota(order.begin(), order.end(), size_t(0));
        std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return kls[x] < kls[y]; });
        const double best_nll = *std::min_element(nlls.begin(), nlls.end());
        std::string want;
        for (size_t i : order)
            if (want.empty() && (r_orig == 0 || nlls[i] <= nll_orig + 0.1 || nlls[i] <= best_nll)) want = names[i];
        EXPECT_EQ(kept, want) << json;
        if (*window) {
            // Explicit --sinks 0: no no-sinks candidate; 1-token windows lose by a wide margin to
            // both trained candidates.
            EXPECT_LT(plain, 0.0);
            EXPECT_GT(win, 1.5 * mix) << "a 1-token window should be far worse than trained heads";
            if (wr >= 0) {
                EXPECT_GT(win, 1.5 * wr) << "a 1-token window should be far worse than trained heads";
            }
        } else {
            // Default sinks: the no-sinks windows are always tried.
            EXPECT_GT(plain, 0.0) << json;
        }
        // The file holds what was kept.
        EXPECT_EQ(std::ifstream(mix_file).good(), kept != "mix") << "OUT-mix.gguf only for a rejected per-group choice";
        if (kept == "mix") {
            EXPECT_EQ(trained > 0, !mix_is_window);
        } else if (kept == "winrec") {
            EXPECT_EQ(winrec, replaced) << "all window + recurrent";
            // As trained: the same heads as the candidate file --write-candidates wrote.
            const auto w = model::load(tmp("distill_auto_e2e-winrec.gguf"));
            for (size_t l = 0; l < h->hybrid().size(); ++l) {
                EXPECT_EQ(w->hybrid()[l].replaced_groups, h->hybrid()[l].replaced_groups);
                EXPECT_EQ(w->hybrid()[l].dt_b, h->hybrid()[l].dt_b) << "layer " << l;
            }
        } else {
            EXPECT_EQ(trained, 0);
            // The kept-aside per-group choice: a hybrid of the same groups.
            const auto mix_model = model::load(mix_file);
            for (size_t l = 0; l < h->hybrid().size(); ++l)
                EXPECT_EQ(mix_model->hybrid()[l].replaced_groups, h->hybrid()[l].replaced_groups);
            for (auto &H : h->hybrid())
                for (size_t i = 0; i < H.kinds.size(); ++i) {
                    EXPECT_EQ(H.sinks[i], kept == "window" ? default_sinks : 0);
                    EXPECT_EQ(H.windows[i] + H.sinks[i], default_windows(h->hparams()).window_equal_wr);
                }
        }
        // The report's sinks are the file's.
        const size_t top = json.find("\"wr_window_tokens\":");
        ASSERT_NE(top, std::string::npos);
        const size_t sk = json.find("\"sinks\":", top);
        ASSERT_NE(sk, std::string::npos);
        EXPECT_EQ(std::stoi(json.substr(sk + 8)), kept == "window_no_sinks" || *window ? 0 : default_sinks) << json;
        for (const char *part : {".window.part", ".nosinks.part", ".winrec.part"})
            EXPECT_FALSE(std::ifstream(out + part).good()) << "no candidate file is left behind: " << part;
    }
}
#endif

// convert_phases lists the stages a forced-kind conversion reports, in order: distilled kinds
// capture then train, a window (exact, untrained) only analyses, and the retrieval probe comes
// before the distillation.
TEST(Distill, ConvertPhasesAreTheOnesReported) {
    auto m = model::load(stories);
    const auto calib = text_tokens(*m, 0, 20000, 1500);
    struct run {
        replacement_kind kind;
        int32_t steps, probe_trials;
    };
    for (const run r : {run{replacement_kind::recurrent, 10, 0}, run{replacement_kind::window_recurrent, 0, 0},
                        run{replacement_kind::window, 0, 2}, run{replacement_kind::window_recurrent, 10, 2}}) {
        convert_params cp;
        cp.fraction = 0.25;
        cp.n_threads = 2;
        cp.kind = r.kind;
        cp.steps = r.steps;
        cp.distill.seq_len = 256;
        cp.retrieval_probe_trials = r.probe_trials;
        std::vector<std::string> order;
        auto note = [&](const std::string &phase) {
            if (order.empty() || order.back() != phase) order.push_back(phase);
        };
        const std::string out = tmp("phases.gguf");
        convert_to_hybrid(
            *m, calib, cp, out,
            [&](int64_t, int64_t) {
                note("analysis");
                return true;
            },
            [&](const distill_progress &pr) {
                note(pr.phase);
                return true;
            });
        EXPECT_EQ(order, convert_phases(cp)) << "kind " << int(r.kind) << ", steps " << r.steps << ", probe " << r.probe_trials;
        std::remove(out.c_str());
    }
}

// The checks after training (end-to-end KL, then the retrieval check) report progress in tokens
// and stop when asked; a stopped or failed check leaves no output file (its choice was not
// made) and no candidate file.
TEST(Distill, ConvertAutoChecksReportProgressAndStopWhenCancelled) {
    auto m = model::load(stories);
    const auto calib = text_tokens(*m, 0, 20000, 3000);
    convert_params cp;
    cp.fraction = 0.5;
    cp.n_threads = 2;
    cp.steps = 20;
    cp.automatic = true;
    cp.distill.seq_len = 256;
    cp.window_tokens = 1; // the smallest windows, without sinks: the quickest conversion
    cp.sinks = 0;
    const std::string out = tmp("checks_cancel.gguf");
    struct seen {
        int64_t reports = 0, last_done = 0, total = 0;
        bool monotonic = true;
    };
    // A full run first: both phases report, done never goes back, and the last report is complete.
    std::map<std::string, seen> phases;
    auto record = [&](const distill_progress &pr) {
        seen &s = phases[pr.phase];
        if (s.reports > 0 && (pr.done < s.last_done || pr.total != s.total)) s.monotonic = false;
        if (pr.done > pr.total || pr.total <= 0) s.monotonic = false;
        ++s.reports, s.last_done = pr.done, s.total = pr.total;
    };
    std::vector<std::string> order; // phases in the order reported, each once per stretch
    auto note = [&](const std::string &phase) {
        if (order.empty() || order.back() != phase) order.push_back(phase);
    };
    const auto res = convert_to_hybrid(
        *m, calib, cp, out,
        [&](int64_t, int64_t) {
            note("analysis");
            return true;
        },
        [&](const distill_progress &pr) {
            note(pr.phase);
            record(pr);
            return true;
        });
    ASSERT_TRUE(res.end_to_end.measured);
    ASSERT_GT(res.end_to_end.retrieval_trials, 0);
    // The stages a progress display counts are the ones reported, the optional check included.
    EXPECT_EQ(order, convert_phases(cp));
    for (const char *phase : {"compare", "retrieval"}) {
        ASSERT_TRUE(phases.count(phase)) << phase;
        const seen &s = phases[phase];
        EXPECT_TRUE(s.monotonic) << phase;
        EXPECT_GE(s.reports, 3) << phase; // the start, at least one step, the end
        EXPECT_EQ(s.last_done, s.total) << phase;
    }
    // Cancelled in either check: cancelled_error, and nothing left behind.
    for (const std::string cancel_in : {"compare", "retrieval"}) {
        std::ofstream(out) << "a file from before";
        bool asked = false;
        EXPECT_THROW(convert_to_hybrid(*m, calib, cp, out, {},
                                       [&](const distill_progress &pr) {
                                           if (pr.phase != cancel_in || pr.done == 0) return true;
                                           asked = true;
                                           return false;
                                       }),
                     cancelled_error)
            << cancel_in;
        EXPECT_TRUE(asked) << cancel_in;
        EXPECT_FALSE(std::ifstream(out).good()) << "cancelled in " << cancel_in << ": no unchecked output";
        for (const char *part : {".window.part", ".nosinks.part", ".winrec.part"})
            EXPECT_FALSE(std::ifstream(out + part).good()) << cancel_in << ": " << part;
    }
}
