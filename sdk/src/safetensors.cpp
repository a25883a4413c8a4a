// safetensors reader (mmap, lazy, validated), atomic writer, sharded checkpoints.
//
// The checks follow the format's reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs: `SafeTensors::read_metadata` / `Metadata::validate`): header length
// capped (100 MB) and inside the file, JSON header, known dtypes, offsets consistent with dtype x shape
// and tiling the data buffer exactly (no hole, no overlap, nothing left over), no duplicate keys at any
// level. We add explicit errors for overlaps and invalid UTF-8. The header is parsed member by member
// (linear time: 500k tensors parse in about a second). The writer follows `safetensors::serialize`:
// compact JSON header padded with spaces to a multiple of 8 bytes, then the tensors back to back.
#include "st/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

#include "json_members.h"

namespace st::sdk {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; st reads it in place and needs a little-endian host");

namespace {

constexpr const char* kComponent = "safetensors";

struct DtypeEntry {
    const char* name;
    at::ScalarType type;  ///< what `load` returns (F8 kinds are decoded to float32)
    size_t size;          ///< bytes per element on disk
};

// LibTorch 1.13 has no float8 type: F8_E4M3 / F8_E5M2 are decoded to float32 on load.
constexpr std::array<DtypeEntry, 12> kDtypes{{
    {"F64", at::kDouble, 8},
    {"F32", at::kFloat, 4},
    {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},
    {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},
    {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
    {"F8_E4M3", at::kFloat, 1},
    {"F8_E5M2", at::kFloat, 1},
}};

const DtypeEntry* find_dtype(const std::string& name) {
    for (const auto& entry : kDtypes) {
        if (name == entry.name) return &entry;
    }
    return nullptr;
}

std::string known_dtypes() {
    std::string out;
    for (const auto& entry : kDtypes) {
        if (!out.empty()) out += ", ";
        out += entry.name;
    }
    return out;
}

bool is_f8(const std::string& dtype) {
    return dtype == "F8_E4M3" || dtype == "F8_E5M2";
}

// float8 e4m3fn (OCP FP8, "fn": finite only): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits;
// no infinities, S.1111.111 is NaN; exponent 0 is subnormal (m/8 * 2^-6).
std::array<float, 256> make_e4m3fn_table() {
    std::array<float, 256> table{};
    for (int b = 0; b < 256; ++b) {
        const int sign = b >> 7, exp = (b >> 3) & 0xF, mant = b & 0x7;
        float v;
        if (exp == 0xF && mant == 0x7) {
            v = std::numeric_limits<float>::quiet_NaN();
        } else if (exp == 0) {
            v = std::ldexp(static_cast<float>(mant) / 8.0f, -6);
        } else {
            v = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
        }
        table[b] = sign ? -v : v;
    }
    return table;
}

// float8 e5m2: 1 sign, 5 exponent bits (bias 15), 2 mantissa bits; IEEE-like (the top byte of a
// float16): exponent 31 is inf (mantissa 0) or NaN; exponent 0 is subnormal (m/4 * 2^-14).
std::array<float, 256> make_e5m2_table() {
    std::array<float, 256> table{};
    for (int b = 0; b < 256; ++b) {
        const int sign = b >> 7, exp = (b >> 2) & 0x1F, mant = b & 0x3;
        float v;
        if (exp == 0x1F) {
            v = mant == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
        } else if (exp == 0) {
            v = std::ldexp(static_cast<float>(mant) / 4.0f, -14);
        } else {
            v = std::ldexp(1.0f + static_cast<float>(mant) / 4.0f, exp - 15);
        }
        table[b] = sign ? -v : v;
    }
    return table;
}

const std::array<float, 256>& f8_table(const std::string& dtype) {
    static const auto e4m3 = make_e4m3fn_table();
    static const auto e5m2 = make_e5m2_table();
    return dtype == "F8_E4M3" ? e4m3 : e5m2;
}

std::string shape_str(const std::vector<int64_t>& shape) {
    return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Position of the first invalid UTF-8 sequence, or npos. Rejects overlongs, surrogates, > U+10FFFF.
size_t find_invalid_utf8(std::string_view s) {
    size_t i = 0;
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    while (i < s.size()) {
        const unsigned char c = byte(i);
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            return i;
        }
        if (i + len > s.size()) return i;
        for (size_t k = 1; k < len; ++k) {
            if ((byte(i + k) & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (byte(i + k) & 0x3F);
        }
        const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return std::string_view::npos;
}

// A printable excerpt of header bytes around `pos`, with non-ASCII bytes as \xNN.
std::string excerpt(std::string_view s, size_t pos) {
    const size_t from = pos > 24 ? pos - 24 : 0;
    const size_t to = std::min(s.size(), pos + 24);
    std::string out;
    for (size_t k = from; k < to; ++k) {
        const auto c = static_cast<unsigned char>(s[k]);
        if (c >= 0x20 && c < 0x7F) {
            out += static_cast<char>(c);
        } else {
            out += fmt::format("\\x{:02X}", c);
        }
    }
    return out;
}

std::string errno_text(int err) {
    return std::system_category().message(err);
}

[[noreturn]] void fail_file(const std::filesystem::path& path, const std::string& what) {
    throw Error(kComponent, "open", fmt::format("'{}': {}", path.string(), what));
}

[[noreturn]] void fail_tensor(const std::filesystem::path& path, const std::string& name,
                              const std::string& what) {
    fail_file(path, fmt::format("tensor '{}': {}", name, what));
}

// Parses one header entry (already known not to be __metadata__) into a TensorInfo.
TensorInfo parse_entry(const std::filesystem::path& path, const std::string& name, const nlohmann::json& j,
                       uint64_t buffer_size) {
    if (!j.is_object())
        fail_tensor(path, name,
                    fmt::format("expected an object with dtype/shape/data_offsets, found {}", j.dump()));
    for (const auto& [key, value] : j.items()) {
        if (key != "dtype" && key != "shape" && key != "data_offsets") {
            fail_tensor(path, name,
                        fmt::format("unexpected key '{}' (expected only dtype, shape, data_offsets)", key));
        }
    }
    if (!j.contains("dtype") || !j["dtype"].is_string())
        fail_tensor(path, name, "expected 'dtype' to be a string");
    if (!j.contains("shape") || !j["shape"].is_array())
        fail_tensor(path, name, "expected 'shape' to be an array of integers");
    if (!j.contains("data_offsets") || !j["data_offsets"].is_array() || j["data_offsets"].size() != 2) {
        fail_tensor(path, name, "expected 'data_offsets' to be an array [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    info.dtype = j["dtype"].get<std::string>();
    const DtypeEntry* entry = find_dtype(info.dtype);
    if (entry == nullptr)
        fail_tensor(path, name,
                    fmt::format("unknown dtype '{}' (expected one of {})", info.dtype, known_dtypes()));
    info.scalar_type = entry->type;

    uint64_t numel = 1;
    for (const auto& dim : j["shape"]) {
        if (dim.is_number_integer() && !dim.is_number_unsigned()) {
            fail_tensor(path, name,
                        fmt::format("negative shape entry {} in shape {}", dim.dump(), j["shape"].dump()));
        }
        if (!dim.is_number_unsigned()) {
            fail_tensor(path, name,
                        fmt::format("non-integer shape entry {} in shape {}", dim.dump(), j["shape"].dump()));
        }
        const auto d = dim.get<uint64_t>();
        if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
            __builtin_mul_overflow(numel, d, &numel)) {
            fail_tensor(path, name, fmt::format("shape {} overflows 64 bits", j["shape"].dump()));
        }
        info.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(entry->size), &bytes)) {
        fail_tensor(path, name,
                    fmt::format("shape {} x {} bytes overflows 64 bits", j["shape"].dump(), entry->size));
    }
    for (const auto& off : j["data_offsets"]) {
        if (!off.is_number_unsigned()) {
            fail_tensor(path, name,
                        fmt::format("data_offsets must be non-negative integers, found {}",
                                    j["data_offsets"].dump()));
        }
    }
    info.begin = j["data_offsets"][0].get<uint64_t>();
    info.end = j["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end) {
        fail_tensor(path, name, fmt::format("data_offsets [{}, {}] has begin > end", info.begin, info.end));
    }
    if (info.end > buffer_size) {
        fail_tensor(path, name,
                    fmt::format("data_offsets [{}, {}] out of range: the data buffer has {} bytes",
                                info.begin, info.end, buffer_size));
    }
    if (info.end - info.begin != bytes) {
        fail_tensor(path, name,
                    fmt::format("data_offsets [{}, {}] span {} bytes but dtype {} x shape {} needs {} bytes",
                                info.begin, info.end, info.end - info.begin, info.dtype,
                                shape_str(info.shape), bytes));
    }
    return info;
}

// The `__metadata__` member: a string -> string map (duplicates were refused while parsing).
std::map<std::string, std::string> parse_metadata(const std::filesystem::path& path,
                                                  const nlohmann::json& value) {
    if (!value.is_object()) {
        fail_file(path,
                  fmt::format("__metadata__ must be a string -> string map, found {}", value.type_name()));
    }
    std::map<std::string, std::string> metadata;
    for (const auto& [key, v] : value.items()) {
        if (!v.is_string()) {
            fail_file(path, fmt::format("__metadata__ must be a string -> string map, but '{}' is a {} ({})",
                                        key, v.type_name(), v.dump()));
        }
        metadata[key] = v.get<std::string>();
    }
    return metadata;
}

// The tensors, sorted by offset and known not to overlap, must tile the data buffer exactly (the
// reference implementation's rule): a hole or unclaimed bytes at the end mean the header length
// field or the offsets are wrong, and loading would read shifted bytes as weights.
void check_buffer_coverage(const std::filesystem::path& path, const std::vector<const TensorInfo*>& ordered,
                           uint64_t buffer_size) {
    uint64_t covered = 0;
    for (const TensorInfo* info : ordered) {
        if (info->begin != covered) {
            fail_file(path, fmt::format("data_offsets leave bytes [{}, {}) of the data buffer unused before "
                                        "tensor '{}' (the format stores tensors back to back from offset 0; "
                                        "the header or its length field is damaged)",
                                        covered, info->begin, info->name));
        }
        covered = info->end;
    }
    if (covered != buffer_size) {
        fail_file(path, fmt::format("the tensors cover {} bytes but the data buffer after the header has {} "
                                    "({} bytes unaccounted for): the header length field or the offsets are "
                                    "wrong, or the file has bytes appended",
                                    covered, buffer_size, buffer_size - covered));
    }
}

}  // namespace

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype) {
    const DtypeEntry* entry = find_dtype(dtype);
    if (entry == nullptr) {
        fail(kComponent, "dtype", "unknown safetensors dtype '{}' (expected one of {})", dtype,
             known_dtypes());
    }
    return entry->type;
}

std::string scalar_to_safetensors_dtype(at::ScalarType type) {
    for (const auto& entry : kDtypes) {
        // The F8 entries map to kFloat only for loading; float32 is always written as F32.
        if (entry.type == type && !is_f8(entry.name)) return entry.name;
    }
    fail(kComponent, "dtype", "LibTorch dtype {} has no safetensors equivalent (supported: {})",
         c10::toString(type), "float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, bool");
}

size_t safetensors_dtype_size(const std::string& dtype) {
    const DtypeEntry* entry = find_dtype(dtype);
    if (entry == nullptr) {
        fail(kComponent, "dtype", "unknown safetensors dtype '{}' (expected one of {})", dtype,
             known_dtypes());
    }
    return entry->size;
}

TensorSource::~TensorSource() = default;

at::Tensor TensorSource::view(const std::string& name) const {
    return load(name);
}

void TensorSource::release(const std::string&) const {}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below as not a regular file).
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        const int err = errno;
        fail_file(path, fmt::format("cannot open: {}", errno_text(err)));
    }
    struct stat sb {};
    if (::fstat(fd, &sb) != 0) {
        const int err = errno;
        ::close(fd);
        fail_file(path, fmt::format("cannot stat: {}", errno_text(err)));
    }
    if (!S_ISREG(sb.st_mode)) {
        ::close(fd);
        fail_file(path, S_ISDIR(sb.st_mode) ? "is a directory, expected a .safetensors file"
                                            : "is not a regular file, expected a .safetensors file");
    }
    const auto size = static_cast<uint64_t>(sb.st_size);
    if (size < 8) {
        ::close(fd);
        fail_file(path, fmt::format("file is truncated: {} bytes, expected at least the 8-byte header length",
                                    size));
    }
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);  // the mapping keeps the file referenced
    if (addr == MAP_FAILED)
        fail_file(path, fmt::format("cannot mmap {} bytes: {}", size, errno_text(map_err)));
    auto file = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
    file->mapping_ = std::shared_ptr<void>(addr, [size](void* p) { ::munmap(p, size); });
    file->file_mapped_ = true;
    file->parse(path, static_cast<const uint8_t*>(addr), size);
    return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::shared_ptr<const std::string> bytes,
                                                             const std::filesystem::path& label) {
    if (!bytes) fail_file(label, "no bytes given");
    if (bytes->size() < 8)
        fail_file(label,
                  fmt::format("data is truncated: {} bytes, expected at least the 8-byte header length",
                              bytes->size()));
    auto file = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
    const auto* data = reinterpret_cast<const uint8_t*>(bytes->data());
    const uint64_t size = bytes->size();
    file->mapping_ = std::shared_ptr<void>(bytes, const_cast<std::string*>(bytes.get()));
    file->parse(label, data, size);
    return file;
}

