#include "train/lycoris_config.h"

#include <fmt/format.h>

#include <fnmatch.h>

#include <algorithm>
#include <regex>
#include <set>

#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::host::train {

namespace {
constexpr const char* kLog = "host.lycoris";

// Applies a map entry ({"algo", "dim", "alpha", "factor", "full_matrix", "decompose_both"}) on `o`.
void apply_entry(sdk::LycorisOptions& o, const nlohmann::json& e, const std::string& where) {
    if (!e.is_object()) fail(kLog, "config", "{}: expected an object of LyCORIS settings", where);
    for (const auto& [k, v] : e.items()) {
        if (k == "algo" && v.is_string())
            o.algo = v.get<std::string>();
        else if ((k == "dim" || k == "linear_dim") && v.is_number())
            o.dim = static_cast<int64_t>(v.get<double>());
        else if ((k == "alpha" || k == "linear_alpha") && v.is_number())
            o.alpha = static_cast<double>(static_cast<int64_t>(v.get<double>()));
        else if (k == "factor" && v.is_number())
            o.factor = static_cast<int64_t>(v.get<double>());
        else if (k == "full_matrix" && v.is_boolean())
            o.full_matrix = v.get<bool>();
        else if (k == "decompose_both" && v.is_boolean())
            o.decompose_both = v.get<bool>();
        else if (k == "rs_lora" && v.is_boolean())
            o.rs_lora = v.get<bool>();
        else if (k == "use_scalar" && v.is_boolean())
            o.use_scalar = v.get<bool>();
        else
            fail(kLog, "config",
                 "{}: '{}' = {} is not a LyCORIS setting st applies per module (algo, dim, alpha, "
                 "factor, full_matrix, decompose_both, rs_lora, use_scalar)",
                 where, k, v.dump());
    }
    if (o.algo == "lora") o.algo = "locon";  // LyCORIS: both name LoConModule
    if (o.algo != "lokr" && o.algo != "loha" && o.algo != "locon")
        fail(kLog, "config", "{}: algo '{}' is not trained by st on Linear layers: lokr, loha or locon",
             where, o.algo);
}

bool regex_prefix_match(const std::string& pattern, const std::string& s) {
    try {
        return std::regex_search(s, std::regex(pattern), std::regex_constants::match_continuous);
    } catch (const std::regex_error&) {
        return pattern == s;
    }
}

// LycorisNetwork.match_fn: fnmatch.fnmatch (POSIX glob on the whole name, '*' crossing dots) with
// use_fnmatch, else re.match (a regex matching at the start).
bool matches(const LycorisPlan& plan, const std::string& pattern, const std::string& path) {
    if (plan.use_fnmatch) return ::fnmatch(pattern.c_str(), path.c_str(), 0) == 0;
    return regex_prefix_match(pattern, path);
}

bool excluded(const LycorisPlan& plan, const std::string& path) {
    for (const auto& e : plan.exclude_name)
        if (e == path || matches(plan, e, path)) return true;
    return false;
}
}  // namespace

