// The steps: batches (epochs, accumulation), flow-matching loss, backward, clipping, optimizer, EMA,
// metrics and progress, checkpoints and stop requests between steps.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <random>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/flow_matching.h"
#include "st/grad_clip.h"
#include "system_info.h"
#include "train/stop_signal.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
constexpr const char* kLog = "host.train";

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

int64_t Trainer::apply_caption_dropout(sdk::Batch& batch) {
    if (cfg_.caption_dropout <= 0 || batch.samples.empty()) return 0;
    int64_t dropped = 0;
    const int64_t n = static_cast<int64_t>(batch.samples.size());
    const at::Tensor draws = at::rand({n}, generator_, at::kDouble);
    for (int64_t i = 0; i < n; ++i) {
        if (draws[i].item<double>() >= cfg_.caption_dropout) continue;
        ++dropped;
        batch.samples[static_cast<size_t>(i)].caption.clear();
        for (const auto& [name, empty] : null_text_) {
            auto it = batch.tensors.find(name);
            if (it == batch.tensors.end()) continue;
            if (it->second.sizes().slice(1) != empty.sizes().slice(1))
                fail(kLog, "caption_dropout", "the empty caption's '{}' is {} but the batch's is {}", name,
                     c10::str(empty.sizes()), c10::str(it->second.sizes()));
            it->second[i].copy_(empty[0].to(it->second.scalar_type()));
        }
    }
    return dropped;
}

double Trainer::micro_step(sdk::Batch& batch, StepReport& report) {
    auto t0 = Clock::now();
    const int64_t b = static_cast<int64_t>(batch.samples.size());
    const ObjectiveResult r =
        objective_->training_loss(batch, generator_, global_step_, total_steps_, b * rank_, b * world_);
    report.time.forward += seconds_since(t0);
    auto t1 = Clock::now();
    (r.loss / static_cast<double>(cfg_.accumulation)).backward();
    report.time.backward += seconds_since(t1);
    for (int64_t i = 0; i < r.timesteps.size(0); ++i)
        report.timesteps.push_back(r.timesteps[i].item<double>());
    for (const auto& [name, term] : r.terms) report.terms[name] += term.item<double>();
    for (const auto& [name, v] : r.metrics) report.metrics[name] += v;
    ++report.micro_batches;
    return r.loss.item<double>();
}

StepReport Trainer::train_step() {
    const auto step_start = Clock::now();
    StepReport r;
    r.step = global_step_ + 1;
    int64_t n = 0, empty_epochs = 0;
    double loss_sum = 0;
    bool finite = true;
    while (n < cfg_.accumulation) {
        auto t = Clock::now();
        auto batch = data_->next();
        r.time.data += seconds_since(t);
        if (!batch) {
            if (n > 0 || data_->done()) break;  // end of epoch: step with what was accumulated
            if (++empty_epochs > 1) fail(kLog, "step", "an epoch yielded no batch at all");
            continue;
        }
        if (n == 0) {
            // The step belongs to the epoch of its first batch: known only now (the previous step may
            // have taken the last batch of an epoch without the epoch having ended yet).
            r.epoch = data_->epoch();
            fire("on_step_start", {{"step", r.step}, {"epoch", r.epoch}});
        }
        if (validation_) validation_->offer(*batch);
        r.captions_dropped += apply_caption_dropout(*batch);
        for (const auto& s : batch->samples) {
            r.sample_ids.push_back(s.dataset_id + "/" + s.id);
            r.captions.push_back(s.caption);
        }
        if (!batch->samples.empty()) r.bucket = batch->samples.front().bucket;
        r.samples += static_cast<int64_t>(batch->samples.size());
        double l = 0;
        if (coll_) {
            // Every rank holds the global batch; it trains on its slice, and the gradients of the
            // accumulation's last micro-step are averaged while its backward runs.
            reducer_->arm(n + 1 == cfg_.accumulation);
            sdk::Batch local = shard_of(*batch);
            l = micro_step(local, r);
        } else {
            l = micro_step(*batch, r);
        }
        if (!std::isfinite(l)) finite = false;
        loss_sum += l;
        ++n;
    }
    if (n == 0) return r;
    reduce_step(r, loss_sum, finite, n);  // data parallel: averages over the ranks
    r.loss = loss_sum / static_cast<double>(n);
    for (auto& [name, v] : r.terms) v /= static_cast<double>(n);
    for (auto& [name, v] : r.metrics) v /= static_cast<double>(r.micro_batches);

    auto t = Clock::now();
    r.lr = scheduler_->lr(global_step_, cfg_.learning_rate) * lr_scale_;
    r.grad_metric = sdk::clip_gradients(param_tensors_, cfg_.grad_clip_method, cfg_.max_grad_norm);
    if (!std::isfinite(r.grad_metric)) finite = false;
    if (finite) {
        for (int g = 0; g < optimizer_->group_count(); ++g) optimizer_->set_lr(g, r.lr);
        in_update_ = true;
        call_plugin(*optimizer_entry_, "step", [&] { optimizer_->step(); });
        ++global_step_;
        if (ema_ && global_step_ % cfg_.ema_update_interval == 0) ema_->update(global_step_);
        in_update_ = false;
        nonfinite_in_row_ = 0;
    } else {
        r.skipped = true;
        ++nonfinite_in_row_;
        ++nonfinite_total_;
        log::warn(
            kLog,
            "step {} skipped: {} is not finite (loss {}, grad {}); batch of bucket {}: {} ({} in a row, "
            "limit {})",
            r.step, std::isfinite(r.loss) ? "the gradient" : "the loss", r.loss, r.grad_metric, r.bucket,
            fmt::format("{}", fmt::join(r.sample_ids, ", ")), nonfinite_in_row_, cfg_.max_nonfinite);
    }
    optimizer_->zero_grad();
    r.time.optimizer = seconds_since(t);
    r.time.total = seconds_since(step_start);
    return r;
}

