#include "discovery.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "cache.h"
#include "captions.h"
#include "parallel.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local";
// 2: display sizes honour the pixel aspect ratio. 3: MPEG-PS/ES frame times, even display widths.
constexpr int kMemoVersion = 3;

std::string lower_ext(const std::filesystem::path& p) {
    std::string e = p.extension().string();
    std::transform(e.begin(), e.end(), e.begin(), ::tolower);
    return e;
}

nlohmann::json info_to_json(const MediaInfo& m) {
    return {{"has_video", m.has_video},
            {"still", m.is_still_image},
            {"coded", {m.coded.w, m.coded.h}},
            {"display", {m.display.w, m.display.h}},
            {"rotation", m.rotation},
            {"pixel_aspect", m.pixel_aspect},
            {"fps", m.fps},
            {"start", m.start_time},
            {"end", m.end_time},
            {"packets", m.packets},
            {"grid_frames", m.grid_frames},
            {"vfr", m.variable_frame_rate},
            {"frame_clock", m.frame_clock},
            {"video_codec", m.video_codec},
            {"has_audio", m.has_audio},
            {"audio_start", m.audio_start},
            {"audio_duration", m.audio_duration},
            {"audio_sample_rate", m.audio_sample_rate},
            {"audio_channels", m.audio_channels},
            {"audio_codec", m.audio_codec}};
}

MediaInfo info_from_json(const nlohmann::json& j) {
    MediaInfo m;
    m.has_video = j.at("has_video");
    m.is_still_image = j.at("still");
    m.coded = {j.at("coded")[0], j.at("coded")[1]};
    m.display = {j.at("display")[0], j.at("display")[1]};
    m.rotation = j.at("rotation");
    m.pixel_aspect = j.value("pixel_aspect", 1.0);
    m.fps = j.at("fps");
    m.start_time = j.at("start");
    m.end_time = j.at("end");
    m.packets = j.at("packets");
    m.grid_frames = j.at("grid_frames");
    m.variable_frame_rate = j.at("vfr");
    m.frame_clock = j.at("frame_clock");
    m.video_codec = j.at("video_codec");
    m.has_audio = j.at("has_audio");
    m.audio_start = j.at("audio_start");
    m.audio_duration = j.at("audio_duration");
    m.audio_sample_rate = j.at("audio_sample_rate");
    m.audio_channels = j.at("audio_channels");
    m.audio_codec = j.at("audio_codec");
    return m;
}

struct FileStamp {
    int64_t size = -1;
    int64_t mtime_ns = 0;
};

FileStamp stamp_of(const std::filesystem::path& p) {
    struct stat s {};
    if (::stat(p.c_str(), &s) != 0) return {};
    return {static_cast<int64_t>(s.st_size),
            static_cast<int64_t>(s.st_mtim.tv_sec) * 1000000000 + s.st_mtim.tv_nsec};
}

