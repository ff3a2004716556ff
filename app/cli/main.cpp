// recur: the engine's command-line tool (DESIGN §6). Every command prints human text, or one
// JSON object with --json; errors are one line on stderr and a non-zero exit code.
#include "cli_common.h"
#include "cmd_ask.h"
#include "cmd_convert.h"
#include "cmd_quality.h"

#include "recur/chat.h"
#include "recur/convert.h"
#include "recur/gguf_writer.h"
#include "recur/model.h"
#include "recur/quants.h"
#include "recur/sampling.h"
#include "recur/tokenizer.h"

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <sys/resource.h>

using namespace recur;
using recur_cli::json_writer;
using recur_cli::options;

namespace recur_cli {

std::string sanitize_utf8(const std::string &s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + size_t(len) <= s.size();
        for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
        if (ok) {
            out.append(s, i, size_t(len));
            i += size_t(len);
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

} // namespace recur_cli

namespace {

using namespace recur_cli;

int cmd_info(const options &o) {
    auto m = load_model(o);
    const model_hparams &hp = m->hparams();
    context_params cp = make_context_params(o, *m, hp.n_ctx_train);
    memory_report r = context::plan(*m, cp);
    // The device a session would use, and on the GPU the planner's answer for it; nothing is
    // allocated, so a plan that does not fit is reported here, not refused.
    const recur_app::device_choice device =
        recur_app::choose_device(device_request_of(o), recur_app::query_gpu(), "--device cuda");
    if (!device.notice.empty()) print_notice(device.notice);
    const recur_app::gpu_memory_plan gpu =
        device.kind == recur_app::device_kind::cuda ? recur_app::plan_gpu_memory(*m, cp) : recur_app::gpu_memory_plan{};
    const std::string tmpl = m->chat_template();
    const chat_format fmt = detect_chat_format(tmpl);
    // How the file's recurrent heads (if any) write their state (docs/FORMAT.md).
    bool has_recurrent_heads = false, per_channel = false, delta = false;
    for (const hybrid_layer &H : m->hybrid()) {
        if (H.recurrent_groups.empty()) continue;
        has_recurrent_heads = true;
        per_channel = per_channel || !H.a_chan.empty();
        delta = delta || H.delta_rule;
    }
    const char *read_out = delta ? "delta" : "additive", *decay = per_channel ? "per-channel" : "per-head";
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("name", recur_cli::sanitize_utf8(m->name()));
        j.field("arch", hp.arch);
        j.field("n_layer", hp.n_layer).field("n_embd", hp.n_embd).field("n_head", hp.n_head);
        j.field("n_head_kv", hp.n_head_kv).field("head_dim", hp.head_dim).field("n_ff", hp.n_ff);
        j.field("n_vocab", hp.n_vocab).field("n_ctx_train", hp.n_ctx_train);
        j.field("rope_freq_base", hp.rope_freq_base).field("rope_dim", hp.rope_dim);
        j.field("rope_style", hp.rope == rope_style::neox ? "neox" : "normal");
        j.field("weights_type", m->weights_type());
        j.field("tokenizer", m->file().get_string("tokenizer.ggml.model", ""));
        j.field("chat_format", chat_format_name(fmt));
        j.field("replaced_groups", int64_t(m->replaced_group_count()));
        j.field("hybrid", m->is_hybrid());
        if (has_recurrent_heads) j.field("read_out", read_out).field("decay", decay);
        j.key("layers").begin_array();
        for (int l = 0; l < hp.n_layer; ++l) {
            const auto &lm = r.layers[size_t(l)];
            j.begin_object().field("layer", int64_t(l));
            j.array("replaced_groups", std::vector<int64_t>(m->hybrid()[size_t(l)].replaced_groups.begin(),
                                                            m->hybrid()[size_t(l)].replaced_groups.end()));
            j.field("kv_bytes", uint64_t(lm.kv_bytes)).field("recurrent_bytes", uint64_t(lm.recurrent_bytes));
            j.field("window_bytes", uint64_t(lm.window_bytes));
            j.field("full_attention_kv_bytes", uint64_t(lm.full_attention_kv_bytes));
            j.end_object();
        }
        j.end_array();
        write_memory(j, r);
        j.field("device", recur_app::device_kind_name(device.kind));
        if (gpu.valid) {
            j.field("device_name", gpu.device_name);
            write_gpu_plan(j, gpu);
        }
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        auto mb = [](size_t b) { return double(b) / (1024.0 * 1024.0); };
        printf("model        %s (%s, %s weights)\n", m->name().c_str(), hp.arch.c_str(), m->weights_type().c_str());
        printf("layers       %d, n_embd %d, ffn %d\n", hp.n_layer, hp.n_embd, hp.n_ff);
        printf("heads        %d query, %d KV (groups of %d), head_dim %d\n", hp.n_head, hp.n_head_kv,
               hp.group_size(), hp.head_dim);
        printf("vocab        %d (%s), chat format %s\n", hp.n_vocab,
               m->file().get_string("tokenizer.ggml.model", "").c_str(), chat_format_name(fmt));
        printf("rope         base %g, dim %d, %s\n", hp.rope_freq_base, hp.rope_dim,
               hp.rope == rope_style::neox ? "neox" : "normal");
        if (m->is_hybrid()) {
            size_t windows = 0;
            for (auto &H : m->hybrid()) windows += H.window_groups.size();
            printf("hybrid       %d of %d KV groups replaced: %zu by recurrent heads, %zu by windows "
                   "(recency window %d)\n",
                   m->replaced_group_count(), hp.n_layer * hp.n_head_kv, size_t(m->replaced_group_count()) - windows,
                   windows, m->recency_window());
            if (has_recurrent_heads)
                printf("recurrent    %s read-out, %s decay\n", read_out, decay);
        }
        printf("memory at %d tokens: weights %.1f MiB, KV cache %.1f MiB (full attention %.1f MiB), "
               "recurrent %.1f MiB, windows %.1f MiB, buffers %.1f MiB\n",
               r.n_ctx, mb(r.weights_bytes), mb(r.kv_bytes), mb(r.full_attention_kv_bytes), mb(r.recurrent_bytes),
               mb(r.window_bytes), mb(r.scratch_bytes));
        if (gpu.valid)
            printf("device       cuda: %s%s\n", gpu.description.c_str(),
                   gpu.fits ? "" : " (DOES NOT FIT: a session at this context would be refused)");
        else
            printf("device       cpu\n");
    }
    return 0;
}

int cmd_tokenize(const options &o) {
    auto m = load_model(o);
    std::string text = o.prompt_given ? o.prompt : (o.file.empty() ? "" : read_file(o.file));
    std::vector<int32_t> ids = m->vocab().encode(text, !o.no_bos, true);
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.array("tokens", std::vector<int64_t>(ids.begin(), ids.end()));
        if (o.pieces) {
            j.key("pieces").begin_array();
            for (int32_t id : ids) j.value(recur_cli::sanitize_utf8(m->vocab().token_to_piece(id)));
            j.end_array();
        }
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        for (size_t i = 0; i < ids.size(); ++i) {
            if (o.pieces)
                printf("%6d -> '%s'\n", ids[i], m->vocab().token_to_piece(ids[i]).c_str());
            else
                printf("%s%d", i ? " " : "", ids[i]);
        }
        if (!o.pieces) printf("\n");
    }
    return 0;
}

int cmd_generate(const options &o) {
    auto m = load_model(o);
    const tokenizer &vocab = m->vocab();
    std::string text = o.prompt_given ? o.prompt : (o.file.empty() ? "" : read_file(o.file));
    std::vector<std::string> stop_strings;
    std::vector<int32_t> prompt;
    if (o.chat) {
        const chat_format fmt = detect_chat_format(m->chat_template());
        if (fmt == chat_format::plain && !m->chat_template().empty())
            fprintf(stderr, "warning: chat template not recognised; using a plain prompt\n");
        std::vector<chat_message> msgs;
        // Like llama.cpp's built-in (non-Jinja) chat formats, no default system prompt is
        // invented; `--system default` uses the one baked into the model's template (SmolLM2
        // has one), `--system TEXT` any other.
        const std::string system =
            o.system_prompt == "default" ? chat_default_system_prompt(m->chat_template()) : o.system_prompt;
        if (!system.empty()) msgs.push_back({"system", system});
        msgs.push_back({"user", text});
        const std::string rendered = apply_chat_template(fmt, msgs, true);
        // The template writes BOS as text where the format has one; add it as a token only
        // when the rendered text does not begin with it.
        prompt = vocab.encode(rendered, vocab.adds_bos() && !o.no_bos, true);
        stop_strings = chat_stop_strings(fmt);
    } else {
        prompt = vocab.encode(text, !o.no_bos, false);
    }
    if (prompt.empty()) {
        if (vocab.bos() < 0) throw error("empty prompt and the vocabulary has no BOS token to start from");
        prompt.push_back(vocab.bos());
    }
    context_params cp = make_context_params(o, *m, 4096);
    cp.n_ctx = std::max<int32_t>(cp.n_ctx, 1);
    if (int64_t(prompt.size()) + o.n_predict > cp.n_ctx)
        cp.n_ctx = std::min<int64_t>(int64_t(prompt.size()) + o.n_predict, std::max(m->hparams().n_ctx_train, cp.n_ctx));
    if (int64_t(prompt.size()) >= cp.n_ctx)
        throw error("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the context of " +
                    std::to_string(cp.n_ctx));
    const std::unique_ptr<recur_app::inference_session> session = make_session(o, *m, cp);
    recur_app::inference_session &ctx = *session;
    sampler smp(o.sampling);
    for (int32_t t : prompt) smp.accept(t);

    std::vector<float> logits;
    auto t0 = clock_type::now();
    ctx.eval(prompt, logits);
    const double prefill_s = seconds_since(t0);

    std::vector<int32_t> generated;
    std::string out_text;
    std::string stop_reason = "length";
    auto t1 = clock_type::now();
    const int n_vocab = m->hparams().n_vocab;
    while (int(generated.size()) < o.n_predict) {
        const int32_t tok = smp.sample(logits.data(), n_vocab);
        if (vocab.is_end_of_generation(tok)) {
            stop_reason = "eos";
            break;
        }
        generated.push_back(tok);
        smp.accept(tok);
        // decode() applies the vocabulary's rules for the whole sequence (sentencepiece drops
        // the space it prefixed to the first word); print what it adds each step.
        const size_t printed = out_text.size();
        out_text = vocab.decode(generated);
        const std::string piece = out_text.size() >= printed ? out_text.substr(printed) : std::string();
        bool stopped = false;
        for (auto &s : stop_strings) {
            auto pos = out_text.find(s);
            if (pos != std::string::npos) {
                out_text.erase(pos);
                stopped = true;
            }
        }
        if (stopped) {
            stop_reason = "stop";
            break;
        }
        if (!o.json) {
            fputs(piece.c_str(), stdout);
            fflush(stdout);
        }
        if (ctx.n_past() >= ctx.n_ctx()) {
            stop_reason = "context";
            break;
        }
        ctx.eval({tok}, logits);
    }
    const double decode_s = seconds_since(t1);
    const double prefill_tps = double(prompt.size()) / prefill_s;
    const double decode_tps = generated.empty() ? 0.0 : double(generated.size()) / decode_s;
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.array("tokens", std::vector<int64_t>(generated.begin(), generated.end()));
        j.field("text", recur_cli::sanitize_utf8(out_text));
        j.field("prompt_tokens", int64_t(prompt.size()));
        j.field("prefill_tok_s", prefill_tps).field("decode_tok_s", decode_tps);
        j.field("stop", stop_reason).field("seed", uint64_t(smp.seed()));
        j.field("threads", int64_t(ctx.n_threads()));
        write_device(j, ctx);
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("\n");
        fprintf(stderr, "[prompt %zu tokens, %.1f tok/s; generated %zu tokens, %.1f tok/s; stop: %s; %s]\n",
                prompt.size(), prefill_tps, generated.size(), decode_tps, stop_reason.c_str(),
                ctx.device_name().c_str());
    }
    return 0;
}