LycorisPlan read_lycoris_config(const std::filesystem::path& file) {
    LycorisPlan p;
    p.file = file;
    nlohmann::json j = sdk::read_json_file(file, kLog);
    if (!j.is_object()) fail(kLog, "config", "{}: expected a JSON object (LyCORIS settings)", file.string());
    p.raw = j;
    const std::string where = file.string();
    if (!j.contains("algo") || !j["algo"].is_string())
        fail(kLog, "config", "{}: 'algo' is required (lokr, loha or locon), as SimpleTuner requires it",
             where);
    // SimpleTuner: multiplier, linear_dim and linear_alpha go through int().
    auto int_of = [&](const char* key, double def) {
        if (!j.contains(key)) return def;
        if (!j[key].is_number()) fail(kLog, "config", "{}: '{}' must be a number", where, key);
        return static_cast<double>(static_cast<int64_t>(j[key].get<double>()));
    };
    p.multiplier = int_of("multiplier", 1);
    p.base.dim = static_cast<int64_t>(int_of("linear_dim", 4));
    p.base.alpha = int_of("linear_alpha", 1);
    static const std::set<std::string> known = {
        "algo",         "multiplier",     "linear_dim",   "linear_alpha",      "factor",
        "full_matrix",  "decompose_both", "apply_preset", "bypass_mode",       "dropout",
        "rank_dropout", "module_dropout", "preset",       "use_scalar",        "rs_lora",
        "train_norm",   "conv_dim",       "conv_alpha",   "rank_dropout_scale"};
    for (const auto& [k, v] : j.items()) {
        if (!known.count(k))
            log::warn(kLog, "{}: '{}' is not read by st (LyCORIS setting not implemented)", where, k);
        if ((k == "rank_dropout" || k == "module_dropout") &&
            (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1))
            fail(kLog, "config", "{}: {} must be a number in [0, 1], got {}", where, k, v.dump());
        if (k == "rank_dropout_scale" && !v.is_boolean())
            fail(kLog, "config", "{}: rank_dropout_scale must be true or false", where);
        if (k == "train_norm" && !v.is_boolean())
            fail(kLog, "config", "{}: train_norm must be true or false", where);
        if (k == "use_scalar" && !v.is_boolean())
            fail(kLog, "config", "{}: use_scalar must be true or false", where);
        if (k == "dropout" && (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1))
            fail(kLog, "config", "{}: dropout must be a number in [0, 1], got {}", where, v.dump());
        if (k == "dropout" && v.get<double>() != 0 && !j.value("bypass_mode", false))
            log::warn(kLog,
                      "{}: dropout {} has no effect: LyCORIS applies it only in bypass_mode (base.py: "
                      "\"g(x) = WX + drop(dW X)\", bypass only), so SimpleTuner trains without it too",
                      where, v.dump());
        if (k == "bypass_mode" && !v.is_boolean())
            fail(kLog, "config", "{}: bypass_mode must be true or false", where);
        if (k == "rs_lora" && !v.is_boolean())
            fail(kLog, "config", "{}: rs_lora must be true or false", where);
    }
    // LycorisNetwork passes its rank_dropout and module_dropout to every module (training only).
    p.base.rank_dropout = j.value("rank_dropout", 0.0);
    p.base.module_dropout = j.value("module_dropout", 0.0);
    p.base.rank_dropout_scale = j.value("rank_dropout_scale", false);
    p.train_norm = j.value("train_norm", false);
    if (j.value("bypass_mode", false) && (j.value("dropout", 0.0) != 0 || j.value("rank_dropout", 0.0) != 0))
        fail(kLog, "config",
             "{}: dropout / rank_dropout with bypass_mode: LyCORIS's bypass form drops the adapter's output "
             "(and "
             "LoCon's rank, LoKr none), which st does not implement (st computes the rebuilt weight delta); "
             "set "
             "bypass_mode false (rank_dropout then drops rows of the delta, dropout has no effect) or both "
             "to 0",
             where);
    if (j.value("bypass_mode", false))
        log::info(kLog,
                  "{}: bypass_mode only changes how LyCORIS computes the same product; st rebuilds the "
                  "weight delta",
                  where);
    nlohmann::json base = nlohmann::json::object();
    for (const char* k : {"algo", "factor", "full_matrix", "decompose_both", "rs_lora", "use_scalar"})
        if (j.contains(k)) base[k] = j[k];
    apply_entry(p.base, base, where);
    if (p.base.dim < 1) fail(kLog, "config", "{}: linear_dim must be >= 1, got {}", where, p.base.dim);
    if (j.contains("apply_preset")) {
        const auto& ap = j["apply_preset"];
        if (!ap.is_object()) fail(kLog, "config", "{}: apply_preset must be an object", where);
        for (const auto& [k, v] : ap.items()) {
            const std::string w = fmt::format("{}: apply_preset.{}", where, k);
            if (k == "target_module" || k == "target_name") {
                if (!v.is_array()) fail(kLog, "config", "{}: expected a list of names", w);
                for (const auto& x : v) {
                    if (!x.is_string()) fail(kLog, "config", "{}: expected strings", w);
                    (k == "target_module" ? p.target_module : p.target_name).push_back(x.get<std::string>());
                }
            } else if (k == "module_algo_map" || k == "name_algo_map") {
                if (!v.is_object()) fail(kLog, "config", "{}: expected an object", w);
                for (const auto& [name, e] : v.items()) {
                    sdk::LycorisOptions probe = p.base;
                    apply_entry(probe, e, fmt::format("{}.{}", w, name));  // checked now, applied per module
                    (k == "module_algo_map" ? p.module_algo_map : p.name_algo_map)[name] = e;
                }
            } else if (k == "use_fnmatch") {
                if (!v.is_boolean()) fail(kLog, "config", "{}: expected true or false", w);
                p.use_fnmatch = v.get<bool>();
            } else if (k == "exclude_name") {
                if (!v.is_array()) fail(kLog, "config", "{}: expected a list of module names or patterns", w);
                for (const auto& x : v) {
                    if (!x.is_string()) fail(kLog, "config", "{}: expected strings", w);
                    p.exclude_name.push_back(x.get<std::string>());
                }
            } else if (k == "lora_prefix") {
                // Kept in the file's lycoris_config metadata; the SDK names LyCORIS-layout tensors with it.
                if (!v.is_string() || v.get<std::string>().empty())
                    fail(kLog, "config", "{}: expected a non-empty string (the LyCORIS name prefix)", w);
            } else {
                log::warn(
                    kLog,
                    "{}: not read by st (only target_module, target_name, module_algo_map, name_algo_map, "
                    "exclude_name, use_fnmatch, lora_prefix)",
                    w);
            }
        }
    } else {
        p.target_module = {"Attention"};  // SimpleTuner's Wan default (DEFAULT_LYCORIS_TARGET)
    }
    return p;
}

