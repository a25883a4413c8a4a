#include "optimizer_base.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <set>

#include "st/error.h"
#include "st/log.h"
#include "st/text.h"

namespace st::plugins::optim {

double name_fraction(const std::string& name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : name) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return static_cast<double>(h >> 11) / 9007199254740992.0;  // 2^53
}

OptimizerBase::OptimizerBase(std::string canonical_name, const sdk::OptimizerInit& init,
                             OptimizerHParams hparams)
    : name_(std::move(canonical_name)),
      component_(optimizer_component_id(name_)),
      hparams_(hparams),
      params_(init.params) {
    if (init.groups.empty()) {
        auto lr = init.config.opt_float("learning_rate");
        if (!lr) {
            fail(component_, "create",
                 "no parameter groups were given and the configuration has no 'learning_rate'");
        }
        groups_.push_back(GroupState{*lr, hparams_.weight_decay, *lr});
        st::log::info(component_, "one parameter group: lr={} weight_decay={} (optimizer default)", *lr,
                      hparams_.weight_decay);
    } else {
        for (size_t g = 0; g < init.groups.size(); ++g) {
            const auto& spec = init.groups[g];
            const double wd = spec.weight_decay.value_or(hparams_.weight_decay);
            if (spec.lr < 0.0 || wd < 0.0) {
                fail(component_, "create", "parameter group {} has a negative lr ({}) or weight_decay ({})",
                     g, spec.lr, wd);
            }
            groups_.push_back(GroupState{spec.lr, wd, spec.lr});
            st::log::info(component_, "parameter group {}: lr={} weight_decay={} (optimizer default {})", g,
                          spec.lr, wd, hparams_.weight_decay);
        }
    }
    std::set<std::string> seen;
    for (const auto& p : params_) {
        if (!seen.insert(p.name).second) {
            fail(component_, "create", "parameter '{}' is given twice (state is keyed by name)", p.name);
        }
        if (p.group < 0 || p.group >= static_cast<int>(groups_.size())) {
            fail(component_, "create", "parameter '{}' is in group {} but there are {} group(s)", p.name,
                 p.group, groups_.size());
        }
        if (!p.param.defined() || !at::isFloatingType(p.param.scalar_type())) {
            fail(component_, "create", "parameter '{}' must be a defined floating-point tensor, got {}",
                 p.name, p.param.defined() ? std::string(c10::toString(p.param.scalar_type())) : "undefined");
        }
    }
}

double OptimizerBase::lr(int group) const {
    if (group < 0 || group >= group_count()) {
        fail(component_, "lr", "group {} out of range (have {})", group, group_count());
    }
    return groups_[group].lr;
}

void OptimizerBase::set_lr(int group, double lr) {
    if (group < 0 || group >= group_count()) {
        fail(component_, "set_lr", "group {} out of range (have {})", group, group_count());
    }
    groups_[group].lr = lr;
}

void OptimizerBase::step() {
    at::NoGradGuard no_grad;
    for (const auto& p : params_) {
        const at::Tensor& grad = p.param.grad();
        if (!grad.defined()) continue;
        if (grad.sizes() != p.param.sizes()) {
            fail(component_, "step", "gradient of '{}' has shape {} but the parameter has {}", p.name,
                 shape_str(grad.sizes()), shape_str(p.param.sizes()));
        }
        auto it = state_.find(p.name);
        if (it == state_.end()) it = state_.emplace(p.name, init_state(p)).first;
        it->second.step += 1;
        update(p, groups_[p.group], it->second);
    }
}

sdk::StateDict OptimizerBase::state_dict() const {
    sdk::StateDict out;
    out.meta["optimizer"] = component_;
    out.meta["groups"] = nlohmann::json::array();
    for (const auto& g : groups_) {
        out.meta["groups"].push_back(
            {{"lr", g.lr}, {"weight_decay", g.weight_decay}, {"initial_lr", g.initial_lr}});
    }
    nlohmann::json params = nlohmann::json::object();
    for (const auto& [name, st] : state_) {
        nlohmann::json entry = {{"step", st.step}};
        if (!st.scalars.empty()) entry["scalars"] = st.scalars;
        params[name] = std::move(entry);
        for (const auto& [key, t] : st.tensors) out.tensors[name + "::" + key] = t.detach().clone();
    }
    out.meta["params"] = std::move(params);
    return out;
}

