// GGUF reader. The file is untrusted: every count, length, offset and dimension is checked
// against the bytes that remain before it is used, and errors name what was being read.
#include "recur/gguf.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace recur {

namespace {

constexpr uint32_t gguf_magic = 0x46554747; // "GGUF" little-endian
// Limits that no real model reaches; they turn absurd counts into errors before allocation.
constexpr uint64_t max_kv_count = 1u << 20;
constexpr uint64_t max_tensor_count = 1u << 20;
constexpr uint64_t max_string_bytes = 1u << 26;
constexpr uint64_t max_array_elems = 1u << 26;
constexpr uint32_t max_dims = 4;
constexpr int max_array_depth = 2;

const char *value_type_name(gguf_value_type t) {
    switch (t) {
    case gguf_value_type::UINT8: return "uint8";
    case gguf_value_type::INT8: return "int8";
    case gguf_value_type::UINT16: return "uint16";
    case gguf_value_type::INT16: return "int16";
    case gguf_value_type::UINT32: return "uint32";
    case gguf_value_type::INT32: return "int32";
    case gguf_value_type::FLOAT32: return "float32";
    case gguf_value_type::BOOL: return "bool";
    case gguf_value_type::STRING: return "string";
    case gguf_value_type::ARRAY: return "array";
    case gguf_value_type::UINT64: return "uint64";
    case gguf_value_type::INT64: return "int64";
    case gguf_value_type::FLOAT64: return "float64";
    }
    return "unknown";
}

// Bounds-checked little-endian cursor over the file image.
class cursor {
  public:
    cursor(const uint8_t *base, size_t size) : base_(base), size_(size) {}
    size_t pos() const { return pos_; }

    template <typename T> T read(const char *what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string read_string(const char *what) {
        uint64_t n = read<uint64_t>(what);
        if (n > max_string_bytes)
            fail(std::string("string length ") + std::to_string(n) + " of " + what + " is absurd");
        need(n, what);
        std::string s(reinterpret_cast<const char *>(base_ + pos_), n);
        pos_ += n;
        return s;
    }
    [[noreturn]] void fail(const std::string &msg) const {
        throw format_error("GGUF: " + msg + " (at byte offset " + std::to_string(pos_) + ")");
    }

  private:
    void need(uint64_t n, const char *what) const {
        if (n > size_ - pos_)
            fail(std::string("file ends while reading ") + what + " (need " + std::to_string(n) +
                 " bytes, " + std::to_string(size_ - pos_) + " left)");
    }
    const uint8_t *base_;
    size_t size_;
    size_t pos_ = 0;
};

gguf_value read_value(cursor &c, gguf_value_type type, const std::string &key, int depth) {
    gguf_value v;
    v.type = type;
    switch (type) {
    case gguf_value_type::UINT8: v.scalar = int64_t(c.read<uint8_t>(key.c_str())); break;
    case gguf_value_type::INT8: v.scalar = int64_t(c.read<int8_t>(key.c_str())); break;
    case gguf_value_type::UINT16: v.scalar = int64_t(c.read<uint16_t>(key.c_str())); break;
    case gguf_value_type::INT16: v.scalar = int64_t(c.read<int16_t>(key.c_str())); break;
    case gguf_value_type::UINT32: v.scalar = int64_t(c.read<uint32_t>(key.c_str())); break;
    case gguf_value_type::INT32: v.scalar = int64_t(c.read<int32_t>(key.c_str())); break;
    case gguf_value_type::UINT64: v.scalar = c.read<uint64_t>(key.c_str()); break;
    case gguf_value_type::INT64: v.scalar = c.read<int64_t>(key.c_str()); break;
    case gguf_value_type::FLOAT32: v.scalar = double(c.read<float>(key.c_str())); break;
    case gguf_value_type::FLOAT64: v.scalar = c.read<double>(key.c_str()); break;
    case gguf_value_type::BOOL: {
        uint8_t b = c.read<uint8_t>(key.c_str());
        if (b > 1) c.fail("bool value " + std::to_string(b) + " of key '" + key + "'");
        v.scalar = b != 0;
        break;
    }
    case gguf_value_type::STRING: v.scalar = c.read_string(key.c_str()); break;
    case gguf_value_type::ARRAY: {
        if (depth >= max_array_depth) c.fail("arrays nested too deep in key '" + key + "'");
        uint32_t raw = c.read<uint32_t>(key.c_str());
        if (raw > uint32_t(gguf_value_type::FLOAT64))
            c.fail("unknown array element type " + std::to_string(raw) + " of key '" + key + "'");
        v.array_type = gguf_value_type(raw);
        uint64_t n = c.read<uint64_t>(key.c_str());
        if (n > max_array_elems) c.fail("array length " + std::to_string(n) + " of key '" + key + "' is absurd");
        v.array.reserve(std::min<uint64_t>(n, 1u << 16));
        for (uint64_t i = 0; i < n; ++i) v.array.push_back(read_value(c, v.array_type, key, depth + 1));
        break;
    }
    default: c.fail("unknown value type " + std::to_string(uint32_t(type)) + " of key '" + key + "'");
    }
    return v;
}

} // namespace

int64_t gguf_value::as_int() const {
    if (auto *i = std::get_if<int64_t>(&scalar)) return *i;
    if (auto *u = std::get_if<uint64_t>(&scalar)) {
        if (*u > uint64_t(std::numeric_limits<int64_t>::max())) throw format_error("GGUF: integer value too large");
        return int64_t(*u);
    }
    if (auto *b = std::get_if<bool>(&scalar)) return *b;
    throw format_error(std::string("GGUF: expected an integer, found ") + value_type_name(type));
}

double gguf_value::as_float() const {
    if (auto *d = std::get_if<double>(&scalar)) return *d;
    if (std::holds_alternative<int64_t>(scalar) || std::holds_alternative<uint64_t>(scalar)) return double(as_int());
    throw format_error(std::string("GGUF: expected a number, found ") + value_type_name(type));
}

bool gguf_value::as_bool() const {
    if (auto *b = std::get_if<bool>(&scalar)) return *b;
    if (std::holds_alternative<int64_t>(scalar)) return std::get<int64_t>(scalar) != 0;
    throw format_error(std::string("GGUF: expected a bool, found ") + value_type_name(type));
}

const std::string &gguf_value::as_string() const {
    if (auto *s = std::get_if<std::string>(&scalar)) return *s;
    throw format_error(std::string("GGUF: expected a string, found ") + value_type_name(type));
}

int64_t gguf_tensor_info::n_elements() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return n;
}

