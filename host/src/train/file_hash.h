// XXH64 (xxHash, 64-bit, seed 0) over a file's bytes: the content checksum checkpoint manifests record
// per file and resume checks. Follows the reference algorithm of github.com/Cyan4973/xxHash
// (xxhash.h, XXH64 and its streaming state, doc/xxhash_spec.md); the same values as `xxhsum -H1` and
// python's xxhash.xxh64. Not a cryptographic hash: it detects damage (bit flips, bytes overwritten,
// a torn write), not deliberate tampering.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace st::host::train {

/// Streaming XXH64: update() any number of times with consecutive pieces, then digest(); the result
/// does not depend on how the input was split.
class Xxh64 {
  public:
    Xxh64();
    void update(const void* data, size_t size);
    uint64_t digest() const;

  private:
    uint64_t v_[4];
    uint64_t total_ = 0;
    unsigned char buffer_[32];
    size_t buffered_ = 0;
};

/// XXH64 of a whole file, read in 1 MiB pieces; st::Error naming the file when it cannot be read.
uint64_t xxh64_file(const std::filesystem::path& path);

/// 16 lower-case hex digits, as xxhsum prints them.
std::string xxh64_hex(uint64_t hash);

}  // namespace st::host::train
