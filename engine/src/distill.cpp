// Attention-transfer distillation of recurrent heads (recur/distill.h, docs/FORMAT.md
// "Distillation"): capture from the original model into an unlinked scratch file; Adam with
// truncated BPTT per head on a thread pool; checkpoints; evaluation before and after.
#include "recur/distill.h"

#include "recur/error.h"
#include "recur/quants.h"
#include "recur/recurrent_head.h"
#include "recur/sampling.h"
#include "recur/splitmix64.h"
#include "recur/thread_pool.h"
#include "recur/tokenizer.h"
#include "atomic_file.h"
#include "recurrent_head_kernels.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <unistd.h>

namespace recur {

namespace {

// Tokens per chunk of the chunked forward scan inside a training chunk (as the engine's prefill).
constexpr int scan_chunk = 32;
// Adam.
constexpr double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// FNV-1a, 64-bit: the checkpoint's configuration hash and checksum.
struct fnv64 {
    uint64_t h = 1469598103934665603ull;
    void add(const void *p, size_t n) {
        const auto *b = static_cast<const uint8_t *>(p);
        for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    }
    template <class T> void add_value(const T &v) { add(&v, sizeof v); }
};

// Which head of which layer; r indexes the layer's recurrent heads (group order, then head).
struct head_ref {
    int32_t layer, group, head, r, group_index;
    int32_t window = 0; // W of a window + recurrent head (trained on the tokens leaving the window), else 0
    int32_t sinks = 0;  // S sink rows of that window (tokens 0..S-1 never leave it), else 0
};

// ---- the capture file ----------------------------------------------------------------------------

// Float offsets into the capture file: per layer with recurrent heads xn [N][E]; per replaced
// group k, v [N][hd]; per head q, o [N][hd]. N counts the tokens of all sequences back to back.
// The file is read and written with pread/pwrite into small buffers, so its contents live in the
// page cache (which the kernel may drop or write back), not in this process's memory.
struct capture_store {
    int64_t n_tokens = 0;
    std::vector<int64_t> xn_off;        // [n_layer], -1 where no recurrent head
    std::vector<int64_t> k_off, v_off;  // [head] (the head's group's arrays)
    std::vector<int64_t> q_off, o_off;  // [head]
    std::vector<int64_t> ow_off, lse_off; // [head]: a gated window + recurrent head's window output [N][hd] and lse [N]; -1 otherwise
    int64_t w_off = -1;                 // [N] per-position loss weights (retrieval drills); -1: all 1
    int fd = -1;
    size_t bytes = 0;
    std::atomic<bool> failed{false};    // an I/O error inside a worker (reported after the job)

    capture_store() = default;
    capture_store(const capture_store &) = delete;
    capture_store &operator=(const capture_store &) = delete;
    ~capture_store() {
        if (fd >= 0) close(fd);
    }

    void create(const std::string &dir, size_t n_floats) {
        bytes = std::max<size_t>(n_floats * sizeof(float), 1);
        std::string path = (dir.empty() ? std::string("/tmp") : dir) + "/recur-distill-XXXXXX";
        std::vector<char> name(path.begin(), path.end());
        name.push_back('\0');
        fd = mkstemp(name.data());
        if (fd < 0) throw error("distill: cannot create a scratch file in " + dir + ": " + std::strerror(errno));
        unlink(name.data()); // gone from the folder at once; the space returns when the file is closed
        // Reserve the blocks now, so a full disk is this error rather than a failed write later.
        if (const int e = posix_fallocate(fd, 0, off_t(bytes)); e != 0)
            throw error("distill: cannot reserve " + std::to_string(bytes >> 20) + " MiB for the capture in " + dir +
                        ": " + std::strerror(e) + " (use fewer calibration tokens or another folder)");
    }
    // rows × width floats at array `off`, starting at token `token`. Thread-safe.
    void write(int64_t off, int64_t token, int64_t width, const float *src, int64_t rows) {
        const char *p = reinterpret_cast<const char *>(src);
        size_t left = size_t(rows * width) * sizeof(float);
        off_t at = off_t((off + token * width) * int64_t(sizeof(float)));
        while (left > 0) {
            const ssize_t w = pwrite(fd, p, left, at);
            if (w <= 0) {
                if (w < 0 && errno == EINTR) continue;
                failed = true;
                return;
            }
            p += w, at += w, left -= size_t(w);
        }
    }
    void read(int64_t off, int64_t token, int64_t width, float *dst, int64_t rows) {
        char *p = reinterpret_cast<char *>(dst);
        size_t left = size_t(rows * width) * sizeof(float);
        off_t at = off_t((off + token * width) * int64_t(sizeof(float)));
        while (left > 0) {
            const ssize_t r = pread(fd, p, left, at);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                failed = true;
                std::fill(reinterpret_cast<float *>(dst), reinterpret_cast<float *>(dst) + rows * width, 0.0f);
                return;
            }
            p += r, at += r, left -= size_t(r);
        }
    }
    void check() const {
        if (failed) throw error("distill: reading or writing the capture file failed (disk full or I/O error)");
    }
};

// One head's chunk read from the capture (per thread).
struct chunk_buffers {
    std::vector<float> xn, q, k, v, o, xq, ow, lse, log_n_out, weight;
};

// The layer's projection rows [row0, row0 + n_rows) for one normed input row, as the engine's
// matmul computes them (activations quantised for the weight type), plus the bias.
void project_rows(const weight_matrix &w, const std::vector<float> &bias, int row0, int n_rows, const float *xn,
                  std::vector<uint8_t> &act, float *out) {
    const tensor_type at = activation_type(w.type);
    act.resize(row_bytes(at, w.n_in) + 64);
    quantize_activation(at, xn, act.data(), w.n_in);
    for (int i = 0; i < n_rows; ++i) {
        out[i] = vec_dot(w.type, w.n_in, w.data + size_t(row0 + i) * w.row_bytes, act.data());
        if (!bias.empty()) out[i] += bias[size_t(row0 + i)];
    }
}

// ---- schedule ------------------------------------------------------------------------------------

struct sequence {
    int64_t start = 0; // first token in the capture
    int32_t length = 0;
    int32_t n_chunks = 0;
};

struct chunk_item {
    int32_t seq, chunk;
};

// Epoch e visits chunk 0 of every sequence (in a seeded order), then chunk 1, ...: the chunks of a
// sequence come in order, so each starts from the state its predecessor left, and consecutive
// chunks of a step come from different sequences.
std::vector<chunk_item> epoch_items(const std::vector<sequence> &seqs, uint64_t seed, int64_t epoch) {
    int32_t max_chunks = 0;
    for (auto &s : seqs) max_chunks = std::max(max_chunks, s.n_chunks);
    std::vector<chunk_item> items;
    for (int32_t c = 0; c < max_chunks; ++c) {
        std::vector<int32_t> order;
        for (int32_t i = 0; i < int32_t(seqs.size()); ++i)
            if (seqs[size_t(i)].n_chunks > c) order.push_back(i);
        uint64_t st = seed ^ (uint64_t(epoch) * 0xD1B54A32D192ED03ull) ^ (uint64_t(c) << 32);
        for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[splitmix64(st) % i]);
        for (int32_t s : order) items.push_back({s, c});
    }
    return items;
}

// Warm-up over the first 5% of steps (at most 100), then a cosine from lr down to lr/10.
double lr_at(int64_t step, int64_t steps, double lr) {
    const int64_t warm = std::clamp<int64_t>(steps / 20, 1, 100);
    if (step < warm) return lr * double(step + 1) / double(warm);
    const double x = double(step - warm) / double(std::max<int64_t>(1, steps - warm));
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(3.14159265358979323846 * std::min(1.0, x))));
}

// ---- training state and checkpoints --------------------------------------------------------------

struct head_state {
    std::vector<float> theta, m, v, grad;
    std::vector<float> states; // [n_seq][hd·hd]: state after the sequence's last visited chunk
};

constexpr char ckpt_magic[8] = {'R', 'E', 'C', 'U', 'R', 'C', 'K', '1'};
constexpr uint32_t ckpt_version = 1;

void write_checkpoint(const std::string &path, uint64_t config, int64_t step,
                      const std::vector<head_state> &hs) {
    write_file_atomically(path, "checkpoint ", [&](FILE *f) {
        fnv64 sum;
        bool ok = true;
        auto put = [&](const void *p, size_t n) {
            sum.add(p, n);
            ok = ok && fwrite(p, 1, n, f) == n;
        };
        put(ckpt_magic, 8);
        put(&ckpt_version, 4);
        put(&config, 8);
        put(&step, 8);
        const uint32_t n_heads = uint32_t(hs.size());
        put(&n_heads, 4);
        for (auto &h : hs) {
            put(h.theta.data(), h.theta.size() * sizeof(float));
            put(h.m.data(), h.m.size() * sizeof(float));
            put(h.v.data(), h.v.size() * sizeof(float));
            put(h.states.data(), h.states.size() * sizeof(float));
        }
        const uint64_t total = sum.h;
        return ok && fwrite(&total, 1, 8, f) == 8;
    });
}

