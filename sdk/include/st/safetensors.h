// safetensors files: a memory-mapped, lazily read, validated reader; an atomic writer; sharded
// checkpoints through `*.safetensors.index.json`.
//
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data buffer; offsets are relative to the start of the buffer.
//
// Every check the reader makes is a clear st::Error naming the file and the tensor: header length
// over the cap or past the end of the file, invalid JSON or UTF-8, unknown dtype, offsets out of
// range / overlapping / not matching dtype x shape. No read ever goes outside the mapping.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "st/tensors.h"

namespace st::sdk {

/// Largest header accepted: 100 MB, the cap of the format's reference implementation
/// (safetensors' MAX_HEADER_SIZE = 100,000,000 bytes).
constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

struct TensorInfo {
    std::string name;
    std::string dtype;           ///< as in the file: "F32", "BF16", ...
    at::ScalarType scalar_type;  ///< the LibTorch type used when loading
    std::vector<int64_t> shape;
    uint64_t begin = 0;  ///< byte offsets relative to the data buffer
    uint64_t end = 0;
    int64_t numel() const;
};

/// Maps safetensors dtype names to LibTorch types; throws st::Error for unknown names.
at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype);
std::string scalar_to_safetensors_dtype(at::ScalarType type);
size_t safetensors_dtype_size(const std::string& dtype);

/// Something that provides named tensors lazily: one safetensors file, a sharded checkpoint, ...
class TensorSource {
  public:
    virtual ~TensorSource();
    /// Description used in error messages (a file path).
    virtual std::string describe() const = 0;
    /// All tensors, sorted by name.
    virtual std::vector<TensorInfo> infos() const = 0;
    virtual bool contains(const std::string& name) const = 0;
    /// Reads one tensor into freshly allocated CPU memory, in its on-disk dtype.
    virtual at::Tensor load(const std::string& name) const = 0;
    /// The file(s)' `__metadata__` (string -> string). For shards: merged, first file wins.
    virtual std::map<std::string, std::string> metadata() const = 0;
    /// A read-only CPU tensor of `name` in its on-disk dtype that may alias the source's memory (a
    /// mapped file: no copy). Never write through it. Default: load().
    virtual at::Tensor view(const std::string& name) const;
    /// `name`'s bytes will not be needed soon: a mapped file drops their pages from this process
    /// (they are read back from the file when touched). Views stay valid. Default: nothing.
    virtual void release(const std::string& name) const;
};

class SafetensorsFile final : public TensorSource {
  public:
    /// Opens, maps and validates. Throws st::Error naming the file and the problem.
    static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
    /// The same over bytes already in memory (a decompressed cache file, ...): validated exactly as
    /// open() does; the file keeps `bytes` alive and view() aliases it. `label` names the data in
    /// errors and describe() (usually the file the bytes came from). Throws st::Error.
    static std::shared_ptr<SafetensorsFile> from_bytes(std::shared_ptr<const std::string> bytes,
                                                       const std::filesystem::path& label);
    ~SafetensorsFile() override;

    std::string describe() const override;
    std::vector<TensorInfo> infos() const override;
    bool contains(const std::string& name) const override;
    at::Tensor load(const std::string& name) const override;
    std::map<std::string, std::string> metadata() const override;

    const TensorInfo& info(const std::string& name) const;  ///< throws if absent
    /// Zero-copy, read-only CPU view of the mapped bytes (keeps the mapping alive). Only when the
    /// data is suitably aligned for its dtype; otherwise a copy.
    at::Tensor view(const std::string& name) const override;
    void release(const std::string& name) const override;
    const std::filesystem::path& path() const { return path_; }
    uint64_t file_size() const { return size_; }
    uint64_t header_size() const { return header_len_; }

  private:
    SafetensorsFile() = default;
    /// Validates the header of `size` bytes at `bytes` (owned through mapping_) and fills the index.
    void parse(const std::filesystem::path& path, const uint8_t* bytes, uint64_t size);
    std::filesystem::path path_;
    std::shared_ptr<void> mapping_;
    const uint8_t* data_ = nullptr;  ///< start of the data buffer
    bool file_mapped_ = false;       ///< open(): a read-only private mapping of the file
    uint64_t size_ = 0;
    uint64_t header_len_ = 0;
    std::map<std::string, TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

/// A checkpoint split over several files listed by `<name>.safetensors.index.json`
/// ({"metadata": {...}, "weight_map": {"tensor": "file-00001-of-00002.safetensors"}}).
class ShardedSafetensors final : public TensorSource {
  public:
    /// Opens the index and every shard it names (each validated). Throws st::Error naming the index,
    /// the missing shard, or a tensor the index lists but its shard lacks.
    static std::shared_ptr<ShardedSafetensors> open(const std::filesystem::path& index_json);
    std::string describe() const override;
    std::vector<TensorInfo> infos() const override;
    bool contains(const std::string& name) const override;
    at::Tensor load(const std::string& name) const override;
    std::map<std::string, std::string> metadata() const override;
    at::Tensor view(const std::string& name) const override;
    void release(const std::string& name) const override;

  private:
    std::filesystem::path index_;
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;  ///< by file name
    std::map<std::string, std::string> weight_map_;                   ///< tensor -> file name
};

/// Opens a file, an index json, or a directory holding exactly one checkpoint (one index json or
/// one *.safetensors file). Throws st::Error when ambiguous or absent.
std::shared_ptr<TensorSource> open_tensor_source(const std::filesystem::path& path);

/// Writes `tensors` (any device/dtype of the supported kinds; made contiguous on CPU) with
/// string metadata. Atomic: writes `<path>.tmp-<pid>` then fsyncs and renames over `path`, so a
/// reader never sees a partial file and a failed write leaves an existing file untouched.
void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// The bytes save_safetensors() would write, in memory (for callers that compress or send them).
/// `label` names the destination in errors. Throws st::Error like save_safetensors().
std::string safetensors_bytes(const TensorMap& tensors, const std::map<std::string, std::string>& metadata,
                              const std::string& label);

}  // namespace st::sdk
