// libFuzzer target: engine state files. load_state must refuse anything damaged with a
// recur::error and leave the context usable.
#include "recur/model.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static std::unique_ptr<recur::model> m = [] {
        const char *dir = std::getenv("RECUR_SHARED_DIR");
        return recur::model::load(std::string(dir ? dir : RECUR_SHARED_DIR) + "/models/stories260K.gguf");
    }();
    static recur::context *ctx = [] {
        recur::context_params cp;
        cp.n_ctx = 64;
        cp.n_threads = 1;
        return new recur::context(*m, cp);
    }();
    static const std::string path = "/tmp/recur-fuzz-state-" + std::to_string(getpid());
    FILE *out = fopen(path.c_str(), "wb");
    if (!out) return 0;
    fwrite(data, 1, size, out);
    fclose(out);
    try {
        ctx->load_state(path);
    } catch (const recur::error &) {
    }
    std::vector<float> logits;
    ctx->truncate(0);
    ctx->eval({1, 2}, logits); // still usable
    return 0;
}
