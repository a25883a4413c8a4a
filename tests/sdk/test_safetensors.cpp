// safetensors reader/writer: round trips of every dtype (bit-exact), metadata, lazy and zero-copy
// reads, float8 decoding, sharded checkpoints, open_tensor_source, the atomic writer's failure
// behaviour, and cross-checks against an independent Python implementation (read_safetensors.py).
#include "st/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include "../common/independent_safetensors.h"

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

#include "st/error.h"

namespace fs = std::filesystem;
using st::sdk::open_tensor_source;
using st::sdk::safetensors_bytes;
using st::sdk::safetensors_dtype_size;
using st::sdk::safetensors_dtype_to_scalar;
using st::sdk::SafetensorsFile;
using st::sdk::save_safetensors;
using st::sdk::ShardedSafetensors;
using st::sdk::TensorMap;

namespace {

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "st_safetensors_XXXXXX").string();
        path_ = ::mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

  private:
    fs::path path_;
};

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
    if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
    const auto ac = a.contiguous(), bc = b.contiguous();
    return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.numel() * ac.element_size()) == 0;
}

// Random bit patterns of `type` (NaN payloads, subnormals, infinities included): [3, n].
at::Tensor random_bits(at::ScalarType type, int64_t n, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const int64_t elem = static_cast<int64_t>(c10::elementSize(type));
    if (type == at::kBool) return at::randint(0, 2, {3, n}, gen, at::kByte).to(at::kBool);
    return at::randint(0, 256, {3, n * elem}, gen, at::kByte).view(type);
}

std::vector<fs::path> temp_leftovers(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path());
    }
    return out;
}

const std::vector<at::ScalarType> kAllTypes = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                               at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};

}  // namespace

TEST(SafetensorsTest, DtypeTablesMatchTheFormat) {
    EXPECT_EQ(safetensors_dtype_to_scalar("BF16"), at::kBFloat16);
    EXPECT_EQ(safetensors_dtype_to_scalar("BOOL"), at::kBool);
    EXPECT_EQ(safetensors_dtype_to_scalar("F8_E4M3"), at::kFloat);  // decoded on load
    EXPECT_EQ(safetensors_dtype_size("F8_E5M2"), 1u);
    EXPECT_EQ(safetensors_dtype_size("I16"), 2u);
    EXPECT_EQ(st::sdk::scalar_to_safetensors_dtype(at::kFloat), "F32");
    EXPECT_EQ(st::sdk::scalar_to_safetensors_dtype(at::kChar), "I8");
    try {
        safetensors_dtype_to_scalar("U16");
        FAIL() << "U16 accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown safetensors dtype 'U16'"), std::string::npos)
            << e.what();
    }
    EXPECT_THROW(st::sdk::scalar_to_safetensors_dtype(at::kComplexFloat), st::Error);
}

TEST(SafetensorsTest, RoundTripsEveryDtypeBitExact) {
    TempDir dir;
    TensorMap tensors;
    uint64_t seed = 1;
    for (at::ScalarType type : kAllTypes) {
        tensors[std::string("t_") + c10::toString(type)] = random_bits(type, 5, seed++);
    }
    tensors["scalar"] = at::tensor(3.5, at::kDouble).reshape({});
    tensors["empty"] = at::zeros({0, 4}, at::kHalf);
    tensors["strided"] = at::arange(12, at::kInt).reshape({3, 4}).t();  // non-contiguous input
    save_safetensors(dir / "all.safetensors", tensors);

    const auto file = SafetensorsFile::open(dir / "all.safetensors");
    ASSERT_EQ(file->infos().size(), tensors.size());
    for (const auto& [name, expected] : tensors) {
        const at::Tensor got = file->load(name);
        EXPECT_TRUE(bytes_equal(got, expected.contiguous())) << name;
        EXPECT_EQ(file->info(name).scalar_type, expected.scalar_type()) << name;
        EXPECT_EQ(file->info(name).numel(), expected.numel()) << name;
    }
    EXPECT_EQ(file->load("scalar").dim(), 0);
    EXPECT_EQ(file->info("t_BFloat16").dtype, "BF16");
    EXPECT_EQ(file->info("t_Bool").dtype, "BOOL");
}

