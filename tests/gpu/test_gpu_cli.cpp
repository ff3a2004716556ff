// The recur CLI on the GPU (issue 6, deliverable 4): `--device cuda` runs the CUDA backend and its
// greedy tokens equal `--device cpu`'s; perplexity agrees; bench and info report the device and
// the planner's numbers; a context the GPU cannot hold is refused before allocating.
//
// The CLI is found next to this binary (a staged build-gpu-stage/bin, tests/gpu/stage.sh), at
// ../app/recur (a build tree), or at $RECUR_CLI. Every test skips without a GPU, and without
// the CLI (tests/gpu/run.sh builds with RECUR_BUILD_APP=OFF where the app's libraries are absent).
#include "gpu_test_util.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <utility>
#include <unistd.h>

namespace {

std::string exe_dir() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, size_t(n));
    return p.substr(0, p.find_last_of('/'));
}

std::string cli_path() {
    if (const char *e = std::getenv("RECUR_CLI"); e && *e) return e;
    for (const std::string &p : {exe_dir() + "/recur", exe_dir() + "/../app/recur"})
        if (access(p.c_str(), X_OK) == 0) return p;
    return {};
}

#define REQUIRE_GPU_AND_CLI()                                                                      \
    do {                                                                                           \
        RECUR_REQUIRE_GPU();                                                                       \
        if (cli_path().empty()) GTEST_SKIP() << "the recur CLI is not built or staged next to this test"; \
        if (!gpu_test::file_exists(stories())) GTEST_SKIP() << stories() << " not found";         \
    } while (0)

std::string stories() { return gpu_test::shared_dir() + "/models/stories260K.gguf"; }

struct run_result {
    int exit_code = -1;
    std::string out, err;
};

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

run_result run_cli(const std::string &args) {
    const std::string dir = recur_test::scratch("cli");
    std::system(("mkdir -p " + dir).c_str());
    const std::string cmd = cli_path() + " " + args + " >" + dir + "/out 2>" + dir + "/err";
    const int status = std::system(cmd.c_str());
    run_result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir + "/out");
    r.err = slurp(dir + "/err");
    return r;
}

std::string json_array(const std::string &out, const std::string &key) {
    const size_t b = out.find("\"" + key + "\":["), e = out.find(']', b);
    return b == std::string::npos || e == std::string::npos ? std::string() : out.substr(b, e - b + 1);
}

double json_number(const std::string &out, const std::string &key) {
    const size_t b = out.find("\"" + key + "\":");
    return b == std::string::npos ? -1.0 : std::atof(out.c_str() + b + key.size() + 3);
}

} // namespace

TEST(GpuCli, GreedyTokensEqualCpu) {
    REQUIRE_GPU_AND_CLI();
    const std::string args = "generate -m " + stories() + " -p \"Once upon a time\" -n 64 --temp 0 --json --device ";
    const run_result gpu = run_cli(args + "cuda"), cpu = run_cli(args + "cpu");
    ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
    ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
    EXPECT_NE(gpu.out.find("\"device\":\"cuda\""), std::string::npos) << gpu.out;
    EXPECT_NE(cpu.out.find("\"device\":\"cpu\""), std::string::npos) << cpu.out;
    const std::string tokens = json_array(cpu.out, "tokens");
    ASSERT_GT(tokens.size(), 10u) << cpu.out;
    EXPECT_EQ(json_array(gpu.out, "tokens"), tokens);
    // auto takes the GPU here, and says nothing about it.
    const run_result automatic = run_cli(args + "auto");
    ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
    EXPECT_NE(automatic.out.find("\"device\":\"cuda\""), std::string::npos) << automatic.out;
    EXPECT_EQ(automatic.err.find("recur: note:"), std::string::npos) << automatic.err;
    EXPECT_EQ(json_array(automatic.out, "tokens"), tokens);
}

