// Caching through the model's Encoders: VAE latents (vae_batch_size samples of one bucket per
// call, decoded on the thread pool), text embeddings (write_batch_size captions per call) and S2V
// audio features (the audio window of each sample). Keys: content hash + every setting that changes
// the value + Encoders::cache_identity(). Reference: SimpleTuner caching/vae.py, text_embeds.py.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <map>
#include <set>

#include "backend.h"
#include "cache.h"
#include "media.h"
#include "parallel.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::data_local {
namespace {

constexpr const char* kLog = "data.local.cache";
constexpr int kCacheFormat = 1;
/// Latent-file metadata naming the separate image-embeddings file of the sample.
constexpr const char* kImageEmbedsMeta = "st.image_embeds_file";

bool finite(const st::sdk::TensorMap& m) {
    for (const auto& [name, t] : m)
        if (t.is_floating_point() && !at::isfinite(t).all().item<bool>()) return false;
    return true;
}

/// Splits encoder outputs with a leading batch dim into per-sample maps.
std::vector<st::sdk::TensorMap> split_batch(const st::sdk::TensorMap& out, int64_t batch, const char* what) {
    std::vector<st::sdk::TensorMap> per(static_cast<size_t>(batch));
    for (const auto& [name, t] : out) {
        if (t.dim() < 1 || t.size(0) != batch)
            fail("data.local", "cache",
                 "{} encoder output '{}' has shape [{}]; expected a leading batch dim of {}", what, name,
                 fmt::join(t.sizes(), ","), batch);
        for (int64_t i = 0; i < batch; ++i) per[static_cast<size_t>(i)][name] = t[i].contiguous();
    }
    return per;
}

}  // namespace

std::pair<std::filesystem::path, std::string> LocalDataBackend::text_cache_entry(
    const std::string& caption) const {
    const std::string key = sha256_text(fmt::format("text/{}\x1f{}\x1f{}", kCacheFormat, identity_, caption));
    return {text_cache_dir_ / (key.substr(0, 40) + ".safetensors"), key};
}

void LocalDataBackend::plan_caches() {
    caches_.assign(samples_.size(), SampleCache{});
    for (size_t i = 0; i < samples_.size(); ++i) {
        const Sample& s = samples_[i];
        const DatasetConfig* ds = nullptr;
        for (const auto& d : datasets_)
            if (d.id == s.dataset) ds = &d;
        SampleCache& c = caches_[i];
        const nlohmann::json lk = {{"format", kCacheFormat},
                                   {"content", s.content_hash},
                                   {"identity", identity_},
                                   {"target", {s.plan.target.w, s.plan.target.h}},
                                   {"resized", {s.plan.resized.w, s.plan.resized.h}},
                                   {"crop", {s.plan.crop_x, s.plan.crop_y}},
                                   {"rotation", s.info.rotation},
                                   {"first", s.first_frame},
                                   {"frames", s.frames},
                                   {"fps", s.info.fps}};
        c.latent_key = sha256_text(lk.dump());
        c.latent_file = ds->cache_dir_vae / (s.rel + ".safetensors");
        if (!ds->cache_dir_conditioning_image_embeds.empty())
            c.image_embeds_file = ds->cache_dir_conditioning_image_embeds / (s.rel + ".safetensors");
        if (s.audio.enabled) {
            const nlohmann::json ak = {{"format", kCacheFormat},
                                       {"video", s.content_hash},
                                       {"source", s.audio.source.filename().string()},
                                       {"zero", s.audio.zero},
                                       {"start", s.audio.start},
                                       {"duration", s.audio.duration},
                                       {"rate", s.audio.sample_rate},
                                       {"fps", s.info.fps},
                                       {"frames", s.frames},
                                       {"identity", identity_}};
            c.audio_key = sha256_text(ak.dump());
            c.audio_file = s.audio.cache_dir / (s.rel + ".safetensors");
        }
        for (const auto& f : features_) {
            std::filesystem::path vae = ds->cache_dir_vae.lexically_normal();
            if (!vae.has_filename()) vae = vae.parent_path();
            const std::filesystem::path dir = vae.string() + "-" + f->name();
            c.feature_files.emplace_back(dir / (s.rel + ".safetensors"),
                                         sha256_text(fmt::format("features/{}\x1f{}\x1f{}", kCacheFormat,
                                                                 c.latent_key, f->identity())));
        }
    }
}

