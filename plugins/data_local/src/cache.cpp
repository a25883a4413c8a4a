#include "cache.h"

extern "C" {
#include <libavutil/mem.h>
#include <libavutil/sha.h>
}
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "st/error.h"
#include "st/log.h"
#include "st/safetensors.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local.cache";

std::string hex(const uint8_t* d, size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; ++i) {
        s += digits[d[i] >> 4];
        s += digits[d[i] & 15];
    }
    return s;
}

struct ShaHasher {
    ShaHasher() : ctx(av_sha_alloc()) {
        if (!ctx) throw Error("data.local.cache", "hash", "out of memory allocating SHA-256 state");
        av_sha_init(ctx, 256);
    }
    ~ShaHasher() { av_free(ctx); }
    void update(const void* data, size_t n) { av_sha_update(ctx, static_cast<const uint8_t*>(data), n); }
    std::string final_hex() {
        uint8_t out[32];
        av_sha_final(ctx, out);
        return hex(out, 32);
    }
    AVSHA* ctx;
};

std::string read_all(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Error("data.local.cache", "read", fmt::format("cannot open {}", p.string()));
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Unique temporary name next to `p` (same filesystem, so rename is atomic).
std::filesystem::path temp_beside(const std::filesystem::path& p, const char* tag) {
    static std::atomic<uint64_t> counter{0};
    return p.string() + fmt::format(".{}-{}-{}", tag, ::getpid(), counter.fetch_add(1));
}

void write_atomic(const std::filesystem::path& p, const std::string& bytes) {
    const auto tmp = temp_beside(p, "tmp");
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        out.flush();
        if (!out) {
            std::error_code ec;
            std::filesystem::remove(tmp, ec);
            throw Error("data.local.cache", "write", fmt::format("cannot write {}", tmp.string()));
        }
    }
    std::filesystem::rename(tmp, p);
}

bool is_gzip(const std::string& bytes) {
    return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
           static_cast<unsigned char>(bytes[1]) == 0x8b;
}

/// Opens a cache file's safetensors content; gzip files are decompressed in memory.
std::shared_ptr<st::sdk::SafetensorsFile> open_cache(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    char magic[2] = {0, 0};
    in.read(magic, 2);
    if (in.gcount() == 2 && static_cast<unsigned char>(magic[0]) == 0x1f &&
        static_cast<unsigned char>(magic[1]) == 0x8b) {
        in.close();
        auto bytes = std::make_shared<const std::string>(gunzip_bytes(read_all(file)));
        return st::sdk::SafetensorsFile::from_bytes(std::move(bytes), file);
    }
    return st::sdk::SafetensorsFile::open(file);
}

std::optional<std::filesystem::path> existing_variant(const std::filesystem::path& base) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(base, ec)) return base;
    std::filesystem::path gz = base.string() + ".gz";
    if (std::filesystem::is_regular_file(gz, ec)) return gz;
    return std::nullopt;
}

}  // namespace

std::string sha256_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw Error("data.local.cache", "hash", fmt::format("cannot open {} for hashing", path.string()));
    ShaHasher h;
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (in.gcount() > 0) h.update(buf.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad())
        throw Error("data.local.cache", "hash", fmt::format("read error while hashing {}", path.string()));
    return h.final_hex();
}

std::string sha256_text(const std::string& text) {
    ShaHasher h;
    h.update(text.data(), text.size());
    return h.final_hex();
}

std::string gzip_bytes(const std::string& data) {
    z_stream zs{};
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw Error("data.local.cache", "compress", "zlib deflateInit2 failed");
    std::string out(deflateBound(&zs, data.size()) + 32, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END)
        throw Error("data.local.cache", "compress", fmt::format("zlib deflate failed ({})", rc));
    return out;
}

std::string gunzip_bytes(const std::string& data) {
    z_stream zs{};
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        throw Error("data.local.cache", "decompress", "zlib inflateInit2 failed");
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    std::string out;
    char buf[1 << 16];
    int rc;
    do {
        zs.next_out = reinterpret_cast<Bytef*>(buf);
        zs.avail_out = sizeof(buf);
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            inflateEnd(&zs);
            throw Error("data.local.cache", "decompress",
                        fmt::format("corrupt gzip data (zlib error {})", rc));
        }
        out.append(buf, sizeof(buf) - zs.avail_out);
        if (rc != Z_STREAM_END && zs.avail_in == 0 && zs.avail_out != 0) {
            inflateEnd(&zs);
            throw Error("data.local.cache", "decompress", "truncated gzip data");
        }
    } while (rc != Z_STREAM_END);
    inflateEnd(&zs);
    return out;
}

void write_cache_file(const std::filesystem::path& base, const st::sdk::TensorMap& tensors,
                      const std::string& key, bool compress,
                      const std::map<std::string, std::string>& metadata) {
    std::filesystem::create_directories(base.parent_path());
    const std::filesystem::path gz = base.string() + ".gz";
    std::map<std::string, std::string> meta = metadata;
    meta[kCacheKeyMeta] = key;
    std::error_code ec;
    if (!compress) {
        st::sdk::save_safetensors(base, tensors, meta);
        std::filesystem::remove(gz, ec);
        return;
    }
    const std::string bytes = st::sdk::safetensors_bytes(tensors, meta, base.string());
    write_atomic(gz, gzip_bytes(bytes));
    std::filesystem::remove(base, ec);
}

bool cache_file_exists(const std::filesystem::path& base) {
    return existing_variant(base).has_value();
}

std::optional<st::sdk::TensorMap> read_cache_file(const std::filesystem::path& base, const std::string& key) {
    auto file = existing_variant(base);
    if (!file) return std::nullopt;
    std::error_code ec;
    try {
        auto st = open_cache(*file);
        auto meta = st->metadata();
        auto it = meta.find(kCacheKeyMeta);
        if (it == meta.end() || it->second != key) {
            return std::nullopt;
        }
        st::sdk::TensorMap out;
        for (const auto& info : st->infos()) out[info.name] = st->load(info.name);
        return out;
    } catch (const Error& e) {
        log::warn(kLog, "{}: unreadable cache file deleted, it will be rebuilt ({})", file->string(),
                  e.message());
        std::filesystem::remove(*file, ec);
        return std::nullopt;
    }
}

bool cache_file_valid(const std::filesystem::path& base, const std::string& key) {
    return cache_file_metadata(base, key).has_value();
}

std::optional<std::map<std::string, std::string>> cache_file_metadata(const std::filesystem::path& base,
                                                                      const std::string& key) {
    auto file = existing_variant(base);
    if (!file) return std::nullopt;
    std::error_code ec;
    try {
        auto meta = open_cache(*file)->metadata();
        auto it = meta.find(kCacheKeyMeta);
        if (it == meta.end() || it->second != key) return std::nullopt;
        return meta;
    } catch (const Error& e) {
        log::warn(kLog, "{}: unreadable cache file deleted, it will be rebuilt ({})", file->string(),
                  e.message());
        std::filesystem::remove(*file, ec);
        return std::nullopt;
    }
}

}  // namespace st::plugins::data_local
