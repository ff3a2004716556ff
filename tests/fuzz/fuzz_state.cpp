// libFuzzer target: engine state files. load_state must refuse anything damaged with a
// recur::error and leave the context as it was; a file it accepts must leave a context that
// evaluates. Seeds: LLVMFuzzerInitialize saves real states of stories260K (plain) into
// $RECUR_FUZZ_SEED_DIR when that is set (tests/fuzz/run.sh does).
#include "fuzz_escape.h"
#include "recur/model.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

recur::model &the_model() {
    static std::unique_ptr<recur::model> m = [] {
        const char *dir = std::getenv("RECUR_SHARED_DIR");
        return recur::model::load(std::string(dir ? dir : RECUR_SHARED_DIR) + "/models/stories260K.gguf");
    }();
    return *m;
}

recur::context &the_context() {
    static recur::context *ctx = [] {
        recur::context_params cp;
        cp.n_ctx = 64;
        cp.n_threads = 1;
        return new recur::context(the_model(), cp);
    }();
    return *ctx;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *seed_dir = std::getenv("RECUR_FUZZ_SEED_DIR");
    if (!seed_dir) return 0;
    recur::context &ctx = the_context();
    std::vector<float> logits;
    for (int n : {1, 7, 33}) {
        const std::string seed = std::string(seed_dir) + "/stories-" + std::to_string(n) + ".state";
        if (std::filesystem::exists(seed)) continue;
        ctx.truncate(0);
        std::vector<int32_t> tokens(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) tokens[size_t(i)] = 1 + (i * 37) % 500;
        ctx.eval(tokens, logits);
        ctx.save_state(seed);
    }
    ctx.truncate(0);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    recur::context &ctx = the_context();
    // Removed when the fuzzer exits normally (libFuzzer ends -max_total_time runs with exit()),
    // so repeated runs leave nothing behind; after a crash it stays, next to the reproducer.
    static const struct scratch_file {
        std::string path = "/tmp/recur-fuzz-state-" + std::to_string(getpid());
        ~scratch_file() { std::remove(path.c_str()); }
    } scratch;
    const std::string &path = scratch.path;
    FILE *out = std::fopen(path.c_str(), "wb");
    if (!out) return 0;
    std::fwrite(data, 1, size, out);
    std::fclose(out);
    // The context carries whatever the last accepted file left (usually nothing): a refusal must
    // leave it exactly so. No evaluation per input: the matmuls would dominate the time.
    const int32_t before = ctx.n_past();
    try {
        ctx.load_state(path);
    } catch (const recur::error &) {
        if (ctx.n_past() != before) __builtin_trap(); // a refused file changed the context
        return 0;
    } catch (const std::exception &e) {
        fuzz_escaped("fuzz_state", &e);
    }
    std::vector<float> logits;
    if (ctx.n_past() < ctx.n_ctx()) ctx.eval({2}, logits); // an accepted state must evaluate
    ctx.truncate(0);
    return 0;
}