int cmd_perplexity(const options &o) {
    auto m = load_model(o);
    if (o.file.empty()) throw error("perplexity needs a text file (-f FILE)");
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : 512;
    const text_chunks tc = make_text_chunks(m->vocab(), read_file(o.file), n_ctx, o.chunks, o.no_bos, "perplexity");
    const int64_t n_chunks = tc.n_chunks;
    context_params cp = make_context_params(o, *m, n_ctx);
    cp.n_ctx = n_ctx;
    const std::unique_ptr<recur_app::inference_session> session = make_session(o, *m, cp);
    recur_app::inference_session &ctx = *session;
    const int n_vocab = m->hparams().n_vocab;
    double nll = 0;
    int64_t scored = 0;
    std::vector<float> logits;
    auto t0 = clock_type::now();
    for (int64_t c = 0; c < n_chunks; ++c) {
        const std::vector<int32_t> chunk = tc.chunk(c);
        ctx.truncate(0);
        ctx.eval(chunk, logits, true);
        for (size_t i = 0; i + 1 < chunk.size(); ++i) {
            const float *row = logits.data() + i * size_t(n_vocab);
            double mx = row[0];
            for (int v = 1; v < n_vocab; ++v) mx = std::max<double>(mx, row[v]);
            double sum = 0;
            for (int v = 0; v < n_vocab; ++v) sum += std::exp(double(row[v]) - mx);
            nll += (std::log(sum) + mx) - row[chunk[i + 1]];
            ++scored;
        }
        if (!o.json)
            fprintf(stderr, "[%lld/%lld] ppl so far %.4f\n", (long long)(c + 1), (long long)n_chunks,
                    std::exp(nll / double(scored)));
    }
    const double secs = seconds_since(t0);
    const double ppl = std::exp(nll / double(scored));
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("ppl", ppl).field("n_tokens", int64_t(scored)).field("n_chunks", int64_t(n_chunks));
        j.field("n_ctx", int64_t(n_ctx)).field("tok_s", double(n_chunks) * n_ctx / secs);
        write_device(j, ctx);
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("perplexity %.4f over %lld scored tokens in %lld chunks of %d (%.1f s, %s)\n", ppl, (long long)scored,
               (long long)n_chunks, n_ctx, secs, ctx.device_name().c_str());
    }
    return 0;
}