// Returns the step the checkpoint reached; fills hs (already sized). Throws when the file is
// damaged or belongs to another conversion.
int64_t read_checkpoint(const std::string &path, uint64_t config, std::vector<head_state> &hs) {
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) throw error("distill: --resume: cannot open checkpoint " + path + ": " + std::strerror(errno));
    fnv64 sum;
    bool ok = true;
    auto get = [&](void *p, size_t n) {
        ok = ok && fread(p, 1, n, f) == n;
        if (ok) sum.add(p, n);
    };
    char magic[8] = {};
    uint32_t version = 0, n_heads = 0;
    uint64_t cfg = 0;
    int64_t step = 0;
    get(magic, 8);
    get(&version, 4);
    get(&cfg, 8);
    get(&step, 8);
    get(&n_heads, 4);
    auto fail = [&](const std::string &why) {
        fclose(f);
        throw error("distill: checkpoint " + path + ": " + why);
    };
    if (!ok || std::memcmp(magic, ckpt_magic, 8) != 0) fail("not a distillation checkpoint");
    if (version != ckpt_version) fail("version " + std::to_string(version) + " is not supported");
    if (cfg != config || n_heads != hs.size())
        fail("it was written for another conversion (model, calibration tokens, chosen groups, steps, lr, seed "
             "or schedule differ); remove it or drop --resume");
    std::vector<head_state> tmp = hs;
    for (auto &h : tmp) {
        get(h.theta.data(), h.theta.size() * sizeof(float));
        get(h.m.data(), h.m.size() * sizeof(float));
        get(h.v.data(), h.v.size() * sizeof(float));
        get(h.states.data(), h.states.size() * sizeof(float));
    }
    const uint64_t expect = sum.h;
    uint64_t stored = 0;
    ok = ok && fread(&stored, 1, 8, f) == 8;
    if (!ok) fail("truncated");
    if (stored != expect) fail("checksum mismatch (damaged file)");
    fclose(f);
    if (step < 0) throw error("distill: checkpoint " + path + ": negative step");
    hs = std::move(tmp);
    return step;
}

// Per-parameter learning-rate factors: dt_b and a_log (two scalars that set the head's memory
// length) learn 3× faster than the rest, so the decay settles before the transforms fit around a
// wrong one (measured on SmolLM2-135M: lower loss and perplexity than 1×; 10× no better than 3×).
constexpr float lr_factor_decay = 3.0f;

std::vector<float> lr_factors(const head_layout &L) {
    std::vector<float> f(L.size(), 1.0f);
    f[L.dt_b()] = lr_factor_decay;
    f[L.a_log()] = lr_factor_decay;
    if (L.gated) f[L.gate_b()] = f[L.gate_n()] = lr_factor_decay; // the gate's offset and count slope: scalars that set a scale
    if (L.per_channel) std::fill_n(f.begin() + int64_t(L.a_chan()), L.head_dim, lr_factor_decay); // decays, like a_log
    return f;
}

void adam_step(head_state &h, int64_t t, double lr, const std::vector<float> &mult) {
    if (mult.size() != h.theta.size()) throw error("distill: learning-rate factors do not match the head's parameters");
    const double c1 = 1.0 - std::pow(adam_beta1, double(t)), c2 = 1.0 - std::pow(adam_beta2, double(t));
    const float b1 = float(adam_beta1), b2 = float(adam_beta2);
    const float step_size = float(lr / c1), inv_c2 = float(1.0 / c2), eps = float(adam_eps);
    const size_t n = h.theta.size();
    for (size_t i = 0; i < n; ++i) {
        const float g = h.grad[i];
        const float step_size_i = step_size * mult[i];
        h.m[i] = b1 * h.m[i] + (1 - b1) * g;
        h.v[i] = b2 * h.v[i] + (1 - b2) * g * g;
        h.theta[i] -= step_size_i * h.m[i] / (std::sqrt(h.v[i] * inv_c2) + eps);
    }
}

} // namespace

// ---- parameters ------------------------------------------------------------------------------------

void head_params_from_layer(const hybrid_layer &H, int32_t r, const head_layout &L, float *theta) {
    const int E = L.n_embd, hd = L.head_dim;
    const size_t hh = L.hh();
    std::copy_n(H.dt_w.data() + size_t(r) * E, E, theta + L.dt_w());
    theta[L.dt_b()] = H.dt_b[size_t(r)];
    theta[L.a_log()] = H.a_log[size_t(r)];
    std::copy_n(H.d.data() + size_t(r) * hd, hd, theta + L.d());
    const std::vector<float> *proj[3] = {&H.q_proj, &H.k_proj, &H.v_proj};
    const size_t off[3] = {L.mq(), L.mk(), L.mv()};
    for (int j = 0; j < 3; ++j) {
        float *mt = theta + off[j];
        for (int i = 0; i < hd; ++i)
            for (int o = 0; o < hd; ++o)
                mt[size_t(i) * hd + o] =
                    proj[j]->empty() ? float(i == o) : (*proj[j])[size_t(r) * hh + size_t(o) * hd + i];
    }
    if (L.gated) {
        const bool have = H.gate_b.size() > size_t(r) && H.gate_w.size() >= size_t(r + 1) * size_t(E);
        for (int i = 0; i < E; ++i) theta[L.gate_w() + size_t(i)] = have ? H.gate_w[size_t(r) * E + size_t(i)] : 0.0f;
        theta[L.gate_b()] = have ? H.gate_b[size_t(r)] : 0.0f;
        theta[L.gate_n()] = have && H.gate_n.size() > size_t(r) ? H.gate_n[size_t(r)] : 0.0f;
    }
    if (L.per_channel) {
        const bool have = H.a_chan.size() >= size_t(r + 1) * size_t(hd);
        for (int i = 0; i < hd; ++i) theta[L.a_chan() + size_t(i)] = have ? H.a_chan[size_t(r) * hd + size_t(i)] : 0.0f;
    }
}

void head_params_to_layer(const head_layout &L, const float *theta, int32_t r, int32_t n_heads, hybrid_layer &H) {
    const int E = L.n_embd, hd = L.head_dim;
    const size_t hh = L.hh();
    std::copy_n(theta + L.dt_w(), E, H.dt_w.data() + size_t(r) * E);
    H.dt_b[size_t(r)] = theta[L.dt_b()];
    H.a_log[size_t(r)] = theta[L.a_log()];
    std::copy_n(theta + L.d(), hd, H.d.data() + size_t(r) * hd);
    std::vector<float> *proj[3] = {&H.q_proj, &H.k_proj, &H.v_proj};
    const size_t off[3] = {L.mq(), L.mk(), L.mv()};
    for (int j = 0; j < 3; ++j) {
        if (proj[j]->size() != size_t(n_heads) * hh) {
            // Identity for the heads not written yet.
            proj[j]->assign(size_t(n_heads) * hh, 0.0f);
            for (int32_t h = 0; h < n_heads; ++h)
                for (int i = 0; i < hd; ++i) (*proj[j])[size_t(h) * hh + size_t(i) * hd + i] = 1.0f;
        }
        const float *mt = theta + off[j];
        for (int o = 0; o < hd; ++o)
            for (int i = 0; i < hd; ++i) (*proj[j])[size_t(r) * hh + size_t(o) * hd + i] = mt[size_t(i) * hd + o];
    }
    if (L.gated) {
        if (H.gate_w.size() != size_t(n_heads) * size_t(E)) H.gate_w.assign(size_t(n_heads) * size_t(E), 0.0f);
        if (H.gate_b.size() != size_t(n_heads)) H.gate_b.assign(size_t(n_heads), 0.0f);
        if (H.gate_n.size() != size_t(n_heads)) H.gate_n.assign(size_t(n_heads), 0.0f);
        std::copy_n(theta + L.gate_w(), E, H.gate_w.data() + size_t(r) * E);
        H.gate_b[size_t(r)] = theta[L.gate_b()];
        H.gate_n[size_t(r)] = theta[L.gate_n()];
    }
    if (L.per_channel) {
        if (H.a_chan.size() != size_t(n_heads) * size_t(hd)) H.a_chan.assign(size_t(n_heads) * size_t(hd), 0.0f);
        std::copy_n(theta + L.a_chan(), hd, H.a_chan.data() + size_t(r) * hd);
    }
}

// ---- one chunk: forward, loss, backward ------------------------------------------------------------