TEST(SafetensorsTest, HeaderIsPaddedAndTensorsAreContiguousInNameOrder) {
    TempDir dir;
    TensorMap tensors{
        {"b", at::ones({3}, at::kHalf)}, {"a", at::ones({2, 2})}, {"c", at::ones({1}, at::kByte)}};
    save_safetensors(dir / "x.safetensors", tensors, {{"format", "pt"}});
    const std::string bytes = read_bytes(dir / "x.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    EXPECT_EQ(n % 8, 0u);
    const std::string header = bytes.substr(8, n);
    EXPECT_EQ(header.front(), '{');
    const auto json_end = header.find_last_of('}');
    EXPECT_LT(header.size() - json_end - 1, 8u);
    EXPECT_EQ(header.find_first_not_of(' ', json_end + 1), std::string::npos) << "padding must be spaces";
    const auto j = nlohmann::json::parse(header);
    EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({0, 16}));
    EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({16, 22}));
    EXPECT_EQ(j["c"]["data_offsets"], nlohmann::json::array({22, 23}));
    EXPECT_EQ(j["__metadata__"]["format"], "pt");
    EXPECT_EQ(bytes.size(), 8 + n + 23);
}

TEST(SafetensorsTest, MetadataRoundTrips) {
    TempDir dir;
    const std::map<std::string, std::string> meta{{"format", "pt"},
                                                  {"st.step", "1200"},
                                                  {"json", R"({"lr": 1e-4, "names": ["a", "b"]})"},
                                                  {"unicode", "\xC3\xA9t\xC3\xA9 \xE2\x9C\x93"},
                                                  {"empty", ""}};
    save_safetensors(dir / "m.safetensors", {{"w", at::zeros({2})}}, meta);
    EXPECT_EQ(SafetensorsFile::open(dir / "m.safetensors")->metadata(), meta);

    save_safetensors(dir / "none.safetensors", {{"w", at::zeros({2})}});
    EXPECT_TRUE(SafetensorsFile::open(dir / "none.safetensors")->metadata().empty());
    EXPECT_EQ(read_bytes(dir / "none.safetensors").find("__metadata__"), std::string::npos);
}

TEST(SafetensorsTest, InMemoryBytesEqualTheFileAndReadBackWithoutAFile) {
    TempDir dir;
    const TensorMap tensors{{"a", at::arange(6, at::kFloat).reshape({2, 3})},
                            {"b", at::arange(5, at::kLong)},
                            {"c", at::ones({3}, at::kBFloat16)}};
    const std::map<std::string, std::string> meta{{"st.cache_key", "k1"}};
    save_safetensors(dir / "f.safetensors", tensors, meta);
    const std::string bytes = safetensors_bytes(tensors, meta, "memory");
    EXPECT_EQ(bytes, read_bytes(dir / "f.safetensors"));

    auto file = SafetensorsFile::from_bytes(std::make_shared<const std::string>(bytes), dir / "f.gz");
    EXPECT_EQ(file->metadata(), meta);
    EXPECT_EQ(file->describe().find((dir / "f.gz").string()) != std::string::npos, true);
    for (const auto& [name, t] : tensors) EXPECT_TRUE(at::equal(file->load(name), t)) << name;
    at::Tensor view = file->view("a");
    file.reset();  // the view keeps the bytes alive
    EXPECT_TRUE(at::equal(view, tensors.at("a")));

    // Validation is the same as open()'s, and errors name the label.
    std::string cut = bytes.substr(0, bytes.size() - 4);
    try {
        SafetensorsFile::from_bytes(std::make_shared<const std::string>(cut), "cache/x.safetensors.gz");
        FAIL() << "truncated bytes were accepted";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("cache/x.safetensors.gz"), std::string::npos) << e.what();
    }
    EXPECT_THROW(SafetensorsFile::from_bytes(std::make_shared<const std::string>("abc"), "short"), st::Error);
}

