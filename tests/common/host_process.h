// Test helpers shared by the suites that drive the real st-host binary (tests/train, tests/validate):
// running a shell command with its output captured, the st-host invocation that sees only the
// build tree's plugins, and small file helpers. Header-only; include as "../common/host_process.h".
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace st_test {

struct Proc {
    int code = -1;    ///< exit status, or 128 + signal
    std::string out;  ///< stdout and stderr together
};

/// Runs a shell command; captures stdout and stderr together.
inline Proc shell(const std::string& cmd) {
    Proc r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

/// "st-host" with only the build tree's plugins (no ST_PLUGIN_PATH, no installed plugins).
inline std::string host_prefix() {
    return std::string("ST_PLUGIN_PATH= ") + ST_HOST_EXE + " --no-install-plugins --plugin-dir '" +
           ST_TEST_PLUGIN_DIR + "' ";
}

inline std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
}

}  // namespace st_test
