#include "st/files.h"
#include "st/json_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

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

std::string read_file(const std::filesystem::path& path) {
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

nlohmann::json parse_json_text(std::string_view text, const std::string& origin, const std::string& component,
                               const std::string& phase, const JsonLimits& limits) {
    check_json_limits(text, origin, component, phase, limits);
    try {
        return nlohmann::json::parse(quote_python_non_finite(std::string(text)));
    } catch (const nlohmann::json::exception& e) {
        fail(component, phase, "'{}' is not valid JSON: {}", origin, e.what());
    }
}

nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& component,
                              const std::string& phase) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(component, phase, "cannot open '{}': {}", path.string(), std::strerror(errno));
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_json_text(buffer.str(), path.string(), component, phase);
}

}  // namespace st::sdk