TEST(GpuCli, PerplexityAgreesWithCpu) {
    REQUIRE_GPU_AND_CLI();
    // A text of the model's own: its greedy continuation, written to a file.
    const run_result text = run_cli("generate -m " + stories() + " -p \"Once upon a time\" -n 400 --temp 0 --json --device cpu");
    ASSERT_EQ(text.exit_code, 0) << text.err;
    const size_t b = text.out.find("\"text\":\"") + 8;
    const std::string path = recur_test::scratch("text.txt");
    std::ofstream(path) << text.out.substr(b, text.out.find("\",\"", b) - b);
    const std::string args = "perplexity -m " + stories() + " -f " + path + " -c 128 --json --device ";
    const run_result gpu = run_cli(args + "cuda"), cpu = run_cli(args + "cpu");
    ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
    ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
    const double pg = json_number(gpu.out, "ppl"), pc = json_number(cpu.out, "ppl");
    std::printf("perplexity: cpu %.6f, cuda %.6f\n", pc, pg);
    ASSERT_GT(pc, 0.0) << cpu.out;
    EXPECT_NEAR(pg / pc, 1.0, 1e-3);
}

TEST(GpuCli, BenchAndInfoReportTheDeviceAndPlan) {
    REQUIRE_GPU_AND_CLI();
    const run_result bench = run_cli("bench -m " + stories() + " -p 64 -n 16 -d 32 --json --device cuda");
    ASSERT_EQ(bench.exit_code, 0) << bench.err;
    EXPECT_NE(bench.out.find("\"device\":\"cuda\""), std::string::npos) << bench.out;
    EXPECT_NE(bench.out.find("\"gpu_memory\":{"), std::string::npos) << bench.out;
    EXPECT_GT(json_number(bench.out, "decode_tok_s"), 0.0) << bench.out;
    EXPECT_GT(json_number(bench.out, "max_n_ctx"), 0.0) << bench.out;
    const run_result info = run_cli("info -m " + stories() + " --json --device cuda");
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("\"fits\":true"), std::string::npos) << info.out;
}

