// The default conversion (core/conversion.h).
#include "core/conversion.h"

#include "recur/tokenizer.h"

#include <algorithm>
#include <cstdint>

namespace recur_app {

namespace {

// SmolLM2-135M with 25% of its KV groups replaced converts in about 20 minutes on a 2-core VM
// (docs/quality.md); more heads get proportionally fewer steps, so the time stays about the same.
constexpr int default_steps_at_25pct = 8000;
constexpr int default_calib_tokens = 32768; // tokens of the calibration text distilled on
constexpr uint64_t default_conversion_seed = 1234;

// Distillation steps for a fraction of groups replaced (fraction < 0: as 25%).
int default_steps(double fraction) {
    // Fixed time: the work per step grows with the number of heads trained.
    const double frac = fraction >= 0 ? fraction : 0.25;
    const double scale = frac > 0.25 ? 0.25 / frac : 1.0;
    return std::max(50, int(default_steps_at_25pct * scale));
}

// Checkpoints and scratch files next to the output (OUT.ckpt, OUT.ckpt.recurrent, ...).
void set_conversion_output(recur::convert_params &p, const std::string &out_path) {
    p.distill.checkpoint_path = out_path + ".ckpt";
    const size_t slash = out_path.find_last_of('/');
    p.distill.scratch_dir = slash == std::string::npos ? "." : out_path.substr(0, slash + 1);
}

} // namespace

int default_analysis_tokens(const recur::model &m) { return std::min(2048, m.hparams().n_ctx_train); }

recur::convert_params default_conversion(const recur::model &m, double fraction, const std::string &out_path,
                                         int n_threads) {
    recur::convert_params p;
    p.fraction = fraction;
    p.n_threads = n_threads;
    p.analysis_tokens = default_analysis_tokens(m);
    p.automatic = true;
    // The default sinks, which the held-out text may overrule (convert.h try_without_sinks).
    p.try_without_sinks = true;
    p.steps = default_steps(fraction);
    p.distill.seed = default_conversion_seed;
    p.distill.seq_len = std::min(1024, p.analysis_tokens);
    set_conversion_output(p, out_path);
    return p;
}

std::vector<int32_t> calibration_tokens(const recur::model &m, const std::string &text, bool add_bos,
                                        const recur::convert_params &p, int calib_tokens) {
    std::vector<int32_t> ids = m.vocab().encode(text, add_bos, false);
    const size_t n_ctx = size_t(std::max(0, p.analysis_tokens));
    const bool distils = p.steps > 0 || p.automatic;
    const size_t keep = distils ? size_t(calib_tokens > 0 ? calib_tokens : default_calib_tokens) : n_ctx;
    if (ids.size() > keep) ids.resize(keep);
    return ids; // too short a text is refused by convert_to_hybrid, saying why
}

} // namespace recur_app
