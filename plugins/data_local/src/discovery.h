// Discovery (SimpleTuner's `metadata_backend: discovery`): walk a dataset folder, probe every media
// file (in parallel, memoised by size + mtime in `<cache_dir_vae>/st_metadata_<id>.json`), apply
// captions, size/frame limits and the S2V audio pairing, and plan each sample's bucket, frame window
// and crop. Bad files become SkipRecords (one log line each), never exceptions.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "geometry.h"
#include "media.h"

namespace st::plugins::data_local {

struct SkipRecord {
    std::string dataset;
    std::string file;
    std::string reason;
    bool bad_media = false;  ///< the file itself is broken (candidate for delete_problematic_images)
};

/// Where a sample's audio comes from (S2V) and which span of it belongs to the sample.
struct AudioPlan {
    bool enabled = false;
    std::filesystem::path source;  ///< video itself (auto-split) or the matched audio file
    bool zero = false;             ///< allow_zero_audio: silence instead of a track
    double start = 0.0;            ///< window start on the source's timeline (seconds)
    double duration = 0.0;         ///< window length = frames / fps
    int sample_rate = 16000;
    double coverage = 1.0;  ///< fraction of the window the track covers (rest zero-padded)
    std::string dataset;    ///< the audio dataset id
    std::filesystem::path cache_dir;
};

struct Sample {
    std::string dataset;
    std::string rel;  ///< path relative to instance_data_dir (the stable id)
    std::filesystem::path path;
    std::vector<std::string> captions;
    std::string content_hash;
    MediaInfo info;
    ResizePlan plan;
    int64_t first_frame = 0;  ///< grid index of the window start
    int frames = 1;
    std::string bucket;
    AudioPlan audio;
    nlohmann::json meta() const;
};

struct DiscoveryContext {
    const RunDataSettings* run = nullptr;
    const std::vector<DatasetConfig>* all = nullptr;  ///< for s2v_datasets links
    int alignment = 16;
    int temporal_multiple = 4;
    int threads = 1;
    AspectResolutionMaps* aspect_maps = nullptr;  ///< SimpleTuner's per-aspect size memo (null: none)
};

struct DiscoveryResult {
    std::vector<Sample> samples;
    std::vector<SkipRecord> skipped;
};

/// File extensions (lower case, with dot) each dataset type picks up.
bool is_video_extension(const std::string& ext);
bool is_image_extension(const std::string& ext);
bool is_audio_extension(const std::string& ext);

/// Discovers one video or image dataset.
DiscoveryResult discover_dataset(const DatasetConfig& ds, const DiscoveryContext& ctx);

/// Lists media files under `root` (recursive, following directory symlinks once; loops, fifos,
/// dangling links and non-regular files become skips). `accept` filters by lower-case extension.
std::vector<std::filesystem::path> walk_media(const std::filesystem::path& root, const std::string& dataset,
                                              bool (*accept)(const std::string&),
                                              std::vector<SkipRecord>* skipped);

/// Stable pseudo-random number in [0, 1) from a seed and a string (for per-file random choices).
double unit_hash(uint64_t seed, const std::string& text, int salt);

}  // namespace st::plugins::data_local