chunk_loss head_chunk_loss_grad(const head_layout &L, const float *theta, const head_chunk &c, float *state,
                                float *grad, float grad_scale) {
    chunk_loss loss;
    const int n = c.n_tokens, hd = L.head_dim, E = L.n_embd;
    if (n <= 0) return loss;
    const size_t hh = L.hh(), nh = size_t(n) * hd;
    const rec_kernels::kernel_set kn = rec_kernels::select(hd);

    // Scratch: q', k', v', y, dy, dq', dk', dv' [n][hd]; dt, ddt [n]; state0 [hd·hd]; the
    // transposed raw input [hd][n]; the chunked scan's own scratch.
    thread_local std::vector<float> ws;
    const size_t scan_floats = recurrent_scan_scratch_floats(hd, scan_chunk);
    const size_t need = 8 * nh + 3 * size_t(n) + hh + nh + scan_floats;
    if (ws.size() < need) ws.resize(need);
    float *qp = ws.data(), *kp = qp + nh, *vp = kp + nh, *y = vp + nh, *dy = y + nh;
    float *dqp = dy + nh, *dkp = dqp + nh, *dvp = dkp + nh;
    float *dt = dvp + nh, *ddt = dt + n, *state0 = ddt + n, *tr = state0 + hh, *scan = tr + nh;
    float *gate = scan + scan_floats; // [n], gated heads
    if (L.gated && (!c.xq || !c.ow || !c.lse || !c.log_n_out))
        throw error("distill: a gated window + recurrent chunk needs xq, ow, lse and log_n_out");

    recurrent_head_weights w;
    w.head_dim = hd;
    w.n_embd = E;
    w.dt_w = theta + L.dt_w();
    w.dt_b = theta[L.dt_b()];
    w.a_log = theta[L.a_log()];
    w.d = theta + L.d();
    w.delta_rule = L.delta;
    if (L.per_channel) w.a_chan = theta + L.a_chan();

    // q' = q Mqᵀ etc.: [n][hd]·[hd][hd] with the transposed transforms.
    kn.gemm(n, hd, hd, c.q, size_t(hd), theta + L.mq(), size_t(hd), qp, size_t(hd), 0.0f, nullptr, rec_kernels::tri_none);
    kn.gemm(n, hd, hd, c.k, size_t(hd), theta + L.mk(), size_t(hd), kp, size_t(hd), 0.0f, nullptr, rec_kernels::tri_none);
    kn.gemm(n, hd, hd, c.v, size_t(hd), theta + L.mv(), size_t(hd), vp, size_t(hd), 0.0f, nullptr, rec_kernels::tri_none);
    recurrent_compute_dt(w, n, c.xn, size_t(E), dt);
    std::copy_n(state, hh, state0);
    recurrent_scan_chunked(w, n, qp, kp, vp, size_t(hd), dt, state, y, size_t(hd), scan_chunk, scan);

    if (L.gated) {
        // y holds the read-out r; the group's output is (1 − g)·ow + g·r.
        for (int t = 0; t < n; ++t) {
            gate[t] = wr_gate(theta + L.gate_w(), theta[L.gate_b()], theta[L.gate_n()], c.log_n_out[t],
                              c.xq + size_t(t) * E, E, c.lse[t]);
            const float *rt = y + size_t(t) * hd, *owt = c.ow + size_t(t) * hd, *ot = c.o + size_t(t) * hd;
            float *et = dy + size_t(t) * hd;
            // Without weights every sum runs as it always has (bit for bit the unweighted loss).
            double tgt = 0;
            double &acc = c.weight ? tgt : loss.sq_target;
            for (int i = 0; i < hd; ++i) {
                et[i] = (1.0f - gate[t]) * owt[i] + gate[t] * rt[i] - ot[i];
                acc += double(ot[i]) * ot[i];
            }
            if (c.weight) loss.sq_target += double(c.weight[t]) * tgt;
        }
    } else {
        for (int t = 0; t < n; ++t) {
            double tgt = 0;
            double &acc = c.weight ? tgt : loss.sq_target;
            for (size_t i = size_t(t) * hd; i < size_t(t + 1) * hd; ++i) {
                dy[i] = y[i] - c.o[i];
                acc += double(c.o[i]) * c.o[i];
            }
            if (c.weight) loss.sq_target += double(c.weight[t]) * tgt;
        }
    }
    // Per position: loss += w_t·eᵀGe (G = I without a metric), dy_t = 2·grad_scale·w_t·G e (G symmetric).
    for (int t = 0; t < n; ++t) {
        float *e = dy + size_t(t) * hd;
        double err = 0;
        double &acc = c.weight ? err : loss.sq_err;
        const float wt = c.weight ? c.weight[t] : 1.0f;
        if (c.metric) {
            float *ge = dqp; // dqp is free until the backward
            for (int i = 0; i < hd; ++i) ge[i] = kn.dot(c.metric + size_t(i) * hd, e, hd);
            for (int i = 0; i < hd; ++i) acc += double(e[i]) * ge[i];
            for (int i = 0; i < hd; ++i) e[i] = 2.0f * grad_scale * wt * ge[i];
        } else {
            for (int i = 0; i < hd; ++i) acc += double(e[i]) * e[i];
            for (int i = 0; i < hd; ++i) e[i] *= 2.0f * grad_scale * wt;
        }
        if (c.weight) loss.sq_err += double(wt) * err;
    }
    if (!grad) return loss;

    if (L.gated) {
        // dL/dg_t = dy_t·(r_t − ow_t); through g = sigmoid(gate_w·xq + gate_b − lse) into the gate's
        // parameters (lse is data); dL/dr_t = g_t·dy_t continues into the recurrence.
        float *gw = grad + L.gate_w();
        for (int t = 0; t < n; ++t) {
            const float *rt = y + size_t(t) * hd, *owt = c.ow + size_t(t) * hd;
            float *dyt = dy + size_t(t) * hd;
            double dg = 0;
            for (int i = 0; i < hd; ++i) dg += double(dyt[i]) * (rt[i] - owt[i]);
            const float dz = float(dg) * gate[t] * (1.0f - gate[t]);
            if (dz != 0.0f) {
                const float *xq = c.xq + size_t(t) * E;
                for (int i = 0; i < E; ++i) gw[i] += dz * xq[i];
                grad[L.gate_b()] += dz;
                grad[L.gate_n()] += dz * c.log_n_out[t];
            }
            for (int i = 0; i < hd; ++i) dyt[i] *= gate[t];
        }
    }

    std::fill(dqp, dqp + 3 * nh, 0.0f);
    std::fill(ddt, ddt + n, 0.0f);
    recurrent_head_grads g;
    g.dt_w = grad + L.dt_w();
    g.d = grad + L.d();
    if (L.per_channel) g.a_chan = grad + L.a_chan();
    // Truncated BPTT: dstate = nullptr means no gradient from after the chunk and none passed back.
    recurrent_scan_backward(w, n, qp, kp, vp, size_t(hd), dt, state0, dy, size_t(hd), dqp, dkp, dvp, size_t(hd), ddt,
                            nullptr, g);
    recurrent_dt_backward(w, n, c.xn, size_t(E), ddt, g, nullptr, 0);
    grad[L.dt_b()] += g.dt_b;
    grad[L.a_log()] += g.a_log;
    // dMᵀ[i][o] += Σ_t x_t[i]·dx'_t[o]  ([hd][n]·[n][hd]) for each of q, k, v.
    const float *raw[3] = {c.q, c.k, c.v};
    const float *dprime[3] = {dqp, dkp, dvp};
    const size_t off[3] = {L.mq(), L.mk(), L.mv()};
    for (int j = 0; j < 3; ++j) {
        kn.transpose(n, hd, raw[j], size_t(hd), tr);
        kn.gemm(hd, hd, n, tr, size_t(n), dprime[j], size_t(hd), grad + off[j], size_t(hd), 1.0f, nullptr,
                rec_kernels::tri_none);
    }
    return loss;
}

// ---- the whole run ---------------------------------------------------------------------------------

namespace {

// W of group grp when convert marked it window + recurrent (group_kind / group_window sized
// n_head_kv), else 0.
int32_t wr_window(const hybrid_layer &H, int32_t grp) {
    if (size_t(grp) >= H.group_kind.size() || H.group_kind[size_t(grp)] != replacement_kind::window_recurrent) return 0;
    return size_t(grp) < H.group_window.size() ? H.group_window[size_t(grp)] : 0;
}

// Its sink rows S (group_sinks, optional), 0 for other groups.
int32_t wr_sinks(const hybrid_layer &H, int32_t grp) {
    if (wr_window(H, grp) == 0) return 0;
    return size_t(grp) < H.group_sinks.size() ? H.group_sinks[size_t(grp)] : 0;
}

// RoPE cos/sin of positions [0, len) as the engine computes them (context.cpp prepare_rope).
void rope_table(const model &m, int64_t len, std::vector<float> &cs, std::vector<float> &sn) {
    const model_hparams &hp = m.hparams();
    const int half = hp.rope_dim / 2;
    cs.resize(size_t(len) * half);
    sn.resize(size_t(len) * half);
    std::vector<double> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        inv[size_t(i)] = std::pow(double(hp.rope_freq_base), -2.0 * i / hp.rope_dim);
        if (!m.rope_freq_factors().empty()) inv[size_t(i)] /= m.rope_freq_factors()[size_t(i)];
    }
    for (int64_t t = 0; t < len; ++t) {
        const double p = double(t) / hp.rope_scale;
        for (int i = 0; i < half; ++i) {
            cs[size_t(t) * half + i] = float(std::cos(p * inv[size_t(i)]));
            sn[size_t(t) * half + i] = float(std::sin(p * inv[size_t(i)]));
        }
    }
}

void rope_rows(const model_hparams &hp, const std::vector<float> &cs, const std::vector<float> &sn, int64_t len,
               float *x) {
    const int half = hp.rope_dim / 2, hd = hp.head_dim;
    for (int64_t t = 0; t < len; ++t) {
        float *v = x + size_t(t) * hd;
        const float *c = cs.data() + size_t(t) * half, *s = sn.data() + size_t(t) * half;
        for (int i = 0; i < half; ++i) {
            float &a = hp.rope == rope_style::normal ? v[2 * i] : v[i];
            float &b = hp.rope == rope_style::normal ? v[2 * i + 1] : v[i + half];
            const float x0 = a, y0 = b;
            a = x0 * c[i] - y0 * s[i];
            b = x0 * s[i] + y0 * c[i];
        }
    }
}