int cmd_bench(const options &o) {
    auto m = load_model(o);
    const int n_prompt = o.n_prompt_bench, n_gen = o.n_predict, depth = o.depth;
    if (n_prompt < 0 || depth < 0) throw error("bench: -p and -d must not be negative");
    context_params cp = make_context_params(o, *m, 0);
    cp.n_ctx = o.n_ctx > 0 ? o.n_ctx : depth + n_prompt + n_gen + 1;
    if (cp.n_ctx < depth + n_prompt + n_gen)
        throw error("bench: -c " + std::to_string(cp.n_ctx) + " is smaller than depth + prompt + generated tokens");
    const std::unique_ptr<recur_app::inference_session> session = make_session(o, *m, cp);
    recur_app::inference_session &ctx = *session;
    if (o.recency > 0) ctx.collect_recency(o.recency); // measures the statistics' overhead
    // Random token ids, as llama-bench uses: the speed does not depend on the text.
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, m->hparams().n_vocab - 1);
    auto random_tokens = [&](int n) {
        std::vector<int32_t> t(static_cast<size_t>(n));
        for (auto &x : t) x = pick(rng);
        return t;
    };
    std::vector<float> logits;
    double best_prefill = 0, best_decode = 0;
    for (int rep = 0; rep < std::max(1, o.repetitions); ++rep) {
        ctx.truncate(0);
        const std::vector<int32_t> context_tokens = random_tokens(depth);
        if (depth > 0) ctx.eval(context_tokens, logits);
        if (n_prompt > 0) {
            auto t0 = clock_type::now();
            ctx.eval(random_tokens(n_prompt), logits);
            best_prefill = std::max(best_prefill, n_prompt / seconds_since(t0));
        }
        if (n_gen > 0) {
            // Decode from depth. A recurrent state (hybrid models) and the GPU backend cannot be
            // rewound there: start again and read the same depth tokens, outside the timing.
            if (ctx.can_truncate(depth)) {
                ctx.truncate(depth);
            } else {
                ctx.truncate(0);
                if (depth > 0) ctx.eval(context_tokens, logits);
            }
            // Greedy steps: the speed does not depend on which tokens are fed, and on the GPU the
            // argmax stays on the device (its decode graph, the path an answer takes).
            int32_t tok = pick(rng);
            auto t1 = clock_type::now();
            for (int i = 0; i < n_gen; ++i) tok = ctx.decode_greedy(tok);
            best_decode = std::max(best_decode, n_gen / seconds_since(t1));
        }
    }
    memory_report r = ctx.memory();
    // Bytes a decode step streams: every weight matrix once, plus the KV cache read at the
    // average context position of the decode run.
    // KV bytes per cached position (attention groups only), and the recurrent states, which a
    // step reads and writes once each.
    const double kv_per_token = double(r.kv_bytes) / std::max(1, r.n_ctx);
    const double decode_bytes =
        double(m->weights_bytes()) + kv_per_token * (depth + n_gen / 2.0) + 2.0 * double(r.recurrent_bytes);
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("model", recur_cli::sanitize_utf8(m->name())).field("weights_type", m->weights_type());
        j.field("n_prompt", int64_t(n_prompt)).field("n_gen", int64_t(n_gen)).field("depth", int64_t(depth));
        j.field("prefill_tok_s", best_prefill).field("decode_tok_s", best_decode);
        j.field("decode_bytes_per_token", decode_bytes);
        j.field("decode_gb_s", decode_bytes * best_decode / 1e9);
        j.field("kv_bytes", uint64_t(r.kv_bytes)).field("recurrent_bytes", uint64_t(r.recurrent_bytes));
        j.field("full_attention_kv_bytes", uint64_t(r.full_attention_kv_bytes));
        j.field("kv_bytes_per_token", kv_per_token);
        j.field("weights_bytes", uint64_t(r.weights_bytes)).field("peak_rss_bytes", uint64_t(peak_rss_bytes()));
        j.field("threads", int64_t(ctx.n_threads())).field("simd", simd_level());
        write_device(j, ctx);
        j.field("recency_window", int64_t(o.recency)).field("replaced_groups", int64_t(m->replaced_group_count()));
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        if (ctx.kind() == recur_app::device_kind::cuda)
            printf("%s (%s): prefill %d tokens %.1f tok/s, decode %d tokens at depth %d %.1f tok/s (%.1f GB/s), "
                   "%s\n",
                   m->name().c_str(), m->weights_type().c_str(), n_prompt, best_prefill, n_gen, depth, best_decode,
                   decode_bytes * best_decode / 1e9, ctx.device_name().c_str());
        else
            printf("%s (%s): prefill %d tokens %.1f tok/s, decode %d tokens at depth %d %.1f tok/s (%.1f GB/s), "
                   "%d threads, %s\n",
                   m->name().c_str(), m->weights_type().c_str(), n_prompt, best_prefill, n_gen, depth, best_decode,
                   decode_bytes * best_decode / 1e9, ctx.n_threads(), simd_level());
    }
    return 0;
}

