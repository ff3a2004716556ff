// GGUF reader: real files parse; malformed files give one clear error, never a crash.
// Hostile files are built byte by byte here, independently of the reader.
#include "recur/gguf.h"
#include "recur/model.h"
#include "../scratch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <cstdlib>
#include <unistd.h>

using namespace recur;

namespace {

const std::string stories = std::string(RECUR_SHARED_DIR) + "/models/stories260K.gguf";

std::vector<uint8_t> read_bytes(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Writes GGUF v3 images for tests.
struct gguf_builder {
    std::vector<uint8_t> b;
    template <typename T> void put(T v) {
        uint8_t raw[sizeof(T)];
        std::memcpy(raw, &v, sizeof(T));
        b.insert(b.end(), raw, raw + sizeof(T));
    }
    void str(const std::string &s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    void header(uint64_t n_tensors, uint64_t n_kv, uint32_t magic = 0x46554747, uint32_t version = 3) {
        put<uint32_t>(magic);
        put<uint32_t>(version);
        put<uint64_t>(n_tensors);
        put<uint64_t>(n_kv);
    }
    void kv_string(const std::string &k, const std::string &v) {
        str(k);
        put<uint32_t>(8);
        str(v);
    }
    void tensor(const std::string &name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
        str(name);
        put<uint32_t>(uint32_t(ne.size()));
        for (auto d : ne) put<int64_t>(d);
        put<uint32_t>(type);
        put<uint64_t>(offset);
    }
    void pad_to(size_t align) {
        while (b.size() % align) b.push_back(0);
    }
};

std::string error_of(const std::vector<uint8_t> &bytes) {
    try {
        gguf_file::from_memory(bytes.data(), bytes.size());
    } catch (const format_error &e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST(Gguf, ReadsStories260K) {
    auto f = gguf_file::open(stories);
    EXPECT_EQ(f->get_string("general.architecture"), "llama");
    EXPECT_EQ(f->get_int("llama.block_count"), 5);
    EXPECT_EQ(f->get_int("llama.embedding_length"), 64);
    const gguf_tensor_info *emb = f->find_tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->ne[0], 64);
    EXPECT_EQ(emb->ne[1], 512);
    EXPECT_EQ(emb->type, tensor_type::F32);
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 512u);
    // Every tensor lies inside the file and is aligned.
    for (auto &t : f->tensors()) {
        EXPECT_LE(size_t(t.data - f->base()) + t.n_bytes, f->file_size()) << t.name;
        EXPECT_EQ((t.data - f->base()) % f->alignment(), 0) << t.name;
    }
}

TEST(Gguf, TruncatedAtEverySixteenthFailsCleanly) {
    const auto bytes = read_bytes(stories);
    ASSERT_GT(bytes.size(), 1000u);
    for (int k = 0; k < 16; ++k) {
        const size_t len = bytes.size() * size_t(k) / 16;
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + long(len));
        const std::string err = error_of(cut);
        EXPECT_FALSE(err.empty()) << "truncation at " << len << " bytes was accepted";
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    }
}

TEST(Gguf, TruncatedFileOnDiskFailsInModelLoad) {
    const auto bytes = read_bytes(stories);
    const std::string path = recur_test::scratch("truncated.gguf");
    for (int k : {1, 5, 9, 15}) {
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()), long(bytes.size() * k / 16));
        EXPECT_THROW(model::load(path), error) << k << "/16";
    }
}

TEST(Gguf, WrongMagic) {
    gguf_builder g;
    g.header(0, 0, 0x12345678);
    EXPECT_NE(error_of(g.b).find("wrong magic"), std::string::npos);
}

TEST(Gguf, UnsupportedVersion) {
    gguf_builder g;
    g.header(0, 0, 0x46554747, 7);
    EXPECT_NE(error_of(g.b).find("version 7"), std::string::npos);
}

TEST(Gguf, EmptyAndTinyInputs) {
    EXPECT_FALSE(error_of({}).empty());
    EXPECT_FALSE(error_of({'G', 'G'}).empty());
}

TEST(Gguf, AbsurdCounts) {
    gguf_builder g;
    g.header(1ull << 40, 0);
    EXPECT_NE(error_of(g.b).find("absurd"), std::string::npos);
    gguf_builder h;
    h.header(0, 1);
    h.str("key");
    h.put<uint32_t>(8);
    h.put<uint64_t>(1ull << 50); // string length
    EXPECT_NE(error_of(h.b).find("absurd"), std::string::npos);
}

TEST(Gguf, TensorPointingPastTheEnd) {
    gguf_builder g;
    g.header(1, 1);
    g.kv_string("general.architecture", "llama");
    g.tensor("w", {32, 4}, 0, 0); // 512 bytes of F32, none present
    g.pad_to(32);
    g.b.resize(g.b.size() + 64);
    const std::string err = error_of(g.b);
    EXPECT_NE(err.find("past the end"), std::string::npos) << err;
    EXPECT_NE(err.find("'w'"), std::string::npos) << err;
}

TEST(Gguf, AbsurdDimensions) {
    gguf_builder g;
    g.header(1, 0);
    g.tensor("w", {1ll << 40, 1ll << 40}, 0, 0);
    EXPECT_NE(error_of(g.b).find("absurd dimensions"), std::string::npos);
    gguf_builder n;
    n.header(1, 0);
    n.tensor("w", {-5, 3}, 0, 0);
    EXPECT_NE(error_of(n.b).find("dimension -5"), std::string::npos);
}

