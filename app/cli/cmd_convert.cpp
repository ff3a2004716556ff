// recur convert: choose recency-aware KV groups, distil their recurrent heads, and write a hybrid
// GGUF (DESIGN §3, §5; docs/FORMAT.md "Distillation").
#include "cmd_convert.h"

#include "cli_common.h"
#include "core/conversion.h"

#include "recur/convert.h"
#include "recur/distill.h"
#include "recur/sampling.h"
#include "recur/tokenizer.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

using namespace recur;

namespace recur_cli {

namespace {

// Ctrl-C during distillation: stop at the next block boundary, write the checkpoint, exit 1 with
// a message saying how to resume. A second Ctrl-C kills at once (the default handler is back).
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
    g_interrupted = true;
    std::signal(SIGINT, SIG_DFL);
}

// Copy drills per training sequence (distill_params::repeat_spans); chosen by measurement,
// docs/quality.md.
constexpr int default_repeat_spans = 0;
// Retrieval drills (distill_params::drills, drill_weight): extra training sequences that ask for
// a fact far back, their answer positions weighted; off unless asked for (docs/quality.md).
constexpr int default_drills = 0;
constexpr float default_drill_weight = 50.0f;
// The copy probe (convert_params::copy_probe_spans, copy_limit): off unless asked for. Measured on
// SmolLM2-135M and stories260K (docs/quality.md): the groups recency picks score <= 0.007 while
// induction heads score 0.03-0.36, so excluding them changed nothing at 25%; --copy-probe N
// reports every group's score, --copy-limit X keeps groups scoring X or more whole (and probes
// with copy_probe_spans_for_limit spans when --copy-probe is not given).
constexpr int default_copy_probe_spans = 0;
constexpr double default_copy_limit = 1.0;
// The retrieval probe (convert_params::retrieval_probe_trials, retrieval_limit).
constexpr int default_retrieval_probe = 0;
constexpr double default_retrieval_limit = 1e30;

// The progress line's name for a phase of distill_progress.
const char *phase_label(const char *phase) {
    const std::string p = phase;
    if (p == "compare") return "end-to-end KL";
    if (p == "retrieval") return "retrieval check";
    if (p == "retrieval_probe") return "retrieval probe";
    return phase; // capture, evaluate
}

std::string fmt_duration(double s) {
    char buf[32];
    if (s >= 60)
        snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
    else
        snprintf(buf, sizeof buf, "%.0fs", s);
    return buf;
}

} // namespace

