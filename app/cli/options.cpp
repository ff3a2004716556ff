#include "options.h"

#include "recur/error.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace recur_cli {

namespace {
int to_int(const std::string &flag, const std::string &v) {
    try {
        size_t used = 0;
        long long x = std::stoll(v, &used);
        if (used != v.size() || x < -2147483647LL || x > 2147483647LL) throw std::invalid_argument(v);
        return int(x);
    } catch (const std::exception &) {
        throw recur::error(flag + " expects an integer, got '" + v + "'");
    }
}
float to_float(const std::string &flag, const std::string &v) {
    try {
        size_t used = 0;
        float x = std::stof(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        return x;
    } catch (const std::exception &) {
        throw recur::error(flag + " expects a number, got '" + v + "'");
    }
}
} // namespace

std::string usage() {
    return "usage: recur COMMAND [options]\n"
           "commands:\n"
           "  info       -m MODEL [-c N]            model, tokenizer and memory plan\n"
           "  tokenize   -m MODEL -p TEXT [--pieces] token ids\n"
           "  generate   -m MODEL -p TEXT [-n N] [--chat] [--system S] [--temp T] [--seed S] ...\n"
           "  perplexity -m MODEL -f FILE [-c N] [--chunks K]\n"
           "  bench      -m MODEL [-p 512] [-n 128] [-d DEPTH] [-r REPS] [--recency K]\n"
           "  analyze    -m MODEL -f FILE [-c N] [--window K]  per-head recency statistics\n"
           "  convert    -m MODEL -f CALIB -o OUT (--fraction F | --threshold T) [--window K] [--steps 0]\n"
           "             [--steps S] [--lr LR] [--seed S] [--calib-self N] [--calib-tokens N] [--resume]\n"
           "             [--kind auto|recurrent|window|window+recurrent] [--window-tokens W] [--wr-window W]\n"
           "             [--sinks S] [--wr-additive] [--read-out additive|delta] [--decay per-head|per-channel] [--repeat-spans N] [--drills N] [--drill-weight W]\n"
           "             [--copy-probe N] [--copy-limit X]\n"
           "             [--retrieval-probe N] [--retrieval-limit X]\n"
           "             [--layers A-B]\n"
           "  ask        -m MODEL --doc FILE -q QUESTION [--session DB] [--new-session] [--no-session]\n"
           "  quantize   -m IN -o OUT --type f32|f16|bf16|q8_0|q4_0|q4_1|q4_k|q6_k\n"
           "  kl         -m ORIGINAL --hybrid H -f FILE [-c N] [--chunks K]  KL, perplexities, top-1 agreement\n"
           "  passkey    -m MODEL [--lengths 1k,2k,4k,8k] [--trials N] [-f FILLER] [--seed S]\n"
           "             [--answer-nll]\n"
           "common options:\n"
           "  -t N          threads (default: all cores)     -c N   context length\n"
           "  -b N          prefill batch (default 256)      --json one JSON object on stdout\n"
           "  --device D    cpu | cuda | auto (default auto)  --kv-f32  F32 KV cache (default F16)\n"
           "sampling: --temp T (0: greedy) --top-k K --top-p P --min-p P --repeat-penalty R\n"
           "          --repeat-last-n N --seed S\n"
           "see docs/CLI.md\n";
}

options parse_options(int argc, char **argv) {
    options o;
    if (argc < 2) throw recur::error("no command given\n" + usage());
    o.command = argv[1];
    if (o.command == "-h" || o.command == "--help" || o.command == "help") {
        o.command = "help";
        return o;
    }
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw recur::error(a + " needs a value");
            return argv[++i];
        };
        if (a == "-m" || a == "--model") o.model_path = next();
        else if (a == "-p" || a == "--prompt") {
            std::string v = next();
            if (o.command == "bench") o.n_prompt_bench = to_int(a, v);
            else o.prompt = v, o.prompt_given = true;
        } else if (a == "-f" || a == "--file") o.file = next();
        else if (a == "-n" || a == "--n-predict") o.n_predict = to_int(a, next());
        else if (a == "-c" || a == "--ctx-size") o.n_ctx = to_int(a, next());
        else if (a == "-b" || a == "--batch-size") o.n_batch = to_int(a, next());
        else if (a == "-t" || a == "--threads") o.n_threads = to_int(a, next());
        else if (a == "-d" || a == "--depth") o.depth = to_int(a, next());
        else if (a == "-r" || a == "--repetitions") o.repetitions = to_int(a, next());
        else if (a == "--chunks") o.chunks = to_int(a, next());
        else if (a == "--json") o.json = true;
        else if (a == "--chat") o.chat = true;
        else if (a == "--system") o.system_prompt = next();
        else if (a == "--pieces") o.pieces = true;
        else if (a == "--no-bos") o.no_bos = true;
        else if (a == "--kv-f32") o.kv_f32 = true;
        else if (a == "--device") o.device = next();
        else if (a == "-o" || a == "--output") o.output_path = next();
        else if (a == "--type") o.type_name = next();
        else if (a == "--window") o.window = to_int(a, next());
        else if (a == "--fraction") o.fraction = to_float(a, next());
        else if (a == "--threshold") o.threshold = to_float(a, next());
        else if (a == "--steps") o.steps = to_int(a, next()), o.steps_given = true;
        else if (a == "--lr") o.lr = to_float(a, next());
        else if (a == "--calib-self") o.calib_self = to_int(a, next());
        else if (a == "--calib-tokens") o.calib_tokens = to_int(a, next());
        else if (a == "--resume") o.resume = true;
        else if (a == "--recency") o.recency = to_int(a, next());
        else if (a == "--kind") o.kind = next();
        else if (a == "--window-tokens") o.window_tokens = to_int(a, next());
        else if (a == "--wr-window") o.wr_window = to_int(a, next());
        else if (a == "--sinks") o.sinks = to_int(a, next());
        else if (a == "--write-candidates") o.write_candidates = true;
        else if (a == "--per-group-only") o.per_group_only = true;
        else if (a == "--wr-additive") o.wr_additive = true;
        else if (a == "--read-out") {
            const std::string v = next();
            if (v != "additive" && v != "delta")
                throw recur::error("--read-out must be additive or delta, got '" + v + "'");
            o.delta_rule = v == "delta";
        } else if (a == "--decay") {
            const std::string v = next();
            if (v != "per-head" && v != "per-channel")
                throw recur::error("--decay must be per-head or per-channel, got '" + v + "'");
            o.per_channel_decay = v == "per-channel";
        }
        else if (a == "--repeat-spans") o.repeat_spans = to_int(a, next());
        else if (a == "--drills") o.drills = to_int(a, next());
        else if (a == "--drill-weight") o.drill_weight = to_float(a, next());
        else if (a == "--layers") {
            const std::string v = next();
            const size_t dash = v.find('-');
            if (dash == std::string::npos || dash == 0) throw recur::error("--layers wants A-B (e.g. 0-13), got '" + v + "'");
            o.first_layer = to_int(a, v.substr(0, dash));
            o.last_layer = to_int(a, v.substr(dash + 1));
            if (o.first_layer < 0 || o.last_layer < o.first_layer)
                throw recur::error("--layers wants A-B with 0 <= A <= B, got '" + v + "'");
        } else if (a == "--copy-probe") o.copy_probe = to_int(a, next());
        else if (a == "--copy-limit") o.copy_limit = to_float(a, next());
        else if (a == "--retrieval-probe") o.retrieval_probe = to_int(a, next());
        else if (a == "--retrieval-limit") o.retrieval_limit = to_float(a, next());
        else if (a == "--doc") o.doc_path = next();
        else if (a == "-q" || a == "--question") o.question = next();
        else if (a == "--session") o.session_db = next();
        else if (a == "--new-session") o.new_session = true;
        else if (a == "--no-session") o.no_session = true;
        else if (a == "--hybrid") o.hybrid_path = next();
        else if (a == "--lengths") o.lengths = next();
        else if (a == "--trials") o.trials = to_int(a, next());
        else if (a == "--answer-nll") o.answer_nll = true;
        else if (a == "--temp") o.sampling.temperature = to_float(a, next());
        else if (a == "--top-k") o.sampling.top_k = to_int(a, next());
        else if (a == "--top-p") o.sampling.top_p = to_float(a, next());
        else if (a == "--min-p") o.sampling.min_p = to_float(a, next());
        else if (a == "--repeat-penalty") o.sampling.repeat_penalty = to_float(a, next());
        else if (a == "--repeat-last-n") o.sampling.repeat_last_n = to_int(a, next());
        else if (a == "--seed") {
            std::string v = next();
            try {
                o.sampling.seed = std::stoull(v);
            } catch (const std::exception &) {
                throw recur::error("--seed expects a non-negative integer, got '" + v + "'");
            }
        } else if (a == "-h" || a == "--help") {
            o.command = "help";
        } else {
            throw recur::error("unknown option '" + a + "' (see recur --help)");
        }
    }
    if (o.n_threads < 0 || o.n_threads > 1024) throw recur::error("-t must be between 1 and 1024");
    if (o.n_batch <= 0) throw recur::error("-b must be positive");
    if (o.n_ctx < 0) throw recur::error("-c must be positive");
    if (o.n_predict < 0) throw recur::error("-n must not be negative");
    if (o.window <= 0) throw recur::error("--window must be positive");
    if (o.steps < 0) throw recur::error("--steps must not be negative");
    if (o.calib_self < 0 || o.calib_tokens < 0) throw recur::error("--calib-self and --calib-tokens must not be negative");
    if (o.repeat_spans < -1 || o.repeat_spans > 1000) throw recur::error("--repeat-spans must be between 0 and 1000");
    if (o.drills < -1 || o.drills > 100000) throw recur::error("--drills must be between 0 and 100000");
    if (o.drill_weight != -1 && !(o.drill_weight > 0 && o.drill_weight <= 1e6))
        throw recur::error("--drill-weight must be above 0 (and at most 1e6)");
    if (o.copy_probe < -1 || o.copy_probe > 100000) throw recur::error("--copy-probe must be between 0 and 100000");
    if (o.retrieval_probe < -1 || o.retrieval_probe > 10000)
        throw recur::error("--retrieval-probe must be between 0 and 10000");
    if (o.retrieval_limit != -1 && !(o.retrieval_limit >= 0 && o.retrieval_limit < 1e6))
        throw recur::error("--retrieval-limit must be a number of nats, 0 or more");
    if (o.copy_limit != -1 && !(o.copy_limit >= 0 && o.copy_limit <= 1))
        throw recur::error("--copy-limit must be between 0 and 1");
    if (!(o.lr >= 0) || !std::isfinite(o.lr)) throw recur::error("--lr must be a positive number");
    if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
        throw recur::error("--device must be cpu, cuda or auto, got '" + o.device + "'");
    return o;
}

} // namespace recur_cli