/// Memo of probe results: `<cache_dir_vae>/st_metadata_<id>.json` (our own name, so SimpleTuner's
/// aspect_ratio_bucket_*.json files in a shared folder are never overwritten).
class ProbeMemo {
  public:
    explicit ProbeMemo(std::filesystem::path file) : file_(std::move(file)) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(file_, ec)) return;
        try {
            std::ifstream in(file_);
            std::stringstream text;
            text << in.rdbuf();
            st::sdk::check_json_limits(text.str(), file_.string(), "data.local");
            nlohmann::json j = nlohmann::json::parse(text.str());
            if (j.value("version", 0) == kMemoVersion) files_ = j.at("files");
        } catch (const std::exception& e) {
            log::warn(kLog, "{}: unreadable metadata cache ignored ({})", file_.string(), e.what());
        }
    }
    bool lookup(const std::string& rel, FileStamp st, MediaInfo* info, std::string* hash) const {
        auto it = files_.find(rel);
        if (it == files_.end()) return false;
        try {
            if (it->at("size") != st.size || it->at("mtime_ns") != st.mtime_ns) return false;
            *info = info_from_json(it->at("info"));
            *hash = it->at("sha256");
            return true;
        } catch (const std::exception&) {
            return false;
        }
    }
    void store(const std::string& rel, FileStamp st, const MediaInfo& info, const std::string& hash) {
        fresh_[rel] = {
            {"size", st.size}, {"mtime_ns", st.mtime_ns}, {"sha256", hash}, {"info", info_to_json(info)}};
    }
    void save() const {
        std::error_code ec;
        std::filesystem::create_directories(file_.parent_path(), ec);
        const auto tmp = file_.string() + ".tmp";
        {
            std::ofstream out(tmp);
            out << nlohmann::json{{"version", kMemoVersion}, {"files", fresh_}}.dump(1);
            if (!out) {
                log::warn(kLog, "{}: cannot write the metadata cache", tmp);
                return;
            }
        }
        std::filesystem::rename(tmp, file_, ec);
    }

  private:
    std::filesystem::path file_;
    nlohmann::json files_ = nlohmann::json::object();
    nlohmann::json fresh_ = nlohmann::json::object();
};

struct Probe {
    bool ok = false;
    MediaInfo info;
    std::string hash;
    std::string error;
};

/// Stem -> audio file of a manual S2V audio dataset.
std::map<std::string, std::filesystem::path> audio_stems(const DatasetConfig& ads) {
    std::map<std::string, std::filesystem::path> out;
    std::vector<SkipRecord> ignored;
    for (const auto& p : walk_media(ads.instance_data_dir, ads.id, is_audio_extension, &ignored)) {
        const std::string stem = p.stem().string();
        if (!out.emplace(stem, p).second)
            log::warn(kLog, "dataset '{}': two audio files share the stem '{}' ({} and {}); using the first",
                      ads.id, stem, out[stem].string(), p.string());
    }
    for (const auto& s : ignored)
        log::warn(kLog, "dataset '{}': skipped {}: {}", s.dataset, s.file, s.reason);
    return out;
}

}  // namespace

bool is_video_extension(const std::string& e) {
    static const std::set<std::string> k = {".mp4", ".mov",  ".mkv", ".webm", ".avi", ".m4v", ".flv", ".wmv",
                                            ".mpg", ".mpeg", ".ts",  ".m2ts", ".3gp", ".ogv", ".gif"};
    return k.count(e) > 0;
}
bool is_image_extension(const std::string& e) {
    static const std::set<std::string> k = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"};
    return k.count(e) > 0;
}
bool is_audio_extension(const std::string& e) {
    static const std::set<std::string> k = {".wav", ".mp3", ".flac", ".ogg", ".m4a"};
    return k.count(e) > 0;
}

double unit_hash(uint64_t seed, const std::string& text, int salt) {
    // FNV-1a over the text, then a splitmix64 finaliser mixed with seed and salt.
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    uint64_t z = h ^ (seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(salt + 1));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) / static_cast<double>(1ull << 53);
}

nlohmann::json Sample::meta() const {
    nlohmann::json m = {{"fps", info.fps},
                        {"frames", frames},
                        {"first_frame", first_frame},
                        {"start_seconds", info.start_time + first_frame / info.fps},
                        {"source_size", {info.display.w, info.display.h}},
                        {"rotation", info.rotation},
                        {"resized", {plan.resized.w, plan.resized.h}},
                        {"crop", {plan.crop_x, plan.crop_y}},
                        {"target_size", {plan.target.w, plan.target.h}},
                        {"aspect_ratio", plan.aspect},
                        {"variable_frame_rate", info.variable_frame_rate},
                        {"captions", captions.size()}};
    if (audio.enabled)
        m["audio"] = {{"dataset", audio.dataset},   {"source", audio.source.string()},
                      {"zero", audio.zero},         {"start", audio.start},
                      {"duration", audio.duration}, {"coverage", audio.coverage}};
    return m;
}

