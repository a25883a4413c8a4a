#include "config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "st/error.h"
#include "st/log.h"
#include "st/text.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local";

using nlohmann::json;

const std::vector<std::string> kEntryKeys = {"id",
                                             "type",
                                             "dataset_type",
                                             "default",
                                             "disabled",
                                             "disable",
                                             "instance_data_dir",
                                             "crop",
                                             "crop_style",
                                             "crop_aspect",
                                             "crop_aspect_buckets",
                                             "resolution",
                                             "resolution_type",
                                             "minimum_image_size",
                                             "maximum_image_size",
                                             "target_downsample_size",
                                             "caption_strategy",
                                             "instance_prompt",
                                             "prepend_instance_prompt",
                                             "only_instance_prompt",
                                             "disable_multiline_split",
                                             "metadata_backend",
                                             "repeats",
                                             "cache_dir_vae",
                                             "cache_dir",
                                             "write_batch_size",
                                             "probability",
                                             "video",
                                             "audio",
                                             "s2v_datasets",
                                             "conditioning_image_embeds",
                                             "cache_dir_conditioning_image_embeds",
                                             "source_from_video"};
const std::vector<std::string> kVideoKeys = {"num_frames", "min_frames",      "max_frames",
                                             "is_i2v",     "bucket_strategy", "frame_interval"};
const std::vector<std::string> kAudioKeys = {
    "auto_split",        "sample_rate",     "channels",    "allow_zero_audio", "max_duration_seconds",
    "duration_interval", "truncation_mode", "short_audio", "bucket_strategy",  "source_from_video"};

std::string json_type_name(const json& v) {
    if (v.is_boolean()) return "boolean";
    if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
    if (v.is_number_float()) return "number";
    if (v.is_string()) return "string";
    if (v.is_array()) return "list";
    if (v.is_object()) return "object";
    return "null";
}

/// Typed access to one JSON object with errors naming dataset, key, value and expected type.
class Reader {
  public:
    Reader(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

    void check_keys(const std::vector<std::string>& known) const {
        for (const auto& [key, value] : obj_.items()) {
            if (std::find(known.begin(), known.end(), key) != known.end()) continue;
            fail("data.local", "config", "{}: unknown key '{}' (did you mean '{}'?)", where_, key,
                 closest_key(key, known));
        }
    }
    bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }
    [[noreturn]] void bad(const char* key, const char* expected) const {
        fail("data.local", "config", "{}: key '{}' has value {} ({}); expected {}", where_, key,
             obj_.at(key).dump(), json_type_name(obj_.at(key)), expected);
    }
    bool boolean(const char* key, bool def) const {
        if (!has(key)) return def;
        const json& v = obj_.at(key);
        if (v.is_boolean()) return v.get<bool>();
        if (v.is_string()) {
            std::string s = v.get<std::string>();
            std::transform(s.begin(), s.end(), s.begin(), ::tolower);
            if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
            if (s == "false" || s == "0" || s == "no" || s == "off") return false;
        }
        bad(key, "a boolean (true/false)");
    }
    double number(const char* key, double def) const {
        if (!has(key)) return def;
        const json& v = obj_.at(key);
        if (v.is_number()) return v.get<double>();
        if (v.is_string()) {
            const std::string s = v.get<std::string>();
            char* end = nullptr;
            double d = std::strtod(s.c_str(), &end);
            if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d)) return d;
        }
        bad(key, "a number");
    }
    int integer(const char* key, int def) const {
        if (!has(key)) return def;
        double d = number(key, def);
        if (d != std::floor(d) || std::fabs(d) > 2e9) bad(key, "a whole number in [-2e9, 2e9]");
        return static_cast<int>(d);
    }
    std::string string(const char* key, const std::string& def,
                       const std::vector<std::string>& choices = {}) const {
        if (!has(key)) return def;
        const json& v = obj_.at(key);
        if (!v.is_string()) bad(key, "a string");
        std::string s = v.get<std::string>();
        if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) {
            std::string list;
            for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
            fail("data.local", "config", "{}: key '{}' has value \"{}\"; expected one of: {} (closest: '{}')",
                 where_, key, s, list, closest_key(s, choices));
        }
        return s;
    }
    std::vector<std::string> strings(const char* key) const {
        std::vector<std::string> out;
        if (!has(key)) return out;
        const json& v = obj_.at(key);
        if (v.is_string()) return {v.get<std::string>()};
        if (!v.is_array()) bad(key, "a string or a list of strings");
        for (const auto& e : v) {
            if (!e.is_string()) bad(key, "a list of strings");
            out.push_back(e.get<std::string>());
        }
        return out;
    }
    std::vector<double> numbers(const char* key) const {
        std::vector<double> out;
        if (!has(key)) return out;
        const json& v = obj_.at(key);
        if (!v.is_array()) bad(key, "a list of numbers");
        for (const auto& e : v) {
            if (!e.is_number()) bad(key, "a list of numbers");
            out.push_back(e.get<double>());
        }
        return out;
    }
    const json& object(const char* key) const {
        if (!obj_.at(key).is_object()) bad(key, "an object");
        return obj_.at(key);
    }
    void require_positive(const char* key, double value, bool allow_zero) const {
        if (value < 0 || (!allow_zero && value == 0))
            fail("data.local", "config", "{}: key '{}' must be {} (got {})", where_, key,
                 allow_zero ? ">= 0" : "> 0", value);
    }
    void require_range(const char* key, double value, double lo, double hi) const {
        if (value < lo || value > hi)
            fail("data.local", "config", "{}: key '{}' must be in [{}, {}] (got {})", where_, key, lo, hi,
                 value);
    }
    const std::string& where() const { return where_; }

  private:
    const json& obj_;
    std::string where_;
};

