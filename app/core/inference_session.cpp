#include "core/inference_session.h"

#include "recur/error.h"

#ifdef RECUR_HAVE_CUDA
#include "recur/cuda_backend.h"
#endif

#include <algorithm>

namespace recur_app {

const char *device_kind_name(device_kind k) {
    return k == device_kind::cuda ? "cuda" : "cpu";
}

device_request parse_device(const std::string &value) {
    if (value == "cpu") return device_request::cpu;
    if (value == "cuda") return device_request::cuda;
    if (value == "auto") return device_request::automatic;
    throw recur::error("unknown device '" + value + "': use cpu, cuda or auto");
}

const char *device_request_name(device_request r) {
    switch (r) {
    case device_request::cpu: return "cpu";
    case device_request::cuda: return "cuda";
    case device_request::automatic: return "auto";
    }
    return "?";
}

bool cuda_built() {
#ifdef RECUR_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

const gpu_status &query_gpu() {
    static const gpu_status status = [] {
        gpu_status s;
#ifdef RECUR_HAVE_CUDA
        s.built = true;
        const recur::cuda_device d = recur::cuda_device_info();
        s.available = d.available;
        if (d.available) {
            s.name = d.name;
            s.free_bytes = d.free_bytes;
            s.total_bytes = d.total_bytes;
        } else {
            s.reason = d.error.empty() ? "no CUDA device" : d.error;
        }
#else
        s.reason = "this build has no CUDA backend";
#endif
        return s;
    }();
    return status;
}

device_choice choose_device(device_request r, const gpu_status &gpu, const std::string &what) {
    device_choice c;
    switch (r) {
    case device_request::cpu: return c;
    case device_request::cuda:
        if (!gpu.built) throw recur::error(what + ": this build has no CUDA backend (rebuild with -DRECUR_CUDA=ON, or use cpu)");
        if (!gpu.available) throw recur::error(what + ": no usable GPU: " + gpu.reason + " (use cpu or auto)");
        c.kind = device_kind::cuda;
        return c;
    case device_request::automatic:
        // A build without the backend has no GPU to miss: auto is simply the CPU there. A CUDA
        // build that finds no usable GPU says so, since the user may expect one.
        if (gpu.available) c.kind = device_kind::cuda;
        else if (gpu.built) c.notice = "running on the CPU; no usable GPU: " + gpu.reason;
        return c;
    }
    return c;
}

#ifdef RECUR_HAVE_CUDA
namespace {
gpu_memory_plan from_cuda_plan(const recur::cuda_memory_plan &plan) {
    gpu_memory_plan g;
    g.valid = true;
    g.device_name = plan.device_name;
    g.free_bytes = plan.free_bytes;
    g.total_bytes = plan.total_bytes;
    g.weights_bytes = plan.weights_bytes;
    g.kv_bytes = plan.kv_bytes;
    g.recurrent_bytes = plan.recurrent_bytes;
    g.window_bytes = plan.window_bytes;
    g.scratch_bytes = plan.scratch_bytes;
    g.reserve_bytes = plan.reserve_bytes;
    g.total_bytes_needed = plan.total_bytes_needed;
    g.max_n_ctx = plan.max_n_ctx;
    g.fits = plan.fits();
    g.description = plan.describe();
    return g;
}
} // namespace
#endif

gpu_memory_plan plan_gpu_memory(const recur::model &m, const recur::context_params &p) {
    gpu_memory_plan g;
#ifdef RECUR_HAVE_CUDA
    recur::cuda_params cp;
    cp.n_ctx = p.n_ctx;
    cp.n_batch = p.n_batch;
    g = from_cuda_plan(recur::cuda_model::plan(m, cp));
#else
    (void)m;
    (void)p;
#endif
    return g;
}

inference_session::~inference_session() = default;

namespace {

int32_t argmax(const std::vector<float> &v) {
    return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

// ---- the CPU: recur::context as it is --------------------------------------------------------

class cpu_session final : public inference_session {
  public:
    cpu_session(const recur::model &m, const recur::context_params &p)
        : inference_session(device_kind::cpu, "cpu"), ctx_(m, p) {}

    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits,
              const recur::progress_callback &progress) override {
        ctx_.eval(tokens, logits_out, all_logits, progress);
    }
    int32_t decode_greedy(int32_t token) override {
        ctx_.eval({token}, logits_);
        return argmax(logits_);
    }
    int32_t n_past() const override { return ctx_.n_past(); }
    int32_t n_ctx() const override { return ctx_.n_ctx(); }
    const std::vector<int32_t> &tokens() const override { return ctx_.tokens(); }
    bool can_truncate(int32_t n) const override {
        if (n < 0 || n > ctx_.n_past()) return false;
        // Mirrors context::truncate: recurrent states and window rings cannot be rewound.
        const recur::memory_report r = ctx_.memory();
        return n == 0 || n == ctx_.n_past() || (r.recurrent_bytes == 0 && r.window_bytes == 0);
    }
    void truncate(int32_t n) override { ctx_.truncate(n); }
    int n_threads() const override { return ctx_.n_threads(); }
    recur::memory_report memory() const override { return ctx_.memory(); }
    void save_state(const std::string &path) const override { ctx_.save_state(path); }
    void load_state(const std::string &path) override { ctx_.load_state(path); }
    void collect_recency(int32_t window) override { ctx_.collect_recency(window); }
    const recur::recency_stats &recency() const override { return ctx_.recency(); }

  private:
    recur::context ctx_;
    std::vector<float> logits_;
};

#ifdef RECUR_HAVE_CUDA
// ---- the GPU: recur::cuda_model, with what the callers expect of a context around it ---------

class cuda_session final : public inference_session {
  public:
    cuda_session(const recur::model &m, const recur::context_params &p, const recur::cuda_params &cp)
        : inference_session(device_kind::cuda, query_gpu().name), model_(m), params_(p), gpu_(m, cp) {}

    // cuda_model::eval has no progress callback: the tokens go in n_batch slices so the caller's
    // progress and cancellation work as on the CPU (a slice is what cuda_model batches anyway).
    void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits,
              const recur::progress_callback &progress) override {
        if (!progress) {
            gpu_.eval(tokens, logits_out, all_logits);
            return;
        }
        if (tokens.empty()) throw recur::error("eval: no tokens given");
        // Checked up front, as the CPU does, so an overflow appends nothing.
        if (int64_t(gpu_.n_past()) + int64_t(tokens.size()) > gpu_.n_ctx())
            throw recur::error("eval: " + std::to_string(tokens.size()) + " tokens do not fit: " +
                               std::to_string(gpu_.n_past()) + " of the context's " + std::to_string(gpu_.n_ctx()) +
                               " positions are used");
        const int64_t total = int64_t(tokens.size());
        const size_t n_vocab = size_t(model_.hparams().n_vocab);
        logits_out.resize((all_logits ? size_t(total) : 1) * n_vocab);
        std::vector<float> part;
        for (int64_t done = 0; done < total;) {
            if (!progress(done, total)) throw recur::cancelled_error("evaluation cancelled");
            const int64_t n = std::min<int64_t>(params_.n_batch, total - done);
            const std::vector<int32_t> slice(tokens.begin() + done, tokens.begin() + done + n);
            gpu_.eval(slice, part, all_logits);
            if (all_logits) std::copy(part.begin(), part.end(), logits_out.begin() + done * int64_t(n_vocab));
            else if (done + n == total) std::copy(part.begin(), part.end(), logits_out.begin());
            done += n;
        }
        progress(total, total);
    }
    int32_t decode_greedy(int32_t token) override {
        return gpu_.decode_greedy(token);
    }
    int32_t n_past() const override { return gpu_.n_past(); }
    int32_t n_ctx() const override { return gpu_.n_ctx(); }
    const std::vector<int32_t> &tokens() const override { return gpu_.tokens(); }
    bool can_truncate(int32_t n) const override {
        if (n < 0 || n > gpu_.n_past()) return false;
        // Mirrors cuda_model::truncate (and the CPU): recurrent states and rings cannot be rewound.
        const recur::cuda_memory_plan &mem = gpu_.memory();
        return n == 0 || n == gpu_.n_past() || (mem.recurrent_bytes == 0 && mem.window_bytes == 0);
    }
    void truncate(int32_t n) override {
        gpu_.truncate(n);
    }
    int n_threads() const override { return 1; }
    // The CPU report's layout (per-layer groups, full-attention comparison) with the device's
    // figures. The GPU's cache is F16 (create() refuses an F32 one); its reserve for CUDA and
    // cuBLAS is counted with the buffers.
    recur::memory_report memory() const override {
        recur::context_params p = params_;
        p.n_ctx = gpu_.n_ctx();
        p.kv_type = recur::tensor_type::F16;
        recur::memory_report r = recur::context::plan(model_, p);
        const recur::cuda_memory_plan &plan = gpu_.memory();
        r.weights_bytes = plan.weights_bytes;
        r.scratch_bytes = plan.scratch_bytes + plan.reserve_bytes;
        r.n_past = gpu_.n_past();
        const size_t f16_row = size_t(model_.hparams().head_dim) * 2; // one position of K (or V), one group
        for (recur::layer_memory &lm : r.layers) {
            lm.kv_used_bytes = 2 * size_t(r.n_past) * f16_row * size_t(lm.attention_groups);
            r.kv_used_bytes += lm.kv_used_bytes;
        }
        return r;
    }
    gpu_memory_plan gpu_memory() const override { return from_cuda_plan(gpu_.memory()); }
    // The same files as the CPU's (recur/state_file.h): a snapshot taken on either device
    // loads on the other.
    void save_state(const std::string &path) const override { gpu_.save_state(path); }
    void load_state(const std::string &path) override { gpu_.load_state(path); }
    void collect_recency(int32_t window) override { gpu_.collect_recency(window); }
    const recur::recency_stats &recency() const override { return gpu_.recency(); }

  private:
    const recur::model &model_;
    recur::context_params params_;
    recur::cuda_model gpu_;
};
#endif

} // namespace

std::unique_ptr<inference_session> inference_session::create(const recur::model &m, const session_options &o) {
    const device_choice choice = choose_device(o.device, query_gpu());
    std::string notice = choice.notice;
#ifdef RECUR_HAVE_CUDA
    if (choice.kind == device_kind::cuda) {
        // The GPU's cache is F16 only: an F32 cache is a CPU feature, so asking for it is either
        // an error (cuda) or a reason to stay on the CPU (auto), never silently dropped.
        if (o.context.kv_type != recur::tensor_type::F16) {
            if (o.device == device_request::cuda)
                throw recur::error("device cuda keeps its KV cache in F16: an F32 cache (--kv-f32) needs the CPU");
            notice = "running on the CPU; an F32 KV cache (--kv-f32) is CPU-only";
        } else {
            recur::cuda_params cp;
            cp.n_ctx = o.context.n_ctx;
            cp.n_batch = o.context.n_batch;
            try {
                return std::make_unique<cuda_session>(m, o.context, cp);
            } catch (const recur::error &e) {
                if (o.device == device_request::cuda || !o.fall_back_on_gpu_error) throw;
                notice = std::string("running on the CPU; the GPU could not take the model: ") + e.what();
            }
        }
    }
#endif
    std::unique_ptr<inference_session> s;
    try {
        s = std::make_unique<cpu_session>(m, o.context);
    } catch (const recur::error &e) {
        // The caller prints the notice only with a session in hand: when the CPU refuses too,
        // its error carries why the GPU was passed over, or that reason would be lost.
        if (notice.empty()) throw;
        throw recur::error(std::string(e.what()) + " (" + notice + ")");
    }
    s->notice_ = std::move(notice);
    return s;
}

} // namespace recur_app