void Trainer::report_step(const StepReport& r) {
    nlohmann::json line = {
        {"step", r.skipped ? global_step_ : r.step},
        {"epoch", r.epoch},
        {"loss", std::isfinite(r.loss) ? nlohmann::json(r.loss) : nlohmann::json(std::to_string(r.loss))},
        {"loss_terms", nlohmann::json::object()},
        {"lr", r.lr},
        {cfg_.grad_clip_method == "norm" ? "grad_norm" : "grad_abs_max",
         std::isfinite(r.grad_metric) ? nlohmann::json(r.grad_metric) : nlohmann::json()},
        {"timesteps", r.timesteps},
        {"samples", r.samples},
        {"captions_dropped", r.captions_dropped},
        {"bucket", r.bucket},
        {"time",
         {{"data", r.time.data},
          {"forward", r.time.forward},
          {"backward", r.time.backward},
          {"optimizer", r.time.optimizer},
          {"allreduce", r.time.allreduce},
          {"host",
           std::max(0.0, r.time.total - r.time.data - r.time.forward - r.time.backward - r.time.optimizer)},
          {"total", r.time.total}}},
        {"elapsed", seconds_since(started_)}};
    for (const auto& [name, v] : r.terms)
        line["loss_terms"][name] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
    if (!r.metrics.empty()) {
        line["regularizer_metrics"] = nlohmann::json::object();
        for (const auto& [name, v] : r.metrics)
            line["regularizer_metrics"][name] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
    }
    if (r.skipped) line["skipped"] = true;
    if (world_ > 1) line["world_size"] = world_;
    if (hooks_ && hooks_->has_handlers("on_step_end")) {
        nlohmann::json t = line;
        t["captions"] = r.captions;
        t["ids"] = r.sample_ids;
        t["step_time"] = r.time.total;
        t["skipped"] = r.skipped;
        fire("on_step_end", t);
    }
    // st.metric values of this step's handlers (on_step_start, on_epoch_start, on_step_end) join the
    // step's line.
    for (const auto& [k, v] : pending_.metrics) line["hook_metrics"][k] = v;
    pending_.metrics.clear();
    write_metrics(line);
}

void Trainer::write_metrics(const nlohmann::json& line) {
    if (!writer()) return;
    metrics_->write(line);
    if (tensorboard_) tensorboard_->write_metrics(line);
}

