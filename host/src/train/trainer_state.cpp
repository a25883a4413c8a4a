// Checkpoints (write, prune), resume (exact: weights, optimizer, EMA, RNG and data position) and
// the final weights in output_dir.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <exception>
#include <set>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/lora.h"
#include "st/safetensors.h"
#include "st/version.h"
#include "train/simpletuner_checkpoint.h"
#include "train/state_io.h"
#include "train/trainer_impl.h"

namespace st::host::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kLog = "host.checkpoint";
constexpr const char* kLoraFile = "pytorch_lora_weights.safetensors";
constexpr const char* kLoraDiffusersFile = "pytorch_lora_weights_diffusers.safetensors";
constexpr const char* kLycorisTrainableFile = "lycoris_trainable.safetensors";

// Non-finite values in the tensors a save would write: saving them would replace a good checkpoint (or
// the final weights) with unusable ones, e.g. after st.set_lr_scale(1e308) turned 3072 of 3088 LoRA
// values into inf/NaN while the loss of that step was still finite.
class NonFiniteScan {
  public:
    void add(const std::string& what, const std::string& name, const at::Tensor& t) {
        if (!t.defined() || !(t.is_floating_point() || t.is_complex())) return;
        const int64_t bad = at::isfinite(t).logical_not().sum().item<int64_t>();
        if (bad == 0) return;
        values_ += bad;
        ++tensors_;
        if (named_.size() < 3) named_.push_back(fmt::format("{} '{}': {} of {}", what, name, bad, t.numel()));
    }
    bool found() const { return values_ > 0; }
    std::string describe() const {
        return fmt::format(
            "{} non-finite value(s) in {} tensor(s): {}{}", values_, tensors_, fmt::join(named_, "; "),
            tensors_ > static_cast<int64_t>(named_.size())
                ? fmt::format("; and {} more tensor(s)", tensors_ - static_cast<int64_t>(named_.size()))
                : std::string());
    }

  private:
    int64_t values_ = 0, tensors_ = 0;
    std::vector<std::string> named_;
};

uint64_t bytes_of(const sdk::TensorMap& m) {
    uint64_t n = 0;
    for (const auto& [k, t] : m) n += t.defined() ? t.nbytes() : 0;
    return n;
}

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

bool Trainer::has_lycoris_scalar() const {
    return lycoris_plan_ && std::any_of(params_.begin(), params_.end(), [](const auto& p) {
               return p.first.size() >= 7 && p.first.compare(p.first.size() - 7, 7, ".scalar") == 0;
           });
}

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
            {"world_size", world_},
            {"global_batch_size", cfg_.batch_size * world_},
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
        std::map<std::string, std::string> meta = {{"st_model", entry.id},
                                                   {"st_step", std::to_string(global_step_)},
                                                   {"st_ema", ema ? "true" : "false"}};
        if (lycoris_plan_) meta["lycoris_config"] = lycoris_plan_->raw.dump();  // as SimpleTuner writes it
        sdk::save_lora(dir / kLoraFile, root, names ? sdk::LoraFormat::comfyui : sdk::LoraFormat::diffusers,
                       names, meta);
        if (cfg_.lora_write_diffusers && names)
            sdk::save_lora(dir / kLoraDiffusersFile, root, sdk::LoraFormat::diffusers, {}, meta);
    } else {
        model_->save_trainable(dir / model_->trainable_folder());
    }
}

