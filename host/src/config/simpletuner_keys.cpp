// SimpleTuner keys that st knows but does not (yet) act on. Listed so that a SimpleTuner config
// gets a clear answer for each of them instead of "unknown key": keys whose value asks for nothing
// (inert) are accepted with a logged note; any other value is refused, all such keys in one
// message. Keys move out of this table when a component starts declaring them.
#include "config/options_table.h"

namespace st::host {

namespace {
using J = nlohmann::json;
const J kNull = nullptr;
}  // namespace

const std::vector<ForeignKey>& simpletuner_foreign_keys() {
    static const std::vector<ForeignKey> keys = [] {
        std::vector<ForeignKey> k;
        auto inert = [&](const char* name, std::vector<J> values, const char* reason) {
            k.push_back({name, std::move(values), false, reason});
        };
        auto noop = [&](const char* name, const char* reason) { k.push_back({name, {}, true, reason}); };
        const char* trainer =
            "read by a component (optimizer, data backend, model family or hooks) that no loaded plugin "
            "provides in this run; see st-host plugins";
        const char* validation = "not supported yet: st validates by validation_step_interval renders only";
        const char* hub = "st never uploads anything (no network access is assumed)";

        // Training loop keys (SimpleTuner §1.2, §3).
        for (const char* n : {"optimizer_config",
                              "lr_warmup_steps",
                              "lr_num_cycles",
                              "lr_power",
                              "lr_end",
                              "vae_batch_size",
                              "write_batch_size",
                              "compress_disk_cache",
                              "aspect_bucket_rounding",
                              "aspect_bucket_alignment",
                              "resolution",
                              "resolution_type",
                              "minimum_image_size",
                              "delete_problematic_images",
                              "disable_bucket_pruning",
                              "adam_beta1",
                              "adam_beta2",
                              "adam_epsilon",
                              "adam_weight_decay",
                              "model_flavour",
                              "pretrained_transformer_model_name_or_path",
                              "pretrained_transformer_subfolder",
                              "pretrained_vae_model_name_or_path",
                              "pretrained_t5_model_name_or_path",
                              "enable_chunked_feed_forward",
                              "feed_forward_chunk_size",
                              "feed_forward_chunk_dim",
                              "tokenizer_max_length",
                              "t5_padding",
                              "vae_dtype"})
            inert(n, {kNull}, trainer);
        inert("lora_init_type", {"default", kNull},
              "st initialises adapters as PEFT's default (Kaiming-uniform A, zero B) only");
        inert("loss_type", {"l2", kNull}, "st trains with the flow-matching MSE (l2) only");
        inert("input_perturbation", {0, 0.0, kNull}, "input perturbation is not supported yet");
        inert("flow_use_beta_schedule", {false, kNull}, "the Beta sigma schedule is not supported yet");
        // Validation keys (SimpleTuner §6).
        for (const char* n : {"validation_epoch_interval", "eval_epoch_interval", "validation_input"})
            inert(n, {kNull}, validation);
        noop("validation_guidance_skip_scale",
             "SimpleTuner's pipelines accept it and never read it; st's skip-layer guidance skips the "
             "layers in the unconditional pass and has no separate scale");
        inert("validation_on_startup", {false, kNull}, validation);
        inert("validation_disable_unconditional", {false, true, kNull},
              "st decides unconditional passes from validation_guidance");
        inert("validation_torch_compile", {false, kNull}, "st does not use torch.compile");
        noop("disable_benchmark", "st renders no base-model benchmark before training");

        // Features SimpleTuner has and st does not.
        inert("deepspeed_config", {kNull, false},
              "DeepSpeed is not supported: st trains data parallel with --nproc_per_node "
              "(docs/distributed.md)");
        inert(
            "fsdp_enable", {false, kNull},
            "FSDP is not supported yet: st trains data parallel with --nproc_per_node (docs/distributed.md)");
        inert("context_parallel_size", {1, kNull}, "context parallelism is not supported yet");
        inert("text_encoder_1_precision", {"no_change", kNull},
              "quantised text encoders are not supported yet");
        inert("enable_model_cpu_offload", {false, kNull}, "model CPU offload is not supported yet");
        inert("ramtorch", {false, kNull}, "RamTorch streaming is not supported yet");
        inert("use_dora", {false, kNull}, "DoRA is not supported yet");
        inert("gradient_checkpointing_backend", {"torch", kNull},
              "only per-block checkpointing exists in st");
        inert("gradient_precision", {"unmodified", kNull}, "gradients keep the parameter precision in st");
        noop("attention_mechanism",
             "st always uses its own attention (chunked online-softmax on LibTorch 1.13, "
             "fused SDPA on LibTorch >= 2)");
        noop("push_to_hub", hub);
        noop("push_checkpoints_to_hub", hub);
        noop("hub_model_id", hub);
        noop("tracker_run_name",
             "names a run on tracking services st does not contact; TensorBoard files go under "
             "tracker_project_name");
        noop("offload_during_startup", "st keeps encoders on the CPU while caching anyway");
        noop("vae_enable_tiling", "st's video VAEs always decode frame by frame with their causal cache");
        noop("vae_enable_slicing", "st's video VAEs always decode frame by frame with their causal cache");
        noop("base_model_default_dtype", "weights load in the dtype mixed_precision asks for");
        noop("allow_tf32", "no effect on CPU builds; GPU builds use the LibTorch default");
        noop("dataloader_prefetch", "data comes from on-disk caches");
        noop("max_workers", "st sizes its decode thread pool from num_threads");
        return k;
    }();
    return keys;
}

const std::vector<UnsupportedValue>& unsupported_values() {
    static const std::vector<UnsupportedValue> v = {};
    return v;
}

}  // namespace st::host
