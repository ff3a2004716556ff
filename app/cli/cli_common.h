#pragma once
// Helpers shared by the recur subcommands (one file per command group under app/cli/).
#include "json_writer.h"
#include "options.h"

#include "core/inference_session.h"
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
// --device as the app core's request (options.cpp has already refused other values).
recur_app::device_request device_request_of(const options &o);
// The session a command evaluates with, on the device --device asks for (see
// app/core/inference_session.h): cuda that cannot be used throws (exit 1 with its reason);
// auto's fallback notice is printed to stderr here, once per session made.
std::unique_ptr<recur_app::inference_session> make_session(const options &o, const recur::model &m,
                                                           const recur::context_params &cp);
// "recur: note: <text>" on stderr: what the user should know but is not an error.
void print_notice(const std::string &text);
// `--json` fields "device" ("cpu" | "cuda") and, on the GPU, "device_name" and the planner's
// "gpu_memory" object.
void write_device(json_writer &j, const recur_app::inference_session &s);
void write_gpu_plan(json_writer &j, const recur_app::gpu_memory_plan &g);
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