namespace {

// ---- SIGBUS guard for mapped model files -------------------------------------------------------
// A mapped file truncated by another process raises SIGBUS on the first touch of a page past its
// new end, anywhere in the engine (any thread, any kernel). That cannot be unwound safely, so the
// handler's job is to say what happened in one line and exit with EX_IOERR instead of dumping
// core. Faults outside every registered mapping go to the previous handler (or the default).
struct guarded_mapping {
    std::atomic<uintptr_t> begin{0}, end{0};
    char message[600];
    size_t message_len = 0;
};
constexpr int k_max_guarded = 64;
guarded_mapping g_guarded[k_max_guarded];
std::mutex g_guard_mutex; // registration only; the handler reads the atomics
struct sigaction g_previous_sigbus {};

void on_sigbus(int sig, siginfo_t *info, void *uctx) {
    const auto addr = reinterpret_cast<uintptr_t>(info ? info->si_addr : nullptr);
    for (auto &g : g_guarded) {
        const uintptr_t b = g.begin.load(std::memory_order_acquire);
        if (b != 0 && addr >= b && addr < g.end.load(std::memory_order_acquire)) {
            ssize_t ignored = ::write(STDERR_FILENO, g.message, g.message_len);
            (void)ignored;
            _exit(74); // EX_IOERR
        }
    }
    // Not ours: hand over to whoever was there before, or die the default way.
    if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
        if (g_previous_sigbus.sa_sigaction) return g_previous_sigbus.sa_sigaction(sig, info, uctx);
    } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN &&
               g_previous_sigbus.sa_handler != nullptr) {
        return g_previous_sigbus.sa_handler(sig);
    }
    signal(SIGBUS, SIG_DFL); // returning re-runs the faulting access, which now kills the process
}

void guard_mapping(const uint8_t *base, size_t size, const std::string &path) {
    static std::once_flag installed;
    std::call_once(installed, [] {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, &g_previous_sigbus);
    });
    std::lock_guard<std::mutex> lock(g_guard_mutex);
    for (auto &g : g_guarded) {
        if (g.begin.load(std::memory_order_relaxed) != 0) continue;
        const std::string msg = "recur: the model file '" + path +
                                "' was truncated or overwritten by another program while in use; "
                                "stopping (exit 74). Everything already saved is intact; restore the "
                                "file and start again.\n";
        g.message_len = std::min(msg.size(), sizeof g.message);
        std::memcpy(g.message, msg.data(), g.message_len);
        g.end.store(reinterpret_cast<uintptr_t>(base) + size, std::memory_order_release);
        g.begin.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
        return;
    }
    // More than 64 files mapped at once: the rest are unguarded (a crash is still possible).
}

void unguard_mapping(const uint8_t *base) {
    std::lock_guard<std::mutex> lock(g_guard_mutex);
    for (auto &g : g_guarded)
        if (g.begin.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(base)) {
            g.begin.store(0, std::memory_order_release);
            g.end.store(0, std::memory_order_release);
        }
}