TEST(GpuCli, ContextTooLargeIsRefusedBeforeAllocating) {
    REQUIRE_GPU_AND_CLI();
    const run_result r = run_cli("generate -m " + stories() + " -p hi -n 2 -c 1000000000 --device cuda");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("recur: error: --device cuda: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
    // auto takes the CPU instead, saying why: in a one-line note when the CPU runs it, or inside
    // the CPU's own error when it refuses a context this big as well (its memory is smaller than
    // 610 GiB here). Either way no crash, and the GPU's reason is not lost.
    const run_result a = run_cli("generate -m " + stories() + " -p hi -n 2 -c 1000000000 --device auto");
    EXPECT_LE(a.exit_code, 1) << a.err;
    if (a.exit_code == 0)
        EXPECT_NE(a.err.find("recur: note: running on the CPU; the GPU could not take the model"), std::string::npos) << a.err;
    else
        EXPECT_NE(a.err.find("(running on the CPU; the GPU could not take the model: "), std::string::npos) << a.err;
}

// `ask` keeps an engine snapshot of the document it read, in the same file format on both
// devices: a follow-up in a new process reads nothing of the document again, whichever device
// wrote the snapshot and whichever reads it.
TEST(GpuCli, AskSnapshotsCrossDevices) {
    REQUIRE_GPU_AND_CLI();
    const std::string doc = recur_test::scratch("story.txt");
    std::ofstream(doc) << "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
                          "park. One day, she saw a big red ball under a tree. She ran to the ball and kicked it "
                          "high into the sky. Her friend Tom laughed and clapped his hands.\n";
    for (const auto &[first, second] : {std::pair{"cuda", "cpu"}, std::pair{"cpu", "cuda"}}) {
        const std::string db = recur_test::scratch(std::string("sessions-") + first + ".db");
        std::remove(db.c_str());
        const std::string args = "ask -m " + stories() + " --doc " + doc + " --session " + db + " -n 8 --temp 0 --json --device ";
        const run_result a = run_cli(args + first + " -q \"Who is Lily?\"");
        ASSERT_EQ(a.exit_code, 0) << a.err;
        EXPECT_NE(a.out.find("\"snapshot\":\"/"), std::string::npos) << first << ": no snapshot written: " << a.out;
        const run_result b = run_cli(args + second + " -q \"What did Lily kick?\"");
        ASSERT_EQ(b.exit_code, 0) << b.err;
        EXPECT_NE(b.out.find(std::string("\"device\":\"") + second + "\""), std::string::npos) << b.out;
        EXPECT_NE(b.out.find("\"reused_from\":\"snapshot\""), std::string::npos)
            << "a snapshot written on " << first << " was not used on " << second << ": " << b.out << b.err;
        EXPECT_GT(json_number(b.out, "reused_tokens"), 40.0) << b.out;
    }
}

// The quality tools run on the GPU too: recency statistics (analyze), KL against a hybrid (kl)
// and the passkey answer likelihood (passkey --answer-nll) agree with the CPU's.
TEST(GpuCli, QualityToolsAgreeWithCpu) {
    REQUIRE_GPU_AND_CLI();
    const std::string text = gpu_test::shared_dir() + "/data/prideprejudice.txt";
    if (!gpu_test::file_exists(text)) GTEST_SKIP() << text << " not found";
    const run_result an_g = run_cli("analyze -m " + stories() + " -f " + text + " -c 256 --json --device cuda");
    const run_result an_c = run_cli("analyze -m " + stories() + " -f " + text + " -c 256 --json --device cpu");
    ASSERT_EQ(an_g.exit_code, 0) << an_g.err;
    ASSERT_EQ(an_c.exit_code, 0) << an_c.err;
    EXPECT_NE(an_g.out.find("\"device\":\"cuda\""), std::string::npos) << an_g.out;
    // The first head's recency: the statistics are sums of softmax weights, F32 on both sides.
    const double rg = json_number(an_g.out, "recency"), rc = json_number(an_c.out, "recency");
    ASSERT_GT(rc, 0.0) << an_c.out;
    EXPECT_NEAR(rg, rc, 1e-3) << "recency of layer 0, head 0";

    const std::string hybrid = recur_test::scratch("stories-kl-hybrid.gguf");
    gpu_test::write_hybrid(*recur::model::load(stories()), hybrid, {0.5, 5, 2, true, 8, 2, true, true});
    const std::string kl_args = "kl -m " + stories() + " --hybrid " + hybrid + " -f " + text + " -c 128 --chunks 4 --json --device ";
    const run_result kl_g = run_cli(kl_args + "cuda"), kl_c = run_cli(kl_args + "cpu");
    ASSERT_EQ(kl_g.exit_code, 0) << kl_g.err;
    ASSERT_EQ(kl_c.exit_code, 0) << kl_c.err;
    EXPECT_NE(kl_g.out.find("\"device\":\"cuda\""), std::string::npos) << kl_g.out;
    const double kg = json_number(kl_g.out, "kl"), kc = json_number(kl_c.out, "kl");
    std::printf("kl: cpu %.6f, cuda %.6f; ppl_original cpu %.5f, cuda %.5f\n", kc, kg, json_number(kl_c.out, "ppl_original"),
                json_number(kl_g.out, "ppl_original"));
    ASSERT_GT(kc, 0.0) << kl_c.out;
    EXPECT_NEAR(kg / kc, 1.0, 1e-2);
    EXPECT_NEAR(json_number(kl_g.out, "ppl_original") / json_number(kl_c.out, "ppl_original"), 1.0, 1e-3);

    const std::string pk_args = "passkey -m " + hybrid + " -f " + text + " --lengths 256 --trials 3 --answer-nll --json --device ";
    const run_result pk_g = run_cli(pk_args + "cuda"), pk_c = run_cli(pk_args + "cpu");
    ASSERT_EQ(pk_g.exit_code, 0) << pk_g.err;
    ASSERT_EQ(pk_c.exit_code, 0) << pk_c.err;
    EXPECT_NE(pk_g.out.find("\"device\":\"cuda\""), std::string::npos) << pk_g.out;
    const double ng = json_number(pk_g.out, "answer_nll"), nc = json_number(pk_c.out, "answer_nll");
    ASSERT_GT(nc, 0.0) << pk_c.out;
    EXPECT_NEAR(ng / nc, 1.0, 1e-3) << "mean answer NLL over the 3 prompts";
}
