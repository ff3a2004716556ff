// Files are written whole or not at all (engine/src/atomic_file.h, through gguf_writer::write):
// the bytes go to PATH.part and are renamed over PATH only after a successful fsync, so a failed
// write leaves neither a partial PATH nor a stray .part, and an existing PATH keeps its content.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "recur/error.h"
#include "recur/gguf.h"
#include "recur/gguf_writer.h"
#include "../scratch.h"

using namespace recur;

namespace {
gguf_writer small_file(uint32_t value) {
    gguf_writer w;
    w.set_uint32("test.value", value);
    w.add_tensor("t", tensor_type::F32, {4}, std::vector<uint8_t>(16, 0x3f));
    return w;
}

std::string error_of(const gguf_writer &w, const std::string &path) {
    try {
        w.write(path);
    } catch (const error &e) {
        return e.what();
    }
    return "";
}
} // namespace

TEST(AtomicWrite, WritesWholeAndReplaces) {
    const std::string path = recur_test::scratch("atomic.gguf");
    small_file(1).write(path);
    small_file(2).write(path);
    auto f = gguf_file::open(path);
    EXPECT_EQ(f->get_int("test.value"), 2);
    EXPECT_FALSE(std::filesystem::exists(path + ".part"));
}

TEST(AtomicWrite, FailuresSayWhyAndLeaveNothingBehind) {
    // A folder that does not exist: the .part cannot be created.
    const std::string missing = recur_test::scratch("no-such-folder/x.gguf");
    EXPECT_NE(error_of(small_file(1), missing).find("cannot create '" + missing + ".part'"), std::string::npos)
        << error_of(small_file(1), missing);
    // The target is a folder: the content is written, the rename fails, the .part is removed and
    // the folder is untouched.
    const std::string dir = recur_test::scratch("a-folder");
    std::filesystem::create_directories(dir + "/inside");
    const std::string e = error_of(small_file(1), dir);
    EXPECT_NE(e.find("cannot rename '" + dir + ".part' to '" + dir + "'"), std::string::npos) << e;
    EXPECT_FALSE(std::filesystem::exists(dir + ".part"));
    EXPECT_TRUE(std::filesystem::is_directory(dir + "/inside"));
}
