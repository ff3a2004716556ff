#pragma once
// The engine-independent parts of `recur kl` and `recur passkey` (DESIGN §5: quality against the
// original model), header-only so the unit tests can check them without running a model.
//
//  * compare_logit_rows (recur/logit_compare.h): one position's next-token distributions of two
//    models.
//  * The passkey prompt (recur/passkey.h, in the engine: convert's end-to-end check uses it too).
#include "recur/logit_compare.h"
#include "recur/passkey.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace recur_cli::quality {

// ---------------------------------------------------------------- next-token distributions

// In the engine (recur/logit_compare.h), shared with convert's end-to-end check.
using recur::compare_logit_rows;
using recur::log_sum_exp;
using recur::row_comparison;

// ---------------------------------------------------------------- passkey prompts

// In the engine (recur/passkey.h), shared with convert's retrieval check.
using recur::build_passkey_prompt;
using recur::first_digit_run;
using recur::make_passkey_trial;
using recur::passkey_needle;
using recur::passkey_overhead;
using recur::passkey_parts;
using recur::passkey_preamble;
using recur::passkey_prompt;
using recur::passkey_question;
using recur::passkey_trial;

// "1k,2k,4k,3000" -> {1024, 2048, 4096, 3000} (k = 1024). Throws std::invalid_argument.
inline std::vector<int64_t> parse_lengths(const std::string &spec) {
    std::vector<int64_t> out;
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t comma = spec.find(',', pos);
        if (comma == std::string::npos) comma = spec.size();
        const std::string item = spec.substr(pos, comma - pos);
        std::string digits = item;
        int64_t scale = 1;
        if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
            scale = 1024;
            digits.pop_back();
        }
        bool ok = !digits.empty() && digits.size() <= 9;
        for (char c : digits) ok = ok && c >= '0' && c <= '9';
        const int64_t v = ok ? std::stoll(digits) * scale : 0;
        if (v <= 0)
            throw std::invalid_argument("--lengths expects positive token counts such as 1k,2k,4k or 3000, got '" +
                                        item + "'");
        out.push_back(v);
        pos = comma + 1;
    }
    return out;
}

} // namespace recur_cli::quality
