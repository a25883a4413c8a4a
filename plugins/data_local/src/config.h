// Dataset entries of a multidatabackend.json (SimpleTuner's schema) and the run-level settings the
// local data backend reads. Parsing is strict: unknown keys are errors naming the closest known key,
// wrong types are errors naming the key, the value and the expected type.
// Reference: SimpleTuner data_backend/factory.py (keys, S2V auto-split), documentation/DATALOADER.md.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "st/options.h"

namespace st::plugins::data_local {

/// Largest `repeats` a dataset may ask for, and the most sample entries one epoch's order may hold
/// (members x (1 + repeats), 8 bytes each: 2^27 entries = 1 GiB).
constexpr int kMaxRepeats = 100000;
constexpr int64_t kMaxEpochEntries = int64_t{1} << 27;

enum class DatasetType { video, image, audio, text_embeds, conditioning_image_embeds };
const char* dataset_type_name(DatasetType type);

struct VideoSettings {
    int num_frames = 81;                           ///< frames trained (before the model's k*t+1 rounding)
    int min_frames = 0;                            ///< skip shorter clips; 0 = num_frames
    int max_frames = 0;                            ///< skip longer clips; 0 = no limit
    std::optional<bool> is_i2v;                    ///< unset = decided by the model flavour
    std::string bucket_strategy = "aspect_ratio";  ///< aspect_ratio | resolution_frames
    int frame_interval = 0;  ///< resolution_frames: frame counts rounded down to a multiple
};

struct AudioSettings {
    bool present = false;     ///< an `audio` block was given (or auto-split implied it)
    bool auto_split = false;  ///< create `<id>_audio` from the video's own audio track
    int sample_rate = 16000;
    int channels = 1;
    bool allow_zero_audio = false;              ///< video without audio -> zero waveform instead of skip
    double max_duration_seconds = 0.0;          ///< 0 = no limit on the audio window of a sample
    double duration_interval = 3.0;             ///< audio duration buckets (seconds)
    std::string truncation_mode = "beginning";  ///< beginning | end | random: which clip window
    std::string short_audio = "skip";           ///< audio track shorter than the window: skip | pad
    bool source_from_video = false;             ///< audio dataset fed by the video files themselves
};

struct DatasetConfig {
    std::string id;
    std::string type = "local";
    DatasetType dataset_type = DatasetType::image;
    bool is_default = false;
    bool disabled = false;
    /// `dataset_type: eval`: a held-out media dataset (video or image, see parse_datasets) that is
    /// discovered and cached like the others but only used for the evaluation loss, never trained on.
    bool eval = false;
    std::filesystem::path instance_data_dir;
    bool crop = false;
    std::string crop_style = "center";   ///< center | random | corner
    std::string crop_aspect = "square";  ///< square | preserve | closest | random
    std::vector<double> crop_aspect_buckets;
    double resolution = 0.0;
    std::string resolution_type = "pixel_area";  ///< pixel_area | pixel | area
    double minimum_image_size = 0.0;
    double maximum_image_size = 0.0;
    double target_downsample_size = 0.0;
    std::string caption_strategy = "filename";  ///< textfile | filename | instanceprompt
    std::vector<std::string> instance_prompts;
    bool prepend_instance_prompt = false;
    bool only_instance_prompt = false;
    bool disable_multiline_split = false;
    std::string metadata_backend = "discovery";
    int repeats = 0;
    std::filesystem::path cache_dir_vae;
    std::filesystem::path cache_dir;
    int write_batch_size = 0;  ///< 0 = run setting
    double probability = 1.0;
    VideoSettings video;
    AudioSettings audio;
    std::vector<std::string> s2v_datasets;
    /// Id of a conditioning_image_embeds dataset; with it (or cache_dir_conditioning_image_embeds) the
    /// model's `image_embeds` (Wan 2.1 I2V CLIP) are cached in that folder instead of the latent file.
    std::string conditioning_image_embeds;
    std::filesystem::path cache_dir_conditioning_image_embeds;  ///< resolved by parse_datasets
    bool auto_created = false;         ///< made by the S2V auto-split, not written by the user
    std::string source_video_dataset;  ///< for auto-created audio datasets
};

/// Run-level keys owned by data.local@1 (declared by the plugin) plus the trainer keys it reads.
struct RunDataSettings {
    std::filesystem::path config_dir;
    std::filesystem::path output_dir;
    std::string model_family;  ///< for {model_family} placeholders only
    /// The model's samples carry audio (DataOpenRequest::model_media): video datasets get an audio
    /// dataset split off them (SimpleTuner's S2V auto-split).
    bool model_takes_audio = false;
    uint64_t seed = 0;
    double resolution = 1024.0;
    std::string resolution_type = "pixel_area";
    double minimum_image_size = 0.0;
    int aspect_bucket_rounding = 2;
    int aspect_bucket_alignment = 0;  ///< 0 = the model's spatial multiple
    int vae_batch_size = 4;
    int write_batch_size = 128;
    bool compress_disk_cache = true;
    bool delete_problematic_images = false;
    bool disable_bucket_pruning = false;
    int train_batch_size = 1;
    int gradient_accumulation_steps = 1;
    int decode_threads = 0;  ///< 0 = every core
};

/// Reads the run settings from a resolved configuration (absent keys keep the defaults above).
RunDataSettings run_settings_from_config(const st::sdk::ConfigView& config);

/// Parses the entries (a JSON list of objects) into datasets: validates every key and type, fills
/// defaults, substitutes `{output_dir}`, `{model_family}`, `{id}`, resolves relative paths against
/// `run.config_dir`, and adds the S2V auto-split `<id>_audio` datasets. Disabled entries are kept
/// (with `disabled`) so the summary can list them. Throws st::Error naming the dataset and key.
std::vector<DatasetConfig> parse_datasets(const nlohmann::json& entries, const RunDataSettings& run);

/// Closest string by edit distance (for "did you mean" in errors); empty if `candidates` is empty.
std::string closest_key(const std::string& key, const std::vector<std::string>& candidates);

/// Replaces `{output_dir}`, `{model_family}`, `{id}` in `text`; other `{...}` are errors.
std::string substitute_placeholders(const std::string& text, const RunDataSettings& run,
                                    const std::string& id);

}  // namespace st::plugins::data_local
