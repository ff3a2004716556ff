#pragma once
// Shared by the GPU parity tests and the GPU benchmark: the skip guard, error measures, where the
// shared models are, and a writer of hybrid files with chosen replacement kinds.
#include "recur/convert.h"
#include "recur/cuda_backend.h"
#include "recur/gguf_writer.h"
#include "recur/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// Every GPU test starts with this: without a driver or a device (cudaGetDeviceCount fails or
// finds none) it skips, saying why, instead of failing.
#define RECUR_REQUIRE_GPU()                                                                        \
    do {                                                                                           \
        static const ::recur::cuda_device recur_dev_ = ::recur::cuda_device_info();                \
        if (!recur_dev_.available) GTEST_SKIP() << "no usable CUDA device: " << recur_dev_.error;  \
    } while (0)

namespace gpu_test {

// Normalised mean squared error Σ(got - want)² / Σ want², and the largest |got - want|.
struct error_stats {
    double nmse = 0, max_abs = 0;
};
template <typename A, typename B> error_stats compare(const A &got, const B &want) {
    error_stats e;
    double num = 0, den = 0;
    const size_t n = std::min(got.size(), want.size());
    for (size_t i = 0; i < n; ++i) {
        const double g = double(got[i]), w = double(want[i]);
        if (!std::isfinite(g)) return {INFINITY, INFINITY};
        num += (g - w) * (g - w);
        den += w * w;
        e.max_abs = std::max(e.max_abs, std::fabs(g - w));
    }
    e.nmse = den > 0 ? num / den : num;
    if (got.size() != want.size()) e.nmse = INFINITY;
    return e;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = dist(rng);
    return v;
}

// ../shared (models, data): $RECUR_SHARED_DIR wins over the path compiled in, so the GPU machine
// can point at wherever its copy travelled.
inline std::string shared_dir() {
    if (const char *e = std::getenv("RECUR_SHARED_DIR"); e && *e) return e;
#ifdef RECUR_SHARED_DIR
    return RECUR_SHARED_DIR;
#else
    return "../shared";
#endif
}

inline bool file_exists(const std::string &p) {
    std::FILE *f = std::fopen(p.c_str(), "rb");
    if (!f) return false;
    std::fclose(f);
    return true;
}

// What write_hybrid replaces: `fraction` of the KV groups (in each layer the first ones), every
// `window_every`-th replaced group as a window group of `window` positions (0: none), the others
// recurrent heads with random (trained-looking) parameters and, when `transforms`, per-head
// q/k/v transforms. Unreplaced tensors are copied as the converter does.
struct hybrid_spec {
    double fraction = 0.5;
    int window = 0;
    int window_every = 2;
    bool transforms = false;
    uint32_t seed = 7;
    int sinks = 0; // attention-sink rows of the window groups
    bool window_recurrent = false; // the window groups get recurrent heads for the tokens leaving them
    bool gated = false;            // ... with the gated read-out (rec.gate_w/gate_b/gate_n)
    bool delta = false;            // every recurrent head by the delta rule (recurformer.read_out)
    bool per_channel = false;      // per-channel decay offsets (rec.a_chan)
};

inline void write_hybrid(const recur::model &m, const std::string &path, const hybrid_spec &spec) {
    using namespace recur;
    const model_hparams &hp = m.hparams();
    const int g = hp.group_size(), hd = hp.head_dim, E = hp.n_embd;
    std::mt19937 rng(spec.seed);
    std::mt19937 gate_rng(spec.seed + 1000); // its own stream: gated and additive files share every other value
    std::normal_distribution<float> nd(0.0f, 1.0f);
    gguf_writer w;
    w.copy_metadata(m.file(), "recurformer.");
    w.set_uint32("recurformer.version", 1);
    w.set_uint32("recurformer.window", 32);
    w.set_string("recurformer.selection", "fraction:" + std::to_string(spec.fraction));
    if (spec.delta) w.set_string("recurformer.read_out", "delta");
    std::mt19937 chan_rng(spec.seed + 2000); // its own stream, like the gate's
    for (auto &t : m.file().tensors())
        if (t.name.find(".rec.") == std::string::npos) w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
    auto bytes = [](const std::vector<float> &v) {
        std::vector<uint8_t> b(v.size() * sizeof(float));
        std::memcpy(b.data(), v.data(), b.size());
        return b;
    };
    // Layer l replaces the groups that bring the running total to round(fraction · groups so far),
    // so the whole model replaces `fraction` of its groups even when a layer has an odd count.
    auto upto = [&](int layers) { return std::lround(spec.fraction * double(layers) * hp.n_head_kv); };
    for (int l = 0; l < hp.n_layer; ++l) {
        const int n_rep = int(upto(l + 1) - upto(l));
        std::vector<int32_t> replaced, kinds, windows;
        int n_rec = 0;
        for (int grp = 0; grp < n_rep; ++grp) {
            const bool win = spec.window > 0 && (grp % spec.window_every) == spec.window_every - 1;
            replaced.push_back(grp);
            const replacement_kind wk = spec.window_recurrent ? replacement_kind::window_recurrent : replacement_kind::window;
            kinds.push_back(int32_t(win ? wk : replacement_kind::recurrent));
            windows.push_back(win ? spec.window : 0);
            n_rec += win && !spec.window_recurrent ? 0 : 1;
        }
        const std::string key = "recurformer.blk." + std::to_string(l) + ".";
        w.set_int32_array(key + "replaced_groups", replaced);
        w.set_float32_array(key + "group_recency", std::vector<float>(size_t(hp.n_head_kv), 0.5f));
        if (replaced.empty()) continue;
        w.set_int32_array(key + "group_kinds", kinds);
        w.set_int32_array(key + "group_windows", windows);
        if (spec.sinks > 0) {
            std::vector<int32_t> sinks;
            for (int32_t k : kinds) sinks.push_back(k != int32_t(replacement_kind::recurrent) ? spec.sinks : 0);
            w.set_int32_array(key + "group_sinks", sinks);
        }
        const int64_t R = int64_t(n_rec) * g;
        if (R == 0) continue;
        std::vector<float> dt_w(size_t(R) * E), dt_b(static_cast<size_t>(R)), a_log(static_cast<size_t>(R)), d(size_t(R) * hd);
        for (auto &x : dt_w) x = 0.02f * nd(rng);
        for (auto &x : dt_b) x = initial_dt_bias(32) + 0.5f * nd(rng);
        for (auto &x : a_log) x = 0.5f * nd(rng);
        for (auto &x : d) x = 0.5f * nd(rng);
        const std::string t = "blk." + std::to_string(l) + ".rec.";
        w.add_tensor(t + "dt_w", tensor_type::F32, {E, R}, bytes(dt_w));
        w.add_tensor(t + "dt_b", tensor_type::F32, {R}, bytes(dt_b));
        w.add_tensor(t + "a_log", tensor_type::F32, {R}, bytes(a_log));
        w.add_tensor(t + "d", tensor_type::F32, {hd, R}, bytes(d));
        if (spec.per_channel) { // rows decaying up to ~500x faster or slower than the head's rate
            std::vector<float> a_chan(size_t(R) * hd);
            for (auto &x : a_chan) x = 3.0f * nd(chan_rng);
            w.add_tensor(t + "a_chan", tensor_type::F32, {hd, R}, bytes(a_chan));
        }
        const bool has_wr = std::count(kinds.begin(), kinds.end(), int32_t(replacement_kind::window_recurrent)) > 0;
        if (spec.gated && has_wr) {
            // Gates in their working range: log Z_out near a window's log-sum-exp (a few nats
            // for stories260K's head_dim 8), so g is neither 0 nor 1 and a wrong lse shows.
            std::vector<float> gate_w(size_t(R) * E), gate_b(static_cast<size_t>(R)), gate_n(static_cast<size_t>(R));
            for (auto &x : gate_w) x = 0.1f * nd(gate_rng);
            for (auto &x : gate_b) x = 1.5f + 0.5f * nd(gate_rng);
            for (auto &x : gate_n) x = 0.5f + 0.2f * nd(gate_rng);
            w.add_tensor(t + "gate_w", tensor_type::F32, {E, R}, bytes(gate_w));
            w.add_tensor(t + "gate_b", tensor_type::F32, {R}, bytes(gate_b));
            w.add_tensor(t + "gate_n", tensor_type::F32, {R}, bytes(gate_n));
        }
        if (spec.transforms)
            for (const char *name : {"q_proj", "k_proj", "v_proj"}) {
                std::vector<float> mat(size_t(R) * hd * hd);
                for (int64_t r = 0; r < R; ++r)
                    for (int o = 0; o < hd; ++o)
                        for (int i = 0; i < hd; ++i)
                            mat[(size_t(r) * hd + o) * hd + i] = (o == i ? 1.0f : 0.0f) + 0.05f * nd(rng);
                w.add_tensor(t + name, tensor_type::F32, {hd, hd, R}, bytes(mat));
            }
    }
    w.write(path);
}

} // namespace gpu_test