// o_win[t] = softmax_{j in [0, S) ∪ [t-W+1, t]}(qr_t·kr_j/√hd) v_j for t < len: the exact window
// of W tokens plus S sink rows over one sequence (qr, kr: RoPE'd [len][hd]; v, out: [len][hd]).
// lse (optional, [len]): each query's log-sum-exp of its window scores.
void window_attention(int64_t len, int hd, int32_t W, int32_t S, const float *qr, const float *kr, const float *v,
                      float *out, float *lse = nullptr) {
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<float> sc(static_cast<size_t>(W) + size_t(S));
    std::vector<int64_t> pos(sc.size());
    for (int64_t t = 0; t < len; ++t) {
        const int64_t lo = std::max<int64_t>(0, t - W + 1);
        int n = 0;
        for (int64_t j = 0; j < std::min<int64_t>(S, lo); ++j) pos[size_t(n++)] = j;
        for (int64_t j = lo; j <= t; ++j) pos[size_t(n++)] = j;
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < n; ++j) {
            const float *kj = kr + size_t(pos[size_t(j)]) * hd, *qt = qr + size_t(t) * hd;
            float d = 0;
            for (int i = 0; i < hd; ++i) d += qt[i] * kj[i];
            sc[size_t(j)] = d * scale;
            mx = std::max(mx, sc[size_t(j)]);
        }
        float sum = 0;
        for (int j = 0; j < n; ++j) sum += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
        if (lse) lse[t] = mx + std::log(sum);
        float *o = out + size_t(t) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int j = 0; j < n; ++j) {
            const float w = sc[size_t(j)] / sum, *vj = v + size_t(pos[size_t(j)]) * hd;
            for (int i = 0; i < hd; ++i) o[i] += w * vj[i];
        }
    }
}

// lse[t] = log Σ_{j<=t} exp(qr_t·kr_j/√hd): the full causal attention's normaliser (the window's
// plus what left it), in double.
void causal_lse(int64_t len, int hd, const float *qr, const float *kr, double *lse) {
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<float> sc(static_cast<size_t>(len));
    for (int64_t t = 0; t < len; ++t) {
        const float *qt = qr + size_t(t) * hd;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
            const float *kj = kr + size_t(j) * hd;
            float d = 0;
            for (int i = 0; i < hd; ++i) d += qt[i] * kj[i];
            sc[size_t(j)] = d * scale;
            mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += std::exp(double(sc[size_t(j)] - mx));
        lse[t] = double(mx) + std::log(sum);
    }
}

// The value a gated head's lse takes at queries where nothing has left the window: the gate is 0
// there (exp(lse − z) overflows to infinity).
constexpr float no_outside_lse = 1e30f;

// Sequences whose full attention normaliser initialises the gates (their mean log-mass outside
// the window): a few suffice for one scalar per head, and each costs O(len²·hd) per head.
constexpr size_t gate_init_sequences = 4;

double metric_sq(const float *G, const float *e, int hd) {
    if (!G) {
        double s = 0;
        for (int i = 0; i < hd; ++i) s += double(e[i]) * e[i];
        return s;
    }
    double s = 0;
    for (int a = 0; a < hd; ++a) {
        double ge = 0;
        for (int b = 0; b < hd; ++b) ge += double(G[size_t(a) * hd + b]) * e[b];
        s += double(e[a]) * ge;
    }
    return s;
}

} // namespace

std::vector<std::vector<int32_t>> calibration_sequences(const model &m, const std::vector<int32_t> &tokens, int32_t seq_len) {
    const tokenizer &vocab = m.vocab();
    const bool bos_mode = !tokens.empty() && vocab.bos() >= 0 && tokens[0] == vocab.bos();
    std::vector<std::vector<int32_t>> seqs;
    for (size_t pos = 0; pos < tokens.size();) {
        std::vector<int32_t> s;
        if (bos_mode && tokens[pos] != vocab.bos()) s.push_back(vocab.bos());
        const size_t take = std::min(size_t(seq_len) - s.size(), tokens.size() - pos);
        s.insert(s.end(), tokens.begin() + int64_t(pos), tokens.begin() + int64_t(pos + take));
        pos += take;
        if (s.size() >= 2) seqs.push_back(std::move(s));
    }
    return seqs;
}

std::vector<repeated_span> repeat_spans(std::vector<int32_t> &seq, int32_t count, int32_t min_gap, uint64_t seed) {
    constexpr int32_t min_len = 8, max_len = 32;
    uint64_t st = seed;
    const int64_t n = int64_t(seq.size());
    std::vector<repeated_span> spans;
    for (int32_t c = 0; c < count; ++c) {
        const int64_t len = min_len + int64_t(splitmix64(st) % uint64_t(max_len - min_len + 1));
        // Source [s, s + len) with s >= 1, copy at [d, d + len) with d >= s + len + min_gap and
        // d + len <= n: d is drawn first from where a source fits before it, then s.
        const int64_t d_lo = 1 + len + min_gap, d_hi = n - len;
        if (d_hi < d_lo) break;
        const int64_t d = d_lo + int64_t(splitmix64(st) % uint64_t(d_hi - d_lo + 1));
        const int64_t s = 1 + int64_t(splitmix64(st) % uint64_t(d - len - min_gap));
        std::copy(seq.begin() + s, seq.begin() + s + len, seq.begin() + d);
        spans.push_back({s, d, len});
    }
    return spans;
}

namespace {
// Names for the drills' facts: common, short, each a few tokens in any vocabulary.
constexpr const char *drill_names[] = {"Anna",  "Boris", "Clara", "Daniel", "Elena", "Felix", "Grace", "Hugo",
                                       "Irene", "Jonas", "Karen", "Lukas",  "Maria", "Nora",  "Oscar", "Paula",
                                       "Quinn", "Rosa",  "Simon", "Tessa",  "Ulrich", "Vera", "Walter", "Yvonne"};
} // namespace

retrieval_drill make_retrieval_drill(const tokenizer &vocab, const std::vector<int32_t> &filler, int32_t seq_len,
                                     int32_t min_gap, int32_t max_gap, float weight, uint64_t seed) {
    if (filler.empty()) throw error("distill: retrieval drills need filler tokens");
    uint64_t st = seed;
    retrieval_drill d;
    d.name = drill_names[splitmix64(st) % (sizeof drill_names / sizeof drill_names[0])];
    d.code = 10000 + int(splitmix64(st) % 90000);
    const std::string code = std::to_string(d.code);
    const auto needle = vocab.encode("\nNote: the locker code of " + d.name + " is " + code + ".\n", false, false);
    const std::string q_text = "\nQuestion: what is the locker code of " + d.name + "? Answer:";
    const auto question = vocab.encode(q_text, false, false);
    // The answer's tokens as they follow the question in one text (a sentencepiece vocabulary's
    // dummy space prefix or a merge across the boundary would make a separate encoding differ).
    auto answer = vocab.encode(q_text + " " + code, false, false);
    if (answer.size() > question.size() && std::equal(question.begin(), question.end(), answer.begin()))
        answer.erase(answer.begin(), answer.begin() + int64_t(question.size()));
    else
        answer = vocab.encode(" " + code, false, false);
    const int64_t bos = vocab.bos() >= 0 ? 1 : 0;
    const int64_t fixed = bos + int64_t(needle.size() + question.size() + answer.size());
    // gap = tokens from the needle's first to the answer's first = needle + filler + question.
    const int64_t gap_lo = std::max<int64_t>(min_gap, int64_t(needle.size() + question.size()));
    const int64_t gap_hi = std::min<int64_t>(max_gap, int64_t(seq_len) - bos - int64_t(answer.size()));
    if (answer.empty() || gap_hi < gap_lo || fixed > seq_len)
        throw error("distill: a retrieval drill needs sequences of at least " +
                    std::to_string(bos + gap_lo + int64_t(answer.size())) + " tokens (seq_len " +
                    std::to_string(seq_len) + ")");
    const int64_t gap = gap_lo + int64_t(splitmix64(st) % uint64_t(gap_hi - gap_lo + 1));
    // The needle starts anywhere that leaves room for the gap and the answer.
    const int64_t nb_lo = bos, nb_hi = int64_t(seq_len) - gap - int64_t(answer.size());
    d.needle_begin = nb_lo + int64_t(splitmix64(st) % uint64_t(nb_hi - nb_lo + 1));
    d.answer_begin = d.needle_begin + gap;
    d.question_begin = d.answer_begin - int64_t(question.size());
    d.answer_len = int64_t(answer.size());
    size_t f = size_t(splitmix64(st) % filler.size());
    auto put_filler = [&](int64_t until) {
        while (int64_t(d.tokens.size()) < until) {
            d.tokens.push_back(filler[f]);
            f = (f + 1) % filler.size();
        }
    };
    if (bos) d.tokens.push_back(vocab.bos());
    put_filler(d.needle_begin);
    d.tokens.insert(d.tokens.end(), needle.begin(), needle.end());
    put_filler(d.question_begin);
    d.tokens.insert(d.tokens.end(), question.begin(), question.end());
    d.tokens.insert(d.tokens.end(), answer.begin(), answer.end());
    put_filler(seq_len);
    d.weight.assign(size_t(seq_len), 1.0f);
    // The positions whose next token is an answer token: the question's last and the answer's
    // but last.
    for (int64_t t = d.answer_begin - 1; t < d.answer_begin + d.answer_len - 1; ++t) d.weight[size_t(t)] = weight;
    return d;
}