int Trainer::run() {
    started_ = Clock::now();
    if (cfg_.seed) {
        seed_ = *cfg_.seed;
    } else {
        seed_ = std::random_device{}() & 0x7fffffffu;
        log::info(kLog, "seed is not set: drew seed {} (set seed to repeat this run)", seed_);
    }
    checkpoints_ = std::make_unique<CheckpointManager>(cfg_.output_dir, cfg_.checkpoint_interval,
                                                       cfg_.checkpoints_limit);
    start_distributed();  // a launched rank meets the others first (every rank checked the config)
    if (writer()) checkpoints_->report_leftovers();
    generator_ = at::make_generator<at::CPUGeneratorImpl>(seed_);
    if (writer()) {
        start_hooks();  // script errors show before anything expensive loads
        start_webhooks();
    }
    try {
        plan_resume();
        load_model();
        open_data();
        plan_steps();
        setup_trainable();
        create_optimizer();
        // ATen's global generator (saved with checkpoints; LoRA dropout uses the run's generator_) is
        // seeded here, after caching, which may draw from it: a run that builds its caches and one that
        // reads them train alike.
        at::manual_seed(seed_);
        maybe_resume();
        sync_weights();  // data parallel: rank 0's weights everywhere, and the gradient buckets
        if (writer()) {
            checkpoints_->check_foreign(global_step_, total_steps_);
            // A kill between a save and its prune leaves one checkpoint too many, and a run that never
            // saves again (its budget reached) would keep it for good.
            checkpoints_->prune_at_start(checkpoints_->last_step());
            build_eval_set();
            start_validation();
        }
    } catch (const std::exception& e) {
        // The webhook hears why the run never started (a setting the model cannot render, an empty
        // dataset, ...), as it hears a failed step; the error still ends the run with exit code 1.
        notify("error", notify::Severity::error, fmt::format("Training could not start: {}", e.what()));
        throw;
    }
    snapshot_position();
    if (writer()) metrics_ = std::make_unique<MetricsWriter>(cfg_.output_dir / "metrics.jsonl", global_step_);
    if (cfg_.tensorboard_dir && writer()) {
        tensorboard_ = std::make_unique<TensorBoardWriter>(*cfg_.tensorboard_dir, global_step_);
        log::info(kLog, "TensorBoard: writing {}; view with: tensorboard --logdir {}",
                  tensorboard_->file().string(), cfg_.tensorboard_dir->parent_path().string());
    }
    notify("training.status", notify::Severity::info,
           fmt::format("Training {} at step {} of {} ({})", global_step_ > 0 ? "resumes" : "starts",
                       global_step_, total_steps_, setup_.model->id),
           {{"step", global_step_}, {"total_steps", total_steps_}});
    {
        int64_t trainable = 0;
        for (const auto& [n, t] : params_) trainable += t.numel();
        fire("on_train_start", {{"step", global_step_},
                                {"total_steps", total_steps_},
                                {"epoch", data_->epoch_index() + 1},
                                {"output_dir", cfg_.output_dir.string()},
                                {"model", setup_.model->id},
                                {"model_type", cfg_.model_type == ModelType::lora ? "lora" : "full"},
                                {"trainable_parameters", trainable},
                                {"seed", seed_},
                                {"resumed", global_step_ > 0}});
    }

    StopSignal signals;
    int code = 0;
    std::string stop_reason;
    {
        log::Progress progress("train", "steps", total_steps_, "steps");
        progress.set(global_step_);
        double loss_ema = std::nan("");
        while (global_step_ < total_steps_) {
            StepReport r;
            try {
                r = train_step();
            } catch (const std::exception& e) {
                log::error(kLog, "step {} failed: {}", global_step_ + 1, e.what());
                if (coll_) coll_->report_exit(fmt::format("step {} failed: {}", global_step_ + 1, e.what()));
                fire("on_error", {{"step", global_step_ + 1}, {"message", e.what()}});
                notify("error", notify::Severity::error,
                       fmt::format("Training failed at step {}: {}", global_step_ + 1, e.what()));
                if (writer() && global_step_ > checkpoints_->last_step() && global_step_ > 0 && !in_update_)
                    save_checkpoint("the failed step (state of the last completed step)");
                throw;
            }
            if (r.samples == 0) {
                log::info(kLog, "all {} epoch(s) done at step {}", cfg_.num_train_epochs, global_step_);
                break;
            }
            report_step(r);
            snapshot_position();
            if (!r.skipped) last_loss_ = r.loss;
            const bool hook_error = pending_.error;  // apply_actions() drains pending_
            if (std::string hook_stop = apply_actions(); !hook_stop.empty() || nonfinite_weights_) {
                stop_reason = hook_stop;
                if (hook_error) code = 1;  // lua_hook_error=stop: a failed run, not a requested stop
                if (!coll_) break;
            }
            if (!r.skipped) {
                loss_ema = std::isnan(loss_ema) ? r.loss : 0.9 * loss_ema + 0.1 * r.loss;
                progress.set(global_step_);
                std::string extra;
                for (const auto& [name, v] : r.terms)
                    if (name != "flow_matching") extra += fmt::format(" {} {:.4f}", name, v);
                for (const auto& [name, v] : r.metrics)
                    if (name.find("score") != std::string::npos) extra += fmt::format(" {} {:.4f}", name, v);
                progress.set_note(fmt::format("loss {:.4f} (avg {:.4f}){} lr {:.3g} {:.2f} s/step", r.loss,
                                              loss_ema, extra, r.lr, r.time.total));
            }
            if (coll_) {
                // Every rank leaves at the same step: rank 0's decision, or a signal any rank got.
                if (nonfinite_in_row_ >= cfg_.max_nonfinite && stop_reason.empty()) {
                    stop_reason =
                        fmt::format("{} steps in a row had a non-finite loss or gradient", nonfinite_in_row_);
                    code = 4;
                }
                const char* sig = nullptr;
                if (agree_to_stop(stop_reason, code, signals.requested(&sig))) break;
                if (!r.skipped && cfg_.eval_interval > 0 && global_step_ % cfg_.eval_interval == 0 &&
                    writer())
                    evaluate();
                if (validation_ && validation_->due(global_step_, r.skipped, validate_requested_)) validate();
                validate_requested_ = false;
                if (!r.skipped && checkpoints_->due(global_step_, total_steps_) && writer())
                    save_checkpoint("checkpoint_step_interval");
                if (nonfinite_weights_ && stop_reason.empty()) {
                    stop_reason = "the weights hold non-finite values (see the error above)";
                    code = 4;
                }
                if (agree_to_stop(stop_reason, code, signals.requested(&sig))) break;
                continue;
            }
            if (nonfinite_in_row_ >= cfg_.max_nonfinite) {
                stop_reason =
                    fmt::format("{} steps in a row had a non-finite loss or gradient", nonfinite_in_row_);
                code = 4;
                break;
            }
            const char* sig = nullptr;
            if (signals.requested(&sig)) {
                stop_reason = fmt::format("{} received", sig);
                break;
            }
            if (!r.skipped && cfg_.eval_interval > 0 && global_step_ % cfg_.eval_interval == 0) evaluate();
            if (validation_ && validation_->due(global_step_, r.skipped, validate_requested_)) validate();
            validate_requested_ = false;
            if (signals.requested(&sig)) {  // a Ctrl-C during the validation stopped it: save and exit
                stop_reason = fmt::format("{} received", sig);
                break;
            }
            if (!r.skipped && checkpoints_->due(global_step_, total_steps_))
                save_checkpoint("checkpoint_step_interval");
            if (nonfinite_weights_) {
                // Training cannot recover from inf/NaN weights: stop like the non-finite-loss limit.
                stop_reason = "the weights hold non-finite values (see the error above)";
                code = 4;
                break;
            }
        }
        progress.finish();
    }
    if (nonfinite_weights_) {
        code = 4;
        if (stop_reason.empty()) stop_reason = "the weights hold non-finite values (see the error above)";
    }
    if (!stop_reason.empty()) log::warn(kLog, "stopping at step {}: {}", global_step_, stop_reason);
    // A save refused for non-finite values at this step is not tried again.
    if (global_step_ > 0 && checkpoints_->last_step() != global_step_ && !nonfinite_weights_ && writer())
        save_checkpoint(stop_reason.empty() ? "end of training" : stop_reason);
    if (!writer()) {
        if (coll_) coll_->report_exit(stop_reason.empty() ? "finished" : stop_reason);
        log::info(kLog, "rank {} done at step {}", rank_, global_step_);
        return code;
    }
    if (stop_reason.empty() && global_step_ > 0) {
        save_final_weights();
        if (nonfinite_weights_)
            code = 4;
        else
            validate();  // SimpleTuner's final validation (skipped when this step was just validated)
    }
    if (nonfinite_total_ > 0)
        log::warn(kLog, "{} step(s) were skipped for non-finite values", nonfinite_total_);
    if ((checkpoints_->failed() || final_weights_failed_) && code == 0) code = 1;
    if (pending_.error && code == 0) code = 1;  // a hook failed after the last step (lua_hook_error=stop)
    notify("training.status", code == 0 ? notify::Severity::info : notify::Severity::error,
           fmt::format("Training {} at step {}{}", stop_reason.empty() ? "finished" : "stopped", global_step_,
                       stop_reason.empty() ? std::string() : ": " + stop_reason),
           {{"step", global_step_}, {"exit_code", code}});
    fire("on_train_end", {{"step", global_step_},
                          {"reason", stop_reason.empty() ? std::string("finished") : stop_reason},
                          {"exit_code", code},
                          {"metrics", metrics_->path().string()}});
    if (pending_.error && code == 0) code = 1;  // on_train_end failed (lua_hook_error=stop)
    log::info(kLog, "{} after {} steps in {:.1f} s; metrics in {}; peak RSS while training {:.0f} MiB",
              stop_reason.empty() ? "training finished" : "training stopped", global_step_,
              seconds_since(started_), metrics_->path().string(), rss_peak_mib());
    return code;
}

}  // namespace st::host::train
