#pragma once
// The conversion a user gets without choosing anything: what `recur convert -m M -f TEXT
// --fraction F -o OUT` runs with no other option, and what the desktop app's "Make a hybrid"
// dialog runs. Kind auto (each replaced group recurrent, window or window + recurrent, whichever
// imitates the original best, then checked end to end against all windows and for passkey
// retrieval), default attention sinks, a fixed-time distillation, a fixed seed (so two runs give
// the same file). The CLI starts from here and applies its options.
#include "recur/convert.h"
#include "recur/model.h"

#include <string>
#include <vector>

namespace recur_app {

// Tokens the recency analysis reads: the first n_ctx tokens of the text (at most the model's
// training context).
int default_analysis_tokens(const recur::model &m);

// The default conversion of `fraction` of m's KV groups into out_path (its checkpoints go next to
// it as OUT.ckpt*). n_threads: 0 for all cores.
recur::convert_params default_conversion(const recur::model &m, double fraction, const std::string &out_path,
                                         int n_threads);

// The calibration tokens of a text for p: the analysis reads the first p.analysis_tokens; a
// conversion that distils (steps > 0, or kind auto, which measures the kinds even untrained)
// keeps up to calib_tokens (0: the default, 32768) instead.
std::vector<int32_t> calibration_tokens(const recur::model &m, const std::string &text, bool add_bos,
                                        const recur::convert_params &p, int calib_tokens = 0);

} // namespace recur_app
