// Two tiny models for the fuzz targets (fuzz_gguf seeds, fuzz_state contexts).
#pragma once

#include "recur/gguf.h"
#include "recur/gguf_writer.h"
#include "recur/quants.h"

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// ../shared/models/stories260K.gguf, or where RECUR_SHARED_DIR says the shared folder is.
inline std::string stories260k_path() {
    const char *shared = std::getenv("RECUR_SHARED_DIR");
    return std::string(shared ? shared : RECUR_SHARED_DIR) + "/models/stories260K.gguf";
}

// Models that reach the whole loader and an evaluation: the real models are far longer than
// the fuzzer's 32 KiB inputs (their truncated heads stop at the tensor bounds check), so two
// tiny ones are written to `dir` as tiny-llama.gguf and tiny-hybrid.gguf, both within 32 KiB:
// stories260K's vocabulary and metadata with a 2-layer Llama of n_embd 8 (2 heads of 4, 2 KV
// groups) and random F16/F32 weights, and the same as a hybrid with every replacement kind:
// layer 0 a gated window + recurrent group (ring 2, 1 sink) and a window group (ring 3), layer 1
// a recurrent group with q/k/v transforms.
inline void write_tiny_models(const std::string &dir) {
    auto src = recur::gguf_file::open(stories260k_path());
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