TEST(Gguf, UnknownTensorType) {
    gguf_builder g;
    g.header(1, 0);
    g.tensor("w", {32}, 77, 0);
    EXPECT_NE(error_of(g.b).find("unsupported type"), std::string::npos);
}

TEST(Gguf, MisalignedOffsetAndBadRowLength) {
    gguf_builder g;
    g.header(1, 0);
    g.tensor("w", {32}, 0, 3);
    EXPECT_NE(error_of(g.b).find("not aligned"), std::string::npos);
    gguf_builder q;
    q.header(1, 0);
    q.tensor("w", {33}, 8, 0); // Q8_0 rows must be multiples of 32
    EXPECT_NE(error_of(q.b).find("multiple of 32"), std::string::npos);
}

TEST(Gguf, UnknownArchitectureIsRejectedByModelLoad) {
    gguf_builder g;
    g.header(0, 1);
    g.kv_string("general.architecture", "mamba9000");
    const std::string path = recur_test::scratch("unknown_arch.gguf");
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char *>(g.b.data()), long(g.b.size()));
    try {
        model::load(path);
        FAIL() << "unknown architecture accepted";
    } catch (const format_error &e) {
        EXPECT_NE(std::string(e.what()).find("mamba9000"), std::string::npos) << e.what();
    }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
    // Flip bytes in the header region of a real file; every outcome must be a parse or a
    // format_error, never a crash (run under ASan in the sanitizer build).
    const auto bytes = read_bytes(stories);
    uint64_t state = 12345;
    auto next = [&] {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return state >> 33;
    };
    int errors = 0;
    for (int trial = 0; trial < 300; ++trial) {
        auto copy = bytes;
        for (int k = 0; k < 4; ++k) copy[next() % 8192] = uint8_t(next());
        errors += !error_of(copy).empty();
    }
    SUCCEED() << errors << " of 300 corrupted files rejected";
}

// ---- a model file changed on disk while a session uses it (issue 7, faults) -----------------

namespace {
std::string copy_to_temp(const std::string &src, const std::string &name) {
    const std::string dst = recur_test::scratch(name);
    const auto bytes = read_bytes(src);
    std::ofstream(dst, std::ios::binary).write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
    return dst;
}
std::vector<float> eval_tokens(const model &m) {
    context_params cp;
    cp.n_ctx = 16;
    cp.n_threads = 1;
    context ctx(m, cp);
    std::vector<float> logits;
    ctx.eval({1, 403, 407}, logits);
    return logits;
}
} // namespace

TEST(Gguf, SmallModelIsReadSoTruncationCannotReachIt) {
    const std::string path = copy_to_temp(stories, "truncated-after-load.gguf");
    auto m = model::load(path);
    ASSERT_FALSE(m->file().mapped()) << "a 1 MB model should be read into memory by default";
    const auto before = eval_tokens(*m);
    ASSERT_EQ(::truncate(path.c_str(), 4096), 0);
    const auto after = eval_tokens(*m); // the weights are a private copy: same answer, no SIGBUS
    EXPECT_EQ(before, after);
    std::remove(path.c_str());
}

TEST(Gguf, ReadAndMapGiveTheSameBytes) {
    auto r = gguf_file::open(stories, gguf_load::read);
    auto m = gguf_file::open(stories, gguf_load::map);
    EXPECT_FALSE(r->mapped());
    EXPECT_TRUE(m->mapped());
    ASSERT_EQ(r->file_size(), m->file_size());
    EXPECT_EQ(0, std::memcmp(r->base(), m->base(), r->file_size()));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r->base()) % 64, 0u);
}

TEST(GgufDeathTest, MappedModelTruncatedByAnotherProgramExitsWithAClearMessage) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    const std::string path = copy_to_temp(stories, "truncated-while-mapped.gguf");
    EXPECT_EXIT(
        {
            setenv("RECUR_MMAP", "1", 1);
            auto m = model::load(path);
            if (!m->file().mapped()) std::_Exit(3);
            if (::truncate(path.c_str(), 4096) != 0) std::_Exit(4);
            (void)eval_tokens(*m); // touches pages past the new end: SIGBUS, caught by the guard
            std::_Exit(0);
        },
        ::testing::ExitedWithCode(74), "truncated or overwritten by another program while in use");
    std::remove(path.c_str());
}

TEST(Gguf, ModelFileDeletedWhileInUseKeepsWorkingInBothModes) {
    // Deleting (unlinking) a file another program has open or mapped leaves its inode alive on
    // Linux: the session in progress keeps its weights; only the next load reports the file gone.
    for (const char *mmap_env : {"0", "1"}) {
        setenv("RECUR_MMAP", mmap_env, 1);
        const std::string path = copy_to_temp(stories, std::string("deleted-while-used-") + mmap_env + ".gguf");
        auto m = model::load(path);
        EXPECT_EQ(m->file().mapped(), std::string(mmap_env) == "1");
        const auto before = eval_tokens(*m);
        ASSERT_EQ(std::remove(path.c_str()), 0);
        EXPECT_EQ(eval_tokens(*m), before) << "RECUR_MMAP=" << mmap_env;
        try {
            model::load(path);
            ADD_FAILURE() << "loading a deleted file succeeded";
        } catch (const error &e) {
            EXPECT_NE(std::string(e.what()).find("cannot open model file"), std::string::npos) << e.what();
        }
    }
    unsetenv("RECUR_MMAP");
}