std::vector<std::filesystem::path> walk_media(const std::filesystem::path& root, const std::string& dataset,
                                              bool (*accept)(const std::string&),
                                              std::vector<SkipRecord>* skipped) {
    std::vector<std::filesystem::path> out;
    std::set<std::filesystem::path> visited;
    std::error_code ec;
    if (!std::filesystem::is_directory(root, ec))
        throw Error(
            "data.local", "discovery",
            fmt::format("dataset '{}': instance_data_dir {} is not a directory", dataset, root.string()));
    std::function<void(const std::filesystem::path&)> visit = [&](const std::filesystem::path& dir) {
        std::error_code e;
        const auto canon = std::filesystem::canonical(dir, e);
        if (e) {
            skipped->push_back(
                {dataset, dir.string(), "folder cannot be resolved (" + e.message() + ")", false});
            return;
        }
        if (!visited.insert(canon).second) {
            skipped->push_back({dataset, dir.string(),
                                "symlink loop (folder already visited as " + canon.string() + ")", false});
            return;
        }
        std::vector<std::filesystem::directory_entry> entries;
        for (std::filesystem::directory_iterator it(dir, e), end; !e && it != end; it.increment(e))
            entries.push_back(*it);
        if (e)
            skipped->push_back(
                {dataset, dir.string(), "folder cannot be listed (" + e.message() + ")", false});
        std::sort(entries.begin(), entries.end(),
                  [](const auto& a, const auto& b) { return a.path().filename() < b.path().filename(); });
        for (const auto& entry : entries) {
            const std::string name = entry.path().filename().string();
            if (name.empty() || name[0] == '.') continue;
            std::error_code se;
            const auto st = entry.status(se);  // follows symlinks
            const std::string ext = lower_ext(entry.path());
            if (se || st.type() == std::filesystem::file_type::not_found) {
                std::error_code le;
                if (accept(ext) || entry.is_symlink(le))
                    skipped->push_back({dataset, entry.path().string(),
                                        "unreadable: broken or looping symlink (" +
                                            (se ? se.message() : std::string("target does not exist")) + ")",
                                        false});
                continue;
            }
            if (st.type() == std::filesystem::file_type::directory) {
                visit(entry.path());
                continue;
            }
            if (!accept(ext)) continue;
            if (st.type() != std::filesystem::file_type::regular) {
                skipped->push_back({dataset, entry.path().string(),
                                    "unreadable: not a regular file (fifo, socket or device)", false});
                continue;
            }
            out.push_back(entry.path());
        }
    };
    visit(root);
    return out;
}

