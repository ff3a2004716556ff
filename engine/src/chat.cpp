// Chat formats: detection from the Jinja template text and hand-written renderers
// (see recur/chat.h for the exact strings each format produces).
#include "recur/chat.h"

#include <array>
#include <string_view>
#include <utility>

namespace recur {

namespace {

bool contains(const std::string &s, const char *needle) {
    return s.find(needle) != std::string::npos;
}

// Appends pieces in place. Building with `"literal" + str + ...` makes a temporary per step and
// trips GCC 12's false -Wrestrict positive on operator+(const char *, string &&).
template <class... Parts> void append(std::string &out, const Parts &...parts) {
    (out.append(std::string_view(parts)), ...);
}

// Python's str.strip() / Jinja's trim on ASCII whitespace: what the official templates apply.
std::string strip(const std::string &s) {
    constexpr const char *ws = " \t\n\r\v\f";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return {};
    const size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

// Appends a system text to the one waiting for the next user turn.
void add_pending(std::string &pending, bool &has_pending, const std::string &text) {
    if (has_pending)
        append(pending, "\n\n", text);
    else
        pending = text;
    has_pending = true;
}

std::string render_chatml(const std::vector<chat_message> &msgs, bool gen) {
    std::string out;
    for (const auto &m : msgs)
        append(out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    if (gen) out += "<|im_start|>assistant\n";
    return out;
}

std::string render_llama3(const std::vector<chat_message> &msgs, bool gen) {
    std::string out;
    for (const auto &m : msgs)
        append(out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", strip(m.content), "<|eot_id|>");
    if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
}

// Meta's reference (llama/generation.py) and the HF template: per exchange
// BOS "[INST] {strip(sys block + user)} [/INST] {strip(assistant)} " EOS.
std::string render_llama2(const std::vector<chat_message> &msgs, const std::string &bos_text,
                          const std::string &eos_text) {
    const std::string bos_inner = bos_text.empty() ? std::string("<s>") : bos_text;
    const std::string eos = eos_text.empty() ? std::string("</s>") : eos_text;
    std::string out;
    bool at_start = true; // the leading BOS is bos_text, which apply_chat_template prepends
    std::string pending;
    bool has_pending = false;

    auto user_turn = [&](std::string content) {
        if (has_pending) {
            std::string merged;
            append(merged, "<<SYS>>\n", pending, "\n<</SYS>>\n\n", content);
            content = std::move(merged);
            has_pending = false;
        }
        if (!at_start) out += bos_inner;
        at_start = false;
        append(out, "[INST] ", strip(content), " [/INST]");
    };

    for (const auto &m : msgs) {
        if (m.role == "system") {
            add_pending(pending, has_pending, m.content);
        } else if (m.role == "assistant") {
            append(out, " ", strip(m.content), " ", eos);
            at_start = false;
        } else {
            user_turn(m.content);
        }
    }
    if (has_pending) user_turn("");
    return out;
}

std::string render_gemma(const std::vector<chat_message> &msgs, bool gen) {
    std::string out;
    std::string pending;
    bool has_pending = false;
    for (const auto &m : msgs) {
        if (m.role == "system") {
            add_pending(pending, has_pending, m.content);
            continue;
        }
        const bool is_model = (m.role == "assistant");
        append(out, "<start_of_turn>", is_model ? std::string_view("model") : std::string_view(m.role), "\n");
        if (!is_model && has_pending) {
            // Gemma 3's template: the system text, a blank line, then the user text; only the
            // message content is trimmed.
            append(out, pending, "\n\n");
            has_pending = false;
        }
        append(out, strip(m.content), "<end_of_turn>\n");
    }
    if (has_pending) append(out, "<start_of_turn>user\n", strip(pending), "<end_of_turn>\n");
    if (gen) out += "<start_of_turn>model\n";
    return out;
}

std::string render_zephyr(const std::vector<chat_message> &msgs, bool gen, const std::string &eos_text) {
    const std::string eos = eos_text.empty() ? std::string("</s>") : eos_text;
    std::string out;
    for (const auto &m : msgs)
        append(out, "<|", m.role, "|>\n", m.content, eos, "\n");
    if (gen) out += "<|assistant|>\n";
    return out;
}

std::string render_plain(const std::vector<chat_message> &msgs, bool gen) {
    std::string out;
    for (const auto &m : msgs) {
        if (m.role == "system")
            append(out, m.content, "\n\n");
        else if (m.role == "assistant")
            append(out, "Assistant: ", m.content, "\n");
        else
            append(out, "User: ", m.content, "\n");
    }
    if (gen) out += "Assistant:";
    return out;
}

// Undoes the escapes a Jinja string literal may hold (templates stored with "\\n" in JSON reach
// us as backslash-n; those stored with "\n" arrive as real newlines and need nothing).
std::string unescape_jinja(const std::string &s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
            const char c = s[++i];
            switch (c) {
            case 'n':
                out += '\n';
                break;
            case 't':
                out += '\t';
                break;
            case 'r':
                out += '\r';
                break;
            default:
                out += c;
                break; // \\ \' \"
            }
        } else {
            out += s[i];
        }
    }
    return out;
}

constexpr std::array<std::pair<chat_format, const char *>, 6> format_names = {{
    {chat_format::chatml, "chatml"},
    {chat_format::llama2, "llama2"},
    {chat_format::llama3, "llama3"},
    {chat_format::gemma, "gemma"},
    {chat_format::zephyr, "zephyr"},
    {chat_format::plain, "plain"},
}};

} // namespace

chat_format detect_chat_format(const std::string &t) {
    // Most specific markers first: a template may mention several (e.g. a ChatML template that
    // also documents [INST]), and these are the ones that define the turn structure.
    if (contains(t, "<|im_start|>")) return chat_format::chatml;
    if (contains(t, "<|start_header_id|>")) return chat_format::llama3;
    if (contains(t, "<start_of_turn>")) return chat_format::gemma;
    if (contains(t, "[INST]")) return chat_format::llama2;
    // Zephyr's official template closes turns with the eos_token variable, not a literal "</s>".
    // Phi-3 uses the same <|user|> tags but ends turns with <|end|>, which zephyr cannot express.
    if (contains(t, "<|user|>") && !contains(t, "<|end|>") &&
        (contains(t, "</s>") || contains(t, "eos_token") || contains(t, "<|endoftext|>")))
        return chat_format::zephyr;
    return chat_format::plain;
}

const char *chat_format_name(chat_format f) {
    for (const auto &[fmt, name] : format_names)
        if (fmt == f) return name;
    return "plain";
}

std::optional<chat_format> chat_format_from_name(const std::string &name) {
    for (const auto &[fmt, n] : format_names)
        if (name == n) return fmt;
    return std::nullopt;
}

std::string chat_default_system_prompt(const std::string &t) {
    static const std::string open = "<|im_start|>system";
    static const std::string close = "<|im_end|>";
    for (size_t pos = t.find(open); pos != std::string::npos; pos = t.find(open, pos + 1)) {
        size_t body = pos + open.size();
        if (t.compare(body, 1, "\n") == 0)
            body += 1;
        else if (t.compare(body, 2, "\\n") == 0)
            body += 2;
        else
            continue;
        const size_t end = t.find(close, body);
        if (end == std::string::npos) break;
        const std::string text = t.substr(body, end - body);
        // A literal default is plain text inside one string literal; anything that splices in a
        // variable or a Jinja tag (e.g. "' + message['content'] + '") is not a default.
        if (text.empty() || contains(text, "{{") || contains(text, "{%") || contains(text, "}}") ||
            contains(text, "' +") || contains(text, "+ '") || contains(text, "\" +") ||
            contains(text, "+ \""))
            continue;
        return unescape_jinja(text);
    }
    return {};
}

std::string apply_chat_template(chat_format f, const std::vector<chat_message> &msgs,
                                bool add_generation_prompt, const std::string &bos_text,
                                const std::string &eos_text) {
    std::string body;
    switch (f) {
    case chat_format::chatml:
        body = render_chatml(msgs, add_generation_prompt);
        break;
    case chat_format::llama2:
        body = render_llama2(msgs, bos_text, eos_text);
        break;
    case chat_format::llama3:
        body = render_llama3(msgs, add_generation_prompt);
        break;
    case chat_format::gemma:
        body = render_gemma(msgs, add_generation_prompt);
        break;
    case chat_format::zephyr:
        body = render_zephyr(msgs, add_generation_prompt, eos_text);
        break;
    case chat_format::plain:
        body = render_plain(msgs, add_generation_prompt);
        break;
    }
    return bos_text.empty() ? body : bos_text + body;
}

std::vector<std::string> chat_stop_strings(chat_format f) {
    switch (f) {
    case chat_format::chatml:
        return {"<|im_end|>", "<|im_start|>"};
    case chat_format::llama3:
        return {"<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"};
    case chat_format::llama2:
        return {"</s>", "[INST]"};
    case chat_format::gemma:
        return {"<end_of_turn>", "<start_of_turn>"};
    case chat_format::zephyr:
        return {"</s>", "<|user|>", "<|endoftext|>"};
    case chat_format::plain:
        return {"\nUser:"};
    }
    return {};
}

} // namespace recur
