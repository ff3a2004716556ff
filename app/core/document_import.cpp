#include "core/document_import.h"

#include "core/sha256.h"

#include <poppler/cpp/poppler-document.h>
#include <poppler/cpp/poppler-global.h>
#include <poppler/cpp/poppler-page.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>

namespace recur_app {

namespace {

namespace fs = std::filesystem;

// Length of the valid UTF-8 sequence at s[i] (> 0), or minus the length of its maximal subpart
// (the longest prefix of a valid sequence, at least 1 byte) when it is invalid.
int utf8_sequence(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c == 0xED) len = 3, hi = 0x9F; // no UTF-16 surrogates
    else if (c >= 0xE1 && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90; // no overlong forms
    else if (c == 0xF4) len = 4, hi = 0x8F; // nothing above U+10FFFF
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else return -1; // a continuation byte, C0/C1 (overlong), F5..FF
    for (int k = 1; k < len; ++k) {
        if (i + size_t(k) >= s.size()) return -k;
        const unsigned char x = b(i + size_t(k));
        if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return -k;
    }
    return len;
}

std::string file_name_of(const std::string &path) { return fs::path(path).filename().string(); }

std::string stem_of(const std::string &path) {
    std::string s = fs::path(path).stem().string();
    return s.empty() ? file_name_of(path) : s;
}

std::string lower_extension(const std::string &path) {
    std::string e = fs::path(path).extension().string();
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return e;
}

std::string trim(std::string_view s) {
    const char *ws = " \t\r\n\f\v";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) out += char(cp);
    else if (cp < 0x800) out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
    else
        out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F)),
            out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
}

// UTF-16 (after its BOM) to UTF-8. An unpaired surrogate or an odd trailing byte is an error
// under utf8_policy::reject and U+FFFD otherwise.
std::string utf16_to_utf8(std::string_view s, bool big_endian, const std::string &name, const import_options &opt,
                          std::vector<std::string> &warnings) {
    std::string out;
    out.reserve(s.size());
    size_t bad = 0, first_bad = 0;
    auto unit = [&](size_t i) {
        const auto a = static_cast<unsigned char>(s[i]), b = static_cast<unsigned char>(s[i + 1]);
        return big_endian ? uint32_t(a) << 8 | b : uint32_t(b) << 8 | a;
    };
    auto fail = [&](size_t at) {
        if (opt.invalid_utf8 == utf8_policy::reject)
            throw import_error(import_error::kind::invalid_utf8,
                               "'" + name + "' is UTF-16 text with an invalid sequence at byte " +
                                   std::to_string(at + 2),
                               at + 2);
        if (bad++ == 0) first_bad = at + 2;
        append_utf8(out, 0xFFFD);
    };
    size_t i = 0;
    for (; i + 1 < s.size(); i += 2) {
        const uint32_t u = unit(i);
        if (u >= 0xD800 && u <= 0xDBFF && i + 3 < s.size() && unit(i + 2) >= 0xDC00 && unit(i + 2) <= 0xDFFF) {
            append_utf8(out, 0x10000 + ((u - 0xD800) << 10) + (unit(i + 2) - 0xDC00));
            i += 2;
        } else if (u >= 0xD800 && u <= 0xDFFF) {
            fail(i);
        } else {
            append_utf8(out, u);
        }
    }
    if (i < s.size()) fail(i);
    if (bad)
        warnings.push_back("replaced " + std::to_string(bad) + " invalid UTF-16 sequence" + (bad > 1 ? "s" : "") +
                           " with U+FFFD (first at byte " + std::to_string(first_bad) + ")");
    return out;
}

// UTF-32 (after its BOM) to UTF-8. A code point above U+10FFFF, a surrogate, or 1-3 trailing
// bytes are errors under utf8_policy::reject and U+FFFD otherwise.
std::string utf32_to_utf8(std::string_view s, bool big_endian, const std::string &name, const import_options &opt,
                          std::vector<std::string> &warnings) {
    std::string out;
    out.reserve(s.size() / 2);
    size_t bad = 0, first_bad = 0;
    auto fail = [&](size_t at) {
        if (opt.invalid_utf8 == utf8_policy::reject)
            throw import_error(import_error::kind::invalid_utf8,
                               "'" + name + "' is UTF-32 text with an invalid code point at byte " +
                                   std::to_string(at + 4),
                               at + 4);
        if (bad++ == 0) first_bad = at + 4;
        append_utf8(out, 0xFFFD);
    };
    size_t i = 0;
    for (; i + 3 < s.size(); i += 4) {
        uint32_t u = 0;
        for (int k = 0; k < 4; ++k) {
            const auto byte = static_cast<unsigned char>(s[i + size_t(big_endian ? k : 3 - k)]);
            u = u << 8 | byte;
        }
        if (u > 0x10FFFF || (u >= 0xD800 && u <= 0xDFFF)) fail(i);
        else append_utf8(out, u);
    }
    if (i < s.size()) fail(i);
    if (bad)
        warnings.push_back("replaced " + std::to_string(bad) + " invalid UTF-32 code point" + (bad > 1 ? "s" : "") +
                           " with U+FFFD (first at byte " + std::to_string(first_bad) + ")");
    return out;
}