TEST(SafetensorsTest, LoadsOneTensorWithoutTouchingTheOthers) {
    TempDir dir;
    save_safetensors(dir / "lazy.safetensors",
                     {{"good", at::arange(6, at::kFloat)}, {"poisoned", at::zeros({4}, at::kBool)}});
    // Corrupt the BOOL tensor's bytes (value 7 is not a bool): only reading that tensor may fail.
    std::string bytes = read_bytes(dir / "lazy.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const auto j = nlohmann::json::parse(bytes.substr(8, n));
    bytes[8 + n + j["poisoned"]["data_offsets"][0].get<size_t>() + 2] = 7;
    write_bytes(dir / "lazy.safetensors", bytes);

    const auto file = SafetensorsFile::open(dir / "lazy.safetensors");
    EXPECT_TRUE(file->load("good").equal(at::arange(6, at::kFloat)));
    try {
        file->load("poisoned");
        FAIL() << "corrupt BOOL accepted";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("'poisoned' (BOOL) holds byte 0x07 at element 2"), std::string::npos) << what;
        EXPECT_NE(what.find("lazy.safetensors"), std::string::npos) << what;
    }
    try {
        file->load("absent");
        FAIL() << "absent tensor loaded";
    } catch (const st::Error& e) {
        EXPECT_NE(std::string(e.what()).find("no tensor named 'absent'"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(file->contains("good"));
    EXPECT_FALSE(file->contains("absent"));
}

TEST(SafetensorsTest, ViewIsZeroCopyAndOutlivesTheFile) {
    TempDir dir;
    const auto w = at::randn({8, 4}, at::kFloat);
    save_safetensors(dir / "v.safetensors", {{"a", at::ones({4}, at::kByte)}, {"w", w}});  // "w" 4-aligned
    auto file = SafetensorsFile::open(dir / "v.safetensors");
    const at::Tensor v1 = file->view("w");
    const at::Tensor v2 = file->view("w");
    EXPECT_EQ(v1.data_ptr(), v2.data_ptr()) << "two views of one tensor must share the mapped bytes";
    EXPECT_NE(file->load("w").data_ptr(), v1.data_ptr());
    file.reset();  // the views keep the mapping alive
    EXPECT_TRUE(v1.equal(w));
    EXPECT_EQ(v1.scalar_type(), at::kFloat);
}

TEST(SafetensorsTest, ViewOfMisalignedDataIsACopy) {
    TempDir dir;
    // "a" has 3 bytes, so "b" (F32) starts at data offset 3: not 4-byte aligned.
    save_safetensors(dir / "m.safetensors",
                     {{"a", at::ones({3}, at::kByte)}, {"b", at::arange(4, at::kFloat)}});
    const auto file = SafetensorsFile::open(dir / "m.safetensors");
    const at::Tensor v = file->view("b");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data_ptr()) % 4, 0u);
    EXPECT_TRUE(v.equal(at::arange(4, at::kFloat)));
}

// Hand-built file with one F8 tensor holding all 256 bit patterns.
fs::path write_f8_file(const TempDir& dir, const std::string& dtype) {
    std::string header = R"({"x":{"dtype":")" + dtype + R"(","shape":[256],"data_offsets":[0,256]}})";
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string bytes(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes += header;
    for (int b = 0; b < 256; ++b) bytes.push_back(static_cast<char>(b));
    const auto path = dir / (dtype + ".safetensors");
    write_bytes(path, bytes);
    return path;
}

TEST(SafetensorsTest, DecodesFloat8E4M3FnToFloat32) {
    TempDir dir;
    const at::Tensor x = SafetensorsFile::open(write_f8_file(dir, "F8_E4M3"))->load("x");
    ASSERT_EQ(x.scalar_type(), at::kFloat);
    const float* v = x.data_ptr<float>();
    EXPECT_EQ(v[0x00], 0.0f);
    EXPECT_TRUE(std::signbit(v[0x80]) && v[0x80] == 0.0f);
    EXPECT_EQ(v[0x38], 1.0f);
    EXPECT_EQ(v[0xB8], -1.0f);
    EXPECT_EQ(v[0x40], 2.0f);
    EXPECT_EQ(v[0x3C], 1.5f);
    EXPECT_EQ(v[0x7E], 448.0f);  // largest finite
    EXPECT_EQ(v[0xFE], -448.0f);
    EXPECT_EQ(v[0x08], 0.015625f);     // smallest normal 2^-6
    EXPECT_EQ(v[0x01], 0.001953125f);  // smallest subnormal 2^-9
    EXPECT_EQ(v[0x07], 0.013671875f);  // largest subnormal 7/8 * 2^-6
    EXPECT_EQ(v[0x78], 256.0f);        // exponent 15 is finite in the fn variant
    EXPECT_TRUE(std::isnan(v[0x7F]));
    EXPECT_TRUE(std::isnan(v[0xFF]));
    int nans = 0;
    for (int b = 0; b < 256; ++b) nans += std::isnan(v[b]) ? 1 : 0;
    EXPECT_EQ(nans, 2) << "e4m3fn has no infinities and exactly two NaN codes";
    for (int b = 1; b < 0x7F; ++b) EXPECT_LT(v[b - 1], v[b]) << "positive codes are monotonic at " << b;
}

TEST(SafetensorsTest, DecodesFloat8E5M2ToFloat32) {
    TempDir dir;
    const at::Tensor x = SafetensorsFile::open(write_f8_file(dir, "F8_E5M2"))->load("x");
    ASSERT_EQ(x.scalar_type(), at::kFloat);
    const float* v = x.data_ptr<float>();
    EXPECT_EQ(v[0x3C], 1.0f);
    EXPECT_EQ(v[0xBC], -1.0f);
    EXPECT_EQ(v[0x7B], 57344.0f);            // largest finite
    EXPECT_EQ(v[0x04], 6.103515625e-05f);    // smallest normal 2^-14
    EXPECT_EQ(v[0x01], 1.52587890625e-05f);  // smallest subnormal 2^-16
    EXPECT_TRUE(std::isinf(v[0x7C]) && v[0x7C] > 0);
    EXPECT_TRUE(std::isinf(v[0xFC]) && v[0xFC] < 0);
    EXPECT_TRUE(std::isnan(v[0x7D]) && std::isnan(v[0x7F]) && std::isnan(v[0xFE]));
    // e5m2 is the top byte of an IEEE half: an independent oracle for every code.
    const at::Tensor halves =
        (at::arange(256, at::kShort) * 256).view(at::kHalf).to(at::kFloat);  // byte << 8 as float16 bits
    for (int b = 0; b < 256; ++b) {
        const float want = halves[b].item<float>();
        if (std::isnan(want)) {
            EXPECT_TRUE(std::isnan(v[b])) << b;
        } else {
            EXPECT_EQ(v[b], want) << "code 0x" << std::hex << b;
        }
    }
}

TEST(SafetensorsTest, ShardedIndexLoadsFromEveryShard) {
    TempDir dir;
    save_safetensors(dir / "model-00001-of-00002.safetensors", {{"a.weight", at::full({2, 3}, 1.0)}},
                     {{"format", "pt"}, {"shard", "1"}});
    save_safetensors(dir / "model-00002-of-00002.safetensors",
                     {{"b.weight", at::full({4}, 2.0, at::kBFloat16)}, {"c.bias", at::full({1}, 3.0)}},
                     {{"shard", "2"}, {"only_in_2", "yes"}});
    const nlohmann::json index = {{"metadata", {{"total_size", 42}}},
                                  {"weight_map",
                                   {{"a.weight", "model-00001-of-00002.safetensors"},
                                    {"b.weight", "model-00002-of-00002.safetensors"},
                                    {"c.bias", "model-00002-of-00002.safetensors"}}}};
    std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);

    const auto sharded = ShardedSafetensors::open(dir / "model.safetensors.index.json");
    const auto infos = sharded->infos();
    ASSERT_EQ(infos.size(), 3u);
    EXPECT_EQ(infos[0].name, "a.weight");
    EXPECT_EQ(infos[1].dtype, "BF16");
    EXPECT_EQ(infos[2].shape, std::vector<int64_t>{1});
    EXPECT_TRUE(sharded->load("a.weight").equal(at::full({2, 3}, 1.0)));
    EXPECT_TRUE(sharded->load("b.weight").equal(at::full({4}, 2.0, at::kBFloat16)));
    EXPECT_TRUE(sharded->contains("c.bias"));
    EXPECT_FALSE(sharded->contains("d"));
    const auto meta = sharded->metadata();
    EXPECT_EQ(meta.at("shard"), "1") << "first file wins";
    EXPECT_EQ(meta.at("only_in_2"), "yes");
    EXPECT_EQ(sharded->describe(), (dir / "model.safetensors.index.json").string());
    EXPECT_THROW(sharded->load("d"), st::Error);
}

TEST(SafetensorsTest, ShardedIndexErrorsNameTheShardAndTensor) {
    TempDir dir;
    save_safetensors(dir / "s1.safetensors", {{"a", at::zeros({1})}});
    const auto expect_error = [&](const nlohmann::json& index, const std::string& phrase) {
        std::ofstream(dir / "bad.safetensors.index.json", std::ios::trunc) << index.dump();
        try {
            ShardedSafetensors::open(dir / "bad.safetensors.index.json");
            FAIL() << "accepted: " << index.dump();
        } catch (const st::Error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("bad.safetensors.index.json"), std::string::npos) << what;
            EXPECT_NE(what.find(phrase), std::string::npos) << what;
        }
    };
    expect_error({{"weight_map", {{"a", "missing.safetensors"}}}}, "shard");
    expect_error({{"weight_map", {{"a", "missing.safetensors"}}}},
                 "missing.safetensors' (holding 'a') does not exist");
    expect_error({{"weight_map", {{"zz", "s1.safetensors"}}}}, "maps tensor 'zz' to shard 's1.safetensors'");
    expect_error({{"metadata", {}}}, "\"weight_map\" object");
    expect_error({{"weight_map", {{"a", "../s1.safetensors"}}}}, "not a plain file name");
    expect_error({{"weight_map", {{"a", 3}}}}, "must be a file name string");
    std::ofstream(dir / "broken.safetensors") << "abc";  // a shard that is itself malformed
    expect_error({{"weight_map", {{"a", "broken.safetensors"}}}},
                 "broken.safetensors': file is truncated: 3 bytes");
}

