// The recur CLI on bad input: one clear error line on stderr, a non-zero exit, never a crash.
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
    const std::string dir = ::testing::TempDir() + "/recur-cli-" + std::to_string(getpid());
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
    const std::string p = ::testing::TempDir() + "/magic-" + std::to_string(getpid()) + ".gguf";
    write_bytes(p, std::string("NOPE") + std::string(100, '\0'));
    expect_clean_error(run_cli("info -m " + p), "wrong magic");
}

TEST(CliErrors, EmptyFile) {
    const std::string p = ::testing::TempDir() + "/empty-" + std::to_string(getpid()) + ".gguf";
    write_bytes(p, "");
    expect_clean_error(run_cli("info -m " + p), "empty");
}

TEST(CliErrors, TruncatedModelEverySixteenth) {
    const std::string bytes = slurp(stories);
    ASSERT_GT(bytes.size(), 100000u);
    const std::string p = ::testing::TempDir() + "/trunc-" + std::to_string(getpid()) + ".gguf";
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
}

TEST(CliErrors, ContextTooLargeForMemoryIsRefusedBeforeAllocation) {
    expect_clean_error(run_cli("bench -m " + stories + " -c 2000000000 -p 8 -n 1"), "memory is available");
}

TEST(CliErrors, CudaRequestedWithoutBackend) {
    expect_clean_error(run_cli("generate -m " + stories + " -n 2 --device cuda"), "CUDA");
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
