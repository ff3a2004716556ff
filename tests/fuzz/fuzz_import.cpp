// libFuzzer target: document import (txt / md, and PDF when the bytes start with "%PDF-") on
// arbitrary bytes. Every input either imports or is refused with an import_error; an imported
// document is always valid UTF-8 with "\n" line endings, not blank, and hashed as documented.
#include "core/document_import.h"
#include "core/sha256.h"

#include <string>
#include <string_view>

namespace {
void check(const recur_app::document &d) {
    if (recur_app::find_invalid_utf8(d.text) != std::string_view::npos) __builtin_trap();
    if (d.text.find('\r') != std::string::npos) __builtin_trap();
    if (d.text.find_first_not_of(" \t\n\f\v") == std::string::npos) __builtin_trap(); // blank text must be refused
    if (d.sha256 != recur_app::sha256_hex(d.text)) __builtin_trap();
    if (recur_app::find_invalid_utf8(d.title) != std::string_view::npos) __builtin_trap();
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    // The first byte picks the file name (title rule) and the UTF-8 policy, so one import per
    // input covers all four combinations over the run.
    const std::string_view bytes(reinterpret_cast<const char *>(data) + 1, size - 1);
    {
        const char *name = data[0] & 1 ? "fuzz.md" : "fuzz.txt";
        {
            const auto policy = data[0] & 2 ? recur_app::utf8_policy::replace : recur_app::utf8_policy::reject;
            recur_app::import_options opt;
            opt.invalid_utf8 = policy;
            try {
                check(recur_app::import_bytes(bytes, name, opt));
            } catch (const recur_app::import_error &e) {
                // Replacing makes every byte sequence valid: only the other reasons remain.
                if (policy == recur_app::utf8_policy::replace && e.reason() == recur_app::import_error::kind::invalid_utf8)
                    __builtin_trap();
            }
        }
    }
    return 0;
}