void SafetensorsFile::parse(const std::filesystem::path& path, const uint8_t* bytes, uint64_t size) {
    SafetensorsFile* file = this;
    file->path_ = path;
    file->size_ = size;

    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes, 8);
    if (header_len > kSafetensorsMaxHeader) {
        fail_file(
            path,
            fmt::format("header length {} exceeds the cap of {} bytes (corrupt or not a safetensors file)",
                        header_len, kSafetensorsMaxHeader));
    }
    if (header_len > size - 8) {
        fail_file(path,
                  fmt::format("file is truncated: header length {} but only {} bytes follow the length field",
                              header_len, size - 8));
    }
    file->header_len_ = header_len;
    file->data_ = bytes + 8 + header_len;
    const uint64_t buffer_size = size - 8 - header_len;
    const std::string_view header(reinterpret_cast<const char*>(bytes + 8), header_len);

    if (header.empty() || header.front() != '{') {
        fail_file(path, fmt::format("header does not start with '{{' (found \"{}\"), not a safetensors file",
                                    excerpt(header, 0)));
    }
    if (const size_t bad = find_invalid_utf8(header); bad != std::string_view::npos) {
        fail_file(
            path,
            fmt::format("header is not valid UTF-8: invalid byte 0x{:02X} at header offset {} near \"{}\" "
                        "(tensor names and metadata must be UTF-8)",
                        static_cast<unsigned char>(header[bad]), bad, excerpt(header, bad)));
    }

    // Nesting is bounded before parsing (a header nested ~50k deep would overflow the stack later).
    try {
        check_json_limits(header, "header", kComponent, "open", JsonLimits{64, kSafetensorsMaxHeader});
    } catch (const Error& e) {
        fail_file(path, e.message());
    }
    // Members are parsed one at a time (linear in the header; duplicate keys refused at every level).
    try {
        detail::for_each_json_member(header, [&](const std::string& name, nlohmann::json& value) {
            if (name == "__metadata__") {
                file->metadata_ = parse_metadata(path, value);
                return;
            }
            file->tensors_.emplace(name, parse_entry(path, name, value, buffer_size));
        });
    } catch (const detail::JsonMembersError& e) {
        fail_file(path, fmt::format("header {}", e.what()));
    }

    // Overlap check: sort by begin (then end) and require each range to start at or after the previous end.
    std::vector<const TensorInfo*> ordered;
    ordered.reserve(file->tensors_.size());
    for (const auto& [name, info] : file->tensors_) ordered.push_back(&info);
    std::sort(ordered.begin(), ordered.end(), [](const TensorInfo* a, const TensorInfo* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    for (size_t k = 1; k < ordered.size(); ++k) {
        const TensorInfo& prev = *ordered[k - 1];
        const TensorInfo& cur = *ordered[k];
        if (cur.begin < prev.end) {
            fail_file(path, fmt::format("tensor '{}' data_offsets [{}, {}] overlap tensor '{}' [{}, {}]",
                                        cur.name, cur.begin, cur.end, prev.name, prev.begin, prev.end));
        }
    }
    check_buffer_coverage(path, ordered, buffer_size);
    log::debug(kComponent, "opened '{}': {} tensors, header {} bytes, data {} bytes", path.string(),
               file->tensors_.size(), header_len, buffer_size);
}

SafetensorsFile::~SafetensorsFile() = default;

std::string SafetensorsFile::describe() const {
    return path_.string();
}

std::vector<TensorInfo> SafetensorsFile::infos() const {
    std::vector<TensorInfo> out;
    out.reserve(tensors_.size());
    for (const auto& [name, info] : tensors_) out.push_back(info);
    return out;
}

bool SafetensorsFile::contains(const std::string& name) const {
    return tensors_.count(name) != 0;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) {
        fail(kComponent, "load", "'{}': no tensor named '{}' ({} tensors in the file)", path_.string(), name,
             tensors_.size());
    }
    return it->second;
}