// Per-head recency statistics over the first -c tokens of a text (DESIGN §4).
int cmd_analyze(const options &o) {
    auto m = load_model(o);
    if (o.file.empty()) throw error("analyze needs a text file (-f FILE)");
    const std::string text = read_file(o.file);
    std::vector<int32_t> ids = m->vocab().encode(text, !o.no_bos, false);
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(4096, m->hparams().n_ctx_train);
    if (int(ids.size()) > n_ctx) ids.resize(size_t(n_ctx));
    if (int(ids.size()) <= o.window)
        throw error("the text has " + std::to_string(ids.size()) + " tokens; analysis needs more than the window (" +
                    std::to_string(o.window) + ")");
    context_params cp = make_context_params(o, *m, n_ctx);
    cp.n_ctx = int32_t(ids.size());
    const std::unique_ptr<recur_app::inference_session> session = make_session(o, *m, cp);
    recur_app::inference_session &ctx = *session;
    ctx.collect_recency(o.window);
    std::vector<float> logits;
    auto t0 = clock_type::now();
    ctx.eval(ids, logits, false, [&](int64_t done, int64_t total) {
        if (!o.json) fprintf(stderr, "\ranalysing %lld/%lld tokens", (long long)done, (long long)total);
        return true;
    });
    if (!o.json) fprintf(stderr, "\n");
    const double secs = seconds_since(t0);
    const recency_stats &s = ctx.recency();
    const model_hparams &hp = m->hparams();
    if (o.json) {
        json_writer j;
        j.begin_object();
        j.field("window", int64_t(o.window)).field("n_tokens", int64_t(ids.size())).field("seconds", secs);
        j.field("device", recur_app::device_kind_name(ctx.kind()));
        j.field("group_size", int64_t(hp.group_size()));
        j.key("layers").begin_array();
        for (int l = 0; l < hp.n_layer; ++l) {
            j.begin_object().field("layer", int64_t(l));
            j.key("groups").begin_array();
            for (int g = 0; g < hp.n_head_kv; ++g) j.value(s.group_recency(l, g, hp.group_size()));
            j.end_array();
            j.key("heads").begin_array();
            for (int h = 0; h < hp.n_head; ++h) {
                j.begin_object().field("head", int64_t(h)).field("group", int64_t(h / hp.group_size()));
                j.field("recency", s.mean_recency(l, h)).field("sink", s.mean_sink(l, h));
                j.key("hist").begin_array();
                for (int b = 0; b < s.n_bins; ++b) j.value(s.mean_hist(l, h, b));
                j.end_array().end_object();
            }
            j.end_array().end_object();
        }
        j.end_array().end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("recency(%d) per query head over %zu tokens (%.1f s); '*' marks the group minimum\n", o.window,
               ids.size(), secs);
        printf("layer");
        for (int h = 0; h < hp.n_head; ++h) printf("  h%-4d", h);
        printf("  | sink (mean over heads)\n");
        for (int l = 0; l < hp.n_layer; ++l) {
            printf("%5d", l);
            double sink = 0;
            for (int h = 0; h < hp.n_head; ++h) {
                const bool is_min = s.mean_recency(l, h) == s.group_recency(l, h / hp.group_size(), hp.group_size());
                printf("  %.3f%c", s.mean_recency(l, h), is_min && hp.group_size() > 1 ? '*' : ' ');
                sink += s.mean_sink(l, h);
            }
            printf("  | %.3f\n", sink / hp.n_head);
        }
    }
    return 0;
}

