// recur convert: choose recency-aware KV groups and write a hybrid GGUF (DESIGN §3).
#include "cmd_convert.h"

#include "cli_common.h"

#include "recur/convert.h"
#include "recur/tokenizer.h"

#include <cstdio>
#include <iostream>

using namespace recur;

namespace recur_cli {

// Chooses recency-aware KV groups on calibration text and writes a hybrid GGUF (DESIGN §3).
int cmd_convert(const options &o) {
    auto m = load_model(o);
    if (o.file.empty()) throw error("convert needs calibration text (-f FILE)");
    if (o.output_path.empty()) throw error("convert needs an output file (-o OUT.gguf)");
    convert_params cp;
    cp.window = o.window;
    cp.fraction = o.fraction;
    cp.threshold = o.threshold;
    cp.steps = o.steps;
    cp.n_threads = o.n_threads;
    cp.n_batch = o.n_batch;
    const std::string text = read_file(o.file);
    std::vector<int32_t> ids = m->vocab().encode(text, !o.no_bos, false);
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(2048, m->hparams().n_ctx_train);
    if (int(ids.size()) > n_ctx) ids.resize(size_t(n_ctx));
    auto t0 = clock_type::now();
    convert_result r = convert_to_hybrid(*m, ids, cp, o.output_path, [&](int64_t done, int64_t total) {
        if (!o.json) fprintf(stderr, "\rcalibrating %lld/%lld tokens", (long long)done, (long long)total);
        return true;
    });
    if (!o.json) fprintf(stderr, "\n");
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("output", o.output_path).field("replaced_groups", int64_t(r.replaced_groups));
        j.field("total_groups", int64_t(r.total_groups)).field("kv_fraction_kept", r.kv_fraction_kept);
        j.field("calib_tokens", int64_t(r.calib_tokens)).field("steps", int64_t(o.steps));
        j.key("final_loss").begin_array().end_array();
        j.field("seconds", seconds_since(t0));
        j.key("groups").begin_array();
        for (auto &g : r.groups)
            if (g.replaced)
                j.begin_object().field("layer", int64_t(g.layer)).field("group", int64_t(g.group)).field("recency", g.recency).end_object();
        j.end_array();
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("wrote %s: %d of %d KV groups replaced by recurrent heads (attention KV kept: %.0f%%), "
               "calibrated on %lld tokens\n",
               o.output_path.c_str(), r.replaced_groups, r.total_groups, 100.0 * r.kv_fraction_kept,
               (long long)r.calib_tokens);
    }
    return 0;
}


} // namespace recur_cli
