// The recur CLI on bad input: one clear error line on stderr, a non-zero exit, never a crash.
#include "../scratch.h"
#include <gtest/gtest.h>

#ifdef RECUR_CLI_PATH

#include <cstdio>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

struct run_result {
    int exit_code = -1;
    bool signalled = false;
    std::string out, err;
};

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

run_result run_cli(const std::string &args) {
    // Output files unique to this process: ctest runs tests in parallel.
    const std::string dir = recur_test::scratch("cli");
    std::system(("mkdir -p " + dir).c_str());
    const std::string cmd = std::string(RECUR_CLI_PATH) + " " + args + " >" + dir + "/cli.out 2>" + dir + "/cli.err";
    const int status = std::system(cmd.c_str());
    run_result r;
    r.signalled = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 128);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir + "/cli.out");
    r.err = slurp(dir + "/cli.err");
    return r;
}

void write_bytes(const std::string &path, const std::string &bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

void expect_clean_error(const run_result &r, const std::string &must_contain) {
    EXPECT_FALSE(r.signalled) << r.err;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
    EXPECT_EQ(r.err.rfind("recur: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(must_contain), std::string::npos) << r.err;
}

const std::string stories = std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf";

} // namespace

TEST(CliErrors, MissingFile) { expect_clean_error(run_cli("info -m /nonexistent/model.gguf"), "cannot open"); }

TEST(CliErrors, WrongMagic) {
    const std::string p = recur_test::scratch("magic.gguf");
    write_bytes(p, std::string("NOPE") + std::string(100, '\0'));
    expect_clean_error(run_cli("info -m " + p), "wrong magic");
}

TEST(CliErrors, EmptyFile) {
    const std::string p = recur_test::scratch("empty.gguf");
    write_bytes(p, "");
    expect_clean_error(run_cli("info -m " + p), "empty");
}

TEST(CliErrors, TruncatedModelEverySixteenth) {
    const std::string bytes = slurp(stories);
    ASSERT_GT(bytes.size(), 100000u);
    const std::string p = recur_test::scratch("trunc.gguf");
    for (int k = 1; k < 16; ++k) {
        write_bytes(p, bytes.substr(0, bytes.size() * size_t(k) / 16));
        expect_clean_error(run_cli("generate -n 4 -p hi -m " + p), "GGUF");
    }
}

TEST(CliErrors, BadFlags) {
    expect_clean_error(run_cli("generate -m " + stories + " -n banana"), "-n expects an integer");
    expect_clean_error(run_cli("frobnicate"), "unknown command");
    expect_clean_error(run_cli("generate -m " + stories + " --bogus"), "unknown option");
    expect_clean_error(run_cli("perplexity -m " + stories), "-f FILE");
    const std::string convert = "convert -m " + stories + " -f " + RECUR_SHARED_DIR + "/data/prideprejudice.txt" +
                                " --fraction 0.25 --steps 0 -o " + recur_test::scratch("layers.gguf");
    expect_clean_error(run_cli(convert + " --layers 3"), "--layers wants A-B");
    expect_clean_error(run_cli(convert + " --layers 3-1"), "0 <= A <= B");
    expect_clean_error(run_cli(convert + " --layers 0-99"), "not a range of this model's layers 0-4");
    expect_clean_error(run_cli(convert + " --copy-limit 2"), "--copy-limit must be between 0 and 1");
    expect_clean_error(run_cli(convert + " --drills -3"), "--drills must be between 0 and 100000");
    expect_clean_error(run_cli(convert + " --drill-weight 0"), "--drill-weight must be above 0");
    expect_clean_error(run_cli(convert + " --read-out softmax"), "--read-out must be additive or delta, got 'softmax'");
    expect_clean_error(run_cli(convert + " --decay fast"), "--decay must be per-head or per-channel, got 'fast'");
    expect_clean_error(run_cli(convert + " --retrieval-probe -3"), "--retrieval-probe must be between 0 and 10000");
    expect_clean_error(run_cli(convert + " --retrieval-limit -2"), "--retrieval-limit must be a number of nats");
    expect_clean_error(run_cli(convert + " --retrieval-probe 2 -c 48"), "leave no room for filler text");
}

TEST(CliErrors, ContextTooLargeForMemoryIsRefusedBeforeAllocation) {
    expect_clean_error(run_cli("bench -m " + stories + " -c 2000000000 -p 8 -n 1 --device cpu"), "memory is available");
}

// ---- --device (app/core/inference_session.h) -------------------------------------------------

namespace {

// Whether this recur binary has the CUDA backend and a GPU answers, asked the way a user would:
// `recur info --device cuda` fails with the reason where it cannot use one.
struct cli_gpu {
    bool built = false, available = false;
    std::string reason;
};
const cli_gpu &probe_cli_gpu() {
    static const cli_gpu g = [] {
        cli_gpu c;
        const run_result r = run_cli("info -m " + stories + " --device cuda --json");
        c.available = r.exit_code == 0;
        c.built = c.available || r.err.find("this build has no CUDA backend") == std::string::npos;
        c.reason = r.err;
        return c;
    }();
    return g;
}

size_t count_of(const std::string &text, const std::string &what) {
    size_t n = 0;
    for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
    return n;
}

std::string json_tokens(const std::string &out) {
    const size_t b = out.find("\"tokens\":["), e = out.find(']', b);
    return b == std::string::npos || e == std::string::npos ? std::string() : out.substr(b, e - b + 1);
}

} // namespace

TEST(CliDevice, InvalidValuesAreRefused) {
    expect_clean_error(run_cli("generate -m " + stories + " -n 2 --device gpu"), "--device must be cpu, cuda or auto, got 'gpu'");
    expect_clean_error(run_cli("generate -m " + stories + " -n 2 --device CUDA"), "got 'CUDA'");
    expect_clean_error(run_cli("generate -m " + stories + " -n 2 --device"), "--device needs a value");
    expect_clean_error(run_cli("bench -m " + stories + " -p 4 -n 1 --device ''"), "--device must be");
}

TEST(CliDevice, CudaWithoutAUsableGpuExitsOneWithTheReason) {
    if (probe_cli_gpu().available) GTEST_SKIP() << "a GPU answers here: CliDevice.CudaGreedyTokensEqualCpu covers it";
    // Every command that can use the GPU refuses the same way, before doing any work.
    for (const std::string cmd : {"generate -n 2 -p hi", "bench -p 4 -n 1", "info", "perplexity -f " RECUR_SOURCE_DIR "/README.md -c 64 --chunks 1",
                                  "ask --no-session --doc " RECUR_SOURCE_DIR "/README.md -q why -n 2"}) {
        SCOPED_TRACE(cmd);
        const run_result r = run_cli(cmd + " -m " + stories + " --device cuda");
        expect_clean_error(r, "--device cuda: ");
        // The reason is said: the build lacks the backend, or which part of CUDA did not answer.
        const bool explained = r.err.find("this build has no CUDA backend") != std::string::npos ||
                               r.err.find("no usable GPU: ") != std::string::npos;
        EXPECT_TRUE(explained) << r.err;
        EXPECT_TRUE(r.out.empty()) << r.out;
    }
    // Commands that only run on the CPU refuse an explicit GPU request instead of ignoring it.
    expect_clean_error(run_cli("tokenize -m " + stories + " -p hi --device cuda"), "runs on the CPU only");
}

TEST(CliDevice, AutoWithoutAGpuRunsOnTheCpuAndSaysSoOnce) {
    if (probe_cli_gpu().available) GTEST_SKIP() << "a GPU answers here: auto uses it";
    const run_result r = run_cli("generate -m " + stories + " -p \"\" -n 8 --temp 0 --json --device auto");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"device\":\"cpu\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"text\":\"Once upon a time"), std::string::npos) << r.out;
    // A CUDA build that finds no GPU says so in one line; a CPU-only build has no GPU to miss.
    const size_t notes = count_of(r.err, "recur: note: ");
    if (probe_cli_gpu().built) {
        EXPECT_EQ(notes, 1u) << r.err;
        EXPECT_EQ(count_of(r.err, "running on the CPU"), 1u) << r.err;
    } else {
        EXPECT_EQ(notes, 0u) << r.err;
    }
    // The same tokens as --device cpu, which never prints the note.
    const run_result cpu = run_cli("generate -m " + stories + " -p \"\" -n 8 --temp 0 --json --device cpu");
    ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
    EXPECT_EQ(count_of(cpu.err, "recur: note: "), 0u) << cpu.err;
    EXPECT_EQ(json_tokens(r.out), json_tokens(cpu.out));
    EXPECT_FALSE(json_tokens(r.out).empty()) << r.out;
}

