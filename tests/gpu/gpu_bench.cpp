// recur_gpu_bench: the measurements behind tests/gpu/run.sh and docs/perf/gpu.md. Prints one
// JSON object per line.
//
//   recur_gpu_bench roofline
//       device-to-device copy bandwidth (bytes read + written per second) and the cuBLAS F16 GEMM
//       rate (F32 accumulation) at the 1B model's widest prefill shape: the two yardsticks.
//   recur_gpu_bench make-hybrid IN OUT [FRACTION]
//       writes a hybrid of IN with FRACTION (default 0.5) of every layer's KV groups replaced by
//       recurrent heads (random parameters: speed does not depend on their values).
//   recur_gpu_bench gemv
//       the 1B model's decode GEMVs alone, for every warps-per-row split, plain and with
//       programmatic dependent launch: weight bytes per second (JSON line per case).
//   recur_gpu_bench run -m MODEL -c N_CTX [-n DECODE] [-b BATCH] [--label L]
//       prefills N_CTX - DECODE random tokens, then decodes DECODE tokens greedily (the graph
//       path), after one untimed warm-up of both.
#include "gpu_test_util.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using namespace recur;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string json_escape(const std::string &s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        o += c;
    }
    return o;
}

// Multiply-adds ×2 of the matmuls per token (attention excluded): the FLOPs the GEMMs do.
double matmul_flops_per_token(const model &m) {
    double p = 0;
    for (const layer_weights &L : m.layers())
        for (auto *w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) p += double(w->n_in) * double(w->n_out);
    return 2.0 * p;
}

int cmd_roofline() {
    const cuda_device d = cuda_device_info();
    if (!d.available) {
        fprintf(stderr, "recur_gpu_bench: %s\n", d.error.c_str());
        return 1;
    }
    const double bw = cuda_copy_bandwidth(size_t(1) << 30, 20);
    // The 1B model's gate/up projection over 2048 prompt tokens: m = 2·8192 rows, k = 2048.
    const double flops = cuda_gemm_f16_flops(16384, 2048, 2048, 20);
    printf("{\"device\":\"%s\",\"copy_bytes_per_s\":%.6e,\"gemm_f16_flops\":%.6e}\n", json_escape(d.name).c_str(), bw,
           flops);
    return 0;
}

int cmd_make_hybrid(const std::string &in, const std::string &out, double fraction) {
    auto m = model::load(in);
    gpu_test::hybrid_spec spec;
    spec.fraction = fraction;
    gpu_test::write_hybrid(*m, out, spec);
    return 0;
}