std::string lycoris_module_class(const std::string& module_path) {
    const std::string last =
        module_path.substr(module_path.rfind('.') == std::string::npos ? 0 : module_path.rfind('.') + 1);
    static const std::regex attn("^(attn[0-9]*|self_attn|cross_attn|attention|audio_attn)$");
    static const std::regex ff("^(ffn|ff|feed_forward)$");
    if (std::regex_match(last, attn)) return "Attention";
    if (std::regex_match(last, ff)) return "FeedForward";
    return "";
}

std::optional<sdk::LycorisOptions> lycoris_options_for(const LycorisPlan& plan,
                                                       const std::string& linear_path) {
    // Innermost ancestor module whose class is targeted.
    std::string chosen_class;
    for (size_t pos = linear_path.find('.'); pos != std::string::npos; pos = linear_path.find('.', pos + 1)) {
        const std::string module_path = linear_path.substr(0, pos);
        const std::string cls = lycoris_module_class(module_path);
        if (cls.empty() || excluded(plan, module_path)) continue;
        const bool targeted =
            std::find(plan.target_module.begin(), plan.target_module.end(), cls) !=
                plan.target_module.end() ||
            plan.module_algo_map.count(cls) ||
            (cls == "Attention" && (plan.module_algo_map.count("WanAttention") ||
                                    std::find(plan.target_module.begin(), plan.target_module.end(),
                                              "WanAttention") != plan.target_module.end()));
        if (targeted) chosen_class = cls;
    }
    sdk::LycorisOptions o = plan.base;
    if (!chosen_class.empty()) {
        auto it = plan.module_algo_map.find(chosen_class);
        if (it == plan.module_algo_map.end() && chosen_class == "Attention")
            it = plan.module_algo_map.find("WanAttention");
        if (it != plan.module_algo_map.end()) apply_entry(o, it->second, plan.file.string());
        return o;
    }
    if (excluded(plan, linear_path)) return std::nullopt;
    if (auto it = plan.name_algo_map.find(linear_path); it != plan.name_algo_map.end()) {
        apply_entry(o, it->second, plan.file.string());
        return o;
    }
    for (const auto& [pattern, e] : plan.name_algo_map)
        if (matches(plan, pattern, linear_path)) {
            apply_entry(o, e, plan.file.string());
            return o;
        }
    for (const auto& pattern : plan.target_name)
        if (matches(plan, pattern, linear_path)) return o;
    return std::nullopt;
}

std::vector<std::string> lycoris_norms_selected(const LycorisPlan& plan,
                                                const std::vector<std::string>& norms) {
    std::vector<std::string> out;
    if (!plan.train_norm) return out;
    for (const auto& path : norms)
        if (lycoris_options_for(plan, path)) out.push_back(path);
    return out;
}

}  // namespace st::host::train
