#include "recur/convert.h"

#include "recur/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>

namespace recur {

float initial_dt_bias(int32_t window) {
    // dt = softplus(b) = 1/window at initialisation: with A = -exp(0) = -1 the decay is
    // a = exp(-1/window), a memory of about `window` tokens, and the weights dt * a^j of past
    // tokens sum to about one, like a softmax row spread over the window.
    const double dt = 1.0 / std::max(1, window);
    return float(std::log(std::expm1(dt)));
}

std::vector<bool> choose_groups(const std::vector<double> &group_recency, double fraction, double threshold) {
    const size_t n = group_recency.size();
    std::vector<bool> chosen(n, false);
    if ((fraction >= 0) == (threshold >= 0)) throw error("convert: give exactly one of --fraction and --threshold");
    if (threshold >= 0) {
        for (size_t i = 0; i < n; ++i) chosen[i] = group_recency[i] >= threshold;
        return chosen;
    }
    if (fraction > 1) throw error("convert: --fraction must be between 0 and 1");
    const size_t count = size_t(std::llround(fraction * double(n)));
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return group_recency[a] > group_recency[b]; });
    for (size_t i = 0; i < count; ++i) chosen[order[i]] = true;
    return chosen;
}

convert_result convert_to_hybrid(const model &m, const std::vector<int32_t> &calib_tokens, const convert_params &p,
                                 const std::string &out_path, const progress_callback &progress,
                                 const distill_callback &distill_progress) {
    const model_hparams &hp = m.hparams();
    if (m.is_hybrid()) throw error("convert: the model is already a hybrid; convert the original model");
    if (p.steps < 0) throw error("convert: --steps must not be negative");
    // The recency analysis reads the first analysis_tokens (one context); distillation all of them.
    const std::vector<int32_t> analysed(
        calib_tokens.begin(),
        calib_tokens.begin() + int64_t(p.analysis_tokens > 0 ? std::min<size_t>(size_t(p.analysis_tokens), calib_tokens.size())
                                                             : calib_tokens.size()));
    if (int64_t(analysed.size()) <= p.window)
        throw error("convert: the calibration text has " + std::to_string(analysed.size()) +
                    " tokens; it needs more than the recency window (" + std::to_string(p.window) + ")");

    recency_stats stats;
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
    }

    convert_result res;
    res.calib_tokens = int64_t(analysed.size());
    std::vector<double> recency;
    for (int32_t l = 0; l < hp.n_layer; ++l)
        for (int32_t g = 0; g < hp.n_head_kv; ++g) recency.push_back(stats.group_recency(l, g, hp.group_size()));
    const std::vector<bool> chosen = choose_groups(recency, p.fraction, p.threshold);
    res.total_groups = int32_t(recency.size());

    gguf_writer w;
    w.copy_metadata(m.file());
    w.set_uint32("recurformer.version", 1);
    w.set_uint32("recurformer.window", uint32_t(p.window));
    w.set_string("recurformer.selection", p.threshold >= 0 ? "threshold:" + std::to_string(p.threshold)
                                                            : "fraction:" + std::to_string(p.fraction));
    w.set_uint32("recurformer.calibration_tokens", uint32_t(analysed.size()));
    w.set_uint32("recurformer.distillation_steps", uint32_t(p.steps));
    // Unreplaced tensors are copied bit for bit from the mapped original.
    for (auto &t : m.file().tensors()) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);

    const int g = hp.group_size(), hd = hp.head_dim, E = hp.n_embd;
    const float dt_bias = initial_dt_bias(p.window);
    if (p.kind != replacement_kind::recurrent && p.kind != replacement_kind::window)
        throw error("convert: only the recurrent and window kinds can be written");
    if (p.kind == replacement_kind::window && p.steps > 0)
        throw error("convert: window groups are exact attention and need no distillation (use --steps 0)");
    // Equal memory: a recurrent group holds group_size states of hd x hd floats; a window ring
    // holds 2 x W rows of hd F16 values.
    const int32_t window_tokens = p.window_tokens > 0 ? p.window_tokens : g * hd;
    // Initial recurrent heads of the chosen groups (docs/FORMAT.md), then distillation.
    std::vector<hybrid_layer> layers(size_t(hp.n_layer));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        hybrid_layer &H = layers[size_t(l)];
        for (int32_t grp = 0; grp < hp.n_head_kv; ++grp)
            if (chosen[size_t(l) * hp.n_head_kv + grp] && p.kind == replacement_kind::recurrent)
                H.recurrent_groups.push_back(grp);
        const size_t R = H.recurrent_groups.size() * size_t(g);
        H.dt_w.assign(R * E, 0.0f);
        H.dt_b.assign(R, dt_bias);
        H.a_log.assign(R, 0.0f);
        H.d.assign(R * hd, 0.0f);
    }
    if (p.steps > 0) {
        distill_params dp = p.distill;
        dp.steps = p.steps;
        dp.n_threads = p.n_threads;
        dp.n_batch = p.n_batch;
        res.distill = distill_heads(m, calib_tokens, layers, dp, distill_progress);
        w.set_uint32("recurformer.distillation_tokens", uint32_t(res.distill.calib_tokens));
    }
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        std::vector<int32_t> replaced;
        std::vector<float> layer_recency;
        for (int32_t grp = 0; grp < hp.n_head_kv; ++grp) {
            const size_t i = size_t(l) * hp.n_head_kv + grp;
            layer_recency.push_back(float(recency[i]));
            res.groups.push_back({l, grp, recency[i], bool(chosen[i])});
            if (chosen[i]) replaced.push_back(grp);
        }
        const std::string key = "recurformer.blk." + std::to_string(l) + ".";
        w.set_int32_array(key + "replaced_groups", replaced);
        w.set_float32_array(key + "group_recency", layer_recency);
        res.replaced_groups += int32_t(replaced.size());
        if (replaced.empty()) continue;
        if (p.kind == replacement_kind::window) {
            w.set_int32_array(key + "group_kinds", std::vector<int32_t>(replaced.size(), int32_t(replacement_kind::window)));
            w.set_int32_array(key + "group_windows", std::vector<int32_t>(replaced.size(), window_tokens));
            continue; // a window group uses the layer's own attention rows: no tensors
        }
        const int64_t R = int64_t(replaced.size()) * g;
        w.set_int32_array(key + "group_kinds", std::vector<int32_t>(replaced.size(), int32_t(replacement_kind::recurrent)));
        auto f32_bytes = [](const std::vector<float> &v) {
            std::vector<uint8_t> b(v.size() * sizeof(float));
            std::memcpy(b.data(), v.data(), b.size());
            return b;
        };
        const std::string t = "blk." + std::to_string(l) + ".rec.";
        const hybrid_layer &H = layers[size_t(l)];
        w.add_tensor(t + "dt_w", tensor_type::F32, {E, R}, f32_bytes(H.dt_w));
        w.add_tensor(t + "dt_b", tensor_type::F32, {R}, f32_bytes(H.dt_b));
        w.add_tensor(t + "a_log", tensor_type::F32, {R}, f32_bytes(H.a_log));
        w.add_tensor(t + "d", tensor_type::F32, {hd, R}, f32_bytes(H.d));
        if (!H.q_proj.empty()) {
            w.add_tensor(t + "q_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(H.q_proj));
            w.add_tensor(t + "k_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(H.k_proj));
            w.add_tensor(t + "v_proj", tensor_type::F32, {hd, hd, R}, f32_bytes(H.v_proj));
        }
        if (!H.final_loss.empty()) w.set_float32_array(key + "final_loss", H.final_loss);
    }
    res.kv_fraction_kept = 1.0 - double(res.replaced_groups) / double(res.total_groups);
    w.write(out_path);
    if (p.steps > 0 && !p.distill.checkpoint_path.empty()) std::remove(p.distill.checkpoint_path.c_str());
    return res;
}

} // namespace recur
