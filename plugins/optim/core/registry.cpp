// Optimizer names, aliases, option declarations and hyper-parameter resolution.
// Defaults follow SimpleTuner's `optimizer_choices[...]["default_settings"]`
// (simpletuner/helpers/training/optimizer_param.py) and, for `adamw` and `lion` which SimpleTuner does
// not list, torch.optim.AdamW and lion-pytorch.
#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "optim.h"
#include "optimizer_base.h"
#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::plugins::optim {
namespace {

constexpr const char* kComponent = "optim";

const std::map<std::string, std::string>& optimizer_aliases() {
    static const std::map<std::string, std::string> aliases = {
        {"bnb-adamw8bit-paged", "bnb-adamw8bit"},
        {"bnb-lion8bit-paged", "bnb-lion8bit"},
    };
    return aliases;
}

bool is_optimi(const std::string& n) {
    return n == "optimi-adamw" || n == "optimi-lion";
}
bool is_bnb(const std::string& n) {
    return n == "bnb-adamw8bit" || n == "bnb-lion8bit";
}
bool is_lion(const std::string& n) {
    return n == "lion" || n == "optimi-lion" || n == "bnb-lion8bit";
}

OptimizerHParams defaults_for(const std::string& n) {
    OptimizerHParams hp;
    if (n == "adamw") {  // torch.optim.AdamW
        hp.beta1 = 0.9, hp.beta2 = 0.999, hp.eps = 1e-8, hp.weight_decay = 1e-2;
    } else if (n == "adamw_bf16") {
        hp.beta1 = 0.9, hp.beta2 = 0.999, hp.eps = 1e-6, hp.weight_decay = 1e-2;
    } else if (n == "optimi-adamw") {
        hp.beta1 = 0.9, hp.beta2 = 0.99, hp.eps = 1e-6, hp.weight_decay = 0.0;
    } else if (n == "optimi-lion" || n == "lion" || n == "bnb-lion8bit") {
        hp.beta1 = 0.9, hp.beta2 = 0.99, hp.eps = 0.0, hp.weight_decay = 0.0;
    } else if (n == "bnb-adamw8bit") {
        hp.beta1 = 0.9, hp.beta2 = 0.999, hp.eps = 1e-6, hp.weight_decay = 1e-2;
    }
    return hp;
}

double as_number(const std::string& opt, const std::string& key, const nlohmann::json& v) {
    if (v.is_number()) return v.get<double>();
    fail(optimizer_component_id(opt), "config", "optimizer_config key '{}' must be a number, got {}", key,
         v.dump());
}

bool as_bool(const std::string& opt, const std::string& key, const nlohmann::json& v) {
    if (v.is_boolean()) return v.get<bool>();
    fail(optimizer_component_id(opt), "config", "optimizer_config key '{}' must be true or false, got {}",
         key, v.dump());
}

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

}  // namespace

const std::vector<std::string>& optimizer_names() {
    static const std::vector<std::string> names = {"adamw", "adamw_bf16",    "optimi-adamw", "optimi-lion",
                                                   "lion",  "bnb-adamw8bit", "bnb-lion8bit"};
    return names;
}

std::vector<std::string> supported_optimizer_names() {
    std::vector<std::string> out = optimizer_names();
    for (const auto& [alias, target] : optimizer_aliases()) out.push_back(alias);
    std::sort(out.begin(), out.end());
    return out;
}

std::string resolve_optimizer_name(const std::string& name) {
    const auto& names = optimizer_names();
    if (std::find(names.begin(), names.end(), name) != names.end()) return name;
    auto it = optimizer_aliases().find(name);
    if (it != optimizer_aliases().end()) return it->second;
    fail(kComponent, "config", "unsupported optimizer '{}'; supported: {}", name,
         join(supported_optimizer_names()));
}

std::string optimizer_component_id(const std::string& canonical_name) {
    return "optim." + canonical_name + "@1";
}

std::vector<std::string> optimizer_override_keys(const std::string& canonical_name) {
    std::vector<std::string> keys = {"beta1", "beta2", "betas", "weight_decay"};
    if (!is_lion(canonical_name)) keys.push_back("eps");
    if (is_optimi(canonical_name)) {
        for (const char* k : {"kahan_sum", "decouple_lr", "max_lr", "foreach"}) keys.push_back(k);
    }
    if (is_bnb(canonical_name)) keys.push_back("min_8bit_size");
    std::sort(keys.begin(), keys.end());
    return keys;
}

