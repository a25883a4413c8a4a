// The Adam family: `adamw` (torch.optim.AdamW, torch/optim/adamw.py `_single_tensor_adamw`),
// `optimi-adamw` (torch-optimi `optimi/adamw.py` `_single_param_adamw`, debiased betas, Kahan
// summation for bf16/fp16 params) and `adamw_bf16` (AdamW_BF16 by A. Rogozhnikov as vendored by
// SimpleTuner in `training/optimizers/adamw_bfloat16/__init__.py`: bf16 params and state, a bf16
// `shift` buffer holding what rounding dropped, lazily applied weight decay).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "fused.h"
#include "optimizer_base.h"
#include "st/error.h"
#include "st/log.h"

namespace st::plugins::optim {
namespace {

ParamState adam_state(const at::Tensor& p) {
    ParamState st;
    st.tensors["exp_avg"] = at::zeros_like(p, at::MemoryFormat::Contiguous);
    st.tensors["exp_avg_sq"] = at::zeros_like(p, at::MemoryFormat::Contiguous);
    return st;
}

class AdamW final : public OptimizerBase {
  public:
    using OptimizerBase::OptimizerBase;

  protected:
    ParamState init_state(const sdk::OptimizerParam& p) const override { return adam_state(p.param); }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const at::Tensor& g = p.grad();
        at::Tensor& m = st.tensors["exp_avg"];
        at::Tensor& v = st.tensors["exp_avg_sq"];
        const double lr = group.lr, wd = group.weight_decay, b1 = hparams_.beta1, b2 = hparams_.beta2;
        const double step = static_cast<double>(st.step);
        const double bc1 = 1.0 - std::pow(b1, step);
        const double bc2 = 1.0 - std::pow(b2, step);
        const double step_size = lr / bc1;
        const double bc2_sqrt = std::sqrt(bc2);
        if (fused_ok({&p, &g, &m, &v})) {
            // One pass over memory instead of LibTorch's seven (kernels/cpu, kernels/cuda); each
            // line keeps torch's operation order, so results differ from torch only where its
            // kernels use FMA.
            const st_k_adam_scalars s{static_cast<float>(1.0 - lr * wd), static_cast<float>(b1),
                                      static_cast<float>(1.0 - b1),      static_cast<float>(b2),
                                      static_cast<float>(1.0 - b2),      static_cast<float>(bc2_sqrt),
                                      static_cast<float>(hparams_.eps),  static_cast<float>(-step_size)};
            fused_adamw(p, g, m, v, s);
            return;
        }
        p.mul_(1.0 - lr * wd);
        m.mul_(b1).add_(g, 1.0 - b1);
        v.mul_(b2).addcmul_(g, g, 1.0 - b2);
        at::Tensor denom = (v.sqrt() / bc2_sqrt).add_(hparams_.eps);
        p.addcdiv_(m, denom, -step_size);
    }
};

// optimi's debiased beta: lerp weight 1 - debias(beta, t) = (1 - beta) / (1 - beta^t), which makes
// the moving averages equal to Adam's bias-corrected ones.
double debias_beta(double beta, double step) {
    return (std::pow(beta, step) - beta) / (std::pow(beta, step) - 1.0);
}

bool low_precision(const at::Tensor& p) {
    return p.scalar_type() == at::kBFloat16 || p.scalar_type() == at::kHalf;
}

class OptimiAdamW final : public OptimizerBase {
  public:
    using OptimizerBase::OptimizerBase;

  protected:
    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st = adam_state(p.param);
        if (hparams_.kahan_sum && low_precision(p.param)) {
            st.tensors["kahan_comp"] = at::zeros_like(p.param, at::MemoryFormat::Contiguous);
        }
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const at::Tensor& g = p.grad();
        const double lr = group.lr, wd = group.weight_decay;
        const double step = static_cast<double>(st.step);
        const double beta1_comp = 1.0 - debias_beta(hparams_.beta1, step);
        const double beta2_hat = debias_beta(hparams_.beta2, step);
        if (wd != 0.0) {
            const double max_lr = hparams_.max_lr.value_or(group.initial_lr);
            p.mul_(hparams_.decouple_lr ? 1.0 - (lr / max_lr) * wd : 1.0 - lr * wd);
        }
        at::Tensor& m = st.tensors["exp_avg"];
        at::Tensor& v = st.tensors["exp_avg_sq"];
        m.lerp_(g, beta1_comp);
        v.mul_(beta2_hat).addcmul_(g, g, 1.0 - beta2_hat);
        auto kit = st.tensors.find("kahan_comp");
        if (kit != st.tensors.end()) {
            at::Tensor& comp = kit->second;
            comp.addcdiv_(m, v.sqrt().add_(hparams_.eps), -lr);
            at::Tensor before = p.clone();  // optimi reuses grad as this buffer; we keep grads intact
            p.add_(comp);
            comp.add_(before.sub_(p));
        } else {
            p.addcdiv_(m, v.sqrt().add_(hparams_.eps), -lr);
        }
    }
};

constexpr double kDecayThreshold = 5e-3;

class AdamWBF16 final : public OptimizerBase {
  public:
    AdamWBF16(const sdk::OptimizerInit& init, OptimizerHParams hp) : OptimizerBase("adamw_bf16", init, hp) {
        for (const auto& p : params()) {
            if (p.param.scalar_type() != at::kBFloat16) {
                fail(component_, "create", "adamw_bf16 supports only bf16 parameters; '{}' is {}", p.name,
                     c10::toString(p.param.scalar_type()));
            }
        }
    }

  protected:
    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st = adam_state(p.param);
        st.tensors["shift"] = at::zeros_like(p.param, at::MemoryFormat::Contiguous);
        // Upstream starts each accumulator at torch.rand() * threshold so that parameters do not all
        // decay on the same step; we draw that fraction from the parameter name (reproducible).
        st.scalars["accumulated_decay"] = name_fraction(p.name) * kDecayThreshold;
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const at::Tensor& g = p.grad();
        const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
        double& acc = st.scalars["accumulated_decay"];
        acc += group.weight_decay * lr;
        const double decay_now = acc > kDecayThreshold ? acc : 0.0;
        acc -= decay_now;

        at::Tensor& m = st.tensors["exp_avg"];
        at::Tensor& v = st.tensors["exp_avg_sq"];
        at::Tensor& shift = st.tensors["shift"];
        m.mul_(b1).add_(g, 1.0 - b1);
        v.mul_(b2).addcmul_(g, g, 1.0 - b2);
        // No beta1 bias correction, by design of the published optimizer (the first steps are
        // small, acting as a short warmup); beta2 is corrected through the step size.
        const double denom_correction = std::sqrt(1.0 - std::pow(b2, static_cast<double>(st.step)));
        shift.addcdiv_(m, v.sqrt().add_(hparams_.eps), -lr * denom_correction);
        // Compensated summation: p + shift is the true value; after adding, shift keeps what bf16
        // rounding of p dropped.
        at::Tensor before = p.clone();
        p.add_(shift);
        shift.add_(before.sub_(p));
        if (decay_now > 0.0) shift.add_(p, -decay_now);
    }
};

}  // namespace

std::unique_ptr<sdk::Optimizer> make_adamw(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<AdamW>("adamw", init, hp);
}
std::unique_ptr<sdk::Optimizer> make_optimi_adamw(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<OptimiAdamW>("optimi-adamw", init, hp);
}
std::unique_ptr<sdk::Optimizer> make_adamw_bf16(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<AdamWBF16>(init, hp);
}

}  // namespace st::plugins::optim