TEST(SafetensorsTest, OpenTensorSourceAcceptsFileIndexAndDirectory) {
    TempDir dir;
    fs::create_directories(dir / "single");
    save_safetensors(dir / "single" / "model.safetensors", {{"w", at::ones({2})}});
    std::ofstream(dir / "single" / "config.json") << "{}";  // unrelated json is ignored
    EXPECT_TRUE(open_tensor_source(dir / "single")->contains("w"));
    EXPECT_TRUE(open_tensor_source(dir / "single" / "model.safetensors")->contains("w"));

    fs::create_directories(dir / "sharded");
    save_safetensors(dir / "sharded" / "m-1.safetensors", {{"x", at::ones({1})}});
    save_safetensors(dir / "sharded" / "m-2.safetensors", {{"y", at::ones({1})}});
    std::ofstream(dir / "sharded" / "m.safetensors.index.json")
        << R"({"weight_map": {"x": "m-1.safetensors", "y": "m-2.safetensors"}})";
    const auto from_dir = open_tensor_source(dir / "sharded");
    EXPECT_EQ(from_dir->infos().size(), 2u) << "the index wins over the shards it lists";
    EXPECT_EQ(from_dir->describe(), (dir / "sharded" / "m.safetensors.index.json").string());
    EXPECT_EQ(open_tensor_source(dir / "sharded" / "m.safetensors.index.json")->infos().size(), 2u);

    const auto expect_error = [](const fs::path& p, const std::string& phrase) {
        try {
            open_tensor_source(p);
            FAIL() << "accepted " << p;
        } catch (const st::Error& e) {
            EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
        }
    };
    fs::create_directories(dir / "two");
    save_safetensors(dir / "two" / "a.safetensors", {{"w", at::ones({1})}});
    save_safetensors(dir / "two" / "a.bf16.safetensors", {{"w", at::ones({1})}});
    expect_error(dir / "two", "ambiguous: 2 .safetensors files (a.bf16.safetensors, a.safetensors)");
    fs::create_directories(dir / "empty");
    expect_error(dir / "empty", "holds no .safetensors file");
    expect_error(dir / "nope", "does not exist");
}