at::Tensor SafetensorsFile::load(const std::string& name) const {
    const TensorInfo& ti = info(name);
    const uint8_t* src = data_ + ti.begin;
    const auto bytes = static_cast<size_t>(ti.end - ti.begin);
    at::Tensor out = at::empty(ti.shape, at::TensorOptions().dtype(ti.scalar_type).device(at::kCPU));
    if (is_f8(ti.dtype)) {
        const auto& table = f8_table(ti.dtype);
        float* dst = out.data_ptr<float>();
        for (size_t k = 0; k < bytes; ++k) dst[k] = table[src[k]];
        return out;
    }
    if (ti.dtype == "BOOL") {
        // LibTorch assumes bool bytes are 0 or 1; anything else would make comparisons misbehave.
        for (size_t k = 0; k < bytes; ++k) {
            if (src[k] > 1) {
                fail(kComponent, "load",
                     "'{}': tensor '{}' (BOOL) holds byte 0x{:02X} at element {}, expected 0 or 1",
                     path_.string(), name, src[k], k);
            }
        }
    }
    if (bytes > 0) std::memcpy(out.data_ptr(), src, bytes);
    return out;
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
    const TensorInfo& ti = info(name);
    const uint8_t* src = data_ + ti.begin;
    const size_t elem = safetensors_dtype_size(ti.dtype);
    if (is_f8(ti.dtype) || ti.dtype == "BOOL" || reinterpret_cast<uintptr_t>(src) % elem != 0) {
        return load(name);  // decoded, validated or realigned: a copy
    }
    // The deleter holds the mapping alive as long as any view exists. The pages are PROT_READ:
    // writing through the view faults, which is the intended read-only contract.
    auto mapping = mapping_;
    return at::from_blob(
        const_cast<uint8_t*>(src), ti.shape, [mapping](void*) mutable { mapping.reset(); },
        at::TensorOptions().dtype(ti.scalar_type).device(at::kCPU));
}

