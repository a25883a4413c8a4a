// Validation renders during training (host/src/validate: the same path as st-host generate) and
// the run's webhook events (host/src/notify): start, checkpoints, validations with their videos,
// previews, the end and errors. A failing webhook is logged by the sender and never stops training.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "plugins/guard.h"
#include "st/error.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace fs = std::filesystem;
namespace {
constexpr const char* kLog = "host.train";
}

void Trainer::start_validation() {
    validator_ = std::make_unique<validate::Validator>(setup_.config, setup_.config_path.parent_path(),
                                                       cfg_.output_dir, *model_, seed_);
    if (!validator_->enabled()) {
        validator_.reset();
        log::info(kLog,
                  "validation off (no validation_prompt or prompt library, or validation_step_interval 0)");
        return;
    }
    wants_reference_ = validator_->needs_reference_sample();
    if (wants_reference_ && resumed_reference_.is_object()) {
        // The reference chosen before the interruption (the batch order after a resume differs).
        const auto& r = resumed_reference_;
        validate::ReferenceSample ref;
        ref.id = r.value("id", std::string());
        ref.video = r.value("video", std::string());
        if (r.contains("audio") && r["audio"].is_string())
            ref.audio = fs::path(r["audio"].get<std::string>());
        ref.audio_start = r.value("audio_start", 0.0);
        validator_->set_reference_sample(std::move(ref));
    }
    if (wants_reference_ && !validator_->reference_sample() && validator_->settings().eval_dataset_id)
        find_reference_in(*validator_->settings().eval_dataset_id);
    const auto& s = validator_->settings();
    log::info(kLog,
              "validation every {} steps: {} prompt(s), {} frames, {} steps of {}, guidance {}, into {}",
              s.step_interval, validator_->prompts().size(), s.frames, s.steps, s.scheduler, s.guidance,
              (cfg_.output_dir / "validation").string());
}

void Trainer::find_reference_in(const std::string& dataset) {
    // eval_dataset_id: the first usable sample of that dataset, held-out (dataset_type eval) or not.
    std::set<std::string> seen;
    for (auto& b : backends_) {
        auto batches =
            call_plugin(*b.component, "eval_batches", [&] { return b.backend->eval_batches(0, 1); });
        for (const auto& batch : batches) {
            seen.insert(batch.samples.front().dataset_id);
            if (batch.samples.front().dataset_id == dataset) offer_reference_sample(batch);
            if (validator_->reference_sample()) return;
        }
    }
    for (auto& b : backends_) {
        const auto saved = call_plugin(*b.component, "state", [&] { return b.backend->state(); });
        call_plugin(*b.component, "start_epoch", [&] { b.backend->start_epoch(0); });
        while (!validator_->reference_sample()) {
            auto batch = call_plugin(*b.component, "next_batch", [&] { return b.backend->next_batch(1); });
            if (!batch) break;
            seen.insert(batch->samples.front().dataset_id);
            if (batch->samples.front().dataset_id == dataset) offer_reference_sample(*batch);
        }
        call_plugin(*b.component, "restore", [&] { b.backend->restore(saved); });
        if (validator_->reference_sample()) return;
    }
    fail(kLog, "validation",
         "eval_dataset_id '{}': no usable sample of that dataset{} (datasets with samples: {})", dataset,
         validator_->needs(sdk::MediaKind::audio) ? " with audio" : "",
         seen.empty() ? std::string("none") : fmt::format("{}", fmt::join(seen, ", ")));
}

void Trainer::offer_reference_sample(const sdk::Batch& batch) {
    if (!wants_reference_ || !validator_ || validator_->reference_sample()) return;
    const bool audio = validator_->needs(sdk::MediaKind::audio);
    const auto& only = validator_->settings().eval_dataset_id;
    for (const auto& s : batch.samples) {
        if (only && s.dataset_id != *only) continue;
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
        return;
    }
}