nlohmann::json parse_optimizer_config(const std::string& text) {
    nlohmann::json out = nlohmann::json::object();
    auto first = text.find_first_not_of(" \t\n");
    if (first == std::string::npos) return out;
    if (text[first] == '{') {
        try {
            st::sdk::check_json_limits(text, "optimizer_config", "optim");
            out = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
            fail("host.config", "parse", "optimizer_config looks like JSON but does not parse: {}", e.what());
        }
        return out;
    }
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        if (comma == std::string::npos) comma = text.size();
        std::string item = text.substr(pos, comma - pos);
        pos = comma + 1;
        auto trim = [](std::string s) {
            s.erase(0, s.find_first_not_of(" \t"));
            s.erase(s.find_last_not_of(" \t") + 1);
            return s;
        };
        item = trim(item);
        if (item.empty()) continue;
        auto eq = item.find('=');
        if (eq == std::string::npos || trim(item.substr(0, eq)).empty()) {
            fail("host.config", "parse", "optimizer_config item '{}' is not of the form key=value (in '{}')",
                 item, text);
        }
        std::string key = trim(item.substr(0, eq));
        std::string value = trim(item.substr(eq + 1));
        std::string lower = value;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        // SimpleTuner's convert_arg_to_parameters order: '.' -> float, digits -> int, bools, none,
        // "e-" -> float, else string. We also accept "1e5"/"-3" as numbers (SimpleTuner keeps them as
        // strings and the optimizer constructor then fails).
        nlohmann::json parsed;
        char* end = nullptr;
        if (lower == "true") {
            parsed = true;
        } else if (lower == "false") {
            parsed = false;
        } else if (lower == "none" || lower == "null") {
            parsed = nullptr;
        } else if (!value.empty() && value.find_first_not_of("0123456789+-") == std::string::npos) {
            parsed = std::strtoll(value.c_str(), &end, 10);
            if (*end != '\0') parsed = value;
        } else {
            double d = std::strtod(value.c_str(), &end);
            if (!value.empty() && *end == '\0')
                parsed = d;
            else
                parsed = value;
        }
        out[key] = parsed;
        if (comma == text.size()) break;
    }
    return out;
}

OptimizerHParams resolve_optimizer_hparams(const std::string& canonical_name, const sdk::ConfigView& config,
                                           const nlohmann::json& overrides) {
    const std::string& n = canonical_name;
    const std::string comp = optimizer_component_id(n);
    // The host hands `optimizer_config` over as configured: SimpleTuner's "k=v,k2=v2" text or an object.
    if (overrides.is_string())
        return resolve_optimizer_hparams(canonical_name, config,
                                         parse_optimizer_config(overrides.get<std::string>()));
    OptimizerHParams hp = defaults_for(n);
    auto take = [&](const char* key, double& target) {
        if (auto v = config.opt_float(key)) {
            if (*v != target) st::log::info(comp, "{}={} replaces the optimizer default {}", key, *v, target);
            target = *v;
        }
    };
    take("adam_beta1", hp.beta1);
    take("adam_beta2", hp.beta2);
    if (!is_lion(n)) take("adam_epsilon", hp.eps);
    take("adam_weight_decay", hp.weight_decay);
    take("optimizer_beta1", hp.beta1);
    take("optimizer_beta2", hp.beta2);

    if (!overrides.is_null() && !overrides.is_object()) {
        fail(comp, "config", "optimizer_config must be an object of key=value pairs, got {}",
             overrides.dump());
    }
    const auto known = optimizer_override_keys(n);
    if (overrides.is_object()) {
        for (const auto& [key, v] : overrides.items()) {
            if (std::find(known.begin(), known.end(), key) == known.end()) {
                fail(comp, "config", "unknown optimizer_config key '{}' for optimizer '{}'; known keys: {}",
                     key, n, join(known));
            }
            if (key == "beta1")
                hp.beta1 = as_number(n, key, v);
            else if (key == "beta2")
                hp.beta2 = as_number(n, key, v);
            else if (key == "betas") {
                if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number()) {
                    fail(comp, "config", "optimizer_config key 'betas' must be a list of two numbers, got {}",
                         v.dump());
                }
                hp.beta1 = v[0].get<double>();
                hp.beta2 = v[1].get<double>();
            } else if (key == "weight_decay")
                hp.weight_decay = as_number(n, key, v);
            else if (key == "eps")
                hp.eps = as_number(n, key, v);
            else if (key == "kahan_sum")
                hp.kahan_sum = as_bool(n, key, v);
            else if (key == "decouple_lr")
                hp.decouple_lr = as_bool(n, key, v);
            else if (key == "max_lr")
                hp.max_lr = v.is_null() ? std::nullopt : std::optional<double>(as_number(n, key, v));
            else if (key == "foreach") {
                as_bool(n, key, v);
                st::log::info(comp, "optimizer_config foreach={} has no effect (a PyTorch batching switch)",
                              v.dump());
            } else if (key == "min_8bit_size") {
                if (!v.is_number_integer() || v.get<int64_t>() < 0) {
                    fail(comp, "config",
                         "optimizer_config key 'min_8bit_size' must be a non-negative integer, got {}",
                         v.dump());
                }
                hp.min_8bit_size = v.get<int64_t>();
            }
            st::log::info(comp, "optimizer_config sets {}={}", key, v.dump());
        }
    }
    if (!(hp.beta1 >= 0.0 && hp.beta1 < 1.0) || !(hp.beta2 >= 0.0 && hp.beta2 < 1.0)) {
        fail(comp, "config", "betas must be in [0, 1), got ({}, {})", hp.beta1, hp.beta2);
    }
    if (!(hp.eps >= 0.0)) fail(comp, "config", "eps must be >= 0, got {}", hp.eps);
    if (!(hp.weight_decay >= 0.0)) fail(comp, "config", "weight_decay must be >= 0, got {}", hp.weight_decay);
    if (hp.max_lr && !(*hp.max_lr > 0.0)) fail(comp, "config", "max_lr must be > 0, got {}", *hp.max_lr);
    return hp;
}