DiscoveryResult discover_dataset(const DatasetConfig& ds, const DiscoveryContext& ctx) {
    DiscoveryResult result;
    const RunDataSettings& run = *ctx.run;
    const bool video = ds.dataset_type == DatasetType::video;
    const auto files = walk_media(ds.instance_data_dir, ds.id,
                                  video ? is_video_extension : is_image_extension, &result.skipped);
    ProbeMemo memo(ds.cache_dir_vae / fmt::format("st_metadata_{}.json", ds.id));
    std::vector<Probe> probes(files.size());
    {
        log::Progress progress(kLog, "probe " + ds.id, static_cast<int64_t>(files.size()), "files");
        std::mutex mu;
        parallel_for(static_cast<int64_t>(files.size()), ctx.threads, [&](int64_t i) {
            Probe& p = probes[i];
            const auto& file = files[i];
            const std::string rel = std::filesystem::relative(file, ds.instance_data_dir).generic_string();
            const FileStamp st = stamp_of(file);
            bool hit;
            {
                std::lock_guard<std::mutex> lock(mu);
                hit = memo.lookup(rel, st, &p.info, &p.hash);
            }
            if (!hit) {
                try {
                    p.info = probe_media(file);
                    p.hash = sha256_file(file);
                } catch (const Error& e) {
                    p.error = e.message();
                }
            }
            std::lock_guard<std::mutex> lock(mu);
            if (p.error.empty()) {
                p.ok = true;
                memo.store(rel, st, p.info, p.hash);
            }
            progress.advance();
        });
    }
    memo.save();

    // The S2V audio dataset linked to this video dataset (first of s2v_datasets).
    const DatasetConfig* audio_ds = nullptr;
    std::map<std::string, std::filesystem::path> stems;
    if (video && !ds.s2v_datasets.empty()) {
        for (const auto& d : *ctx.all)
            if (d.id == ds.s2v_datasets.front()) audio_ds = &d;
        if (audio_ds && !audio_ds->audio.source_from_video) stems = audio_stems(*audio_ds);
    }
    if (video) {
        const int rounded = round_frames_down(ds.video.num_frames, ctx.temporal_multiple);
        if (rounded != ds.video.num_frames)
            log::info(kLog,
                      "dataset '{}': num_frames {} -> {} (the model needs {}k+1 frames; SimpleTuner would "
                      "use 8k+1)",
                      ds.id, ds.video.num_frames, rounded, ctx.temporal_multiple);
    }

    auto skip = [&](const std::filesystem::path& f, std::string reason, bool bad) {
        result.skipped.push_back({ds.id, f.string(), std::move(reason), bad});
    };
    int64_t memoised = 0;
    std::string memo_example;
    for (size_t i = 0; i < files.size(); ++i) {
        const auto& file = files[i];
        const Probe& p = probes[i];
        if (!p.ok) {
            // The message already names the file; keep only the reason.
            const std::string prefix = file.string() + ": ";
            skip(file, p.error.rfind(prefix, 0) == 0 ? p.error.substr(prefix.size()) : p.error, true);
            continue;
        }
        const MediaInfo& info = p.info;
        if (!info.has_video) {
            skip(file, info.has_audio ? "audio-only file (no video stream)" : "no video stream", true);
            continue;
        }
        Sample s;
        s.dataset = ds.id;
        s.path = file;
        s.rel = std::filesystem::relative(file, ds.instance_data_dir).generic_string();
        s.info = info;
        s.content_hash = p.hash;
        try {
            s.captions = captions_for(file, ds);
        } catch (const Error& e) {
            skip(file, e.message(), false);
            continue;
        }
        if (below_minimum_size(info.display, ds)) {
            skip(file,
                 fmt::format("{}x{} is below minimum_image_size {} ({})", info.display.w, info.display.h,
                             ds.minimum_image_size, ds.resolution_type),
                 false);
            continue;
        }
        const int64_t available = info.grid_frames;
        if (video) {
            s.frames = training_frames(static_cast<int>(std::min<int64_t>(available, 1 << 30)), ds.video,
                                       ctx.temporal_multiple);
            if (s.frames == 0) {
                if (available < ds.video.min_frames)
                    skip(file,
                         fmt::format("has {} frames, fewer than min_frames {}", available,
                                     ds.video.min_frames),
                         false);
                else if (ds.video.max_frames > 0 && available > ds.video.max_frames)
                    skip(
                        file,
                        fmt::format("has {} frames, more than max_frames {}", available, ds.video.max_frames),
                        false);
                else
                    skip(file,
                         fmt::format("has {} frames, fewer than the {} the bucket needs", available,
                                     round_frames_down(ds.video.num_frames, ctx.temporal_multiple)),
                         false);
                continue;
            }
        } else {
            s.frames = 1;
        }
        const double ua = unit_hash(run.seed, ds.id + "/" + s.rel, 1),
                     ub = unit_hash(run.seed, ds.id + "/" + s.rel, 2);
        s.plan =
            plan_resize(info.display, ds, run.aspect_bucket_rounding, ctx.alignment, ua, ub, ctx.aspect_maps);
        if (!(s.plan.computed == s.plan.target)) {
            ++memoised;
            if (memo_example.empty())
                memo_example = fmt::format("{}: {}x{} instead of {}x{}", s.rel, s.plan.target.w,
                                           s.plan.target.h, s.plan.computed.w, s.plan.computed.h);
        }
        if (audio_ds) {
            const AudioSettings& as = audio_ds->audio;
            const int64_t slack = available - s.frames;
            if (as.truncation_mode == "end")
                s.first_frame = slack;
            else if (as.truncation_mode == "random")
                s.first_frame = std::min<int64_t>(
                    slack, static_cast<int64_t>(unit_hash(run.seed, ds.id + "/" + s.rel, 3) * (slack + 1)));
            AudioPlan& a = s.audio;
            a.enabled = true;
            a.dataset = audio_ds->id;
            a.cache_dir = audio_ds->cache_dir_vae;
            a.sample_rate = as.sample_rate;
            a.duration = s.frames / info.fps;
            const double video_start = info.start_time + s.first_frame / info.fps;
            bool has = false;
            double track_start = 0, track_len = 0;
            std::string why = "the video has no audio stream";
            if (as.source_from_video) {
                a.source = file;
                has = info.has_audio;
                track_start = info.audio_start;
                track_len = info.audio_duration;
                a.start = video_start;
            } else {
                auto it = stems.find(file.stem().string());
                why = fmt::format("no audio file with stem '{}' in dataset '{}'", file.stem().string(),
                                  audio_ds->id);
                if (it != stems.end()) {
                    try {
                        MediaInfo ai = probe_media(it->second);
                        has = ai.has_audio;
                        why = fmt::format("{} has no audio stream", it->second.string());
                        track_start = ai.audio_start;
                        track_len = ai.audio_duration;
                        a.source = it->second;
                        a.start = ai.audio_start + (video_start - info.start_time);
                    } catch (const Error& e) {
                        why = e.message();
                    }
                }
            }
            if (!has) {
                if (!as.allow_zero_audio) {
                    skip(
                        file,
                        fmt::format(
                            "{}; S2V needs audio (set audio.allow_zero_audio to train it with silence)", why),
                        false);
                    continue;
                }
                log::info(kLog, "{}: {}; using silence (allow_zero_audio)", file.string(), why);
                a.zero = true;
                a.coverage = 0.0;
            } else {
                if (as.max_duration_seconds > 0 && a.duration > as.max_duration_seconds + 1e-6) {
                    skip(file,
                         fmt::format("clip window {:.3f} s is longer than audio.max_duration_seconds {}",
                                     a.duration, as.max_duration_seconds),
                         false);
                    continue;
                }
                const double overlap = std::max(0.0, std::min(a.start + a.duration, track_start + track_len) -
                                                         std::max(a.start, track_start));
                a.coverage = overlap / a.duration;
                const double shortfall = a.duration - overlap;
                const double tolerance = std::max(0.05, 1.0 / info.fps);
                if (shortfall > tolerance) {
                    if (as.short_audio == "skip") {
                        skip(file,
                             fmt::format("audio covers only {:.3f} s of the {:.3f} s clip window "
                                         "(audio.short_audio is 'skip'; 'pad' pads with silence)",
                                         overlap, a.duration),
                             false);
                        continue;
                    }
                    log::info(
                        kLog,
                        "{}: audio covers {:.3f} of {:.3f} s; padded with silence (audio.short_audio pad)",
                        file.string(), overlap, a.duration);
                } else if (track_len > a.duration + tolerance) {
                    log::debug(kLog, "{}: audio {:.3f} s truncated to the {:.3f} s clip window",
                               file.string(), track_len, a.duration);
                }
            }
        }
        s.bucket = bucket_key(s.plan.target, s.frames);
        result.samples.push_back(std::move(s));
    }
    for (const auto& r : result.skipped)
        log::warn(kLog, "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
    if (memoised > 0)
        log::info(
            kLog,
            "dataset '{}': {} file(s) take the size memoised for their rounded aspect at this resolution, "
            "as SimpleTuner does (e.g. {})",
            ds.id, memoised, memo_example);
    return result;
}

}  // namespace st::plugins::data_local
