#include "train/file_hash.h"

#include <fmt/format.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "st/error.h"

namespace st::host::train {

namespace {

// xxHash's primes (xxhash.h: XXH_PRIME64_1..5).
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

// The algorithm reads its input as little-endian words; memcpy keeps unaligned reads defined.
static_assert(std::endian::native == std::endian::little, "XXH64 here reads words as little-endian");

uint64_t read64(const unsigned char* p) {
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

uint32_t read32(const unsigned char* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

uint64_t round(uint64_t acc, uint64_t input) {
    acc += input * kP2;
    acc = std::rotl(acc, 31);
    return acc * kP1;
}

uint64_t merge_round(uint64_t acc, uint64_t v) {
    acc ^= round(0, v);
    return acc * kP1 + kP4;
}

// One 32-byte stripe into the four lanes.
void consume(uint64_t* v, const unsigned char* p) {
    v[0] = round(v[0], read64(p));
    v[1] = round(v[1], read64(p + 8));
    v[2] = round(v[2], read64(p + 16));
    v[3] = round(v[3], read64(p + 24));
}

}  // namespace

Xxh64::Xxh64() : v_{kP1 + kP2, kP2, 0, 0 - kP1} {}

void Xxh64::update(const void* data, size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    total_ += size;
    if (buffered_ + size < 32) {
        if (size > 0) std::memcpy(buffer_ + buffered_, p, size);
        buffered_ += size;
        return;
    }
    if (buffered_ > 0) {
        const size_t take = 32 - buffered_;
        std::memcpy(buffer_ + buffered_, p, take);
        consume(v_, buffer_);
        p += take;
        size -= take;
        buffered_ = 0;
    }
    for (; size >= 32; p += 32, size -= 32) consume(v_, p);
    if (size > 0) std::memcpy(buffer_, p, size);
    buffered_ = size;
}

uint64_t Xxh64::digest() const {
    uint64_t h;
    if (total_ >= 32) {
        h = std::rotl(v_[0], 1) + std::rotl(v_[1], 7) + std::rotl(v_[2], 12) + std::rotl(v_[3], 18);
        for (uint64_t v : v_) h = merge_round(h, v);
    } else {
        h = v_[2] + kP5;  // v_[2] is the seed (0) until a stripe was consumed
    }
    h += total_;
    const unsigned char* p = buffer_;
    size_t n = buffered_;
    for (; n >= 8; p += 8, n -= 8) {
        h ^= round(0, read64(p));
        h = std::rotl(h, 27) * kP1 + kP4;
    }
    if (n >= 4) {
        h ^= static_cast<uint64_t>(read32(p)) * kP1;
        h = std::rotl(h, 23) * kP2 + kP3;
        p += 4;
        n -= 4;
    }
    for (; n > 0; ++p, --n) {
        h ^= *p * kP5;
        h = std::rotl(h, 11) * kP1;
    }
    h ^= h >> 33;
    h *= kP2;
    h ^= h >> 29;
    h *= kP3;
    h ^= h >> 32;
    return h;
}

uint64_t xxh64_file(const std::filesystem::path& path) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) fail("host.checkpoint", "checksum", "cannot open {}: {}", path.string(), std::strerror(errno));
    std::vector<unsigned char> buf(size_t{1} << 20);
    Xxh64 h;
    for (;;) {
        const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
        h.update(buf.data(), n);
        if (n < buf.size()) break;
    }
    if (std::ferror(f.get()))
        fail("host.checkpoint", "checksum", "cannot read {}: {}", path.string(), std::strerror(errno));
    return h.digest();
}

std::string xxh64_hex(uint64_t hash) {
    return fmt::format("{:016x}", hash);
}

}  // namespace st::host::train
