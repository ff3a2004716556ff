// Model loading: hyperparameters from `{arch}.*` metadata, weights as views into the mapped
// GGUF file, every tensor's presence, type and shape checked before the first forward pass.
#include "recur/model.h"

#include "recur/quants.h"
#include "recur/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace recur {

namespace {

weight_matrix matrix_view(const gguf_file &f, const std::string &name, int64_t n_in, int64_t n_out) {
    const gguf_tensor_info *t = f.find_tensor(name);
    if (!t) throw format_error("model: tensor '" + name + "' is missing");
    if (t->ne.size() != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        throw format_error("model: tensor '" + name + "' has shape " + [&] {
            std::string s = "[";
            for (size_t i = 0; i < t->ne.size(); ++i) s += (i ? ", " : "") + std::to_string(t->ne[i]);
            return s + "]";
        }() + ", expected [" + std::to_string(n_in) + ", " + std::to_string(n_out) + "]");
    switch (t->type) {
    case tensor_type::F32: case tensor_type::F16: case tensor_type::BF16: case tensor_type::Q8_0:
    case tensor_type::Q4_0: case tensor_type::Q4_1: case tensor_type::Q4_K: case tensor_type::Q6_K: break;
    default: throw format_error("model: tensor '" + name + "' has type " + type_name(uint32_t(t->type)) +
                                ", which is not supported for weights");
    }
    weight_matrix w;
    w.data = t->data;
    w.type = t->type;
    w.n_in = n_in;
    w.n_out = n_out;
    w.row_bytes = row_bytes(t->type, n_in);
    w.name = name;
    return w;
}

// Small 1-D tensors (norms, biases) are converted to fp32 once at load.
std::vector<float> vector_f32(const gguf_file &f, const std::string &name, int64_t n, bool required = true) {
    const gguf_tensor_info *t = f.find_tensor(name);
    if (!t) {
        if (required) throw format_error("model: tensor '" + name + "' is missing");
        return {};
    }
    if (t->n_elements() != n || t->ne[0] != n)
        throw format_error("model: tensor '" + name + "' has " + std::to_string(t->n_elements()) +
                           " elements, expected " + std::to_string(n));
    std::vector<float> out(static_cast<size_t>(n));
    dequantize_row_ref(t->type, t->data, out.data(), n);
    return out;
}

int32_t positive_int(const gguf_file &f, const std::string &key, int64_t limit) {
    int64_t v = f.get_int(key);
    if (v <= 0 || v > limit)
        throw format_error("model: '" + key + "' = " + std::to_string(v) + " is out of range (1.." +
                           std::to_string(limit) + ")");
    return int32_t(v);
}

} // namespace

model::~model() = default;

std::unique_ptr<model> model::load(const std::string &path) {
    std::unique_ptr<model> m(new model());
    m->file_ = gguf_file::open(path);
    const gguf_file &f = *m->file_;
    model_hparams &hp = m->hp_;
    hp.arch = f.get_string("general.architecture", "");
    if (hp.arch == "llama") {
        hp.rope = rope_style::normal; // the GGUF converter permutes Q/K rows for adjacent-pair RoPE
    } else if (hp.arch == "qwen2") {
        hp.rope = rope_style::neox;
    } else {
        throw format_error("model: architecture '" + hp.arch + "' is not supported (llama, qwen2 are)");
    }
    const std::string a = hp.arch + ".";
    hp.n_layer = positive_int(f, a + "block_count", 1024);
    hp.n_embd = positive_int(f, a + "embedding_length", 1 << 16);
    hp.n_head = positive_int(f, a + "attention.head_count", 1024);
    hp.n_head_kv = int32_t(f.get_int(a + "attention.head_count_kv", hp.n_head));
    if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv != 0)
        throw format_error("model: head_count_kv " + std::to_string(hp.n_head_kv) + " does not divide head_count " +
                           std::to_string(hp.n_head));
    hp.n_ff = positive_int(f, a + "feed_forward_length", 1 << 18);
    hp.head_dim = int32_t(f.get_int(a + "attention.key_length", hp.n_embd / hp.n_head));
    if (hp.head_dim <= 0 || hp.head_dim % 2 != 0 || hp.head_dim > 1024)
        throw format_error("model: head dimension " + std::to_string(hp.head_dim) + " is not supported");
    hp.n_ctx_train = int32_t(f.get_int(a + "context_length", 2048));
    hp.rms_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
    hp.rope_freq_base = float(f.get_float(a + "rope.freq_base", 10000.0));
    hp.rope_dim = int32_t(f.get_int(a + "rope.dimension_count", hp.head_dim));
    if (hp.rope_dim <= 0 || hp.rope_dim > hp.head_dim || hp.rope_dim % 2 != 0)
        throw format_error("model: rope.dimension_count " + std::to_string(hp.rope_dim) + " is invalid");
    std::string scaling = f.get_string(a + "rope.scaling.type", "none");
    if (scaling == "linear") {
        hp.rope_scale = float(f.get_float(a + "rope.scaling.factor", 1.0));
        if (!(hp.rope_scale > 0)) throw format_error("model: rope.scaling.factor must be positive");
    } else if (scaling != "none" && scaling != "") {
        throw format_error("model: rope scaling '" + scaling + "' is not supported (linear is)");
    }

