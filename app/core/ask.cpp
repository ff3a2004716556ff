#include "core/ask.h"

#include "core/paths.h"

#include "recur/chat.h"
#include "recur/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace recur_app {

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string trim(std::string_view s) {
    const char *ws = " \t\r\n\f\v";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

size_t common_prefix(const std::vector<int32_t> &a, const std::vector<int32_t> &b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

// A prompt tokenized segment by segment (see build_prompt) with the position where the final
// generation prompt starts: the state up to there is a prefix of the next question's prompt.
struct tokenized_prompt {
    std::vector<int32_t> tokens;
    size_t boundary = 0; // tokens [0, boundary) end with the last user message
};

} // namespace

const std::string &default_system_prompt() {
    static const std::string s =
        "Answer the question from the document below. Use only what the document says; if it does not contain "
        "the answer, say so. Be concise, and quote the document where it helps.";
    return s;
}

const char *reuse_source_name(reuse_source r) {
    switch (r) {
    case reuse_source::context: return "context";
    case reuse_source::snapshot: return "snapshot";
    default: return "none";
    }
}

struct ask_engine::impl {
    recur::context_params cp;
    std::unique_ptr<inference_session> ctx; // the CPU's context or the GPU's model
    recur::chat_format fmt = recur::chat_format::plain;
    std::vector<std::string> stop_strings;
    std::vector<std::string> control_texts; // spellings of control tokens, broken up in content
    std::string fingerprint;
};

ask_engine::ask_engine(const recur::model &model, std::string model_path, const ask_params &params)
    : model_(model), model_path_(std::move(model_path)), params_(params), impl_(std::make_unique<impl>()) {
    const recur::model_hparams &hp = model.hparams();
    impl &s = *impl_;
    s.cp.n_ctx = params.n_ctx > 0 ? params.n_ctx : std::min(4096, hp.n_ctx_train > 0 ? hp.n_ctx_train : 4096);
    s.cp.n_batch = params.n_batch;
    s.cp.n_threads = params.n_threads;
    s.cp.kv_type = params.kv_type;
    session_options so;
    so.context = s.cp;
    so.device = params.device;
    s.ctx = inference_session::create(model, so);
    s.fmt = recur::detect_chat_format(model.chat_template());
    s.stop_strings = recur::chat_stop_strings(s.fmt);
    const recur::tokenizer &vocab = model.vocab();
    for (int32_t id = 0; id < vocab.n_vocab(); ++id) {
        const recur::token_type t = vocab.type_of(id);
        if (t != recur::token_type::control && t != recur::token_type::unknown) continue;
        const std::string &text = vocab.token_text(id);
        if (text.size() >= 2) s.control_texts.push_back(text);
    }
    s.fingerprint = fingerprint_hex(model.fingerprint());
}

ask_engine::~ask_engine() = default;

int32_t ask_engine::n_ctx() const { return impl_->cp.n_ctx; }
int ask_engine::threads() const { return impl_->ctx->n_threads(); }
std::string ask_engine::model_fingerprint() const { return impl_->fingerprint; }
recur::memory_report ask_engine::memory() const { return impl_->ctx->memory(); }
const inference_session &ask_engine::session() const { return *impl_->ctx; }
void ask_engine::reset() { impl_->ctx->truncate(0); }

int32_t ask_engine::count_tokens(std::string_view text) const {
    if (text.empty()) return 0;
    return int32_t(model_.vocab().encode(text, false, false).size());
}

namespace {

// Room kept free for the question when planning before it is known.
constexpr int32_t question_allowance = 64;

int32_t answer_reserve(const ask_params &p, int32_t n_ctx) {
    // Never let the answer's room swallow a small context.
    return std::clamp(p.max_answer_tokens, 1, std::max(1, n_ctx / 4));
}

} // namespace

ask_plan ask_engine::plan(std::string_view document_text, int32_t document_tokens) const {
    ask_plan pl;
    pl.n_ctx = n_ctx();
    pl.document_tokens = document_tokens >= 0 ? document_tokens : count_tokens(document_text);
    pl.memory = recur::context::plan(model_, impl_->cp);
    const std::string &system = params_.system_prompt.empty() ? default_system_prompt() : params_.system_prompt;
    const int32_t fixed = count_tokens(system) + question_allowance + answer_reserve(params_, pl.n_ctx);
    pl.whole_document = pl.document_tokens + fixed <= pl.n_ctx;
    if (pl.whole_document) {
        pl.fraction_in_context = 1.0;
    } else {
        pl.passage_budget = std::max(0, pl.n_ctx - fixed);
        pl.passages_total = int32_t(split_passages(document_text, params_.split).size());
        pl.fraction_in_context =
            pl.document_tokens > 0 ? std::min(1.0, double(pl.passage_budget) / pl.document_tokens) : 1.0;
    }
    return pl;
}

ask_result ask_engine::ask(const ask_request &req, const ask_callbacks &cb) {
    impl &s = *impl_;
    inference_session &ctx = *s.ctx;
    const recur::tokenizer &vocab = model_.vocab();
    ask_result res;
    const std::string question = trim(req.question);
    if (question.empty()) throw recur::error("the question is empty");

    // ---- the document and the conversation so far
    session_store *store = req.store;
    std::string doc_text, doc_title;
    int64_t document_id = 0;
    int32_t doc_tokens = -1;
    std::vector<recur::chat_message> history; // complete earlier turns, oldest first
    if (store) {
        const std::optional<session_info> si = store->find_session(req.session_id);
        if (!si) throw store_error(store_error::kind::not_found, "no session " + std::to_string(req.session_id));
        res.session_id = si->id;
        document_id = si->document_id;
        const std::optional<document_record> dr = store->find_document(document_id);
        if (!dr) throw store_error(store_error::kind::not_found, "the session's document is missing");
        doc_title = dr->title;
        doc_text = store->document_text(document_id);
        if (dr->n_tokens >= 0 && dr->n_tokens_model == s.fingerprint) doc_tokens = dr->n_tokens;
        const std::vector<message_record> msgs = store->messages(si->id);
        for (size_t i = 0; i + 1 < msgs.size(); ++i)
            if (msgs[i].role == "user" && msgs[i + 1].role == "assistant" && msgs[i + 1].stop_reason != "cancelled" &&
                !trim(msgs[i + 1].content).empty()) {
                history.push_back({"user", msgs[i].content});
                history.push_back({"assistant", msgs[i + 1].content});
                ++i;
            }
        if (si->model_fingerprint != s.fingerprint || si->model_path != model_path_) {
            try {
                store->set_session_model(si->id, model_path_, s.fingerprint);
            } catch (const store_error &e) {
                res.warnings.push_back(e.what());
            }
        }
    } else {
        if (!req.doc) throw recur::error("ask: neither a session nor a document was given");
        doc_text = req.doc->text;
        doc_title = req.doc->title;
    }
    if (doc_tokens < 0) {
        doc_tokens = count_tokens(doc_text);
        if (store && !store->read_only()) {
            try {
                store->set_document_tokens(document_id, doc_tokens, s.fingerprint);
            } catch (const store_error &e) {
                res.warnings.push_back(e.what());
            }
        }
    }

    // ---- the prompt
    const std::string &system = params_.system_prompt.empty() ? default_system_prompt() : params_.system_prompt;
    const int32_t n_ctx_tokens = ctx.n_ctx();
    const int32_t reserve = answer_reserve(params_, n_ctx_tokens);

    // Breaks control-token spellings inside content with a zero-width space (see ask.h).
    auto defang = [&](std::string text) {
        for (const std::string &c : s.control_texts) {
            for (size_t pos = text.find(c); pos != std::string::npos; pos = text.find(c, pos + c.size() + 3))
                text.insert(pos + 1, "\xE2\x80\x8B");
        }
        return text;
    };
    // Renders the conversation and tokenizes it message by message: the text of each message
    // boundary that the template leaves untouched by what follows is tokenized on its own, so the
    // tokens of a prefix of the conversation are the same in every later prompt (exact reuse, even
    // for hybrid models whose recurrent state cannot be rewound).
    auto build_prompt = [&](const std::vector<recur::chat_message> &msgs) {
        const std::string full = recur::apply_chat_template(s.fmt, msgs, true);
        std::vector<size_t> cuts;
        for (size_t k = 1; k <= msgs.size(); ++k) {
            const std::string part =
                recur::apply_chat_template(s.fmt, std::vector<recur::chat_message>(msgs.begin(), msgs.begin() + long(k)), false);
            if (!part.empty() && full.compare(0, part.size(), part) == 0 && (cuts.empty() || part.size() > cuts.back()))
                cuts.push_back(part.size());
        }
        tokenized_prompt tp;
        // BOS as a token when the vocabulary wants one (the templates do not write it as text);
        // segments are tokenized without special additions, so none ends with an EOS.
        if (vocab.adds_bos()) tp.tokens.push_back(vocab.bos());
        size_t from = 0;
        size_t last_cut_tokens = 0; // tokens up to the last message's end (0: no such cut)
        for (size_t i = 0; i <= cuts.size(); ++i) {
            const size_t to = i < cuts.size() ? cuts[i] : full.size();
            if (to > from) {
                const std::vector<int32_t> t = vocab.encode(std::string_view(full).substr(from, to - from), false, true);
                tp.tokens.insert(tp.tokens.end(), t.begin(), t.end());
            }
            if (i < cuts.size()) last_cut_tokens = tp.tokens.size();
            from = to;
        }
        if (tp.tokens.empty() && vocab.bos() >= 0) tp.tokens.push_back(vocab.bos());
        if (tp.tokens.empty()) throw recur::error("the prompt tokenizes to nothing");
        tp.boundary = last_cut_tokens > 0 && last_cut_tokens < tp.tokens.size() ? last_cut_tokens : tp.tokens.size() - 1;
        return tp;
    };

    ask_plan pl = plan(doc_text, doc_tokens);
    tokenized_prompt prompt;
    bool whole = false;
    if (pl.whole_document) {
        const std::string sys_text = system + "\n\nDocument: " + doc_title + "\n\n" + defang(doc_text);
        // Keep as many recent turns as fit; drop the oldest first.
        for (size_t drop = 0; drop <= history.size(); drop += 2) {
            std::vector<recur::chat_message> msgs{{"system", sys_text}};
            for (size_t i = drop; i < history.size(); ++i) msgs.push_back({history[i].role, defang(history[i].content)});
            msgs.push_back({"user", defang(question)});
            prompt = build_prompt(msgs);
            if (int64_t(prompt.tokens.size()) + reserve <= n_ctx_tokens) {
                whole = true;
                break;
            }
        }
    }
    if (!whole) {
        pl.whole_document = false;
        std::unique_ptr<passage_index> index;
        if (store) {
            try {
                index = std::make_unique<passage_index>(*store, document_id, params_.split);
            } catch (const store_error &e) {
                if (e.reason() != store_error::kind::read_only && e.reason() != store_error::kind::busy &&
                    e.reason() != store_error::kind::disk_full)
                    throw;
                res.warnings.push_back(std::string("passages indexed in memory only: ") + e.what());
            }
        }
        if (!index) {
            split_params sp = params_.split;
            index = std::make_unique<passage_index>(doc_text, sp);
        }
        const std::string header = system + "\n\nExcerpts from the document \"" + doc_title +
                                   "\", the passages most relevant to the question ([n] is the passage number):\n\n";
        auto passages_text = [&](const std::vector<passage> &ps) {
            std::string t = header;
            for (const passage &p : ps) {
                // Appended piece by piece (GCC 12 warns falsely about a chain of operator+).
                t += '[';
                t += std::to_string(p.ordinal + 1);
                t += "] ";
                t += defang(p.text);
                t += "\n\n";
            }
            return t;
        };
        auto render = [&](const std::vector<passage> &ps) {
            return build_prompt({{"system", passages_text(ps)}, {"user", defang(question)}});
        };
        const int32_t fixed = int32_t(render({}).tokens.size());
        const int32_t margin = 8;
        int32_t budget = n_ctx_tokens - fixed - reserve - margin;
        if (budget < 16)
            throw recur::error("the question takes " + std::to_string(fixed) + " of the context's " +
                               std::to_string(n_ctx_tokens) + " tokens; no room is left for the document");
        const int32_t overhead = count_tokens("[" + std::to_string(index->size()) + "] \n\n") + 1;
        const token_counter counter = [this](std::string_view t) { return count_tokens(t); };
        selection sel = index->select(question, budget, counter, overhead);
        prompt = render(sel.passages);
        // Tokens can merge across the joins; drop the weakest passage until it really fits.
        while (int64_t(prompt.tokens.size()) + reserve > n_ctx_tokens && !sel.passages.empty()) {
            auto weakest = std::min_element(sel.passages.begin(), sel.passages.end(),
                                            [](const passage &a, const passage &b) { return a.score < b.score; });
            sel.passages.erase(weakest);
            prompt = render(sel.passages);
        }
        pl.passage_budget = budget;
        pl.passages_total = index->size();
        int32_t in_context = 0;
        for (const passage &p : sel.passages) in_context += p.n_tokens;
        pl.fraction_in_context = doc_tokens > 0 ? std::min(1.0, double(in_context) / doc_tokens) : 1.0;
        res.passages = sel.passages;
        if (!sel.matched) res.warnings.push_back("no passage matched the question's words; using the document's beginning");
    }
    res.plan = pl;
    if (cb.on_plan) cb.on_plan(pl);
    if (int64_t(prompt.tokens.size()) >= n_ctx_tokens)
        throw recur::error("the prompt has " + std::to_string(prompt.tokens.size()) + " tokens, more than the context of " +
                           std::to_string(n_ctx_tokens));
    res.prompt_tokens = int32_t(prompt.tokens.size());

    // ---- record the question before spending any compute on it
    if (store) {
        message_record m;
        m.role = "user";
        m.content = question;
        res.user_message_id = store->append_message(res.session_id, m);
    }

    // ---- reuse what the engine already holds
    const size_t max_reuse = prompt.tokens.size() - 1; // at least one token is evaluated, for logits
    auto usable = [&](size_t lcp) -> size_t {
        lcp = std::min(lcp, max_reuse);
        try {
            ctx.truncate(int32_t(lcp)); // a hybrid state can only be cut at its end or at 0
            return lcp;
        } catch (const recur::error &) {
            ctx.truncate(0);
            return 0;
        }
    };
    size_t reused = usable(common_prefix(ctx.tokens(), prompt.tokens));
    res.reused_from = reused > 0 ? reuse_source::context : reuse_source::none;
    // Snapshots hold documents read whole; in passage mode the passages change with every
    // question, so there is nothing worth restoring (or saving) beyond the instructions.
    // A snapshot taken on either device loads on the other (recur/state_file.h).
    if (store && whole && reused < prompt.boundary) {
        std::vector<snapshot_record> snaps;
        if (auto own = store->snapshot(res.session_id); own && own->model_fingerprint == s.fingerprint) snaps.push_back(*own);
        for (const snapshot_record &r : store->snapshots_for_document(document_id, s.fingerprint))
            if (r.session_id != res.session_id) snaps.push_back(r);
        for (const snapshot_record &r : snaps) {
            if (size_t(r.n_past) <= reused + 16 || r.n_past > n_ctx_tokens) continue; // would not help / not fit
            try {
                ctx.load_state(r.path);
            } catch (const recur::error &e) {
                res.warnings.push_back(std::string("snapshot not used: ") + e.what());
                continue;
            }
            reused = usable(common_prefix(ctx.tokens(), prompt.tokens));
            res.reused_from = reused > 0 ? reuse_source::snapshot : reuse_source::none;
            if (reused > 0) break;
        }
    }
    res.reused_tokens = int32_t(reused);

    // ---- prefill
    std::vector<memory_sample> samples;
    const recur::memory_report mem0 = ctx.memory();
    auto sample_at = [&](int64_t tokens) {
        // KV rows grow linearly with the tokens; the replaced groups' state (recurrent states and
        // window rows) is fixed.
        memory_sample m;
        m.tokens = tokens;
        m.kv_bytes = int64_t(double(mem0.kv_bytes) * double(tokens) / double(std::max(1, mem0.n_ctx)));
        m.full_attention_bytes = int64_t(double(mem0.full_attention_kv_bytes) * double(tokens) / double(std::max(1, mem0.n_ctx)));
        m.fixed_state_bytes = int64_t(mem0.recurrent_bytes + mem0.window_bytes);
        return m;
    };
    auto measured_sample = [&] {
        const recur::memory_report r = ctx.memory();
        memory_sample m;
        m.tokens = r.n_past;
        m.kv_bytes = int64_t(r.kv_used_bytes);
        m.fixed_state_bytes = int64_t(r.recurrent_bytes + r.window_bytes);
        m.full_attention_bytes =
            int64_t(double(r.full_attention_kv_bytes) * double(r.n_past) / double(std::max(1, r.n_ctx)));
        return m;
    };
    auto emit_sample = [&](const memory_sample &m) {
        samples.push_back(m);
        if (cb.on_memory) cb.on_memory(m);
    };
    auto cancelled = [&] { return cb.cancel && cb.cancel->load(std::memory_order_relaxed); };

    const int64_t to_read = int64_t(prompt.tokens.size() - reused);
    const int64_t sample_every = std::max<int64_t>(1, to_read / std::max(1, params_.memory_samples_per_prefill));
    int64_t done_before = 0, next_sample = sample_every;
    const bool gather = params_.recency_window > 0 && reused == 0;
    const recur::progress_callback progress = [&](int64_t done, int64_t) {
        const int64_t d = done_before + done;
        if (cb.on_progress) cb.on_progress(d, to_read);
        if (d >= next_sample && d < to_read) {
            emit_sample(sample_at(int64_t(reused) + d));
            next_sample = d + sample_every;
            // The heatmap fills while the document is read: the statistics so far, averaged over
            // the positions read (eval calls this between batches, when they are consistent).
            if (gather && cb.on_head_stats && ctx.recency().n_queries.at(0) > 0)
                cb.on_head_stats(head_stats_from(ctx.recency()), params_.recency_window);
        }
        return !cancelled();
    };
    if (gather) ctx.collect_recency(params_.recency_window);
    std::vector<float> logits;
    double prefill_s = 0;
    try {
        // Two steps: up to the end of the question (that state is saved: it is a prefix of the next
        // question's prompt), then the generation prompt.
        const size_t boundary = std::max(prompt.boundary, reused);
        if (boundary > reused) {
            const auto t0 = clock_type::now();
            ctx.eval(std::vector<int32_t>(prompt.tokens.begin() + long(reused), prompt.tokens.begin() + long(boundary)),
                     logits, false, progress);
            prefill_s += seconds_since(t0);
            done_before = int64_t(boundary - reused);
            // Save when there is no snapshot, or this read added a good share to it: writing the
            // whole state after every short question would cost more than it saves.
            if (store && whole && params_.save_snapshots && !store->read_only()) {
                const std::optional<snapshot_record> own = store->snapshot(res.session_id);
                const int32_t have = own && own->model_fingerprint == s.fingerprint ? own->n_past : 0;
                const int32_t added = int32_t(boundary) - have;
                if (!own || own->model_fingerprint != s.fingerprint || added >= std::max(128, have / 4) || added < 0) {
                    try {
                        std::filesystem::create_directories(store->snapshot_dir());
                        const std::string path =
                            store->snapshot_dir() + "/session-" + std::to_string(res.session_id) + ".state";
                        ctx.save_state(path);
                        store->set_snapshot({res.session_id, path, s.fingerprint, ctx.n_past(), n_ctx_tokens, 0});
                        res.snapshot_path = path;
                    } catch (const std::exception &e) {
                        res.warnings.push_back(std::string("engine snapshot not saved: ") + e.what());
                    }
                }
            }
        }
        const auto t1 = clock_type::now();
        ctx.eval(std::vector<int32_t>(prompt.tokens.begin() + long(boundary), prompt.tokens.end()), logits, false, progress);
        prefill_s += seconds_since(t1);
    } catch (const recur::cancelled_error &) {
        if (gather) ctx.collect_recency(0);
        res.cancelled = true;
        res.stop_reason = "cancelled";
        res.prefill_tokens = int32_t(ctx.n_past()) - res.reused_tokens;
        res.prefill_s = prefill_s;
        res.memory = ctx.memory();
        if (store && !samples.empty()) {
            try {
                store->add_memory_samples(res.session_id, 0, samples);
            } catch (const store_error &e) {
                res.warnings.push_back(e.what());
            }
        }
        return res;
    }
    res.prefill_tokens = int32_t(to_read);
    res.prefill_s = prefill_s;
    res.prefill_tok_s = prefill_s > 0 ? double(to_read) / prefill_s : 0;
    emit_sample(measured_sample());

    std::vector<head_stat> stats;
    if (gather) {
        stats = head_stats_from(ctx.recency());
        ctx.collect_recency(0); // decode adds nothing the heatmap needs
        if (!stats.empty() && cb.on_head_stats) cb.on_head_stats(stats, params_.recency_window);
    }

    // ---- decode
    recur::sampler smp(params_.sampling);
    for (size_t i = prompt.tokens.size() > 64 ? prompt.tokens.size() - 64 : 0; i < prompt.tokens.size(); ++i)
        smp.accept(prompt.tokens[i]);
    std::vector<int32_t> generated;
    std::string out_text;
    size_t emitted = 0;
    bool started = false; // leading whitespace of the answer is not streamed
    res.stop_reason = "length";
    const auto t2 = clock_type::now();
    const int n_vocab = model_.hparams().n_vocab;
    auto emit = [&](size_t upto) {
        if (!started) {
            while (emitted < upto && std::string_view(" \t\r\n").find(out_text[emitted]) != std::string_view::npos) ++emitted;
            started = emitted < upto;
        }
        if (upto <= emitted) return true;
        const std::string piece = out_text.substr(emitted, upto - emitted);
        emitted = upto;
        return cb.on_token ? cb.on_token(piece) : true;
    };
    try {
        while (int32_t(generated.size()) < params_.max_answer_tokens) {
            if (cancelled()) {
                res.cancelled = true;
                break;
            }
            const int32_t tok = smp.sample(logits.data(), n_vocab);
            if (vocab.is_end_of_generation(tok)) {
                res.stop_reason = "eos";
                break;
            }
            generated.push_back(tok);
            smp.accept(tok);
            out_text = vocab.decode(generated);
            bool stopped = false;
            for (const std::string &st : s.stop_strings) {
                const size_t pos = out_text.find(st);
                if (pos != std::string::npos) out_text.erase(pos), stopped = true;
            }
            // Hold back what could be the start of a stop string, and an unfinished character.
            size_t safe = out_text.size();
            if (!stopped)
                for (const std::string &st : s.stop_strings)
                    for (size_t k = std::min(st.size() - 1, out_text.size()); k > 0; --k)
                        if (out_text.compare(out_text.size() - k, k, st, 0, k) == 0) {
                            safe = std::min(safe, out_text.size() - k);
                            break;
                        }
            safe = complete_utf8_prefix(std::string_view(out_text).substr(0, std::max(safe, emitted)));
            if (stopped) {
                res.stop_reason = "stop";
                break;
            }
            if (!emit(std::max(safe, emitted))) {
                res.cancelled = true;
                break;
            }
            if (generated.size() % 16 == 0) emit_sample(measured_sample());
            if (ctx.n_past() >= n_ctx_tokens) {
                res.stop_reason = "context";
                break;
            }
            ctx.eval({tok}, logits, false, [&](int64_t, int64_t) { return !cancelled(); });
        }
    } catch (const recur::cancelled_error &) {
        res.cancelled = true;
    }
    if (res.cancelled) res.stop_reason = "cancelled";
    res.decode_s = seconds_since(t2);
    res.decode_tokens = int32_t(generated.size());
    res.decode_tok_s = res.decode_s > 0 && !generated.empty() ? double(generated.size()) / res.decode_s : 0;
    // The rest of the text (a stop string was cut, or the end was held back).
    const std::string final_text = repair_utf8(out_text);
    if (!res.cancelled && final_text.size() > emitted) {
        out_text = final_text;
        emit(out_text.size());
    }
    res.answer = trim(final_text);
    res.memory = ctx.memory();
    emit_sample(measured_sample());

    // ---- record
    if (store) {
        message_record m;
        m.role = "assistant";
        m.content = res.answer;
        m.prompt_tokens = res.prompt_tokens;
        m.prefill_tokens = res.prefill_tokens;
        m.prefill_tok_s = res.prefill_tok_s;
        m.decode_tokens = res.decode_tokens;
        m.decode_tok_s = res.decode_tok_s;
        m.stop_reason = res.stop_reason;
        for (const passage &p : res.passages) m.passages.push_back({p.ordinal, int64_t(p.begin), int64_t(p.end)});
        try {
            if (!res.answer.empty() || !res.cancelled) res.assistant_message_id = store->append_message(res.session_id, m);
            store->add_memory_samples(res.session_id, res.assistant_message_id, samples);
            if (!stats.empty()) store->save_head_stats(res.session_id, params_.recency_window, stats);
        } catch (const store_error &e) {
            // The answer was shown; say it was not saved rather than lose it by throwing.
            res.warnings.push_back(std::string("the answer was not saved: ") + e.what());
        }
    }
    return res;
}

int64_t session_for_document(session_store &store, const document &doc, const std::string &model_path,
                             const std::string &model_fingerprint, bool new_session) {
    const int64_t document_id = store.add_document(doc);
    if (!new_session)
        if (auto s = store.latest_session_for_document(document_id)) return s->id;
    return store.create_session(doc.title, document_id, model_path, model_fingerprint);
}

std::vector<head_stat> head_stats_from(const recur::recency_stats &r) {
    std::vector<head_stat> out;
    for (int32_t l = 0; l < r.n_layer; ++l) {
        if (r.n_queries.empty() || r.n_queries[size_t(l)] <= 0) continue;
        for (int32_t h = 0; h < r.n_head; ++h) {
            head_stat s;
            s.layer = l;
            s.head = h;
            s.recency = r.mean_recency(l, h);
            s.sink = r.mean_sink(l, h);
            for (int32_t b = 0; b < r.n_bins; ++b) s.hist.push_back(r.mean_hist(l, h, b));
            out.push_back(std::move(s));
        }
    }
    return out;
}

size_t available_memory_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

int32_t max_context_for_memory(const recur::model &m, const recur::context_params &base, size_t budget_bytes) {
    const int32_t limit = m.hparams().n_ctx_train > 0 ? m.hparams().n_ctx_train : 131072;
    auto fits = [&](int32_t n) {
        recur::context_params p = base;
        p.n_ctx = n;
        const recur::memory_report r = recur::context::plan(m, p);
        return r.weights_bytes + r.kv_bytes + r.recurrent_bytes + r.window_bytes + r.scratch_bytes <= budget_bytes;
    };
    // Memory grows with n_ctx, so the answer is found by bisection over multiples of 256.
    int32_t lo = 0, hi = limit / 256;
    while (lo < hi) {
        const int32_t mid = (lo + hi + 1) / 2;
        if (fits(mid * 256)) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0) return 0;
    return lo * 256 == limit / 256 * 256 && fits(limit) ? limit : lo * 256;
}

} // namespace recur_app
