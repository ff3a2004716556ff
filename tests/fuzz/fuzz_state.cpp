// libFuzzer target: engine state files. load_state must refuse anything damaged with a
// recur::error and leave the context as it was; a file it accepts must leave a context that
// evaluates. Each input goes to two live contexts: stories260K (plain attention) and the tiny
// hybrid of tiny_models.h (a gated window + recurrent group with a sink, a window group and a
// recurrent group), whose states also carry window rings, sinks and recurrent states. A state
// names the model it belongs to, so each context refuses the other's quickly. Seeds:
// LLVMFuzzerInitialize saves real states of both at 1, 7 and 33 tokens into
// $RECUR_FUZZ_SEED_DIR when that is set (tests/fuzz/run.sh does).
#include "fuzz_escape.h"
#include "recur/model.h"
#include "tiny_models.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

std::unique_ptr<recur::model> load_stories() { return recur::model::load(stories260k_path()); }

// The tiny hybrid, written to a scratch folder and loaded (a small file is read into memory,
// so the folder can go at once).
std::unique_ptr<recur::model> load_tiny_hybrid() {
    const std::string dir = "/tmp/recur-fuzz-state-models-" + std::to_string(getpid());
    std::filesystem::create_directories(dir);
    write_tiny_models(dir);
    auto m = recur::model::load(dir + "/tiny-hybrid.gguf");
    std::filesystem::remove_all(dir);
    return m;
}

struct live_context {
    std::unique_ptr<recur::model> model;
    std::unique_ptr<recur::context> ctx;
    std::string name;
};

std::vector<live_context> &contexts() {
    static std::vector<live_context> all = [] {
        std::vector<live_context> v;
        recur::context_params cp;
        cp.n_ctx = 64;
        cp.n_threads = 1;
        for (auto [name, load] : {std::pair{"stories", &load_stories}, {"tiny-hybrid", &load_tiny_hybrid}}) {
            live_context c;
            c.model = load();
            c.ctx = std::make_unique<recur::context>(*c.model, cp);
            c.name = name;
            v.push_back(std::move(c));
        }
        return v;
    }();
    return all;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *seed_dir = std::getenv("RECUR_FUZZ_SEED_DIR");
    if (!seed_dir) return 0;
    std::vector<float> logits;
    for (auto &c : contexts()) {
        const int32_t n_vocab = c.model->hparams().n_vocab;
        for (int n : {1, 7, 33}) {
            const std::string seed = std::string(seed_dir) + "/" + c.name + "-" + std::to_string(n) + ".state";
            if (std::filesystem::exists(seed)) continue;
            c.ctx->truncate(0);
            std::vector<int32_t> tokens(static_cast<size_t>(n));
            for (int i = 0; i < n; ++i) tokens[size_t(i)] = 1 + (i * 37) % (n_vocab - 1);
            c.ctx->eval(tokens, logits);
            c.ctx->save_state(seed);
        }
        c.ctx->truncate(0);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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
    for (auto &c : contexts()) {
        recur::context &ctx = *c.ctx;
        // The context carries whatever the last accepted file left (usually nothing): a refusal
        // must leave it exactly so. No evaluation per refused input: the matmuls would dominate.
        const int32_t before = ctx.n_past();
        try {
            ctx.load_state(path);
        } catch (const recur::error &) {
            if (ctx.n_past() != before) __builtin_trap(); // a refused file changed the context
            continue;
        } catch (const std::exception &e) {
            fuzz_escaped("fuzz_state", &e);
        } catch (...) {
            fuzz_escaped("fuzz_state", nullptr);
        }
        std::vector<float> logits;
        if (ctx.n_past() < ctx.n_ctx()) ctx.eval({2}, logits); // an accepted state must evaluate
        ctx.truncate(0);
    }
    return 0;
}
