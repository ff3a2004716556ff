// Document import: encodings, refusals with clear reasons, PDF text, and the SHA-256 that
// identifies a document (checked against the FIPS 180-4 / NIST example vectors).
#include "app_test_util.h"

#include "core/document_import.h"
#include "core/sha256.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>
#include <fstream>

using namespace recur_app;
using app_test::temp_dir;
using app_test::write_file;

namespace {

import_error::kind import_kind(const std::string &path, const import_options &opt = {}) {
    try {
        import_document(path, opt);
    } catch (const import_error &e) {
        EXPECT_NE(std::string(e.what()).find(std::filesystem::path(path).filename().string()), std::string::npos)
            << "the message should name the file: " << e.what();
        return e.reason();
    }
    ADD_FAILURE() << path << " was imported, expected a refusal";
    return import_error::kind::unreadable;
}

// A one-page PDF with the given page text (drawn with a base-14 font, so no font file is needed)
// and Title; the cross-reference offsets are computed as the objects are written.
std::string make_pdf(const std::string &page_text, const std::string &title) {
    std::string content = page_text.empty() ? std::string() : "BT /F1 18 Tf 72 700 Td (" + page_text + ") Tj ET";
    std::vector<std::string> objects = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        "<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content + "\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        "<< /Title (" + title + ") >>",
    };
    std::string pdf = "%PDF-1.4\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < objects.size(); ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
    }
    const size_t xref = pdf.size();
    pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
    for (size_t off : offsets) {
        char line[32];
        std::snprintf(line, sizeof line, "%010zu 00000 n \n", off);
        pdf += line;
    }
    pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R /Info 6 0 R >>\nstartxref\n" +
           std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}

} // namespace

TEST(Sha256, NistVectors) {
    // FIPS 180-4 examples (NIST CSRC "SHA256.pdf", one- and two-block messages) and the empty string.
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalMatchesOneShot) {
    std::string data;
    for (int i = 0; i < 1000; ++i) data += char(i * 7 + 3);
    for (size_t chunk : {1u, 3u, 63u, 64u, 65u, 200u}) {
        sha256 h;
        for (size_t i = 0; i < data.size(); i += chunk) h.update(std::string_view(data).substr(i, chunk));
        std::string hex;
        for (uint8_t b : h.finish()) {
            char buf[3];
            std::snprintf(buf, sizeof buf, "%02x", b);
            hex += buf;
        }
        EXPECT_EQ(hex, sha256_hex(data)) << "chunk " << chunk;
    }
}

TEST(Utf8, ValidatorFollowsTheStandard) {
    EXPECT_EQ(find_invalid_utf8("plain ascii"), std::string_view::npos);
    EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), std::string_view::npos); // é € 😀
    EXPECT_EQ(find_invalid_utf8("ab\xC0\xAF"), 2u);          // overlong '/'
    EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);       // UTF-16 surrogate D800
    EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
    EXPECT_EQ(find_invalid_utf8("abc\xE2\x82"), 3u);         // truncated at the end
    EXPECT_EQ(find_invalid_utf8("\x80"), 0u);                // lone continuation byte
}

TEST(Utf8, RepairReplacesMaximalSubparts) {
    // The Unicode Standard's example (chapter 3, "U+FFFD Substitution of Maximal Subparts"):
    // 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 -> a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
    size_t n = 0;
    const std::string fffd = "\xEF\xBF\xBD";
    EXPECT_EQ(repair_utf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", &n),
              "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d");
    EXPECT_EQ(n, 6u);
    EXPECT_EQ(repair_utf8("ok"), "ok");
}

TEST(Utf8, CompletePrefixHoldsBackAnUnfinishedCharacter) {
    EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
    EXPECT_EQ(complete_utf8_prefix("ab\xE2\x82"), 2u);       // € missing its last byte
    EXPECT_EQ(complete_utf8_prefix("ab\xE2\x82\xAC"), 5u);
    EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);
    EXPECT_EQ(complete_utf8_prefix(""), 0u);
}

TEST(DocumentImport, TextFileWithTitleHashAndNewlines) {
    temp_dir dir;
    write_file(dir.file("notes.txt"), "\xEF\xBB\xBFLine one\r\nLine two\rLine three\n");
    const document d = import_document(dir.file("notes.txt"));
    EXPECT_EQ(d.text, "Line one\nLine two\nLine three\n"); // BOM dropped, CRLF and CR -> LF
    EXPECT_EQ(d.format, "txt");
    EXPECT_EQ(d.title, "notes");
    EXPECT_EQ(d.sha256, sha256_hex(d.text));
    EXPECT_TRUE(d.warnings.empty());
}

