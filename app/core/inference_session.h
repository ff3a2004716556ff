#pragma once
// inference_session: one sequence of one model on the device the user chose — recur::context on
// the CPU, or recur::cuda_model on a GPU where this build has the CUDA backend (RECUR_HAVE_CUDA,
// set by app/core/CMakeLists.txt when the recur_cuda target exists). `recur generate`, `bench`,
// `perplexity`, `ask` and the desktop app's EngineWorker all run through it, so the device is
// chosen in one place and by one rule:
//
//   cpu   the CPU.
//   cuda  the GPU, or a recur::error that says why not (not in this build, no driver, no
//         device, the model does not fit the free device memory, an unsupported weight type).
//   auto  the GPU when the build has it and a device answers; otherwise the CPU. In a CUDA
//         build that finds no usable GPU (no driver, no device, the model does not fit) a
//         one-line notice says why (notice()), which the caller shows once (stderr, status bar);
//         a CPU-only build has no GPU to miss, so auto is quietly the CPU there.
//
// Engine state files (save_state/load_state) are one format on both devices: a snapshot taken on
// the GPU loads on the CPU and the other way round (recur/state_file.h). Rewinding a hybrid to a
// position other than 0 or the end throws on either device (a recurrent state cannot be
// rewound); plain models rewind anywhere on both.
//
// No CUDA type appears here: the CLI and the app compile this header with or without the backend.
#include "recur/model.h"
#include "recur/recency.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace recur_app {

enum class device_kind { cpu, cuda };
const char *device_kind_name(device_kind k); // "cpu", "cuda"

// A --device value / the app's device setting.
enum class device_request { cpu, cuda, automatic };
// "cpu", "cuda" or "auto"; anything else throws recur::error naming the accepted values.
device_request parse_device(const std::string &value);
const char *device_request_name(device_request r); // "cpu", "cuda", "auto"

// What the machine offers, asked without allocating anything; never throws.
struct gpu_status {
    bool built = false;     // this binary has the CUDA backend
    bool available = false; // and a driver and a device answered
    std::string name;       // the device's name when available
    size_t free_bytes = 0, total_bytes = 0;
    std::string reason;     // why not available ("this build has no CUDA backend", "no CUDA driver ...")
};
// Cached after the first call: a driver does not appear while the process runs, and probing a
// missing driver costs a few milliseconds every time.
const gpu_status &query_gpu();
bool cuda_built();

// The device a request resolves to, before any model is on it.
struct device_choice {
    device_kind kind = device_kind::cpu;
    std::string notice; // non-empty when auto chose the CPU in a CUDA build: one line saying why
};
// cuda without a usable GPU throws recur::error ("--device cuda: ..."-style, prefixed by `what`).
device_choice choose_device(device_request r, const gpu_status &gpu, const std::string &what = "device cuda");

// The GPU's memory plan (recur::cuda_model::plan) in plain fields, for `recur info`/`bench --json`
// and the app's memory panel. valid is false where the build has no CUDA backend.
struct gpu_memory_plan {
    bool valid = false;
    std::string device_name;
    size_t free_bytes = 0, total_bytes = 0;
    size_t weights_bytes = 0, kv_bytes = 0, recurrent_bytes = 0, window_bytes = 0;
    size_t scratch_bytes = 0, reserve_bytes = 0, total_bytes_needed = 0;
    int32_t max_n_ctx = 0; // the largest context that fits the free memory (0: none)
    bool fits = false;
    std::string description; // the planner's one line (cuda_memory_plan::describe)
};
gpu_memory_plan plan_gpu_memory(const recur::model &m, const recur::context_params &p);

struct session_options {
    recur::context_params context; // n_ctx, n_batch, n_threads (CPU), kv_type
    device_request device = device_request::cpu;
    // auto only: when the GPU refuses the model (it does not fit, a weight type it lacks), take
    // the CPU with a notice instead of failing. cuda never falls back.
    bool fall_back_on_gpu_error = true;
};

class inference_session {
  public:
    // Makes the session on the device `o.device` resolves to. Throws recur::error when the
    // device cannot be used (see the top of this file); allocation that would not fit the GPU is
    // refused by the planner before anything is allocated, with its numbers in the message.
    static std::unique_ptr<inference_session> create(const recur::model &m, const session_options &o);
    virtual ~inference_session();
    inference_session(const inference_session &) = delete;
    inference_session &operator=(const inference_session &) = delete;

    device_kind kind() const { return kind_; }
    // "cpu", or the GPU's name ("NVIDIA H100 80GB HBM3").
    const std::string &device_name() const { return device_name_; }
    // Why auto chose the CPU ("" when it did not): show it once.
    const std::string &notice() const { return notice_; }

    // As recur::context::eval: appends tokens; logits_out gets [n_vocab] of the last token, or
    // [n][n_vocab] when all_logits. progress is called after every batch; returning false
    // throws recur::cancelled_error, keeping the tokens evaluated so far.
    virtual void eval(const std::vector<int32_t> &tokens, std::vector<float> &logits_out, bool all_logits = false,
                      const recur::progress_callback &progress = {}) = 0;
    // One decode step for `token`; returns the greedy next token (on the GPU the argmax runs on
    // the device and the logits stay there: the path `recur bench` measures).
    virtual int32_t decode_greedy(int32_t token) = 0;

    virtual int32_t n_past() const = 0;
    virtual int32_t n_ctx() const = 0;
    // The tokens in the sequence, in order (what prefix reuse compares a new prompt with).
    virtual const std::vector<int32_t> &tokens() const = 0;
    // Whether truncate(n) can be done (0 and the end always can).
    virtual bool can_truncate(int32_t n) const = 0;
    // Forgets positions >= n; throws recur::error where can_truncate(n) is false.
    virtual void truncate(int32_t n) = 0;
    // CPU worker threads (1 on the GPU: one host thread drives it).
    virtual int n_threads() const = 0;
    // Memory of this session in the CPU report's shape (on the GPU: the device's allocation).
    virtual recur::memory_report memory() const = 0;
    // The GPU planner's numbers; valid only on the GPU.
    virtual gpu_memory_plan gpu_memory() const { return {}; }

    // Engine state files (recur/state_file.h), the same on both devices.
    virtual void save_state(const std::string &path) const = 0;
    virtual void load_state(const std::string &path) = 0;

    // Recency statistics, as recur::context::collect_recency / recency.
    virtual void collect_recency(int32_t window) = 0;
    virtual const recur::recency_stats &recency() const = 0;

  protected:
    inference_session(device_kind kind, std::string device_name) : kind_(kind), device_name_(std::move(device_name)) {}

  private:
    device_kind kind_;
    std::string device_name_;
    std::string notice_;
};

} // namespace recur_app
