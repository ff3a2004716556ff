#pragma once
// A per-process scratch folder for the files a test writes (hybrid models, CLI output, state
// files), removed with everything in it when the process exits. ctest runs every test as its own
// process, several at once, so the folder is unique per process; removing it at exit keeps
// repeated runs from filling $TMPDIR (each full run used to leave about a hundred files behind).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace recur_test {

class scratch_folder {
  public:
    scratch_folder() {
        // A death test's child (gtest's "threadsafe" style re-executes the binary) ends with
        // _exit, which runs no destructor: it uses its parent's folder, found in the environment,
        // and leaves the removal to the parent.
        if (const char *inherited = std::getenv(env_name); inherited && std::filesystem::is_directory(inherited)) {
            path_ = inherited;
            return;
        }
        std::string pattern = (std::filesystem::path(::testing::TempDir()) / "recur-test-XXXXXX").string();
        if (!mkdtemp(pattern.data())) {
            perror("recur tests: cannot create a scratch folder");
            std::abort();
        }
        path_ = pattern;
        owned_ = true;
        setenv(env_name, path_.c_str(), 1);
    }
    ~scratch_folder() {
        if (!owned_) return;
        std::error_code ec; // a folder already gone, or a file still open elsewhere, is no failure
        std::filesystem::remove_all(path_, ec);
    }
    scratch_folder(const scratch_folder &) = delete;
    scratch_folder &operator=(const scratch_folder &) = delete;
    const std::string &path() const { return path_; }

  private:
    static constexpr const char *env_name = "RECUR_TEST_SCRATCH";
    std::string path_;
    bool owned_ = false;
};

// The folder, created on first use (tests that write nothing create nothing).
inline const std::string &scratch_dir() {
    static scratch_folder folder;
    return folder.path();
}

// A file name inside the scratch folder.
inline std::string scratch(const std::string &name) { return scratch_dir() + "/" + name; }

} // namespace recur_test
