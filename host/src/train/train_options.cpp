// Configuration keys of the training loop (SimpleTuner's names, defaults and meanings, inventory §1.2
// and §3; where st differs the help text says so).
#include "config/options_table.h"

namespace st::host {

std::vector<sdk::OptionSpec> trainer_options() {
    using namespace sdk;
    std::vector<OptionSpec> o;
    auto add = [&](OptionSpec s, const char* group, std::vector<std::string> aliases = {}) {
        s.group = group;
        s.aliases = std::move(aliases);
        o.push_back(std::move(s));
    };
    // ---- what trains ----
    add(opt_string("model_type", "full",
                   "lora: train low-rank adapters only; full: train every transformer weight (SimpleTuner "
                   "default full).",
                   {"lora", "full"}),
        "training");
    add(opt_int("lora_rank", 16, "Rank of every LoRA adapter.").range(1, 65536), "training");
    add(opt_float("lora_alpha", std::nullopt, "LoRA alpha; unset = lora_rank (scale 1)."), "training");
    add(opt_float("lora_dropout", 0.1, "Dropout on the LoRA input during training (SimpleTuner default 0.1).")
            .range(0, 1),
        "training");
    add(opt_list("lora_target_modules",
                 "Module-name suffixes that get adapters (PEFT target_modules rule); unset = the model "
                 "family's defaults (Wan: to_q, to_k, to_v, to_out.0). A JSON list string is accepted."),
        "training", {"peft_lora_target_modules"});
    add(opt_string(
            "lora_type", "standard",
            "standard: LoRA adapters (lora_rank, lora_alpha, lora_target_modules); lycoris: LyCORIS LoKr or "
            "LoHa adapters as lycoris_config describes (SimpleTuner's lora_type).",
            {"standard", "lycoris"}),
        "training");
    add(opt_string(
            "lycoris_config", std::nullopt,
            "With lora_type lycoris: SimpleTuner's lycoris_config.json (algo lokr|loha, multiplier, "
            "linear_dim, "
            "linear_alpha, factor, full_matrix, decompose_both, apply_preset target_module / module_algo_map "
            "/ target_name / name_algo_map). A relative path is looked up from the working folder, then "
            "beside the config file."),
        "training");
    add(opt_string("init_lora", std::nullopt,
                   "Start from an existing LoRA file (any format st-host generate loads); its rank must "
                   "equal lora_rank."),
        "training");
    add(opt_string("lora_format", "comfyui",
                   "pytorch_lora_weights.safetensors always uses the model's native names with .alpha "
                   "(loads in ComfyUI and diffusers); diffusers additionally writes "
                   "pytorch_lora_weights_diffusers.safetensors with transformer.* names.",
                   {"comfyui", "diffusers"}),
        "training");
    add(opt_string("mixed_precision", "bf16",
                   "Weight/compute dtype of the trained network: bf16 or no (fp32). fp16 and fp8 are not "
                   "supported yet.",
                   {"bf16", "no", "fp16", "fp8"}),
        "training");
    // ---- memory: stored base weights, block offload (docs/memory.md) ----
    add(opt_string("base_model_precision", "no_change",
                   "How a LoRA run stores the frozen base Linear weights of the transformer: no_change keeps "
                   "the file's dtype (memory-mapped, no copy), bf16 stores bfloat16, int8-quanto / "
                   "int8-torchao store int8 with one scale per output channel (quanto leaves the family's "
                   "sensitive layers, e.g. Wan's ffn/norms/embedders, unquantised; torchao takes every "
                   "Linear with sizes divisible by 16). Each is turned into the compute dtype per matmul. "
                   "fp32 (st's own value) stores float32. Full training keeps every weight in the compute "
                   "dtype.",
                   {"no_change", "bf16", "fp32", "int8-quanto", "int8-torchao"}),
        "memory");
    add(opt_string("quantize_via", "accelerator",
                   "Where base weights are quantised (SimpleTuner's choice for GPUs); st quantises while "
                   "loading, on the CPU, tensor by tensor, either way.",
                   {"cpu", "accelerator", "pipeline"}),
        "memory");
    add(opt_bool("enable_group_offload", false,
                 "Offload the transformer's blocks in groups: with group_offload_to_disk_path their weights "
                 "are read from disk as the blocks run, which bounds resident memory to a few groups. "
                 "Without a disk path nothing is offloaded (this build keeps weights in host memory anyway; "
                 "the CUDA form, blocks in pinned host memory, is not built yet)."),
        "memory");
    add(opt_string("group_offload_type", "block_level",
                   "block_level: groups of group_offload_blocks_per_group transformer blocks (the only kind "
                   "st offers; leaf_level is refused).",
                   {"block_level", "leaf_level"}),
        "memory");
    add(opt_int("group_offload_blocks_per_group", 1, "Transformer blocks per offload group.").range(1, 1000),
        "memory");
    add(opt_bool("group_offload_use_stream", false,
                 "Fetch the next group while the current one runs (CUDA: a side stream; disk: read-ahead)."),
        "memory");
    add(opt_string("group_offload_to_disk_path", std::nullopt,
                   "Folder for the offloaded groups' weights (st writes one safetensors file per group in a "
                   "subfolder it removes at exit)."),
        "memory");
    // ---- optimisation ----
    add(opt_string("optimizer", "adamw_bf16",
                   "Optimizer component (optim.<name>); see st-host plugins for the list."),
        "optimizer");
    add(opt_float("learning_rate", 4e-7, "Base learning rate (SimpleTuner default 4e-7).")
            .range(0, std::nullopt),
        "optimizer");
    add(opt_string("lr_scheduler", "constant_with_warmup",
                   "LR scheduler component (lr.<name>); SimpleTuner's alias cosine_with_warmup = cosine."),
        "optimizer");
    add(opt_float("max_grad_norm", 2.0, "Gradient clipping threshold; <= 0 disables clipping."), "optimizer");
    add(opt_string("grad_clip_method", "value",
                   "value: clamp each gradient element to +-max_grad_norm; norm: global L2 norm clip.",
                   {"value", "norm"}),
        "optimizer");
    // ---- loop ----
    add(opt_int("max_train_steps", std::nullopt,
                "Optimizer steps to train; unset or 0 = num_train_epochs decides.")
            .range(0, 1e9),
        "training");
    add(opt_int("num_train_epochs", 1, "Epochs to train when max_train_steps is not set.").range(0, 1e6),
        "training");
    {
        // Unset by default, so the legacy key can tell whether the new one was given.
        sdk::OptionSpec strict{
            "strict_epoch_limit", sdk::OptionType::boolean, nullptr,
            "Stop after num_train_epochs even when max_train_steps is larger (SimpleTuner). "
            "Unset/false: max_train_steps decides when it is set; runs without it always stop "
            "after num_train_epochs."};
        add(strict, "training");
        sdk::OptionSpec legacy{
            "ignore_final_epochs", sdk::OptionType::boolean, nullptr,
            "SimpleTuner's older name: ignore_final_epochs true = strict_epoch_limit false. "
            "Ignored (with a warning) when strict_epoch_limit is set too."};
        add(legacy, "training");
    }
    add(opt_float("caption_dropout_probability", std::nullopt,
                  "Per-sample probability of training on the empty caption (unset = never).")
            .range(0, 1),
        "training");
    add(opt_float("flow_schedule_shift", 3.0,
                  "Static shift of the training sigmas s*sigma/(1+(s-1)*sigma). SimpleTuner's code default "
                  "is 3.0 (its docs say no shift); 0 = no static shift."),
        "training");
    add(opt_bool("flow_schedule_auto_shift", false,
                 "Resolution-dependent shift when flow_schedule_shift is 0 (clamped at 12 by st)."),
        "training");
    add(opt_float("flow_sigmoid_scale", 1.0, "Scale inside the logit-normal sigmoid."), "training");
    add(opt_bool("flow_use_uniform_schedule", false, "Draw sigmas uniformly instead of logit-normal."),
        "training");
    add(opt_int("max_consecutive_nonfinite_steps", 5,
                "A step whose loss or gradients are NaN/inf is skipped and logged with its samples; after "
                "this many in a row the run stops (a checkpoint of the last good state is written).")
            .range(1, 1e6),
        "training");
    add(opt_bool(
            "gradient_checkpointing", true,
            "Recompute transformer blocks in backward instead of storing their activations (less memory, "
            "about a third more compute)."),
        "memory");
    add(opt_int("gradient_checkpointing_interval", std::nullopt,
                "With gradient_checkpointing: checkpoint every N-th block only (SimpleTuner's segmented "
                "checkpointing: more memory, less recompute). Unset, 0 or 1 = every block. Blocks inside an "
                "active TREAD route are always checkpointed, as in SimpleTuner.")
            .range(0, 1e6),
        "memory");
    add(opt_json(
            "tread_config",
            "TREAD token routing (arXiv 2501.04765) while training: {\"routes\": [{\"selection_ratio\": "
            "0.5, \"start_layer_idx\": 2, \"end_layer_idx\": -2}]}: selection_ratio of the video tokens "
            "(a fraction dropped, not kept) skip blocks start..end (inclusive; negative = from the end); "
            "routes ordered, not overlapping. Optional per route \"selection\": \"random\" (default, "
            "SimpleTuner's behaviour) or \"l1\" (keep the largest-norm tokens). Never applied in "
            "validation, evaluation or generation. Needs a family with token routing (Wan, Wan S2V)."),
        "memory");
    // ---- evaluation loss ----
    add(opt_int(
            "eval_steps_interval", std::nullopt,
            "Every N steps, the flow-matching loss on a fixed set of samples at fixed timesteps with fixed "
            "noise (a stable curve, unlike the training loss); logged to metrics.jsonl as loss/val. Unset = "
            "never.")
            .range(0, 1e9),
        "evaluation");
    add(opt_int("eval_timesteps", 28, "Timesteps of the evaluation loss, evenly spaced over (0, 1000).")
            .range(1, 10000),
        "evaluation");
    add(opt_int("num_eval_images", 4,
                "Evaluation samples taken from each dataset_type eval dataset (without one: the first "
                "training samples of the data order).")
            .range(1, 100000),
        "evaluation");
    // ---- EMA ----
    add(opt_bool("use_ema", false, "Keep an exponential moving average of the trained weights."), "ema");
    add(opt_int("ema_update_interval", 1, "Update the EMA when global_step % N == 0.").range(1, 1e6), "ema");
    add(opt_float("ema_decay", 0.995, "Upper bound of the EMA decay min((1+t)/(10+t), ema_decay).")
            .range(0, 1),
        "ema");
    add(opt_int("ema_warmup_steps", 0,
                "When > 0: decay 0 (copy) for this many steps, then ema_decay (SimpleTuner semantics).")
            .range(0, 1e9),
        "ema");
    add(opt_string("ema_device", "cpu",
                   "Where the EMA shadows live: cpu (SimpleTuner's default; no device memory, a copy per "
                   "update) or accelerator (the training device; no copies).",
                   {"cpu", "accelerator"}),
        "ema");
    add(opt_bool("ema_cpu_only", false, "Keep the EMA on the CPU whatever ema_device says (SimpleTuner)."),
        "ema");
    // ---- checkpoints ----
    add(opt_int("checkpoint_step_interval", 500, "Write a checkpoint every N optimizer steps.").range(1, 1e9),
        "checkpoints", {"checkpointing_steps"});
    add(opt_int("checkpoints_total_limit", 5, "Keep at most N checkpoints (oldest deleted after a save).")
            .range(1, 1e6),
        "checkpoints", {"save_total_limit"});
    add(opt_string("resume_from_checkpoint", "latest",
                   "latest: continue from the newest complete checkpoint in output_dir (a fresh run when "
                   "there is none); a checkpoint directory path; or none."),
        "checkpoints");
    // ---- reporting ----
    add(opt_string(
            "report_to", "none",
            "Metrics always go to output_dir/metrics.jsonl. tensorboard (or all) also writes TensorBoard "
            "event files (every metric as a scalar, validation videos' first frames as images) under "
            "output_dir/logging_dir/tracker_project_name/, as SimpleTuner does; services that need a network "
            "(wandb, comet_ml, swanlab, custom-tracker) are not contacted: st says so.",
            {"none", "simpletuner", "wandb", "tensorboard", "comet_ml", "swanlab", "custom-tracker", "all"}),
        "run");
    add(opt_string("logging_dir", "logs",
                   "Folder of the TensorBoard event files, relative to output_dir (SimpleTuner's default)."),
        "run");
    add(opt_string("tracker_project_name", "simpletuner-training",
                   "TensorBoard run folder under logging_dir (SimpleTuner's project name and default)."),
        "run");
    // ---- data parallel (docs/distributed.md) ----
    add(opt_int(
            "nproc_per_node", std::nullopt,
            "Data-parallel ranks to start on this machine (st-host --nproc_per_node N CONFIG); each holds "
            "the model and trains on its own slice of every batch, gradients averaged (Gloo on CPU). "
            "Unset: num_processes / num_machines, else 1. Ignored under torchrun (RANK/WORLD_SIZE set).")
            .range(1, 1024),
        "distributed");
    add(opt_int("num_processes", std::nullopt,
                "SimpleTuner's (accelerate's) total number of ranks over all machines; with num_machines it "
                "gives nproc_per_node.")
            .range(1, 1 << 20),
        "distributed");
    add(opt_int("num_machines", 1, "Machines taking part (SimpleTuner/accelerate); this one is machine_rank.")
            .range(1, 1 << 16),
        "distributed");
    add(opt_int("machine_rank", 0,
                "Index of this machine among num_machines (its ranks follow those before).")
            .range(0, (1 << 16) - 1),
        "distributed");
    add(opt_string("main_process_ip", std::nullopt,
                   "Address of machine 0 (MASTER_ADDR); default 127.0.0.1 on one machine."),
        "distributed");
    add(opt_int(
            "main_process_port", std::nullopt,
            "Port of the rendezvous store on machine 0 (MASTER_PORT); default: a free port on one machine, "
            "29500 with several.")
            .range(1, 65535),
        "distributed");
    add(opt_int(
            "process_group_timeout", std::nullopt,
            "Seconds a rank waits for the others (rendezvous, caching by rank 0, every collective) before "
            "it stops with an error naming the ranks that did not answer. Unset: the environment's "
            "SIMPLETUNER_PROCESS_GROUP_TIMEOUT_SECONDS, else 5400 (SimpleTuner's default).")
            .range(1, 7 * 86400),
        "distributed");
    add(opt_float("ddp_bucket_cap_mb", 25.0,
                  "Size of a gradient bucket in MB (fp32): buckets are averaged across ranks while backward "
                  "is still running (DDP's bucket_cap_mb).")
            .range(0.001, 4096),
        "distributed");
    return o;
}

}  // namespace st::host