std::filesystem::path resolve_path(const std::string& raw, const RunDataSettings& run,
                                   const std::string& id) {
    std::filesystem::path p(substitute_placeholders(raw, run, id));
    if (p.is_relative() && !run.config_dir.empty()) p = run.config_dir / p;
    return p.lexically_normal();
}

DatasetType parse_dataset_type(const Reader& r, bool* eval) {
    const std::string t =
        r.string("dataset_type", "image",
                 {"video", "image", "audio", "text_embeds", "conditioning_image_embeds", "eval"});
    // An eval dataset holds media like a training dataset: video when it has a video block (or, decided
    // in parse_datasets, when the training datasets are videos), else images.
    *eval = t == "eval";
    if (*eval) return r.has("video") ? DatasetType::video : DatasetType::image;
    if (t == "video") return DatasetType::video;
    if (t == "audio") return DatasetType::audio;
    if (t == "text_embeds") return DatasetType::text_embeds;
    if (t == "conditioning_image_embeds") return DatasetType::conditioning_image_embeds;
    return DatasetType::image;
}

void parse_video(const json& obj, const std::string& where, VideoSettings& v) {
    Reader r(obj, where + " video");
    r.check_keys(kVideoKeys);
    v.num_frames = r.integer("num_frames", v.num_frames);
    r.require_positive("num_frames", v.num_frames, false);
    v.min_frames = r.integer("min_frames", v.num_frames);
    v.max_frames = r.integer("max_frames", 0);
    r.require_positive("max_frames", v.max_frames, true);
    if (r.has("is_i2v")) v.is_i2v = r.boolean("is_i2v", false);
    v.bucket_strategy = r.string("bucket_strategy", v.bucket_strategy, {"aspect_ratio", "resolution_frames"});
    v.frame_interval = r.integer("frame_interval", 0);
    r.require_positive("frame_interval", v.frame_interval, true);
    if (v.min_frames < v.num_frames)
        fail("data.local", "config",
             "{} video: min_frames {} is below num_frames {}; it must be >= num_frames", where, v.min_frames,
             v.num_frames);
    if (v.max_frames > 0 && v.max_frames < v.min_frames)
        fail("data.local", "config", "{} video: max_frames {} is below min_frames {}", where, v.max_frames,
             v.min_frames);
}