bool Trainer::save_checkpoint(const std::string& why) {
    // Read before the save to check it; a plugin failure here fails the save like any other (below).
    sdk::StateDict opt;
    std::exception_ptr opt_error;
    try {
        opt = call_plugin(*optimizer_entry_, "state_dict", [&] { return optimizer_->state_dict(); });
    } catch (const std::exception&) {
        opt_error = std::current_exception();
    }
    const sdk::StateDict ema_state = ema_ ? ema_->state_dict() : sdk::StateDict();
    NonFiniteScan scan;
    uint64_t weight_bytes = 0;
    for (const auto& [n, t] : params_) {
        scan.add("trainable", n, t);
        weight_bytes += t.nbytes();
    }
    for (const auto& [n, t] : opt.tensors) scan.add("optimizer state", n, t);
    for (const auto& [n, t] : ema_state.tensors) scan.add("EMA", n, t);
    if (scan.found()) {
        nonfinite_weights_ = true;
        const std::string msg =
            fmt::format("{} was not written ({}) and no checkpoint is deleted: the state holds {}; {}",
                        CheckpointStore::dir_name(global_step_), why, scan.describe(),
                        checkpoints_->newest_on_disk(total_steps_));
        log::error(kLog, "{}", msg);
        notify("error", notify::Severity::error, msg);
        return false;
    }
    // What the save writes, about: the weights (again for the EMA, twice with the diffusers copy of a
    // LoRA), the optimizer and EMA states and the random streams; the JSON files are small.
    const bool two_lora_files =
        cfg_.model_type == ModelType::lora && cfg_.lora_write_diffusers && model_->lora_name_map();
    const uint64_t expected =
        weight_bytes * (ema_ ? 2 : 1) * (two_lora_files ? 2 : 1) + bytes_of(opt.tensors) +
        bytes_of(ema_state.tensors) +
        bytes_of({{"generator", position_.generator}, {"global_generator", position_.global_generator}});
    const auto dir = checkpoints_->save(
        global_step_,
        [&](const fs::path& d) {
            if (opt_error) std::rethrow_exception(opt_error);
            save_weights(d, false);
            if (ema_) {
                save_weights(d / "ema", true);
                save_state_dict(d / "ema" / "ema_state.safetensors", ema_state);
            }
            save_state_dict(d / "optimizer.safetensors", opt);
            // LyCORIS's use_scalar: the LoRA file holds w1 times the scalar; resume needs both as they
            // are, so the trainable tensors are kept as well.
            if (has_lycoris_scalar()) {
                sdk::TensorMap raw;
                for (const auto& [n, t] : params_) raw[n] = t.detach();
                sdk::save_safetensors(d / kLycorisTrainableFile, raw);
            }
            sdk::save_safetensors(
                d / "random_states.safetensors",
                {{"generator", position_.generator}, {"global_generator", position_.global_generator}});
            nlohmann::json state = training_state();
            if (!objective_->regularizers().empty())
                state["regularizers"] = save_regularizers(objective_->regularizers(), d);
            sdk::write_file_atomic(d / "training_state.json", state.dump(2) + "\n");
            sdk::write_file_atomic(d / "config.resolved.json", setup_.resolved.values.dump(2) + "\n");
        },
        why, expected);
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
    const fs::path target =
        cfg_.output_dir / (cfg_.model_type == ModelType::lora ? kLoraFile : model_->trainable_folder());
    NonFiniteScan scan;
    for (const auto& [n, t] : params_) scan.add("trainable", n, t);
    if (ema_)
        for (const auto& [n, t] : ema_->state_dict().tensors) scan.add("EMA", n, t);
    if (scan.found()) {
        nonfinite_weights_ = true;
        final_weights_failed_ = true;
        log::error(kLog, "final weights not written to {}: the weights hold {}; {}", target.string(),
                   scan.describe(), checkpoints_->newest_on_disk(total_steps_));
        return;
    }
    try {
        save_weights(cfg_.output_dir, false);
        if (ema_) save_weights(cfg_.output_dir / "ema", true);
        log::info(kLog, "final weights: {}{}", target.string(),
                  ema_ ? fmt::format(" (EMA: {})", (cfg_.output_dir / "ema").string()) : std::string());
    } catch (const std::exception& e) {
        final_weights_failed_ = true;
        // Only a checkpoint of this very step holds these weights; an older one lost the steps after it.
        const auto latest = checkpoints_->store().latest();
        log::error(
            kLog, "final weights could not be written to {}: {}; {}", cfg_.output_dir.string(), e.what(),
            latest && latest->step == global_step_
                ? fmt::format("{} holds the same weights (step {})", latest->dir.string(), global_step_)
                : checkpoints_->newest_on_disk(total_steps_) +
                      fmt::format("; what steps {} to {} learned is in no file",
                                  latest ? latest->step + 1 : 1, global_step_));
    }
}