int cmd_run(int argc, char **argv) {
    std::string path, label;
    int n_ctx = 2048, n_decode = 64, n_batch = 2048;
    bool profile = false;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw error("missing value after " + a);
            return argv[++i];
        };
        if (a == "-m") path = next();
        else if (a == "-c") n_ctx = std::stoi(next());
        else if (a == "-n") n_decode = std::stoi(next());
        else if (a == "-b") n_batch = std::stoi(next());
        else if (a == "--label") label = next();
        else if (a == "--profile") profile = true;
        else throw error("unknown argument " + a);
    }
    if (path.empty() || n_decode < 1 || n_ctx <= n_decode) throw error("run: need -m MODEL and -c > -n");
    auto m = model::load(path);
    cuda_params p;
    p.n_ctx = n_ctx;
    p.n_batch = std::min(n_batch, n_ctx);
    p.profile_ops = profile;
    cuda_model g(*m, p);
    const int n_prefill = n_ctx - n_decode;
    std::mt19937 rng(1);
    std::vector<int32_t> prompt(static_cast<size_t>(n_prefill));
    for (auto &t : prompt) t = int32_t(rng() % uint32_t(m->hparams().n_vocab));
    std::vector<float> logits;

    // Warm-up: loads the modules, captures the decode graph, and lets cuBLAS pick its algorithm
    // for every GEMM shape the timed prefill uses (a batch of min(prompt, n_batch) tokens): its
    // first call per shape spends milliseconds on the host choosing, while the GPU waits. So the
    // numbers are steady state, as llama-bench's are after its warm-up run.
    g.eval(std::vector<int32_t>(prompt.begin(), prompt.begin() + std::min(n_prefill, p.n_batch)), logits);
    int32_t tok = g.decode_greedy(1);
    tok = g.decode_greedy(tok);
    tok = g.decode_greedy(tok);
    g.reset();

    double t0 = now_s();
    g.eval(prompt, logits);
    const double prefill_s = now_s() - t0;
    tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    t0 = now_s();
    for (int i = 0; i < n_decode; ++i) tok = g.decode_greedy(tok);
    const double decode_s = now_s() - t0;

    const cuda_memory_plan &mem = g.memory();
    printf("{\"label\":\"%s\",\"model\":\"%s\",\"device\":\"%s\",\"weights_type\":\"%s\",\"replaced_groups\":%d,"
           "\"n_ctx\":%d,\"prefill_tokens\":%d,\"prefill_s\":%.6f,\"prefill_tok_s\":%.2f,"
           "\"matmul_flops_per_token\":%.6e,\"decode_tokens\":%d,\"decode_s\":%.6f,\"decode_tok_s\":%.2f,"
           "\"weights_bytes\":%zu,\"kv_bytes\":%zu,\"recurrent_bytes\":%zu,\"decode_overlap\":%s}\n",
           json_escape(label).c_str(), json_escape(path).c_str(), json_escape(g.device_name()).c_str(),
           m->weights_type().c_str(), m->replaced_group_count(), n_ctx, n_prefill, prefill_s, n_prefill / prefill_s,
           matmul_flops_per_token(*m), n_decode, decode_s, n_decode / decode_s, m->weights_bytes(), mem.kv_bytes,
           mem.recurrent_bytes, g.decode_overlaps() ? "true" : "false");
    if (profile) {
        // Device ms per op over the timed prefill and decode (reset() cleared the warm-up's).
        // The graph is off, so the decode times here include no graph savings.
        printf("{\"profile\":\"%s\",\"ops\":[", json_escape(label).c_str());
        const auto ops = g.op_times();
        for (size_t i = 0; i < ops.size(); ++i)
            printf("%s{\"op\":\"%s\",\"prefill_ms\":%.3f,\"decode_ms\":%.3f}", i ? "," : "",
                   json_escape(ops[i].op).c_str(), ops[i].prefill_ms, ops[i].decode_ms);
        printf("]}\n");
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    try {
        const std::string cmd = argc > 1 ? argv[1] : "";
        if (cmd == "roofline") return cmd_roofline();
        if (cmd == "make-hybrid" && argc >= 4) return cmd_make_hybrid(argv[2], argv[3], argc > 4 ? std::atof(argv[4]) : 0.5);
        if (cmd == "run") return cmd_run(argc, argv);
        if (cmd == "gemv") {
            // The 1B model's decode GEMVs, each warps-per-row choice, plain and overlapped (PDL):
            // weight bytes per second against the copy bandwidth, to choose the kernel's split.
            struct shape { const char *name; int64_t rows, n_in; bool pair; };
            const shape shapes[] = {{"qkv", 3072, 2048, false}, {"o", 2048, 2048, false},
                                    {"gate_up", 8192, 2048, true}, {"down", 2048, 8192, false}, {"output", 32000, 2048, false}};
            for (const shape &sh : shapes)
                for (int split : {0, 1, 2, 4})
                    for (bool overlapped : {false, true})
                        printf("{\"gemv\":\"%s\",\"rows\":%lld,\"n_in\":%lld,\"split\":%d,\"pdl\":%s,\"bytes_per_s\":%.6e}\n",
                               sh.name, (long long)sh.rows, (long long)sh.n_in, split, overlapped ? "true" : "false",
                               cuda_gemv_bandwidth(sh.rows, sh.n_in, sh.pair, split, overlapped, 64));
            return 0;
        }
        if (cmd == "gemm" && argc >= 5) {
            // The prefill GEMM's cuBLAS call alone at one shape (M output rows, N tokens, K inputs).
            const int M = std::atoi(argv[2]), N = std::atoi(argv[3]), K = std::atoi(argv[4]);
            printf("{\"gemm\":[%d,%d,%d],\"flops\":%.6e}\n", M, N, K, cuda_gemm_f16_flops(M, N, K, 20));
            return 0;
        }
        fprintf(stderr, "usage: recur_gpu_bench roofline | make-hybrid IN OUT [FRACTION] | run -m MODEL -c N_CTX "
                        "[-n DECODE] [-b BATCH] [--label L] [--profile] | gemm M N K | gemv\n");
        return 2;
    } catch (const std::exception &e) {
        fprintf(stderr, "recur_gpu_bench: %s\n", e.what());
        return 1;
    }
}