// CRLF and lone CR become LF.
std::string normalize_newlines(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r') {
            out += '\n';
            if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
        } else {
            out += s[i];
        }
    }
    return out;
}

// "not a text file" test on raw bytes (UTF-8 or a legacy 8-bit encoding).
void check_not_binary(std::string_view bytes, const std::string &name) {
    if (const void *nul = std::memchr(bytes.data(), 0, bytes.size()))
        throw import_error(import_error::kind::binary,
                           "'" + name + "' is not a text file (it contains a NUL byte at offset " +
                               std::to_string(static_cast<const char *>(nul) - bytes.data()) + ")");
    const size_t n = std::min<size_t>(bytes.size(), 64 * 1024);
    size_t control = 0;
    for (size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(bytes[i]);
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1B) || c == 0x7F) ++control;
    }
    if (control * 100 > n)
        throw import_error(import_error::kind::binary,
                           "'" + name + "' is not a text file (" + std::to_string(control) + " control bytes in the first " +
                               std::to_string(n) + ")");
}

void line_and_column(std::string_view s, size_t offset, size_t &line, size_t &column) {
    line = 1, column = 1;
    for (size_t i = 0; i < offset && i < s.size(); ++i) {
        if (s[i] == '\n') ++line, column = 1;
        else if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++column;
    }
}

std::string markdown_title(std::string_view text) {
    size_t pos = 0;
    for (int line = 0; line < 50 && pos < text.size(); ++line) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view l = text.substr(pos, end - pos);
        if (l.size() > 2 && l[0] == '#' && l[1] == ' ') return trim(l.substr(2));
        pos = end + 1;
    }
    return {};
}

void quiet_poppler() {
    // Poppler prints every syntax complaint about a damaged PDF to stderr; the import reports
    // one clear error instead.
    static std::once_flag once;
    std::call_once(once, [] { poppler::set_debug_error_function([](const std::string &, void *) {}, nullptr); });
}

std::string pdf_text(std::string_view bytes, const std::string &name, const import_options &opt, std::string &title) {
    quiet_poppler();
    if (bytes.size() > size_t(std::numeric_limits<int>::max()))
        throw import_error(import_error::kind::too_large, "'" + name + "' is too large for the PDF reader");
    std::unique_ptr<poppler::document> doc(poppler::document::load_from_raw_data(bytes.data(), int(bytes.size())));
    if (!doc) throw import_error(import_error::kind::pdf, "'" + name + "' is not a readable PDF (damaged or unsupported)");
    if (doc->is_locked())
        throw import_error(import_error::kind::pdf, "'" + name + "' is an encrypted PDF; open it with a password elsewhere and save an unlocked copy");
    std::string text;
    const int pages = doc->pages();
    for (int i = 0; i < pages; ++i) {
        std::unique_ptr<poppler::page> p(doc->create_page(i));
        if (!p) continue;
        // Reading order without the spaces physical layout adds to imitate columns.
        const poppler::byte_array utf8 = p->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout).to_utf8();
        std::string page_text = trim(std::string_view(utf8.data(), utf8.size()));
        if (page_text.empty()) continue;
        if (!text.empty()) text += "\n\n"; // a page break is a paragraph break for the passage splitter
        text += page_text;
        if (text.size() > opt.max_bytes)
            throw import_error(import_error::kind::too_large,
                               "'" + name + "' holds more than " + std::to_string(opt.max_bytes >> 20) + " MiB of text");
    }
    if (trim(text).empty())
        throw import_error(import_error::kind::pdf, "'" + name + "' has no text layer (" + std::to_string(pages) +
                                                        " page" + (pages == 1 ? "" : "s") +
                                                        " of images, perhaps a scan); run OCR on it first");
    const poppler::byte_array t = doc->get_title().to_utf8();
    title = trim(repair_utf8(std::string_view(t.data(), t.size())));
    return text;
}

} // namespace

size_t find_invalid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const int n = utf8_sequence(s, i);
        if (n < 0) return i;
        i += size_t(n);
    }
    return std::string_view::npos;
}

std::string repair_utf8(std::string_view s, size_t *replaced) {
    std::string out;
    out.reserve(s.size());
    size_t count = 0;
    for (size_t i = 0; i < s.size();) {
        const int n = utf8_sequence(s, i);
        if (n > 0) {
            out.append(s, i, size_t(n));
            i += size_t(n);
        } else {
            out += "\xEF\xBF\xBD";
            i += size_t(-n);
            ++count;
        }
    }
    if (replaced) *replaced = count;
    return out;
}

size_t complete_utf8_prefix(std::string_view s) {
    // Look back at most 3 bytes for the lead byte of a sequence that runs past the end.
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        const auto c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue; // continuation byte: keep looking for the lead
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? s.size() - back : s.size();
    }
    return s.size();
}