    m->tokenizer_ = make_tokenizer(load_vocab(f));
    const gguf_tensor_info *emb = f.find_tensor("token_embd.weight");
    if (!emb || emb->ne.size() != 2) throw format_error("model: tensor 'token_embd.weight' is missing");
    hp.n_vocab = int32_t(emb->ne[1]);
    if (hp.n_vocab != m->tokenizer_->n_vocab())
        throw format_error("model: token_embd has " + std::to_string(hp.n_vocab) + " rows but the vocabulary has " +
                           std::to_string(m->tokenizer_->n_vocab()) + " tokens");

    const int64_t n_q = int64_t(hp.n_head) * hp.head_dim, n_kv = int64_t(hp.n_head_kv) * hp.head_dim;
    m->token_embd_ = matrix_view(f, "token_embd.weight", hp.n_embd, hp.n_vocab);
    m->output_ = f.find_tensor("output.weight") ? matrix_view(f, "output.weight", hp.n_embd, hp.n_vocab)
                                                 : m->token_embd_; // tied embeddings
    m->output_norm_ = vector_f32(f, "output_norm.weight", hp.n_embd);
    if (f.find_tensor("rope_freqs.weight"))
        m->rope_freq_factors_ = vector_f32(f, "rope_freqs.weight", hp.rope_dim / 2);

    auto add_bytes = [&](const weight_matrix &w) { m->weights_bytes_ += w.row_bytes * size_t(w.n_out); };
    for (int32_t l = 0; l < hp.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        layer_weights L;
        L.attn_norm = vector_f32(f, p + "attn_norm.weight", hp.n_embd);
        L.wq = matrix_view(f, p + "attn_q.weight", hp.n_embd, n_q);
        L.wk = matrix_view(f, p + "attn_k.weight", hp.n_embd, n_kv);
        L.wv = matrix_view(f, p + "attn_v.weight", hp.n_embd, n_kv);
        L.wo = matrix_view(f, p + "attn_output.weight", n_q, hp.n_embd);
        L.bq = vector_f32(f, p + "attn_q.bias", n_q, false);
        L.bk = vector_f32(f, p + "attn_k.bias", n_kv, false);
        L.bv = vector_f32(f, p + "attn_v.bias", n_kv, false);
        L.ffn_norm = vector_f32(f, p + "ffn_norm.weight", hp.n_embd);
        L.w_gate = matrix_view(f, p + "ffn_gate.weight", hp.n_embd, hp.n_ff);
        L.w_up = matrix_view(f, p + "ffn_up.weight", hp.n_embd, hp.n_ff);
        L.w_down = matrix_view(f, p + "ffn_down.weight", hp.n_ff, hp.n_embd);
        for (auto *w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) add_bytes(*w);
        m->layers_.push_back(std::move(L));
    }
    add_bytes(m->output_); // a decode step reads the whole output matrix, one embedding row
    m->load_hybrid();
    return m;
}

