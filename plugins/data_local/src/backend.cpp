#include "backend.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "aspect_map.h"
#include "cache.h"
#include "parallel.h"
#include "st/bucket_alignment.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local";

at::Tensor stack_named(const std::vector<at::Tensor>& parts, const std::string& name,
                       const std::string& bucket) {
    for (size_t i = 1; i < parts.size(); ++i)
        if (parts[i].sizes() != parts[0].sizes() || parts[i].scalar_type() != parts[0].scalar_type())
            fail("data.local", "batch",
                 "bucket {}: cached tensor '{}' of sample {} has shape {} ({}), sample 0 has {} ({})", bucket,
                 name, i, fmt::format("{}", fmt::join(parts[i].sizes(), ",")),
                 c10::toString(parts[i].scalar_type()), fmt::format("{}", fmt::join(parts[0].sizes(), ",")),
                 c10::toString(parts[0].scalar_type()));
    return at::stack(parts, 0);
}

}  // namespace

std::vector<st::sdk::OptionSpec> data_local_options() {
    using namespace st::sdk;
    std::vector<OptionSpec> o = {
        opt_string("data_backend_config", std::nullopt,
                   "Path to the multidatabackend.json list of datasets (SimpleTuner's schema)."),
        opt_int("vae_batch_size", 4, "Samples per VAE encode call while caching latents.").range(1, 4096),
        opt_int("write_batch_size", 128,
                "Captions per text-encoder call / cache write batch (dataset key overrides).")
            .range(1, 1e6),
        opt_bool("compress_disk_cache", true,
                 "gzip-compress every cache file (latents, text embeddings, audio)."),
        opt_int("aspect_bucket_rounding", 2,
                "Decimals used when rounding aspect ratios into buckets (1..9)."),
        opt_int("aspect_bucket_alignment", std::nullopt,
                "Pixel multiple of bucket sizes; unset = the model's spatial multiple (SimpleTuner forces 32 "
                "for Wan).")
            .range(1, 1024),
        opt_bool("delete_problematic_images", false,
                 "Delete media files that cannot be decoded. Only ever deletes when explicitly true."),
        opt_bool("disable_bucket_pruning", false,
                 "Keep buckets smaller than train_batch_size x gradient_accumulation_steps (topped up by "
                 "repetition)."),
        opt_float("resolution", 1024.0, "Default dataset resolution (see resolution_type)."),
        opt_string("resolution_type", std::string("pixel_area"),
                   "How resolution is read: pixel_area (edge^2 pixels), "
                   "pixel (short edge), area (megapixels).",
                   {"pixel_area", "pixel", "area"}),
        opt_float("minimum_image_size", std::nullopt,
                  "Default dataset minimum_image_size (in resolution_type units)."),
        opt_int("data_decode_threads", 0,
                "Threads decoding and resizing media while caching (0 = every core).")
            .range(0, 1024),
    };
    for (auto& s : o) s.group = "data";
    return o;
}

