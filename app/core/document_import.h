#pragma once
// Turns a file the user picked (.txt, .md, .pdf) into UTF-8 text the rest of the app works on.
//
// Decisions (the GUI shows import_error::what() as is; it is one sentence naming the file):
//  * Format: a file whose first bytes are "%PDF-" is read as PDF whatever its name; anything else
//    is read as text. The extension only picks the title rule (Markdown: first "# " heading).
//  * Size: a file larger than import_options::max_bytes (64 MiB) is refused before it is read.
//  * Text encodings: UTF-8 (a leading BOM is dropped), and UTF-16 and UTF-32 with a BOM (converted).
//    Anything else that is not valid UTF-8 is refused by default, naming the byte offset, line and
//    column of the first bad sequence (a Latin-1 file is the usual cause; re-saving as UTF-8 fixes
//    it). With utf8_policy::replace each bad sequence becomes U+FFFD and a warning says how many
//    were replaced; the GUI offers that as "open anyway".
//  * Binary: a NUL byte (outside UTF-16), or more than 1% control characters (other than tab, LF,
//    CR, form feed and ESC) in the first 64 KiB, is "not a text file".
//  * Line endings become "\n" (CRLF and lone CR), so offsets mean the same on every platform.
//  * Empty: a file with no bytes, or nothing but whitespace after decoding, is refused; so is a
//    PDF with no text layer (a scan), with a message saying so.
//  * The hash is SHA-256 of the imported UTF-8 text (after the conversions above), so the same
//    text imported from a .txt or a .md counts as one document in the session store.
#include "recur/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace recur_app {

class import_error : public recur::error {
  public:
    enum class kind {
        unreadable,   // cannot open or read (missing, permission, a directory, I/O error)
        empty,        // no text at all
        too_large,    // over import_options::max_bytes
        binary,       // NUL bytes or many control characters: not a text file
        invalid_utf8, // not UTF-8 (utf8_policy::reject); offset() says where
        pdf,          // poppler could not read the PDF, it is encrypted, or it has no text layer
    };
    import_error(kind k, const std::string &message, size_t offset = 0)
        : recur::error(message), kind_(k), offset_(offset) {}
    kind reason() const { return kind_; }
    // For invalid_utf8: byte offset of the first invalid sequence in the file. 0 otherwise.
    size_t offset() const { return offset_; }

  private:
    kind kind_;
    size_t offset_;
};

enum class utf8_policy { reject, replace };

struct import_options {
    size_t max_bytes = size_t(64) << 20; // file size limit (PDF: also the extracted text)
    utf8_policy invalid_utf8 = utf8_policy::reject;
};

struct document {
    std::string path;   // as given to import_document (absolute if it was)
    std::string title;  // PDF Title metadata, Markdown's first "# " heading, else the file name
                        // without its extension
    std::string format; // "txt", "md" or "pdf"
    std::string text;   // valid UTF-8, "\n" line endings
    std::string sha256; // hex SHA-256 of text
    std::vector<std::string> warnings; // e.g. "replaced 3 invalid UTF-8 sequences (first at byte 120)"
};

// Reads and converts one file. Throws import_error (never anything else for a bad file; a
// std::bad_alloc can still escape).
document import_document(const std::string &path, const import_options &opt = {});

// The same checks and conversions on bytes already in memory (drag-and-drop of text, tests).
// `name` plays the role of the path for the title, format and messages.
document import_bytes(std::string_view bytes, const std::string &name, const import_options &opt = {});

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or std::string_view::npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

// `s` with each maximal invalid subsequence replaced by U+FFFD (the WHATWG / Unicode
// "substitution of maximal subparts" practice). `replaced` (optional) gets the count.
std::string repair_utf8(std::string_view s, size_t *replaced = nullptr);

// Length of the longest prefix of `s` that ends on a UTF-8 character boundary, i.e. `s` minus an
// incomplete multi-byte sequence at its end (for streaming token pieces).
size_t complete_utf8_prefix(std::string_view s);

} // namespace recur_app