distill_report distill_heads(const model &m, const std::vector<int32_t> &tokens, std::vector<hybrid_layer> &layers,
                             const distill_params &p, const distill_callback &cb) {
    const model_hparams &hp = m.hparams();
    const int E = hp.n_embd, hd = hp.head_dim, g = hp.group_size(), nq = hp.n_head * hd;
    if (layers.size() != size_t(hp.n_layer)) throw error("distill: expected one hybrid layer per model layer");
    if (p.steps < 0) throw error("distill: steps must not be negative");
    if (p.seq_len < 2 || p.chunk < 1 || p.batch < 1) throw error("distill: seq_len >= 2, chunk >= 1 and batch >= 1 needed");
    if (m.is_hybrid()) throw error("distill: the teacher must be the original model, not a hybrid");
    const float lr = p.lr > 0 ? p.lr : distill_params::default_lr;
    const size_t hh = size_t(hd) * size_t(hd);

    std::vector<head_ref> heads;
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const hybrid_layer &H = layers[size_t(l)];
        const size_t R = H.recurrent_groups.size() * size_t(g);
        if (H.dt_w.size() != R * E || H.dt_b.size() != R || H.a_log.size() != R || H.d.size() != R * hd)
            throw error("distill: layer " + std::to_string(l) + " has parameters for the wrong number of heads");
        for (size_t gi = 0; gi < H.recurrent_groups.size(); ++gi)
            for (int j = 0; j < g; ++j)
                heads.push_back({l, H.recurrent_groups[gi], H.recurrent_groups[gi] * g + j, int32_t(gi) * g + j,
                                 int32_t(gi), wr_window(H, H.recurrent_groups[gi]), wr_sinks(H, H.recurrent_groups[gi])});
    }
    distill_report rep;
    rep.steps = p.steps;
    if (heads.empty()) return rep;
    // Per head: recurrent and additive window + recurrent heads share one layout, gated ones add the gate.
    std::vector<head_layout> Ls;
    for (auto &h : heads) {
        Ls.emplace_back(E, hd, p.wr_gated && h.window > 0);
        Ls.back().delta = p.delta_rule;
        Ls.back().per_channel = p.per_channel_decay;
    }
    for (auto &H : layers) H.delta_rule = p.delta_rule;

    std::vector<std::vector<int32_t>> seq_tokens = calibration_sequences(m, tokens, p.seq_len);
    if (seq_tokens.empty()) throw error("distill: the calibration text needs at least 2 tokens");
    if (p.repeat_spans < 0) throw error("distill: repeat_spans must not be negative");
    if (p.repeat_spans > 0) {
        // Copies land beyond the widest window + recurrent window trained here, where only the
        // recurrent read-out (not the exact window) can see the source.
        int32_t min_gap = 64;
        for (auto &h : heads) min_gap = std::max(min_gap, h.window + h.sinks);
        const size_t holdout = size_t(std::max(0, p.holdout_sequences));
        for (size_t si = 0; si + holdout < seq_tokens.size(); ++si) {
            uint64_t st = p.seed ^ (0x5eedULL << 32) ^ uint64_t(si);
            repeat_spans(seq_tokens[si], p.repeat_spans, min_gap, splitmix64(st));
        }
    }
    // Retrieval drills: extra training sequences after the training ones (the held-out ones stay
    // last), with per-position loss weights; filler from the training sequences' text.
    std::vector<std::vector<float>> seq_weights(seq_tokens.size()); // empty: all 1
    if (p.drills < 0 || !(p.drill_weight > 0) || !std::isfinite(p.drill_weight))
        throw error("distill: drills must not be negative and drill_weight must be positive");
    if (p.drills > 0) {
        const size_t holdout = size_t(std::max(0, p.holdout_sequences));
        const size_t n_tr = seq_tokens.size() > holdout ? seq_tokens.size() - holdout : 0;
        std::vector<int32_t> filler;
        for (size_t si = 0; si < n_tr; ++si)
            for (int32_t t : seq_tokens[si])
                if (t != m.vocab().bos()) filler.push_back(t);
        // The needle lies beyond every window trained or compared here.
        int32_t min_gap = p.drill_min_gap;
        for (auto &h : heads) min_gap = std::max(min_gap, h.window + h.sinks + 1);
        if (p.compare_window > 0) min_gap = std::max(min_gap, p.compare_window + p.compare_sinks + 1);
        const int32_t max_gap = std::max(min_gap, p.drill_max_gap);
        std::vector<std::vector<int32_t>> drill_tokens;
        std::vector<std::vector<float>> drill_weights;
        for (int32_t di = 0; di < p.drills; ++di) {
            uint64_t st = p.seed ^ (0xd7177ULL << 32) ^ uint64_t(di);
            retrieval_drill d = make_retrieval_drill(m.vocab(), filler, p.seq_len, min_gap, max_gap, p.drill_weight,
                                                     splitmix64(st));
            drill_tokens.push_back(std::move(d.tokens));
            drill_weights.push_back(std::move(d.weight));
        }
        seq_tokens.insert(seq_tokens.begin() + int64_t(n_tr), drill_tokens.begin(), drill_tokens.end());
        seq_weights.insert(seq_weights.begin() + int64_t(n_tr), drill_weights.begin(), drill_weights.end());
    }
    std::vector<sequence> seqs;
    int64_t N = 0;
    for (auto &s : seq_tokens) {
        sequence q;
        q.start = N;
        q.length = int32_t(s.size());
        q.n_chunks = (q.length + p.chunk - 1) / p.chunk;
        N += q.length;
        seqs.push_back(q);
    }
    rep.calib_tokens = N;
    rep.n_sequences = int32_t(seqs.size());

    // Capture layout.
    capture_store cap;
    cap.n_tokens = N;
    cap.xn_off.assign(size_t(hp.n_layer), -1);
    int64_t floats = 0;
    std::vector<std::vector<int64_t>> group_k(size_t(hp.n_layer)), group_v(size_t(hp.n_layer));
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const hybrid_layer &H = layers[size_t(l)];
        if (H.recurrent_groups.empty()) continue;
        cap.xn_off[size_t(l)] = floats;
        floats += N * E;
        for (size_t gi = 0; gi < H.recurrent_groups.size(); ++gi) {
            group_k[size_t(l)].push_back(floats);
            floats += N * hd;
            group_v[size_t(l)].push_back(floats);
            floats += N * hd;
        }
    }
    if (p.drills > 0) { // the loss weight of every captured position
        cap.w_off = floats;
        floats += N;
    }
    for (auto &h : heads) {
        cap.k_off.push_back(group_k[size_t(h.layer)][size_t(h.group_index)]);
        cap.v_off.push_back(group_v[size_t(h.layer)][size_t(h.group_index)]);
        cap.q_off.push_back(floats);
        floats += N * hd;
        cap.o_off.push_back(floats);
        floats += N * hd;
        const bool gated = p.wr_gated && h.window > 0;
        cap.ow_off.push_back(gated ? floats : -1);
        floats += gated ? N * hd : 0;
        cap.lse_off.push_back(gated ? floats : -1);
        floats += gated ? N : 0;
    }
    std::string dir = p.scratch_dir;
    if (dir.empty()) {
        const char *t = std::getenv("TMPDIR");
        dir = t && *t ? t : "/tmp";
    }
    cap.create(dir, size_t(floats));
    rep.capture_file_bytes = cap.bytes;

    thread_pool pool(p.n_threads > 0 ? p.n_threads : thread_pool::default_threads());

    // Output-projection metric per head: G = Wo_hᵀ Wo_h / (trace / hd), Wo_h = the head's hd
    // columns of attn_output [n_embd][n_head·hd].
    std::vector<std::vector<float>> metrics(heads.size());
    if (p.output_metric) {
        pool.parallel_for(int64_t(heads.size()), [&](int64_t i, int) {
            const weight_matrix &wo = m.layers()[size_t(heads[size_t(i)].layer)].wo;
            std::vector<float> row(size_t(wo.n_in));
            std::vector<double> G(hh, 0.0);
            const int c0 = heads[size_t(i)].head * hd;
            for (int64_t r = 0; r < wo.n_out; ++r) {
                dequantize_row(wo.type, wo.data + size_t(r) * wo.row_bytes, row.data(), wo.n_in);
                for (int a = 0; a < hd; ++a)
                    for (int b = 0; b < hd; ++b) G[size_t(a) * hd + b] += double(row[size_t(c0 + a)]) * row[size_t(c0 + b)];
            }
            double tr = 0;
            for (int a = 0; a < hd; ++a) tr += G[size_t(a) * hd + a];
            const double norm = tr > 0 ? double(hd) / tr : 1.0;
            metrics[size_t(i)].resize(hh);
            for (size_t j = 0; j < hh; ++j) metrics[size_t(i)][j] = float(G[j] * norm);
        });
    }

    // The last holdout_sequences sequences are not trained on; held-out losses are measured on
    // them (on all sequences when there is no hold-out).
    if (p.holdout_sequences < 0 || (p.holdout_sequences > 0 && p.holdout_sequences >= int32_t(seqs.size())))
        throw error("distill: holding out " + std::to_string(p.holdout_sequences) + " of " +
                    std::to_string(seqs.size()) + " calibration sequences leaves none to train on; give more text");
    const size_t n_train = seqs.size() - size_t(p.holdout_sequences);
    const size_t eval_first = p.holdout_sequences > 0 ? n_train : 0;
    // Per head: Σ‖o_t‖² over all tokens and over the held-out ones; a plain window's error there.
    std::vector<double> o_sq(heads.size(), 0.0), o_sq_eval(heads.size(), 0.0);
    std::vector<double> win_err(heads.size(), 0.0), win_err_metric(heads.size(), 0.0);
    // Gated heads: Σ and count of log Z_out (the log attention mass outside the window) over the
    // first training sequences, for the gate's initial offset.
    std::vector<double> log_out_sum(heads.size(), 0.0);
    std::vector<int64_t> log_out_n(heads.size(), 0);

    // ---- 1. capture ----
    auto t_capture = clock_type::now();
    {
        context_params cp;
        cp.n_ctx = p.seq_len;
        cp.n_batch = p.n_batch;
        cp.n_threads = p.n_threads;
        context ctx(m, cp);
        int64_t seq_start = 0;
        std::vector<float> o_rows, rope_c, rope_s;
        bool any_wr = false;
        for (auto &h : heads) any_wr = any_wr || h.window > 0;
        if (hd > 512) throw error("distill: head_dim above 512 is not supported");
        // Inside eval: copy the normed input and the replaced heads' outputs of every token.
        ctx.set_layer_observer([&](int layer, int n, const float *xn, const float *attn_out) {
            if (cap.xn_off[size_t(layer)] < 0) return;
            const int64_t pos = seq_start + ctx.n_past();
            cap.write(cap.xn_off[size_t(layer)], pos, E, xn, n);
            for (size_t i = 0; i < heads.size(); ++i) {
                if (heads[i].layer != layer) continue;
                o_rows.resize(size_t(n) * hd);
                for (int t = 0; t < n; ++t)
                    std::memcpy(o_rows.data() + size_t(t) * hd, attn_out + size_t(t) * nq + size_t(heads[i].head) * hd,
                                size_t(hd) * sizeof(float));
                cap.write(cap.o_off[i], pos, hd, o_rows.data(), n);
            }
        });
        std::vector<float> logits;
        int64_t done = 0;
        for (size_t s = 0; s < seqs.size(); ++s) {
            seq_start = seqs[s].start;
            if (cap.w_off >= 0) {
                const std::vector<float> ones(size_t(seqs[s].length), 1.0f);
                const std::vector<float> &w = seq_weights[s].empty() ? ones : seq_weights[s];
                cap.write(cap.w_off, seq_start, 1, w.data(), seqs[s].length);
            }
            ctx.truncate(0);
            ctx.eval(seq_tokens[s], logits, false);
            // Raw q, k, v of the captured tokens, in parallel over (layer, block of 16 tokens).
            const int64_t len = seqs[s].length, blocks = (len + 15) / 16;
            std::vector<int32_t> lay;
            for (int32_t l = 0; l < hp.n_layer; ++l)
                if (cap.xn_off[size_t(l)] >= 0) lay.push_back(l);
            pool.parallel_for(int64_t(lay.size()) * blocks, [&](int64_t task, int) {
                thread_local std::vector<uint8_t> act;
                thread_local std::vector<float> x, out;
                const int32_t l = lay[size_t(task / blocks)];
                const layer_weights &W = m.layers()[size_t(l)];
                const int64_t t0 = seq_start + (task % blocks) * 16, rows = std::min<int64_t>(16, seq_start + len - t0);
                x.resize(size_t(16) * E);
                out.resize(size_t(16) * hd);
                cap.read(cap.xn_off[size_t(l)], t0, E, x.data(), rows);
                for (size_t i = 0; i < heads.size(); ++i) {
                    const head_ref &h = heads[i];
                    if (h.layer != l) continue;
                    auto project = [&](const weight_matrix &w, const std::vector<float> &bias, int row0, int64_t off) {
                        for (int64_t t = 0; t < rows; ++t)
                            project_rows(w, bias, row0, hd, x.data() + size_t(t) * E, act, out.data() + size_t(t) * hd);
                        cap.write(off, t0, hd, out.data(), rows);
                    };
                    project(W.wq, W.bq, h.head * hd, cap.q_off[i]);
                    if (h.r % g == 0) { // the group's first head writes the shared k, v
                        project(W.wk, W.bk, h.group * hd, cap.k_off[i]);
                        project(W.wv, W.bv, h.group * hd, cap.v_off[i]);
                    }
                }
            });
            cap.check();
            // Window pass: for window + recurrent heads the target becomes the residual
            // o_t − o_win_t (the head's read-out is added to the window's output); with
            // compare_window, a plain window's error on the held-out sequences.
            const bool eval_seq = s >= eval_first;
            if (any_wr || (p.compare_window > 0 && eval_seq)) {
                rope_table(m, len, rope_c, rope_s);
                pool.parallel_for(int64_t(heads.size()), [&](int64_t ii, int) {
                    const size_t i = size_t(ii);
                    const bool cmp = p.compare_window > 0 && eval_seq;
                    if (heads[i].window == 0 && !cmp) return;
                    thread_local std::vector<float> q, k, v, o, qr, kr, ow, lse;
                    thread_local std::vector<double> lse_full;
                    for (auto *a : {&q, &k, &v, &o, &qr, &kr, &ow}) a->resize(size_t(len) * hd);
                    lse.resize(size_t(len));
                    cap.read(cap.q_off[i], seq_start, hd, q.data(), len);
                    cap.read(cap.k_off[i], seq_start, hd, k.data(), len);
                    cap.read(cap.v_off[i], seq_start, hd, v.data(), len);
                    cap.read(cap.o_off[i], seq_start, hd, o.data(), len);
                    qr = q;
                    kr = k;
                    rope_rows(hp, rope_c, rope_s, len, qr.data());
                    rope_rows(hp, rope_c, rope_s, len, kr.data());
                    const float *G = p.output_metric ? metrics[i].data() : nullptr;
                    if (cmp) {
                        window_attention(len, hd, p.compare_window, p.compare_sinks, qr.data(), kr.data(), v.data(),
                                         ow.data());
                        for (int64_t t = 0; t < len; ++t) {
                            float e[512];
                            for (int d = 0; d < hd; ++d) e[d] = ow[size_t(t) * hd + d] - o[size_t(t) * hd + d];
                            win_err[i] += metric_sq(nullptr, e, hd);
                            win_err_metric[i] += metric_sq(G, e, hd);
                        }
                    }
                    for (int64_t t = 0; t < int64_t(len) * hd; ++t) {
                        o_sq[i] += double(o[size_t(t)]) * o[size_t(t)];
                        if (eval_seq) o_sq_eval[i] += double(o[size_t(t)]) * o[size_t(t)];
                    }
                    if (heads[i].window > 0) {
                        window_attention(len, hd, heads[i].window, heads[i].sinks, qr.data(), kr.data(), v.data(),
                                         ow.data(), lse.data());
                        if (cap.ow_off[i] < 0) { // additive: the head's target is the residual
                            for (size_t j = 0; j < size_t(len) * hd; ++j) o[j] -= ow[j];
                            cap.write(cap.o_off[i], seq_start, hd, o.data(), len);
                        } else {
                            // Gated: o stays the target; the window's output and normaliser are
                            // inputs. Queries before W + S have nothing outside the window.
                            const int64_t first = std::min<int64_t>(len, int64_t(heads[i].window) + heads[i].sinks);
                            if (s < std::min(gate_init_sequences, n_train)) {
                                lse_full.resize(size_t(len));
                                causal_lse(len, hd, qr.data(), kr.data(), lse_full.data());
                                for (int64_t t = first; t < len; ++t) {
                                    const double frac_in = std::exp(double(lse[size_t(t)]) - lse_full[size_t(t)]);
                                    if (frac_in < 1.0 - 1e-6) {
                                        log_out_sum[i] += lse_full[size_t(t)] + std::log1p(-frac_in);
                                        ++log_out_n[i];
                                    }
                                }
                            }
                            std::fill(lse.begin(), lse.begin() + first, no_outside_lse);
                            cap.write(cap.ow_off[i], seq_start, hd, ow.data(), len);
                            cap.write(cap.lse_off[i], seq_start, 1, lse.data(), len);
                        }
                    }
                });
                cap.check();
            }
            done += len;
            if (cb) {
                distill_progress pr;
                pr.phase = "capture";
                pr.done = done;
                pr.total = N;
                const double sec = seconds_since(t_capture);
                pr.tokens_per_s = sec > 0 ? double(done) / sec : 0;
                pr.eta_s = pr.tokens_per_s > 0 ? double(N - done) / pr.tokens_per_s : 0;
                if (!cb(pr)) throw cancelled_error("distillation cancelled during capture");
            }
        }
        ctx.set_layer_observer({});
    }
    rep.capture_seconds = seconds_since(t_capture);

    // Head i's tokens [t0, t0 + n) of sequence s, read into this thread's buffers.
    auto chunk_of = [&](size_t i, const sequence &s, int64_t t0, int32_t n) {
        thread_local chunk_buffers b;
        b.xn.resize(std::max(b.xn.size(), size_t(n) * E));
        for (auto *a : {&b.q, &b.k, &b.v, &b.o}) a->resize(std::max(a->size(), size_t(n) * hd));
        // A window + recurrent head's stream at query t holds the token leaving the window there,
        // t − W: xn, k, v come W rows earlier, zeros for t < W + S (nothing has left yet, or only
        // sink tokens, which stay: the state stays zero and, with v = 0, the output too, matching
        // a target residual of zero).
        const int64_t sh = heads[i].window;
        const int64_t z = std::clamp<int64_t>(sh + heads[i].sinks - t0, 0, n); // rows with t < W + S
        std::fill(b.xn.begin(), b.xn.begin() + z * E, 0.0f);
        std::fill(b.k.begin(), b.k.begin() + z * hd, 0.0f);
        std::fill(b.v.begin(), b.v.begin() + z * hd, 0.0f);
        if (n > z) {
            cap.read(cap.xn_off[size_t(heads[i].layer)], s.start + t0 + z - sh, E, b.xn.data() + z * E, n - z);
            cap.read(cap.k_off[i], s.start + t0 + z - sh, hd, b.k.data() + z * hd, n - z);
            cap.read(cap.v_off[i], s.start + t0 + z - sh, hd, b.v.data() + z * hd, n - z);
        }
        cap.read(cap.q_off[i], s.start + t0, hd, b.q.data(), n);
        cap.read(cap.o_off[i], s.start + t0, hd, b.o.data(), n);
        head_chunk c;
        if (cap.ow_off[i] >= 0) {
            b.xq.resize(std::max(b.xq.size(), size_t(n) * E));
            b.ow.resize(std::max(b.ow.size(), size_t(n) * hd));
            b.lse.resize(std::max(b.lse.size(), size_t(n)));
            cap.read(cap.xn_off[size_t(heads[i].layer)], s.start + t0, E, b.xq.data(), n);
            cap.read(cap.ow_off[i], s.start + t0, hd, b.ow.data(), n);
            cap.read(cap.lse_off[i], s.start + t0, 1, b.lse.data(), n);
            // At query t the tokens S..t−W have left: t − W − S + 1 of them.
            b.log_n_out.resize(std::max(b.log_n_out.size(), size_t(n)));
            for (int32_t j = 0; j < n; ++j) {
                const int64_t n_out = t0 + j - sh - heads[i].sinks + 1;
                b.log_n_out[size_t(j)] = n_out > 0 ? std::log(float(n_out)) : 0.0f;
            }
            c.xq = b.xq.data();
            c.ow = b.ow.data();
            c.lse = b.lse.data();
            c.log_n_out = b.log_n_out.data();
        }
        if (cap.w_off >= 0) {
            b.weight.resize(std::max(b.weight.size(), size_t(n)));
            cap.read(cap.w_off, s.start + t0, 1, b.weight.data(), n);
            c.weight = b.weight.data();
        }
        c.n_tokens = n;
        c.xn = b.xn.data();
        c.q = b.q.data();
        c.k = b.k.data();
        c.v = b.v.data();
        c.o = b.o.data();
        return c;
    };

    // Loss of every head over all sequences from a zero state (forward only).
    // ev_err / ev_metric: the same over the held-out sequences, plain and in the output metric.
    std::vector<double> ev_err, ev_metric, ev_target;
    auto evaluate = [&](const std::vector<head_state> &hs, std::vector<double> &err, std::vector<double> &tgt) {
        err.assign(heads.size(), 0.0);
        tgt.assign(heads.size(), 0.0);
        ev_err.assign(heads.size(), 0.0);
        ev_metric.assign(heads.size(), 0.0);
        ev_target.assign(heads.size(), 0.0);
        pool.parallel_for(int64_t(heads.size()), [&](int64_t i, int) {
            std::vector<float> st(hh), st2(hh);
            for (size_t si = 0; si < seqs.size(); ++si) {
                const sequence &s = seqs[si];
                std::fill(st.begin(), st.end(), 0.0f);
                std::fill(st2.begin(), st2.end(), 0.0f);
                for (int64_t t0 = 0; t0 < s.length; t0 += 256) {
                    const int32_t n = int32_t(std::min<int64_t>(256, s.length - t0));
                    head_chunk c = chunk_of(size_t(i), s, t0, n);
                    c.weight = nullptr; // reported losses are plain means over tokens
                    const chunk_loss cl =
                        head_chunk_loss_grad(Ls[size_t(i)], hs[size_t(i)].theta.data(), c, st.data(), nullptr, 0.0f);
                    err[size_t(i)] += cl.sq_err;
                    tgt[size_t(i)] += cl.sq_target;
                    if (si < eval_first) continue;
                    ev_err[size_t(i)] += cl.sq_err;
                    ev_target[size_t(i)] += cl.sq_target;
                    if (p.output_metric) {
                        c.metric = metrics[size_t(i)].data();
                        ev_metric[size_t(i)] +=
                            head_chunk_loss_grad(Ls[size_t(i)], hs[size_t(i)].theta.data(), c, st2.data(), nullptr, 0.0f)
                                .sq_err;
                    } else {
                        ev_metric[size_t(i)] += cl.sq_err;
                    }
                }
            }
            // A window + recurrent head's chunk target is the residual: scale-free losses are
            // relative to the true output ‖o‖² instead (captured in the window pass).
            if (heads[size_t(i)].window > 0) tgt[size_t(i)] = o_sq[size_t(i)];
        });
        cap.check();
    };

    // ---- 2. training ----
    std::vector<head_state> hs(heads.size());
    fnv64 cfg;
    cfg.add_value(m.fingerprint());
    cfg.add(tokens.data(), tokens.size() * sizeof(int32_t));
    cfg.add_value(p.steps);
    cfg.add_value(lr);
    cfg.add_value(p.seed);
    cfg.add_value(p.seq_len);
    cfg.add_value(p.chunk);
    cfg.add_value(p.batch);
    cfg.add_value(p.output_metric);
    if (p.holdout_sequences > 0) cfg.add_value(p.holdout_sequences); // absent: hashes of older runs stay valid
    if (p.repeat_spans > 0) cfg.add_value(p.repeat_spans);
    if (p.drills > 0) { // absent: hashes of older runs stay valid
        cfg.add_value(p.drills);
        cfg.add_value(p.drill_weight);
        cfg.add_value(p.drill_min_gap);
        cfg.add_value(p.drill_max_gap);
    }
    rep.train_state_bytes = 0;
    for (size_t i = 0; i < heads.size(); ++i) {
        head_state &h = hs[i];
        const head_layout &L = Ls[i];
        const size_t P = L.size();
        h.theta.resize(P);
        const hybrid_layer &H0 = layers[size_t(heads[i].layer)];
        head_params_from_layer(H0, heads[i].r, L, h.theta.data());
        if (L.gated && H0.gate_b.empty()) {
            // A fresh gated head: the read-out estimates the attention output of what left the
            // window, a weighted mean of values, so it starts from v' = v (convert's initial
            // window + recurrent heads have v_proj = 0, for the additive form); the gate starts
            // at the measured mean log-mass outside the window, independent of the input and of
            // how many tokens have left (gate_n = 0: starting it at 1, "every token outside adds
            // the same mass", measured worse on SmolLM2-135M, docs/quality.md).
            for (int a = 0; a < hd; ++a)
                for (int b = 0; b < hd; ++b) h.theta[L.mv() + size_t(a) * hd + b] = float(a == b);
            std::fill_n(h.theta.begin() + int64_t(L.gate_w()), E, 0.0f);
            h.theta[L.gate_b()] = log_out_n[i] > 0 ? float(log_out_sum[i] / double(log_out_n[i])) : 0.0f;
            h.theta[L.gate_n()] = 0.0f;
        }
        h.m.assign(P, 0.0f);
        h.v.assign(P, 0.0f);
        h.grad.assign(P, 0.0f);
        h.states.assign(seqs.size() * hh, 0.0f);
        cfg.add_value(heads[i].layer);
        cfg.add_value(heads[i].head);
        if (heads[i].window > 0) cfg.add_value(heads[i].window);
        if (heads[i].sinks > 0) cfg.add_value(heads[i].sinks); // absent: hashes of older runs stay valid
        if (L.gated) cfg.add_value(int32_t(-1));                 // likewise
        if (L.delta) cfg.add_value(int32_t(-2));                 // likewise
        if (L.per_channel) cfg.add_value(int32_t(-3));           // likewise
        cfg.add(h.theta.data(), P * sizeof(float));
        rep.train_state_bytes += (4 * P + seqs.size() * hh) * sizeof(float);
    }

    auto t_eval0 = clock_type::now();
    std::vector<double> err0, tgt0;
    evaluate(hs, err0, tgt0);
    rep.evaluate_seconds += seconds_since(t_eval0);

    int64_t step = 0;
    if (p.resume) {
        if (p.checkpoint_path.empty()) throw error("distill: --resume needs a checkpoint path");
        step = read_checkpoint(p.checkpoint_path, cfg.h, hs);
        step = std::min<int64_t>(step, p.steps);
        rep.resumed_from_step = int32_t(step);
    }

    auto t_train = clock_type::now();
    auto last_ckpt = clock_type::now();
    int64_t tokens_per_step_sum = 0;
    std::vector<chunk_item> epoch_cache;
    int64_t cached_epoch = -1;
    int64_t n_items = 0;
    const std::vector<sequence> train_seqs(seqs.begin(), seqs.begin() + int64_t(n_train)); // same indices as seqs
    for (auto &s : train_seqs) n_items += s.n_chunks;
    auto item_at = [&](int64_t idx) {
        const int64_t e = idx / n_items;
        if (e != cached_epoch) {
            epoch_cache = epoch_items(train_seqs, p.seed, e);
            cached_epoch = e;
        }
        return epoch_cache[size_t(idx % n_items)];
    };
    int64_t block = 1;
    const int64_t start_step = step;
    std::vector<double> block_rel(heads.size());
    // Per head: its own layout's factors (the layouts differ in length: gate, per-channel decay).
    std::vector<std::vector<float>> mults;
    for (const head_layout &L : Ls) mults.push_back(lr_factors(L));
    while (step < p.steps) {
        const int64_t k_steps = std::min<int64_t>(block, p.steps - step);
        std::vector<chunk_item> items;
        for (int64_t s = step; s < step + k_steps; ++s)
            for (int b = 0; b < p.batch; ++b) items.push_back(item_at(s * p.batch + b));
        int64_t block_tokens = 0;
        for (auto &it : items) {
            const sequence &s = seqs[size_t(it.seq)];
            block_tokens += std::min<int64_t>(p.chunk, s.length - int64_t(it.chunk) * p.chunk);
        }
        auto t_block = clock_type::now();
        pool.parallel_for(int64_t(heads.size()), [&](int64_t i, int) {
            head_state &h = hs[size_t(i)];
            double rel = 0;
            for (int64_t s = 0; s < k_steps; ++s) {
                const chunk_item *its = items.data() + s * p.batch;
                int64_t step_tokens = 0;
                for (int b = 0; b < p.batch; ++b)
                    step_tokens += std::min<int64_t>(p.chunk, seqs[size_t(its[b].seq)].length - int64_t(its[b].chunk) * p.chunk);
                std::fill(h.grad.begin(), h.grad.end(), 0.0f);
                chunk_loss tot;
                for (int b = 0; b < p.batch; ++b) {
                    const sequence &sq = seqs[size_t(its[b].seq)];
                    const int64_t t0 = int64_t(its[b].chunk) * p.chunk;
                    const int32_t n = int32_t(std::min<int64_t>(p.chunk, sq.length - t0));
                    float *st = h.states.data() + size_t(its[b].seq) * hh;
                    if (its[b].chunk == 0) std::fill(st, st + hh, 0.0f);
                    head_chunk c = chunk_of(size_t(i), sq, t0, n);
                    if (p.output_metric) c.metric = metrics[size_t(i)].data();
                    const chunk_loss cl =
                        head_chunk_loss_grad(Ls[size_t(i)], h.theta.data(), c, st, h.grad.data(), 1.0f / float(step_tokens));
                    tot.sq_err += cl.sq_err;
                    tot.sq_target += cl.sq_target;
                }
                adam_step(h, step + s + 1, lr_at(step + s, p.steps, lr), mults[size_t(i)]);
                rel += tot.sq_target > 0 ? tot.sq_err / tot.sq_target : 0;
            }
            block_rel[size_t(i)] = rel / double(k_steps);
        });
        cap.check();
        const double block_sec = seconds_since(t_block);
        step += k_steps;
        tokens_per_step_sum += block_tokens;
        for (size_t i = 0; i < heads.size(); ++i)
            if (!std::isfinite(block_rel[i]) || !std::isfinite(hs[i].theta[Ls[i].dt_b()]))
                throw error("distill: the loss of layer " + std::to_string(heads[i].layer) + " head " +
                            std::to_string(heads[i].head) + " diverged (not finite); try a smaller --lr");
        // Blocks of about a second, and at most 5% of the run: progress, cancellation and
        // checkpoints happen between them.
        block = std::clamp<int64_t>(int64_t(double(k_steps) / std::max(1e-3, block_sec)), 1,
                                    std::max<int64_t>(1, p.steps / 20));
        bool stop = false;
        if (cb) {
            distill_progress pr;
            pr.phase = "train";
            pr.done = step;
            pr.total = p.steps;
            const double sec = seconds_since(t_train);
            pr.tokens_per_s = sec > 0 ? double(tokens_per_step_sum) / sec : 0;
            double mean_rel = 0;
            for (double r : block_rel) mean_rel += r;
            pr.rel_loss = mean_rel / double(heads.size());
            pr.eta_s = step > start_step ? sec / double(step - start_step) * double(p.steps - step) : 0;
            stop = !cb(pr);
        }
        if (!p.checkpoint_path.empty() &&
            (stop || step == p.steps || seconds_since(last_ckpt) >= p.checkpoint_seconds)) {
            write_checkpoint(p.checkpoint_path, cfg.h, step, hs);
            last_ckpt = clock_type::now();
        }
        if (stop && step < p.steps)
            throw cancelled_error("distillation stopped at step " + std::to_string(step) + " of " +
                                  std::to_string(p.steps) +
                                  (p.checkpoint_path.empty() ? std::string()
                                                             : "; checkpoint written to " + p.checkpoint_path));
    }
    rep.train_seconds = seconds_since(t_train);
    rep.trained_tokens = int64_t(p.steps) * p.batch * p.chunk;

    // ---- 3. evaluation and write-back ----
    auto t_eval1 = clock_type::now();
    std::vector<double> err1, tgt1;
    evaluate(hs, err1, tgt1);
    int64_t N_eval = 0;
    for (size_t si = eval_first; si < seqs.size(); ++si) N_eval += seqs[si].length;
    rep.heldout_tokens = N_eval;
    rep.evaluate_seconds += seconds_since(t_eval1);
    for (auto &H : layers) H.final_loss.assign(H.recurrent_groups.size() * size_t(g), 0.0f);
    for (size_t i = 0; i < heads.size(); ++i) {
        const head_ref &h = heads[i];
        hybrid_layer &H = layers[size_t(h.layer)];
        head_params_to_layer(Ls[i], hs[i].theta.data(), h.r, int32_t(H.recurrent_groups.size()) * g, H);
        distill_head_result r;
        r.layer = h.layer;
        r.group = h.group;
        r.head = h.head;
        r.initial_loss = float(err0[i] / double(N));
        r.final_loss = float(err1[i] / double(N));
        r.initial_rel = tgt0[i] > 0 ? float(err0[i] / tgt0[i]) : 0.0f;
        r.final_rel = tgt1[i] > 0 ? float(err1[i] / tgt1[i]) : 0.0f;
        r.window = h.window;
        r.sinks = h.sinks;
        const double n_eval = double(N_eval);
        r.heldout_loss = float(ev_err[i] / n_eval);
        r.heldout_metric_loss = float(ev_metric[i] / n_eval);
        r.heldout_target = float((heads[i].window > 0 ? o_sq_eval[i] : ev_target[i]) / n_eval);
        if (p.compare_window > 0) {
            r.window_heldout_loss = float(win_err[i] / n_eval);
            r.window_heldout_metric_loss = float(win_err_metric[i] / n_eval);
        }
        H.final_loss[size_t(h.r)] = r.final_loss;
        rep.heads.push_back(r);
    }
    return rep;
}

