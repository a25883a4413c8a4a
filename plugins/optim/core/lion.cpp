// The Lion family: `lion` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
// as lion-pytorch `lion_pytorch/lion_pytorch.py` `update_fn`) and `optimi-lion` (torch-optimi
// `optimi/lion.py` `_single_param_lion`: the same rule with lerp, optional lr-decoupled weight decay
// and Kahan summation for bf16/fp16 params).
//   p <- p * (1 - lr * wd);  p <- p - lr * sign(beta1 * m + (1 - beta1) * g);  m <- beta2 * m + (1 - beta2) *
//   g
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "fused.h"
#include "optimizer_base.h"

namespace st::plugins::optim {
namespace {

class Lion final : public OptimizerBase {
  public:
    using OptimizerBase::OptimizerBase;

  protected:
    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st;
        st.tensors["exp_avg"] = at::zeros_like(p.param, at::MemoryFormat::Contiguous);
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const at::Tensor& g = p.grad();
        at::Tensor& m = st.tensors["exp_avg"];
        const double lr = group.lr, wd = group.weight_decay, b1 = hparams_.beta1, b2 = hparams_.beta2;
        if (fused_ok({&p, &g, &m})) {
            const st_k_lion_scalars s{static_cast<float>(1.0 - lr * wd), static_cast<float>(b1),
                                      static_cast<float>(1.0 - b1),      static_cast<float>(b2),
                                      static_cast<float>(1.0 - b2),      static_cast<float>(-lr)};
            fused_lion(p, g, m, s);
            return;
        }
        p.mul_(1.0 - lr * wd);
        at::Tensor update = m.clone().mul_(b1).add_(g, 1.0 - b1).sign_();
        p.add_(update, -lr);
        m.mul_(b2).add_(g, 1.0 - b2);
    }
};

class OptimiLion final : public OptimizerBase {
  public:
    using OptimizerBase::OptimizerBase;

  protected:
    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st;
        st.tensors["exp_avg"] = at::zeros_like(p.param, at::MemoryFormat::Contiguous);
        const auto dt = p.param.scalar_type();
        if (hparams_.kahan_sum && (dt == at::kBFloat16 || dt == at::kHalf)) {
            st.tensors["kahan_comp"] = at::zeros_like(p.param, at::MemoryFormat::Contiguous);
        }
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const at::Tensor& g = p.grad();
        at::Tensor& m = st.tensors["exp_avg"];
        const double lr = group.lr, wd = group.weight_decay;
        if (wd != 0.0) {
            const double max_lr = hparams_.max_lr.value_or(group.initial_lr);
            p.mul_(hparams_.decouple_lr ? 1.0 - (lr / max_lr) * wd : 1.0 - lr * wd);
        }
        at::Tensor update = m.lerp(g, 1.0 - hparams_.beta1).sign_();
        m.lerp_(g, 1.0 - hparams_.beta2);
        auto kit = st.tensors.find("kahan_comp");
        if (kit != st.tensors.end()) {
            at::Tensor& comp = kit->second;
            comp.add_(update, -lr);
            at::Tensor before = p.clone();
            p.add_(comp);
            comp.add_(before.sub_(p));
        } else {
            p.add_(update, -lr);
        }
    }
};

}  // namespace

std::unique_ptr<sdk::Optimizer> make_lion(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<Lion>("lion", init, hp);
}
std::unique_ptr<sdk::Optimizer> make_optimi_lion(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<OptimiLion>("optimi-lion", init, hp);
}

}  // namespace st::plugins::optim