TEST(DocumentImport, MarkdownTitleIsTheFirstHeading) {
    temp_dir dir;
    write_file(dir.file("readme.md"), "Some preface\n\n# The Real Title\n\nBody text.\n");
    const document d = import_document(dir.file("readme.md"));
    EXPECT_EQ(d.format, "md");
    EXPECT_EQ(d.title, "The Real Title");
}

TEST(DocumentImport, Utf16WithBomIsConverted) {
    temp_dir dir;
    // "Hé€" in UTF-16LE with BOM, then a surrogate pair for U+1F600.
    write_file(dir.file("u16.txt"), std::string("\xFF\xFE" "H\0\xE9\0\xAC\x20=\xD8\x00\xDE", 12));
    const document d = import_document(dir.file("u16.txt"));
    EXPECT_EQ(d.text, "H\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
}

TEST(DocumentImport, Utf32WithBomIsConverted) {
    // Found by fuzz_import: UTF-32 used to be refused as "invalid UTF-8" even with the replace
    // policy. "Hé€😀" in UTF-32 LE and BE, bytes written out here by hand.
    temp_dir dir;
    write_file(dir.file("le.txt"), std::string("\xFF\xFE\0\0" "H\0\0\0" "\xE9\0\0\0" "\xAC\x20\0\0" "\x00\xF6\x01\0", 20));
    write_file(dir.file("be.txt"), std::string("\0\0\xFE\xFF" "\0\0\0H" "\0\0\0\xE9" "\0\0\x20\xAC" "\0\x01\xF6\x00", 20));
    for (const char *f : {"le.txt", "be.txt"}) EXPECT_EQ(import_document(dir.file(f)).text, "H\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") << f;
    // A code point past U+10FFFF: refused with its offset, or replaced on request.
    write_file(dir.file("bad.txt"), std::string("\xFF\xFE\0\0" "H\0\0\0" "\0\0\x11\0", 12));
    try {
        import_document(dir.file("bad.txt"));
        FAIL() << "an invalid code point was accepted";
    } catch (const import_error &e) {
        EXPECT_EQ(e.reason(), import_error::kind::invalid_utf8);
        EXPECT_EQ(e.offset(), 8u) << e.what();
    }
    import_options opt;
    opt.invalid_utf8 = utf8_policy::replace;
    const document d = import_document(dir.file("bad.txt"), opt);
    EXPECT_EQ(d.text, "H\xEF\xBF\xBD");
    EXPECT_EQ(d.warnings.size(), 1u);
}

TEST(DocumentImport, EmptyAndWhitespaceOnlyFilesAreRefused) {
    temp_dir dir;
    write_file(dir.file("empty.txt"), "");
    write_file(dir.file("blank.txt"), " \n\t\r\n  \n");
    EXPECT_EQ(import_kind(dir.file("empty.txt")), import_error::kind::empty);
    EXPECT_EQ(import_kind(dir.file("blank.txt")), import_error::kind::empty);
}

TEST(DocumentImport, BinaryFilesAreRefused) {
    temp_dir dir;
    write_file(dir.file("nul.txt"), std::string("text then a \0 byte", 18));
    std::string control(4000, 'a');
    for (size_t i = 0; i < control.size(); i += 20) control[i] = '\x01'; // 5% control bytes
    write_file(dir.file("control.txt"), control);
    std::string elf = "\x7F" "ELF";
    elf += std::string(64, '\0');
    write_file(dir.file("program"), elf);
    EXPECT_EQ(import_kind(dir.file("nul.txt")), import_error::kind::binary);
    EXPECT_EQ(import_kind(dir.file("control.txt")), import_error::kind::binary);
    EXPECT_EQ(import_kind(dir.file("program")), import_error::kind::binary);
    // Form feeds (page breaks in plain-text manuals) are text.
    write_file(dir.file("pages.txt"), "page one\n\f\npage two\n\f\npage three\n");
    EXPECT_NO_THROW(import_document(dir.file("pages.txt")));
}

TEST(DocumentImport, InvalidUtf8IsRefusedWithItsPosition) {
    temp_dir dir;
    // "first line\n" is 11 bytes, "second caf" 10 more: the Latin-1 é is byte 21, column 11.
    write_file(dir.file("latin1.txt"), "first line\nsecond caf\xE9 line\n");
    try {
        import_document(dir.file("latin1.txt"));
        FAIL() << "expected invalid_utf8";
    } catch (const import_error &e) {
        EXPECT_EQ(e.reason(), import_error::kind::invalid_utf8);
        EXPECT_EQ(e.offset(), 21u);
        const std::string msg = e.what();
        EXPECT_NE(msg.find("offset 21"), std::string::npos) << msg;
        EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
        EXPECT_NE(msg.find("column 11"), std::string::npos) << msg;
    }
}

TEST(DocumentImport, InvalidUtf8CanBeReplacedWithAWarning) {
    temp_dir dir;
    write_file(dir.file("latin1.txt"), "caf\xE9 and cr\xE8me\n");
    import_options opt;
    opt.invalid_utf8 = utf8_policy::replace;
    const document d = import_document(dir.file("latin1.txt"), opt);
    EXPECT_EQ(d.text, "caf\xEF\xBF\xBD and cr\xEF\xBF\xBDme\n");
    ASSERT_EQ(d.warnings.size(), 1u);
    EXPECT_NE(d.warnings[0].find("2 invalid"), std::string::npos) << d.warnings[0];
}

TEST(DocumentImport, SizeLimitRefusesBeforeReading) {
    temp_dir dir;
    write_file(dir.file("big.txt"), std::string(5000, 'x'));
    import_options opt;
    opt.max_bytes = 4096;
    EXPECT_EQ(import_kind(dir.file("big.txt"), opt), import_error::kind::too_large);
    opt.max_bytes = 5000;
    EXPECT_NO_THROW(import_document(dir.file("big.txt"), opt));
}

TEST(DocumentImport, HundredMegabyteDocumentIsRefusedWithItsSizeAndTheLimit) {
    // Issue 7: a 100 MB document is refused clearly, by its size, before a byte is read (the file
    // is sparse: reading it would show as 100 MB of NULs and a "not a text file" refusal instead).
    temp_dir dir;
    const std::string path = dir.file("huge.txt");
    { std::ofstream(path, std::ios::binary).put('x'); }
    ASSERT_EQ(::truncate(path.c_str(), 100'000'000), 0);
    try {
        import_document(path);
        FAIL() << "a 100 MB document was imported";
    } catch (const import_error &e) {
        EXPECT_EQ(e.reason(), import_error::kind::too_large);
        EXPECT_NE(std::string(e.what()).find("95 MiB"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("limited to 64 MiB"), std::string::npos) << e.what();
    }
}

TEST(DocumentImport, UnreadableFiles) {
    temp_dir dir;
    EXPECT_EQ(import_kind(dir.file("missing.txt")), import_error::kind::unreadable);
    std::filesystem::create_directory(dir.file("folder.txt"));
    EXPECT_EQ(import_kind(dir.file("folder.txt")), import_error::kind::unreadable);
    if (geteuid() != 0) { // root reads any file
        write_file(dir.file("secret.txt"), "hidden");
        chmod(dir.file("secret.txt").c_str(), 0);
        EXPECT_EQ(import_kind(dir.file("secret.txt")), import_error::kind::unreadable);
    }
}

TEST(DocumentImport, PdfTextAndTitle) {
    temp_dir dir;
    write_file(dir.file("tiny.pdf"), make_pdf("Hello RecurDesk PDF import", "Tiny Test"));
    const document d = import_document(dir.file("tiny.pdf"));
    EXPECT_EQ(d.format, "pdf");
    EXPECT_NE(d.text.find("Hello RecurDesk PDF import"), std::string::npos) << d.text;
    EXPECT_EQ(d.title, "Tiny Test");
    EXPECT_EQ(d.sha256, sha256_hex(d.text));
    // Recognised by content, whatever the name says.
    write_file(dir.file("disguised.txt"), make_pdf("Inside a txt name", "T"));
    EXPECT_EQ(import_document(dir.file("disguised.txt")).format, "pdf");
}

TEST(DocumentImport, PdfWithoutTextOrDamagedIsRefused) {
    temp_dir dir;
    write_file(dir.file("scan.pdf"), make_pdf("", "Scan"));
    EXPECT_EQ(import_kind(dir.file("scan.pdf")), import_error::kind::pdf);
    write_file(dir.file("broken.pdf"), "%PDF-1.4\nthis is not really a pdf\n");
    EXPECT_EQ(import_kind(dir.file("broken.pdf")), import_error::kind::pdf);
}

TEST(DocumentImport, SharedCorpusImports) {
    const document d = import_document(app_test::shared_path("data/prideprejudice.txt"));
    EXPECT_GT(d.text.size(), 500000u);
    EXPECT_EQ(find_invalid_utf8(d.text), std::string_view::npos);
    EXPECT_EQ(d.text.find('\r'), std::string::npos);
}