std::unique_ptr<model> model::load_windowed(const std::string &path, const std::vector<window_group> &groups) {
    std::unique_ptr<model> m = load(path);
    if (m->is_hybrid()) throw error("model: '" + path + "' is already a hybrid; windows are set on a plain model");
    const model_hparams &hp = m->hp_;
    std::vector<window_group> sorted = groups;
    std::sort(sorted.begin(), sorted.end(), [](const window_group &a, const window_group &b) {
        return a.layer != b.layer ? a.layer < b.layer : a.group < b.group;
    });
    uint64_t tag = 0x77696e646f77ull; // mixed into the fingerprint: "window"
    for (const window_group &w : sorted) {
        if (w.layer < 0 || w.layer >= hp.n_layer || w.group < 0 || w.group >= hp.n_head_kv)
            throw error("model: window group (layer " + std::to_string(w.layer) + ", group " + std::to_string(w.group) +
                        ") is outside the model's " + std::to_string(hp.n_layer) + " layers x " +
                        std::to_string(hp.n_head_kv) + " KV groups");
        if (w.window < 1 || w.sinks < 0)
            throw error("model: a window group needs a window of at least 1 and no negative sink count");
        hybrid_layer &H = m->hybrid_[size_t(w.layer)];
        if (H.group_replaced[size_t(w.group)])
            throw error("model: window group (layer " + std::to_string(w.layer) + ", group " + std::to_string(w.group) +
                        ") is named twice");
        H.replaced_groups.push_back(w.group);
        H.kinds.push_back(replacement_kind::window);
        H.windows.push_back(w.window);
        H.sinks.push_back(w.sinks);
        H.window_groups.push_back(w.group);
        H.group_replaced[size_t(w.group)] = 1;
        H.group_window.resize(size_t(hp.n_head_kv), 0);
        H.group_sinks.resize(size_t(hp.n_head_kv), 0);
        H.group_kind.resize(size_t(hp.n_head_kv), replacement_kind::recurrent);
        H.group_window[size_t(w.group)] = w.window;
        H.group_sinks[size_t(w.group)] = w.sinks;
        H.group_kind[size_t(w.group)] = replacement_kind::window;
        for (int64_t v : {int64_t(w.layer), int64_t(w.group), int64_t(w.window), int64_t(w.sinks)})
            tag = (tag ^ uint64_t(v)) * 1099511628211ull;
    }
    if (!sorted.empty()) {
        m->recurformer_version_ = 1;
        const uint64_t h = m->fingerprint() ^ tag;
        m->fingerprint_ = h == 0 ? 1 : h;
    }
    return m;
}