void Trainer::start_webhooks() {
    if (!setup_.config.has("webhook_config")) return;
    auto targets = notify::parse_webhook_config(setup_.config.get_json("webhook_config"),
                                                setup_.config_path.parent_path());
    if (targets.empty()) return;
    const size_t n = targets.size();
    // The job id of every payload: the run folder's name (SimpleTuner uses its tracker run name).
    webhooks_ =
        std::make_unique<notify::WebhookSender>(std::move(targets), cfg_.output_dir.filename().string());
    log::info(kLog, "webhooks: posting run events to {} target(s)", n);
}

void Trainer::notify(const std::string& type, notify::Severity level, const std::string& message,
                     nlohmann::json data, std::vector<fs::path> attachments, bool raw_only) {
    if (!webhooks_) return;
    notify::Event e;
    e.type = type;
    e.level = level;
    e.message = message;
    e.data = std::move(data);
    e.attachments = std::move(attachments);
    e.raw_only = raw_only;
    webhooks_->send(std::move(e));
}

void Trainer::validate() {
    if (!validator_ || last_validation_step_ == global_step_) return;
    last_validation_step_ = global_step_;
    // Rendering may build modules (a text encoder reloaded on demand initialises its layers from
    // ATen's global generator, which also drives LoRA dropout): keep the training stream untouched so
    // runs with and without a resume in between stay bit-identical.
    struct KeepGlobalGenerator {
        at::Generator g = at::detail::getDefaultCPUGenerator();
        at::Tensor state = g.get_state();
        ~KeepGlobalGenerator() { g.set_state(state); }
    } keep;
    std::vector<validate::Prompt> prompts = validator_->prompts();
    if (hooks_ && hooks_->has_handlers("on_validation_start")) {
        nlohmann::json texts = nlohmann::json::array();
        for (const auto& p : prompts) texts.push_back(p.text);
        auto out = fire("on_validation_start", {{"step", global_step_}, {"prompts", texts}});
        if (out.contains("prompts") && out["prompts"].is_array()) {
            // Handlers may edit, drop or add prompts: known texts keep their nicknames, new ones are
            // named hook_<index>.
            std::vector<validate::Prompt> edited;
            for (size_t i = 0; i < out["prompts"].size(); ++i) {
                if (!out["prompts"][i].is_string()) continue;
                const std::string text = out["prompts"][i].get<std::string>();
                auto it = std::find_if(prompts.begin(), prompts.end(),
                                       [&](const auto& p) { return p.text == text; });
                validate::Prompt p = it != prompts.end() ? *it : validate::Prompt{};
                if (it == prompts.end()) {
                    p.nickname = fmt::format("hook_{}", i);
                    p.text = text;
                    p.negative = validator_->settings().negative_prompt;
                }
                edited.push_back(std::move(p));
            }
            prompts = std::move(edited);
        }
    }
    if (prompts.empty()) {
        log::info(kLog, "step {}: no validation prompt left after the hooks; nothing rendered", global_step_);
        return;
    }
    validate::Validator::SwapEma swap;
    if (ema_) swap = [this] { ema_->swap_into_model(); };
    validate::Validator::PreviewFn preview;
    if (webhooks_ && validator_->settings().preview)
        preview = [this](const std::string& nick, int64_t k, const at::Tensor& frame) {
            webhooks_->send(validate::preview_event(cfg_.output_dir, global_step_, nick, k, frame));
        };
    auto out = validator_->run(global_step_, prompts, swap, preview);
    nlohmann::json files = nlohmann::json::array();
    std::vector<fs::path> videos;
    for (const auto& f : out.files) {
        files.push_back(f.string());
        if (f.extension() == ".mp4") videos.push_back(f);
    }
    log::info(kLog, "step {}: validation wrote {} file(s) in {:.1f} s", global_step_, out.files.size(),
              out.seconds);
    metrics_->write({{"step", global_step_}, {"validation", {{"files", files}, {"seconds", out.seconds}}}});
    fire("on_validation_end", {{"step", global_step_}, {"files", files}, {"seconds", out.seconds}});
    notify("validation", notify::Severity::info, fmt::format("Validation at step {}", global_step_),
           {{"step", global_step_}, {"files", files}}, videos);
}

}  // namespace st::host::train
