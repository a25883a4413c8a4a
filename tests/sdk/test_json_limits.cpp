// JSON nesting and size limits (issue 18): every document st reads is scanned before it is parsed, so a
// deeply nested file is an st::Error naming it, never a stack overflow in nlohmann's recursive copy,
// dump or comparison. Covers the shared reader, JSON texts, safetensors headers and shard indexes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/safetensors.h"

namespace {

namespace fs = std::filesystem;

std::string deep(size_t n) {
    return std::string(n, '[') + std::string(n, ']');
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const st::Error& e) {
        return e.what();
    }
    return "(no error)";
}

fs::path scratch(const std::string& name) {
    const fs::path p = fs::temp_directory_path() / ("st_json_limits_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p / name;
}

TEST(JsonLimitsTest, DepthIsCountedOutsideStringsOnly) {
    EXPECT_NO_THROW(st::sdk::check_json_limits(deep(128), "x", "test"));
    EXPECT_NE(message_of([] {
                  st::sdk::check_json_limits(deep(129), "x.json", "test");
              }).find("'x.json' nests JSON more than 128 levels deep"),
              std::string::npos);
    // Brackets inside strings (escaped quotes included) do not count.
    const std::string in_string = "{\"a\": \"" + std::string(500, '[') + "\\\" [[[\"}";
    EXPECT_NO_THROW(st::sdk::check_json_limits(in_string, "x", "test"));
    EXPECT_NO_THROW(st::sdk::parse_json_text(in_string, "x", "test"));
    st::sdk::JsonLimits small{4, 16};
    EXPECT_NE(message_of([&] {
                  st::sdk::check_json_limits(std::string(17, ' '), "y", "test", "config", small);
              }).find("17 bytes"),
              std::string::npos);
}

TEST(JsonLimitsTest, FilesAndTextsRefuseDeepDocumentsBeforeParsing) {
    const fs::path f = scratch("deep.json");
    std::ofstream(f) << "{\"a\": " << deep(100000) << "}";
    EXPECT_NE(message_of([&] { st::sdk::read_json_file(f, "test"); }).find("levels deep"), std::string::npos);
    EXPECT_NE(
        message_of([] { st::sdk::parse_json_text(deep(60000), "cli value", "test"); }).find("cli value"),
        std::string::npos);
    fs::remove_all(f.parent_path());
}

TEST(JsonLimitsTest, SafetensorsHeaderAndIndexRefuseDeepNesting) {
    // A tensor entry whose shape nests 100k deep: refused when opened, naming the file.
    const fs::path f = scratch("deep.safetensors");
    std::string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":" + deep(100000) + ",\"data_offsets\":[0,4]}}";
    header.append((8 - header.size() % 8) % 8, ' ');
    const uint64_t n = header.size();
    {
        std::ofstream out(f, std::ios::binary);
        out.write(reinterpret_cast<const char*>(&n), 8);
        out << header << std::string(4, '\0');
    }
    const std::string m = message_of([&] { st::sdk::SafetensorsFile::open(f); });
    EXPECT_NE(m.find(f.string()), std::string::npos) << m;
    EXPECT_NE(m.find("levels deep"), std::string::npos) << m;
    const fs::path idx = scratch("model.safetensors.index.json");
    std::ofstream(idx) << "{\"weight_map\": {}, \"metadata\": " << deep(100000) << "}";
    EXPECT_NE(message_of([&] { st::sdk::open_tensor_source(idx); }).find("levels deep"), std::string::npos);
    fs::remove_all(f.parent_path());
}

// Issue 18: "1e999" said "number overflow" without the file or the key.
TEST(JsonLimitsTest, ParseErrorsSayLineColumnAndKey) {
    const std::string m = message_of(
        [] { st::sdk::parse_json_text("{\"a\": 1,\n \"b\": [1, {\"c\": 1e999}]}", "x.json", "test"); });
    EXPECT_NE(m.find("'x.json' is not valid JSON at line 2, column"), std::string::npos) << m;
    EXPECT_NE(m.find("in 'b[1].c'"), std::string::npos) << m;
    EXPECT_NE(m.find("number overflow"), std::string::npos) << m;
    EXPECT_EQ(st::sdk::json_error_location("{\"a\": [1, 2]}"), "");
    EXPECT_EQ(st::sdk::json_error_location("{\"a\": [1, 2,]}"), "line 1, column 13, in 'a[2]'");
}

// Issue 18: FIFOs and devices are refused before they are opened (reading one blocks or never ends).
TEST(JsonLimitsTest, OnlyRegularFilesAreRead) {
    const std::string m = message_of([] { st::sdk::read_json_file("/dev/zero", "test"); });
    EXPECT_NE(m.find("'/dev/zero' is a character device, expected a JSON file (a regular file)"),
              std::string::npos)
        << m;
    EXPECT_NE(message_of([] { st::sdk::read_file("/dev/zero"); }).find("character device"),
              std::string::npos);
    EXPECT_NE(message_of([] { st::sdk::read_file("/nonexistent/x"); }).find("cannot open '/nonexistent/x'"),
              std::string::npos);
}

}  // namespace
