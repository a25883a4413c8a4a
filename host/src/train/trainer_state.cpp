// Checkpoints (write, prune), resume (exact: weights, optimizer, EMA, RNG and data position) and
// the final weights in output_dir.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

#include <set>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/lora.h"
#include "st/safetensors.h"
#include "st/version.h"
#include "train/state_io.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.checkpoint";
constexpr const char* kLoraFile = "pytorch_lora_weights.safetensors";
constexpr const char* kLoraDiffusersFile = "pytorch_lora_weights_diffusers.safetensors";

nlohmann::json read_json(const fs::path& p) {
    try {
        const std::string text = sdk::read_file(p);
        sdk::check_json_limits(text, p.string(), kLog, "resume");
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail(kLog, "resume", "{}: invalid JSON: {}", p.string(), e.what());
    }
}
}  // namespace

void Trainer::snapshot_position() {
    position_.data = data_->position();
    position_.generator = generator_.get_state();
    position_.global_generator = at::detail::getDefaultCPUGenerator().get_state();
}

nlohmann::json Trainer::training_state() const {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [n, t] : params_) names.push_back(n);
    nlohmann::json data_ids = nlohmann::json::array();
    for (const auto& b : backends_) data_ids.push_back(b.component->id);
    return {{"format", "st-training-state-1"},
            {"validation_reference", validation_ ? validation_->reference_json() : nlohmann::json(nullptr)},
            {"global_step", global_step_},
            {"total_steps", total_steps_},
            {"epoch", position_.data.epoch},
            {"backend_index", position_.data.backend_index},
            {"epoch_open", position_.data.epoch_open},
            {"data_done", position_.data.data_done},
            {"data", position_.data.data},
            {"nonfinite_in_row", nonfinite_in_row_},
            {"nonfinite_total", nonfinite_total_},
            {"lr_scale", lr_scale_},
            {"seed", seed_},
            {"model_type", cfg_.model_type == ModelType::lora ? "lora" : "full"},
            {"lora_rank", cfg_.lora_rank},
            {"trainable", names},
            {"components",
             {{"model", setup_.model->id},
              {"model_plugin", setup_.model->plugin_name},
              {"optimizer", optimizer_entry_->id},
              {"lr_scheduler", scheduler_entry_->id},
              {"data", data_ids}}},
            {"st_version", ST_SDK_VERSION_STRING}};
}

void Trainer::save_weights(const fs::path& dir, bool ema) {
    fs::create_directories(dir);
    if (ema) ema_->swap_into_model();
    struct SwapBack {
        Ema* e;
        ~SwapBack() {
            if (e) e->swap_into_model();
        }
    } swap_back{ema ? ema_.get() : nullptr};
    const auto& entry = *setup_.model;
    torch::nn::Module& root = model_->trainable();
    if (cfg_.model_type == ModelType::lora) {
        const sdk::LoraNameMap names = model_->lora_name_map();
        const std::map<std::string, std::string> meta = {{"st_model", entry.id},
                                                         {"st_step", std::to_string(global_step_)},
                                                         {"st_ema", ema ? "true" : "false"}};
        sdk::save_lora(dir / kLoraFile, root, names ? sdk::LoraFormat::comfyui : sdk::LoraFormat::diffusers,
                       names, meta);
        if (cfg_.lora_write_diffusers && names)
            sdk::save_lora(dir / kLoraDiffusersFile, root, sdk::LoraFormat::diffusers, {}, meta);
    } else {
        model_->save_trainable(dir / model_->trainable_folder());
    }
}

bool Trainer::save_checkpoint(const std::string& why) {
    const auto dir = checkpoints_->save(
        global_step_,
        [&](const fs::path& d) {
            save_weights(d, false);
            if (ema_) {
                save_weights(d / "ema", true);
                save_state_dict(d / "ema" / "ema_state.safetensors", ema_->state_dict());
            }
            save_state_dict(d / "optimizer.safetensors", call_plugin(*optimizer_entry_, "state_dict", [&] {
                                return optimizer_->state_dict();
                            }));
            sdk::save_safetensors(
                d / "random_states.safetensors",
                {{"generator", position_.generator}, {"global_generator", position_.global_generator}});
            nlohmann::json state = training_state();
            if (!objective_->regularizers().empty())
                state["regularizers"] = save_regularizers(objective_->regularizers(), d);
            sdk::write_file_atomic(d / "training_state.json", state.dump(2) + "\n");
            sdk::write_file_atomic(d / "config.resolved.json", setup_.resolved.values.dump(2) + "\n");
        },
        why);
    if (!dir) {
        notify("error", notify::Severity::error, checkpoints_->last_error());
        return false;
    }
    fire("on_checkpoint", {{"step", global_step_}, {"path", dir->string()}, {"reason", why}});
    notify("training.checkpoint", notify::Severity::info,
           fmt::format("Checkpoint {} written ({})", dir->filename().string(), why),
           {{"step", global_step_}, {"path", dir->string()}});
    return true;
}

void Trainer::save_final_weights() {
    try {
        save_weights(cfg_.output_dir, false);
        if (ema_) save_weights(cfg_.output_dir / "ema", true);
        log::info(
            kLog, "final weights: {}{}",
            (cfg_.output_dir / (cfg_.model_type == ModelType::lora ? kLoraFile : model_->trainable_folder()))
                .string(),
            ema_ ? fmt::format(" (EMA: {})", (cfg_.output_dir / "ema").string()) : std::string());
    } catch (const std::exception& e) {
        final_weights_failed_ = true;
        log::error(kLog, "final weights could not be written to {}: {} (the last checkpoint has them)",
                   cfg_.output_dir.string(), e.what());
    }
}

