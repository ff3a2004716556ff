#include "recur/convert.h"

#include "recur/distill.h"
#include "recur/gguf_writer.h"
#include "recur/logit_compare.h"
#include "recur/passkey.h"
#include "recur/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>

namespace recur {

namespace {

// Progress of the checks after training (phases "compare" and "retrieval" of distill_progress,
// counted in evaluated tokens): a line for the user, and the place where a cancel takes effect.
class phase_meter {
  public:
    phase_meter(const distill_callback &cb, const char *phase, const char *what, int64_t total)
        : cb_(cb), what_(what), total_(total), t0_(std::chrono::steady_clock::now()) {
        pr_.phase = phase;
        pr_.total = total;
        report();
    }
    // Throws cancelled_error when the callback asks to stop.
    void advance(int64_t tokens) {
        pr_.done = std::min(total_, pr_.done + tokens);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        pr_.tokens_per_s = s > 0 ? double(pr_.done) / s : 0.0;
        pr_.eta_s = pr_.tokens_per_s > 0 ? double(total_ - pr_.done) / pr_.tokens_per_s : 0.0;
        report();
    }

  private:
    void report() {
        if (cb_ && !cb_(pr_)) throw cancelled_error(std::string("convert cancelled during the ") + what_);
    }
    const distill_callback &cb_;
    const char *what_;
    int64_t total_;
    std::chrono::steady_clock::time_point t0_;
    distill_progress pr_;
};

// Mean over every predicted position of KL(original ‖ hybrid) of the next-token distributions,
// for each hybrid; and the number of positions.
std::pair<std::vector<double>, int64_t> mean_kl(const model &orig, const std::vector<const model *> &hybrids,
                                                const std::vector<std::vector<int32_t>> &seqs, int n_threads, int n_batch,
                                                const distill_callback &progress) {
    const int V = orig.hparams().n_vocab;
    int64_t total = 0;
    for (const auto &seq : seqs) total += int64_t(seq.size()) * int64_t(1 + hybrids.size());
    phase_meter meter(progress, "compare", "end-to-end comparison", total);
    std::vector<double> sum(hybrids.size(), 0.0);
    int64_t positions = 0;
    for (const auto &seq : seqs) {
        context_params cp;
        cp.n_ctx = int32_t(seq.size());
        cp.n_batch = std::max(1, n_batch);
        cp.n_threads = n_threads;
        std::vector<float> lo;
        {
            context c(orig, cp);
            c.eval(seq, lo, true);
        }
        meter.advance(int64_t(seq.size()));
        for (size_t h = 0; h < hybrids.size(); ++h) {
            std::vector<float> lh;
            context c(*hybrids[h], cp);
            c.eval(seq, lh, true);
            for (size_t t = 0; t + 1 < seq.size(); ++t)
                sum[h] += compare_logit_rows(lo.data() + t * size_t(V), lh.data() + t * size_t(V), V, seq[t + 1]).kl;
            meter.advance(int64_t(seq.size()));
        }
        positions += int64_t(seq.size()) - 1;
    }
    for (double &v : sum) v /= double(std::max<int64_t>(1, positions));
    return {sum, positions};
}

// Passkey prompts for the retrieval check of convert --kind auto (recur/passkey.h): how many
// trials, and the seed (fixed, so reruns compare the same prompts).
constexpr int32_t retrieval_trials = 32;
constexpr uint64_t retrieval_seed = 42;
constexpr uint64_t copy_probe_seed = 0xc0b1e5;       // fixed: the same text gives the same probe
constexpr uint64_t retrieval_probe_seed = 0x9e7219e5; // the retrieval probe's prompts, likewise

// A passkey prompt and the key's tokens that should follow it.
struct scored_prompt {
    std::vector<int32_t> prompt, answer;
};

// `trials` passkey prompts of `length` tokens hiding needles in `text` (its BOS tokens dropped),
// drawn from `seed`; empty when such prompts leave no room for filler. Used by the retrieval
// check and the retrieval probe.
std::vector<scored_prompt> passkey_scoring_prompts(const tokenizer &vocab, const std::vector<int32_t> &text,
                                                   int32_t length, int32_t trials, uint64_t seed) {
    std::vector<int32_t> filler;
    for (int32_t tok : text)
        if (tok != vocab.bos()) filler.push_back(tok);
    passkey_parts parts = make_passkey_parts(vocab, filler, vocab.adds_bos() && vocab.bos() >= 0);
    parts.needle = passkey_needle_tokens(vocab, 99999); // the longest needle, for the size check
    std::vector<scored_prompt> out;
    if (parts.filler.empty() || size_t(length) <= passkey_overhead(parts) + 16) return out;
    for (int32_t t = 0; t < trials; ++t) {
        const passkey_trial tr = make_passkey_trial(seed, length, t);
        out.push_back({passkey_trial_prompt(vocab, parts, tr, size_t(length)).tokens, passkey_answer_tokens(vocab, tr.passkey)});
    }
    return out;
}

// One model's teacher-forced scores of every prompt's key (recur/passkey.h score_passkey_answer).
std::vector<passkey_answer_score> score_prompts(const model &mdl, const std::vector<scored_prompt> &prompts,
                                                int n_threads, int n_batch, phase_meter &meter) {
    size_t longest = 1;
    for (const auto &pp : prompts) longest = std::max(longest, pp.prompt.size() + pp.answer.size());
    context_params cp;
    cp.n_ctx = int32_t(longest);
    cp.n_batch = std::max(1, n_batch);
    cp.n_threads = n_threads;
    context ctx(mdl, cp);
    std::vector<passkey_answer_score> scores;
    for (const auto &pp : prompts) {
        scores.push_back(score_passkey_answer(ctx, pp.prompt, pp.answer));
        meter.advance(int64_t(pp.prompt.size()));
    }
    return scores;
}

// Mean increase of the key's NLL over `base`, per prompt.
double mean_nll_increase(const std::vector<passkey_answer_score> &scores, const std::vector<passkey_answer_score> &base) {
    double sum = 0;
    for (size_t t = 0; t < scores.size(); ++t) sum += scores[t].nll - base[t].nll;
    return sum / double(std::max<size_t>(1, scores.size()));
}

} // namespace

size_t retrieval_choice(double original_nll, int32_t original_found, const std::vector<double> &kl,
                        const std::vector<double> &nll) {
    if (kl.empty() || kl.size() != nll.size()) throw error("convert: one KL and one answer NLL per candidate expected");
    std::vector<size_t> order(kl.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return kl[a] < kl[b]; });
    if (original_found <= 0) return order.front();
    const double best_nll = *std::min_element(nll.begin(), nll.end());
    for (size_t i : order)
        if (nll[i] <= original_nll + retrieval_nll_tolerance || nll[i] <= best_nll) return i;
    return order.front(); // not reached: the best retriever qualifies
}