document import_bytes(std::string_view bytes, const std::string &name_or_path, const import_options &opt) {
    const std::string name = file_name_of(name_or_path).empty() ? name_or_path : file_name_of(name_or_path);
    document d;
    d.path = name_or_path;
    if (bytes.size() > opt.max_bytes)
        throw import_error(import_error::kind::too_large, "'" + name + "' is " + std::to_string(bytes.size() >> 20) +
                                                              " MiB; documents are limited to " +
                                                              std::to_string(opt.max_bytes >> 20) + " MiB");
    if (bytes.empty()) throw import_error(import_error::kind::empty, "'" + name + "' is empty");

    const std::string ext = lower_extension(name_or_path);
    std::string text, pdf_title;
    if (bytes.substr(0, 5) == "%PDF-") {
        d.format = "pdf";
        text = pdf_text(bytes, name, opt, pdf_title);
    } else {
        d.format = ext == ".md" || ext == ".markdown" ? "md" : "txt";
        // A UTF-32 LE BOM starts like a UTF-16 LE one, so it is tested first.
        const bool utf32_le = bytes.substr(0, 4) == std::string_view("\xFF\xFE\0\0", 4);
        const bool utf32_be = bytes.substr(0, 4) == std::string_view("\0\0\xFE\xFF", 4);
        if (utf32_le || utf32_be) {
            text = utf32_to_utf8(bytes.substr(4), utf32_be, name, opt, d.warnings);
            check_not_binary(text, name);
        } else if (bytes.substr(0, 2) == "\xFF\xFE" || bytes.substr(0, 2) == "\xFE\xFF") {
            text = utf16_to_utf8(bytes.substr(2), bytes[0] == '\xFE', name, opt, d.warnings);
            check_not_binary(text, name);
        } else {
            check_not_binary(bytes, name);
            size_t skip = bytes.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0; // UTF-8 BOM
            const std::string_view body = bytes.substr(skip);
            const size_t bad = find_invalid_utf8(body);
            if (bad == std::string_view::npos) {
                text.assign(body);
            } else if (opt.invalid_utf8 == utf8_policy::reject) {
                size_t line, column;
                line_and_column(body, bad, line, column);
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(body[bad]));
                throw import_error(import_error::kind::invalid_utf8,
                                   "'" + name + "' is not valid UTF-8 (byte " + hex + " at offset " +
                                       std::to_string(bad + skip) + ", line " + std::to_string(line) + ", column " +
                                       std::to_string(column) +
                                       "); it may be Latin-1 or Windows-1252 text: save it as UTF-8, or open it with "
                                       "invalid bytes replaced",
                                   bad + skip);
            } else {
                size_t replaced = 0;
                text = repair_utf8(body, &replaced);
                d.warnings.push_back("replaced " + std::to_string(replaced) + " invalid UTF-8 sequence" +
                                     (replaced > 1 ? "s" : "") + " with U+FFFD (first at byte " +
                                     std::to_string(bad + skip) + ")");
            }
        }
    }
    d.text = normalize_newlines(text);
    if (trim(d.text).empty()) throw import_error(import_error::kind::empty, "'" + name + "' contains no text");
    if (d.format == "pdf") d.title = pdf_title;
    else if (d.format == "md") d.title = markdown_title(d.text);
    if (d.title.empty()) d.title = stem_of(name_or_path);
    d.sha256 = sha256_hex(d.text);
    return d;
}

document import_document(const std::string &path, const import_options &opt) {
    const std::string name = file_name_of(path).empty() ? path : file_name_of(path);
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (ec || !fs::exists(st))
        throw import_error(import_error::kind::unreadable, "cannot open '" + path + "': " +
                                                               (ec ? ec.message() : std::string("no such file")));
    if (fs::is_directory(st)) throw import_error(import_error::kind::unreadable, "'" + path + "' is a folder, not a document");
    if (fs::is_regular_file(st)) {
        const uintmax_t size = fs::file_size(path, ec);
        if (!ec && size > opt.max_bytes)
            throw import_error(import_error::kind::too_large, "'" + name + "' is " + std::to_string(size >> 20) +
                                                                  " MiB; documents are limited to " +
                                                                  std::to_string(opt.max_bytes >> 20) + " MiB");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw import_error(import_error::kind::unreadable, "cannot open '" + path + "': " + std::strerror(errno));
    // Read at most one byte past the limit, so a pipe or a growing file cannot exhaust memory.
    std::string bytes;
    char buf[1 << 16];
    while (in && bytes.size() <= opt.max_bytes) {
        in.read(buf, sizeof buf);
        bytes.append(buf, size_t(in.gcount()));
    }
    if (in.bad()) throw import_error(import_error::kind::unreadable, "reading '" + path + "' failed: " + std::strerror(errno));
    document d = import_bytes(bytes, path, opt);
    return d;
}

} // namespace recur_app
