// Fuzz targets of st's parsers of untrusted input (issue 18; docs/security.md).
//
// Each target is a function that takes one input and either accepts it or throws st::Error, the
// refusal st shows its user. Anything else (a crash, a sanitizer report, another exception type, a
// hang, a broken invariant the target checks) is a bug. One function serves two builds:
// - the libFuzzer build (clang, ASan + UBSan; tests/fuzz/libfuzzer, scripts/fuzz.sh) defines
//   ST_LIBFUZZER, and each fuzz_<target>.cpp then defines LLVMFuzzerTestOneInput through
//   ST_FUZZ_ENTRY;
// - the ordinary GCC build replays every seed and regression file through the same functions
//   (tests/fuzz/test_fuzz_regressions.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace st::fuzz {

using Target = void (*)(std::string_view input);

void safetensors_header(std::string_view input);
void config_file(std::string_view input);
void dataset_config(std::string_view input);
void checkpoint_manifest(std::string_view input);
void lora_keys(std::string_view input);

/// A private scratch folder of this process (created on first use, removed at exit).
const std::filesystem::path& scratch_dir();
/// Writes `bytes` to scratch_dir() / name (replacing it) and returns the path.
std::filesystem::path write_scratch(const std::string& name, std::string_view bytes);

/// Runs `target` on one input the way the libFuzzer entry does: st::Error is a refusal (fine), any
/// other exception is reported on stderr and aborts, so libFuzzer records the input as a crash.
int run_one(Target target, const uint8_t* data, size_t size);

/// st::Error is fine; returns "" then, or the type and message of any other exception.
std::string run_checked(Target target, std::string_view input);

/// Throws std::logic_error (not st::Error, so the input counts as a bug): a target's invariant does not
/// hold for the current input.
[[noreturn]] void invariant_failed(const std::string& message);

}  // namespace st::fuzz

#ifdef ST_LIBFUZZER
#define ST_FUZZ_ENTRY(target)                                                 \
    extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { \
        return st::fuzz::run_one(&(target), data, size);                      \
    }
#else
#define ST_FUZZ_ENTRY(target)
#endif
