// XXH64 as checkpoint manifests record it: the reference values of xxHash (xxhsum -H1, python-xxhash
// docs) for inputs below, at and beyond one 32-byte stripe, the same value however the input is split
// into update() calls, and a file hashed in 1 MiB pieces equal to its bytes hashed at once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "st/error.h"
#include "train/file_hash.h"

namespace {

namespace fs = std::filesystem;
using st::host::train::Xxh64;

uint64_t xxh64(const std::string& s) {
    Xxh64 h;
    h.update(s.data(), s.size());
    return h.digest();
}

TEST(FileHashTest, MatchesTheReferenceValues) {
    EXPECT_EQ(xxh64(""), 0xEF46DB3751D8E999ULL);
    EXPECT_EQ(xxh64("a"), 0xD24EC4F1A98C6E5BULL);
    EXPECT_EQ(xxh64("abc"), 0x44BC2CF5AD770999ULL);
    EXPECT_EQ(xxh64(std::string(32, 'a')), 0x856E843298F99AD7ULL);  // exactly one stripe
    EXPECT_EQ(xxh64("Nobody inspects the spammish repetition"), 0xFBCEA83C8A378BF1ULL);
    std::string hundred;
    for (int i = 0; i < 100; ++i) hundred.push_back(static_cast<char>(i));
    EXPECT_EQ(xxh64(hundred), 0x6AC1E58032166597ULL);
    EXPECT_EQ(st::host::train::xxh64_hex(0xEF46DB3751D8E999ULL), "ef46db3751d8e999");
    EXPECT_EQ(st::host::train::xxh64_hex(0x1ULL), "0000000000000001");
}

TEST(FileHashTest, SplittingTheInputDoesNotChangeTheHash) {
    std::string data;
    for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>((i * 131 + 7) & 0xff));
    const uint64_t whole = xxh64(data);
    for (size_t piece : {1u, 3u, 7u, 31u, 32u, 33u, 64u, 999u}) {
        Xxh64 h;
        for (size_t at = 0; at < data.size(); at += piece)
            h.update(data.data() + at, std::min(piece, data.size() - at));
        EXPECT_EQ(h.digest(), whole) << "pieces of " << piece;
    }
}

TEST(FileHashTest, AFileHashesAsItsBytes) {
    const fs::path p = fs::temp_directory_path() / ("st_test_file_hash_" + std::to_string(::getpid()));
    // Over 1 MiB plus a tail, so the file is read in more than one piece.
    std::string data((size_t{1} << 20) + 4099, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
    std::ofstream(p, std::ios::binary) << data;
    EXPECT_EQ(st::host::train::xxh64_file(p), xxh64(data));
    fs::remove(p);
    EXPECT_THROW(st::host::train::xxh64_file(p), st::Error);
}

}  // namespace