// ---- self-sampled calibration text ------------------------------------------------------------------

std::vector<int32_t> sample_calibration(const model &m, int64_t n_tokens, int32_t seq_len, uint64_t seed,
                                        int32_t n_threads, const progress_callback &progress) {
    const tokenizer &vocab = m.vocab();
    const int32_t start = vocab.bos() >= 0 ? vocab.bos() : vocab.eos();
    if (start < 0) throw error("calib-self: the vocabulary has neither BOS nor EOS to start sampling from");
    if (seq_len < 2) throw error("calib-self: sequences need at least 2 tokens");
    if (n_tokens < 0) throw error("calib-self: negative token count");
    context_params cp;
    cp.n_ctx = seq_len;
    cp.n_threads = n_threads;
    context ctx(m, cp);
    sampling_params sp;
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.repeat_penalty = 1.0f;
    sp.seed = seed;
    sampler smp(sp);
    std::vector<int32_t> out;
    out.reserve(size_t(n_tokens));
    std::vector<float> logits;
    while (int64_t(out.size()) < n_tokens) {
        ctx.truncate(0);
        out.push_back(start);
        ctx.eval({start}, logits);
        for (int32_t i = 1; i < seq_len && int64_t(out.size()) < n_tokens; ++i) {
            const int32_t tok = smp.sample(ctx.last_logits().data(), m.hparams().n_vocab);
            out.push_back(tok);
            if (i + 1 < seq_len && int64_t(out.size()) < n_tokens) ctx.eval({tok}, logits);
            if (progress && !progress(int64_t(out.size()), n_tokens)) throw cancelled_error("sampling cancelled");
        }
    }
    return out;
}

} // namespace recur