void parse_audio(const json& obj, const std::string& where, AudioSettings& a) {
    Reader r(obj, where + " audio");
    r.check_keys(kAudioKeys);
    a.present = true;
    a.auto_split = r.boolean("auto_split", a.auto_split);
    a.sample_rate = r.integer("sample_rate", a.sample_rate);
    r.require_positive("sample_rate", a.sample_rate, false);
    a.channels = r.integer("channels", a.channels);
    if (a.channels != 1)
        fail("data.local", "config",
             "{} audio: channels {} is not supported; the audio encoders take mono (1)", where, a.channels);
    a.allow_zero_audio = r.boolean("allow_zero_audio", a.allow_zero_audio);
    a.max_duration_seconds = r.number("max_duration_seconds", 0.0);
    r.require_positive("max_duration_seconds", a.max_duration_seconds, true);
    a.duration_interval = r.number("duration_interval", a.duration_interval);
    r.require_positive("duration_interval", a.duration_interval, false);
    a.truncation_mode = r.string("truncation_mode", a.truncation_mode, {"beginning", "end", "random"});
    a.short_audio = r.string("short_audio", a.short_audio, {"skip", "pad"});
    r.string("bucket_strategy", "duration", {"duration"});
    a.source_from_video = r.boolean("source_from_video", a.source_from_video);
}