void SafetensorsFile::release(const std::string& name) const {
    if (!file_mapped_) return;  // bytes in memory (from_bytes) are not ours to drop
    const TensorInfo& ti = info(name);
    const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    // Whole pages inside the tensor only; clean pages of a read-only private file mapping.
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data_ + ti.begin) + page - 1) / page * page;
    const uintptr_t end = reinterpret_cast<uintptr_t>(data_ + ti.end) / page * page;
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

std::map<std::string, std::string> SafetensorsFile::metadata() const {
    return metadata_;
}

// ---------------------------------------------------------------------------------------------
// ShardedSafetensors

std::shared_ptr<ShardedSafetensors> ShardedSafetensors::open(const std::filesystem::path& index_json) {
    std::string text;
    {
        const int fd = ::open(index_json.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            fail(kComponent, "open", "index '{}': cannot open: {}", index_json.string(), errno_text(err));
        }
        char buf[65536];
        for (;;) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                const int err = errno;
                ::close(fd);
                fail(kComponent, "open", "index '{}': cannot read: {}", index_json.string(), errno_text(err));
            }
            if (n == 0) break;
            text.append(buf, static_cast<size_t>(n));
        }
        ::close(fd);
    }
    const nlohmann::json j = parse_json_text(text, "index " + index_json.string(), kComponent, "open");
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
        fail(kComponent, "open",
             "index '{}': expected an object with a \"weight_map\" object (tensor -> file)",
             index_json.string());
    }
    auto sharded = std::shared_ptr<ShardedSafetensors>(new ShardedSafetensors());
    sharded->index_ = index_json;
    const std::filesystem::path dir = index_json.parent_path();
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string()) {
            fail(kComponent, "open", "index '{}': weight_map['{}'] must be a file name string, found {}",
                 index_json.string(), tensor, file.dump());
        }
        const auto name = file.get<std::string>();
        // Shards live next to their index; a path would let an index point anywhere on disk.
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
            fail(kComponent, "open",
                 "index '{}': weight_map['{}'] = '{}' is not a plain file name next to the index",
                 index_json.string(), tensor, name);
        }
        sharded->weight_map_[tensor] = name;
        if (sharded->shards_.count(name) == 0) {
            const auto shard_path = dir / name;
            std::error_code ec;
            if (!std::filesystem::exists(shard_path, ec)) {
                fail(kComponent, "open", "index '{}': shard '{}' (holding '{}') does not exist",
                     index_json.string(), shard_path.string(), tensor);
            }
            try {
                sharded->shards_[name] = SafetensorsFile::open(shard_path);
            } catch (const Error& e) {
                throw e.with_context(
                    fmt::format("while opening a shard listed by index '{}'", index_json.string()));
            }
        }
        if (!sharded->shards_[name]->contains(tensor)) {
            fail(kComponent, "open", "index '{}' maps tensor '{}' to shard '{}', which does not contain it",
                 index_json.string(), tensor, name);
        }
    }
    log::debug(kComponent, "opened index '{}': {} tensors in {} shards", index_json.string(),
               sharded->weight_map_.size(), sharded->shards_.size());
    return sharded;
}

