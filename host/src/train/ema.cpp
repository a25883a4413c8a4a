#include "train/ema.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/irange.h>

#include <algorithm>

#include "st/error.h"

namespace st::host::train {

Ema::Ema(const std::vector<std::pair<std::string, at::Tensor>>& params, double decay, int64_t warmup_steps,
         bool on_parameter_device)
    : params_(params), decay_(decay), warmup_steps_(warmup_steps) {
    at::NoGradGuard no_grad;
    for (const auto& [name, p] : params_) {
        const at::Device where = on_parameter_device ? p.device() : at::Device(at::kCPU);
        shadows_[name] = p.detach().to(at::TensorOptions().dtype(at::kFloat).device(where)).clone();
    }
}

double Ema::decay_at(int64_t global_step) const {
    // ema.py EMAModel.get_decay with update_after_step = 0: step = optimization_step - 1.
    const int64_t step = global_step - 1;
    if (warmup_steps_ > 0) return step < warmup_steps_ ? 0.0 : decay_;
    if (step <= 0) return 0.0;
    return std::min((1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)), decay_);
}

void Ema::update(int64_t global_step) {
    at::NoGradGuard no_grad;
    const double one_minus = 1.0 - decay_at(global_step);
    for (const auto& [name, p] : params_) {
        at::Tensor& s = shadows_.at(name);
        // shadow -= (1 - d) * (shadow - param), in fp32
        s.sub_((s - p.detach().to(s.options())).mul_(one_minus));
    }
}

void Ema::swap_into_model() {
    at::NoGradGuard no_grad;
    for (const auto& [name, p] : params_) {
        at::Tensor& s = shadows_.at(name);
        at::Tensor live = p.detach().to(s.options()).clone();
        p.detach().copy_(s);
        s = live;
    }
}

sdk::StateDict Ema::state_dict() const {
    sdk::StateDict d;
    for (const auto& [name, s] : shadows_) d.tensors[name] = s.to(at::kCPU);
    d.meta = {{"decay", decay_}, {"warmup_steps", warmup_steps_}};
    return d;
}

void Ema::load_state_dict(const sdk::StateDict& state) {
    for (const auto& [name, s] : shadows_) {
        auto it = state.tensors.find(name);
        if (it == state.tensors.end()) fail("host.ema", "resume", "EMA state lacks the shadow of '{}'", name);
        if (it->second.sizes() != s.sizes())
            fail("host.ema", "resume", "EMA shadow '{}' has shape {} but the parameter is {}", name,
                 c10::str(it->second.sizes()), c10::str(s.sizes()));
    }
    for (const auto& [name, t] : state.tensors)
        if (!shadows_.count(name))
            fail("host.ema", "resume", "EMA state has a shadow '{}' that is not a trained parameter", name);
    for (auto& [name, s] : shadows_) s = state.tensors.at(name).to(s.options()).clone();
}

}  // namespace st::host::train
