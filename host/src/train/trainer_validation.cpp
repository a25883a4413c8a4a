// Validation renders during training (host/src/validate: the same path as st-host generate) and
// the run's webhook events (host/src/notify): start, checkpoints, validations with their videos,
// previews, the end and errors. A failing webhook is logged by the sender and never stops training.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "plugins/guard.h"
#include "st/error.h"
#include "train/stop_signal.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace fs = std::filesystem;
namespace {
constexpr const char* kLog = "host.train";
}

void Trainer::start_validation() {
    validation_ = ValidationController::create(setup_.config, setup_.config_path.parent_path(),
                                               cfg_.output_dir, *model_, seed_);
    if (!validation_) return;
    validation_->choose_reference(resumed_reference_, *data_);
    // A Ctrl-C while rendering stops the render at its next sampling step; the loop then saves and exits.
    validation_->validator().set_stop_check([] { return StopSignal::requested(); });
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
    if (!validation_ || last_validation_step_ == global_step_) return;
    last_validation_step_ = global_step_;
    // Rendering may build modules (a text encoder reloaded on demand initialises its layers from
    // ATen's global generator, which also drives LoRA dropout): keep the training stream untouched so
    // runs with and without a resume in between stay bit-identical.
    struct KeepGlobalGenerator {
        at::Generator g = at::detail::getDefaultCPUGenerator();
        at::Tensor state = g.get_state();
        ~KeepGlobalGenerator() { g.set_state(state); }
    } keep;
    std::function<nlohmann::json(const nlohmann::json&)> edit;
    if (hooks_ && hooks_->has_handlers("on_validation_start"))
        edit = [this](const nlohmann::json& texts) {
            auto out = fire("on_validation_start", {{"step", global_step_}, {"prompts", texts}});
            return out.contains("prompts") ? out["prompts"] : texts;
        };
    const std::vector<validate::Prompt> prompts = validation_->prompts(edit);
    if (prompts.empty()) {
        log::info(kLog, "step {}: no validation prompt left after the hooks; nothing rendered", global_step_);
        return;
    }
    validate::Validator::SwapEma swap;
    if (ema_) swap = [this] { ema_->swap_into_model(); };
    validate::Validator::PreviewFn preview;
    if (webhooks_ && validation_->settings().preview)
        preview = [this](const std::string& nick, int64_t k, const at::Tensor& frame) {
            webhooks_->send(validate::preview_event(cfg_.output_dir, global_step_, nick, k, frame));
        };
    validate::Validator::Output out;
    try {
        out = validation_->validator().run(global_step_, prompts, swap, preview);
    } catch (const validate::SamplingStopped& e) {
        log::warn(kLog, "step {}: validation interrupted by the stop request ({})", global_step_, e.what());
        return;
    }
    nlohmann::json files = nlohmann::json::array();
    std::vector<fs::path> videos;
    for (const auto& f : out.files) {
        files.push_back(f.string());
        if (f.extension() == ".mp4") videos.push_back(f);
        if (tensorboard_ && f.extension() == ".png")
            tensorboard_->write_png_file(global_step_, "validation/" + f.stem().string(), f);
    }
    log::info(kLog, "step {}: validation wrote {} file(s) in {:.1f} s", global_step_, out.files.size(),
              out.seconds);
    write_metrics({{"step", global_step_}, {"validation", {{"files", files}, {"seconds", out.seconds}}}});
    fire("on_validation_end", {{"step", global_step_}, {"files", files}, {"seconds", out.seconds}});
    notify("validation", notify::Severity::info, fmt::format("Validation at step {}", global_step_),
           {{"step", global_step_}, {"files", files}}, videos);
}

}  // namespace st::host::train
