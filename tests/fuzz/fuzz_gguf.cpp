// libFuzzer target: the GGUF reader and the model loader (including hybrid metadata and
// recurrent tensors) on arbitrary bytes. Any outcome but a recur::error is a bug.
#include "fuzz_escape.h"
#include "recur/gguf.h"
#include "recur/model.h"
#include "tiny_models.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

// Seeds: the tiny models (tiny_models.h), written once into the corpus folder.
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