TEST(SafetensorsTest, WriterOverwritesAtomically) {
    TempDir dir;
    save_safetensors(dir / "w.safetensors", {{"old", at::zeros({100})}});
    save_safetensors(dir / "w.safetensors", {{"new", at::ones({2})}});
    const auto file = SafetensorsFile::open(dir / "w.safetensors");
    EXPECT_TRUE(file->contains("new"));
    EXPECT_FALSE(file->contains("old"));
    EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

TEST(SafetensorsTest, WriterFailsCleanlyWhenTheParentIsAFile) {
    TempDir dir;
    write_bytes(dir / "not_a_dir", "x");
    const auto target = dir / "not_a_dir" / "out.safetensors";
    try {
        save_safetensors(target, {{"w", at::ones({2})}});
        FAIL() << "write under a file succeeded";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(target.string()), std::string::npos) << what;
        EXPECT_NE(what.find("Not a directory"), std::string::npos) << what;
    }
    EXPECT_EQ(read_bytes(dir / "not_a_dir"), "x");
    EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

TEST(SafetensorsTest, WriterFailsCleanlyInAReadOnlyDirectory) {
    if (::geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions do not stop writes";
    TempDir dir;
    fs::create_directories(dir / "ro");
    save_safetensors(dir / "ro" / "ckpt.safetensors", {{"old", at::ones({3})}});
    const std::string before = read_bytes(dir / "ro" / "ckpt.safetensors");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    try {
        save_safetensors(dir / "ro" / "ckpt.safetensors", {{"new", at::zeros({3})}});
        FAIL() << "write into a read-only directory succeeded";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find((dir / "ro" / "ckpt.safetensors").string()), std::string::npos) << what;
        EXPECT_NE(what.find("Permission denied"), std::string::npos) << what;
    }
    fs::permissions(dir / "ro", fs::perms::owner_all);
    EXPECT_EQ(read_bytes(dir / "ro" / "ckpt.safetensors"), before);
    EXPECT_TRUE(temp_leftovers(dir / "ro").empty());
}

TEST(SafetensorsTest, WriterRemovesItsTempFileWhenTheRenameFails) {
    TempDir dir;
    // The target is a non-empty directory: the temp file is written completely, then rename fails.
    fs::create_directories(dir / "target.safetensors");
    write_bytes(dir / "target.safetensors" / "keep", "k");
    try {
        save_safetensors(dir / "target.safetensors", {{"w", at::ones({64})}});
        FAIL() << "rename over a directory succeeded";
    } catch (const st::Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("renaming"), std::string::npos) << what;
        EXPECT_NE(what.find((dir / "target.safetensors").string()), std::string::npos) << what;
    }
    EXPECT_EQ(read_bytes(dir / "target.safetensors" / "keep"), "k");
    EXPECT_TRUE(temp_leftovers(dir.path()).empty());
}

