#pragma once
// Command-line options shared by the recur subcommands (llama.cpp-style flags).
#include "recur/distill.h"
#include "recur/sampling.h"

#include <map>
#include <string>
#include <vector>

namespace recur_cli {

struct options {
    std::string command;
    std::string model_path;     // -m
    std::string prompt;         // -p
    bool prompt_given = false;
    std::string file;           // -f
    int n_predict = 128;        // -n
    int n_ctx = 0;              // -c (0: the command's default)
    int n_batch = 256;          // -b
    int n_threads = 0;          // -t (0: all cores)
    int n_prompt_bench = 512;   // bench -p
    int depth = 0;              // bench -d
    int repetitions = 1;        // bench -r
    int chunks = 0;             // perplexity --chunks (0: all)
    bool json = false;
    bool chat = false;          // generate: wrap the prompt in the model's chat template
    std::string system_prompt;  // --system
    bool pieces = false;        // tokenize --pieces
    bool no_bos = false;
    bool kv_f32 = false;        // --kv-f32
    std::string device = "auto";
    std::string output_path;    // -o
    std::string type_name;      // quantize --type
    int window = 32;            // analyze --window: recency window k
    double fraction = -1;       // convert --fraction
    double threshold = -1;      // convert --threshold
    int steps = 0;              // convert --steps
    bool steps_given = false;   // convert: --steps was given (else a default sized for ~10 minutes)
    float lr = 0;               // convert --lr: distillation learning rate (0: the default)
    int calib_self = 0;         // convert --calib-self N: sample N calibration tokens from the model
    int calib_tokens = 0;       // convert --calib-tokens N: distil on at most N tokens of -f (0: default)
    bool resume = false;        // convert --resume: continue the distillation from OUT.ckpt
    int recency = 0;            // bench --recency K: gather statistics while measuring
    std::string kind = "auto";  // convert --kind auto|recurrent|window|window+recurrent
    int window_tokens = 0;      // convert --window-tokens W (0: equal memory, see convert_params)
    int wr_window = 0;          // convert --wr-window W: window of window+recurrent groups (0: default)
    int sinks = -1;             // convert --sinks S: attention-sink rows of window groups (-1: default)
    bool write_candidates = false; // convert --write-candidates: auto also writes OUT-recurrent/-winrec.gguf
    // convert --read-out additive|delta and --decay per-head|per-channel; the engine's defaults
    bool delta_rule = recur::distill_params{}.delta_rule;
    bool per_channel_decay = recur::distill_params{}.per_channel_decay;
    bool wr_additive = false;      // convert --wr-additive: window + recurrent heads add their read-out (no gate)
    int first_layer = 0, last_layer = -1; // convert --layers A-B: replace groups of these layers only
    int copy_probe = -1;           // convert --copy-probe N: spans of the copy probe; -1: the default
    double copy_limit = -1;        // convert --copy-limit X: copy score that keeps a group whole; -1: the default
    int retrieval_probe = -1;      // convert --retrieval-probe N: passkey prompts of the retrieval probe; -1: the default
    double retrieval_limit = -1;   // convert --retrieval-limit X: harm (nats) that keeps a group whole; -1: the default
    int repeat_spans = -1;         // convert --repeat-spans N: copy drills per training sequence; -1: the default
    int drills = -1;               // convert --drills N: retrieval drill sequences; -1: the default
    float drill_weight = -1;       // convert --drill-weight W: loss weight of their answer positions; -1: the default
    bool per_group_only = false;   // convert --per-group-only: auto skips its end-to-end comparison with all windows
    std::string doc_path;       // ask --doc
    std::string question;       // ask -q
    std::string session_db;     // ask --session (SQLite file)
    bool new_session = false;   // ask --new-session: start a new session for the document
    bool no_session = false;    // ask --no-session: record nothing
    std::string hybrid_path;    // kl --hybrid: the model compared with -m
    std::string lengths = "1k,2k,4k,8k"; // passkey --lengths (k = 1024 tokens)
    int trials = 5;             // passkey --trials: prompts per length
    bool answer_nll = false;    // passkey --answer-nll: also the key's teacher-forced NLL (one more prefill per trial)
    recur::sampling_params sampling;
};

// Parses argv; throws recur::error with a one-line message on a bad flag or value.
options parse_options(int argc, char **argv);
std::string usage();

} // namespace recur_cli