std::unique_ptr<sdk::Optimizer> make_optimizer(const std::string& name, const sdk::OptimizerInit& init) {
    const std::string n = resolve_optimizer_name(name);
    if (n != name) st::log::info(optimizer_component_id(n), "optimizer '{}' is an alias of '{}'", name, n);
    OptimizerHParams hp = resolve_optimizer_hparams(n, init.config, init.overrides);
    if (n == "adamw") return make_adamw(init, hp);
    if (n == "adamw_bf16") return make_adamw_bf16(init, hp);
    if (n == "optimi-adamw") return make_optimi_adamw(init, hp);
    if (n == "optimi-lion") return make_optimi_lion(init, hp);
    if (n == "lion") return make_lion(init, hp);
    if (n == "bnb-adamw8bit") return make_bnb_adamw8bit(init, hp);
    return make_bnb_lion8bit(init, hp);
}

std::vector<sdk::OptionSpec> optim_shared_options() {
    std::vector<sdk::OptionSpec> o;
    o.push_back(
        sdk::opt_float("adam_beta1", std::nullopt,
                       "beta1 of the Adam/Lion optimizers; unset = the optimizer's own default (0.9). "
                       "optimizer_beta1 and optimizer_config take precedence."));
    o.push_back(
        sdk::opt_float("adam_beta2", std::nullopt,
                       "beta2 of the Adam/Lion optimizers; unset = the optimizer's own default (0.999 "
                       "for adamw/adamw_bf16/bnb-adamw8bit, 0.99 for optimi-*/lion/bnb-lion8bit)."));
    o.push_back(sdk::opt_float("adam_epsilon", std::nullopt,
                               "epsilon of the Adam optimizers; unset = the optimizer's own default (1e-8 "
                               "adamw, 1e-6 adamw_bf16/optimi-adamw/bnb-adamw8bit)."));
    o.push_back(sdk::opt_float("adam_weight_decay", std::nullopt,
                               "decoupled weight decay; unset = the optimizer's own default (1e-2 adamw, "
                               "adamw_bf16, bnb-adamw8bit; 0 optimi-*, lion, bnb-lion8bit)."));
    o.push_back(sdk::opt_float("optimizer_beta1", std::nullopt,
                               "SimpleTuner's beta1 override (applies to every optimizer when set)."));
    o.push_back(sdk::opt_float("optimizer_beta2", std::nullopt,
                               "SimpleTuner's beta2 override (applies to every optimizer when set)."));
    o.push_back(
        sdk::opt_json("optimizer_config",
                      "optimizer overrides as \"k=v,k2=v2\" or a JSON object (eps, weight_decay, beta1, "
                      "beta2, betas, kahan_sum, decouple_lr, max_lr, min_8bit_size; see "
                      "docs/optimizers.md). Unknown keys are an error."));
    for (auto& s : o) s.group = "optimizer";
    return o;
}

}  // namespace st::plugins::optim