TEST(CliDevice, InfoAndBenchReportTheDevice) {
    const run_result info = run_cli("info -m " + stories + " --json --device cpu");
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("\"device\":\"cpu\""), std::string::npos) << info.out;
    EXPECT_EQ(info.out.find("\"gpu_memory\""), std::string::npos) << info.out;
    const run_result bench = run_cli("bench -m " + stories + " -p 16 -n 4 --json --device auto");
    ASSERT_EQ(bench.exit_code, 0) << bench.err;
    const bool on_gpu = probe_cli_gpu().available;
    EXPECT_NE(bench.out.find(on_gpu ? "\"device\":\"cuda\"" : "\"device\":\"cpu\""), std::string::npos) << bench.out;
    // On the GPU the planner's numbers come with it.
    EXPECT_EQ(bench.out.find("\"gpu_memory\":{") != std::string::npos, on_gpu) << bench.out;
}

// With a GPU: greedy tokens from the GPU equal the CPU's (a prompt, 48 decode steps; the
// backend's parity tests bound the logits' error, this checks the CLI wires the device through).
TEST(CliDevice, CudaGreedyTokensEqualCpu) {
    if (!probe_cli_gpu().available) GTEST_SKIP() << "no usable GPU: " << probe_cli_gpu().reason;
    const std::string args = "generate -m " + stories + " -p \"Once upon a time\" -n 48 --temp 0 --json --device ";
    const run_result gpu = run_cli(args + "cuda"), cpu = run_cli(args + "cpu");
    ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
    ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
    EXPECT_NE(gpu.out.find("\"device\":\"cuda\""), std::string::npos) << gpu.out;
    EXPECT_NE(gpu.out.find("\"gpu_memory\":{"), std::string::npos) << gpu.out;
    EXPECT_FALSE(json_tokens(cpu.out).empty()) << cpu.out;
    EXPECT_EQ(json_tokens(gpu.out), json_tokens(cpu.out));
    // A context the GPU cannot hold is refused by its planner, before allocating, with the numbers.
    const run_result huge = run_cli("bench -m " + stories + " -c 2000000000 -p 8 -n 1 --device cuda");
    expect_clean_error(huge, "does not fit");
}

TEST(Cli, JsonOutputOfGenerateIsOneObject) {
    run_result r = run_cli("generate -m " + stories + " -p \"\" -n 8 --temp 0 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_FALSE(r.out.empty());
    EXPECT_EQ(r.out.front(), '{');
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1);
    EXPECT_NE(r.out.find("\"decode_tok_s\""), std::string::npos);
    EXPECT_NE(r.out.find("\"text\":\"Once upon a time"), std::string::npos) << r.out;
}
#endif // RECUR_CLI_PATH: the CLI tests exist only when the recur target is built
