// GPU parity of the whole model: cuda_model against the CPU context on stories260K (F32 weights,
// head_dim 8: the CUDA-core attention path) as the original and as hybrids written here with
// recurrent heads, window groups and trained-looking transforms; greedy tokens, logits of
// prefill and of every decode step, recency statistics, graph against eager decode, state files
// across devices, and the memory planner's refusal. They skip without a device, and without stories260K (set
// RECUR_SHARED_DIR to the folder holding models/stories260K.gguf).
#include "gpu_test_util.h"
#include "recur/error.h"
#include "recur/tokenizer.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <unistd.h>

using namespace recur;
using gpu_test::compare;
using gpu_test::error_stats;

namespace {

std::string stories_path() { return gpu_test::shared_dir() + "/models/stories260K.gguf"; }

#define REQUIRE_STORIES()                                                                          \
    do {                                                                                           \
        RECUR_REQUIRE_GPU();                                                                       \
        if (!gpu_test::file_exists(stories_path())) GTEST_SKIP() << stories_path() << " not found"; \
    } while (0)

std::vector<int32_t> prompt_tokens(const model &m, int n_min) {
    std::vector<int32_t> t = m.vocab().encode("Once upon a time, there was a little girl named Lily. She loved to", true, false);
    for (int i = 0; int(t.size()) < n_min; ++i) t.push_back(int32_t((i * 37 + 11) % m.hparams().n_vocab));
    return t;
}

int32_t argmax_of(const std::vector<float> &v, size_t off, size_t n) {
    return int32_t(std::max_element(v.begin() + long(off), v.begin() + long(off + n)) - (v.begin() + long(off)));
}
float top2_margin(const std::vector<float> &v) {
    std::vector<float> s(v);
    std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
    return s[0] - s[1];
}

// The variants: the original, and hybrids (each written once into the test's temp folder).
struct variant {
    std::string name;
    bool hybrid;
    gpu_test::hybrid_spec spec;
};
std::string variant_path(const variant &v) {
    if (!v.hybrid) return stories_path();
    // Per process: ctest runs these tests as parallel processes in one folder, and a file
    // another process is still writing must not be read.
    const std::string path = recur_test::scratch("stories-" + v.name + ".gguf");
    if (!gpu_test::file_exists(path)) {
        auto base = model::load(stories_path());
        gpu_test::write_hybrid(*base, path, v.spec);
    }
    return path;
}

class GpuModel : public ::testing::TestWithParam<variant> {};

// Window + recurrent groups with sinks and transforms, additive and gated (the gated-read-out
// sensitivity check below compares exactly these two files).
const variant winrec_additive{"winrec", true, {0.75, 5, 2, true, 8, 2, true}};
const variant winrec_gated{"winrec_gated", true, {0.75, 5, 2, true, 8, 2, true, true}};
// The same groups with delta-rule heads, and with per-channel decay too (the sequential kernel).
const variant delta_variant{"delta", true, {0.75, 5, 2, true, 8, 2, true, true, true, false}};
const variant delta_chan_variant{"delta_chan", true, {0.75, 5, 2, true, 8, 2, true, true, true, true}};

// Two models fed the same prompt and the same greedy tokens must give the same logits, bit for bit
// (same kernels, same arithmetic), at every one of `steps` decode steps.
void expect_identical_decodes(cuda_model &a, cuda_model &b, const std::vector<int32_t> &prompt, int steps,
                              const std::string &what) {
    std::vector<float> la, lb;
    a.eval(prompt, la);
    b.eval(prompt, lb);
    for (int i = 0; i < steps; ++i) {
        const int32_t next = argmax_of(la, 0, la.size());
        a.eval({next}, la);
        b.eval({next}, lb);
        ASSERT_EQ(la, lb) << what << ", decode step " << i;
    }
}

TEST_P(GpuModel, LogitsMatchCpuInPrefillAndEveryDecodeStep) {
    REQUIRE_STORIES();
    auto m = model::load(variant_path(GetParam()));
    const int V = m->hparams().n_vocab;
    const auto prompt = prompt_tokens(*m, 60);
    for (int n_batch : {512, 7}) { // one batch, and batches that split the prompt (and the windows)
        context_params cp;
        cp.n_ctx = 256, cp.n_batch = n_batch, cp.n_threads = 2;
        context cpu(*m, cp);
        cuda_params gp;
        gp.n_ctx = 256, gp.n_batch = n_batch;
        cuda_model gpu(*m, gp);
        std::vector<float> lc, lg;
        cpu.eval(prompt, lc, true);
        gpu.eval(prompt, lg, true);
        error_stats e = compare(lg, lc);
        printf("  %-10s batch=%3d prefill nmse=%.3e max_abs=%.3e\n", GetParam().name.c_str(), n_batch, e.nmse, e.max_abs);
        EXPECT_LE(e.nmse, 1e-3);
        double worst = 0;
        for (int step = 0; step < 24; ++step) {
            const int32_t next = argmax_of(lc, lc.size() - size_t(V), size_t(V));
            cpu.eval({next}, lc);
            gpu.eval({next}, lg);
            e = compare(lg, lc);
            worst = std::max(worst, e.nmse);
            ASSERT_LE(e.nmse, 1e-3) << "decode step " << step;
        }
        printf("  %-10s batch=%3d decode worst nmse=%.3e\n", GetParam().name.c_str(), n_batch, worst);
        EXPECT_EQ(gpu.n_past(), cpu.n_past());
    }
}

TEST_P(GpuModel, GreedyTokensEqualCpu) {
    REQUIRE_STORIES();
    auto m = model::load(variant_path(GetParam()));
    const auto prompt = prompt_tokens(*m, 1);
    context_params cp;
    cp.n_ctx = 256, cp.n_threads = 2;
    context cpu(*m, cp);
    cuda_params gp;
    gp.n_ctx = 256;
    cuda_model gpu(*m, gp);
    std::vector<float> lc, lg;
    cpu.eval(prompt, lc);
    gpu.eval(prompt, lg);
    int32_t tok_gpu = argmax_of(lg, 0, lg.size());
    std::string cpu_text, gpu_text;
    for (int i = 0; i < 64; ++i) {
        const int32_t tok_cpu = argmax_of(lc, 0, lc.size());
        // A step is decided when the CPU's top-2 margin is well above the backends' difference;
        // after an undecided step the two sequences may legitimately part.
        if (top2_margin(lc) < 1e-3f) break;
        ASSERT_EQ(tok_gpu, tok_cpu) << "step " << i;
        cpu_text += m->vocab().token_to_piece(tok_cpu);
        cpu.eval({tok_cpu}, lc);
        tok_gpu = gpu.decode_greedy(tok_gpu); // the graph path from its second call on
    }
    printf("  %s: %s\n", GetParam().name.c_str(), cpu_text.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Stories260K, GpuModel,
    ::testing::Values(variant{"original", false, {}}, variant{"recurrent", true, {0.5, 0, 2, false, 7}},
                      variant{"mixed", true, {0.75, 5, 2, true, 8}},
                      // windows of 5 with 2 attention-sink rows: prompts of 48+ tokens slide far past them
                      variant{"sinks", true, {0.75, 5, 2, true, 8, 2}},
                      // window + recurrent groups: tokens leaving windows of 5 (2 sink rows, trained
                      // transforms) feed recurrent heads; and every replaced group so, no sinks
                      winrec_additive,
                      variant{"winrec_all", true, {0.5, 6, 1, false, 9, 0, true}},
                      // the same with the gated read-out (what convert writes by default): the
                      // window attention's log-sum-exp, prefill and decode kernels alike
                      winrec_gated,
                      variant{"winrec_gated_all", true, {0.5, 6, 1, false, 9, 0, true, true}},
                      // the sequential kernel: delta rule and per-channel decay, on recurrent and
                      // gated window + recurrent groups
                      delta_variant, delta_chan_variant,
                      variant{"chan", true, {0.5, 0, 2, true, 7, 0, false, false, false, true}}),
    [](const ::testing::TestParamInfo<variant> &i) { return i.param.name; });

TEST(GpuModelFeatures, DecodeGraphEqualsEagerDecode) {
    REQUIRE_STORIES();
    auto m = model::load(stories_path());
    cuda_params gp;
    gp.n_ctx = 128;
    cuda_model graph(*m, gp);
    gp.decode_graph = false;
    cuda_model eager(*m, gp);
    const auto prompt = prompt_tokens(*m, 1);
    expect_identical_decodes(graph, eager, prompt, 20, "the graph replays the same kernels");
    if (HasFatalFailure()) return;
    std::vector<float> a;
    graph.reset();
    EXPECT_EQ(graph.n_past(), 0);
    graph.eval(prompt, a);
    EXPECT_EQ(graph.n_past(), int32_t(prompt.size()));
}

// Programmatic dependent launch (RECUR_CUDA_PDL=1, Hopper and later) lets a decode kernel start
// before its predecessor ends; each waits before touching what the previous ones write. A
// missing wait is a race: the logits would differ from plain launches (same kernels, same
// arithmetic, so equal to the bit otherwise). Both the eager first step and the graph replays.
TEST_P(GpuModel, OverlappedDecodeEqualsPlainLaunches) {
    REQUIRE_STORIES();
    auto m = model::load(variant_path(GetParam()));
    cuda_params gp;
    gp.n_ctx = 160;
    // The variable is read when a model is made; restored after, for the tests that follow (run.sh
    // runs the whole suite with RECUR_CUDA_PDL=1 once).
    const char *was = std::getenv("RECUR_CUDA_PDL");
    const std::string saved = was ? was : "";
    setenv("RECUR_CUDA_PDL", "1", 1);
    cuda_model overlapped(*m, gp);
    unsetenv("RECUR_CUDA_PDL");
    cuda_model plain(*m, gp);
    if (was) setenv("RECUR_CUDA_PDL", saved.c_str(), 1);
    if (!overlapped.decode_overlaps()) GTEST_SKIP() << "no programmatic dependent launch on this device (compute capability < 9.0)";
    ASSERT_FALSE(plain.decode_overlaps());
    expect_identical_decodes(overlapped, plain, prompt_tokens(*m, 40), 48, GetParam().name + ", overlapped against plain");
}

// The ask pipeline keeps the common prefix of two prompts and reads only the rest: after
// truncate(n) the next eval must see exactly the first n positions, as a fresh sequence would.
// A hybrid can only go back to 0 (its recurrent state holds every token it saw).
TEST_P(GpuModel, TruncateKeepsThePrefix) {
    REQUIRE_STORIES();
    auto m = model::load(variant_path(GetParam()));
    const auto prompt = prompt_tokens(*m, 48);
    const std::vector<int32_t> head(prompt.begin(), prompt.begin() + 24);
    std::vector<int32_t> tail;
    for (int i = 0; i < 12; ++i) tail.push_back(int32_t((i * 53 + 5) % m->hparams().n_vocab));
    cuda_params gp;
    gp.n_ctx = 128;
    cuda_model reused(*m, gp), fresh(*m, gp);
    std::vector<float> got, want;
    reused.eval(prompt, got);
    if (GetParam().hybrid) {
        EXPECT_THROW(reused.truncate(int32_t(head.size())), error);
        EXPECT_EQ(reused.n_past(), int32_t(prompt.size())) << "a refused truncate changes nothing";
        reused.truncate(0);
        reused.eval(head, got);
    } else {
        reused.truncate(int32_t(head.size()));
    }
    EXPECT_EQ(reused.n_past(), int32_t(head.size()));
    reused.eval(tail, got, true);
    fresh.eval(head, want);
    fresh.eval(tail, want, true);
    const error_stats e = compare(got, want);
    printf("  %s: truncate then eval vs fresh: nmse %.3g, max |diff| %.3g\n", GetParam().name.c_str(), e.nmse, e.max_abs);
    // Not bit-equal: the cache rows were written by a 48-token prefill here and a 24-token one
    // there (cuBLAS may pick other kernels), then rounded to F16. The F32 parity bound applies.
    EXPECT_LE(e.nmse, 1e-6);
    EXPECT_THROW(reused.truncate(reused.n_past() + 1), error);
}

// Engine state files are one format on both devices (recur/state_file.h): a state saved on the
// GPU and loaded on the GPU continues bit for bit; loaded on the CPU it gives the GPU's last
// logits exactly and continues within the parity bound of a CPU that read the prompt itself; a
// CPU's state loaded on the GPU likewise. The prompt passes every window (8 + 2 sink rows), so
// rings have wrapped and window + recurrent states hold evicted tokens. A damaged file, and an
// F32 CPU cache's state, are refused and change nothing.
TEST_P(GpuModel, StateFilesCrossDevices) {
    REQUIRE_STORIES();
    auto m = model::load(variant_path(GetParam()));
    const int V = m->hparams().n_vocab;
    const auto prompt = prompt_tokens(*m, 45);
    const std::string gpu_state = recur_test::scratch("gpu-" + GetParam().name + ".state");
    const std::string cpu_state = recur_test::scratch("cpu-" + GetParam().name + ".state");
    context_params cp;
    cp.n_ctx = 160, cp.n_batch = 16, cp.n_threads = 2;
    cuda_params gp;
    gp.n_ctx = 160, gp.n_batch = 16;

    cuda_model gpu(*m, gp);
    std::vector<float> lg;
    gpu.eval(prompt, lg);
    gpu.save_state(gpu_state);
    context native(*m, cp);
    std::vector<float> ln;
    native.eval(prompt, ln);
    native.save_state(cpu_state);

    cuda_model gpu_from_gpu(*m, gp), gpu_from_cpu(*m, gp);
    gpu_from_gpu.load_state(gpu_state);
    gpu_from_cpu.load_state(cpu_state);
    context cpu_from_gpu(*m, cp);
    cpu_from_gpu.load_state(gpu_state);
    for (const int32_t n : {gpu_from_gpu.n_past(), gpu_from_cpu.n_past(), cpu_from_gpu.n_past()})
        EXPECT_EQ(n, int32_t(prompt.size()));
    EXPECT_EQ(gpu_from_gpu.tokens(), prompt);
    EXPECT_EQ(gpu_from_cpu.tokens(), prompt);
    EXPECT_EQ(cpu_from_gpu.tokens(), prompt);
    ASSERT_EQ(cpu_from_gpu.last_logits(), lg) << "the GPU's last logits travel in the file";

    double worst_cpu = 0, worst_gpu = 0;
    std::vector<float> l_gg, l_gc, l_cg;
    for (int step = 0; step < 24; ++step) {
        const int32_t next = argmax_of(ln, 0, size_t(V));
        gpu.eval({next}, lg);
        gpu_from_gpu.eval({next}, l_gg);
        gpu_from_cpu.eval({next}, l_gc);
        cpu_from_gpu.eval({next}, l_cg);
        native.eval({next}, ln);
        ASSERT_EQ(l_gg, lg) << "GPU state loaded on the GPU, decode step " << step;
        const error_stats on_cpu = compare(l_cg, ln), on_gpu = compare(l_gc, ln);
        worst_cpu = std::max(worst_cpu, on_cpu.nmse);
        worst_gpu = std::max(worst_gpu, on_gpu.nmse);
        ASSERT_LE(on_cpu.nmse, 1e-3) << "GPU state continued on the CPU, decode step " << step;
        ASSERT_LE(on_gpu.nmse, 1e-3) << "CPU state continued on the GPU, decode step " << step;
    }
    printf("  %-16s GPU state on CPU: worst nmse %.3e; CPU state on GPU: worst nmse %.3e\n", GetParam().name.c_str(),
           worst_cpu, worst_gpu);

    // A damaged file: refused before the device is touched.
    std::string bytes;
    {
        FILE *f = fopen(gpu_state.c_str(), "rb");
        ASSERT_NE(f, nullptr);
        char buf[4096];
        for (size_t got; (got = fread(buf, 1, sizeof buf, f)) > 0;) bytes.append(buf, got);
        fclose(f);
    }
    const std::string cut = recur_test::scratch("cut-" + GetParam().name + ".state");
    {
        FILE *f = fopen(cut.c_str(), "wb");
        ASSERT_NE(f, nullptr);
        fwrite(bytes.data(), 1, bytes.size() / 2, f);
        fclose(f);
    }
    const int32_t before = gpu.n_past();
    EXPECT_THROW(gpu.load_state(cut), error);
    EXPECT_EQ(gpu.n_past(), before);
    // The GPU's cache is F16: an F32 CPU cache's state is refused with a message.
    context_params cp32 = cp;
    cp32.kv_type = tensor_type::F32;
    context f32(*m, cp32);
    f32.eval(prompt, ln);
    const std::string f32_state = recur_test::scratch("f32-" + GetParam().name + ".state");
    f32.save_state(f32_state);
    try {
        gpu.load_state(f32_state);
        ADD_FAILURE() << "an F32 state was accepted";
    } catch (const error &e) {
        EXPECT_NE(std::string(e.what()).find("F32"), std::string::npos) << e.what();
    }
    EXPECT_EQ(gpu.n_past(), before);
    for (const std::string &f : {gpu_state, cpu_state, cut, f32_state}) std::remove(f.c_str());
}

TEST(GpuModelFeatures, RecencyStatisticsMatchCpu) {
    REQUIRE_STORIES();
    gpu_test::hybrid_spec spec{0.5, 6, 2, false, 9}; // window groups are gathered too
    const variant v{"recency", true, spec};
    auto m = model::load(variant_path(v));
    const auto tokens = prompt_tokens(*m, 120);
    context_params cp;
    cp.n_ctx = 200, cp.n_batch = 32, cp.n_threads = 2;
    context cpu(*m, cp);
    cuda_params gp;
    gp.n_ctx = 200, gp.n_batch = 32;
    cuda_model gpu(*m, gp);
    cpu.collect_recency(8);
    gpu.collect_recency(8);
    std::vector<float> l;
    cpu.eval(tokens, l);
    gpu.eval(tokens, l);
    cpu.eval({5}, l); // a decode step with statistics on
    gpu.eval({5}, l);
    const recency_stats &a = cpu.recency(), &b = gpu.recency();
    ASSERT_EQ(a.n_queries, b.n_queries);
    ASSERT_EQ(a.n_bins, b.n_bins);
    std::vector<double> ca, cb;
    for (int ly = 0; ly < a.n_layer; ++ly)
        for (int h = 0; h < a.n_head; ++h) {
            ca.push_back(a.mean_recency(ly, h)), cb.push_back(b.mean_recency(ly, h));
            ca.push_back(a.mean_sink(ly, h)), cb.push_back(b.mean_sink(ly, h));
            for (int bin = 0; bin < a.n_bins; ++bin) ca.push_back(a.mean_hist(ly, h, bin)), cb.push_back(b.mean_hist(ly, h, bin));
        }
    const error_stats e = compare(cb, ca);
    printf("  recency statistics nmse=%.3e max_abs=%.3e\n", e.nmse, e.max_abs);
    EXPECT_LE(e.nmse, 1e-6);
}

// The gated variants above can fail: on the CPU (the oracle) the gate moves the logits far more
// than the GPU parity bound (1e-3), so a GPU that dropped or mis-weighed the gate would be caught.
// Runs without a device.
TEST(GpuModelFeatures, GatedVariantDiffersFromAdditiveBeyondTheBound) {
    if (!gpu_test::file_exists(stories_path())) GTEST_SKIP() << stories_path() << " not found";
    auto gated = model::load(variant_path(winrec_gated));
    auto additive = model::load(variant_path(winrec_additive));
    const auto prompt = prompt_tokens(*gated, 60);
    context_params cp;
    cp.n_ctx = 128, cp.n_threads = 2;
    context a(*gated, cp), b(*additive, cp);
    std::vector<float> la, lb;
    a.eval(prompt, la, true);
    b.eval(prompt, lb, true);
    const error_stats e = compare(la, lb);
    printf("  gated vs additive read-out: nmse %.3e\n", e.nmse);
    EXPECT_GT(e.nmse, 1e-2);
}

// On the CPU (runs without a GPU): the delta-rule and per-channel variants are what they say, and
// each changes the logits, so the GPU parity tests above compare different functions.
TEST(GpuModelFeatures, SequentialVariantsDifferFromTheGatedOne) {
    if (!gpu_test::file_exists(stories_path())) GTEST_SKIP() << stories_path() << " not found";
    auto gated = model::load(variant_path(winrec_gated));
    auto delta = model::load(variant_path(delta_variant));
    auto chan = model::load(variant_path(delta_chan_variant));
    bool any_chan = false;
    for (const hybrid_layer &H : chan->hybrid()) any_chan = any_chan || !H.a_chan.empty();
    EXPECT_TRUE(any_chan);
    EXPECT_TRUE(delta->hybrid()[0].delta_rule);
    const auto prompt = prompt_tokens(*gated, 60);
    context_params cp;
    cp.n_ctx = 128, cp.n_threads = 2;
    context a(*gated, cp), b(*delta, cp), c(*chan, cp);
    std::vector<float> la, lb, lc;
    a.eval(prompt, la, true);
    b.eval(prompt, lb, true);
    c.eval(prompt, lc, true);
    const error_stats e1 = compare(lb, la), e2 = compare(lc, lb);
    printf("  delta vs additive read-out: nmse %.3e; per-channel vs per-head decay: nmse %.3e\n", e1.nmse, e2.nmse);
    EXPECT_GT(e1.nmse, 1e-3);
    // Decay offsets move stories260K's logits less (measured 1.6e-3); the op-level parity test
    // (GpuRecurrent ..._chan, tolerance 1e-6) is the strict check of the kernel's decays.
    EXPECT_GT(e2.nmse, 5e-4);
}

TEST(GpuModelFeatures, PlannerRefusesBeforeAllocating) {
    REQUIRE_STORIES();
    auto m = model::load(stories_path());
    cuda_params gp;
    gp.n_ctx = 256;
    const cuda_memory_plan p = cuda_model::plan(*m, gp);
    context_params cp;
    cp.n_ctx = 256;
    const memory_report r = context::plan(*m, cp);
    EXPECT_EQ(p.kv_bytes, r.kv_bytes) << "the F16 cache is laid out as the CPU's";
    EXPECT_TRUE(p.fits());
    EXPECT_GT(p.max_n_ctx, 256);
    printf("  plan: %s\n", p.describe().c_str());

    gp.n_ctx = 1 << 30; // 640 GiB of KV cache
    const size_t free_before = cuda_device_info().free_bytes;
    try {
        cuda_model huge(*m, gp);
        FAIL() << "expected a refusal";
    } catch (const recur::error &e) {
        const std::string msg = e.what();
        printf("  refusal: %s\n", msg.c_str());
        EXPECT_NE(msg.find("does not fit"), std::string::npos);
        EXPECT_NE(msg.find("largest context"), std::string::npos);
    }
    // Nothing was allocated: free memory is unchanged (to the allocator's granularity).
    EXPECT_NEAR(double(cuda_device_info().free_bytes), double(free_before), 64.0 * 1024 * 1024);
}

} // namespace
