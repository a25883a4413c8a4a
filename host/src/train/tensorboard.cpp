#include "train/tensorboard.h"

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>

#include <unistd.h>

#include "st/error.h"
#include "st/files.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLog = "host.tensorboard";

std::array<uint32_t, 256> make_crc32c_table() {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    return table;
}

// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/).
void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, int field, int wire_type) {
    put_varint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
    put_key(out, field, 2);
    put_varint(out, bytes.size());
    out += bytes;
}
void put_int(std::string& out, int field, int64_t v) {
    put_key(out, field, 0);
    put_varint(out, static_cast<uint64_t>(v));
}
template <typename T>
void put_fixed(std::string& out, int field, T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8);
    put_key(out, field, sizeof(T) == 8 ? 1 : 5);
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));  // little-endian host (checked by the SDK)
    out.append(raw, sizeof(T));
}

// Event header fields: wall_time = 1 (double), step = 2 (int64).
std::string event_head(double wall_time, int64_t step) {
    std::string e;
    put_fixed(e, 1, wall_time);
    if (step != 0) put_int(e, 2, step);
    return e;
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint32_t be32(const unsigned char* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void flatten(const nlohmann::json& j, const std::string& prefix,
             std::vector<std::pair<std::string, float>>& out) {
    if (j.is_object()) {
        for (const auto& [k, v] : j.items()) {
            if (prefix.empty() && k == "step") continue;
            flatten(v, prefix.empty() ? k : prefix + "/" + k, out);
        }
    } else if (j.is_number()) {
        out.emplace_back(prefix, static_cast<float>(j.get<double>()));
    }
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
    static const std::array<uint32_t, 256> table = make_crc32c_table();
    const auto* p = static_cast<const unsigned char*>(data);
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
    const uint32_t c = crc32c(data, size);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

std::string tfrecord(const std::string& data) {
    std::string out;
    const uint64_t length = data.size();
    char raw[8];
    std::memcpy(raw, &length, 8);
    out.append(raw, 8);
    const uint32_t length_crc = masked_crc32c(raw, 8);
    out.append(reinterpret_cast<const char*>(&length_crc), 4);
    out += data;
    const uint32_t data_crc = masked_crc32c(data.data(), data.size());
    out.append(reinterpret_cast<const char*>(&data_crc), 4);
    return out;
}

std::string event_file_version(double wall_time) {
    std::string e = event_head(wall_time, 0);
    put_bytes(e, 3, "brain.Event:2");  // file_version = 3
    return e;
}

std::string event_session_start(double wall_time, int64_t step) {
    std::string session;
    put_int(session, 1, 1);  // SessionLog.status = START (1)
    std::string e = event_head(wall_time, step);
    put_bytes(e, 7, session);  // session_log = 7
    return e;
}

std::string event_scalars(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>>& values) {
    std::string summary;
    for (const auto& [tag, v] : values) {
        std::string value;
        put_bytes(value, 1, tag);      // Value.tag = 1
        put_fixed(value, 2, v);        // Value.simple_value = 2 (float)
        put_bytes(summary, 1, value);  // Summary.value = 1
    }
    std::string e = event_head(wall_time, step);
    put_bytes(e, 5, summary);  // summary = 5
    return e;
}

std::string event_image(double wall_time, int64_t step, const std::string& tag, int height, int width,
                        const std::string& png) {
    std::string image;
    put_int(image, 1, height);  // Image.height = 1
    put_int(image, 2, width);   // Image.width = 2
    put_int(image, 3, 3);       // Image.colorspace = 3 (RGB)
    put_bytes(image, 4, png);   // Image.encoded_image_string = 4
    std::string value;
    put_bytes(value, 1, tag);    // Value.tag = 1
    put_bytes(value, 4, image);  // Value.image = 4
    std::string summary;
    put_bytes(summary, 1, value);
    std::string e = event_head(wall_time, step);
    put_bytes(e, 5, summary);
    return e;
}

std::vector<std::pair<std::string, float>> json_scalars(const nlohmann::json& line) {
    std::vector<std::pair<std::string, float>> out;
    flatten(line, "", out);
    return out;
}

TensorBoardWriter::TensorBoardWriter(const fs::path& dir, int64_t resume_step) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail(kLog, "open", "cannot create the TensorBoard folder '{}': {}", dir.string(), ec.message());
    char host[256] = "localhost";
    ::gethostname(host, sizeof(host) - 1);
    const auto seconds = static_cast<int64_t>(now_seconds());
    file_ = dir / fmt::format("events.out.tfevents.{}.{}.{}.0", seconds, host, ::getpid());
    out_ = std::fopen(file_.c_str(), "wb");
    if (!out_) fail(kLog, "open", "cannot create '{}': {}", file_.string(), std::strerror(errno));
    write_event(event_file_version(now_seconds()));
    if (resume_step > 0) write_event(event_session_start(now_seconds(), resume_step + 1));
}

TensorBoardWriter::~TensorBoardWriter() {
    if (out_) std::fclose(out_);
}

void TensorBoardWriter::write_event(const std::string& event) {
    const std::string record = tfrecord(event);
    if (std::fwrite(record.data(), 1, record.size(), out_) != record.size() || std::fflush(out_) != 0) {
        if (!warned_)
            log::warn(kLog, "writing {} failed: {} (training goes on)", file_.string(), std::strerror(errno));
        warned_ = true;
    }
}

void TensorBoardWriter::write_metrics(const nlohmann::json& line) {
    if (!line.is_object() || !line.contains("step") || !line["step"].is_number_integer()) return;
    write_scalars(line["step"].get<int64_t>(), json_scalars(line));
}

void TensorBoardWriter::write_scalars(int64_t step,
                                      const std::vector<std::pair<std::string, float>>& values) {
    if (values.empty()) return;
    write_event(event_scalars(now_seconds(), step, values));
}

void TensorBoardWriter::write_png_file(int64_t step, const std::string& tag, const fs::path& png) {
    std::string bytes;
    try {
        bytes = sdk::read_file(png);
    } catch (const Error& e) {
        log::warn(kLog, "validation image not logged: {}", e.what());
        return;
    }
    static const unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() < 24 || std::memcmp(p, kSignature, 8) != 0 || std::memcmp(p + 12, "IHDR", 4) != 0) {
        log::warn(kLog, "{} is not a PNG; not logged to TensorBoard", png.string());
        return;
    }
    write_event(event_image(now_seconds(), step, tag, static_cast<int>(be32(p + 20)),
                            static_cast<int>(be32(p + 16)), bytes));
}

}  // namespace st::host::train