void Trainer::plan_resume() {
    resume_dir_ = checkpoints_->resume_dir(cfg_.resume);
    if (!resume_dir_ || CheckpointStore::written_by_st(*resume_dir_)) return;
    if (cfg_.model_type != ModelType::lora)
        fail(kLog, "resume",
             "{} was written by SimpleTuner: st resumes SimpleTuner's LoRA and LyCORIS checkpoints, and this "
             "run "
             "has model_type full; set resume_from_checkpoint none to start over",
             resume_dir_->string());
    simpletuner_resume_ = read_simpletuner_checkpoint(*resume_dir_);
    if (cfg_.lycoris)
        fail(kLog, "resume",
             "{} (written by SimpleTuner) holds the optimizer state of a LyCORIS network, whose parameter "
             "order "
             "st does not map; {}",
             resume_dir_->string(), init_lora_way_out(*resume_dir_));
}

void Trainer::maybe_resume() {
    if (simpletuner_resume_)
        restore_simpletuner(*simpletuner_resume_);
    else if (resume_dir_)
        restore(*resume_dir_);
}

void Trainer::restore_simpletuner(const SimpleTunerCheckpoint& ck) {
    const fs::path& dir = ck.dir;
    torch::nn::Module& root = model_->trainable();
    const sdk::LoraNameMap map = model_->lora_name_map();
    // The adapters must be the ones this run trains (same modules, same ranks): the optimizer and EMA
    // state hang on them.
    const auto same_adapters = [&](const fs::path& file) {
        const auto loaded = sdk::load_lora(file, root, 1.0, map, false);
        const sdk::TensorMap now = sdk::lora_parameters(root);
        bool same = now.size() == params_.size() && static_cast<int64_t>(loaded.size()) == lora_modules_;
        for (const auto& [n, t] : params_) {
            const auto it = now.find(n);
            same = same && it != now.end() && it->second.unsafeGetTensorImpl() == t.unsafeGetTensorImpl();
        }
        if (!same)
            fail(kLog, "resume",
                 "{} (written by SimpleTuner) has adapters on {} modules and this run injects {} (lora_rank "
                 "{}, "
                 "targets from the config): set the LoRA settings of SimpleTuner's run; {}",
                 file.string(), loaded.size(), lora_modules_, cfg_.lora_rank, init_lora_way_out(dir));
    };
    if (ema_) {
        // The EMA's shadows are made from the EMA weights, then the trained weights are loaded.
        if (ck.ema) {
            same_adapters(*ck.ema);
            ema_ = std::make_unique<Ema>(params_, cfg_.ema_decay, cfg_.ema_warmup_steps, cfg_.ema_on_device);
            log::info(kLog, "EMA: from {}", ck.ema->string());
        } else {
            log::warn(kLog, "{} has no ema/{}: the EMA starts from the resumed weights", dir.string(),
                      ck.lora.filename().string());
        }
    }
    same_adapters(ck.lora);
    if (ema_ && !ck.ema)
        ema_ = std::make_unique<Ema>(params_, cfg_.ema_decay, cfg_.ema_warmup_steps, cfg_.ema_on_device);

    // SimpleTuner's optimizer saw the trainable parameters in module order (peft's lora_A then lora_B of
    // each adapted Linear, in the order the model registers its modules, which st's ports keep).
    std::vector<std::pair<std::string, at::Tensor>> order;
    for (const auto& [path, lin] : sdk::linear_modules(root)) {
        if (!lin->has_lora()) continue;
        const std::string p = path.empty() ? "" : path + ".";
        order.emplace_back(p + "lora_A.weight", lin->lora_A->weight);
        order.emplace_back(p + "lora_B.weight", lin->lora_B->weight);
    }
    const sdk::StateDict fresh =
        call_plugin(*optimizer_entry_, "state_dict", [&] { return optimizer_->state_dict(); });
    const sdk::StateDict state = translate_optimizer_state(ck.optimizer, fresh, order, ck.global_step);
    try {
        call_plugin(*optimizer_entry_, "load_state", [&] { optimizer_->load_state_dict(state); });
    } catch (const std::exception& e) {
        fail(kLog, "resume",
             "{}/optimizer.bin does not fit this run's optimizer {} ({}); SimpleTuner's run must have used "
             "the "
             "same optimizer; {}",
             dir.string(), optimizer_entry_->id, e.what(), init_lora_way_out(dir));
    }

    // The data walk: SimpleTuner's epoch carries over; its sample order inside the epoch is its own
    // (Python's random streams), so st walks that epoch from its start in st's order.
    DataCursor::Position p = data_->position();
    p.epoch = ck.epoch - 1;
    p.epoch_open = false;
    data_->restore(p);
    global_step_ = ck.global_step;
    checkpoints_->set_last_step(global_step_);
    log::info(
        kLog,
        "resumed from {} (written by SimpleTuner) at step {} (epoch {}): carried: the LoRA weights{}, the "
        "optimizer state of {} parameters ({}/optimizer.bin), the step (the {} schedule continues from it) "
        "and the epoch",
        dir.string(), global_step_, ck.epoch, ck.ema ? " and their EMA" : "", state.meta["params"].size(),
        dir.string(), scheduler_entry_->id);
    log::info(
        kLog,
        "not carried: SimpleTuner's sample order inside epoch {} ({} steps of it were done; st walks the "
        "epoch from its start in its own order), its random streams (random_states_*.pkl; st's come from "
        "seed {}) and scheduler.bin (st's schedule is a function of the step)",
        ck.epoch, ck.epoch_step, seed_);
    if (global_step_ >= total_steps_) log::info(kLog, "the step budget {} is already reached", total_steps_);
}

