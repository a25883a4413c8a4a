#include "harness.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <stdexcept>
#include <typeinfo>

#include <unistd.h>

#include "st/error.h"
#include "st/log.h"

namespace st::fuzz {

namespace fs = std::filesystem;

namespace {

fs::path make_scratch_dir() {
    // mkdtemp(3) replaces the six trailing X of its template with a unique suffix.
    std::string tmpl = (fs::temp_directory_path() / "st-fuzz-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
        std::perror("st fuzz: mkdtemp");
        std::abort();
    }
    const fs::path dir = tmpl;
    static const fs::path* owned = new fs::path(dir);
    std::atexit([] {
        std::error_code ec;
        fs::remove_all(*owned, ec);
    });
    return dir;
}

}  // namespace

const fs::path& scratch_dir() {
    static const fs::path dir = make_scratch_dir();
    return dir;
}

fs::path write_scratch(const std::string& name, std::string_view bytes) {
    const fs::path path = scratch_dir() / name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) invariant_failed("cannot write the scratch file " + path.string());
    return path;
}

std::string run_checked(Target target, std::string_view input) {
    // Info lines (one per dataset, per checkpoint) would dominate the time of a fuzz iteration.
    static const bool quiet = (log::set_level(log::Level::off), true);
    (void)quiet;
    try {
        target(input);
    } catch (const Error& e) {
        // A refusal naming the problem: what hostile input must get. ST_FUZZ_VERBOSE=1 shows it (to
        // check that a seed reaches what it is meant to reach).
        static const bool verbose = std::getenv("ST_FUZZ_VERBOSE") != nullptr;
        if (verbose) std::fprintf(stderr, "st fuzz: refused: %s\n", e.what());
    } catch (const std::exception& e) {
        return std::string(typeid(e).name()) + ": " + e.what();
    } catch (...) {
        return "an exception that is not a std::exception";
    }
    return {};
}

int run_one(Target target, const uint8_t* data, size_t size) {
    const std::string problem =
        run_checked(target, std::string_view(reinterpret_cast<const char*>(data), size));
    if (!problem.empty()) {
        std::fprintf(stderr, "st fuzz: not refused with st::Error: %s\n", problem.c_str());
        std::fflush(stderr);
        std::abort();
    }
    return 0;
}

void invariant_failed(const std::string& message) {
    throw std::logic_error("invariant broken: " + message);
}

}  // namespace st::fuzz
