#include "recur/gguf_writer.h"

#include "atomic_file.h"

#include <cstdio>

namespace recur {

namespace {

constexpr size_t alignment = 32;

class byte_sink {
  public:
    explicit byte_sink(FILE *f) : f_(f) {}
    void bytes(const void *p, size_t n) {
        if (n && fwrite(p, 1, n, f_) != n) ok_ = false;
        written_ += n;
    }
    template <typename T> void put(T v) { bytes(&v, sizeof v); }
    void str(const std::string &s) {
        put<uint64_t>(s.size());
        bytes(s.data(), s.size());
    }
    void pad() {
        static const uint8_t zeros[alignment] = {};
        bytes(zeros, (alignment - written_ % alignment) % alignment);
    }
    bool ok() const { return ok_; }

  private:
    FILE *f_;
    size_t written_ = 0;
    bool ok_ = true;
};

void write_value(byte_sink &s, const gguf_value &v, bool with_type) {
    if (with_type) s.put<uint32_t>(uint32_t(v.type));
    switch (v.type) {
    case gguf_value_type::UINT8: s.put<uint8_t>(uint8_t(v.as_int())); break;
    case gguf_value_type::INT8: s.put<int8_t>(int8_t(v.as_int())); break;
    case gguf_value_type::UINT16: s.put<uint16_t>(uint16_t(v.as_int())); break;
    case gguf_value_type::INT16: s.put<int16_t>(int16_t(v.as_int())); break;
    case gguf_value_type::UINT32: s.put<uint32_t>(uint32_t(v.as_int())); break;
    case gguf_value_type::INT32: s.put<int32_t>(int32_t(v.as_int())); break;
    case gguf_value_type::UINT64:
        s.put<uint64_t>(std::holds_alternative<uint64_t>(v.scalar) ? std::get<uint64_t>(v.scalar) : uint64_t(v.as_int()));
        break;
    case gguf_value_type::INT64: s.put<int64_t>(v.as_int()); break;
    case gguf_value_type::FLOAT32: s.put<float>(float(v.as_float())); break;
    case gguf_value_type::FLOAT64: s.put<double>(v.as_float()); break;
    case gguf_value_type::BOOL: s.put<uint8_t>(v.as_bool() ? 1 : 0); break;
    case gguf_value_type::STRING: s.str(v.as_string()); break;
    case gguf_value_type::ARRAY:
        s.put<uint32_t>(uint32_t(v.array_type));
        s.put<uint64_t>(v.array.size());
        for (auto &e : v.array) write_value(s, e, false);
        break;
    }
}

gguf_value scalar_value(gguf_value_type t, std::variant<int64_t, uint64_t, double, bool, std::string> x) {
    gguf_value v;
    v.type = t;
    v.scalar = std::move(x);
    return v;
}

} // namespace

void gguf_writer::set(const std::string &key, const gguf_value &value) {
    for (auto &kv : kv_)
        if (kv.first == key) {
            kv.second = value;
            return;
        }
    kv_.emplace_back(key, value);
}
void gguf_writer::set_string(const std::string &k, const std::string &v) { set(k, scalar_value(gguf_value_type::STRING, v)); }
void gguf_writer::set_int32(const std::string &k, int32_t v) { set(k, scalar_value(gguf_value_type::INT32, int64_t(v))); }
void gguf_writer::set_uint32(const std::string &k, uint32_t v) { set(k, scalar_value(gguf_value_type::UINT32, int64_t(v))); }
void gguf_writer::set_float32(const std::string &k, float v) { set(k, scalar_value(gguf_value_type::FLOAT32, double(v))); }
void gguf_writer::set_bool(const std::string &k, bool v) { set(k, scalar_value(gguf_value_type::BOOL, v)); }
void gguf_writer::set_int32_array(const std::string &k, const std::vector<int32_t> &vs) {
    gguf_value a;
    a.type = gguf_value_type::ARRAY;
    a.array_type = gguf_value_type::INT32;
    for (int32_t x : vs) a.array.push_back(scalar_value(gguf_value_type::INT32, int64_t(x)));
    set(k, a);
}
void gguf_writer::set_float32_array(const std::string &k, const std::vector<float> &vs) {
    gguf_value a;
    a.type = gguf_value_type::ARRAY;
    a.array_type = gguf_value_type::FLOAT32;
    for (float x : vs) a.array.push_back(scalar_value(gguf_value_type::FLOAT32, double(x)));
    set(k, a);
}
void gguf_writer::remove(const std::string &key) {
    for (auto it = kv_.begin(); it != kv_.end(); ++it)
        if (it->first == key) {
            kv_.erase(it);
            return;
        }
}

void gguf_writer::copy_metadata(const gguf_file &src, const std::string &skip_prefix) {
    for (auto &[k, v] : src.metadata()) {
        if (!skip_prefix.empty() && k.rfind(skip_prefix, 0) == 0) continue;
        if (k == "general.alignment") continue; // this writer always aligns to 32
        set(k, v);
    }
}

void gguf_writer::add_tensor(const std::string &name, tensor_type type, const std::vector<int64_t> &ne,
                             const void *data, size_t n_bytes) {
    int64_t n = 1;
    for (auto d : ne) n *= d;
    auto tr = type_traits(type);
    if (tr.block_elems == 0 || ne.empty() || ne[0] % tr.block_elems != 0 ||
        size_t(n / tr.block_elems) * tr.block_bytes != n_bytes)
        throw error("gguf_writer: tensor '" + name + "' has " + std::to_string(n_bytes) +
                    " bytes, which does not match its shape and type");
    for (auto &t : tensors_)
        if (t.name == name) throw error("gguf_writer: duplicate tensor '" + name + "'");
    tensors_.push_back({name, type, ne, data, n_bytes, {}});
}

void gguf_writer::add_tensor(const std::string &name, tensor_type type, const std::vector<int64_t> &ne,
                             std::vector<uint8_t> bytes) {
    add_tensor(name, type, ne, bytes.data(), bytes.size());
    tensors_.back().owned = std::move(bytes);
    tensors_.back().data = tensors_.back().owned.data();
}

void gguf_writer::write(const std::string &path) const {
    write_file_atomically(path, "", [&](FILE *f) {
        byte_sink s(f);
        s.put<uint32_t>(0x46554747);
        s.put<uint32_t>(3);
        s.put<uint64_t>(tensors_.size());
        s.put<uint64_t>(kv_.size());
        for (auto &[k, v] : kv_) {
            s.str(k);
            write_value(s, v, true);
        }
        uint64_t offset = 0;
        for (auto &t : tensors_) {
            s.str(t.name);
            s.put<uint32_t>(uint32_t(t.ne.size()));
            for (auto d : t.ne)
                s.put<int64_t>(d);
            s.put<uint32_t>(uint32_t(t.type));
            s.put<uint64_t>(offset);
            offset += (t.n_bytes + alignment - 1) / alignment * alignment;
        }
        s.pad();
        for (auto &t : tensors_) {
            s.bytes(t.data, t.n_bytes);
            s.pad();
        }
        return s.ok();
    });
}

} // namespace recur
