#include "core/passage_index.h"

#include "core/session_store.h"
#include "core/sqlite_util.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <set>

namespace recur_app {

int32_t estimate_tokens(std::string_view text) {
    if (text.empty()) return 0;
    return int32_t(std::min<size_t>((text.size() + 3) / 4, size_t(INT32_MAX)));
}

// ---------------------------------------------------------------- splitting

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Trims whitespace off [b, e).
void trim_range(std::string_view s, size_t &b, size_t &e) {
    while (b < e && is_space(s[b])) ++b;
    while (e > b && is_space(s[e - 1])) --e;
}

struct unit {
    size_t begin, end;
    int32_t tokens;
};

// Back to the start of the UTF-8 character containing s[i] (i itself if it starts one).
size_t char_boundary(std::string_view s, size_t i) {
    while (i > 0 && i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    return i;
}

// Where to end a piece that starts at `from` and may reach `limit` (exclusive): after the last
// sentence end in the second half of the range, else the last line break, else the last space,
// else `limit` itself (on a character boundary).
size_t cut_point(std::string_view s, size_t from, size_t limit) {
    const size_t lo = from + (limit - from) / 2;
    for (size_t i = limit; i > lo; --i) {
        const char c = s[i - 1];
        if ((c == '.' || c == '?' || c == '!') && i < s.size() && is_space(s[i])) return i;
        // A sentence that ends in a closing quote: `."` or `.'` followed by a space.
        if ((c == '"' || c == '\'') && i >= 2 && (s[i - 2] == '.' || s[i - 2] == '?' || s[i - 2] == '!') &&
            i < s.size() && is_space(s[i]))
            return i;
    }
    for (size_t i = limit; i > lo; --i)
        if (s[i - 1] == '\n') return i;
    for (size_t i = limit; i > lo; --i)
        if (s[i - 1] == ' ' || s[i - 1] == '\t') return i;
    const size_t b = char_boundary(s, limit);
    return b > from ? b : limit; // a single character longer than the range cannot be split
}

// Cuts the paragraph [b, e) into pieces of at most p.max_tokens (about target_tokens each).
void split_long(std::string_view text, size_t b, size_t e, int32_t tokens, const split_params &p,
                const token_counter &count, std::vector<unit> &out) {
    const double bytes_per_token = double(e - b) / std::max(tokens, 1);
    size_t pos = b;
    while (pos < e) {
        const std::string_view rest = text.substr(pos, e - pos);
        const int32_t rest_tokens = count(rest);
        if (rest_tokens <= p.max_tokens) {
            out.push_back({pos, e, rest_tokens});
            break;
        }
        size_t span = std::max<size_t>(size_t(bytes_per_token * p.target_tokens), 1);
        for (;;) {
            const size_t limit = std::min(e, pos + span);
            size_t cut = cut_point(text, pos, limit);
            size_t pe = cut;
            size_t pb = pos;
            trim_range(text, pb, pe);
            const int32_t t = count(text.substr(pb, pe - pb));
            if (t <= p.max_tokens || span <= 4) {
                if (pe > pb) out.push_back({pb, pe, t});
                pos = cut;
                while (pos < e && is_space(text[pos])) ++pos;
                break;
            }
            span /= 2; // the tokenizer packs this stretch less densely than estimated
        }
    }
}

} // namespace

std::vector<passage> split_passages(std::string_view text, const split_params &p_in) {
    split_params p = p_in;
    p.target_tokens = std::max(p.target_tokens, 1);
    p.max_tokens = std::max(p.max_tokens, p.target_tokens);
    const token_counter count = p.count ? p.count : token_counter(estimate_tokens);

    // Paragraphs: runs of non-blank lines.
    std::vector<unit> units;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t para_begin = std::string_view::npos, para_end = 0;
        while (pos < text.size()) {
            size_t eol = text.find('\n', pos);
            if (eol == std::string_view::npos) eol = text.size();
            size_t lb = pos, le = eol;
            trim_range(text, lb, le);
            pos = eol + 1;
            if (lb == le) {
                if (para_begin != std::string_view::npos) break; // blank line ends the paragraph
                continue;
            }
            if (para_begin == std::string_view::npos) para_begin = lb;
            para_end = le;
        }
        if (para_begin == std::string_view::npos) break;
        const int32_t t = count(text.substr(para_begin, para_end - para_begin));
        if (t > p.max_tokens) split_long(text, para_begin, para_end, t, p, count, units);
        else units.push_back({para_begin, para_end, t});
    }

