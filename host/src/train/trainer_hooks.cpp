// The training loop's side of the Lua hooks (host/lua/): events with their tables, st.state, and the
// actions handlers queue, applied between steps. The event fields are listed in docs/lua-hooks.md.
#include <fmt/format.h>

#include "st/error.h"
#include "train/stop_signal.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.train";

void merge_actions(lua::HookActions& into, lua::HookActions&& from) {
    // A hook error names the stop even when an st.stop() came first: it decides the exit code.
    if (from.stop && (!into.stop || (from.error && !into.error))) {
        into.stop = true;
        into.stop_reason = from.stop_reason;
    }
    into.error |= from.error;
    into.save_checkpoint |= from.save_checkpoint;
    into.validate_now |= from.validate_now;
    if (from.lr_scale) into.lr_scale = from.lr_scale;
    for (auto& m : from.metrics) into.metrics.push_back(std::move(m));
}
}  // namespace

void Trainer::start_hooks() {
    auto options = lua::hook_options_from_config(setup_.config, setup_.config_path.parent_path());
    if (options.scripts.empty()) return;
    options.seed = seed_;
    // SIGINT/SIGTERM reach a handler that is running (a hook must never make the run deaf to them).
    options.stop_requested = [] {
        const char* name = nullptr;
        return StopSignal::requested(&name) ? name : nullptr;
    };
    hooks_ = std::make_unique<lua::HookEngine>(options);
    std::vector<std::string> names;
    for (const auto& s : options.scripts) names.push_back(s.string());
    log::info(kLog, "Lua hooks loaded (api level {}): {}", lua::HookEngine::api_level(),
              fmt::format("{}", fmt::join(names, ", ")));
}

nlohmann::json Trainer::state_table() const {
    return {{"step", global_step_},
            {"epoch", data_ ? data_->epoch() : 0},
            {"total_steps", total_steps_},
            {"loss", last_loss_},
            {"lr_scale", lr_scale_},
            {"nonfinite_in_row", nonfinite_in_row_},
            {"seed", seed_},
            {"output_dir", cfg_.output_dir.string()}};
}

nlohmann::json Trainer::fire(const std::string& event, const nlohmann::json& table) {
    if (!hooks_ || !hooks_->has_handlers(event)) return table;
    hooks_->set_state(state_table());
    nlohmann::json out = hooks_->fire(event, table);
    merge_actions(pending_, hooks_->take_actions());
    return out;
}

std::string Trainer::apply_actions() {
    lua::HookActions a = std::move(pending_);
    pending_ = {};
    if (a.lr_scale && *a.lr_scale != lr_scale_) {
        log::info(kLog, "Lua hook: learning-rate scale {} -> {} from step {}", lr_scale_, *a.lr_scale,
                  global_step_ + 1);
        lr_scale_ = *a.lr_scale;
    }
    if (!a.metrics.empty()) {
        nlohmann::json line = {{"step", global_step_}, {"hook_metrics", nlohmann::json::object()}};
        for (const auto& [k, v] : a.metrics) line["hook_metrics"][k] = v;
        write_metrics(line);
    }
    if (a.save_checkpoint && checkpoints_->last_step() != global_step_)
        save_checkpoint("requested by a Lua hook");
    if (a.validate_now) validate_requested_ = true;
    if (a.stop && a.error) return a.stop_reason;  // "Lua hook error: ..."
    if (a.stop)
        return a.stop_reason.empty() ? std::string("a Lua hook called st.stop()")
                                     : "Lua hook: " + a.stop_reason;
    return {};
}

}  // namespace st::host::train
