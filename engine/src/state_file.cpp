// Engine state files (recur/state_file.h):
//   "RECURST1" | u32 version | u64 model fingerprint | u32 n_layer, n_head_kv, head_dim, kv elem bytes,
//   n_vocab | i32 n_past | i32 tokens[n_past] | per layer, per attention group: K rows then V rows
//   [n_past][head_dim] | recurrent states (f32) | window groups' sink rows and rings (K then V) | dt rings of window +
//   recurrent heads (f32) | u32 has_logits, f32 logits[n_vocab] | u64 FNV-1a of
//   everything before it.
#include "recur/state_file.h"

#include "recur/error.h"
#include "atomic_file.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

namespace recur {

namespace {
constexpr char state_magic[8] = {'R', 'E', 'C', 'U', 'R', 'S', 'T', '1'};
constexpr uint32_t state_version = 1;
constexpr uint64_t fnv_offset = 1469598103934665603ull, fnv_prime = 1099511628211ull;

struct fnv_writer {
    FILE *f;
    uint64_t hash = fnv_offset;
    bool ok = true;
    void bytes(const void *p, size_t n) {
        if (n == 0) return;
        const auto *b = static_cast<const uint8_t *>(p);
        for (size_t i = 0; i < n; ++i) hash = (hash ^ b[i]) * fnv_prime;
        if (fwrite(p, 1, n, f) != n) ok = false;
    }
    template <typename T> void put(T v) { bytes(&v, sizeof v); }
};

struct fnv_reader {
    const std::string &path;
    const uint8_t *p, *end;
    uint64_t hash = fnv_offset;
    // Hashes n bytes in place and returns where they start (no copy).
    const uint8_t *view(size_t n) {
        if (size_t(end - p) < n) throw error("state file '" + path + "' is truncated");
        const uint8_t *at = p;
        for (size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * fnv_prime;
        p += n;
        return at;
    }
    void bytes(void *dst, size_t n) {
        const uint8_t *at = view(n);
        if (n) std::memcpy(dst, at, n); // dst may be null for an empty vector
    }
    template <typename T> T get() {
        T v;
        bytes(&v, sizeof v);
        return v;
    }
};
} // namespace

state_layout state_layout_of(const model &m) {
    const model_hparams &hp = m.hparams();
    const size_t g = size_t(hp.group_size()), hh = size_t(hp.head_dim) * size_t(hp.head_dim);
    state_layout L;
    for (const hybrid_layer &H : m.hybrid()) {
        for (int32_t grp = 0; grp < hp.n_head_kv; ++grp)
            if (H.group_replaced.empty() || !H.group_replaced[size_t(grp)]) ++L.attention_groups;
        L.recurrent_floats += H.recurrent_groups.size() * g * hh;
        for (int32_t grp : H.window_groups)
            L.window_rows += size_t(H.group_window[size_t(grp)]) + size_t(H.group_sinks[size_t(grp)]);
        for (int32_t grp : H.recurrent_groups)
            if (H.group_is(grp, replacement_kind::window_recurrent))
                L.dt_ring_floats += g * size_t(H.group_window[size_t(grp)]);
    }
    return L;
}

void write_state_file(const std::string &path, const model &m, const state_view &s) {
    const model_hparams &hp = m.hparams();
    const state_layout L = state_layout_of(m);
    if (s.kv_elem_bytes != 2 && s.kv_elem_bytes != 4) throw error("save_state: KV rows must be F16 or F32");
    if (s.k_rows.size() != size_t(L.attention_groups) || s.v_rows.size() != size_t(L.attention_groups))
        throw error("save_state: the state's attention groups do not match the model's");
    if ((L.recurrent_floats && !s.recurrent) || (L.window_rows && (!s.window_k || !s.window_v)) ||
        (L.dt_ring_floats && !s.dt_rings))
        throw error("save_state: the state lacks parts the model has");
    const uint64_t fingerprint = m.fingerprint(); // before the file exists: it may read the model file
    write_file_atomically(path, "state file ", [&](FILE *f) {
        fnv_writer w{f};
        w.bytes(state_magic, sizeof state_magic);
        w.put<uint32_t>(state_version);
        w.put<uint64_t>(fingerprint);
        w.put<uint32_t>(uint32_t(hp.n_layer));
        w.put<uint32_t>(uint32_t(hp.n_head_kv));
        w.put<uint32_t>(uint32_t(hp.head_dim));
        w.put<uint32_t>(s.kv_elem_bytes);
        w.put<uint32_t>(uint32_t(hp.n_vocab));
        const int32_t n_past = int32_t(s.tokens.size());
        w.put<int32_t>(n_past);
        w.bytes(s.tokens.data(), s.tokens.size() * sizeof(int32_t));
        const size_t row = size_t(hp.head_dim) * s.kv_elem_bytes;
        for (size_t i = 0; i < s.k_rows.size(); ++i) {
            w.bytes(s.k_rows[i], row * size_t(n_past));
            w.bytes(s.v_rows[i], row * size_t(n_past));
        }
        w.bytes(s.recurrent, L.recurrent_floats * sizeof(float));
        w.bytes(s.window_k, L.window_rows * row);
        w.bytes(s.window_v, L.window_rows * row);
        w.bytes(s.dt_rings, L.dt_ring_floats * sizeof(float));
        w.put<uint32_t>(s.logits ? 1 : 0);
        if (s.logits) w.bytes(s.logits, size_t(hp.n_vocab) * sizeof(float));
        const uint64_t checksum = w.hash;
        w.put<uint64_t>(checksum);
        return w.ok;
    });
}

loaded_state read_state_file(const std::string &path, const model &m, int32_t n_ctx, uint32_t kv_elem_bytes) {
    const model_hparams &hp = m.hparams();
    const state_layout L = state_layout_of(m);
    loaded_state s;
    {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw error("cannot open state file '" + path + "'");
        s.data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        if (in.bad()) throw error("cannot read state file '" + path + "'");
    }
    fnv_reader r{path, s.data.data(), s.data.data() + s.data.size()};
    char magic[8];
    r.bytes(magic, sizeof magic);
    if (std::memcmp(magic, state_magic, sizeof magic) != 0)
        throw error("'" + path + "' is not a RecurDesk state file");
    if (r.get<uint32_t>() != state_version)
        throw error("state file '" + path + "' has an unsupported version");
    if (r.get<uint64_t>() != m.fingerprint())
        throw error("state file '" + path + "' was saved for another model (fingerprints differ)");
    const uint32_t n_layer = r.get<uint32_t>(), n_kv = r.get<uint32_t>(), hd = r.get<uint32_t>();
    const uint32_t elem = r.get<uint32_t>(), n_vocab = r.get<uint32_t>();
    if (n_layer != uint32_t(hp.n_layer) || n_kv != uint32_t(hp.n_head_kv) || hd != uint32_t(hp.head_dim) ||
        n_vocab != uint32_t(hp.n_vocab))
        throw error("state file '" + path + "' does not match the model's shape");
    auto type_name = [](uint32_t e) { return std::string(e == 4 ? "F32" : e == 2 ? "F16" : "unknown"); };
    if (elem != kv_elem_bytes)
        throw error("state file '" + path + "' holds a " + type_name(elem) + " KV cache; this context uses " +
                    type_name(kv_elem_bytes));
    s.kv_elem_bytes = elem;
    const int32_t n_past = r.get<int32_t>();
    if (n_past < 0 || n_past > n_ctx)
        throw error("state file '" + path + "' holds " + std::to_string(n_past) + " tokens; the context has room for " +
                    std::to_string(n_ctx));
    s.tokens.resize(size_t(n_past));
    r.bytes(s.tokens.data(), s.tokens.size() * sizeof(int32_t));
    for (int32_t t : s.tokens)
        if (t < 0 || t >= hp.n_vocab) throw error("state file '" + path + "' holds an invalid token id");
    const size_t row = size_t(hd) * elem;
    for (int32_t i = 0; i < L.attention_groups; ++i) {
        s.k_rows.push_back(r.view(row * size_t(n_past)));
        s.v_rows.push_back(r.view(row * size_t(n_past)));
    }
    s.recurrent.resize(L.recurrent_floats);
    r.bytes(s.recurrent.data(), s.recurrent.size() * sizeof(float));
    s.window_k = r.view(L.window_rows * row);
    s.window_v = r.view(L.window_rows * row);
    s.dt_rings.resize(L.dt_ring_floats);
    r.bytes(s.dt_rings.data(), s.dt_rings.size() * sizeof(float));
    const uint32_t has_logits = r.get<uint32_t>();
    if (has_logits > 1) throw error("state file '" + path + "' is damaged (bad logits flag)");
    if (has_logits) {
        s.logits.resize(n_vocab);
        r.bytes(s.logits.data(), s.logits.size() * sizeof(float));
    }
    const uint64_t expect = r.hash;
    if (r.get<uint64_t>() != expect) throw error("state file '" + path + "' is damaged (checksum mismatch)");
    if (r.p != r.end) throw error("state file '" + path + "' has trailing bytes");
    return s;
}

} // namespace recur