DatasetConfig parse_entry(const json& entry, size_t index, const RunDataSettings& run) {
    if (!entry.is_object())
        fail("data.local", "config", "dataset entry #{} is {} ({}); expected an object", index, entry.dump(),
             json_type_name(entry));
    if (!entry.contains("id") || !entry.at("id").is_string() || entry.at("id").get<std::string>().empty())
        fail("data.local", "config", "dataset entry #{} has no string 'id' (every dataset needs a unique id)",
             index);
    DatasetConfig d;
    d.id = entry.at("id").get<std::string>();
    // An id names caches and metadata files inside the run's folders ({id} in cache paths): a name, never
    // a path (issue 18: "../../../../tmp/x" wrote outside them).
    if (d.id.find_first_of("/\\") != std::string::npos || d.id.find('\0') != std::string::npos ||
        d.id == "." || d.id.find("..") != std::string::npos)
        fail(
            "data.local", "config",
            "dataset entry #{} has id '{}': an id is a name used in cache and metadata file names, so it may "
            "not contain '/', '\\' or '..'",
            index, d.id);
    const std::string where = fmt::format("dataset '{}'", d.id);
    Reader r(entry, where);
    r.check_keys(kEntryKeys);
    d.type = r.string("type", "local");
    if (d.type != "local")
        fail("data.local", "config", "{}: type '{}' is not handled by data.local@1 (only 'local')", where,
             d.type);
    d.dataset_type = parse_dataset_type(r, &d.eval);
    d.is_default = r.boolean("default", false);
    d.disabled = r.boolean("disabled", false) || r.boolean("disable", false);
    if (r.has("instance_data_dir"))
        d.instance_data_dir = resolve_path(r.string("instance_data_dir", ""), run, d.id);
    d.crop = r.boolean("crop", false);
    d.crop_style = r.string("crop_style", d.crop_style, {"center", "centre", "random", "corner"});
    if (d.crop_style == "centre") d.crop_style = "center";
    d.crop_aspect = r.string("crop_aspect", d.crop_aspect, {"square", "preserve", "closest", "random"});
    d.crop_aspect_buckets = r.numbers("crop_aspect_buckets");
    if (d.crop && (d.crop_aspect == "closest" || d.crop_aspect == "random") && d.crop_aspect_buckets.empty())
        fail("data.local", "config", "{}: crop_aspect '{}' needs a non-empty 'crop_aspect_buckets' list",
             where, d.crop_aspect);
    d.resolution = r.number("resolution", run.resolution);
    r.require_positive("resolution", d.resolution, false);
    d.resolution_type = r.string("resolution_type", run.resolution_type, {"pixel_area", "pixel", "area"});
    d.minimum_image_size = r.number("minimum_image_size", run.minimum_image_size);
    d.maximum_image_size = r.number("maximum_image_size", 0.0);
    d.target_downsample_size = r.number("target_downsample_size", 0.0);
    d.caption_strategy = r.string("caption_strategy", "filename", {"textfile", "filename", "instanceprompt"});
    d.instance_prompts = r.strings("instance_prompt");
    d.prepend_instance_prompt = r.boolean("prepend_instance_prompt", false);
    d.only_instance_prompt = r.boolean("only_instance_prompt", false);
    d.disable_multiline_split = r.boolean("disable_multiline_split", false);
    if ((d.caption_strategy == "instanceprompt" || d.prepend_instance_prompt || d.only_instance_prompt) &&
        d.instance_prompts.empty())
        fail("data.local", "config",
             "{}: caption_strategy '{}' / prepend_instance_prompt / only_instance_prompt "
             "need 'instance_prompt'",
             where, d.caption_strategy);
    d.metadata_backend = r.string("metadata_backend", "discovery", {"discovery"});
    d.repeats = r.integer("repeats", 0);
    r.require_range("repeats", d.repeats, 0, kMaxRepeats);
    if (r.has("cache_dir_vae")) d.cache_dir_vae = resolve_path(r.string("cache_dir_vae", ""), run, d.id);
    if (r.has("cache_dir")) d.cache_dir = resolve_path(r.string("cache_dir", ""), run, d.id);
    d.write_batch_size = r.integer("write_batch_size", 0);
    r.require_positive("write_batch_size", d.write_batch_size, true);
    d.probability = r.number("probability", 1.0);
    r.require_positive("probability", d.probability, true);
    d.s2v_datasets = r.strings("s2v_datasets");
    d.conditioning_image_embeds = r.string("conditioning_image_embeds", "");
    if (r.has("cache_dir_conditioning_image_embeds"))
        d.cache_dir_conditioning_image_embeds =
            resolve_path(r.string("cache_dir_conditioning_image_embeds", ""), run, d.id);
    if (r.has("video")) {
        if (d.dataset_type != DatasetType::video)
            fail("data.local", "config", "{}: a 'video' block needs dataset_type 'video' (is '{}')", where,
                 dataset_type_name(d.dataset_type));
        parse_video(r.object("video"), where, d.video);
    }
    if (r.has("audio")) {
        if (d.dataset_type != DatasetType::video && d.dataset_type != DatasetType::audio)
            fail("data.local", "config",
                 "{}: an 'audio' block needs dataset_type 'video' or 'audio' (is '{}')", where,
                 dataset_type_name(d.dataset_type));
        parse_audio(r.object("audio"), where, d.audio);
    }
    d.audio.source_from_video = r.boolean("source_from_video", d.audio.source_from_video);

    const bool media = d.dataset_type == DatasetType::video || d.dataset_type == DatasetType::image ||
                       (d.dataset_type == DatasetType::audio && !d.audio.source_from_video);
    if (media && !d.disabled) {
        if (d.instance_data_dir.empty())
            fail("data.local", "config", "{}: 'instance_data_dir' is required for dataset_type '{}'", where,
                 dataset_type_name(d.dataset_type));
        if (d.cache_dir_vae.empty()) {
            d.cache_dir_vae = resolve_path("{output_dir}/cache/vae/{model_family}/{id}", run, d.id);
            log::info(kLog, "{}: no cache_dir_vae given, using {}", where, d.cache_dir_vae.string());
        }
    }
    if (d.dataset_type == DatasetType::text_embeds && d.cache_dir.empty())
        fail("data.local", "config", "{}: dataset_type 'text_embeds' needs 'cache_dir'", where);
    if (d.dataset_type == DatasetType::conditioning_image_embeds && d.cache_dir.empty())
        fail("data.local", "config", "{}: dataset_type 'conditioning_image_embeds' needs 'cache_dir'", where);
    return d;
}

}  // namespace

const char* dataset_type_name(DatasetType type) {
    switch (type) {
        case DatasetType::video:
            return "video";
        case DatasetType::image:
            return "image";
        case DatasetType::audio:
            return "audio";
        case DatasetType::text_embeds:
            return "text_embeds";
        case DatasetType::conditioning_image_embeds:
            return "conditioning_image_embeds";
    }
    return "?";
}

std::string closest_key(const std::string& key, const std::vector<std::string>& candidates) {
    return st::sdk::closest_name(key, candidates);
}