TEST(SafetensorsTest, WriterLeavesTheTargetUntouchedWhenAWriteFailsMidway) {
    TempDir dir;
    const auto target = dir / "ckpt.safetensors";
    save_safetensors(target, {{"old", at::arange(10, at::kFloat)}});
    const std::string before = read_bytes(target);

    // Limit file size so the data write fails with EFBIG after the header went out.
    struct rlimit saved {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    std::string what;
    try {
        save_safetensors(target, {{"big", at::zeros({1 << 16})}});
    } catch (const st::Error& e) {
        what = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);

    ASSERT_FALSE(what.empty()) << "write past RLIMIT_FSIZE succeeded";
    EXPECT_NE(what.find("File too large"), std::string::npos) << what;
    EXPECT_NE(what.find(target.string()), std::string::npos) << what;
    EXPECT_EQ(read_bytes(target), before);
    EXPECT_TRUE(temp_leftovers(dir.path()).empty());
    EXPECT_TRUE(SafetensorsFile::open(target)->contains("old"));
}

TEST(SafetensorsTest, WriterRejectsBadInputBeforeCreatingAFile) {
    TempDir dir;
    const auto target = dir / "x.safetensors";
    EXPECT_THROW(save_safetensors(target, {{"c", at::zeros({2}, at::kComplexFloat)}}), st::Error);
    EXPECT_THROW(save_safetensors(target, {{"__metadata__", at::zeros({2})}}), st::Error);
    EXPECT_THROW(save_safetensors(target, {{"bad\xFF", at::zeros({2})}}), st::Error);
    EXPECT_THROW(save_safetensors(target, {{"u", at::Tensor()}}), st::Error);
    EXPECT_THROW(save_safetensors(target, {{"w", at::zeros({2})}}, {{"k", "\xC0\x80"}}), st::Error);
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

// ---------------------------------------------------------------------------------------------
// Cross-checks with the independent Python implementation.

namespace {

// The script needs only the Python standard library, so the one requirement is the interpreter.
bool have_python() {
    return ::access("/usr/bin/python3", X_OK) == 0;
}

nlohmann::json run_python(const std::string& mode, const fs::path& file) {
    return st_test::read_safetensors_independently(file, mode);
}

// Compares one tensor (as our reader returns it) with the Python summary, element by element, exactly.
void expect_matches_python(const std::string& name, const at::Tensor& t, const nlohmann::json& py) {
    const at::Tensor flat =
        t.is_floating_point() ? t.to(at::kDouble).reshape(-1) : t.to(at::kLong).reshape(-1);
    ASSERT_EQ(py["values"].size(), static_cast<size_t>(flat.numel())) << name;
    for (int64_t k = 0; k < flat.numel(); ++k) {
        const auto& pv = py["values"][k];
        if (t.is_floating_point()) {
            const double v = flat[k].item<double>();
            if (pv.is_string()) {
                const std::string s = pv.get<std::string>();
                EXPECT_TRUE(s == "nan" ? std::isnan(v) : (std::isinf(v) && (v > 0) == (s == "inf")))
                    << name << "[" << k << "] = " << v << ", python says " << s;
            } else {
                EXPECT_EQ(v, pv.get<double>()) << name << "[" << k << "]";
            }
        } else {
            EXPECT_EQ(flat[k].item<int64_t>(), pv.get<int64_t>()) << name << "[" << k << "]";
        }
    }
}

}  // namespace

TEST(SafetensorsTest, PythonReaderAgreesWithOurWriter) {
    if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 is not available";
    TempDir dir;
    TensorMap tensors;
    uint64_t seed = 100;
    for (at::ScalarType type : kAllTypes) {
        at::Tensor t = random_bits(type, 4, seed++);
        if (at::isFloatingType(type)) {
            // Random bits include NaNs with payloads; also pin the special values explicitly.
            t = t.clone();
            t[0][0] = std::numeric_limits<double>::infinity();
            t[0][1] = -0.0;
            t[0][2] = std::nan("");
        }
        tensors[std::string("t.") + c10::toString(type)] = t;
    }
    tensors["empty"] = at::zeros({2, 0}, at::kFloat);
    const std::map<std::string, std::string> meta{{"format", "pt"}, {"unicode", "\xE2\x9C\x93"}};
    const auto path = dir / "ours.safetensors";
    save_safetensors(path, tensors, meta);

    const nlohmann::json py = run_python("read", path);
    EXPECT_EQ((py["metadata"].get<std::map<std::string, std::string>>()), meta);
    ASSERT_EQ(py["tensors"].size(), tensors.size());
    for (const auto& [name, t] : tensors) {
        ASSERT_TRUE(py["tensors"].contains(name)) << name;
        const auto& entry = py["tensors"][name];
        EXPECT_EQ(entry["dtype"], st::sdk::scalar_to_safetensors_dtype(t.scalar_type())) << name;
        EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(), t.sizes().vec()) << name;
        expect_matches_python(name, t, entry);
    }
}

TEST(SafetensorsTest, OurReaderAgreesWithAPythonWrittenFile) {
    if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 is not available";
    TempDir dir;
    const auto path = dir / "python.safetensors";
    const nlohmann::json py = run_python("write", path);  // writes, then summarizes its own file
    const auto file = SafetensorsFile::open(path);
    EXPECT_EQ((py["metadata"].get<std::map<std::string, std::string>>()), file->metadata());
    ASSERT_EQ(file->infos().size(), py["tensors"].size());
    for (const auto& info : file->infos()) {
        ASSERT_TRUE(py["tensors"].contains(info.name)) << info.name;
        const auto& entry = py["tensors"][info.name];
        EXPECT_EQ(entry["dtype"], info.dtype) << info.name;
        EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(), info.shape) << info.name;
        expect_matches_python(info.name, file->load(info.name), entry);
    }
    EXPECT_EQ(file->info("fp8.e4m3").dtype, "F8_E4M3");
}
