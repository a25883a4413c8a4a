// Validator: what a render needs besides text (ModelFamily::sampling_inputs, by media kind), the
// image and audio inputs, and where they come from: the prompt library entry, validation_image /
// validation_audio, or a training sample (SimpleTuner validation.retrieve_validation_s2v_samples).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "st/error.h"
#include "st/log.h"
#include "st/media/audio.h"
#include "validate/validator.h"

namespace st::host::validate {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLog = "host.validate";

std::string input_name(const std::vector<sdk::SamplingInput>& inputs, sdk::MediaKind kind) {
    for (const auto& i : inputs)
        if (i.kind == kind) return i.name;
    return sdk::media_kind_name(kind);
}

}  // namespace

std::string describe_inputs(const std::vector<sdk::SamplingInput>& inputs) {
    if (inputs.empty()) return "text only";
    std::vector<std::string> parts;
    for (const auto& i : inputs)
        parts.push_back(fmt::format("{} ({})", i.name, sdk::media_kind_name(i.kind)));
    return fmt::format("{}", fmt::join(parts, " + "));
}

bool Validator::needs(sdk::MediaKind kind) const {
    return std::any_of(inputs_.begin(), inputs_.end(),
                       [&](const sdk::SamplingInput& i) { return i.kind == kind; });
}

bool Validator::needs_reference_sample() const {
    if (!enabled()) return false;
    const bool datasets = settings_.using_datasets;
    for (const Prompt& p : prompts()) {
        if (needs(sdk::MediaKind::image) && !p.image && (!settings_.image || datasets)) return true;
        if (needs(sdk::MediaKind::audio) && !p.audio && (!settings_.audio || datasets)) return true;
    }
    return false;
}

void Validator::set_reference_sample(ReferenceSample sample) {
    log::info(kLog, "validation reference sample '{}': image = first frame of {}, audio = {}", sample.id,
              sample.video.string(),
              sample.audio ? fmt::format("{} from {:.3f} s", sample.audio->string(), sample.audio_start)
                           : std::string("none"));
    reference_ = std::move(sample);
}

std::optional<fs::path> Validator::image_for(const Prompt& prompt) const {
    if (prompt.image) return prompt.image;
    const bool wanted = needs(sdk::MediaKind::image);
    if (settings_.using_datasets && reference_ && wanted) return reference_->video;
    if (!wanted) return std::nullopt;  // validation_image on a text-only model: said once at start
    if (settings_.image) return settings_.image;
    if (reference_) return reference_->video;
    fail(kLog, "render",
         "prompt '{}': the model ({}) needs its {}: set validation_image, give the prompt library entry an "
         "\"image\", or train on a dataset (the first frame of a training video is used)",
         prompt.nickname, model_.entry().id, input_name(inputs_, sdk::MediaKind::image));
}

std::optional<std::pair<fs::path, double>> Validator::audio_for(const Prompt& prompt) const {
    const bool wanted = needs(sdk::MediaKind::audio);
    std::optional<std::pair<fs::path, double>> out;
    if (prompt.audio)
        out.emplace(*prompt.audio, 0.0);
    else if (settings_.using_datasets && wanted && reference_ && reference_->audio)
        out.emplace(*reference_->audio, reference_->audio_start);
    else if (settings_.audio)
        out.emplace(*settings_.audio, 0.0);
    else if (wanted && reference_ && reference_->audio)
        out.emplace(*reference_->audio, reference_->audio_start);
    if (out && !wanted)
        fail(kLog, "render",
             "prompt '{}' has driving audio {}, but the model ({}) takes no audio (its sampling inputs: {}); "
             "remove validation_audio / the entry's \"audio\" or use an audio-conditioned model",
             prompt.nickname, out->first.string(), model_.entry().id, describe_inputs(inputs_));
    if (!out && wanted)
        fail(kLog, "render",
             "prompt '{}': the model ({}) needs its {}: set validation_audio, give the prompt library entry "
             "an "
             "\"audio\", or train on clips with audio (a training sample's audio is used)",
             prompt.nickname, model_.entry().id, input_name(inputs_, sdk::MediaKind::audio));
    return out;
}

DrivingAudio encode_driving_audio(ModelHandle& model, const fs::path& file, double start, int64_t frames,
                                  int fps) {
    const int rate = model.audio_sample_rate();
    const double seconds = static_cast<double>(frames) / fps;
    const st::media::AudioWindow clip = st::media::decode_audio_window(file, rate, start, seconds);
    if (clip.covered < clip.samples)
        log::warn(kLog, "driving audio {}: {:.2f} of the {:.2f} s of the render are past its end (silence)",
                  file.string(), static_cast<double>(clip.samples - clip.covered) / rate, seconds);
    DrivingAudio d;
    d.features = model.encode_audio(clip.waveform.unsqueeze(0), static_cast<double>(fps), frames);
    d.samples = clip.waveform;
    d.sample_rate = rate;
    log::info(kLog, "driving audio {} ({:.2f} s from {:.2f} s at {} Hz) encoded", file.string(), seconds,
              start, rate);
    return d;
}

const DrivingAudio& Validator::driving_audio(const fs::path& file, double start) {
    // The render's time span from `start`, encoded once per file and start for the whole run.
    const std::string key = fmt::format("{}|{}", file.string(), start);
    auto it = audio_cache_.find(key);
    if (it != audio_cache_.end()) return it->second;
    return audio_cache_
        .emplace(key, encode_driving_audio(model_, file, start, settings_.frames, settings_.fps))
        .first->second;
}

}  // namespace st::host::validate