uint8_t *alloc_aligned(size_t size) {
    const size_t rounded = (std::max<size_t>(size, 1) + 63) / 64 * 64;
    auto *p = static_cast<uint8_t *>(std::aligned_alloc(64, rounded));
    if (!p) throw error("out of memory: cannot allocate " + std::to_string(size >> 20) + " MiB for a model file");
    return p;
}

bool read_by_default(size_t size) {
    if (const char *env = std::getenv("RECUR_MMAP")) {
        if (std::strcmp(env, "1") == 0) return false;
        if (std::strcmp(env, "0") == 0) return true;
    }
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const double available = pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
    return size <= (size_t(2) << 30) && double(size) <= available / 4;
}

} // namespace

void gguf_file::free_deleter::operator()(uint8_t *p) const { std::free(p); }

std::unique_ptr<gguf_file> gguf_file::open(const std::string &path, gguf_load how) {
    std::unique_ptr<gguf_file> f(new gguf_file());
    f->path_ = path;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error("cannot open model file '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error("model path '" + path + "' is not a regular file");
    }
    f->size_ = size_t(st.st_size);
    if (f->size_ == 0) {
        ::close(fd);
        throw format_error("GGUF: '" + path + "' is empty");
    }
    const bool read_it = how == gguf_load::read || (how == gguf_load::automatic && read_by_default(f->size_));
    if (read_it) {
        try {
            f->owned_.reset(alloc_aligned(f->size_));
        } catch (...) {
            ::close(fd);
            throw;
        }
        size_t done = 0;
        while (done < f->size_) {
            const ssize_t got = ::pread(fd, f->owned_.get() + done, f->size_ - done, off_t(done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                const std::string why = got < 0 ? std::strerror(errno) : "the file became shorter while being read";
                ::close(fd);
                throw error("cannot read model file '" + path + "': " + why);
            }
            done += size_t(got);
        }
        ::close(fd);
        f->base_ = f->owned_.get();
    } else {
        // MAP_PRIVATE read-only: the weights are shared page cache, nothing is copied.
        void *p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw error("cannot map model file '" + path + "': " + std::strerror(errno));
        f->base_ = static_cast<const uint8_t *>(p);
        f->mapped_ = true;
        guard_mapping(f->base_, f->size_, path);
    }
    try {
        f->parse();
    } catch (const format_error &e) {
        throw format_error(std::string(e.what()) + " in '" + path + "'");
    }
    return f;
}

std::unique_ptr<gguf_file> gguf_file::from_memory(const void *bytes, size_t size) {
    std::unique_ptr<gguf_file> f(new gguf_file());
    f->path_ = "<memory>";
    f->owned_.reset(alloc_aligned(size));
    if (size) std::memcpy(f->owned_.get(), bytes, size);
    f->base_ = f->owned_.get();
    f->size_ = size;
    f->parse();
    return f;
}

gguf_file::~gguf_file() {
    if (mapped_) {
        unguard_mapping(base_);
        munmap(const_cast<uint8_t *>(base_), size_);
    }
}

void gguf_file::parse() {
    cursor c(base_, size_);
    uint32_t magic = c.read<uint32_t>("magic");
    if (magic != gguf_magic) c.fail("not a GGUF file (wrong magic)");
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3)
        c.fail("unsupported GGUF version " + std::to_string(version_) + " (2 and 3 are supported)");
    uint64_t n_tensors = c.read<uint64_t>("tensor count");
    uint64_t n_kv = c.read<uint64_t>("metadata count");
    if (n_tensors > max_tensor_count) c.fail("tensor count " + std::to_string(n_tensors) + " is absurd");
    if (n_kv > max_kv_count) c.fail("metadata count " + std::to_string(n_kv) + " is absurd");

    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.read_string("metadata key");
        uint32_t raw = c.read<uint32_t>("metadata value type");
        if (raw > uint32_t(gguf_value_type::FLOAT64))
            c.fail("unknown value type " + std::to_string(raw) + " of key '" + key + "'");
        gguf_value v = read_value(c, gguf_value_type(raw), key, 0);
        if (kv_.count(key)) c.fail("duplicate metadata key '" + key + "'");
        kv_.emplace(std::move(key), std::move(v));
    }

    if (auto *a = find("general.alignment")) {
        int64_t al = a->as_int();
        if (al <= 0 || al > (1 << 20) || (al & (al - 1)) != 0)
            c.fail("general.alignment " + std::to_string(al) + " is not a power of two");
        alignment_ = size_t(al);
    }

    tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
        gguf_tensor_info t;
        t.name = c.read_string("tensor name");
        uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
        if (n_dims == 0 || n_dims > max_dims)
            c.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions");
        // Product of dimensions must stay far below overflow: 2^60 elements is beyond any file.
        long double product = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            int64_t dim = c.read<int64_t>("tensor dimension");
            if (dim <= 0) c.fail("tensor '" + t.name + "' has dimension " + std::to_string(dim));
            product *= dim;
            if (product > (long double)(1ull << 60)) c.fail("tensor '" + t.name + "' has absurd dimensions");
            t.ne.push_back(dim);
        }
        uint32_t raw_type = c.read<uint32_t>("tensor type");
        auto tr = type_traits(raw_type);
        if (tr.block_elems == 0)
            c.fail("tensor '" + t.name + "' has unsupported type " + type_name(raw_type));
        t.type = tensor_type(raw_type);
        if (t.ne[0] % tr.block_elems != 0)
            c.fail("tensor '" + t.name + "' row length " + std::to_string(t.ne[0]) + " is not a multiple of " +
                   std::to_string(tr.block_elems) + " for type " + tr.name);
        t.offset = c.read<uint64_t>("tensor offset");
        if (t.offset % alignment_ != 0)
            c.fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned");
        t.n_bytes = size_t(t.n_elements() / tr.block_elems) * tr.block_bytes;
        if (tensor_index_.count(t.name)) c.fail("duplicate tensor '" + t.name + "'");
        tensor_index_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }

    size_t header_end = c.pos();
    data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
    if (n_tensors > 0 && data_offset_ > size_) c.fail("file ends before the tensor data section");
    for (auto &t : tensors_) {
        uint64_t avail = size_ - std::min(size_, data_offset_);
        if (t.offset > avail || t.n_bytes > avail - t.offset)
            throw format_error("GGUF: tensor '" + t.name + "' (" + std::to_string(t.n_bytes) + " bytes at data offset " +
                               std::to_string(t.offset) + ") points past the end of the file (" +
                               std::to_string(size_) + " bytes)");
        t.data = base_ + data_offset_ + t.offset;
    }
}