void Trainer::restore(const fs::path& dir) {
    // `dir` comes from CheckpointManager::resume_dir, which verified its sizes and checksums.
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
        if (has_lycoris_scalar()) {
            if (!fs::exists(dir / kLycorisTrainableFile))
                fail(
                    kLog, "resume",
                    "{} lacks {} (the LyCORIS scalars of use_scalar): it was not written by a use_scalar run",
                    dir.string(), kLycorisTrainableFile);
            auto raw = sdk::SafetensorsFile::open(dir / kLycorisTrainableFile);
            torch::NoGradGuard no_grad;
            for (const auto& [n, t] : params_) {
                if (!raw->contains(n)) fail(kLog, "resume", "{} lacks '{}'", raw->describe(), n);
                const at::Tensor v = raw->load(n);
                if (v.sizes() != t.sizes())
                    fail(kLog, "resume", "{}: '{}' is {} but the adapter's is {}", raw->describe(), n,
                         c10::str(v.sizes()), c10::str(t.sizes()));
                t.detach().copy_(v);
            }
        }
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
    if (const int64_t saved_world = st.value("world_size", int64_t{1}); saved_world != world_) {
        const int64_t saved_batch = st.value("global_batch_size", cfg_.batch_size * saved_world);
        log::warn(
            kLog,
            "{} was written by {} rank(s) (global batch {}); this run has {} (global batch {} = {} x "
            "train_batch_size {}). The data order continues from the saved sample position, the "
            "learning-rate schedule by step; each remaining step now averages {} samples instead of {}, "
            "so the run is not the one the checkpoint's run would have continued (resume is exact with "
            "the same number of ranks and train_batch_size)",
            dir.string(), saved_world, saved_batch, world_, cfg_.batch_size * world_, world_, cfg_.batch_size,
            cfg_.batch_size * world_ * cfg_.accumulation, saved_batch * cfg_.accumulation);
    }
    log::info(kLog, "resumed from {} at step {} (epoch {}){}", dir.string(), global_step_, p.epoch + 1,
              global_step_ >= total_steps_
                  ? fmt::format("; the step budget {} is already reached", total_steps_)
                  : std::string());
}

}  // namespace st::host::train
