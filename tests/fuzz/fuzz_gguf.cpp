// libFuzzer target: the GGUF reader and the model loader (including hybrid metadata and
// recurrent tensors) on arbitrary bytes. Any outcome but a recur::error is a bug.
#include "fuzz_escape.h"
#include "recur/gguf.h"
#include "recur/model.h"

#include "recur/gguf_writer.h"
#include "recur/quants.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <unistd.h>

namespace {

// Seeds that reach the whole loader and an evaluation: the real models are far longer than
// the fuzzer's 32 KiB inputs (their truncated heads stop at the tensor bounds check), so two
// tiny models are written here, both within 32 KiB: stories260K's vocabulary and metadata with
// a 2-layer Llama of n_embd 8 (2 heads of 4, 2 KV groups) and random F16/F32 weights, and the
// same as a hybrid with every replacement kind: layer 0 a gated window + recurrent group (ring
// 2, 1 sink) and a window group (ring 3), layer 1 a recurrent group with q/k/v transforms.
void write_tiny_models(const std::string &dir) {
    const char *shared = std::getenv("RECUR_SHARED_DIR");
    auto src = recur::gguf_file::open(std::string(shared ? shared : RECUR_SHARED_DIR) + "/models/stories260K.gguf");
    const int64_t E = 8, F = 16, hd = 4, n_kv = 2, n_layer = 2;
    const int64_t V = src->find_tensor("token_embd.weight")->ne[1];
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    auto f16 = [&](int64_t n) {
        std::vector<uint8_t> b(size_t(n) * 2);
        for (int64_t i = 0; i < n; ++i) {
            const uint16_t h = recur::fp32_to_fp16(nd(rng));
            std::memcpy(b.data() + 2 * i, &h, 2);
        }
        return b;
    };
    auto f32 = [&](int64_t n, float base, float spread) {
        std::vector<uint8_t> b(size_t(n) * 4);
        for (int64_t i = 0; i < n; ++i) {
            const float x = base + spread * nd(rng);
            std::memcpy(b.data() + 4 * i, &x, 4);
        }
        return b;
    };
    for (const bool hybrid : {false, true}) {
        recur::gguf_writer w;
        w.copy_metadata(*src, "llama.");
        w.set_uint32("llama.block_count", uint32_t(n_layer));
        w.set_uint32("llama.embedding_length", uint32_t(E));
        w.set_uint32("llama.feed_forward_length", uint32_t(F));
        w.set_uint32("llama.attention.head_count", 2);
        w.set_uint32("llama.attention.head_count_kv", uint32_t(n_kv));
        w.set_uint32("llama.context_length", 64);
        w.set_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        w.add_tensor("token_embd.weight", recur::tensor_type::F16, {E, V}, f16(E * V));
        w.add_tensor("output_norm.weight", recur::tensor_type::F32, {E}, f32(E, 1, 0.1f));
        for (int64_t l = 0; l < n_layer; ++l) {
            const std::string p = "blk." + std::to_string(l) + ".";
            w.add_tensor(p + "attn_norm.weight", recur::tensor_type::F32, {E}, f32(E, 1, 0.1f));
            w.add_tensor(p + "ffn_norm.weight", recur::tensor_type::F32, {E}, f32(E, 1, 0.1f));
            w.add_tensor(p + "attn_q.weight", recur::tensor_type::F16, {E, E}, f16(E * E));
            w.add_tensor(p + "attn_k.weight", recur::tensor_type::F16, {E, n_kv * hd}, f16(E * n_kv * hd));
            w.add_tensor(p + "attn_v.weight", recur::tensor_type::F16, {E, n_kv * hd}, f16(E * n_kv * hd));
            w.add_tensor(p + "attn_output.weight", recur::tensor_type::F16, {E, E}, f16(E * E));
            w.add_tensor(p + "ffn_gate.weight", recur::tensor_type::F16, {E, F}, f16(E * F));
            w.add_tensor(p + "ffn_up.weight", recur::tensor_type::F16, {E, F}, f16(E * F));
            w.add_tensor(p + "ffn_down.weight", recur::tensor_type::F16, {F, E}, f16(F * E));
        }
        if (hybrid) {
            w.set_uint32("recurformer.version", 1);
            w.set_uint32("recurformer.window", 32);
            w.set_int32_array("recurformer.blk.0.replaced_groups", {0, 1});
            w.set_int32_array("recurformer.blk.0.group_kinds", {2, 1});
            w.set_int32_array("recurformer.blk.0.group_windows", {2, 3});
            w.set_int32_array("recurformer.blk.0.group_sinks", {1, 0});
            w.set_int32_array("recurformer.blk.1.replaced_groups", {1});
            w.set_int32_array("recurformer.blk.1.group_kinds", {0});
            w.set_int32_array("recurformer.blk.1.group_windows", {0});
            for (int64_t l = 0; l < n_layer; ++l) { // one recurrent head per layer (groups of one query head)
                const std::string t = "blk." + std::to_string(l) + ".rec.";
                w.add_tensor(t + "dt_w", recur::tensor_type::F32, {E, 1}, f32(E, 0, 0.05f));
                w.add_tensor(t + "dt_b", recur::tensor_type::F32, {1}, f32(1, -2, 0.5f));
                w.add_tensor(t + "a_log", recur::tensor_type::F32, {1}, f32(1, 0, 0.5f));
                w.add_tensor(t + "d", recur::tensor_type::F32, {hd, 1}, f32(hd, 0, 0.5f));
                if (l == 1)
                    for (const char *n : {"q_proj", "k_proj", "v_proj"})
                        w.add_tensor(t + n, recur::tensor_type::F32, {hd, hd, 1}, f32(hd * hd, 0, 0.3f));
            }
            w.add_tensor("blk.0.rec.gate_w", recur::tensor_type::F32, {E, 1}, f32(E, 0, 0.1f));
            w.add_tensor("blk.0.rec.gate_b", recur::tensor_type::F32, {1}, f32(1, 0, 1));
            w.add_tensor("blk.0.rec.gate_n", recur::tensor_type::F32, {1}, f32(1, 0.5f, 0.1f));
        }
        w.write(dir + (hybrid ? "/tiny-hybrid.gguf" : "/tiny-llama.gguf"));
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *seed_dir = std::getenv("RECUR_FUZZ_SEED_DIR");
    if (seed_dir && !std::filesystem::exists(std::string(seed_dir) + "/tiny-hybrid.gguf")) write_tiny_models(seed_dir);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try {
        auto f = recur::gguf_file::from_memory(data, size);
        for (auto &t : f->tensors()) (void)t.n_elements();
    } catch (const recur::error &) {
        return 0;
    } catch (const std::exception &e) {
        fuzz_escaped("fuzz_gguf", &e);
    } catch (...) {
        fuzz_escaped("fuzz_gguf", nullptr);
    }
    // The bytes parse as GGUF: also run the full model validation, which reads the file from
    // disk (model::load maps a path).
    // Removed when the fuzzer exits normally (libFuzzer ends -max_total_time runs with exit()),
    // so repeated runs leave nothing behind; after a crash it stays, next to the reproducer.
    static const struct scratch_file {
        std::string path = "/tmp/recur-fuzz-gguf-" + std::to_string(getpid()) + ".gguf";
        ~scratch_file() { std::remove(path.c_str()); }
    } scratch;
    const std::string &path = scratch.path;
    FILE *out = fopen(path.c_str(), "wb");
    if (!out) return 0;
    fwrite(data, 1, size, out);
    fclose(out);
    try {
        auto m = recur::model::load(path);
        recur::context_params cp;
        cp.n_ctx = 8;
        cp.n_threads = 1;
        if (m->weights_bytes() < (64u << 20)) {
            recur::context ctx(*m, cp);
            std::vector<float> logits;
            ctx.eval({0}, logits);
        }
    } catch (const recur::error &) {
    } catch (const std::exception &e) {
        fuzz_escaped("fuzz_gguf", &e);
    } catch (...) {
        fuzz_escaped("fuzz_gguf", nullptr);
    }
    return 0;
}