std::string ShardedSafetensors::describe() const {
    return index_.string();
}

std::vector<TensorInfo> ShardedSafetensors::infos() const {
    std::vector<TensorInfo> out;
    out.reserve(weight_map_.size());
    for (const auto& [tensor, file] : weight_map_) out.push_back(shards_.at(file)->info(tensor));
    return out;
}

bool ShardedSafetensors::contains(const std::string& name) const {
    return weight_map_.count(name) != 0;
}

at::Tensor ShardedSafetensors::load(const std::string& name) const {
    const auto it = weight_map_.find(name);
    if (it == weight_map_.end()) {
        fail(kComponent, "load", "index '{}': no tensor named '{}' ({} tensors in the weight_map)",
             index_.string(), name, weight_map_.size());
    }
    return shards_.at(it->second)->load(name);
}

void ShardedSafetensors::release(const std::string& name) const {
    const auto it = weight_map_.find(name);
    if (it != weight_map_.end()) shards_.at(it->second)->release(name);
}

at::Tensor ShardedSafetensors::view(const std::string& name) const {
    const auto it = weight_map_.find(name);
    if (it == weight_map_.end()) return load(name);  // its error
    return shards_.at(it->second)->view(name);
}

std::map<std::string, std::string> ShardedSafetensors::metadata() const {
    std::map<std::string, std::string> out;
    for (const auto& [file, shard] : shards_) {
        for (const auto& [key, value] : shard->metadata()) out.emplace(key, value);  // first file wins
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// open_tensor_source

std::shared_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
        fail(kComponent, "open",
             "'{}' does not exist (expected a .safetensors file, an index json or a directory)",
             path.string());
    }
    const auto ends_with = [](const std::string& s, std::string_view suffix) {
        return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (!fs::is_directory(status)) {
        if (ends_with(path.filename().string(), ".json")) return ShardedSafetensors::open(path);
        return SafetensorsFile::open(path);
    }
    std::vector<fs::path> indexes, files;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_regular_file(ec)) continue;
        if (ends_with(name, ".safetensors.index.json")) indexes.push_back(entry.path());
        if (ends_with(name, ".safetensors")) files.push_back(entry.path());
    }
    if (ec) fail(kComponent, "open", "directory '{}': cannot list: {}", path.string(), ec.message());
    std::sort(indexes.begin(), indexes.end());
    std::sort(files.begin(), files.end());
    const auto names = [](const std::vector<fs::path>& v) {
        std::vector<std::string> out;
        for (const auto& p : v) out.push_back(p.filename().string());
        return fmt::format("{}", fmt::join(out, ", "));
    };
    if (indexes.size() > 1) {
        fail(kComponent, "open", "directory '{}' is ambiguous: {} index files ({}); pass one of them",
             path.string(), indexes.size(), names(indexes));
    }
    if (indexes.size() == 1) {
        log::debug(kComponent, "directory '{}': using index '{}'", path.string(),
                   indexes[0].filename().string());
        return ShardedSafetensors::open(indexes[0]);
    }
    if (files.size() > 1) {
        fail(kComponent, "open",
             "directory '{}' is ambiguous: {} .safetensors files ({}) and no index; pass one", path.string(),
             files.size(), names(files));
    }
    if (files.empty()) {
        fail(kComponent, "open", "directory '{}' holds no .safetensors file and no .safetensors.index.json",
             path.string());
    }
    log::debug(kComponent, "directory '{}': using '{}'", path.string(), files[0].filename().string());
    return SafetensorsFile::open(files[0]);
}

