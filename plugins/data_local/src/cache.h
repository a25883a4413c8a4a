// On-disk caches of encoded tensors (VAE latents, text embeddings, audio features): one safetensors
// file per item (written with st::sdk::save_safetensors), optionally gzip-compressed
// (`compress_disk_cache`, like SimpleTuner's _compress_torch), tagged with the full cache key in
// its metadata so a stale file (other content, settings or encoders) is detected and rebuilt.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "st/tensors.h"

namespace st::plugins::data_local {

/// Lower-case hex SHA-256 of a file's bytes / of a string (libavutil's SHA).
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_text(const std::string& text);

/// gzip (RFC 1952) of `data` / inverse. gunzip throws st::Error on corrupt input.
std::string gzip_bytes(const std::string& data);
std::string gunzip_bytes(const std::string& data);

/// Metadata key holding the cache key in every cache file.
inline constexpr const char* kCacheKeyMeta = "st.cache_key";

/// Writes `tensors` to `base` (+".gz" when compressing) atomically; removes the other variant.
/// `metadata` is stored beside the key (see cache_file_metadata).
void write_cache_file(const std::filesystem::path& base, const st::sdk::TensorMap& tensors,
                      const std::string& key, bool compress,
                      const std::map<std::string, std::string>& metadata = {});

/// Reads `base` or `base.gz` (whichever exists; content sniffed, so either works) if its key equals
/// `key`. Missing -> nullopt; stale -> nullopt; unreadable/corrupt -> deleted, logged, nullopt.
std::optional<st::sdk::TensorMap> read_cache_file(const std::filesystem::path& base, const std::string& key);

/// Whether a cache file with exactly this key exists (reads only the header).
bool cache_file_valid(const std::filesystem::path& base, const std::string& key);
/// The metadata of a cache file with exactly this key (nullopt as cache_file_valid() is false).
std::optional<std::map<std::string, std::string>> cache_file_metadata(const std::filesystem::path& base,
                                                                      const std::string& key);
/// Whether `base` or `base.gz` exists.
bool cache_file_exists(const std::filesystem::path& base);

}  // namespace st::plugins::data_local
