#pragma once
// Helpers shared by the app-core tests: a temporary folder and small file utilities.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace app_test {

// A fresh folder under $TMPDIR, removed with everything in it when the object goes.
class temp_dir {
  public:
    temp_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "recur-app-test-XXXXXX").string();
        if (!mkdtemp(pattern.data())) std::abort();
        path_ = pattern;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string &name) const { return (path_ / name).string(); }
    const std::filesystem::path &path() const { return path_; }

  private:
    std::filesystem::path path_;
};

inline void write_file(const std::string &path, const std::string &bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::string shared_path(const std::string &rel) { return std::string(RECUR_SHARED_DIR) + "/" + rel; }

} // namespace app_test