double end_to_end_choice::kl_of(const std::string &name) const {
    for (const auto &c : candidates)
        if (c.name == name) return c.kl;
    return -1;
}

float initial_dt_bias(int32_t window) {
    // dt = softplus(b) = 1/window at initialisation: with A = -exp(0) = -1 the decay is
    // a = exp(-1/window), a memory of about `window` tokens, and the weights dt * a^j of past
    // tokens sum to about one, like a softmax row spread over the window.
    const double dt = 1.0 / std::max(1, window);
    return float(std::log(std::expm1(dt)));
}

int32_t default_wr_window(double replaced_fraction) {
    return replaced_fraction >= fewer_wr_rows_from_fraction ? default_wr_window_rows_from_half : default_wr_window_rows;
}

default_window_sizes default_windows(const model_hparams &hp, int32_t wr_window, double replaced_fraction) {
    default_window_sizes d;
    const size_t g = size_t(hp.group_size()), hd = size_t(hp.head_dim), row = 2 * hd * 2; // K+V F16 per position
    d.recurrent_bytes = g * hd * hd * sizeof(float);
    d.window_equal_recurrent = int32_t(d.recurrent_bytes / row); // = group_size x head_dim
    d.wr_window = wr_window > 0 ? wr_window
                                : std::max<int32_t>(1, std::min<int32_t>(default_wr_window(replaced_fraction),
                                                                         int32_t(std::lround(double(g * hd) / 3.0))));
    d.wr_bytes = d.recurrent_bytes + size_t(d.wr_window) * (row + g * sizeof(float));
    d.window_equal_wr = int32_t(d.wr_bytes / row);
    return d;
}

std::vector<bool> choose_groups(const std::vector<double> &group_recency, double fraction, double threshold,
                                const std::vector<bool> &exclude) {
    const size_t n = group_recency.size();
    std::vector<bool> chosen(n, false);
    if ((fraction >= 0) == (threshold >= 0)) throw error("convert: give exactly one of --fraction and --threshold");
    if (!exclude.empty() && exclude.size() != n) throw error("convert: one exclusion flag per group expected");
    auto excluded = [&](size_t i) { return !exclude.empty() && exclude[i]; };
    if (threshold >= 0) {
        for (size_t i = 0; i < n; ++i) chosen[i] = group_recency[i] >= threshold && !excluded(i);
        return chosen;
    }
    if (fraction > 1) throw error("convert: --fraction must be between 0 and 1");
    const size_t count = size_t(std::llround(fraction * double(n)));
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return group_recency[a] > group_recency[b]; });
    size_t picked = 0;
    for (size_t i = 0; i < n && picked < count; ++i)
        if (!excluded(order[i])) chosen[order[i]] = true, ++picked;
    return chosen;
}

std::vector<std::string> convert_phases(const convert_params &p) {
    std::vector<std::string> phases = {"analysis"};
    if (p.retrieval_probe_trials > 0) phases.push_back("retrieval_probe");
    // As convert_to_hybrid decides want_rec / want_wr and whether distill_heads runs.
    const int distilled_kinds = p.automatic ? 2 : p.kind == replacement_kind::window ? 0 : p.steps > 0 ? 1 : 0;
    for (int k = 0; k < distilled_kinds; ++k) {
        phases.push_back("capture");
        if (p.steps > 0) phases.push_back("train");
    }
    if (p.automatic && p.compare_end_to_end) phases.insert(phases.end(), {"compare", "retrieval"});
    return phases;
}