const gguf_value *gguf_file::find(const std::string &key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void missing(const std::string &key) { throw format_error("GGUF: required key '" + key + "' is missing"); }
template <typename F> auto with_key(const std::string &key, F f) -> decltype(f()) {
    try {
        return f();
    } catch (const format_error &e) {
        throw format_error(std::string(e.what()) + " for key '" + key + "'");
    }
}
} // namespace

int64_t gguf_file::get_int(const std::string &key) const {
    auto *v = find(key);
    if (!v) missing(key);
    return with_key(key, [&] { return v->as_int(); });
}
int64_t gguf_file::get_int(const std::string &key, int64_t fallback) const {
    auto *v = find(key);
    return v ? with_key(key, [&] { return v->as_int(); }) : fallback;
}
double gguf_file::get_float(const std::string &key, double fallback) const {
    auto *v = find(key);
    return v ? with_key(key, [&] { return v->as_float(); }) : fallback;
}
bool gguf_file::get_bool(const std::string &key, bool fallback) const {
    auto *v = find(key);
    return v ? with_key(key, [&] { return v->as_bool(); }) : fallback;
}
std::string gguf_file::get_string(const std::string &key) const {
    auto *v = find(key);
    if (!v) missing(key);
    return with_key(key, [&] { return v->as_string(); });
}
std::string gguf_file::get_string(const std::string &key, const std::string &fallback) const {
    auto *v = find(key);
    return v ? with_key(key, [&] { return v->as_string(); }) : fallback;
}
std::vector<std::string> gguf_file::get_string_array(const std::string &key) const {
    std::vector<std::string> out;
    auto *v = find(key);
    if (!v) return out;
    if (!v->is_array()) throw format_error("GGUF: key '" + key + "' is not an array");
    out.reserve(v->array.size());
    for (auto &e : v->array) out.push_back(with_key(key, [&] { return e.as_string(); }));
    return out;
}
std::vector<double> gguf_file::get_float_array(const std::string &key) const {
    std::vector<double> out;
    auto *v = find(key);
    if (!v) return out;
    if (!v->is_array()) throw format_error("GGUF: key '" + key + "' is not an array");
    out.reserve(v->array.size());
    for (auto &e : v->array) out.push_back(with_key(key, [&] { return e.as_float(); }));
    return out;
}
std::vector<int64_t> gguf_file::get_int_array(const std::string &key) const {
    std::vector<int64_t> out;
    auto *v = find(key);
    if (!v) return out;
    if (!v->is_array()) throw format_error("GGUF: key '" + key + "' is not an array");
    out.reserve(v->array.size());
    for (auto &e : v->array) out.push_back(with_key(key, [&] { return e.as_int(); }));
    return out;
}

const gguf_tensor_info *gguf_file::find_tensor(const std::string &name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

} // namespace recur
