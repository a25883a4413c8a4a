// 8-bit block-wise quantized optimizer states, after bitsandbytes' AdamW8bit / Lion8bit
// (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"; bitsandbytes
// `functional.create_dynamic_map` and the `*8bit2StateBlockwise` / `*8bit1StateBlockwise` kernels).
//
// Each state tensor is stored as one uint8 code index per element plus one fp32 absmax per block of
// 256 elements. Codes index a 256-entry "dynamic tree" map: signed for the first moment (m can be
// negative), unsigned for the second (v >= 0), so small values keep relative precision. Every step
// dequantizes a block into fp32, applies the fp32 update (the parameter update uses the fresh fp32
// moments), takes the block's new absmax and requantizes to the nearest code. Parameters with fewer
// than min_8bit_size (4096) elements keep plain fp32 state, as bitsandbytes does.
// The block loops are kernels/cpu (a table-driven nearest-code search) and kernels/cuda.
#include <ATen/ATen.h>

#include <cmath>

#include "fused.h"
#include "optimizer_base.h"
#include "st/error.h"

namespace st::plugins::optim {
namespace {

Q8Tensors q8(ParamState& st, const std::string& key) {
    return Q8Tensors{st.tensors.at(key + ".q"), st.tensors.at(key + ".absmax")};
}

void add_q8_state(ParamState& st, const std::string& key, const at::Tensor& like) {
    const int64_t numel = like.numel();
    const int64_t blocks = (numel + ST_K_Q8_BLOCK - 1) / ST_K_Q8_BLOCK;
    st.tensors[key + ".q"] = at::zeros({numel}, like.options().dtype(at::kByte));
    st.tensors[key + ".absmax"] = at::zeros({blocks}, like.options().dtype(at::kFloat));
}

class Bnb8bit final : public OptimizerBase {
  public:
    Bnb8bit(std::string name, const sdk::OptimizerInit& init, OptimizerHParams hp, bool is_lion)
        : OptimizerBase(std::move(name), init, hp), lion_(is_lion) {
        for (const auto& p : params()) {
            const at::Tensor probe = at::empty({0}, p.param.options().dtype(at::kFloat));
            if (!fused_ok({&probe})) {
                fail(component_, "create",
                     "'{}' is on {}; the 8-bit optimizers have no kernels for it in this build", p.name,
                     p.param.device().str());
            }
        }
    }

  protected:
    bool quantized(const at::Tensor& p) const { return p.numel() >= hparams_.min_8bit_size; }

    ParamState init_state(const sdk::OptimizerParam& p) const override {
        ParamState st;
        const auto opts = p.param.options().dtype(at::kFloat);
        if (quantized(p.param)) {
            add_q8_state(st, "exp_avg", p.param);
            if (!lion_) add_q8_state(st, "exp_avg_sq", p.param);
        } else {
            st.tensors["exp_avg"] = at::zeros(p.param.sizes(), opts);
            if (!lion_) st.tensors["exp_avg_sq"] = at::zeros(p.param.sizes(), opts);
        }
        return st;
    }

    void update(const sdk::OptimizerParam& prm, const GroupState& group, ParamState& st) override {
        at::Tensor p = prm.param;
        const bool direct = p.scalar_type() == at::kFloat && p.is_contiguous();
        at::Tensor pf = direct ? p : p.to(at::kFloat).contiguous();
        at::Tensor gf = p.grad().to(at::kFloat).contiguous();
        if (quantized(p)) {
            const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
            const auto decay = static_cast<float>(1.0 - lr * group.weight_decay);
            Q8Tensors m = q8(st, "exp_avg");
            Q8Tensors v = lion_ ? Q8Tensors{} : q8(st, "exp_avg_sq");
            const bool ok = lion_ ? fused_ok({&pf, &gf, &m.absmax}, {&m.codes})
                                  : fused_ok({&pf, &gf, &m.absmax, &v.absmax}, {&m.codes, &v.codes});
            if (!ok)
                fail(component_, "step", "8-bit state of '{}' is not contiguous uint8/float on {}", prm.name,
                     p.device().str());
            if (lion_) {
                const st_k_lion_scalars s{decay,
                                          static_cast<float>(b1),
                                          static_cast<float>(1.0 - b1),
                                          static_cast<float>(b2),
                                          static_cast<float>(1.0 - b2),
                                          static_cast<float>(-lr)};
                fused_lion8bit(pf, gf, m, s);
            } else {
                const auto step = static_cast<double>(st.step);
                const st_k_adam_scalars s{decay,
                                          static_cast<float>(b1),
                                          static_cast<float>(1.0 - b1),
                                          static_cast<float>(b2),
                                          static_cast<float>(1.0 - b2),
                                          static_cast<float>(std::sqrt(1.0 - std::pow(b2, step))),
                                          static_cast<float>(hparams_.eps),
                                          static_cast<float>(-lr / (1.0 - std::pow(b1, step)))};
                fused_adamw8bit(pf, gf, m, v, s);
            }
        } else {
            fp32_step(pf, gf, st, group);
        }
        if (!direct) p.copy_(pf.view(p.sizes()));
    }

  private:
    // Small parameters: the same update with fp32 state (bitsandbytes' min_8bit_size rule).
    void fp32_step(at::Tensor& pf, const at::Tensor& gf, ParamState& st, const GroupState& group) const {
        const double lr = group.lr, b1 = hparams_.beta1, b2 = hparams_.beta2;
        at::Tensor m = st.tensors["exp_avg"].view(-1);
        at::Tensor p = pf.view(-1), g = gf.view(-1);
        p.mul_(1.0 - lr * group.weight_decay);
        if (lion_) {
            at::Tensor update = m.clone().mul_(b1).add_(g, 1.0 - b1).sign_();
            p.add_(update, -lr);
            m.mul_(b2).add_(g, 1.0 - b2);
            return;
        }
        at::Tensor v = st.tensors["exp_avg_sq"].view(-1);
        const double step = static_cast<double>(st.step);
        m.mul_(b1).add_(g, 1.0 - b1);
        v.mul_(b2).addcmul_(g, g, 1.0 - b2);
        at::Tensor denom = (v.sqrt() / std::sqrt(1.0 - std::pow(b2, step))).add_(hparams_.eps);
        p.addcdiv_(m, denom, -lr / (1.0 - std::pow(b1, step)));
    }

    bool lion_;
};

}  // namespace

std::unique_ptr<sdk::Optimizer> make_bnb_adamw8bit(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<Bnb8bit>("bnb-adamw8bit", init, hp, false);
}
std::unique_ptr<sdk::Optimizer> make_bnb_lion8bit(const sdk::OptimizerInit& init, OptimizerHParams hp) {
    return std::make_unique<Bnb8bit>("bnb-lion8bit", init, hp, true);
}

}  // namespace st::plugins::optim
