#include "train/validation_controller.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "st/error.h"
#include "st/log.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.train";
}

std::unique_ptr<ValidationController> ValidationController::create(const sdk::ConfigView& config,
                                                                   const fs::path& config_dir,
                                                                   const fs::path& output_dir,
                                                                   ModelHandle& model, uint64_t seed) {
    auto v = std::make_unique<validate::Validator>(config, config_dir, output_dir, model, seed);
    if (!v->enabled()) {
        log::info(kLog,
                  "validation off (no validation_prompt or prompt library, or validation_step_interval 0)");
        return nullptr;
    }
    const auto& s = v->settings();
    log::info(kLog,
              "validation every {} steps: {} prompt(s), {} frames, {} steps of {}, guidance {}, into {}",
              s.step_interval, v->prompts().size(), s.frames, s.steps, s.scheduler, s.guidance,
              (output_dir / "validation").string());
    return std::make_unique<ValidationController>(std::move(v));
}

ValidationController::ValidationController(std::unique_ptr<validate::Validator> validator)
    : validator_(std::move(validator)), wants_reference_(validator_->needs_reference_sample()) {}

void ValidationController::choose_reference(const nlohmann::json& saved, DataCursor& data) {
    if (!wants_reference_) return;
    if (saved.is_object()) {
        // The reference chosen before the interruption (the batch order after a resume differs).
        validate::ReferenceSample ref;
        ref.id = saved.value("id", std::string());
        ref.video = saved.value("video", std::string());
        if (saved.contains("audio") && saved["audio"].is_string())
            ref.audio = fs::path(saved["audio"].get<std::string>());
        ref.audio_start = saved.value("audio_start", 0.0);
        validator_->set_reference_sample(std::move(ref));
        return;
    }
    if (settings().eval_dataset_id) find_reference_in(*settings().eval_dataset_id, data);
}

bool ValidationController::take_reference(const sdk::Batch& batch, const std::string* only_dataset) {
    const bool audio = validator_->needs(sdk::MediaKind::audio);
    for (const auto& s : batch.samples) {
        if (only_dataset && s.dataset_id != *only_dataset) continue;
        validate::ReferenceSample r;
        r.id = s.dataset_id + "/" + s.id;
        r.video = s.path;
        const auto a = s.meta.find("audio");
        if (a != s.meta.end() && a->is_object() && !a->value("zero", true)) {
            r.audio = fs::path(a->value("source", std::string()));
            r.audio_start = a->value("start", 0.0);
        }
        if (audio && !r.audio) continue;
        validator_->set_reference_sample(std::move(r));
        return true;
    }
    return false;
}

void ValidationController::offer(const sdk::Batch& batch) {
    if (!wants_reference_ || validator_->reference_sample()) return;
    const auto& only = settings().eval_dataset_id;
    take_reference(batch, only ? &*only : nullptr);
}

void ValidationController::find_reference_in(const std::string& dataset, DataCursor& data) {
    // eval_dataset_id: the first usable sample of that dataset, held-out (dataset_type eval) or not.
    std::set<std::string> seen;
    for (const auto& batch : data.eval_batches(0, 1)) {
        seen.insert(batch.samples.front().dataset_id);
        if (take_reference(batch, &dataset)) return;
    }
    const bool found = data.scan([&](const sdk::Batch& batch) {
        seen.insert(batch.samples.front().dataset_id);
        return take_reference(batch, &dataset);
    });
    if (found) return;
    fail(kLog, "validation",
         "eval_dataset_id '{}': no usable sample of that dataset{} (datasets with samples: {})", dataset,
         validator_->needs(sdk::MediaKind::audio) ? " with audio" : "",
         seen.empty() ? std::string("none") : fmt::format("{}", fmt::join(seen, ", ")));
}

nlohmann::json ValidationController::reference_json() const {
    if (!validator_->reference_sample()) return nullptr;
    const auto& r = *validator_->reference_sample();
    return {{"id", r.id},
            {"video", r.video.string()},
            {"audio", r.audio ? nlohmann::json(r.audio->string()) : nlohmann::json(nullptr)},
            {"audio_start", r.audio_start}};
}

bool ValidationController::due(int64_t step, bool skipped, bool requested) const {
    return (!skipped && validator_->due(step)) || requested;
}

std::vector<validate::Prompt> ValidationController::prompts(
    const std::function<nlohmann::json(const nlohmann::json&)>& edit) const {
    std::vector<validate::Prompt> prompts = validator_->prompts();
    if (!edit) return prompts;
    nlohmann::json texts = nlohmann::json::array();
    for (const auto& p : prompts) texts.push_back(p.text);
    const nlohmann::json out = edit(texts);
    if (!out.is_array()) return prompts;
    std::vector<validate::Prompt> edited;
    for (size_t i = 0; i < out.size(); ++i) {
        if (!out[i].is_string()) continue;
        const std::string text = out[i].get<std::string>();
        auto it = std::find_if(prompts.begin(), prompts.end(), [&](const auto& p) { return p.text == text; });
        validate::Prompt p = it != prompts.end() ? *it : validate::Prompt{};
        if (it == prompts.end()) {
            p.nickname = fmt::format("hook_{}", i);
            p.text = text;
            p.negative = settings().negative_prompt;
        }
        edited.push_back(std::move(p));
    }
    return edited;
}

}  // namespace st::host::train