// Chooses recency-aware KV groups on calibration text and writes a hybrid GGUF (DESIGN §3).
int cmd_convert(const options &o) {
    auto m = load_model(o);
    if (o.file.empty() && o.calib_self == 0)
        throw error("convert needs calibration text (-f FILE) or --calib-self N");
    if (o.output_path.empty()) throw error("convert needs an output file (-o OUT.gguf)");
    // The default conversion (core/conversion.h, also the app's), then the options.
    convert_params cp = recur_app::default_conversion(*m, o.fraction, o.output_path, o.n_threads);
    const uint64_t seed = o.sampling.seed == random_seed ? cp.distill.seed : o.sampling.seed;
    cp.window = o.window;
    cp.threshold = o.threshold;
    cp.n_batch = o.n_batch;
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : recur_app::default_analysis_tokens(*m);
    cp.analysis_tokens = n_ctx;
    cp.window_tokens = o.window_tokens;
    cp.wr_window = o.wr_window;
    cp.write_candidates = o.write_candidates;
    cp.compare_end_to_end = !o.per_group_only;
    cp.distill.wr_gated = !o.wr_additive;
    cp.distill.delta_rule = o.delta_rule;
    cp.distill.per_channel_decay = o.per_channel_decay;
    cp.distill.repeat_spans = o.repeat_spans >= 0 ? o.repeat_spans : default_repeat_spans;
    cp.distill.drills = o.drills >= 0 ? o.drills : default_drills;
    cp.distill.drill_weight = o.drill_weight > 0 ? o.drill_weight : default_drill_weight;
    cp.copy_probe_spans = o.copy_probe >= 0 ? o.copy_probe : default_copy_probe_spans;
    cp.copy_limit = o.copy_limit >= 0 ? o.copy_limit : default_copy_limit;
    cp.retrieval_probe_trials = o.retrieval_probe >= 0 ? o.retrieval_probe : default_retrieval_probe;
    cp.retrieval_limit = o.retrieval_limit >= 0 ? o.retrieval_limit : default_retrieval_limit;
    cp.first_layer = o.first_layer;
    cp.last_layer = o.last_layer;
    if (o.window_tokens < 0 || o.wr_window < 0) throw error("--window-tokens and --wr-window must not be negative");
    if (o.sinks < -1) throw error("--sinks must not be negative");
    if (o.sinks >= 0) cp.sinks = o.sinks;
    cp.try_without_sinks = o.sinks < 0; // the default, not the user's: the held-out text may overrule it
    cp.automatic = o.kind == "auto";
    if (o.kind == "recurrent") cp.kind = replacement_kind::recurrent;
    else if (o.kind == "window") cp.kind = replacement_kind::window;
    else if (o.kind == "window+recurrent" || o.kind == "window_recurrent") cp.kind = replacement_kind::window_recurrent;
    else if (!cp.automatic) throw error("--kind must be auto, recurrent, window or window+recurrent");
    if (o.write_candidates && !cp.automatic) throw error("--write-candidates needs --kind auto");
    if (o.per_group_only && !cp.automatic) throw error("--per-group-only needs --kind auto");
    if (cp.kind == replacement_kind::window && !cp.automatic) {
        if (o.steps_given && o.steps > 0) throw error("--kind window needs no distillation; drop --steps");
        cp.steps = 0;
    } else if (o.steps_given) {
        cp.steps = o.steps;
    } // else default_conversion's fixed-time default
    cp.distill.lr = o.lr;
    cp.distill.seed = seed;
    cp.distill.seq_len = std::min(1024, n_ctx);
    cp.distill.resume = o.resume;
    // --kind auto trains twice, checkpointing to OUT.ckpt.recurrent and OUT.ckpt.winrec.
    auto checkpoint_exists = [&] {
        const std::string &c = cp.distill.checkpoint_path;
        return std::ifstream(c).good() ||
               (cp.automatic && (std::ifstream(c + ".recurrent").good() || std::ifstream(c + ".winrec").good()));
    };
    if (o.resume && !checkpoint_exists()) throw error("--resume: no checkpoint " + cp.distill.checkpoint_path);

    auto t0 = clock_type::now();
    std::vector<int32_t> ids;
    if (o.calib_self > 0) {
        ids = sample_calibration(*m, o.calib_self, cp.distill.seq_len, seed, o.n_threads, [&](int64_t done, int64_t total) {
            if (!o.json && (done % 64 == 0 || done == total))
                fprintf(stderr, "\rsampling calibration text %lld/%lld tokens", (long long)done, (long long)total);
            return !g_interrupted.load();
        });
        if (!o.json) fprintf(stderr, "\n");
    } else {
        // Analysis reads the first n_ctx tokens; distillation up to --calib-tokens.
        ids = recur_app::calibration_tokens(*m, read_file(o.file), !o.no_bos, cp, o.calib_tokens);
    }

    std::signal(SIGINT, on_sigint);
    auto last_print = clock_type::now();
    convert_result r;
    try {
        r = convert_to_hybrid(
            *m, ids, cp, o.output_path,
            [&](int64_t done, int64_t total) {
                if (!o.json) fprintf(stderr, "\rcalibrating %lld/%lld tokens", (long long)done, (long long)total);
                return !g_interrupted.load();
            },
            [&](const distill_progress &pr) {
                const bool last = pr.done == pr.total;
                if (!o.json && (last || seconds_since(last_print) >= 0.5)) {
                    last_print = clock_type::now();
                    if (std::string(pr.phase) == "train")
                        fprintf(stderr, "\rdistil step %lld/%lld  %.0f tok/s  loss %.4f  ETA %s     ",
                                (long long)pr.done, (long long)pr.total, pr.tokens_per_s, pr.rel_loss,
                                fmt_duration(pr.eta_s).c_str());
                    else
                        fprintf(stderr, "\r%s %lld/%lld tokens  %.0f tok/s  ETA %s     ", phase_label(pr.phase),
                                (long long)pr.done, (long long)pr.total, pr.tokens_per_s,
                                fmt_duration(pr.eta_s).c_str());
                    if (last) fprintf(stderr, "\n");
                }
                return !g_interrupted.load();
            });
    } catch (const cancelled_error &e) {
        std::signal(SIGINT, SIG_DFL);
        if (!o.json) fprintf(stderr, "\n");
        const bool can_resume = cp.steps > 0 && checkpoint_exists();
        throw error(std::string("interrupted: ") + e.what() +
                    (can_resume ? "; run the same command with --resume to continue" : ""));
    }
    std::signal(SIGINT, SIG_DFL);
    if (!o.json) fprintf(stderr, "\n");
    const distill_report &d = r.distill;
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("output", o.output_path).field("replaced_groups", int64_t(r.replaced_groups));
        j.field("total_groups", int64_t(r.total_groups)).field("kv_fraction_kept", r.kv_fraction_kept);
        j.field("calib_tokens", int64_t(r.calib_tokens)).field("steps", int64_t(cp.steps));
        if (r.end_to_end.measured) {
            j.key("end_to_end").begin_object();
            const end_to_end_choice &e = r.end_to_end;
            for (const end_to_end_candidate &c : e.candidates) j.field(c.name + "_kl", c.kl);
            j.field("positions", e.positions).field("kept", e.kept);
            if (e.retrieval_trials > 0) {
                j.field("retrieval_trials", int64_t(e.retrieval_trials));
                j.field("retrieval_original", int64_t(e.retrieval_original));
                j.field("retrieval_original_nll", e.retrieval_original_nll);
            }
            j.key("candidates").begin_array();
            for (const end_to_end_candidate &c : e.candidates) {
                j.begin_object().field("name", c.name).field("kl", c.kl);
                if (e.retrieval_trials > 0) {
                    j.field("retrieval_nll", c.retrieval_nll).field("retrieval_found", int64_t(c.retrieval_found));
                    j.field("retrieval_lost", int64_t(c.retrieval_lost));
                }
                j.end_object();
            }
            j.end_array();
            j.field("seconds", r.end_to_end.seconds);
            j.end_object();
        }
        std::vector<double> final_loss, initial_loss, final_rel, initial_rel;
        for (auto &h : d.heads) {
            final_loss.push_back(h.final_loss);
            initial_loss.push_back(h.initial_loss);
            final_rel.push_back(h.final_rel);
            initial_rel.push_back(h.initial_rel);
        }
        j.array("final_loss", final_loss);
        if (cp.steps > 0) {
            j.array("initial_loss", initial_loss);
            j.array("final_loss_relative", final_rel);
            j.array("initial_loss_relative", initial_rel);
            j.key("distillation").begin_object();
            j.field("tokens", int64_t(d.calib_tokens)).field("sequences", int64_t(d.n_sequences));
            j.field("trained_tokens", int64_t(d.trained_tokens)).field("resumed_from_step", int64_t(d.resumed_from_step));
            j.field("lr", double(cp.distill.lr > 0 ? cp.distill.lr : distill_params::default_lr));
            j.field("seed", uint64_t(seed));
            j.field("repeat_spans", int64_t(cp.distill.repeat_spans));
            j.field("drills", int64_t(cp.distill.drills)).field("drill_weight", double(cp.distill.drill_weight));
            j.field("capture_seconds", d.capture_seconds).field("train_seconds", d.train_seconds);
            j.field("evaluate_seconds", d.evaluate_seconds);
            j.field("capture_file_bytes", uint64_t(d.capture_file_bytes));
            j.field("train_state_bytes", uint64_t(d.train_state_bytes));
            j.field("self_sampled", o.calib_self > 0);
            j.end_object();
        }
        j.field("seconds", seconds_since(t0));
        j.field("peak_rss_bytes", uint64_t(peak_rss_bytes()));
        static const char *kind_names[3] = {"recurrent", "window", "window+recurrent"};
        j.field("kind", cp.automatic ? std::string("auto") : std::string(kind_names[int(cp.kind)]));
        {
            // Cache rows per group (sinks included) and their bytes; the rings hold rows - sinks.
            const default_window_sizes &dw = r.sizes;
            const int32_t win = r.window_rows;
            // The sinks the written file has (auto may have dropped the default ones end to end).
            const size_t sinks = (cp.kind == replacement_kind::recurrent && !cp.automatic) || r.end_to_end.kept == "window_no_sinks"
                                     ? 0 : size_t(cp.sinks);
            j.key("group_bytes").begin_object();
            j.field("recurrent", uint64_t(dw.recurrent_bytes));
            j.field("window", uint64_t(size_t(win) * 2 * size_t(m->hparams().head_dim) * 2));
            // the dt ring covers the ring only, not the sink rows
            j.field("window_recurrent", uint64_t(dw.wr_bytes - sinks * size_t(m->hparams().group_size()) * sizeof(float)));
            j.end_object();
            j.field("window_tokens", int64_t(win)).field("wr_window_tokens", int64_t(dw.wr_window));
            j.field("sinks", int64_t(sinks));
        }
        if (!r.groups.empty() && r.groups[0].copy >= 0) {
            // Every group's copy score (layer-major), and the groups kept for theirs.
            std::vector<double> copies;
            for (auto &g : r.groups) copies.push_back(g.copy);
            j.field("copy_limit", cp.copy_limit);
            j.array("group_copy", copies);
            j.key("copy_excluded").begin_array();
            for (auto &g : r.groups)
                if (g.copy_excluded)
                    j.begin_object().field("layer", int64_t(g.layer)).field("group", int64_t(g.group))
                        .field("recency", g.recency).field("copy", g.copy).end_object();
            j.end_array();
        }
        if (r.retrieval_probed_groups > 0) {
            // Every group's retrieval harm (layer-major, -1 where not probed), and the groups kept for theirs.
            std::vector<double> harms;
            for (auto &g : r.groups) harms.push_back(g.retrieval);
            j.key("retrieval_probe").begin_object();
            j.field("trials", int64_t(cp.retrieval_probe_trials)).field("limit", cp.retrieval_limit);
            j.field("original_nll", r.retrieval_probe_original_nll);
            j.field("probed_groups", int64_t(r.retrieval_probed_groups)).field("seconds", r.retrieval_probe_seconds);
            j.end_object();
            j.array("group_retrieval", harms);
            j.key("retrieval_excluded").begin_array();
            for (auto &g : r.groups)
                if (g.retrieval_excluded)
                    j.begin_object().field("layer", int64_t(g.layer)).field("group", int64_t(g.group))
                        .field("recency", g.recency).field("retrieval", g.retrieval).end_object();
            j.end_array();
        }
        int64_t n_kind[3] = {0, 0, 0};
        for (auto &g : r.groups)
            if (g.replaced) ++n_kind[int(g.kind)];
        j.key("kinds").begin_object();
        for (int k = 0; k < 3; ++k) j.field(kind_names[k], n_kind[k]);
        j.end_object();
        j.key("groups").begin_array();
        for (auto &g : r.groups)
            if (g.replaced) {
                j.begin_object().field("layer", int64_t(g.layer)).field("group", int64_t(g.group)).field("recency", g.recency);
                if (g.copy >= 0) j.field("copy", g.copy);
                if (g.retrieval != -1) j.field("retrieval", g.retrieval);
                j.field("kind", std::string(kind_names[int(g.kind)])).field("window", int64_t(g.window));
                j.field("sinks", int64_t(g.sinks));
                if (cp.automatic) {
                    // Held-out error per candidate kind: in the training metric (what chose),
                    // and plain relative to Σ‖o‖².
                    j.key("loss").begin_object();
                    for (int k = 0; k < 3; ++k) j.field(kind_names[k], g.loss[k]);
                    j.end_object();
                    j.key("loss_relative").begin_object();
                    for (int k = 0; k < 3; ++k) j.field(kind_names[k], g.rel[k]);
                    j.end_object();
                }
                j.end_object();
            }
        j.end_array();
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        int n_kind[3] = {0, 0, 0};
        for (auto &g : r.groups)
            if (g.replaced) ++n_kind[int(g.kind)];
        printf("wrote %s: %d of %d KV groups replaced (%d recurrent, %d window, %d window+recurrent%s; attention KV "
               "kept: %.0f%%), calibrated on %lld tokens\n",
               o.output_path.c_str(), r.replaced_groups, r.total_groups, n_kind[0], n_kind[1], n_kind[2],
               cp.automatic ? ", chosen per group on held-out text" : "", 100.0 * r.kv_fraction_kept,
               (long long)r.calib_tokens);
        if (r.end_to_end.measured) {
            const end_to_end_choice &e = r.end_to_end;
            auto describe = [](const std::string &name) {
                return name == "mix"      ? "the per-group choice"
                       : name == "winrec" ? "all window+recurrent"
                       : name == "window" ? "all windows"
                                          : "all windows without sinks";
            };
            printf("end to end on %lld held-out positions, mean KL:", (long long)e.positions);
            for (size_t i = 0; i < e.candidates.size(); ++i)
                printf("%s %.5f (%s)", i ? "," : "", e.candidates[i].kl, describe(e.candidates[i].name));
            if (e.retrieval_trials > 0) {
                printf("; %d passkeys, answer NLL (found): %.3f (%d, original)", e.retrieval_trials,
                       e.retrieval_original_nll, e.retrieval_original);
                for (const end_to_end_candidate &c : e.candidates)
                    printf(", %.3f (%d, %s)", c.retrieval_nll, c.retrieval_found, describe(c.name));
            }
            printf(": kept %s\n", describe(e.kept));
        }
        if (cp.steps > 0 && !d.heads.empty()) {
            double i_rel = 0, f_rel = 0;
            for (auto &h : d.heads) i_rel += h.initial_rel, f_rel += h.final_rel;
            printf("distilled %zu heads: %d steps on %lld tokens (%d sequences), relative loss %.4f -> %.4f; "
                   "capture %s, training %s\n",
                   d.heads.size(), cp.steps, (long long)d.calib_tokens, d.n_sequences, i_rel / double(d.heads.size()),
                   f_rel / double(d.heads.size()), fmt_duration(d.capture_seconds).c_str(),
                   fmt_duration(d.train_seconds).c_str());
        }
    }
    return 0;
}

} // namespace recur_cli
