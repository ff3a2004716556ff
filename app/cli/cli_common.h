#pragma once
// Helpers shared by the recur subcommands (one file per command group under app/cli/).
#include "json_writer.h"
#include "options.h"

#include "recur/model.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace recur {
class tokenizer;
}

namespace recur_cli {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0);
size_t peak_rss_bytes();
// Whole file as bytes; throws recur::error naming the path.
std::string read_file(const std::string &path);
// "cpu" (or a clear error for --device cuda in a build without CUDA).
std::string device_name(const options &o);
// Without -m: $RECUR_MODEL, else the default model installer/setup.sh puts in the data folder.
std::string default_model_path();
std::unique_ptr<recur::model> load_model(const options &o);
recur::context_params make_context_params(const options &o, const recur::model &m, int fallback_ctx);
void write_memory(json_writer &j, const recur::memory_report &r);

// The chunking of `recur perplexity` and `recur kl`: the text (tokenised without BOS) in
// non-overlapping chunks of n_ctx positions, BOS first where the vocabulary adds one; every
// position after the first is scored. Throws when not even one chunk fits.
struct text_chunks {
    std::vector<int32_t> ids;
    bool bos = false;
    int32_t bos_id = -1;
    int text_per_chunk = 0;
    int64_t n_chunks = 0;
    std::vector<int32_t> chunk(int64_t c) const;
};
text_chunks make_text_chunks(const recur::tokenizer &vocab, const std::string &text, int n_ctx, int max_chunks,
                             bool no_bos, const char *command);

} // namespace recur_cli
