#pragma once
// Conversion of a pretrained model into a RecurFormer hybrid (DESIGN §3-§4, docs/FORMAT.md):
// measure each KV group's recency on calibration text, choose the groups to replace,
// initialise their recurrent heads, and write the hybrid GGUF.
#include "recur/distill.h"
#include "recur/model.h"

#include <functional>
#include <string>
#include <vector>

namespace recur {

// Attention-sink rows per window group when not asked otherwise (measured: docs/quality.md).
constexpr int32_t default_sinks = 4;

// Spans of the copy probe when a copy limit is set without a span count.
constexpr int32_t copy_probe_spans_for_limit = 32;

struct convert_params {
    int32_t window = 32;       // recency window k
    double fraction = -1;      // replace this fraction of all KV groups (highest recency first), or
    double threshold = -1;     // replace every group whose recency >= threshold (exactly one is set)
    int32_t n_threads = 0;
    int32_t n_batch = 256;
    int32_t steps = 0;         // distillation steps; 0: initialisation only (docs/FORMAT.md)
    int32_t analysis_tokens = 0; // recency analysis on the first this many calibration tokens (0: all)
    // How the chosen groups are served: recurrent heads (the default), an exact window of the
    // last window_tokens positions, a window of wr_window tokens plus a recurrent head over what
    // leaves it, or (automatic) per group whichever of the three imitates the original best on
    // held-out calibration sequences (docs/FORMAT.md "Choosing the kind").
    replacement_kind kind = replacement_kind::recurrent;
    bool automatic = false;
    // Cache rows of a window group, its sink rows included (the ring holds window_tokens - sinks
    // recent positions). 0: with kind window, the rows that cost what a recurrent group's states
    // cost (group_size x head_dim); with automatic, what a window + recurrent group costs (see
    // default_windows).
    int32_t window_tokens = 0;
    int32_t wr_window = 0;     // cache rows of window + recurrent groups, sinks included; 0: default_windows
                               // at the fraction of groups the selection replaces
    // Attention-sink rows of window and window + recurrent groups: tokens 0..sinks-1 stay in the
    // group's cache for good, taken from its rows above (docs/FORMAT.md "Attention sinks").
    int32_t sinks = default_sinks;
    // automatic: the last holdout_sequences of the calibration sequences are held out (0: an
    // eighth, at least one) and the kind is chosen on them.
    int32_t holdout_sequences = 0;
    // automatic: also write the all-recurrent and all-window+recurrent hybrids it trained, as
    // OUT-recurrent.gguf and OUT-winrec.gguf (OUT without its .gguf), for measurement; and when the
    // end-to-end checks reject the per-group mix, the mix as OUT-mix.gguf.
    bool write_candidates = false;
    // automatic: after the per-group choice, compare the whole hybrid with the all-window one
    // (untrained: it costs a forward pass) on the held-out sequences, by the mean KL divergence of
    // the next-token distributions from the original's, and keep the better. A choice by each
    // group's own error can lose end to end: on SmolLM2 with sinks the per-group mix reached
    // ×1.0066 perplexity at 25% of groups where plain windows reached ×1.0033 (docs/quality.md).
    bool compare_end_to_end = true;
    // automatic, with sinks that came from the default rather than from the user: the end-to-end
    // comparison also tries all windows without sinks (the same rows all as ring). Sinks help a
    // model that parks attention on token 0 (SmolLM2: ×1.33 → ×1.005 at 50%) and cost one that
    // does not (stories260K: ×1.0076 → ×1.018), so the held-out text decides.
    bool try_without_sinks = false;
    // Copy probe: the analysed text again with copy_probe_spans spans written a second time
    // further on than any window the conversion gives (recur/distill.h repeat_spans); each
    // group's copy score is the largest mean weight a query head of it puts on the induction
    // target (the key after the earlier copy of the current token). Groups scoring copy_limit or
    // more are retrieval groups: never replaced, the next most recency-aware take their place
    // (measured on SmolLM2-135M: docs/quality.md). copy_probe_spans = 0: no probe, unless
    // copy_limit < 1 asks for an exclusion, which needs the scores: then copy_probe_spans_for_limit.
    int32_t copy_probe_spans = 0;
    double copy_limit = 1.0;
    // Only groups of layers first_layer..last_layer (-1: the last) are replaced, the fraction
    // still counting all groups. Measured on SmolLM2-135M at 25% (docs/quality.md): windows in
    // layers 0-13 only kept passkey retrieval (41/60 at 1k, the original 39) where the recency
    // choice, which takes 7 groups of layers 14-27, lost 6 of the original's; perplexity paid
    // for it (×1.019 against ×1.012 on 2048-token chunks).
    int32_t first_layer = 0, last_layer = -1;
    // Retrieval probe (retrieval_probe_trials > 0): before the choice, each candidate group, in
    // order of recency, is served alone as a window of the rows this conversion gives (the plain
    // model otherwise) on retrieval_probe_trials passkey prompts of distill.seq_len tokens with
    // the analysed text as filler; its harm is the mean increase of the answer's negative
    // log-likelihood (nats over the key's tokens, teacher-forced) over the original's. Groups
    // whose harm is retrieval_limit or more are kept whole and the next take their place, until
    // the fraction is met. Why: on SmolLM2-135M the recency choice loses passkeys through a few
    // deep groups that neither recency nor the copy probe tells apart (docs/quality.md).
    int32_t retrieval_probe_trials = 0;
    double retrieval_limit = 1e30;
    // Distillation when steps > 0 (distill.steps, n_threads and n_batch are taken from above).
    distill_params distill;
};

struct group_choice {
    int32_t layer = 0, group = 0;
    double recency = 0;
    double copy = -1;           // copy score (convert_params::copy_probe_spans), -1: not probed
    bool replaced = false;
    bool copy_excluded = false; // would have been chosen by recency, kept for its copy score
    double retrieval = -1;      // retrieval probe's harm in nats (convert_params::retrieval_probe_trials), -1: not probed
    bool retrieval_excluded = false; // would have been chosen by recency, kept for its retrieval harm
    replacement_kind kind = replacement_kind::recurrent; // of a replaced group
    int32_t window = 0;                                  // W (ring) of a window or window + recurrent group
    int32_t sinks = 0;                                   // its sink rows S (cache rows W + S)
    // Held-out error of each candidate kind (automatic only; -1 when not measured): mean over
    // tokens of Σ over the group's heads of the error in the training metric (the attn_output
    // metric unless it is off), and the plain error relative to Σ‖o‖².
    double loss[3] = {-1, -1, -1}, rel[3] = {-1, -1, -1}; // indexed by replacement_kind
};

// The automatic choice's last step (convert_params::compare_end_to_end), per candidate hybrid:
// the per-group choice ("mix"), all window + recurrent groups as trained ("winrec"; when the mix
// is not already that), all windows with the sinks ("window"; when the mix has trained groups),
// all windows without sinks ("window_no_sinks"; with try_without_sinks). kl: mean
// KL(original ‖ hybrid) per held-out position in nats. Then the retrieval check: passkey prompts
// of seq_len tokens with the calibration text as filler, each key scored teacher-forced
// (recur/passkey.h score_passkey_answer) by the original and every candidate; retrieval_nll is
// the mean negative log-likelihood of the keys (nats), retrieval_found the keys whose every token
// was the model's first choice, retrieval_lost those of the original's found keys it misses
// (-1: not run). retrieval_choice decides. Why the all-winrec candidate: on SmolLM2-135M at 25%
// the per-group mix lost end to end to all windows, while all window + recurrent groups, never
// compared whole before, equalled them on 2048-token perplexity and retrieval (docs/quality.md,
// session 12).
struct end_to_end_candidate {
    std::string name;
    double kl = -1, retrieval_nll = -1;
    int32_t retrieval_found = -1, retrieval_lost = -1;
};
struct end_to_end_choice {
    bool measured = false;
    std::vector<end_to_end_candidate> candidates; // in the order above (a KL tie keeps the earlier)
    int64_t positions = 0;     // held-out positions compared
    std::string kept = "mix";  // the candidate written
    int32_t retrieval_trials = 0, retrieval_original = -1; // 0 / -1: the check did not run
    double retrieval_original_nll = -1;
    double seconds = 0;
    // The candidate's KL, -1 when it was not measured.
    double kl_of(const std::string &name) const;
};

// Per-group cache sizes of a conversion (default_windows below).
struct default_window_sizes {
    int32_t window_equal_recurrent = 0, wr_window = 0, window_equal_wr = 0;
    size_t recurrent_bytes = 0, wr_bytes = 0; // per group
};

struct convert_result {
    int32_t replaced_groups = 0, total_groups = 0;
    // The sizes this conversion used (--wr-window's default depends on the fraction replaced)
    // and the cache rows of its window groups (sinks included) before the end-to-end check.
    default_window_sizes sizes;
    int32_t window_rows = 0;
    end_to_end_choice end_to_end;
    double kv_fraction_kept = 1.0; // attention KV bytes of the hybrid / of the original
    int64_t calib_tokens = 0;
    // Retrieval probe: the original's mean answer negative log-likelihood (nats), groups probed,
    // seconds; -1 / 0 when not run.
    double retrieval_probe_original_nll = -1;
    int32_t retrieval_probed_groups = 0;
    double retrieval_probe_seconds = 0;
    std::vector<group_choice> groups; // every (layer, group), in layer-major order
    distill_report distill;           // empty when steps == 0
};

// The retrieval check's rule: candidates are taken in order of KL (lowest first, a tie keeps the
// earlier), and the first whose keys' mean answer negative log-likelihood is at most the
// original's plus retrieval_nll_tolerance, or at most every other candidate's, is kept (so one is
// always kept: the best retriever qualifies). Returns its index. When the original finds none of
// the keys (original_found 0) the lowest KL is kept: a model that cannot retrieve at this length
// (stories260K: 45 nats per key) gives likelihoods that rank noise, not retrieval. Why the likelihood and not the
// count of keys found: on SmolLM2-135M at 25% the count on 32 prompts could not tell a mix that
// finds 10 points fewer passkeys at 60 (original 22, mix 21, windows 21), while its answer NLL
// was 0.28 nats above the original's (standard error 0.04) and the windows' 0.00 (docs/quality.md).
// The tolerance is about a third of that loss. Why every candidate and not only a trained one
// that wins on KL (sessions 6-12): at 50% of SmolLM2's groups all windows win on KL (0.021
// against the mix's 0.026 and 8-row window + recurrent groups' 0.059) and lose retrieval (35/60
// passkeys at 1k, answer NLL +0.34) where the 8-row heads keep it (37/60, +0.09; session 13).
constexpr double retrieval_nll_tolerance = 0.1;
size_t retrieval_choice(double original_nll, int32_t original_found, const std::vector<double> &kl,
                        const std::vector<double> &nll);

// Picks groups from per-group recency (layer-major order). Ties keep the earlier group. Groups
// marked in `exclude` (empty: none) are never picked; with a fraction, the count is still that
// fraction of all groups, taken from the others.
std::vector<bool> choose_groups(const std::vector<double> &group_recency, double fraction, double threshold,
                                const std::vector<bool> &exclude = {});

// The progress phases convert_to_hybrid reports for p, in order (the stages a progress display
// counts): "analysis" (its progress callback), then through distill_progress "retrieval_probe"
// (with the retrieval probe), "capture" and "train" per distilled kind ("train" only with steps >
// 0), and "compare" and "retrieval" (automatic, with compare_end_to_end; the retrieval check is
// skipped only when no passkey prompt fits in seq_len).
std::vector<std::string> convert_phases(const convert_params &p);

// Runs the analysis over calib_tokens (BOS first where the vocabulary adds it), initialises the
// chosen groups' recurrent heads, distils them on all of calib_tokens when p.steps > 0
// (recur/distill.h), and writes the hybrid file to out_path. progress(done, total) (analysis) and
// distill_progress (distillation, then the automatic choice's checks) may cancel by returning
// false (cancelled_error); a check that is cancelled or fails leaves no file at out_path. After
// a successful write the distillation checkpoint, if any, is removed.
convert_result convert_to_hybrid(const model &m, const std::vector<int32_t> &calib_tokens, const convert_params &p,
                                 const std::string &out_path, const progress_callback &progress = {},
                                 const distill_callback &distill_progress = {});

// Cache rows of a window + recurrent group (sinks included) when --wr-window is not given, by the
// fraction of KV groups replaced. Measured on SmolLM2-135M with delta-rule, per-channel heads
// (docs/quality.md, sessions 12-13): at 25% of groups 16 rows (4 sinks + 12 recent) keep the
// original's passkey retrieval (39/60 at 1k) where 8 rows find 37 and 64 rows 32; at 50% 16 rows
// lose it (31/60) and 8 rows keep it (37/60). With more groups replaced fewer exact rows do
// better: the recurrent part has to carry the far past of more heads, and a short window leaves it
// the training signal for that (a reading; the measurement is the table). Between the two
// measured fractions the nearer decides (from 37.5%: 8 rows).
constexpr int32_t default_wr_window_rows = 16, default_wr_window_rows_from_half = 8;
constexpr double fewer_wr_rows_from_fraction = 0.375;
int32_t default_wr_window(double replaced_fraction);

// Equal-memory windows (F16 ring rows: 2 x head_dim x 2 bytes per position; a window +
// recurrent group also keeps group_size dt floats per position and group_size head_dim² float
// states). wr_window: default_wr_window(replaced_fraction), or a third of group_size x head_dim
// when that is less (stories260K: 5), at least 1. window_equal_wr: the plain window whose ring
// costs what such a window + recurrent group costs (rounded down).
default_window_sizes default_windows(const model_hparams &hp, int32_t wr_window = 0, double replaced_fraction = 0);

// Initial recurrent-head parameters ("The Mamba in the Llama": C<-Q, B<-K, x<-V come from the
// attention rows themselves; see docs/FORMAT.md for dt, A and D).
float initial_dt_bias(int32_t window);

} // namespace recur