// Reads the recurformer.* keys and blk.N.rec.* tensors (docs/FORMAT.md), checking every group
// index and tensor shape against the model before anything uses them.
void model::load_hybrid() {
    const gguf_file &f = *file_;
    hybrid_.assign(size_t(hp_.n_layer), hybrid_layer{});
    for (auto &h : hybrid_) h.group_replaced.assign(size_t(hp_.n_head_kv), 0);
    recurformer_version_ = int32_t(f.get_int("recurformer.version", 0));
    if (recurformer_version_ == 0) {
        for (auto &[key, v] : f.metadata())
            if (key.rfind("recurformer.", 0) == 0)
                throw format_error("hybrid: key '" + key + "' present but recurformer.version is missing");
        return;
    }
    if (recurformer_version_ != 1)
        throw format_error("hybrid: recurformer.version " + std::to_string(recurformer_version_) +
                           " is not supported (1 is)");
    recency_window_ = int32_t(f.get_int("recurformer.window", 32));
    const std::string read_out = f.get_string("recurformer.read_out", "additive");
    if (read_out != "additive" && read_out != "delta")
        throw format_error("hybrid: recurformer.read_out is '" + read_out + "'; this engine serves 'additive' and 'delta'");
    const int g = hp_.group_size(), hd = hp_.head_dim, E = hp_.n_embd;
    for (int32_t l = 0; l < hp_.n_layer; ++l) {
        hybrid_layer &H = hybrid_[size_t(l)];
        H.delta_rule = read_out == "delta";
        const std::string key = "recurformer.blk." + std::to_string(l) + ".";
        for (int64_t grp : f.get_int_array(key + "replaced_groups")) {
            if (grp < 0 || grp >= hp_.n_head_kv)
                throw format_error("hybrid: layer " + std::to_string(l) + " names KV group " + std::to_string(grp) +
                                   ", but the model has groups 0.." + std::to_string(hp_.n_head_kv - 1));
            if (!H.replaced_groups.empty() && grp <= H.replaced_groups.back())
                throw format_error("hybrid: layer " + std::to_string(l) +
                                   " lists its replaced groups out of order or twice");
            H.replaced_groups.push_back(int32_t(grp));
            H.group_replaced[size_t(grp)] = 1;
        }
        for (double r : f.get_float_array(key + "group_recency")) H.group_recency.push_back(float(r));
        if (!H.group_recency.empty() && H.group_recency.size() != size_t(hp_.n_head_kv))
            throw format_error("hybrid: " + key + "group_recency has " + std::to_string(H.group_recency.size()) +
                               " entries, expected " + std::to_string(hp_.n_head_kv));
        H.group_window.assign(size_t(hp_.n_head_kv), 0);
        H.group_sinks.assign(size_t(hp_.n_head_kv), 0);
        auto kinds = f.get_int_array(key + "group_kinds");
        auto windows = f.get_int_array(key + "group_windows");
        auto sinks = f.get_int_array(key + "group_sinks"); // absent (older files): no sinks
        if (!sinks.empty() && sinks.size() != H.replaced_groups.size())
            throw format_error("hybrid: " + key + "group_sinks does not match replaced_groups");
        if (!kinds.empty() && kinds.size() != H.replaced_groups.size())
            throw format_error("hybrid: " + key + "group_kinds does not match replaced_groups");
        if (!windows.empty() && windows.size() != H.replaced_groups.size())
            throw format_error("hybrid: " + key + "group_windows does not match replaced_groups");
        H.group_kind.assign(size_t(hp_.n_head_kv), replacement_kind::recurrent);
        for (size_t i = 0; i < H.replaced_groups.size(); ++i) {
            const int64_t k = kinds.empty() ? 0 : kinds[i];
            if (k >= 0 && k <= 2) H.group_kind[size_t(H.replaced_groups[i])] = replacement_kind(k);
            const int32_t grp = H.replaced_groups[i];
            const int64_t n_sinks = sinks.empty() ? 0 : sinks[i];
            if (n_sinks < 0 || n_sinks > (1 << 16) || (n_sinks > 0 && k == int64_t(replacement_kind::recurrent)))
                throw format_error("hybrid: layer " + std::to_string(l) + " group " + std::to_string(grp) + " has " +
                                   std::to_string(n_sinks) + " sink rows" +
                                   (n_sinks > 0 ? " but is not a window group" : ""));
            H.sinks.push_back(int32_t(n_sinks));
            H.group_sinks[size_t(grp)] = int32_t(n_sinks);
            if (k == int64_t(replacement_kind::recurrent)) {
                H.kinds.push_back(replacement_kind::recurrent);
                H.windows.push_back(0);
                H.recurrent_groups.push_back(grp);
            } else if (k == int64_t(replacement_kind::window) || k == int64_t(replacement_kind::window_recurrent)) {
                const int64_t w = windows.empty() ? 0 : windows[i];
                if (w < 1 || w > (1 << 20))
                    throw format_error("hybrid: layer " + std::to_string(l) + " group " + std::to_string(grp) +
                                       " is a window group with window " + std::to_string(w));
                const auto kind = replacement_kind(k);
                H.kinds.push_back(kind);
                H.windows.push_back(int32_t(w));
                H.window_groups.push_back(grp);
                H.group_window[size_t(grp)] = int32_t(w);
                // window + recurrent: the recurrent head's tensors are stored like a recurrent group's.
                if (kind == replacement_kind::window_recurrent) H.recurrent_groups.push_back(grp);
            } else {
                throw format_error("hybrid: layer " + std::to_string(l) + " uses replacement kind " + std::to_string(k) +
                                   ", which this engine does not serve");
            }
        }
        const int64_t R = int64_t(H.recurrent_groups.size()) * g;
        const std::string t = "blk." + std::to_string(l) + ".rec.";
        if (R == 0) {
            for (const char *n : {"dt_w", "dt_b", "a_log", "d", "q_proj", "k_proj", "v_proj", "gate_w", "gate_b", "gate_n",
                                  "a_chan"})
                if (f.find_tensor(t + n))
                    throw format_error("hybrid: tensor '" + t + n + "' exists but layer " + std::to_string(l) +
                                       " has no recurrent group");
            continue;
        }
        auto f32 = [&](const std::string &name, std::vector<int64_t> ne) {
            const gguf_tensor_info *ti = f.find_tensor(name);
            if (!ti) throw format_error("hybrid: tensor '" + name + "' is missing");
            if (ti->type != tensor_type::F32) throw format_error("hybrid: tensor '" + name + "' must be F32");
            if (ti->ne != ne) {
                std::string want, got;
                for (auto d : ne) want += (want.empty() ? "" : ", ") + std::to_string(d);
                for (auto d : ti->ne) got += (got.empty() ? "" : ", ") + std::to_string(d);
                throw format_error("hybrid: tensor '" + name + "' has shape [" + got + "], expected [" + want + "]");
            }
            const float *p = reinterpret_cast<const float *>(ti->data);
            return std::vector<float>(p, p + ti->n_elements());
        };
        H.dt_w = f32(t + "dt_w", {E, R});
        H.dt_b = f32(t + "dt_b", {R});
        H.a_log = f32(t + "a_log", {R});
        H.d = f32(t + "d", {hd, R});
        // Tensors that set rates and gates through exp(): a non-finite value is refused by name.
        auto f32_finite = [&](const std::string &name, std::vector<int64_t> ne) {
            std::vector<float> v = f32(t + name, std::move(ne));
            for (float x : v)
                if (!std::isfinite(x))
                    throw format_error("hybrid: tensor '" + t + name + "' holds a value that is not finite");
            return v;
        };
        if (f.find_tensor(t + "a_chan")) H.a_chan = f32_finite("a_chan", {hd, R});
        // Trained transforms come as a set of three or not at all.
        const int n_proj = int(bool(f.find_tensor(t + "q_proj"))) + int(bool(f.find_tensor(t + "k_proj"))) +
                           int(bool(f.find_tensor(t + "v_proj")));
        if (n_proj != 0 && n_proj != 3)
            throw format_error("hybrid: layer " + std::to_string(l) + " has only some of rec.q_proj/k_proj/v_proj");
        if (n_proj == 3) {
            H.q_proj = f32(t + "q_proj", {hd, hd, R});
            H.k_proj = f32(t + "k_proj", {hd, hd, R});
            H.v_proj = f32(t + "v_proj", {hd, hd, R});
        }
        // The gate of window + recurrent heads: all three tensors or none, and only where there
        // is such a head to gate.
        const int n_gate = int(bool(f.find_tensor(t + "gate_w"))) + int(bool(f.find_tensor(t + "gate_b"))) +
                           int(bool(f.find_tensor(t + "gate_n")));
        if (n_gate == 1 || n_gate == 2)
            throw format_error("hybrid: layer " + std::to_string(l) + " has only some of rec.gate_w/gate_b/gate_n");
        if (n_gate == 3) {
            if (std::none_of(H.recurrent_groups.begin(), H.recurrent_groups.end(),
                             [&](int32_t grp) { return H.group_is(grp, replacement_kind::window_recurrent); }))
                throw format_error("hybrid: layer " + std::to_string(l) +
                                   " has rec.gate_w/gate_b/gate_n but no window + recurrent group to gate");
            H.gate_w = f32_finite("gate_w", {E, R});
            H.gate_b = f32_finite("gate_b", {R});
            H.gate_n = f32_finite("gate_n", {R});
        }
        for (double x : f.get_float_array(key + "final_loss")) H.final_loss.push_back(float(x));
    }
}

int32_t model::replaced_group_count() const {
    int32_t n = 0;
    for (auto &h : hybrid_) n += int32_t(h.replaced_groups.size());
    return n;
}

uint64_t model::fingerprint() const {
    if (fingerprint_ != 0) return fingerprint_;
    // FNV-1a over 8-byte words of the whole mapped file: fast (memory-bound) and, unlike a hash
    // of the header only, it changes when any weight changes.
    const uint8_t *p = file_->base();
    const size_t n = file_->file_size();
    uint64_t h = 1469598103934665603ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    fingerprint_ = h == 0 ? 1 : h;
    return fingerprint_;
}

std::string model::chat_template() const { return file_->get_string("tokenizer.chat_template", ""); }
std::string model::name() const { return file_->get_string("general.name", hp_.arch); }

std::string model::weights_type() const {
    std::map<std::string, size_t> bytes;
    for (auto &L : layers_)
        for (auto *w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
            bytes[type_name(uint32_t(w->type))] += w->row_bytes * size_t(w->n_out);
    std::string best;
    size_t most = 0;
    for (auto &[k, v] : bytes)
        if (v > most) most = v, best = k;
    return best;
}

} // namespace recur