void LocalDataBackend::open(const st::sdk::DataOpenRequest& request) {
    run_ = run_settings_from_config(request.config);
    run_.config_dir = request.config_dir;
    {
        // SimpleTuner resolves dataset paths against its working directory (the quickstarts keep
        // multidatabackend.json in config/<family>/ and the clips in datasets/...). When every relative
        // instance_data_dir exists from the current directory and not next to the file, that is the base.
        int relative = 0, from_cwd = 0, from_file = 0;
        for (const auto& e : request.entries) {
            if (!e.is_object() || !e.contains("instance_data_dir") || !e["instance_data_dir"].is_string())
                continue;
            const std::filesystem::path p = e["instance_data_dir"].get<std::string>();
            if (p.is_absolute() || p.string().find('{') != std::string::npos) continue;
            ++relative;
            from_cwd += std::filesystem::is_directory(p) ? 1 : 0;
            from_file += std::filesystem::is_directory(request.config_dir / p) ? 1 : 0;
        }
        if (relative > 0 && from_cwd == relative && from_file < relative) {
            run_.config_dir = std::filesystem::current_path();
            log::info(kLog,
                      "dataset paths are relative to the current directory {} (SimpleTuner's convention: the "
                      "instance_data_dir folders are there, not next to the dataset file in {})",
                      run_.config_dir.string(), request.config_dir.string());
        }
    }
    run_.output_dir = request.output_dir;
    run_.model_family = request.model_family;
    run_.model_takes_audio = std::find(request.model_media.begin(), request.model_media.end(),
                                       st::sdk::MediaKind::audio) != request.model_media.end();
    run_.seed = request.seed;
    features_ = request.sample_features;
    for (const auto& f : features_) {
        const std::string n = f ? f->name() : std::string();
        if (n.empty() || n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
            fail("data.local", "open", "a regularizer's sample features are named '{}': expected [a-z0-9_]+",
                 n);
    }
    datasets_ = parse_datasets(request.entries, run_);
    threads_ = resolve_threads(run_.decode_threads);
    const DatasetConfig* text = nullptr;
    for (const auto& d : datasets_) {
        if (d.dataset_type != DatasetType::text_embeds || d.disabled) continue;
        if (!text || (d.is_default && !text->is_default))
            text = &d;
        else if (d.is_default && text->is_default)
            fail("data.local", "config", "datasets '{}' and '{}' are both the default text_embeds dataset",
                 text->id, d.id);
    }
    if (text) {
        text_cache_dir_ = text->cache_dir;
    } else {
        text_cache_dir_ = std::filesystem::path(
            substitute_placeholders("{output_dir}/cache/text/{model_family}", run_, ""));
        log::info(kLog, "no text_embeds dataset; text embeddings go to {}", text_cache_dir_.string());
    }
    for (const auto& d : datasets_) {
        if (d.disabled)
            log::info(kLog, "dataset '{}' is disabled", d.id);
        else if (!d.cache_dir_conditioning_image_embeds.empty())
            log::info(kLog, "dataset '{}': conditioning image embeddings are cached in {}", d.id,
                      d.cache_dir_conditioning_image_embeds.string());
    }
    opened_ = true;
}

void LocalDataBackend::drop_samples(const std::vector<bool>& drop) {
    std::vector<Sample> kept;
    std::vector<SampleCache> kept_cache;
    for (size_t i = 0; i < samples_.size(); ++i) {
        if (drop[i]) continue;
        kept.push_back(std::move(samples_[i]));
        if (i < caches_.size()) kept_cache.push_back(std::move(caches_[i]));
    }
    samples_ = std::move(kept);
    caches_ = std::move(kept_cache);
}

void LocalDataBackend::maybe_delete(const SkipRecord& r) {
    if (!r.bad_media || !run_.delete_problematic_images) return;
    std::error_code ec;
    if (std::filesystem::remove(r.file, ec))
        log::warn(kLog, "deleted {} (delete_problematic_images is true): {}", r.file, r.reason);
    else if (ec)
        log::warn(kLog, "could not delete {}: {}", r.file, ec.message());
}

void LocalDataBackend::prune_buckets() {
    const int64_t need = static_cast<int64_t>(run_.train_batch_size) * run_.gradient_accumulation_steps;
    for (const auto& ds : datasets_) {
        // Eval datasets are batched by eval_batches() at any size: nothing to prune.
        if (ds.disabled || ds.eval ||
            (ds.dataset_type != DatasetType::video && ds.dataset_type != DatasetType::image))
            continue;
        std::map<std::string, int64_t> counts;
        int64_t total = 0;
        for (const auto& s : samples_)
            if (s.dataset == ds.id) ++counts[s.bucket], ++total;
        if (total == 0) continue;
        std::set<std::string> pruned;
        for (const auto& [bucket, n] : counts) {
            if (n * (1 + ds.repeats) >= need || run_.disable_bucket_pruning) continue;
            pruned.insert(bucket);
        }
        if (pruned.size() == counts.size()) {
            int64_t largest = 0;
            for (const auto& [bucket, n] : counts) largest = std::max(largest, n);
            fail("data.local", "prepare",
                 "dataset '{}' is too small for the batch: its largest bucket has {} samples x (1 + repeats "
                 "{}) but "
                 "train_batch_size {} x gradient_accumulation_steps {} needs {}. Increase \"repeats\" on the "
                 "dataset "
                 "(at least \"repeats\": {}), lower train_batch_size, or set disable_bucket_pruning",
                 ds.id, largest, ds.repeats, run_.train_batch_size, run_.gradient_accumulation_steps, need,
                 (need + largest - 1) / largest - 1);
        }
        std::vector<bool> drop(samples_.size(), false);
        for (size_t i = 0; i < samples_.size(); ++i) {
            if (samples_[i].dataset != ds.id || !pruned.count(samples_[i].bucket)) continue;
            drop[i] = true;
            SkipRecord r{
                ds.id, samples_[i].path.string(),
                fmt::format(
                    "bucket {} has {} samples, fewer than train_batch_size x gradient_accumulation_steps "
                    "= {} (raise repeats or set disable_bucket_pruning)",
                    samples_[i].bucket, counts[samples_[i].bucket], need),
                false};
            log::warn(kLog, "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
            skipped_.push_back(std::move(r));
        }
        drop_samples(drop);
    }
}

void LocalDataBackend::build_sampler() {
    std::vector<SamplerDataset> sds;
    sampler_datasets_.clear();
    for (const auto& ds : datasets_) {
        if (ds.disabled || ds.eval ||
            (ds.dataset_type != DatasetType::video && ds.dataset_type != DatasetType::image))
            continue;
        SamplerDataset sd;
        sd.id = ds.id;
        sd.probability = ds.probability;
        sd.repeats = ds.repeats;
        std::map<std::string, std::vector<int64_t>> buckets;
        for (size_t i = 0; i < samples_.size(); ++i)
            if (samples_[i].dataset == ds.id) buckets[samples_[i].bucket].push_back(static_cast<int64_t>(i));
        // An epoch's order holds members x (1 + repeats) entries per bucket: bound it before allocating.
        const auto members = static_cast<int64_t>(std::count_if(
            samples_.begin(), samples_.end(), [&](const auto& s) { return s.dataset == ds.id; }));
        if (members * (1 + static_cast<int64_t>(ds.repeats)) > kMaxEpochEntries) {
            fail(
                "data.local", "prepare",
                "dataset '{}': {} samples x (1 + repeats {}) = {} entries per epoch exceeds the limit of {}; "
                "lower \"repeats\"",
                ds.id, members, ds.repeats, members * (1 + static_cast<int64_t>(ds.repeats)),
                kMaxEpochEntries);
        }
        for (auto& [k, v] : buckets) {
            sd.bucket_keys.push_back(k);
            sd.bucket_members.push_back(std::move(v));
        }
        sampler_datasets_.push_back(ds.id);
        sds.push_back(std::move(sd));
    }
    sampler_ = BucketSampler(std::move(sds), run_.seed);
}

st::sdk::PrepareSummary LocalDataBackend::prepare(st::sdk::Encoders* encoders) {
    if (!opened_) fail("data.local", "prepare", "prepare() called before open()");
    samples_.clear();
    skipped_.clear();
    caches_.clear();
    alignment_ = 16;
    temporal_ = 4;
    if (encoders) {
        alignment_ = encoders->spatial_multiple();
        temporal_ = encoders->temporal_multiple();
        identity_ = encoders->cache_identity();
    }
    const auto* rule = encoders ? st::sdk::find_capability<st::sdk::BucketAlignment>(*encoders) : nullptr;
    if (rule && rule->bucket_alignment_required()) {
        // SimpleTuner's Wan models override the user's value the same way, with a warning.
        if (run_.aspect_bucket_alignment > 0 && run_.aspect_bucket_alignment != rule->bucket_alignment())
            log::warn(kLog,
                      "aspect_bucket_alignment {} overridden: this model's buckets are aligned to {} px "
                      "(as SimpleTuner requires for it)",
                      run_.aspect_bucket_alignment, rule->bucket_alignment());
        alignment_ = rule->bucket_alignment();
    } else if (run_.aspect_bucket_alignment > 0) {
        if (encoders && run_.aspect_bucket_alignment % alignment_ != 0)
            fail("data.local", "prepare",
                 "aspect_bucket_alignment {} is not a multiple of the model's spatial multiple {}",
                 run_.aspect_bucket_alignment, alignment_);
        alignment_ = run_.aspect_bucket_alignment;
    } else if (rule) {
        alignment_ = rule->bucket_alignment();
    }
    log::info(kLog, "buckets aligned to {} px, frame counts {}k+1{}", alignment_, temporal_,
              encoders ? "" : " (no model given: Wan's rules assumed)");
    // Fail before discovery and any caching when the audio could never be encoded; checked on the
    // configuration, since a dataset whose files all lack audio yields no sample that would show it.
    if (encoders && !st::sdk::find_capability<st::sdk::AudioConditioning>(*encoders))
        for (const auto& ds : datasets_)
            if (!ds.disabled && ds.dataset_type == DatasetType::audio)
                fail("data.local", "prepare",
                     "dataset '{}' has audio, but the model takes no audio (it lacks the audio_conditioning "
                     "capability): remove the audio dataset (or the audio block of the video dataset it "
                     "was split from) or use an audio-conditioned model family such as wan_s2v",
                     ds.id);
    // SimpleTuner's per-aspect size memo, shared by the datasets of the run, kept in output_dir.
    AspectResolutionMaps aspect_maps(run_.output_dir);
    DiscoveryContext ctx{&run_, &datasets_, alignment_, temporal_, threads_, &aspect_maps};
    for (const auto& ds : datasets_) {
        if (ds.disabled || (ds.dataset_type != DatasetType::video && ds.dataset_type != DatasetType::image))
            continue;
        DiscoveryResult r = discover_dataset(ds, ctx);
        for (auto& s : r.samples) samples_.push_back(std::move(s));
        for (auto& s : r.skipped) {
            maybe_delete(s);
            skipped_.push_back(std::move(s));
        }
    }
    for (const auto& f : aspect_maps.save())
        log::debug(kLog, "bucket sizes per aspect written to {}", f.string());
    prune_buckets();
    plan_caches();
    if (encoders) {
        cache_latents(*encoders);
        cache_text(*encoders);
        cache_audio(*encoders);
        cache_features();
        cached_ = true;
    } else {
        cached_ = false;
    }
    build_sampler();
    return summarize();
}

std::string LocalDataBackend::share_note() const {
    if (shard_count_ <= 1) return "";
    return fmt::format(" (this rank's share of the caching: {} of {})", shard_index_ + 1, shard_count_);
}

st::sdk::PrepareSummary LocalDataBackend::summarize() const {
    st::sdk::PrepareSummary s;
    s.samples = static_cast<int64_t>(samples_.size());
    s.skipped = static_cast<int64_t>(skipped_.size());
    nlohmann::json per = nlohmann::json::object();
    for (const auto& ds : datasets_) {
        nlohmann::json d = {{"dataset_type", dataset_type_name(ds.dataset_type)},
                            {"disabled", ds.disabled},
                            {"samples", 0},
                            {"skipped", 0},
                            {"buckets", nlohmann::json::object()},
                            {"probability", ds.probability},
                            {"repeats", ds.repeats}};
        if (ds.auto_created) d["auto_created_from"] = ds.source_video_dataset;
        if (ds.eval) d["eval"] = true;
        if (!ds.s2v_datasets.empty()) d["s2v_datasets"] = ds.s2v_datasets;
        int64_t with_audio = 0, zero_audio = 0, padded = 0;
        for (const auto& smp : samples_) {
            if (smp.dataset != ds.id) continue;
            d["samples"] = d["samples"].get<int64_t>() + 1;
            auto& b = d["buckets"][smp.bucket];
            if (b.is_null()) b = 0;
            b = b.get<int64_t>() + 1;
            if (smp.audio.enabled) {
                ++with_audio;
                if (smp.audio.zero)
                    ++zero_audio;
                else if (smp.audio.coverage < 0.999)
                    ++padded;
            }
        }
        if (!ds.s2v_datasets.empty())
            d["audio"] = {{"samples", with_audio}, {"zero_audio", zero_audio}, {"padded", padded}};
        for (const auto& r : skipped_)
            if (r.dataset == ds.id) d["skipped"] = d["skipped"].get<int64_t>() + 1;
        per[ds.id] = d;
    }
    nlohmann::json skipped = nlohmann::json::array();
    for (const auto& r : skipped_)
        skipped.push_back({{"dataset", r.dataset}, {"file", r.file}, {"reason", r.reason}});
    s.details = {{"datasets", per},         {"skipped", skipped},
                 {"alignment", alignment_}, {"temporal_multiple", temporal_},
                 {"cached", cached_},       {"text_cache_dir", text_cache_dir_.string()}};
    log::info(kLog, "discovery: {} samples, {} skipped", s.samples, s.skipped);
    return s;
}

int64_t LocalDataBackend::batches_per_epoch(int64_t batch_size) const {
    return sampler_.batches_per_epoch(batch_size);
}

void LocalDataBackend::start_epoch(int64_t epoch) {
    sampler_.start_epoch(epoch);
}

std::optional<st::sdk::Batch> LocalDataBackend::next_batch(int64_t batch_size) {
    if (!cached_)
        fail("data.local", "batch",
             "next_batch() needs caches: prepare() ran without encoders (a `prepare` run)");
    auto pick = sampler_.next(batch_size);
    if (!pick) return std::nullopt;
    return load_batch(pick->samples, pick->bucket, /*first_caption=*/false);
}

st::sdk::Batch LocalDataBackend::load_batch(const std::vector<int64_t>& indices, const std::string& bucket,
                                            bool first_caption) {
    st::sdk::Batch batch;
    std::map<std::string, std::vector<at::Tensor>> parts;
    auto add_all = [&](const std::filesystem::path& file, const std::string& key, const char* what) {
        auto t = read_cache_file(file, key);
        if (!t)
            fail("data.local", "batch",
                 "{} cache {} is missing or stale (changed during the run?); run prepare again", what,
                 file.string());
        for (auto& [name, tensor] : *t) parts[name].push_back(std::move(tensor));
    };
    for (int64_t idx : indices) {
        const Sample& s = samples_.at(static_cast<size_t>(idx));
        const SampleCache& c = caches_.at(static_cast<size_t>(idx));
        st::sdk::SampleRef ref;
        ref.dataset_id = s.dataset;
        ref.id = s.rel;
        ref.path = s.path.string();
        ref.caption = first_caption ? s.captions.front() : s.captions[sampler_.draw(s.captions.size())];
        ref.bucket = s.bucket;
        ref.meta = s.meta();
        add_all(c.latent_file, c.latent_key, "latent");
        auto [tfile, tkey] = text_cache_entry(ref.caption);
        add_all(tfile, tkey, "text embedding");
        if (s.audio.enabled) add_all(c.audio_file, c.audio_key, "audio feature");
        if (!c.image_embeds_file.empty() && cache_file_exists(c.image_embeds_file))
            add_all(c.image_embeds_file, c.latent_key, "image embedding");
        for (const auto& [file, key] : c.feature_files) add_all(file, key, "regularizer feature");
        batch.samples.push_back(std::move(ref));
    }
    for (auto& [name, list] : parts) {
        if (list.size() != indices.size())
            fail("data.local", "batch",
                 "bucket {}: tensor '{}' is cached for {} of {} samples (name clash between "
                 "latent, text and audio caches?)",
                 bucket, name, list.size(), indices.size());
        batch.tensors[name] = stack_named(list, name, bucket);
    }
    return batch;
}

std::vector<st::sdk::Batch> LocalDataBackend::eval_batches(int64_t max_samples, int64_t batch_size) {
    // The eval datasets' samples in config order, then discovery order (sorted paths): the same set
    // on every run, at most max_samples from each dataset. Each batch holds samples of one bucket; the first
    // caption variant of each sample.
    if (!cached_) fail("data.local", "eval", "eval_batches() needs caches: prepare() ran without encoders");
    if (batch_size < 1) fail("data.local", "eval", "eval batch size must be >= 1, got {}", batch_size);
    std::vector<std::pair<std::string, std::vector<int64_t>>> buckets;  // (dataset|bucket, members)
    for (const auto& ds : datasets_) {
        if (!ds.eval || ds.disabled) continue;
        int64_t taken = 0;  // max_samples per eval dataset, as SimpleTuner's num_eval_images
        for (size_t i = 0; i < samples_.size(); ++i) {
            if (samples_[i].dataset != ds.id) continue;
            if (max_samples > 0 && taken >= max_samples) break;
            const std::string key = ds.id + "|" + samples_[i].bucket;
            auto it =
                std::find_if(buckets.begin(), buckets.end(), [&](const auto& b) { return b.first == key; });
            if (it == buckets.end()) {
                buckets.push_back({key, {}});
                it = std::prev(buckets.end());
            }
            it->second.push_back(static_cast<int64_t>(i));
            ++taken;
        }
    }
    std::vector<st::sdk::Batch> out;
    for (const auto& [key, members] : buckets) {
        const std::string bucket = key.substr(key.find('|') + 1);
        for (size_t start = 0; start < members.size(); start += static_cast<size_t>(batch_size)) {
            const size_t end = std::min(members.size(), start + static_cast<size_t>(batch_size));
            out.push_back(
                load_batch(std::vector<int64_t>(members.begin() + static_cast<std::ptrdiff_t>(start),
                                                members.begin() + static_cast<std::ptrdiff_t>(end)),
                           bucket, /*first_caption=*/true));
        }
    }
    return out;
}

nlohmann::json LocalDataBackend::state() const {
    return {{"sampler", sampler_.state()}, {"datasets", sampler_datasets_}};
}

void LocalDataBackend::restore(const nlohmann::json& state) {
    if (!state.contains("sampler"))
        fail("data.local", "restore", "state has no 'sampler' entry: {}", state.dump());
    sampler_.restore(state.at("sampler"));
}

}  // namespace st::plugins::data_local