convert_result convert_to_hybrid(const model &m, const std::vector<int32_t> &calib_tokens, const convert_params &p,
                                 const std::string &out_path, const progress_callback &progress,
                                 const distill_callback &distill_progress) {
    const model_hparams &hp = m.hparams();
    if (m.is_hybrid()) throw error("convert: the model is already a hybrid; convert the original model");
    if (p.steps < 0) throw error("convert: --steps must not be negative");
    const int32_t last_layer = p.last_layer < 0 ? hp.n_layer - 1 : p.last_layer;
    if (p.first_layer < 0 || p.first_layer > last_layer || last_layer >= hp.n_layer)
        throw error("convert: --layers " + std::to_string(p.first_layer) + "-" + std::to_string(last_layer) +
                    " is not a range of this model's layers 0-" + std::to_string(hp.n_layer - 1));
    // The recency analysis reads the first analysis_tokens (one context); distillation all of them.
    const std::vector<int32_t> analysed(
        calib_tokens.begin(),
        calib_tokens.begin() + int64_t(p.analysis_tokens > 0 ? std::min<size_t>(size_t(p.analysis_tokens), calib_tokens.size())
                                                             : calib_tokens.size()));
    if (int64_t(analysed.size()) <= p.window)
        throw error("convert: the calibration text has " + std::to_string(analysed.size()) +
                    " tokens; it needs more than the recency window (" + std::to_string(p.window) + ")");

    // The retrieval probe's prompts, made first so that a bad size is refused before any work.
    std::vector<scored_prompt> probe_prompts;
    if (p.retrieval_probe_trials > 0) {
        if (m.file().path().empty()) throw error("convert: the retrieval probe needs the model loaded from a file");
        probe_prompts = passkey_scoring_prompts(m.vocab(), analysed, p.distill.seq_len, p.retrieval_probe_trials,
                                                retrieval_probe_seed);
        if (probe_prompts.empty())
            throw error("convert: the retrieval probe's passkey prompts of " + std::to_string(p.distill.seq_len) +
                        " tokens (the training sequence length, at most -c) leave no room for filler text");
    }
    recency_stats stats, copy_stats;
    const int32_t probe_spans = p.copy_probe_spans > 0 ? p.copy_probe_spans
                                : p.copy_limit < 1.0   ? copy_probe_spans_for_limit
                                                       : 0;
    {
        context_params cp;
        cp.n_ctx = int32_t(analysed.size());
        cp.n_threads = p.n_threads;
        cp.n_batch = p.n_batch;
        context ctx(m, cp);
        ctx.collect_recency(p.window);
        std::vector<float> logits;
        ctx.eval(analysed, logits, false, progress);
        stats = ctx.recency(); // a copy: the context (and its KV cache) goes before distillation
        if (probe_spans > 0) {
            // The copy probe (convert_params::copy_probe_spans): the same text with spans written
            // again beyond every window this conversion may give, so that only a head that
            // retrieves from far back can find the earlier copy.
            std::vector<int32_t> probe = analysed;
            // (The default sizes at the smallest fraction: the largest window the defaults give.)
            const int32_t min_gap = std::max(default_windows(hp, p.wr_window, 0).window_equal_wr, p.window_tokens);
            const auto spans = repeat_spans(probe, probe_spans, min_gap, copy_probe_seed);
            std::vector<key_range> targets(probe.size());
            for (const auto &sp : spans)
                for (int64_t j = 0; j + 1 < sp.len; ++j) {
                    // Position dst+j holds the copy of src+j; its induction target is src+j+1,
                    // valid while a later span has not overwritten either side.
                    const int64_t i = sp.dst + j, s0 = sp.src + j;
                    if (probe[size_t(i)] == probe[size_t(s0)] && probe[size_t(i + 1)] == probe[size_t(s0 + 1)])
                        targets[size_t(i)] = {int32_t(s0 + 1), int32_t(s0 + 2)};
                }
            ctx.truncate(0);
            ctx.collect_recency(p.window);
            ctx.set_copy_targets(std::move(targets));
            ctx.eval(probe, logits, false);
            copy_stats = ctx.recency();
        }
    }

    convert_result res;
    res.calib_tokens = int64_t(analysed.size());
    std::vector<double> recency, copy;
    std::vector<bool> outside_layers, exclude; // exclude: outside the layers, or a copying group
    for (int32_t l = 0; l < hp.n_layer; ++l)
        for (int32_t g = 0; g < hp.n_head_kv; ++g) {
            recency.push_back(stats.group_recency(l, g, hp.group_size()));
            outside_layers.push_back(l < p.first_layer || l > last_layer);
            exclude.push_back(outside_layers.back());
            if (probe_spans > 0) {
                copy.push_back(copy_stats.group_copy(l, g, hp.group_size()));
                exclude.back() = exclude.back() || copy.back() >= p.copy_limit;
            }
        }
    const bool automatic = p.automatic;
    // The fraction of groups the selection will replace: the one asked for, or what the threshold
    // takes (the retrieval probe can only lower that count). --wr-window's default depends on it.
    double planned_fraction = p.fraction;
    if (p.fraction < 0 && !recency.empty()) {
        const std::vector<bool> by_threshold = choose_groups(recency, -1, p.threshold, exclude);
        planned_fraction = double(std::count(by_threshold.begin(), by_threshold.end(), true)) / double(recency.size());
    }
    const default_window_sizes dw = default_windows(hp, p.wr_window, planned_fraction);
    // Cache rows per window group; S of them are sink rows, the rest the ring of recent tokens.
    const int32_t window_rows =
        p.window_tokens > 0 ? p.window_tokens : automatic ? dw.window_equal_wr : dw.window_equal_recurrent;
    const int32_t sinks = p.sinks;
    if (sinks < 0) throw error("convert: --sinks must not be negative");
    if ((automatic || p.kind == replacement_kind::window) && window_rows - sinks < 1)
        throw error("convert: " + std::to_string(sinks) + " sink rows leave no room for a window in " +
                    std::to_string(window_rows) + " rows (--window-tokens)");
    if ((automatic || p.kind == replacement_kind::window_recurrent) && dw.wr_window - sinks < 1)
        throw error("convert: " + std::to_string(sinks) + " sink rows leave no room for a window in " +
                    std::to_string(dw.wr_window) + " rows (--wr-window)");
    res.sizes = dw;
    res.window_rows = window_rows;
    const int32_t window_tokens = window_rows - sinks; // rings
    const int32_t wr_tokens = dw.wr_window - sinks;

    std::vector<double> retrieval_harm(recency.size(), -1.0);
    std::vector<bool> retrieval_excluded(recency.size(), false);
    if (p.retrieval_probe_trials > 0) {
        // The retrieval probe (convert_params::retrieval_probe_trials): candidates in the order
        // choose_groups takes them; each is windowed alone, the others stay attention.
        const auto t0 = std::chrono::steady_clock::now();
        const std::vector<scored_prompt> &prompts = probe_prompts;
        const size_t n = recency.size();
        std::vector<size_t> order(n);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return recency[a] > recency[b]; });
        size_t wanted = n;
        if (p.fraction >= 0 && p.threshold < 0 && p.fraction <= 1) wanted = size_t(std::llround(p.fraction * double(n)));
        // The probe's cost is not known in advance (a rejected group brings the next one); the
        // meter counts prompt tokens of the original plus the groups `wanted` asks for.
        int64_t prompt_tokens = 0;
        for (const auto &pp : prompts) prompt_tokens += int64_t(pp.prompt.size());
        phase_meter meter(distill_progress, "retrieval_probe", "retrieval probe", prompt_tokens * int64_t(1 + wanted));
        const std::vector<passkey_answer_score> base = score_prompts(m, prompts, p.n_threads, p.n_batch, meter);
        res.retrieval_probe_original_nll = 0;
        for (const auto &sc : base) res.retrieval_probe_original_nll += sc.nll / double(base.size());
        size_t accepted = 0;
        const int32_t probe_sinks = std::min(sinks, window_rows - 1);
        for (size_t oi = 0; oi < n && accepted < wanted; ++oi) {
            const size_t i = order[oi];
            if (exclude[i] || (p.threshold >= 0 && recency[i] < p.threshold)) continue;
            const int32_t l = int32_t(i) / hp.n_head_kv, grp = int32_t(i) % hp.n_head_kv;
            const std::unique_ptr<model> windowed =
                model::load_windowed(m.file().path(), {{l, grp, window_rows - probe_sinks, probe_sinks}});
            retrieval_harm[i] = mean_nll_increase(score_prompts(*windowed, prompts, p.n_threads, p.n_batch, meter), base);
            ++res.retrieval_probed_groups;
            if (retrieval_harm[i] >= p.retrieval_limit) {
                retrieval_excluded[i] = exclude[i] = true;
            } else {
                ++accepted;
            }
        }
        res.retrieval_probe_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const std::vector<bool> chosen = choose_groups(recency, p.fraction, p.threshold, exclude);
    const std::vector<bool> by_recency_only = choose_groups(recency, p.fraction, p.threshold, outside_layers);
    res.total_groups = int32_t(recency.size());

    const int g = hp.group_size(), hd = hp.head_dim, E = hp.n_embd;
    const size_t hh = size_t(hd) * hd;
    const float dt_bias = initial_dt_bias(p.window);
    if (!automatic && p.kind != replacement_kind::recurrent && p.kind != replacement_kind::window &&
        p.kind != replacement_kind::window_recurrent)
        throw error("convert: unknown replacement kind");
    if (!automatic && p.kind == replacement_kind::window && p.steps > 0)
        throw error("convert: window groups are exact attention and need no distillation (use --steps 0)");
    const bool any_window = automatic || p.kind != replacement_kind::recurrent;

    // Initial heads of the chosen groups as one kind (docs/FORMAT.md): recurrent heads from the
    // attention rows; window + recurrent ones the same but with v_proj = 0, so that untrained the
    // group is exactly its window.
    auto initial_layers = [&](replacement_kind k) {
        std::vector<hybrid_layer> layers(size_t(hp.n_layer));
        for (int32_t l = 0; l < hp.n_layer; ++l) {
            hybrid_layer &H = layers[size_t(l)];
            H.group_kind.assign(size_t(hp.n_head_kv), replacement_kind::recurrent);
            H.group_window.assign(size_t(hp.n_head_kv), 0);
            H.group_sinks.assign(size_t(hp.n_head_kv), 0);
            for (int32_t grp = 0; grp < hp.n_head_kv; ++grp)
                if (chosen[size_t(l) * hp.n_head_kv + grp] && k != replacement_kind::window) {
                    H.recurrent_groups.push_back(grp);
                    if (k == replacement_kind::window_recurrent) {
                        H.group_kind[size_t(grp)] = k;
                        H.group_window[size_t(grp)] = wr_tokens;
                        H.group_sinks[size_t(grp)] = sinks;
                    }
                }
            const size_t R = H.recurrent_groups.size() * size_t(g);
            H.dt_w.assign(R * E, 0.0f);
            H.dt_b.assign(R, dt_bias);
            H.a_log.assign(R, 0.0f);
            H.d.assign(R * hd, 0.0f);
            if (k == replacement_kind::window_recurrent && R > 0) {
                H.q_proj.assign(R * hh, 0.0f);
                H.k_proj.assign(R * hh, 0.0f);
                H.v_proj.assign(R * hh, 0.0f);
                for (size_t r = 0; r < R; ++r)
                    for (int i = 0; i < hd; ++i) H.q_proj[r * hh + size_t(i) * hd + i] = H.k_proj[r * hh + size_t(i) * hd + i] = 1.0f;
            }
        }
        return layers;
    };

    distill_params dp = p.distill;
    dp.steps = p.steps;
    dp.n_threads = p.n_threads;
    dp.n_batch = p.n_batch;
    if (automatic) {
        // Sequences distill will cut (each after the first gains a BOS when the text starts with one).
        const int64_t n_seq = (int64_t(calib_tokens.size()) + dp.seq_len - 2) / std::max(1, dp.seq_len - 1);
        dp.holdout_sequences = p.holdout_sequences > 0 ? p.holdout_sequences : int32_t(std::max<int64_t>(1, n_seq / 8));
        if (n_seq < 2)
            throw error("convert: --kind auto holds out calibration sequences to compare the kinds on; give at least "
                        "two sequences of text (more than " + std::to_string(dp.seq_len) + " tokens)");
    }
    // Run A: recurrent heads (forced recurrent, or auto, which also measures the plain window);
    // run B: window + recurrent heads.
    std::vector<hybrid_layer> rec_layers, wr_layers;
    distill_report rep_rec, rep_wr;
    const bool want_rec = automatic || p.kind == replacement_kind::recurrent;
    const bool want_wr = automatic || p.kind == replacement_kind::window_recurrent;
    if (want_rec) {
        rec_layers = initial_layers(replacement_kind::recurrent);
        if (p.steps > 0 || automatic) {
            distill_params d = dp;
            if (automatic) d.compare_window = window_tokens, d.compare_sinks = sinks;
            if (automatic && !d.checkpoint_path.empty()) {
                d.checkpoint_path += ".recurrent";
                d.resume = d.resume && std::ifstream(d.checkpoint_path).good(); // interrupted before it began
            }
            rep_rec = distill_heads(m, calib_tokens, rec_layers, d, distill_progress);
        }
    }
    if (want_wr) {
        wr_layers = initial_layers(replacement_kind::window_recurrent);
        if (p.steps > 0 || automatic) {
            distill_params d = dp;
            // Untrained, a window + recurrent group stays exactly its window (additive, v_proj = 0).
            if (p.steps == 0) d.wr_gated = false;
            if (automatic && !d.checkpoint_path.empty()) {
                d.checkpoint_path += ".winrec";
                d.resume = d.resume && std::ifstream(d.checkpoint_path).good();
            }
            rep_wr = distill_heads(m, calib_tokens, wr_layers, d, distill_progress);
        }
    }

    // Per group: its kind and the held-out losses of the candidates.
    for (int32_t l = 0; l < hp.n_layer; ++l)
        for (int32_t grp = 0; grp < hp.n_head_kv; ++grp) {
            const size_t i = size_t(l) * hp.n_head_kv + grp;
            group_choice c;
            c.layer = l, c.group = grp, c.recency = recency[i], c.replaced = chosen[i];
            if (!copy.empty()) c.copy = copy[i], c.copy_excluded = by_recency_only[i] && !chosen[i] && copy[i] >= p.copy_limit;
            c.retrieval = retrieval_harm[i], c.retrieval_excluded = retrieval_excluded[i];
            if (c.replaced) {
                c.kind = automatic ? replacement_kind::recurrent : p.kind;
                if (automatic) {
                    double loss[3] = {0, 0, 0}, err[3] = {0, 0, 0}, tgt = 0;
                    for (auto &h : rep_rec.heads)
                        if (h.layer == l && h.group == grp) {
                            loss[0] += h.heldout_metric_loss, err[0] += h.heldout_loss;
                            loss[1] += h.window_heldout_metric_loss, err[1] += h.window_heldout_loss;
                            tgt += h.heldout_target;
                        }
                    for (auto &h : rep_wr.heads)
                        if (h.layer == l && h.group == grp) loss[2] += h.heldout_metric_loss, err[2] += h.heldout_loss;
                    int best = 0;
                    for (int k = 1; k < 3; ++k)
                        if (loss[k] < loss[best]) best = k; // ties keep the smaller memory (recurrent)
                    c.kind = replacement_kind(best);
                    for (int k = 0; k < 3; ++k) c.loss[k] = loss[k], c.rel[k] = tgt > 0 ? err[k] / tgt : 0;
                }
                c.window = c.kind == replacement_kind::window ? window_tokens
                           : c.kind == replacement_kind::window_recurrent ? wr_tokens : 0;
                c.sinks = c.kind == replacement_kind::recurrent ? 0 : sinks;
            }
            res.groups.push_back(c);
        }

    // Writes a hybrid whose replaced groups have the kinds `kind_of(layer, group)`; the heads of
    // recurrent and window + recurrent groups come from rec_layers / wr_layers.
    // Window groups get rings of win_ring rows and win_sinks sink rows (the chosen sizes, or for
    // the no-sinks candidate all rows as ring).
    auto write_hybrid = [&](const std::string &path, const std::function<replacement_kind(const group_choice &)> &kind_of,
                            const std::string &kind_name, bool with_candidates, int32_t win_ring, int32_t win_sinks) {
        gguf_writer w;
        w.copy_metadata(m.file());
        w.set_uint32("recurformer.version", 1);
        w.set_uint32("recurformer.window", uint32_t(p.window));
        w.set_string("recurformer.selection", p.threshold >= 0 ? "threshold:" + std::to_string(p.threshold)
                                                                : "fraction:" + std::to_string(p.fraction));
        w.set_string("recurformer.kind", kind_name);
        if (p.distill.delta_rule) w.set_string("recurformer.read_out", "delta"); // absent: additive
        if (any_window) w.set_uint32("recurformer.sinks", uint32_t(sinks)); // what --sinks asked for (informational)
        w.set_uint32("recurformer.calibration_tokens", uint32_t(analysed.size()));
        w.set_uint32("recurformer.distillation_steps", uint32_t(p.steps));
        const distill_report &any = rep_rec.calib_tokens > 0 ? rep_rec : rep_wr;
        if (p.steps > 0 && any.calib_tokens > 0) w.set_uint32("recurformer.distillation_tokens", uint32_t(any.calib_tokens));
        if (p.steps > 0 && any.calib_tokens > 0 && p.distill.repeat_spans > 0)
            w.set_uint32("recurformer.distillation_repeat_spans", uint32_t(p.distill.repeat_spans));
        if (p.steps > 0 && any.calib_tokens > 0 && p.distill.drills > 0) {
            w.set_uint32("recurformer.distillation_drills", uint32_t(p.distill.drills));
            w.set_float32("recurformer.distillation_drill_weight", p.distill.drill_weight);
        }
        if (with_candidates) w.set_uint32("recurformer.heldout_tokens", uint32_t(any.heldout_tokens));
        // Unreplaced tensors are copied bit for bit from the mapped original.
        for (auto &t : m.file().tensors()) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
        for (int32_t l = 0; l < hp.n_layer; ++l) {
            std::vector<int32_t> replaced, kinds, windows, group_sinks;
            std::vector<float> layer_recency, chosen_loss, candidate_loss;
            hybrid_layer out;
            bool trained_proj = false, any_loss = false;
            std::vector<std::pair<const hybrid_layer *, int32_t>> src; // per output head: layer, r
            for (int32_t grp = 0; grp < hp.n_head_kv; ++grp) {
                const group_choice &c = res.groups[size_t(l) * hp.n_head_kv + grp];
                layer_recency.push_back(float(c.recency));
                if (!c.replaced) continue;
                const replacement_kind k = kind_of(c);
                replaced.push_back(grp);
                kinds.push_back(int32_t(k));
                windows.push_back(k == replacement_kind::window ? win_ring
                                  : k == replacement_kind::window_recurrent ? wr_tokens : 0);
                group_sinks.push_back(k == replacement_kind::recurrent ? 0 : k == replacement_kind::window ? win_sinks : sinks);
                if (with_candidates) {
                    chosen_loss.push_back(float(c.rel[int(k)]));
                    for (int j = 0; j < 3; ++j) candidate_loss.push_back(float(c.rel[j]));
                }
                if (k == replacement_kind::window) continue;
                const hybrid_layer &S = (k == replacement_kind::recurrent ? rec_layers : wr_layers)[size_t(l)];
                const int32_t gi = int32_t(std::find(S.recurrent_groups.begin(), S.recurrent_groups.end(), grp) -
                                           S.recurrent_groups.begin());
                for (int j = 0; j < g; ++j) src.push_back({&S, gi * g + j});
                trained_proj = trained_proj || !S.q_proj.empty();
                any_loss = any_loss || !S.final_loss.empty();
            }
            const std::string key = "recurformer.blk." + std::to_string(l) + ".";
            w.set_int32_array(key + "replaced_groups", replaced);
            w.set_float32_array(key + "group_recency", layer_recency);
            if (replaced.empty()) continue;
            w.set_int32_array(key + "group_kinds", kinds);
            w.set_int32_array(key + "group_windows", windows);
            // Only when some group has sinks: a file without the key reads as no sinks.
            if (std::any_of(group_sinks.begin(), group_sinks.end(), [](int32_t v) { return v > 0; }))
                w.set_int32_array(key + "group_sinks", group_sinks);
            if (with_candidates) {
                w.set_float32_array(key + "group_loss", chosen_loss);
                w.set_float32_array(key + "candidate_loss", candidate_loss);
            }
            if (src.empty()) continue; // window groups use the layer's own attention rows: no tensors
            const int64_t R = int64_t(src.size());
            std::vector<float> q_proj, k_proj, v_proj, final_loss, gate_w, gate_b, gate_n, a_chan;
            const bool gated = std::any_of(src.begin(), src.end(), [](const auto &sr) { return !sr.first->gate_b.empty(); });
            const bool per_channel =
                std::any_of(src.begin(), src.end(), [](const auto &sr) { return !sr.first->a_chan.empty(); });
            for (auto &[S, r] : src) {
                out.dt_w.insert(out.dt_w.end(), S->dt_w.begin() + int64_t(r) * E, S->dt_w.begin() + int64_t(r + 1) * E);
                out.dt_b.push_back(S->dt_b[size_t(r)]);
                out.a_log.push_back(S->a_log[size_t(r)]);
                out.d.insert(out.d.end(), S->d.begin() + int64_t(r) * hd, S->d.begin() + int64_t(r + 1) * hd);
                const std::vector<float> *from[3] = {&S->q_proj, &S->k_proj, &S->v_proj};
                std::vector<float> *to[3] = {&q_proj, &k_proj, &v_proj};
                for (int j = 0; j < 3; ++j) {
                    if (from[j]->empty()) { // identity
                        std::vector<float> id(hh, 0.0f);
                        for (int i = 0; i < hd; ++i) id[size_t(i) * hd + i] = 1.0f;
                        to[j]->insert(to[j]->end(), id.begin(), id.end());
                    } else {
                        to[j]->insert(to[j]->end(), from[j]->begin() + int64_t(r) * int64_t(hh),
                                      from[j]->begin() + int64_t(r + 1) * int64_t(hh));
                    }
                }
                final_loss.push_back(S->final_loss.empty() ? 0.0f : S->final_loss[size_t(r)]);
                if (gated) { // rows of heads without a gate (plain recurrent groups) are unused: zeros
                    const bool has = !S->gate_b.empty();
                    for (int i = 0; i < E; ++i) gate_w.push_back(has ? S->gate_w[size_t(r) * E + size_t(i)] : 0.0f);
                    gate_b.push_back(has ? S->gate_b[size_t(r)] : 0.0f);
                    gate_n.push_back(has ? S->gate_n[size_t(r)] : 0.0f);
                }
                if (per_channel) // heads trained without offsets decay as one: zeros
                    for (int i = 0; i < hd; ++i)
                        a_chan.push_back(S->a_chan.empty() ? 0.0f : S->a_chan[size_t(r) * hd + size_t(i)]);
            }
            auto f32_bytes = [](const std::vector<float> &v) {
                std::vector<uint8_t> b(v.size() * sizeof(float));
                std::memcpy(b.data(), v.data(), b.size());
                return b;
            };
            const std::string t = "blk." + std::to_string(l) + ".rec.";
            w.add_tensor(t + "dt_w", tensor_type::F32, {E, R}, f32_bytes(out.dt_w));
            w.add_tensor(t + "dt_b", tensor_type::F32, {R}, f32_bytes(out.dt_b));
            w.add_tensor(t + "a_log", tensor_type::F32, {R}, f32_bytes(out.a_log));
            w.add_tensor(t + "d", tensor_type::F32, {hd, R}, f32_bytes(out.d));
            if (trained_proj) {
                w.add_tensor(t + "q_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(q_proj));
                w.add_tensor(t + "k_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(k_proj));
                w.add_tensor(t + "v_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(v_proj));
            }
            if (gated) {
                w.add_tensor(t + "gate_w", tensor_type::F32, {E, R}, f32_bytes(gate_w));
                w.add_tensor(t + "gate_b", tensor_type::F32, {R}, f32_bytes(gate_b));
                w.add_tensor(t + "gate_n", tensor_type::F32, {R}, f32_bytes(gate_n));
            }
            if (per_channel) w.add_tensor(t + "a_chan", tensor_type::F32, {hd, R}, f32_bytes(a_chan));
            if (any_loss) w.set_float32_array(key + "final_loss", final_loss);
        }
        w.write(path);
    };

    static const char *kind_names[3] = {"recurrent", "window", "window+recurrent"};
    write_hybrid(out_path, [](const group_choice &c) { return c.kind; },
                 automatic ? "auto" : kind_names[int(p.kind)], automatic, window_tokens, sinks);
    const bool mix_has_trained = std::any_of(res.groups.begin(), res.groups.end(), [](const group_choice &c) {
        return c.replaced && c.kind != replacement_kind::window;
    });
    // The end-to-end candidates besides the mix. Window candidates are served untrained (their
    // rings of `ring` rows after `sink_rows` sinks); winrec takes every replaced group's window +
    // recurrent head as trained.
    struct candidate {
        std::string path, name;
        replacement_kind kind;
        int32_t ring, sink_rows;
    };
    std::vector<candidate> cands;
    // OUT without its .gguf: --write-candidates names its extra files after it.
    const std::string out_base = out_path.size() > 5 && out_path.compare(out_path.size() - 5, 5, ".gguf") == 0
                                     ? out_path.substr(0, out_path.size() - 5)
                                     : out_path;
    const bool mix_is_all_wr = std::all_of(res.groups.begin(), res.groups.end(), [](const group_choice &c) {
        return !c.replaced || c.kind == replacement_kind::window_recurrent;
    });
    if (automatic && p.compare_end_to_end) {
        if (!mix_is_all_wr)
            cands.push_back({out_path + ".winrec.part", "winrec", replacement_kind::window_recurrent, window_tokens, sinks});
        if (mix_has_trained)
            cands.push_back({out_path + ".window.part", "window", replacement_kind::window, window_tokens, sinks});
        if (p.try_without_sinks && sinks > 0)
            cands.push_back({out_path + ".nosinks.part", "window_no_sinks", replacement_kind::window, window_rows, 0});
    }
    const bool any_replaced = std::any_of(chosen.begin(), chosen.end(), [](bool c) { return c; });
    if (!cands.empty() && any_replaced) {
        const auto t0 = std::chrono::steady_clock::now();
        end_to_end_choice &e2e = res.end_to_end;
        auto remove_all = [&] {
            for (auto &c : cands) std::remove(c.path.c_str());
        };
        auto rename_or_abandon = [&](const std::string &from, const std::string &to) {
            if (std::rename(from.c_str(), to.c_str()) == 0) return;
            const int err = errno;
            remove_all();
            throw error("convert: cannot rename '" + from + "' to '" + to + "': " + std::strerror(err));
        };
        // A check that fails or is cancelled leaves no output: the file at out_path holds a choice
        // not yet made. (The distillation checkpoints stay, at their last step: --resume
        // captures again but does not train again.)
        auto abandon = [&] {
            remove_all();
            std::remove(out_path.c_str());
        };
        // Index 0: the mix at out_path; i > 0: cands[i - 1].
        auto path_of = [&](size_t i) { return i == 0 ? out_path : cands[i - 1].path; };
        auto name_of = [&](size_t i) { return i == 0 ? std::string("mix") : cands[i - 1].name; };
        std::vector<double> kl;
        std::vector<std::unique_ptr<model>> loaded; // [mix, cands...]: for the KL and the retrieval check
        try {
            for (auto &c : cands) {
                const replacement_kind k = c.kind;
                write_hybrid(c.path, [k](const group_choice &) { return k; }, "auto", automatic, c.ring, c.sink_rows);
            }
            // The held-out sequences, cut exactly as distill_heads cut them.
            std::vector<std::vector<int32_t>> held = calibration_sequences(m, calib_tokens, dp.seq_len);
            held.erase(held.begin(), held.end() - int64_t(std::min(held.size(), size_t(std::max(1, dp.holdout_sequences)))));
            std::vector<const model *> hybrids;
            for (size_t i = 0; i <= cands.size(); ++i) loaded.push_back(model::load(path_of(i)));
            for (auto &h : loaded) hybrids.push_back(h.get());
            const auto r = mean_kl(m, hybrids, held, p.n_threads, p.n_batch, distill_progress);
            kl = r.first;
            e2e.positions = r.second;
        } catch (...) {
            abandon();
            throw;
        }
        e2e.measured = true;
        for (size_t i = 0; i < kl.size(); ++i) e2e.candidates.push_back({name_of(i), kl[i], -1, -1, -1});
        size_t best = 0; // by KL alone (a tie keeps the earlier), unless the retrieval check runs
        for (size_t i = 1; i < kl.size(); ++i)
            if (kl[i] < kl[best]) best = i;
        // The retrieval check (retrieval_choice): the original and every candidate on the same
        // passkey prompts.
        try {
            const std::vector<scored_prompt> prompts =
                passkey_scoring_prompts(m.vocab(), calib_tokens, dp.seq_len, retrieval_trials, retrieval_seed);
            if (!prompts.empty()) {
                phase_meter meter(distill_progress, "retrieval", "retrieval check",
                                  int64_t(1 + kl.size()) * int64_t(prompts.size()) * dp.seq_len);
                const std::vector<passkey_answer_score> original = score_prompts(m, prompts, p.n_threads, p.n_batch, meter);
                const size_t n = prompts.size();
                e2e.retrieval_trials = int32_t(n);
                e2e.retrieval_original = 0;
                e2e.retrieval_original_nll = 0;
                for (const auto &o : original) e2e.retrieval_original += o.top1, e2e.retrieval_original_nll += o.nll / double(n);
                std::vector<double> nll;
                for (size_t i = 0; i < kl.size(); ++i) {
                    const std::vector<passkey_answer_score> sc = score_prompts(*loaded[i], prompts, p.n_threads, p.n_batch, meter);
                    end_to_end_candidate &c = e2e.candidates[i];
                    c.retrieval_nll = 0, c.retrieval_found = c.retrieval_lost = 0;
                    for (size_t t = 0; t < n; ++t) {
                        c.retrieval_nll += sc[t].nll / double(n);
                        c.retrieval_found += sc[t].top1;
                        c.retrieval_lost += original[t].top1 && !sc[t].top1;
                    }
                    nll.push_back(c.retrieval_nll);
                }
                best = retrieval_choice(e2e.retrieval_original_nll, e2e.retrieval_original, kl, nll);
            }
        } catch (...) {
            abandon();
            throw;
        }
        loaded.clear(); // the files are renamed and removed below
        if (best > 0) {
            const candidate &c = cands[best - 1];
            // With --write-candidates the rejected per-group mix is kept for measurement.
            if (p.write_candidates) rename_or_abandon(out_path, out_base + "-mix.gguf");
            rename_or_abandon(c.path, out_path);
            e2e.kept = c.name;
            for (auto &gc : res.groups)
                if (gc.replaced) {
                    gc.kind = c.kind;
                    gc.window = c.kind == replacement_kind::window ? c.ring : wr_tokens;
                    gc.sinks = c.kind == replacement_kind::window ? c.sink_rows : sinks;
                }
        }
        remove_all();
        e2e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (automatic && p.write_candidates) {
        write_hybrid(out_base + "-recurrent.gguf", [](const group_choice &) { return replacement_kind::recurrent; },
                     "recurrent", true, window_tokens, sinks);
        write_hybrid(out_base + "-winrec.gguf", [](const group_choice &) { return replacement_kind::window_recurrent; },
                     "window+recurrent", true, window_tokens, sinks);
    }

    // The report: for auto, the heads of the kind each group got (timings of both runs).
    res.distill = want_rec && rep_rec.calib_tokens > 0 ? rep_rec : rep_wr;
    if (automatic) {
        res.distill.heads.clear();
        res.distill.capture_seconds = rep_rec.capture_seconds + rep_wr.capture_seconds;
        res.distill.train_seconds = rep_rec.train_seconds + rep_wr.train_seconds;
        res.distill.evaluate_seconds = rep_rec.evaluate_seconds + rep_wr.evaluate_seconds;
        res.distill.capture_file_bytes = std::max(rep_rec.capture_file_bytes, rep_wr.capture_file_bytes);
        res.distill.train_state_bytes = std::max(rep_rec.train_state_bytes, rep_wr.train_state_bytes);
        for (auto &c : res.groups) {
            if (!c.replaced || c.kind == replacement_kind::window) continue;
            for (auto &h : (c.kind == replacement_kind::recurrent ? rep_rec : rep_wr).heads)
                if (h.layer == c.layer && h.group == c.group) res.distill.heads.push_back(h);
        }
    }
    for (auto &c : res.groups) res.replaced_groups += c.replaced ? 1 : 0;
    res.kv_fraction_kept = 1.0 - double(res.replaced_groups) / double(res.total_groups);
    if (!p.distill.checkpoint_path.empty()) {
        if (p.steps > 0 && !automatic) std::remove(p.distill.checkpoint_path.c_str());
        if (automatic) {
            std::remove((p.distill.checkpoint_path + ".recurrent").c_str());
            std::remove((p.distill.checkpoint_path + ".winrec").c_str());
        }
    }
    return res;
}

} // namespace recur