void OptimizerBase::load_state_dict(const sdk::StateDict& state) {
    const auto& meta = state.meta;
    if (!meta.is_object() || !meta.contains("optimizer") || !meta["optimizer"].is_string()) {
        fail(component_, "load_state", "state has no 'optimizer' entry in its metadata");
    }
    if (meta["optimizer"].get<std::string>() != component_) {
        fail(component_, "load_state", "state was saved by '{}', expected '{}'",
             meta["optimizer"].get<std::string>(), component_);
    }
    if (!meta.contains("groups") || !meta["groups"].is_array() || meta["groups"].size() != groups_.size()) {
        fail(component_, "load_state", "state has {} parameter group(s), this optimizer has {}",
             meta.contains("groups") && meta["groups"].is_array() ? meta["groups"].size() : 0,
             groups_.size());
    }
    if (!meta.contains("params") || !meta["params"].is_object()) {
        fail(component_, "load_state", "state has no 'params' object in its metadata");
    }
    std::map<std::string, const sdk::OptimizerParam*> by_name;
    for (const auto& p : params_) by_name[p.name] = &p;

    std::map<std::string, ParamState> loaded;
    size_t used_tensors = 0;
    for (const auto& [name, entry] : meta["params"].items()) {
        auto pit = by_name.find(name);
        if (pit == by_name.end()) {
            fail(component_, "load_state",
                 "state has an entry for parameter '{}' which this optimizer does not have", name);
        }
        if (!entry.contains("step") || !entry["step"].is_number_integer()) {
            fail(component_, "load_state", "state of '{}' has no integer 'step'", name);
        }
        ParamState st = init_state(*pit->second);
        st.step = entry["step"].get<int64_t>();
        for (auto& [key, t] : st.tensors) {
            const std::string full = name + "::" + key;
            auto tit = state.tensors.find(full);
            if (tit == state.tensors.end())
                fail(component_, "load_state", "state tensor '{}' is missing", full);
            const at::Tensor& src = tit->second;
            if (src.sizes() != t.sizes() || src.scalar_type() != t.scalar_type()) {
                fail(component_, "load_state", "state tensor '{}' is {} {}, expected {} {}", full,
                     c10::toString(src.scalar_type()), shape_str(src.sizes()), c10::toString(t.scalar_type()),
                     shape_str(t.sizes()));
            }
            t = src.detach().to(t.device()).clone().contiguous();
            ++used_tensors;
        }
        for (auto& [key, value] : st.scalars) {
            if (!entry.contains("scalars") || !entry["scalars"].contains(key) ||
                !entry["scalars"][key].is_number()) {
                fail(component_, "load_state", "state of '{}' has no scalar '{}'", name, key);
            }
            value = entry["scalars"][key].get<double>();
        }
        loaded.emplace(name, std::move(st));
    }
    if (used_tensors != state.tensors.size()) {
        for (const auto& [full, t] : state.tensors) {
            const auto sep = full.rfind("::");
            const std::string pname = sep == std::string::npos ? full : full.substr(0, sep);
            const std::string key = sep == std::string::npos ? "" : full.substr(sep + 2);
            auto lit = loaded.find(pname);
            if (lit == loaded.end() || !lit->second.tensors.count(key)) {
                fail(component_, "load_state", "state has an unexpected tensor '{}'", full);
            }
        }
    }
    for (size_t g = 0; g < groups_.size(); ++g) {
        const auto& gj = meta["groups"][g];
        groups_[g].lr = gj.at("lr").get<double>();
        groups_[g].weight_decay = gj.at("weight_decay").get<double>();
        groups_[g].initial_lr = gj.at("initial_lr").get<double>();
    }
    state_ = std::move(loaded);
    st::log::info(component_, "restored state of {} parameter(s)", state_.size());
}

int64_t OptimizerBase::state_bytes() const {
    int64_t total = 0;
    for (const auto& [name, st] : state_) {
        for (const auto& [key, t] : st.tensors) total += t.numel() * static_cast<int64_t>(t.element_size());
    }
    return total;
}

}  // namespace st::plugins::optim