std::string substitute_placeholders(const std::string& text, const RunDataSettings& run,
                                    const std::string& id) {
    std::string out;
    for (size_t i = 0; i < text.size();) {
        if (text[i] != '{') {
            out += text[i++];
            continue;
        }
        size_t close = text.find('}', i);
        if (close == std::string::npos) fail("data.local", "config", "path \"{}\": unbalanced '{{'", text);
        const std::string name = text.substr(i + 1, close - i - 1);
        if (name == "output_dir")
            out += run.output_dir.string();
        else if (name == "model_family")
            out += run.model_family;
        else if (name == "id")
            out += id;
        else
            fail("data.local", "config",
                 "path \"{}\": unknown placeholder '{{{}}}' (known: {{output_dir}}, "
                 "{{model_family}}, {{id}})",
                 text, name);
        i = close + 1;
    }
    return out;
}

RunDataSettings run_settings_from_config(const st::sdk::ConfigView& c) {
    RunDataSettings s;
    if (auto v = c.opt_float("resolution")) s.resolution = *v;
    if (auto v = c.opt_string("resolution_type")) s.resolution_type = *v;
    if (auto v = c.opt_float("minimum_image_size")) s.minimum_image_size = *v;
    if (auto v = c.opt_int("aspect_bucket_rounding")) s.aspect_bucket_rounding = static_cast<int>(*v);
    if (auto v = c.opt_int("aspect_bucket_alignment")) s.aspect_bucket_alignment = static_cast<int>(*v);
    if (auto v = c.opt_int("vae_batch_size")) s.vae_batch_size = static_cast<int>(*v);
    if (auto v = c.opt_int("write_batch_size")) s.write_batch_size = static_cast<int>(*v);
    if (c.has("compress_disk_cache")) s.compress_disk_cache = c.get_bool("compress_disk_cache");
    if (c.has("delete_problematic_images"))
        s.delete_problematic_images = c.get_bool("delete_problematic_images");
    if (c.has("disable_bucket_pruning")) s.disable_bucket_pruning = c.get_bool("disable_bucket_pruning");
    if (auto v = c.opt_int("train_batch_size")) s.train_batch_size = static_cast<int>(*v);
    if (auto v = c.opt_int("gradient_accumulation_steps"))
        s.gradient_accumulation_steps = static_cast<int>(*v);
    if (auto v = c.opt_int("data_decode_threads")) s.decode_threads = static_cast<int>(*v);
    if (s.aspect_bucket_rounding < 1 || s.aspect_bucket_rounding > 9)
        fail("data.local", "config", "aspect_bucket_rounding {} is outside 1..9", s.aspect_bucket_rounding);
    if (s.vae_batch_size < 1)
        fail("data.local", "config", "vae_batch_size {} must be >= 1", s.vae_batch_size);
    if (s.write_batch_size < 1)
        fail("data.local", "config", "write_batch_size {} must be >= 1", s.write_batch_size);
    return s;
}

namespace {

/// Eval datasets without a video block hold what the training datasets hold: videos when any enabled
/// training dataset is a video dataset (a video model is evaluated on clips), else images.
void resolve_eval_media(std::vector<DatasetConfig>& datasets) {
    const bool video_run = std::any_of(datasets.begin(), datasets.end(), [](const DatasetConfig& d) {
        return !d.eval && !d.disabled && d.dataset_type == DatasetType::video;
    });
    for (auto& d : datasets) {
        if (!d.eval) continue;
        if (video_run && d.dataset_type == DatasetType::image) {
            d.dataset_type = DatasetType::video;
            log::info(kLog, "dataset '{}' (dataset_type eval): video clips, like the training datasets",
                      d.id);
        } else {
            log::info(kLog, "dataset '{}' (dataset_type eval): {} files, held out for the evaluation loss",
                      d.id, dataset_type_name(d.dataset_type));
        }
    }
}

}  // namespace