void Trainer::maybe_resume() {
    if (const auto dir = checkpoints_->resume_dir(cfg_.resume)) restore(*dir);
}

void Trainer::restore(const fs::path& dir) {
    CheckpointStore::verify(dir);
    const nlohmann::json st = read_json(dir / "training_state.json");
    const auto& comps = st.at("components");
    const std::string model_type = cfg_.model_type == ModelType::lora ? "lora" : "full";
    if (st.value("model_type", "") != model_type)
        fail(kLog, "resume", "{} was trained with model_type {} but this run has {}", dir.string(),
             st.value("model_type", "?"), model_type);
    if (comps.value("optimizer", "") != optimizer_entry_->id)
        fail(kLog, "resume",
             "{} holds the state of optimizer {} but this run uses {}; set resume_from_checkpoint none (or "
             "init_lora to the checkpoint's LoRA) to start over with the new optimizer",
             dir.string(), comps.value("optimizer", "?"), optimizer_entry_->id);
    if (comps.value("model", "") != setup_.model->id)
        log::warn(kLog, "{} was written by {}; this run uses {}", dir.string(), comps.value("model", "?"),
                  setup_.model->id);
    std::vector<std::string> names;
    for (const auto& [n, t] : params_) names.push_back(n);
    if (st.at("trainable").get<std::vector<std::string>>() != names)
        fail(kLog, "resume",
             "{} trained a different set of parameters ({} tensors) than this run ({}); lora_rank, "
             "lora_target_modules or the model changed",
             dir.string(), st.at("trainable").size(), names.size());

    torch::nn::Module& root = model_->trainable();
    if (cfg_.model_type == ModelType::lora) {
        const sdk::LoraNameMap map = model_->lora_name_map();
        sdk::load_lora(dir / kLoraFile, root, 1.0, map, false);
    } else {
        auto src = sdk::open_tensor_source(dir / model_->trainable_folder());
        torch::NoGradGuard no_grad;
        for (const auto& [n, t] : params_) {
            if (!src->contains(n)) fail(kLog, "resume", "{} lacks the weight '{}'", src->describe(), n);
            at::Tensor v = src->load(n);
            if (v.sizes() != t.sizes())
                fail(kLog, "resume", "{}: '{}' is {} but the model's is {}", src->describe(), n,
                     c10::str(v.sizes()), c10::str(t.sizes()));
            t.detach().copy_(v);
        }
    }
    {
        // The regularizers the checkpoint trained must be this run's (their projectors are in the
        // optimizer state).
        std::set<std::string> saved, active;
        if (st.contains("regularizers"))
            for (const auto& [id, v] : st.at("regularizers").items()) saved.insert(id);
        for (const auto& r : objective_->regularizers()) active.insert(r.entry->id);
        if (saved != active)
            fail(
                kLog, "resume",
                "{} was trained with the regularizers [{}] but this run has [{}]; enable the same ones (e.g. "
                "crepa_enabled) or set resume_from_checkpoint none (init_lora to the checkpoint's LoRA keeps "
                "its weights)",
                dir.string(), fmt::format("{}", fmt::join(saved, ", ")),
                fmt::format("{}", fmt::join(active, ", ")));
        restore_regularizers(objective_->regularizers(), dir, st.value("regularizers", nlohmann::json()));
    }
    optimizer_->load_state_dict(load_state_dict(dir / "optimizer.safetensors"));
    if (ema_) {
        if (fs::exists(dir / "ema" / "ema_state.safetensors"))
            ema_->load_state_dict(load_state_dict(dir / "ema" / "ema_state.safetensors"));
        else
            log::warn(kLog, "{} has no EMA state: the EMA starts from the resumed weights", dir.string());
    }
    auto rng = sdk::SafetensorsFile::open(dir / "random_states.safetensors");
    generator_.set_state(rng->load("generator"));
    at::Generator global = at::detail::getDefaultCPUGenerator();
    global.set_state(rng->load("global_generator"));

    const auto& data = st.at("data");
    if (data.size() != backends_.size())
        fail(kLog, "resume", "{} has the position of {} data backends but this run opened {}", dir.string(),
             data.size(), backends_.size());
    DataCursor::Position p;
    p.data = data;
    p.epoch = st.at("epoch").get<int64_t>();
    p.backend_index = st.at("backend_index").get<size_t>();
    p.epoch_open = st.at("epoch_open").get<bool>();
    p.data_done = st.at("data_done").get<bool>();
    data_->restore(p);
    global_step_ = st.at("global_step").get<int64_t>();
    nonfinite_in_row_ = st.value("nonfinite_in_row", int64_t{0});
    nonfinite_total_ = st.value("nonfinite_total", int64_t{0});
    lr_scale_ = st.value("lr_scale", 1.0);
    resumed_reference_ = st.value("validation_reference", nlohmann::json(nullptr));
    const uint64_t seed = st.value("seed", seed_);
    if (seed != seed_) log::info(kLog, "continuing the checkpoint's random streams (its seed was {})", seed);
    seed_ = seed;
    checkpoints_->set_last_step(global_step_);
    log::info(kLog, "resumed from {} at step {} (epoch {}){}", dir.string(), global_step_, p.epoch + 1,
              global_step_ >= total_steps_
                  ? fmt::format("; the step budget {} is already reached", total_steps_)
                  : std::string());
}

}  // namespace st::host::train