// Re-stores every 2-D weight of a model in another tensor type (like llama-quantize, with
// plain round-to-nearest quantisers); norms and other 1-D tensors are copied unchanged.
int cmd_quantize(const options &o) {
    if (o.model_path.empty() || o.output_path.empty() || o.type_name.empty())
        throw error("quantize needs -m IN.gguf -o OUT.gguf --type f32|f16|bf16|q8_0|q4_0|q4_1|q4_k|q6_k");
    const std::pair<const char *, tensor_type> names[] = {
        {"f32", tensor_type::F32},   {"f16", tensor_type::F16},   {"bf16", tensor_type::BF16},
        {"q8_0", tensor_type::Q8_0}, {"q4_0", tensor_type::Q4_0}, {"q4_1", tensor_type::Q4_1},
        {"q4_k", tensor_type::Q4_K}, {"q6_k", tensor_type::Q6_K}};
    tensor_type target = tensor_type::F32;
    bool found = false;
    for (auto &[n, t] : names)
        if (o.type_name == n) target = t, found = true;
    if (!found) throw error("unknown --type '" + o.type_name + "'");
    auto src = gguf_file::open(o.model_path);
    gguf_writer w;
    w.copy_metadata(*src);
    const int64_t block = type_traits(target).block_elems;
    int converted = 0;
    for (auto &t : src->tensors()) {
        if (t.ne.size() != 2 || t.ne[0] % block != 0 || t.type == target) {
            w.add_tensor(t.name, t.type, t.ne, t.data, t.n_bytes);
            continue;
        }
        const int64_t n_in = t.ne[0], rows = t.ne[1];
        const size_t src_row = row_bytes(t.type, n_in), dst_row = row_bytes(target, n_in);
        std::vector<uint8_t> out(dst_row * size_t(rows));
        std::vector<float> tmp(static_cast<size_t>(n_in));
        for (int64_t r = 0; r < rows; ++r) {
            dequantize_row_ref(t.type, t.data + size_t(r) * src_row, tmp.data(), n_in);
            quantize_row_ref(target, tmp.data(), out.data() + size_t(r) * dst_row, n_in);
        }
        w.add_tensor(t.name, target, t.ne, std::move(out));
        ++converted;
    }
    w.write(o.output_path);
    if (o.json) {
        json_writer j;
        j.begin_object().field("output", o.output_path).field("type", o.type_name).field("converted", int64_t(converted));
        j.end_object();
        std::cout << j.str() << "\n";
    } else {
        printf("wrote %s: %d matrices stored as %s\n", o.output_path.c_str(), converted, o.type_name.c_str());
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    try {
        options o = recur_cli::parse_options(argc, argv);
        if (o.command == "help") {
            fputs(recur_cli::usage().c_str(), stdout);
            return 0;
        }
        // These commands run on the CPU only: an explicit request for the GPU is refused rather
        // than quietly ignored; auto means "whatever works".
        static const char *const cpu_only[] = {"tokenize", "convert", "quantize"};
        for (const char *c : cpu_only)
            if (o.command == c && o.device == "cuda")
                throw error("--device cuda: `recur " + o.command +
                            "` runs on the CPU only (the GPU serves generate, bench, perplexity, ask, info, "
                            "analyze, kl and passkey)");
        if (o.command == "info") return cmd_info(o);
        if (o.command == "tokenize") return cmd_tokenize(o);
        if (o.command == "generate") return cmd_generate(o);
        if (o.command == "perplexity") return cmd_perplexity(o);
        if (o.command == "bench") return cmd_bench(o);
        if (o.command == "quantize") return cmd_quantize(o);
        if (o.command == "analyze") return cmd_analyze(o);
        if (o.command == "convert") return cmd_convert(o);
        if (o.command == "ask") return cmd_ask(o);
        if (o.command == "kl") return recur_cli::cmd_kl(o);
        if (o.command == "passkey") return recur_cli::cmd_passkey(o);
        throw error("unknown command '" + o.command + "' (see recur --help)");
    } catch (const std::exception &e) {
        fprintf(stderr, "recur: error: %s\n", e.what());
        return 1;
    }
}