std::vector<DatasetConfig> parse_datasets(const nlohmann::json& entries, const RunDataSettings& run) {
    if (!entries.is_array())
        fail("data.local", "config", "the dataset config must be a JSON list of dataset objects, got {}",
             json_type_name(entries));
    std::vector<DatasetConfig> out;
    std::set<std::string> ids;
    for (size_t i = 0; i < entries.size(); ++i) {
        DatasetConfig d = parse_entry(entries[i], i, run);
        if (!ids.insert(d.id).second) fail("data.local", "config", "dataset id '{}' is used twice", d.id);
        out.push_back(std::move(d));
    }
    resolve_eval_media(out);
    // S2V auto-split (SimpleTuner factory.py, for wan_s2v): when the model's samples carry audio, every
    // video dataset gets `<id>_audio` unless it disables auto_split or links s2v_datasets itself.
    const bool s2v = run.model_takes_audio;
    std::vector<DatasetConfig> added;
    for (auto& d : out) {
        if (d.dataset_type != DatasetType::video || d.disabled) continue;
        const bool explicit_split = d.audio.present;
        if (!explicit_split && s2v && d.s2v_datasets.empty()) {
            d.audio.present = true;
            d.audio.auto_split = true;
            log::info(
                kLog,
                "dataset '{}': the model's samples carry audio -> audio.auto_split on (no audio block given)",
                d.id);
        }
        if (!d.audio.auto_split) continue;
        if (!d.s2v_datasets.empty())
            fail("data.local", "config", "dataset '{}': audio.auto_split and s2v_datasets are exclusive",
                 d.id);
        DatasetConfig a;
        a.id = d.id + "_audio";
        if (ids.count(a.id))
            fail("data.local", "config", "dataset '{}': auto-split wants to create '{}', but that id exists",
                 d.id, a.id);
        a.dataset_type = DatasetType::audio;
        a.audio = d.audio;
        a.audio.source_from_video = true;
        a.probability = 0.0;
        a.instance_data_dir = d.instance_data_dir;
        a.cache_dir_vae = d.cache_dir_vae.parent_path() / "audio" / a.id;
        a.auto_created = true;
        a.source_video_dataset = d.id;
        d.s2v_datasets = {a.id};
        ids.insert(a.id);
        log::info(kLog, "dataset '{}': created audio dataset '{}' (cache {})", d.id, a.id,
                  a.cache_dir_vae.string());
        added.push_back(std::move(a));
    }
    for (auto& a : added) out.push_back(std::move(a));
    for (const auto& d : out) {
        for (const auto& link : d.s2v_datasets) {
            auto it =
                std::find_if(out.begin(), out.end(), [&](const DatasetConfig& o) { return o.id == link; });
            if (it == out.end())
                fail("data.local", "config",
                     "dataset '{}': s2v_datasets names '{}', which is not a dataset "
                     "(closest: '{}')",
                     d.id, link, closest_key(link, std::vector<std::string>(ids.begin(), ids.end())));
            if (it->dataset_type != DatasetType::audio)
                fail("data.local", "config",
                     "dataset '{}': s2v_datasets entry '{}' has dataset_type '{}', "
                     "expected 'audio'",
                     d.id, link, dataset_type_name(it->dataset_type));
        }
    }
    // Wan 2.1 I2V CLIP embeddings: a media dataset naming a conditioning_image_embeds dataset stores
    // them under that dataset's cache_dir/<own id>/ (unless it sets cache_dir_conditioning_image_embeds).
    for (auto& d : out) {
        if (d.conditioning_image_embeds.empty() || d.disabled) continue;
        auto it = std::find_if(out.begin(), out.end(),
                               [&](const DatasetConfig& o) { return o.id == d.conditioning_image_embeds; });
        if (it == out.end())
            fail("data.local", "config",
                 "dataset '{}': conditioning_image_embeds names '{}', which is not a dataset (closest: '{}')",
                 d.id, d.conditioning_image_embeds,
                 closest_key(d.conditioning_image_embeds, std::vector<std::string>(ids.begin(), ids.end())));
        if (it->dataset_type != DatasetType::conditioning_image_embeds)
            fail("data.local", "config",
                 "dataset '{}': conditioning_image_embeds entry '{}' has dataset_type '{}', expected "
                 "'conditioning_image_embeds'",
                 d.id, it->id, dataset_type_name(it->dataset_type));
        if (d.cache_dir_conditioning_image_embeds.empty())
            d.cache_dir_conditioning_image_embeds = it->cache_dir / d.id;
    }
    return out;
}

}  // namespace st::plugins::data_local