    // Pack consecutive units up to the target size.
    std::vector<passage> out;
    auto flush = [&](size_t b, size_t e) {
        passage ps;
        ps.ordinal = int32_t(out.size());
        ps.begin = b;
        ps.end = e;
        ps.text.assign(text.substr(b, e - b));
        ps.n_tokens = count(ps.text);
        out.push_back(std::move(ps));
    };
    size_t cur_b = 0, cur_e = 0;
    int32_t cur_t = 0;
    bool open = false;
    for (const unit &u : units) {
        if (open && (cur_t >= p.target_tokens || cur_t + u.tokens >= p.max_tokens)) {
            flush(cur_b, cur_e);
            open = false;
        }
        if (!open) {
            cur_b = u.begin, cur_e = u.end, cur_t = u.tokens, open = true;
            continue;
        }
        // Counted as joined: the paragraph break and merges across it count too.
        const int32_t joined = count(text.substr(cur_b, u.end - cur_b));
        if (joined > p.max_tokens) {
            flush(cur_b, cur_e);
            cur_b = u.begin, cur_e = u.end, cur_t = u.tokens;
        } else {
            cur_e = u.end, cur_t = joined;
        }
    }
    if (open) flush(cur_b, cur_e);
    return out;
}

// ---------------------------------------------------------------- query

namespace {

const std::set<std::string> &stop_words() {
    static const std::set<std::string> words = {
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at",
        "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could",
        "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has",
        "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in",
        "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not",
        "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own",
        "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
        "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until",
        "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will",
        "with", "would", "you", "your", "yours", "yourself", "yourselves", "tell", "say", "says", "said",
        "according", "document", "text", "mention", "mentioned", "please", "explain", "describe", "does", "t", "s",
    };
    return words;
}

// Bytes of a punctuation character at s[i] that should separate words (general punctuation
// U+2000–U+206F such as ’ “ ” — …, and Latin-1 punctuation U+00A0–U+00BF), else 0.
size_t unicode_separator(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
    if (b(i) == 0xE2 && (b(i + 1) == 0x80 || b(i + 1) == 0x81)) return 3;
    if (b(i) == 0xC2 && b(i + 1) >= 0xA0 && b(i + 1) <= 0xBF) return 2;
    return 0;
}

} // namespace

std::string fts_query_for(std::string_view q) {
    std::vector<std::string> words;
    std::set<std::string> seen;
    std::string w;
    auto end_word = [&] {
        if (!w.empty() && !(w.size() == 1 && static_cast<unsigned char>(w[0]) < 0x80) && !stop_words().count(w) &&
            seen.insert(w).second)
            words.push_back(w);
        w.clear();
    };
    for (size_t i = 0; i < q.size();) {
        const auto c = static_cast<unsigned char>(q[i]);
        if (const size_t sep = unicode_separator(q, i)) {
            end_word();
            i += sep;
        } else if (std::isalnum(c) || c >= 0x80) {
            w += char(std::tolower(c));
            ++i;
        } else {
            end_word();
            ++i;
        }
    }
    end_word();
    std::string out;
    for (const std::string &x : words) out += (out.empty() ? "\"" : " OR \"") + x + "\"";
    return out;
}

// ---------------------------------------------------------------- the index

struct passage_index::impl {
    sqlite3 *db = nullptr;
    bool owns = false; // a private in-memory database
    std::string name;  // for messages: the store's path or "(in memory)"
    int64_t document_id = 0;
    int32_t n_passages = 0;

    ~impl() {
        if (owns) sqlite3_close_v2(db);
    }