// ---------------------------------------------------------------------------------------------
// save_safetensors

namespace {

// Removes the temporary file unless released (after a successful rename).
class TempFile {
  public:
    explicit TempFile(std::filesystem::path path) : path_(std::move(path)) {}
    ~TempFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!released_) ::unlink(path_.c_str());
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    int fd_ = -1;
    bool released_ = true;  ///< nothing to remove until the file was created
    std::filesystem::path path_;
};

void write_all(int fd, const void* data, size_t size, const std::filesystem::path& tmp,
               const std::filesystem::path& target) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        // Linux write() moves at most ~2 GiB per call; loop for the rest.
        const ssize_t n = ::write(fd, p, std::min<size_t>(size, 1u << 30));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = n < 0 ? errno : EIO;
            fail(kComponent, "save", "'{}': writing temporary file '{}' failed: {}", target.string(),
                 tmp.string(), errno_text(err));
        }
        p += n;
        size -= static_cast<size_t>(n);
    }
}

}  // namespace

namespace {

/// The serialised header (padded so the data starts 8-byte aligned) and the contiguous CPU tensors
/// in data order. Everything that can be checked is checked here, before anything is written.
struct PreparedSafetensors {
    std::string header;
    std::vector<at::Tensor> data;
    uint64_t data_bytes = 0;
};

PreparedSafetensors prepare_safetensors(const std::string& label, const TensorMap& tensors,
                                        const std::map<std::string, std::string>& metadata) {
    PreparedSafetensors out;
    nlohmann::json header = nlohmann::json::object();
    out.data.reserve(tensors.size());
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
        if (name == "__metadata__")
            fail(kComponent, "save", "'{}': '__metadata__' is reserved, not a tensor name", label);
        if (find_invalid_utf8(name) != std::string_view::npos) {
            fail(kComponent, "save", "'{}': tensor name \"{}\" is not valid UTF-8", label, excerpt(name, 0));
        }
        if (!tensor.defined()) fail(kComponent, "save", "'{}': tensor '{}' is undefined", label, name);
        const std::string dtype = scalar_to_safetensors_dtype(tensor.scalar_type());
        at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
        const auto bytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
        header[name] = {
            {"dtype", dtype}, {"shape", cpu.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        out.data.push_back(std::move(cpu));
    }
    if (!metadata.empty()) {
        for (const auto& [key, value] : metadata) {
            if (find_invalid_utf8(key) != std::string_view::npos ||
                find_invalid_utf8(value) != std::string_view::npos) {
                fail(kComponent, "save", "'{}': metadata entry \"{}\" is not valid UTF-8", label,
                     excerpt(key, 0));
            }
        }
        header["__metadata__"] = metadata;
    }
    out.header = header.dump();
    out.header.append((8 - out.header.size() % 8) % 8, ' ');  // data buffer starts 8-byte aligned
    out.data_bytes = offset;
    return out;
}

}  // namespace

std::string safetensors_bytes(const TensorMap& tensors, const std::map<std::string, std::string>& metadata,
                              const std::string& label) {
    const PreparedSafetensors p = prepare_safetensors(label, tensors, metadata);
    const uint64_t header_len = p.header.size();
    std::string out;
    out.reserve(8 + p.header.size() + p.data_bytes);
    out.append(reinterpret_cast<const char*>(&header_len), 8);
    out += p.header;
    for (const auto& t : p.data)
        if (t.numel() > 0)
            out.append(static_cast<const char*>(t.data_ptr()),
                       static_cast<size_t>(t.numel()) * t.element_size());
    return out;
}

void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
    const PreparedSafetensors prepared = prepare_safetensors(path.string(), tensors, metadata);
    const std::string& text = prepared.header;
    const std::vector<at::Tensor>& data = prepared.data;
    const uint64_t header_len = text.size();