void LocalDataBackend::cache_latents(st::sdk::Encoders& enc) {
    // Which samples need (re)building, grouped by bucket (one encode call stacks one bucket).
    std::map<std::string, std::vector<size_t>> todo;
    std::vector<bool> valid(samples_.size(), false);
    parallel_for(static_cast<int64_t>(samples_.size()), threads_, [&](int64_t i) {
        const SampleCache& c = caches_[i];
        const auto meta = cache_file_metadata(c.latent_file, c.latent_key);
        // A latent file whose image embeddings went to the conditioning_image_embeds folder is only
        // complete with that file.
        valid[i] =
            meta && (!meta->count(kImageEmbedsMeta) || cache_file_valid(c.image_embeds_file, c.latent_key));
    });
    int64_t pending = 0;
    int64_t missing = 0;
    for (size_t i = 0; i < samples_.size(); ++i) {
        if (valid[i]) continue;
        ++missing;
        if (owns(i)) todo[samples_[i].bucket].push_back(i), ++pending;
    }
    log::info(kLog, "latents: {} cached, {} to encode{} (vae_batch_size {})", samples_.size() - missing,
              pending, share_note(), run_.vae_batch_size);
    if (pending == 0) return;
    std::vector<bool> drop(samples_.size(), false);
    log::Progress progress(kLog, "encode latents", pending, "samples");
    for (const auto& [bucket, members] : todo) {
        for (size_t off = 0; off < members.size(); off += static_cast<size_t>(run_.vae_batch_size)) {
            const size_t n = std::min(members.size() - off, static_cast<size_t>(run_.vae_batch_size));
            const auto clips = decode_clips(&members[off], n);
            std::vector<at::Tensor> pixels;
            std::vector<size_t> ok;
            for (size_t k = 0; k < n; ++k) {
                const size_t idx = members[off + k];
                if (!clips[k].error.empty()) {
                    SkipRecord r{samples_[idx].dataset, samples_[idx].path.string(), clips[k].error, true};
                    const std::string prefix = r.file + ": ";
                    if (r.reason.rfind(prefix, 0) == 0) r.reason = r.reason.substr(prefix.size());
                    log::warn("data.local", "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
                    maybe_delete(r);
                    skipped_.push_back(std::move(r));
                    drop[idx] = true;
                    continue;
                }
                pixels.push_back(clips[k].pixels);
                ok.push_back(idx);
            }
            progress.advance(static_cast<int64_t>(n - ok.size()));
            if (ok.empty()) continue;
            const auto out =
                split_batch(enc.encode_video(at::stack(pixels, 0)), static_cast<int64_t>(ok.size()), "VAE");
            for (size_t k = 0; k < ok.size(); ++k) {
                const size_t idx = ok[k];
                if (!out[k].count("latents"))
                    fail("data.local", "cache", "the VAE encoder returned no 'latents' tensor");
                if (!finite(out[k])) {
                    SkipRecord r{samples_[idx].dataset, samples_[idx].path.string(),
                                 "encoded latents contain NaN/Inf", false};
                    log::warn("data.local", "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
                    skipped_.push_back(std::move(r));
                    drop[idx] = true;
                    continue;
                }
                const SampleCache& c = caches_[idx];
                auto it = out[k].find(st::sdk::kConditioningImageEmbeds);
                if (!c.image_embeds_file.empty() && it != out[k].end()) {
                    // SimpleTuner's conditioning_image_embeds dataset: the CLIP embeddings in their folder.
                    write_cache_file(c.image_embeds_file, {{st::sdk::kConditioningImageEmbeds, it->second}},
                                     c.latent_key, run_.compress_disk_cache);
                    st::sdk::TensorMap rest = out[k];
                    rest.erase(st::sdk::kConditioningImageEmbeds);
                    write_cache_file(c.latent_file, rest, c.latent_key, run_.compress_disk_cache,
                                     {{kImageEmbedsMeta, c.image_embeds_file.string()}});
                } else {
                    write_cache_file(c.latent_file, out[k], c.latent_key, run_.compress_disk_cache);
                }
            }
            progress.advance(static_cast<int64_t>(ok.size()));
        }
    }
    progress.finish();
    drop_samples(drop);
}

LocalDataBackend::DecodedClip LocalDataBackend::decode_clip(size_t index) const {
    const Sample& s = samples_[index];
    DecodedClip c;
    try {
        // uint8 [F, H, W, 3] -> float [3, F, H, W] in [-1, 1]
        c.pixels = decode_video(s.path, s.info, s.first_frame, s.frames, s.plan, 1)
                       .permute({3, 0, 1, 2})
                       .to(at::kFloat)
                       .div_(127.5)
                       .sub_(1.0);
    } catch (const Error& e) {
        c.error = e.message();
    }
    return c;
}

std::vector<LocalDataBackend::DecodedClip> LocalDataBackend::decode_clips(const size_t* indices,
                                                                          size_t n) const {
    std::vector<DecodedClip> out(n);
    parallel_for(static_cast<int64_t>(n), threads_, [&](int64_t k) { out[k] = decode_clip(indices[k]); });
    return out;
}

void LocalDataBackend::cache_features() {
    // Each clip is decoded again (only when its features are missing) and given to the encoders with
    // its cached latents: the frames are exactly the ones the VAE saw.
    if (features_.empty()) return;
    std::vector<size_t> stale;  // samples with a missing or outdated feature file (this rank's share)
    size_t missing = 0;
    for (size_t i = 0; i < samples_.size(); ++i)
        for (const auto& [file, key] : caches_[i].feature_files)
            if (!cache_file_valid(file, key)) {
                ++missing;
                if (owns(i)) stale.push_back(i);
                break;
            }
    std::string names;
    for (const auto& f : features_) names += (names.empty() ? "" : ", ") + f->name();
    log::info(kLog, "regularizer features ({}): {} cached, {} to encode{}", names, samples_.size() - missing,
              stale.size(), share_note());
    if (stale.empty()) return;
    std::vector<bool> drop(samples_.size(), false);
    log::Progress progress(kLog, "encode " + names + " features", static_cast<int64_t>(stale.size()),
                           "samples");
    const size_t chunk = static_cast<size_t>(std::max(1, threads_));
    for (size_t off = 0; off < stale.size(); off += chunk) {
        const size_t n = std::min(stale.size() - off, chunk);
        const auto clips = decode_clips(&stale[off], n);
        for (size_t k = 0; k < n; ++k) {
            const size_t idx = stale[off + k];
            const Sample& s = samples_[idx];
            const SampleCache& c = caches_[idx];
            auto latents =
                clips[k].error.empty() ? read_cache_file(c.latent_file, c.latent_key) : std::nullopt;
            if (!latents) {
                SkipRecord r{s.dataset, s.path.string(),
                             clips[k].error.empty() ? "its latent cache vanished while caching features"
                                                    : clips[k].error,
                             false};
                log::warn("data.local", "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
                skipped_.push_back(std::move(r));
                drop[idx] = true;
                continue;
            }
            st::sdk::TensorMap encoded;
            for (const auto& [name, t] : *latents) encoded[name] = t.unsqueeze(0);
            const at::Tensor pixels = clips[k].pixels.unsqueeze(0);  // [1, 3, F, H, W]
            for (size_t e = 0; e < features_.size(); ++e) {
                const std::string prefix = features_[e]->name() + ".";
                auto out = split_batch(features_[e]->encode(pixels, encoded), 1, "regularizer feature");
                for (const auto& [name, t] : out[0])
                    if (name.rfind(prefix, 0) != 0)
                        fail("data.local", "cache",
                             "the '{}' feature encoder returned '{}': names must start with '{}'",
                             features_[e]->name(), name, prefix);
                write_cache_file(c.feature_files[e].first, out[0], c.feature_files[e].second,
                                 run_.compress_disk_cache);
            }
        }
        progress.advance(static_cast<int64_t>(n));
    }
    progress.finish();
    drop_samples(drop);
}

void LocalDataBackend::cache_text(st::sdk::Encoders& enc) {
    std::set<std::string> unique;
    for (const auto& s : samples_)
        for (const auto& c : s.captions) unique.insert(c);
    std::vector<std::string> todo;
    size_t item = 0;
    for (const auto& c : unique) {
        if (!owns(item++)) continue;
        auto [file, key] = text_cache_entry(c);
        if (!cache_file_valid(file, key)) todo.push_back(c);
    }
    int write_batch = run_.write_batch_size;
    for (const auto& d : datasets_)
        if (d.dataset_type == DatasetType::text_embeds && d.cache_dir == text_cache_dir_ &&
            d.write_batch_size > 0)
            write_batch = d.write_batch_size;
    log::info(kLog, "text embeddings: {} captions, {} to encode{} (write_batch_size {})", unique.size(),
              todo.size(), share_note(), write_batch);
    if (todo.empty()) return;
    log::Progress progress(kLog, "encode captions", static_cast<int64_t>(todo.size()), "captions");
    for (size_t off = 0; off < todo.size(); off += static_cast<size_t>(write_batch)) {
        const size_t n = std::min(todo.size() - off, static_cast<size_t>(write_batch));
        std::vector<std::string> chunk(todo.begin() + static_cast<std::ptrdiff_t>(off),
                                       todo.begin() + static_cast<std::ptrdiff_t>(off + n));
        const auto out = split_batch(enc.encode_text(chunk), static_cast<int64_t>(n), "text");
        for (size_t k = 0; k < n; ++k) {
            auto [file, key] = text_cache_entry(chunk[k]);
            write_cache_file(file, out[k], key, run_.compress_disk_cache);
        }
        progress.advance(static_cast<int64_t>(n));
    }
    progress.finish();
}

void LocalDataBackend::cache_audio(st::sdk::Encoders& enc) {
    std::vector<size_t> todo;
    st::sdk::AudioConditioning* audio = nullptr;
    for (size_t i = 0; i < samples_.size(); ++i) {
        if (!samples_[i].audio.enabled) continue;
        if (!audio) audio = st::sdk::find_capability<st::sdk::AudioConditioning>(enc);
        if (!audio)
            fail("data.local", "cache",
                 "dataset '{}' has audio, but the model takes no audio (it lacks the audio_conditioning "
                 "capability): remove the audio dataset or use an audio-conditioned model family",
                 samples_[i].audio.dataset);
        if (samples_[i].audio.sample_rate != audio->audio_sample_rate())
            fail("data.local", "cache",
                 "dataset '{}': audio.sample_rate {} differs from the model's audio rate {}",
                 samples_[i].audio.dataset, samples_[i].audio.sample_rate, audio->audio_sample_rate());
        if (owns(i) && !cache_file_valid(caches_[i].audio_file, caches_[i].audio_key)) todo.push_back(i);
    }
    if (todo.empty()) return;
    log::info(kLog, "audio features: {} to encode", todo.size());
    std::vector<bool> drop(samples_.size(), false);
    log::Progress progress(kLog, "encode audio", static_cast<int64_t>(todo.size()), "samples");
    const size_t chunk = static_cast<size_t>(std::max(1, threads_));
    for (size_t off = 0; off < todo.size(); off += chunk) {
        const size_t n = std::min(todo.size() - off, chunk);
        std::vector<at::Tensor> waves(n);
        std::vector<std::string> errors(n);
        parallel_for(static_cast<int64_t>(n), threads_, [&](int64_t k) {
            const Sample& s = samples_[todo[off + k]];
            const int64_t len = static_cast<int64_t>(std::llround(s.audio.duration * s.audio.sample_rate));
            try {
                waves[k] = s.audio.zero ? at::zeros({len}, at::kFloat)
                                        : decode_audio_window(s.audio.source, s.audio.sample_rate,
                                                              s.audio.start, s.audio.duration)
                                              .waveform;
            } catch (const Error& e) {
                errors[k] = e.message();
            }
        });
        for (size_t k = 0; k < n; ++k) {
            const size_t idx = todo[off + k];
            const Sample& s = samples_[idx];
            if (!errors[k].empty()) {
                SkipRecord r{s.dataset, s.path.string(), "audio: " + errors[k], false};
                log::warn("data.local", "dataset '{}': skipped {}: {}", r.dataset, r.file, r.reason);
                skipped_.push_back(std::move(r));
                drop[idx] = true;
                continue;
            }
            // waveform [1, samples] mono at the model's rate; the window is exactly the clip's frames.
            auto out =
                split_batch(audio->encode_audio(waves[k].unsqueeze(0), s.info.fps, s.frames), 1, "audio");
            write_cache_file(caches_[idx].audio_file, out[0], caches_[idx].audio_key,
                             run_.compress_disk_cache);
        }
        progress.advance(static_cast<int64_t>(n));
    }
    progress.finish();
    drop_samples(drop);
}

}  // namespace st::plugins::data_local
