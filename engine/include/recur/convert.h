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

struct convert_params {
    int32_t window = 32;       // recency window k
    double fraction = -1;      // replace this fraction of all KV groups (highest recency first), or
    double threshold = -1;     // replace every group whose recency >= threshold (exactly one is set)
    int32_t n_threads = 0;
    int32_t n_batch = 256;
    int32_t steps = 0;         // distillation steps; 0: initialisation only (docs/FORMAT.md)
    int32_t analysis_tokens = 0; // recency analysis on the first this many calibration tokens (0: all)
    // How the chosen groups are served: recurrent heads (the default), or an exact window of the
    // last window_tokens positions (0: the window whose ring costs what a recurrent group's
    // states cost, group_size x head_dim positions).
    replacement_kind kind = replacement_kind::recurrent;
    int32_t window_tokens = 0;
    // Distillation when steps > 0 (distill.steps, n_threads and n_batch are taken from above).
    distill_params distill;
};

struct group_choice {
    int32_t layer = 0, group = 0;
    double recency = 0;
    bool replaced = false;
};

struct convert_result {
    int32_t replaced_groups = 0, total_groups = 0;
    double kv_fraction_kept = 1.0; // attention KV bytes of the hybrid / of the original
    int64_t calib_tokens = 0;
    std::vector<group_choice> groups; // every (layer, group), in layer-major order
    distill_report distill;           // empty when steps == 0
};

// Picks groups from per-group recency (layer-major order). Ties keep the earlier group.
std::vector<bool> choose_groups(const std::vector<double> &group_recency, double fraction, double threshold);

// Runs the analysis over calib_tokens (BOS first where the vocabulary adds it), initialises the
// chosen groups' recurrent heads, distils them on all of calib_tokens when p.steps > 0
// (recur/distill.h), and writes the hybrid file to out_path. progress(done, total) (analysis) and
// distill_progress (distillation) may cancel by returning false. After a successful write the
// distillation checkpoint, if any, is removed.
convert_result convert_to_hybrid(const model &m, const std::vector<int32_t> &calib_tokens, const convert_params &p,
                                 const std::string &out_path, const progress_callback &progress = {},
                                 const distill_callback &distill_progress = {});

// Initial recurrent-head parameters ("The Mamba in the Llama": C<-Q, B<-K, x<-V come from the
// attention rows themselves; see docs/FORMAT.md for dt, A and D).
float initial_dt_bias(int32_t window);

} // namespace recur