    TempFile tmp(path.string() + fmt::format(".tmp-{}", ::getpid()));
    tmp.fd_ = ::open(tmp.path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (tmp.fd_ < 0) {
        const int err = errno;
        fail(kComponent, "save", "'{}': cannot create temporary file '{}': {}", path.string(),
             tmp.path_.string(), errno_text(err));
    }
    tmp.released_ = false;
    write_all(tmp.fd_, &header_len, 8, tmp.path_, path);
    write_all(tmp.fd_, text.data(), text.size(), tmp.path_, path);
    for (const auto& t : data) {
        if (t.numel() > 0)
            write_all(tmp.fd_, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), tmp.path_,
                      path);
    }
    if (::fsync(tmp.fd_) != 0) {
        const int err = errno;
        fail(kComponent, "save", "'{}': fsync of '{}' failed: {}", path.string(), tmp.path_.string(),
             errno_text(err));
    }
    const int fd = tmp.fd_;
    tmp.fd_ = -1;
    if (::close(fd) != 0) {
        const int err = errno;
        fail(kComponent, "save", "'{}': closing '{}' failed: {}", path.string(), tmp.path_.string(),
             errno_text(err));
    }
    if (::rename(tmp.path_.c_str(), path.c_str()) != 0) {
        const int err = errno;
        fail(kComponent, "save", "'{}': renaming '{}' over it failed: {}", path.string(), tmp.path_.string(),
             errno_text(err));
    }
    tmp.released_ = true;
    // Persist the rename itself. The new file is already in place, so a failure here only weakens
    // durability after a crash: warn rather than throw.
    const auto parent = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::fsync(dfd) != 0) {
        log::warn(kComponent, "'{}': could not fsync directory '{}': {}", path.string(), parent.string(),
                  errno_text(errno));
    }
    if (dfd >= 0) ::close(dfd);
    log::debug(kComponent, "saved '{}': {} tensors, {} bytes", path.string(), tensors.size(),
               8 + header_len + prepared.data_bytes);
}

}  // namespace st::sdk
