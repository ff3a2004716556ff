#pragma once
// A minimal JSON writer for the CLI's --json output: one object, keys in the order written.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace recur_cli {

class json_writer {
  public:
    json_writer &begin_object() { sep(); out_ += '{'; first_ = true; return *this; }
    json_writer &end_object() { out_ += '}'; first_ = false; return *this; }
    json_writer &begin_array() { sep(); out_ += '['; first_ = true; return *this; }
    json_writer &end_array() { out_ += ']'; first_ = false; return *this; }
    json_writer &key(const std::string &k) {
        sep();
        string_literal(k);
        out_ += ':';
        first_ = true; // the value follows without a comma
        return *this;
    }
    json_writer &value(const std::string &s) { sep(); string_literal(s); return *this; }
    json_writer &value(const char *s) { return value(std::string(s)); }
    json_writer &value(bool b) { sep(); out_ += b ? "true" : "false"; return *this; }
    json_writer &value(int64_t v) { sep(); out_ += std::to_string(v); return *this; }
    json_writer &value(int v) { return value(int64_t(v)); }
    json_writer &value(uint64_t v) { sep(); out_ += std::to_string(v); return *this; }
    json_writer &value(double v) {
        sep();
        if (!std::isfinite(v)) { out_ += "null"; return *this; }
        char buf[32];
        snprintf(buf, sizeof buf, "%.6g", v);
        out_ += buf;
        return *this;
    }
    json_writer &value(float v) { return value(double(v)); }
    template <typename T> json_writer &field(const std::string &k, const T &v) { key(k); return value(v); }
    template <typename T> json_writer &array(const std::string &k, const std::vector<T> &vs) {
        key(k);
        begin_array();
        for (auto &v : vs) value(v);
        return end_array();
    }
    const std::string &str() const { return out_; }

  private:
    void sep() {
        if (!first_) out_ += ',';
        first_ = false;
    }
    void string_literal(const std::string &s) {
        out_ += '"';
        for (unsigned char c : s) {
            switch (c) {
            case '"': out_ += "\\\""; break;
            case '\\': out_ += "\\\\"; break;
            case '\n': out_ += "\\n"; break;
            case '\r': out_ += "\\r"; break;
            case '\t': out_ += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof buf, "\\u%04x", c);
                    out_ += buf;
                } else {
                    out_ += char(c); // UTF-8 passes through; invalid bytes are replaced before writing
                }
            }
        }
        out_ += '"';
    }
    std::string out_;
    bool first_ = true;
};

// Replaces invalid UTF-8 sequences with U+FFFD so JSON output is always valid.
std::string sanitize_utf8(const std::string &s);

} // namespace recur_cli
