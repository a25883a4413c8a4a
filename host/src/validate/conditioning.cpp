// Validator: what a render needs besides text (ModelFamily::sampling_inputs, ABI 1.2), the
// reference image and the driving audio of speech-to-video, and where they come from: the prompt
// library entry, validation_image / validation_audio, or a training sample (SimpleTuner
// validation.retrieve_validation_s2v_samples).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "media/audio_reader.h"
#include "plugins/guard.h"
#include "st/error.h"
#include "st/log.h"
#include "validate/validator.h"

namespace st::host::validate {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLog = "host.validate";

bool has(const std::vector<std::string>& v, const char* name) {
    return std::find(v.begin(), v.end(), name) != v.end();
}

}  // namespace

bool Validator::needs_reference_sample() const {
    if (!enabled()) return false;
    const bool datasets = settings_.using_datasets;
    for (const Prompt& p : prompts()) {
        if (has(inputs_, "image") && !p.image && (!settings_.image || datasets)) return true;
        if (has(inputs_, "audio") && !p.audio && (!settings_.audio || datasets)) return true;
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
    if (settings_.using_datasets && reference_ && has(inputs_, "image")) return reference_->video;
    if (settings_.image) return settings_.image;
    if (!has(inputs_, "image")) return std::nullopt;
    if (reference_) return reference_->video;
    fail(kLog, "render",
         "prompt '{}': the model ({}) needs a conditioning/reference image: set validation_image, give the "
         "prompt library entry an \"image\", or train on a dataset (the first frame of a training video is "
         "used)",
         prompt.nickname, entry_.plugin_name);
}

std::optional<std::pair<fs::path, double>> Validator::audio_for(const Prompt& prompt) const {
    const bool wanted = has(inputs_, "audio");
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
             "prompt '{}' has driving audio {}, but the model plugin '{}' takes no audio (its sampling "
             "inputs: "
             "{}); remove validation_audio / the entry's \"audio\" or use a speech-to-video model",
             prompt.nickname, out->first.string(), entry_.plugin_name,
             inputs_.empty() ? std::string("text only") : fmt::format("{}", fmt::join(inputs_, ", ")));
    if (!out && wanted)
        fail(kLog, "render",
             "prompt '{}': the model ({}) needs driving audio: set validation_audio, give the prompt library "
             "entry an \"audio\", or train on clips with audio (a training sample's audio is used)",
             prompt.nickname, entry_.plugin_name);
    return out;
}

DrivingAudio encode_driving_audio(sdk::ModelFamily& model, const ComponentEntry& entry, const fs::path& file,
                                  double start, int64_t frames, int fps) {
    const int rate = model.audio_sample_rate();
    const double seconds = static_cast<double>(frames) / fps;
    media::AudioClip clip = media::read_audio(file, rate, start, seconds);
    if (clip.covered < clip.samples.numel())
        log::warn(kLog, "driving audio {}: {:.2f} of the {:.2f} s of the render are past its end (silence)",
                  file.string(), static_cast<double>(clip.samples.numel() - clip.covered) / rate, seconds);
    DrivingAudio d;
    d.features = call_plugin(entry, "encode_audio", [&] {
        return model.encode_audio(clip.samples.unsqueeze(0), static_cast<double>(fps), frames);
    });
    d.samples = clip.samples;
    d.sample_rate = rate;
    log::info(kLog, "driving audio {} ({:.2f} s from {:.2f} s at {} Hz) encoded", file.string(), seconds,
              start, rate);
    return d;
}

bool model_samples_from(sdk::ModelFamily& model, const ComponentEntry& entry, const std::string& name) {
    if (entry.plugin_abi_minor < 2) return false;
    const auto inputs = call_plugin(entry, "sampling_inputs", [&] { return model.sampling_inputs(); });
    return std::find(inputs.begin(), inputs.end(), name) != inputs.end();
}

const DrivingAudio& Validator::driving_audio(const fs::path& file, double start) {
    // The render's time span from `start`, encoded once per file and start for the whole run.
    const std::string key = fmt::format("{}|{}", file.string(), start);
    auto it = audio_cache_.find(key);
    if (it != audio_cache_.end()) return it->second;
    return audio_cache_
        .emplace(key, encode_driving_audio(model_, entry_, file, start, settings_.frames, settings_.fps))
        .first->second;
}

}  // namespace st::host::validate
