#include "train/train_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"
#include "st/routing.h"

namespace st::host::train {

namespace {

// SimpleTuner's peft_lora_target_modules is a JSON list written as a string.
std::vector<std::string> read_targets(const sdk::ConfigView& config, std::vector<std::string>& problems) {
    if (!config.has("lora_target_modules")) return {};
    auto list = config.get_list("lora_target_modules");
    if (list.size() == 1 && !list[0].empty() && list[0].front() == '[') {
        try {
            sdk::check_json_limits(list[0], "lora_target_modules", "host.config");
            auto j = nlohmann::json::parse(list[0]);
            list = j.get<std::vector<std::string>>();
        } catch (const std::exception& e) {
            problems.push_back(fmt::format("lora_target_modules: '{}' is not a JSON list of strings ({})",
                                           list[0], e.what()));
        }
    }
    for (const auto& t : list)
        if (t.empty()) problems.push_back("lora_target_modules: empty module name");
    return list;
}

// tread_config: an object, or (SimpleTuner's TEXT_JSON) a string holding one; its form is checked with a
// block count no route can exceed, the ranges again once the model is loaded.
nlohmann::json read_tread_config(const sdk::ConfigView& config, std::vector<std::string>& problems) {
    if (!config.has("tread_config")) return nullptr;
    nlohmann::json j = config.get_json("tread_config");
    if (j.is_string()) {
        const std::string text = j.get<std::string>();
        if (text.empty() || text == "null" || text == "None") return nullptr;
        try {
            sdk::check_json_limits(text, "tread_config", "host.config");
            j = nlohmann::json::parse(text);
        } catch (const std::exception& e) {
            problems.push_back(fmt::format("tread_config: the string is not JSON ({})", e.what()));
            return nullptr;
        }
    }
    try {
        (void)sdk::parse_tread_config(j, std::numeric_limits<int32_t>::max());
    } catch (const std::exception& e) {
        problems.push_back(e.what());
        return nullptr;
    }
    return j;
}

}  // namespace

sdk::BaseWeightPlan read_base_weight_plan(const sdk::ConfigView& c, bool lora,
                                          std::vector<std::string>& problems) {
    sdk::BaseWeightPlan plan;
    const std::string value = c.get_string("base_model_precision");
    plan.source_value = value;
    try {
        plan.precision = sdk::parse_base_precision(value);
    } catch (const Error& e) {
        problems.push_back(e.message());
        return plan;
    }
    if (!lora) {
        // Full training: every weight is trained in the compute dtype. "bf16" (SimpleTuner's Sana Video
        // quickstart) is no quantisation level and means that with mixed_precision bf16.
        if (plan.precision != sdk::BasePrecision::keep && plan.precision != sdk::BasePrecision::bf16)
            problems.push_back(fmt::format(
                "base_model_precision = {}: stored base weights are for LoRA runs (model_type lora); full "
                "training updates every weight and keeps them in the compute dtype",
                value));
        plan.precision = sdk::BasePrecision::compute;
    }
    if (!c.get_bool("enable_group_offload")) return plan;
    if (!lora) {
        problems.push_back(
            "enable_group_offload: st offloads frozen base weights, which only LoRA runs have (model_type "
            "lora)");
        return plan;
    }
    if (c.get_string("group_offload_type") != "block_level")
        problems.push_back(fmt::format("group_offload_type = {}: st offloads whole blocks only (block_level)",
                                       c.get_string("group_offload_type")));
    plan.blocks_per_group = c.get_int("group_offload_blocks_per_group");
    plan.prefetch = c.get_bool("group_offload_use_stream");
    if (auto dir = c.opt_string("group_offload_to_disk_path"); dir && !dir->empty()) {
        std::string d = *dir;
        if (d.rfind("~/", 0) == 0)
            if (const char* home = std::getenv("HOME")) d = std::string(home) + d.substr(1);
        plan.offload_dir = d;
    }
    return plan;
}

TrainConfig read_train_config(const sdk::ConfigView& c) {
    TrainConfig t;
    std::vector<std::string> problems;
    auto positive = [&](const char* key, int64_t v) {
        if (v <= 0) problems.push_back(fmt::format("{} = {}: must be at least 1", key, v));
    };
    t.model_type = c.get_string("model_type") == "lora" ? ModelType::lora : ModelType::full;
    t.base = read_base_weight_plan(c, t.model_type == ModelType::lora, problems);
    t.lora_rank = c.get_int("lora_rank");
    positive("lora_rank", t.lora_rank);
    if (auto a = c.opt_float("lora_alpha")) t.lora_alpha = *a;
    t.lora_dropout = c.get_float("lora_dropout");
    if (t.lora_dropout < 0 || t.lora_dropout >= 1)
        problems.push_back(fmt::format("lora_dropout = {}: must be in [0, 1)", t.lora_dropout));
    t.lora_targets = read_targets(c, problems);
    if (auto p = c.opt_string("init_lora"); p && !p->empty()) t.init_lora = *p;
    t.lora_write_diffusers = c.get_string("lora_format") == "diffusers";
    t.lycoris = c.opt_string("lora_type").value_or("standard") == "lycoris";
    if (auto p = c.opt_string("lycoris_config"); p && !p->empty()) t.lycoris_config = *p;
    if (t.lycoris && !t.lycoris_config)
        problems.push_back(
            "lora_type lycoris needs lycoris_config (the path of a lycoris_config.json), as in "
            "SimpleTuner");
    if (t.lycoris && t.model_type != ModelType::lora)
        problems.push_back("lora_type lycoris trains adapters: set model_type lora");

    const std::string mp = c.get_string("mixed_precision");
    if (mp == "fp16" || mp == "fp8")
        problems.push_back(fmt::format(
            "mixed_precision = {}: not supported yet; use bf16 (the reference default) or no (fp32)", mp));
    t.bf16 = mp == "bf16";
    t.optimizer = c.get_string("optimizer");
    t.learning_rate = c.get_float("learning_rate");
    if (!(t.learning_rate >= 0))
        problems.push_back(fmt::format("learning_rate = {}: must be >= 0", t.learning_rate));
    t.lr_scheduler = c.get_string("lr_scheduler");
    if (t.lr_scheduler == "cosine_with_warmup") t.lr_scheduler = "cosine";  // SimpleTuner's alias
    t.max_grad_norm = c.get_float("max_grad_norm");
    t.grad_clip_method = c.get_string("grad_clip_method");

    t.batch_size = c.get_int("train_batch_size");
    positive("train_batch_size", t.batch_size);
    t.accumulation = c.get_int("gradient_accumulation_steps");
    positive("gradient_accumulation_steps", t.accumulation);
    t.max_train_steps = c.opt_int("max_train_steps").value_or(0);
    if (t.max_train_steps < 0)
        problems.push_back(fmt::format("max_train_steps = {}: must be >= 0", t.max_train_steps));
    t.num_train_epochs = c.get_int("num_train_epochs");
    if (c.has("strict_epoch_limit")) {
        t.strict_epoch_limit = c.get_bool("strict_epoch_limit");
        if (c.has("ignore_final_epochs"))
            log::warn("host.config",
                      "ignore_final_epochs is SimpleTuner's older name of strict_epoch_limit (inverted); "
                      "ignoring it because strict_epoch_limit is set too");
    } else if (c.has("ignore_final_epochs")) {
        t.strict_epoch_limit = !c.get_bool("ignore_final_epochs");
    }
    if (t.max_train_steps == 0 && t.num_train_epochs <= 0)
        problems.push_back("neither max_train_steps nor num_train_epochs is positive: nothing would train");
    t.caption_dropout = c.opt_float("caption_dropout_probability").value_or(0.0);
    if (t.caption_dropout < 0 || t.caption_dropout > 1)
        problems.push_back(
            fmt::format("caption_dropout_probability = {}: must be in [0, 1]", t.caption_dropout));
    t.sigmas.shift = c.get_float("flow_schedule_shift");
    t.sigmas.auto_shift = c.get_bool("flow_schedule_auto_shift");
    t.sigmas.sigmoid_scale = c.get_float("flow_sigmoid_scale");
    if (c.get_bool("flow_use_uniform_schedule")) t.sigmas.sampling = sdk::SigmaSampling::uniform;
    t.max_nonfinite = c.get_int("max_consecutive_nonfinite_steps");
    positive("max_consecutive_nonfinite_steps", t.max_nonfinite);

    t.gradient_checkpointing = c.get_bool("gradient_checkpointing");
    t.gradient_checkpointing_interval = c.opt_int("gradient_checkpointing_interval").value_or(1);
    if (t.gradient_checkpointing_interval < 0)
        problems.push_back(
            fmt::format("gradient_checkpointing_interval = {}: must be >= 0 (0 or 1: every block)",
                        t.gradient_checkpointing_interval));
    t.gradient_checkpointing_interval = std::max<int64_t>(1, t.gradient_checkpointing_interval);
    t.tread_config = read_tread_config(c, problems);

    t.eval_interval = c.opt_int("eval_steps_interval").value_or(0);
    t.eval_timesteps = c.get_int("eval_timesteps");
    positive("eval_timesteps", t.eval_timesteps);
    t.eval_samples = c.get_int("num_eval_images");
    positive("num_eval_images", t.eval_samples);

    t.use_ema = c.get_bool("use_ema");
    t.ema_update_interval = c.get_int("ema_update_interval");
    positive("ema_update_interval", t.ema_update_interval);
    t.ema_decay = c.get_float("ema_decay");
    if (t.ema_decay < 0 || t.ema_decay >= 1)
        problems.push_back(fmt::format("ema_decay = {}: must be in [0, 1)", t.ema_decay));
    t.ema_warmup_steps = c.get_int("ema_warmup_steps");
    t.ema_on_device = c.get_string("ema_device") == "accelerator" && !c.get_bool("ema_cpu_only");

    t.checkpoint_interval = c.get_int("checkpoint_step_interval");
    positive("checkpoint_step_interval", t.checkpoint_interval);
    t.checkpoints_limit = c.get_int("checkpoints_total_limit");
    positive("checkpoints_total_limit", t.checkpoints_limit);
    t.resume = c.get_string("resume_from_checkpoint");
    if (t.resume.empty() || t.resume == "false") t.resume = "none";

    if (auto s = c.opt_int("seed")) t.seed = static_cast<uint64_t>(*s);
    t.output_dir = c.get_string("output_dir");

    if (!problems.empty()) {
        std::string msg = "the training configuration has problems:";
        for (const auto& p : problems) msg += "\n  " + p;
        throw Error("host.train", "config", msg);
    }
    const std::string report = c.get_string("report_to");
    if (report == "tensorboard" || report == "all") {
        std::filesystem::path logs = c.get_string("logging_dir");
        if (logs.is_relative()) logs = t.output_dir / logs;
        t.tensorboard_dir = logs / c.get_string("tracker_project_name");
    }
    if (report == "all")
        log::info(
            "host.train",
            "report_to = all: TensorBoard files are written; wandb, comet_ml and swanlab need a network "
            "service that st does not contact");
    else if (report != "none" && report != "simpletuner" && report != "tensorboard")
        log::warn("host.train",
                  "report_to = {} needs a network service that st does not contact; metrics are written to "
                  "{} instead",
                  report, (t.output_dir / "metrics.jsonl").string());
    return t;
}

}  // namespace st::host::train
