#include "st/files.h"
#include "st/json_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "st/error.h"

namespace st::sdk {

void sync_directory(const std::filesystem::path& dir) {
    int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

void write_file_atomic(const std::filesystem::path& path, const std::string& content) {
    auto tmp = path;
    tmp += fmt::format(".tmp-{}", ::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fail("files", "write", "cannot create '{}' (to write '{}'): {}", tmp.string(), path.string(),
             std::strerror(errno));
    size_t off = 0;
    while (off < content.size()) {
        ssize_t n = ::write(fd, content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            fail("files", "write", "writing '{}' failed: {}", path.string(), std::strerror(err));
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        fail("files", "write", "flushing '{}' failed: {}", path.string(), std::strerror(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        fail("files", "write", "renaming '{}' to '{}' failed: {}", tmp.string(), path.string(),
             std::strerror(err));
    }
    sync_directory(path.parent_path());
}

void require_regular_file(const std::filesystem::path& path, const std::string& what,
                          const std::string& component) {
    struct stat sb {};
    if (::stat(path.c_str(), &sb) != 0)
        fail(component, "open", "cannot open '{}': {}", path.string(), std::strerror(errno));
    if (S_ISREG(sb.st_mode)) return;
    const char* kind = S_ISDIR(sb.st_mode)    ? "a folder"
                       : S_ISFIFO(sb.st_mode) ? "a FIFO (named pipe)"
                       : S_ISCHR(sb.st_mode)  ? "a character device"
                       : S_ISBLK(sb.st_mode)  ? "a block device"
                       : S_ISSOCK(sb.st_mode) ? "a socket"
                                              : "not a regular file";
    fail(component, "open", "'{}' is {}, expected {} (a regular file)", path.string(), kind, what);
}

std::string read_file(const std::filesystem::path& path) {
    require_regular_file(path, "a file to read");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("files", "read", "cannot open '{}': {}", path.string(), std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string quote_python_non_finite(const std::string& text) {
    // Outside string literals, the bare tokens Python's json module writes for non-finite floats
    // (-Infinity, Infinity, NaN) become the strings "-Infinity", "Infinity", "NaN".
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            out += c;
            if (c == '\\' && i + 1 < text.size()) {
                out += text[++i];
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
            out += c;
            continue;
        }
        bool replaced = false;
        for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
            const size_t n = std::strlen(token);
            if (text.compare(i, n, token) == 0) {
                out += '"';
                out += token;
                out += '"';
                i += n - 1;
                replaced = true;
                break;
            }
        }
        if (!replaced) out += c;
    }
    return out;
}

void check_json_limits(std::string_view text, const std::string& origin, const std::string& component,
                       const std::string& phase, const JsonLimits& limits) {
    if (text.size() > limits.max_bytes)
        fail(component, phase, "'{}' is {} bytes of JSON; st reads at most {} MiB", origin, text.size(),
             limits.max_bytes >> 20);
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limits.max_depth)
                fail(component, phase,
                     "'{}' nests JSON more than {} levels deep (at byte {}); st refuses it before parsing "
                     "(no configuration or checkpoint file comes close)",
                     origin, limits.max_depth, i);
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
}

namespace {

// SAX handler that only tracks the key path, to say where a parse error is.
class PathTracker {
  public:
    bool null() { return value(); }
    bool boolean(bool) { return value(); }
    bool number_integer(nlohmann::json::number_integer_t) { return value(); }
    bool number_unsigned(nlohmann::json::number_unsigned_t) { return value(); }
    bool number_float(nlohmann::json::number_float_t, const std::string&) { return value(); }
    bool string(std::string&) { return value(); }
    bool binary(nlohmann::json::binary_t&) { return value(); }
    bool start_object(std::size_t) { return frames_.push_back({false, 0, {}}), true; }
    bool end_object() { return frames_.pop_back(), value(); }
    bool start_array(std::size_t) { return frames_.push_back({true, 0, {}}), true; }
    bool end_array() { return frames_.pop_back(), value(); }
    bool key(std::string& k) { return frames_.back().key = k, true; }
    bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) {
        error_at_ = position;
        for (const Frame& f : frames_) {
            if (f.array)
                path_ += fmt::format("[{}]", f.index);
            else if (!f.key.empty())
                path_ += (path_.empty() ? "" : ".") + f.key;
        }
        return false;
    }

    std::optional<size_t> error_at_;
    std::string path_;

  private:
    struct Frame {
        bool array;
        size_t index;
        std::string key;
    };
    bool value() {
        if (!frames_.empty() && frames_.back().array) ++frames_.back().index;
        return true;
    }
    std::vector<Frame> frames_;
};

}  // namespace

std::string json_error_location(std::string_view text) {
    PathTracker tracker;
    try {
        nlohmann::json::sax_parse(text.begin(), text.end(), &tracker);
    } catch (const std::exception&) {
    }
    if (!tracker.error_at_) return {};
    // nlohmann counts the characters read, the failing one included.
    const size_t at = std::min(*tracker.error_at_ > 0 ? *tracker.error_at_ - 1 : 0, text.size());
    size_t line = 1, column = 1;
    for (size_t i = 0; i < at; ++i) {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
    }
    std::string where = fmt::format("line {}, column {}", line, column);
    if (!tracker.path_.empty()) where += fmt::format(", in '{}'", tracker.path_);
    return where;
}

nlohmann::json parse_json_text(std::string_view text, const std::string& origin, const std::string& component,
                               const std::string& phase, const JsonLimits& limits) {
    check_json_limits(text, origin, component, phase, limits);
    const std::string quoted = quote_python_non_finite(std::string(text));
    try {
        return nlohmann::json::parse(quoted);
    } catch (const nlohmann::json::exception& e) {
        const std::string where = json_error_location(quoted);
        fail(component, phase, "'{}' is not valid JSON{}: {}", origin, where.empty() ? "" : " at " + where,
             e.what());
    }
}

nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& component,
                              const std::string& phase) {
    require_regular_file(path, "a JSON file", component);
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(component, phase, "cannot open '{}': {}", path.string(), std::strerror(errno));
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_json_text(buffer.str(), path.string(), component, phase);
}

}  // namespace st::sdk
