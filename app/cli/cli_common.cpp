#include "cli_common.h"

#include "recur/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/resource.h>

using namespace recur;

namespace recur_cli {
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

size_t peak_rss_bytes() {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return size_t(ru.ru_maxrss) * 1024;
}

std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw error("cannot read '" + path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

recur_app::device_request device_request_of(const options &o) {
    return recur_app::parse_device(o.device);
}

void print_notice(const std::string &text) {
    // Commands that make several sessions (kl, passkey) would repeat auto's reason each time.
    static std::set<std::string> printed;
    if (!printed.insert(text).second) return;
    fprintf(stderr, "recur: note: %s\n", text.c_str());
}

std::unique_ptr<recur_app::inference_session> make_session(const options &o, const model &m, const context_params &cp) {
    recur_app::session_options so;
    so.context = cp;
    so.device = device_request_of(o);
    // An unusable GPU is reported naming the flag before the session tries anything.
    recur_app::choose_device(so.device, recur_app::query_gpu(), "--device cuda");
    std::unique_ptr<recur_app::inference_session> s;
    try {
        s = recur_app::inference_session::create(m, so);
    } catch (const error &e) {
        // The GPU refused the model (does not fit, a weight type it lacks): name the flag too.
        if (so.device == recur_app::device_request::cuda) throw error(std::string("--device cuda: ") + e.what());
        throw;
    }
    if (!s->notice().empty()) print_notice(s->notice());
    return s;
}

void write_gpu_plan(json_writer &j, const recur_app::gpu_memory_plan &g) {
    j.key("gpu_memory").begin_object();
    j.field("device_name", g.device_name);
    j.field("free_bytes", uint64_t(g.free_bytes)).field("total_bytes", uint64_t(g.total_bytes));
    j.field("weights_bytes", uint64_t(g.weights_bytes)).field("kv_bytes", uint64_t(g.kv_bytes));
    j.field("recurrent_bytes", uint64_t(g.recurrent_bytes)).field("window_bytes", uint64_t(g.window_bytes));
    j.field("scratch_bytes", uint64_t(g.scratch_bytes)).field("reserve_bytes", uint64_t(g.reserve_bytes));
    j.field("total_bytes_needed", uint64_t(g.total_bytes_needed));
    j.field("max_n_ctx", int64_t(g.max_n_ctx)).field("fits", g.fits);
    j.end_object();
}

void write_device(json_writer &j, const recur_app::inference_session &s) {
    j.field("device", recur_app::device_kind_name(s.kind()));
    if (s.kind() == recur_app::device_kind::cuda) {
        j.field("device_name", s.device_name());
        write_gpu_plan(j, s.gpu_memory());
    }
}

// Without -m: $RECUR_MODEL, else the default model that installer/setup.sh puts in the
// user's data folder.
std::string default_model_path() {
    if (const char *env = std::getenv("RECUR_MODEL"); env && *env) return env;
    std::string data;
    if (const char *x = std::getenv("XDG_DATA_HOME"); x && *x) data = x;
    else if (const char *home = std::getenv("HOME"); home && *home) data = std::string(home) + "/.local/share";
    return data + "/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::unique_ptr<model> load_model(const options &o) {
    std::string path = o.model_path;
    if (path.empty()) {
        path = default_model_path();
        if (!std::ifstream(path))
            throw error("no model given (-m MODEL.gguf) and the default model " + path +
                        " is not there; run installer/setup.sh to fetch it");
    }
    return model::load(path);
}

context_params make_context_params(const options &o, const model &m, int fallback_ctx) {
    context_params cp;
    cp.n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(fallback_ctx, m.hparams().n_ctx_train);
    cp.n_batch = o.n_batch;
    cp.n_threads = o.n_threads;
    cp.kv_type = o.kv_f32 ? tensor_type::F32 : tensor_type::F16;
    return cp;
}

void write_memory(json_writer &j, const memory_report &r) {
    j.key("memory").begin_object();
    j.field("n_ctx", int64_t(r.n_ctx));
    j.field("weights_bytes", uint64_t(r.weights_bytes));
    j.field("kv_bytes", uint64_t(r.kv_bytes));
    j.field("recurrent_bytes", uint64_t(r.recurrent_bytes));
    j.field("window_bytes", uint64_t(r.window_bytes));
    j.field("full_attention_kv_bytes", uint64_t(r.full_attention_kv_bytes));
    j.field("scratch_bytes", uint64_t(r.scratch_bytes));
    j.end_object();
}


std::vector<int32_t> text_chunks::chunk(int64_t c) const {
    std::vector<int32_t> out;
    if (bos) out.push_back(bos_id);
    out.insert(out.end(), ids.begin() + c * text_per_chunk, ids.begin() + (c + 1) * text_per_chunk);
    return out;
}

text_chunks make_text_chunks(const tokenizer &vocab, const std::string &text, int n_ctx, int max_chunks, bool no_bos,
                             const char *command) {
    if (n_ctx < 2) throw error(std::string(command) + " needs -c of at least 2");
    text_chunks tc;
    tc.ids = vocab.encode(text, false, false);
    tc.bos = vocab.adds_bos() && vocab.bos() >= 0 && !no_bos;
    tc.bos_id = vocab.bos();
    tc.text_per_chunk = tc.bos ? n_ctx - 1 : n_ctx;
    tc.n_chunks = int64_t(tc.ids.size()) / tc.text_per_chunk;
    if (max_chunks > 0) tc.n_chunks = std::min<int64_t>(tc.n_chunks, max_chunks);
    if (tc.n_chunks == 0)
        throw error("the text has " + std::to_string(tc.ids.size()) + " tokens, fewer than one chunk of " +
                    std::to_string(tc.text_per_chunk));
    return tc;
}

} // namespace recur_cli