    // Splits and indexes `text` unless the document already has passages of these sizes.
    void build(std::string_view text, const split_params &p) {
        const std::string what = "indexing the document's passages";
        sql::transaction t(db, what, name);
        {
            sql::statement st(db, "SELECT target_tokens, max_tokens, n_passages FROM passage_sets WHERE document_id = ?", name);
            st.bind(1, document_id);
            if (st.step(what)) {
                if (st.int64(0) == p.target_tokens && st.int64(1) == p.max_tokens) {
                    n_passages = int32_t(st.int64(2));
                    return; // rolled back: nothing was written
                }
            }
        }
        sql::statement del(db, "DELETE FROM passages WHERE document_id = ?", name);
        del.bind(1, document_id).run(what);
        const std::vector<passage> ps = split_passages(text, p);
        sql::statement ins(db,
                           "INSERT INTO passages (document_id, ordinal, begin_byte, end_byte, est_tokens, text) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           name);
        for (const passage &x : ps) {
            ins.bind(1, document_id).bind(2, x.ordinal).bind(3, int64_t(x.begin)).bind(4, int64_t(x.end));
            ins.bind(5, x.n_tokens).bind(6, x.text).run(what);
            ins.reset();
        }
        sql::statement set(db,
                           "INSERT OR REPLACE INTO passage_sets (document_id, target_tokens, max_tokens, n_passages) "
                           "VALUES (?, ?, ?, ?)",
                           name);
        set.bind(1, document_id).bind(2, p.target_tokens).bind(3, p.max_tokens).bind(4, int32_t(ps.size())).run(what);
        t.commit();
        n_passages = int32_t(ps.size());
    }

    static passage read(const sql::statement &st) {
        passage x;
        x.id = st.int64(0);
        x.ordinal = int32_t(st.int64(1));
        x.begin = size_t(st.int64(2));
        x.end = size_t(st.int64(3));
        x.n_tokens = int32_t(st.int64(4));
        x.text = st.text(5);
        return x;
    }
};

namespace {
// The split sizes that identify a stored passage set (the counter is not part of it: stored
// indexes are always split by estimate, so every model shares them).
split_params normalized(const split_params &p) {
    split_params q;
    q.target_tokens = std::max(p.target_tokens, 1);
    q.max_tokens = std::max(p.max_tokens, q.target_tokens);
    return q;
}
} // namespace

passage_index::passage_index(std::string_view text, const split_params &p) : impl_(std::make_unique<impl>()) {
    impl_->name = "(in-memory passage index)";
    impl_->owns = true;
    int rc = sqlite3_open_v2(":memory:", &impl_->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    if (rc != SQLITE_OK) sql::fail(impl_->db, rc, "creating the passage index", impl_->name);
    // The same schema as the session store, so both kinds of index run the same queries.
    for (const detail::migration &m : detail::migrations()) sql::exec(impl_->db, m.sql, "creating the passage index", impl_->name);
    sql::statement st(impl_->db,
                      "INSERT INTO documents (sha256, title, path, format, text, n_bytes, added_at) "
                      "VALUES ('', '', '', 'txt', '', ?, 0)",
                      impl_->name);
    st.bind(1, int64_t(text.size())).run("creating the passage index");
    impl_->document_id = sqlite3_last_insert_rowid(impl_->db);
    // In memory the counter may be the model's own (exact sizes); nothing is shared.
    split_params q = normalized(p);
    q.count = p.count;
    impl_->build(text, q);
}

passage_index::passage_index(session_store &store, int64_t document_id, const split_params &p)
    : impl_(std::make_unique<impl>()) {
    impl_->db = store.handle();
    impl_->name = store.path();
    impl_->document_id = document_id;
    impl_->build(store.document_text(document_id), normalized(p));
}

passage_index::~passage_index() = default;

int32_t passage_index::size() const { return impl_->n_passages; }

std::vector<passage> passage_index::all() const {
    sql::statement st(impl_->db,
                      "SELECT id, ordinal, begin_byte, end_byte, est_tokens, text FROM passages WHERE document_id = ? "
                      "ORDER BY ordinal",
                      impl_->name);
    st.bind(1, impl_->document_id);
    std::vector<passage> out;
    while (st.step("reading passages")) out.push_back(impl::read(st));
    return out;
}

passage passage_index::at(int32_t ordinal) const {
    sql::statement st(impl_->db,
                      "SELECT id, ordinal, begin_byte, end_byte, est_tokens, text FROM passages WHERE document_id = ? "
                      "AND ordinal = ?",
                      impl_->name);
    st.bind(1, impl_->document_id).bind(2, ordinal);
    if (!st.step("reading a passage"))
        throw recur::error("passage " + std::to_string(ordinal) + " out of range (the document has " +
                           std::to_string(impl_->n_passages) + ")");
    return impl::read(st);
}

selection passage_index::select(std::string_view question, int32_t token_budget, const token_counter &count_in,
                                int32_t per_passage_overhead) const {
    selection sel;
    if (token_budget <= 0) return sel;
    const token_counter count = count_in ? count_in : token_counter(estimate_tokens);
    std::vector<passage> chosen;
    int32_t used = 0;
    auto try_add = [&](passage x) {
        const int32_t t = count(x.text) + per_passage_overhead;
        if (used + t > token_budget) return false;
        x.n_tokens = t - per_passage_overhead;
        used += t;
        chosen.push_back(std::move(x));
        return true;
    };

    const std::string q = fts_query_for(question);
    if (!q.empty()) {
        // bm25() is lower for better matches; ranks beyond a few hundred never make it into a
        // context anyway.
        sql::statement st(impl_->db,
                          "SELECT p.id, p.ordinal, p.begin_byte, p.end_byte, p.est_tokens, p.text, bm25(passage_fts) AS s "
                          "FROM passage_fts JOIN passages p ON p.id = passage_fts.rowid "
                          "WHERE passage_fts MATCH ? AND p.document_id = ? ORDER BY s LIMIT 400",
                          impl_->name);
        st.bind(1, q).bind(2, impl_->document_id);
        int misses = 0;
        while (st.step("searching passages")) {
            ++sel.n_candidates;
            passage x = impl::read(st);
            x.score = -st.real(6);
            if (!try_add(std::move(x)) && ++misses > 32) break; // the budget is as full as it gets
            if (token_budget - used < 8) break;
        }
    }
    sel.matched = !chosen.empty();
    if (!sel.matched) {
        // Nothing matched: the document's beginning is the least surprising context.
        for (passage &x : all())
            if (!try_add(std::move(x))) break;
    }
    std::sort(chosen.begin(), chosen.end(), [](const passage &a, const passage &b) { return a.ordinal < b.ordinal; });
    sel.passages = std::move(chosen);
    sel.n_tokens = used - per_passage_overhead * int32_t(sel.passages.size());
    return sel;
}

} // namespace recur_app
