// The `optim` plugin: registers every optimizer and LR scheduler of st_optim_core.
#include "st/plugin.h"
#include "core/optim.h"
#include "st/registrar.h"

ST_PLUGIN("optim", "1.0.0", "optim.adamw@1", "optim.adamw_bf16@1", "optim.optimi-adamw@1",
          "optim.optimi-lion@1", "optim.lion@1", "optim.bnb-adamw8bit@1", "optim.bnb-lion8bit@1",
          "optim.bnb-adamw8bit-paged@1", "optim.bnb-lion8bit-paged@1", "lr.constant@1",
          "lr.constant_with_warmup@1", "lr.linear@1", "lr.cosine@1", "lr.cosine_with_restarts@1",
          "lr.polynomial@1", "lr.sine@1")

namespace st::plugins::optim {
namespace {

const char* optimizer_summary(const std::string& n) {
    if (n == "adamw") return "AdamW with torch.optim.AdamW semantics (fused fp32 kernel)";
    if (n == "adamw_bf16") return "AdamW for bf16 weights with a compensation buffer and lazy weight decay";
    if (n == "optimi-adamw") return "torch-optimi AdamW: debiased betas, Kahan summation for bf16 weights";
    if (n == "optimi-lion") return "torch-optimi Lion: Kahan summation for bf16 weights";
    if (n == "lion") return "Lion (sign of interpolated momentum, decoupled weight decay)";
    if (n == "bnb-adamw8bit") return "AdamW with block-wise 8-bit states (alias: bnb-adamw8bit-paged)";
    return "Lion with a block-wise 8-bit state (alias: bnb-lion8bit-paged)";
}

const char* scheduler_summary(const std::string& n) {
    if (n == "constant") return "constant learning rate";
    if (n == "constant_with_warmup") return "linear warmup over lr_warmup_steps, then constant";
    if (n == "linear") return "linear warmup, then linear decay to 0 at max_train_steps";
    if (n == "cosine") return "SimpleTuner cosine: half-cosine to lr_end over lr_warmup_steps, no warmup";
    if (n == "cosine_with_restarts") return "cosine to lr_end restarting every lr_warmup_steps";
    if (n == "polynomial") return "linear warmup, then (lr - lr_end) * (1 - progress)^lr_power + lr_end";
    return "SimpleTuner sine: lr_end + (lr - lr_end) * (1 + sin(pi * step / lr_warmup_steps)) / 2";
}

}  // namespace
}  // namespace st::plugins::optim

ST_PLUGIN_ENTRY(registrar) {
    namespace o = st::plugins::optim;
    for (const auto& name : o::optimizer_names()) {
        st::sdk::ComponentInfo info{o::optimizer_component_id(name), o::optimizer_summary(name), {}};
        if (name == "adamw") info.options = o::optim_shared_options();
        registrar.add_optimizer(std::move(info), [name](const st::sdk::OptimizerInit& init) {
            return o::make_optimizer(name, init);
        });
    }
    // SimpleTuner's paged bitsandbytes names are components of their own so `optimizer:
    // bnb-lion8bit-paged` resolves like any other name (paging is a CUDA detail; same update).
    for (const auto& alias : o::supported_optimizer_names()) {
        const std::string target = o::resolve_optimizer_name(alias);
        if (target == alias) continue;
        st::sdk::ComponentInfo info{
            o::optimizer_component_id(alias),
            "alias of " + target + " (paging is a CUDA memory detail; same update rule)",
            {}};
        registrar.add_optimizer(std::move(info), [alias](const st::sdk::OptimizerInit& init) {
            return o::make_optimizer(alias, init);
        });
    }
    for (const auto& name : o::lr_scheduler_names()) {
        st::sdk::ComponentInfo info{o::lr_scheduler_component_id(name), o::scheduler_summary(name), {}};
        if (name == "constant") info.options = o::lr_shared_options();
        registrar.add_lr_scheduler(std::move(info), [name](const st::sdk::LrSchedulerInit& init) {
            return o::make_lr_scheduler(name, init);
        });
    }
}
