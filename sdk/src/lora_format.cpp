// LoRA files: writing the diffusers/PEFT and ComfyUI (native Wan names) layouts, reading those plus
// lora_down/lora_up and kohya `lora_unet_` names. Key conventions: reference/lora-formats-and-
// performance.md §4 and models.md §13; metadata as diffusers' save_lora_weights writes it
// (loaders/lora_base.py: `lora_adapter_metadata` = json.dumps(prefixed LoraConfig dict, indent=2,
// sort_keys=True)); the alpha/rank fold as diffusers' `_convert_non_diffusers_wan_lora_to_diffusers`.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "st/error.h"
#include "st/json_file.h"
#include "st/log.h"
#include "st/lora.h"
#include "st/safetensors.h"

namespace st::sdk {

namespace {
constexpr const char* kComponent = "sdk.lora";
constexpr const char* kMetadataKey = "lora_adapter_metadata";

std::string shape_str(at::IntArrayRef s) {
    return fmt::format("[{}]", fmt::join(s.begin(), s.end(), ", "));
}

std::string underscored(std::string s) {
    std::replace(s.begin(), s.end(), '.', '_');
    return s;
}

bool starts_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

bool ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::string join_module(const std::string& prefix, const std::string& path) {
    return path.empty() ? prefix.substr(0, prefix.size() - 1) : prefix + path;
}

// LyCORIS's own layout names a module `<prefix>_<path with '_' for '.'>`; the prefix is "lycoris" unless
// the lycoris_config a file carries in its metadata (SimpleTuner's and st's files do) sets
// apply_preset.lora_prefix (LycorisNetwork.LORA_PREFIX).
std::string lycoris_prefix(const std::map<std::string, std::string>& meta) {
    const auto it = meta.find("lycoris_config");
    if (it == meta.end()) return "lycoris";
    try {
        check_json_limits(it->second, "LoRA metadata", "sdk.lora", "load");
        const auto j = nlohmann::json::parse(it->second);
        if (j.is_object() && j.contains("apply_preset") && j["apply_preset"].is_object() &&
            j["apply_preset"].contains("lora_prefix") && j["apply_preset"]["lora_prefix"].is_string() &&
            !j["apply_preset"]["lora_prefix"].get<std::string>().empty())
            return underscored(j["apply_preset"]["lora_prefix"].get<std::string>());
    } catch (const std::exception&) {
    }
    return "lycoris";
}

nlohmann::json number_json(double v) {
    if (std::floor(v) == v && std::fabs(v) < 1e15) return static_cast<int64_t>(v);
    return v;
}

enum class Role { a, b, alpha, lycoris };

// Suffixes of the tensors of one adapter, in the order tried (longest first).
const std::vector<std::pair<std::string, Role>>& role_suffixes() {
    static const std::vector<std::pair<std::string, Role>> table = {
        {".lora_A.default.weight", Role::a},
        {".lora_B.default.weight", Role::b},
        {".lora_A.weight", Role::a},
        {".lora_B.weight", Role::b},
        {".lora_down.weight", Role::a},
        {".lora_up.weight", Role::b},
        {".alpha", Role::alpha},
        {".lokr_w1_a", Role::lycoris},
        {".lokr_w1_b", Role::lycoris},
        {".lokr_w2_a", Role::lycoris},
        {".lokr_w2_b", Role::lycoris},
        {".lokr_w1", Role::lycoris},
        {".lokr_w2", Role::lycoris},
        {".hada_w1_a", Role::lycoris},
        {".hada_w1_b", Role::lycoris},
        {".hada_w2_a", Role::lycoris},
        {".hada_w2_b", Role::lycoris},
    };
    return table;
}

struct Entry {
    std::string file_module;  ///< module name as in the file (prefix included)
    std::string a_key, b_key;
    at::Tensor a, b;
    std::optional<double> alpha;
    std::map<std::string, at::Tensor> lycoris;  ///< LyCORIS tensors by their name (lokr_w1, ...)
};

std::string first_offenders(const std::vector<std::string>& names) {
    const size_t n = std::min<size_t>(names.size(), 10);
    std::string s =
        fmt::format("{}", fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(n), ", "));
    if (names.size() > n) s += fmt::format(" (and {} more)", names.size() - n);
    return s;
}
}  // namespace

LoraFormat parse_lora_format(const std::string& name) {
    if (name == "diffusers") return LoraFormat::diffusers;
    if (name == "comfyui") return LoraFormat::comfyui;
    fail(kComponent, "config", "lora_format must be 'diffusers' or 'comfyui', got '{}'", name);
}

const char* lora_format_name(LoraFormat format) {
    return format == LoraFormat::diffusers ? "diffusers" : "comfyui";
}

TensorMap lora_state_dict(torch::nn::Module& root, LoraFormat format, const LoraNameMap& to_native,
                          std::map<std::string, std::string>* metadata) {
    TensorMap out;
    std::vector<std::string> modules;
    std::optional<std::pair<int64_t, double>> shared;
    double dropout = 0.0;
    for (auto& [path, lin] : linear_modules(root)) {
        if (lin->has_lycoris()) {
            if (lin->lora_merged())
                fail(kComponent, "save", "module '{}' has its LyCORIS adapter merged; unmerge before saving",
                     path);
            std::string m;
            if (format == LoraFormat::diffusers) {
                m = "lycoris_" + underscored(path);  // LyCORIS's own layout (SimpleTuner's files)
            } else {
                const std::string native = to_native ? to_native(path) : path;
                if (native.empty() && !path.empty())
                    fail(kComponent, "save", "module '{}' has no native name for the comfyui LoRA format",
                         path);
                m = join_module("diffusion_model.", native);
            }
            for (const auto& [name, t] : lin->lycoris()->file_tensors()) out[m + "." + name] = t;
            out[m + ".alpha"] = at::scalar_tensor(lin->lycoris()->saved_alpha(), at::kFloat);
            modules.push_back(path);
            continue;
        }
        if (!lin->has_lora()) continue;
        if (lin->lora_merged()) {
            fail(kComponent, "save",
                 "module '{}' has its LoRA merged into the base weight; unmerge before saving", path);
        }
        const at::Tensor a = lin->lora_A->weight.detach();
        const at::Tensor b = lin->lora_B->weight.detach();
        if (format == LoraFormat::diffusers) {
            const std::pair<int64_t, double> ra{lin->lora_rank(), lin->lora_alpha()};
            if (shared && *shared != ra) {
                fail(kComponent, "save",
                     "the diffusers LoRA format stores one rank/alpha for all modules, but '{}' has rank {} "
                     "alpha {} "
                     "while others have rank {} alpha {}; save with lora_format 'comfyui' (per-module alpha)",
                     path, ra.first, ra.second, shared->first, shared->second);
            }
            shared = ra;
            dropout = lin->lora_dropout();
            const std::string m = join_module("transformer.", path);
            out[m + ".lora_A.weight"] = a;
            out[m + ".lora_B.weight"] = b;
        } else {
            const std::string native = to_native ? to_native(path) : path;
            if (native.empty() && !path.empty()) {
                fail(kComponent, "save", "module '{}' has no native name for the comfyui LoRA format", path);
            }
            const std::string m = join_module("diffusion_model.", native);
            out[m + ".lora_A.weight"] = a;
            out[m + ".lora_B.weight"] = b;
            out[m + ".alpha"] = at::scalar_tensor(lin->lora_alpha(), at::kFloat);
        }
        modules.push_back(path);
    }
    if (modules.empty()) fail(kComponent, "save", "the model carries no LoRA adapter: nothing to save");
    if (metadata != nullptr) {
        (*metadata)["format"] = "pt";
        if (format == LoraFormat::diffusers && shared) {
            // PEFT LoraConfig fields, prefixed with the component as diffusers' pipeline writer does.
            nlohmann::json cfg = {{"transformer.r", shared->first},
                                  {"transformer.lora_alpha", number_json(shared->second)},
                                  {"transformer.lora_dropout", dropout},
                                  {"transformer.target_modules", modules},
                                  {"transformer.bias", "none"},
                                  {"transformer.peft_type", "LORA"},
                                  {"transformer.init_lora_weights", true},
                                  {"transformer.use_dora", false},
                                  {"transformer.use_rslora", false},
                                  {"transformer.fan_in_fan_out", false}};
            (*metadata)[kMetadataKey] = cfg.dump(2);
        }
    }
    return out;
}

size_t save_lora(const std::filesystem::path& path, torch::nn::Module& root, LoraFormat format,
                 const LoraNameMap& to_native, const std::map<std::string, std::string>& metadata) {
    std::map<std::string, std::string> meta = metadata;
    std::map<std::string, std::string> ours;
    TensorMap tensors = lora_state_dict(root, format, to_native, &ours);
    for (auto& [k, v] : ours) meta[k] = v;
    if (const std::string prefix = lycoris_prefix(meta);
        format == LoraFormat::diffusers && prefix != "lycoris") {
        TensorMap renamed;
        for (auto& [k, t] : tensors)
            renamed[starts_with(k, "lycoris_") ? prefix + k.substr(7) : k] = std::move(t);
        tensors = std::move(renamed);
    }
    save_safetensors(path, tensors, meta);
    st::log::info(kComponent, "saved {} LoRA tensors to {} ({} format)", tensors.size(), path.string(),
                  lora_format_name(format));
    return tensors.size();
}

namespace {

// Alpha from diffusers' `lora_adapter_metadata` (prefixed or not); nullopt when absent.
std::optional<double> metadata_alpha(const std::map<std::string, std::string>& meta,
                                     const std::string& file) {
    auto it = meta.find(kMetadataKey);
    if (it == meta.end()) return std::nullopt;
    nlohmann::json j;
    try {
        check_json_limits(it->second, "LoRA metadata", "sdk.lora", "load");
        j = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
        fail(kComponent, "load", "{}: metadata '{}' is not valid JSON: {}", file, kMetadataKey, e.what());
    }
    for (const char* pattern :
         {"transformer.alpha_pattern", "alpha_pattern", "transformer.rank_pattern", "rank_pattern"}) {
        if (j.contains(pattern) && !j[pattern].is_null() && !j[pattern].empty()) {
            fail(kComponent, "load", "{}: per-module '{}' in {} is not supported", file, pattern,
                 kMetadataKey);
        }
    }
    for (const char* key : {"transformer.lora_alpha", "lora_alpha"}) {
        if (j.contains(key) && j[key].is_number()) return j[key].get<double>();
    }
    return std::nullopt;
}

// A LoRA tensor as stored, refused when it holds NaN or infinity: one such value turns every output of
// its module into NaN (a damaged file, never a usable adapter).
at::Tensor load_finite(const SafetensorsFile& file, const std::string& key) {
    at::Tensor t = file.load(key);
    if (t.is_floating_point() && !at::isfinite(t).all().item<bool>()) {
        fail(kComponent, "load", "{}: '{}' holds NaN or infinite values (the file is damaged)",
             file.describe(), key);
    }
    return t;
}

// Largest finite value of the dtypes a weight may have.
double dtype_max(at::ScalarType type) {
    switch (type) {
        case at::kHalf:
            return 65504.0;
        case at::kBFloat16:
            return 3.3895313892515355e38;
        case at::kFloat:
            return std::numeric_limits<float>::max();
        default:
            return std::numeric_limits<double>::max();
    }
}

// Refuses a merge whose delta scale * B @ A could leave the weight's dtype: every entry of the delta is
// at most |scale| * rank * max|B| * max|A|. Real adapters are orders of magnitude below the bound; a
// huge alpha (1e38) would otherwise write infinities into the base weights.
void check_merge_range(const std::string& fname, const std::string& module, const Entry& e,
                       at::ScalarType weight_type, double scale) {
    const double max_a = e.a.numel() ? e.a.abs().max().to(at::kDouble).item<double>() : 0.0;
    const double max_b = e.b.numel() ? e.b.abs().max().to(at::kDouble).item<double>() : 0.0;
    const double bound = std::fabs(scale) * static_cast<double>(e.a.size(0)) * max_a * max_b;
    if (!(bound <= dtype_max(weight_type))) {
        fail(kComponent, "load",
             "{}: merging module '{}' could overflow its {} weights: scale (strength x alpha / rank) {} x "
             "rank "
             "{} x largest |{}| {} x largest |{}| {} exceeds {}",
             fname, module, c10::toString(weight_type), scale, e.a.size(0), e.a_key, max_a, e.b_key, max_b,
             dtype_max(weight_type));
    }
}

}  // namespace

std::vector<std::string> load_lora(const std::filesystem::path& path, torch::nn::Module& root,
                                   double strength, const LoraNameMap& to_native, bool merge) {
    const auto file = SafetensorsFile::open(path);
    const std::string fname = path.string();

    // Index the model's Linear modules under every name a file may use for them.
    std::map<std::string, LinearImpl*> ours, native, underscore;
    for (auto& [p, lin] : linear_modules(root)) {
        ours[p] = lin;
        underscore[underscored(p)] = lin;
        if (to_native) {
            const std::string n = to_native(p);
            if (!n.empty()) {
                native[n] = lin;
                underscore[underscored(n)] = lin;
            }
        }
    }
    std::map<LinearImpl*, std::string> path_of;
    for (auto& [p, lin] : ours) path_of[lin] = p;
    const std::string prefix = lycoris_prefix(file->metadata());

    auto resolve = [&](const std::string& m) -> LinearImpl* {
        auto find = [](const std::map<std::string, LinearImpl*>& idx, const std::string& k) -> LinearImpl* {
            auto it = idx.find(k);
            return it == idx.end() ? nullptr : it->second;
        };
        if (m == "transformer" || m == "diffusion_model") return find(ours, "");  // root itself is the Linear
        if (starts_with(m, "transformer.")) return find(ours, m.substr(12));
        std::string rest = m;
        if (starts_with(rest, "model.diffusion_model.")) rest = rest.substr(6);
        if (starts_with(rest, "diffusion_model.")) {
            rest = rest.substr(16);
            if (LinearImpl* l = find(native, rest)) return l;
            return find(ours, rest);  // SimpleTuner's comfyui files keep the diffusers module names
        }
        if (starts_with(rest, "lycoris_")) return find(underscore, rest.substr(8));  // LyCORIS's layout
        if (starts_with(rest, prefix + "_")) return find(underscore, rest.substr(prefix.size() + 1));
        if (starts_with(rest, "lora_unet_")) {
            rest = rest.substr(10);
            while (!rest.empty() && rest[0] == '_') rest.erase(0, 1);  // Wan-Fun `lora_unet__blocks_...`
            return find(underscore, rest);
        }
        return find(ours, rest);
    };

    std::map<LinearImpl*, Entry> entries;
    std::vector<std::string> unknown, unmatched;
    for (const auto& info : file->infos()) {
        const std::string& key = info.name;
        std::optional<Role> role;
        std::string module;
        for (const auto& [suffix, r] : role_suffixes()) {
            if (ends_with(key, suffix)) {
                role = r;
                module = key.substr(0, key.size() - suffix.size());
                break;
            }
        }
        if (!role) {
            unknown.push_back(key);
            continue;
        }
        LinearImpl* lin = resolve(module);
        if (lin == nullptr) {
            unmatched.push_back(key);
            continue;
        }
        Entry& e = entries[lin];
        if (!e.file_module.empty() && e.file_module != module) {
            fail(kComponent, "load", "{}: '{}' and '{}' both name module '{}'", fname, e.file_module, module,
                 path_of[lin]);
        }
        e.file_module = module;
        if (*role == Role::lycoris) {
            e.lycoris[key.substr(module.size() + 1)] = load_finite(*file, key);
        } else if (*role == Role::a) {
            e.a_key = key;
            e.a = load_finite(*file, key);
        } else if (*role == Role::b) {
            e.b_key = key;
            e.b = load_finite(*file, key);
        } else {
            const at::Tensor t = load_finite(*file, key);
            if (t.numel() != 1)
                fail(kComponent, "load", "{}: '{}' must be a scalar, got shape {}", fname, key,
                     shape_str(t.sizes()));
            e.alpha = t.to(at::kDouble).item<double>();
        }
    }
    if (!unknown.empty()) {
        fail(kComponent, "load",
             "{}: {} tensors are not LoRA tensors (lora_A/lora_B/lora_down/lora_up/alpha, LyCORIS "
             "lokr_*/hada_*): {}",
             fname, unknown.size(), first_offenders(unknown));
    }
    if (!unmatched.empty()) {
        fail(kComponent, "load", "{}: {} LoRA tensors name no Linear module of the model: {}", fname,
             unmatched.size(), first_offenders(unmatched));
    }
    if (entries.empty()) fail(kComponent, "load", "{}: holds no LoRA tensor", fname);

    const std::optional<double> meta_alpha = metadata_alpha(file->metadata(), fname);
    // Every module is checked before any is changed, so a refused file leaves the model as it was.
    struct Planned {
        LinearImpl* lin;
        const Entry* entry;
        int64_t rank;
        double alpha;
        std::shared_ptr<LycorisAdapterImpl> lycoris;
    };
    std::vector<Planned> plan;
    for (auto& [lin, e] : entries) {
        if (!e.lycoris.empty()) {
            if (e.a.defined() || e.b.defined())
                fail(kComponent, "load", "{}: module '{}' has both LoRA and LyCORIS tensors", fname,
                     e.file_module);
            const auto& o = lin->options();
            const std::string what = fmt::format("{}: module '{}'", fname, e.file_module);
            auto adapter = LycorisAdapterImpl::from_tensors(o.in, o.out, e.lycoris, e.alpha, what);
            if (!merge && lin->has_lora())
                fail(kComponent, "load", "{}: the model carries a LoRA adapter there, the file a LyCORIS one",
                     what);
            if (merge) {
                const at::Tensor d = adapter->delta_weight().detach().to(at::kDouble).abs().max();
                if (!(std::fabs(strength) * d.item<double>() <= dtype_max(lin->weight.scalar_type())))
                    fail(kComponent, "load", "{}: merging could overflow its {} weights", what,
                         c10::toString(lin->weight.scalar_type()));
            }
            plan.push_back({lin, &e, adapter->options().dim, adapter->saved_alpha(), adapter});
            continue;
        }
        if (!e.a.defined() || !e.b.defined()) {
            fail(kComponent, "load", "{}: module '{}' lacks its {} matrix", fname, e.file_module,
                 e.a.defined() ? "up (lora_B / lora_up)" : "down (lora_A / lora_down)");
        }
        const auto& o = lin->options();
        const int64_t rank = e.a.dim() == 2 ? e.a.size(0) : -1;
        if (e.a.dim() != 2 || e.a.size(1) != o.in) {
            fail(kComponent, "load", "{}: '{}' has shape {}, expected [rank, {}] for module '{}'", fname,
                 e.a_key, shape_str(e.a.sizes()), o.in, path_of[lin]);
        }
        if (e.b.dim() != 2 || e.b.size(0) != o.out || e.b.size(1) != rank) {
            fail(kComponent, "load", "{}: '{}' has shape {}, expected [{}, {}] for module '{}'", fname,
                 e.b_key, shape_str(e.b.sizes()), o.out, rank, path_of[lin]);
        }
        // Rank 0 passes both shape checks but scales by alpha / 0 (a merge would write NaN weights).
        if (rank == 0) {
            fail(kComponent, "load", "{}: '{}' has shape {}: rank 0, expected rank >= 1 for module '{}'",
                 fname, e.a_key, shape_str(e.a.sizes()), path_of[lin]);
        }
        const double alpha = e.alpha ? *e.alpha : (meta_alpha ? *meta_alpha : static_cast<double>(rank));
        if (!merge && lin->has_lycoris() && lin->lycoris()->algo() == "locon") {
            // A LoCon adapter (lora_type lycoris) is a LoRA file's pair: it fills that adapter.
            const std::string what = fmt::format("{}: module '{}'", fname, e.file_module);
            auto adapter = LycorisAdapterImpl::from_tensors(
                o.in, o.out, {{"lora_down", e.a}, {"lora_up", e.b}}, alpha, what);
            plan.push_back({lin, &e, rank, alpha, adapter});
            continue;
        }
        if (!merge && lin->has_lora() && lin->lora_rank() != rank) {
            fail(kComponent, "load",
                 "{}: module '{}' already carries a rank-{} adapter, the file's is rank {}", fname,
                 path_of[lin], lin->lora_rank(), rank);
        }
        if (merge)
            check_merge_range(fname, path_of[lin], e,
                              lin->weight.scalar_type() == at::kChar ? at::kFloat : lin->weight.scalar_type(),
                              strength * alpha / rank);
        plan.push_back({lin, &e, rank, alpha});
    }
    at::NoGradGuard no_grad;
    std::vector<std::string> loaded;
    for (const Planned& p : plan) {
        LinearImpl* lin = p.lin;
        const Entry& e = *p.entry;
        // A stored base weight is never written in place: merge into a dense copy (int8 -> fp32).
        if (merge && lin->base_stored())
            lin->materialize(lin->weight.scalar_type() == at::kChar ? at::kFloat : lin->weight.scalar_type());
        if (p.lycoris) {
            if (merge) {
                const at::Tensor delta = p.lycoris->delta_weight().detach().to(at::kFloat) * strength;
                lin->weight.add_(delta.to(lin->weight.device(), lin->weight.scalar_type()));
            } else {
                if (lin->lora_merged()) lin->unmerge_lora();
                lin->set_lycoris(p.lycoris, fmt::format("{}: module '{}'", fname, e.file_module));
                lin->set_lora_scale(strength);
            }
            loaded.push_back(path_of[lin]);
            continue;
        }
        if (merge) {
            const at::Tensor delta =
                at::matmul(e.b.to(at::kFloat), e.a.to(at::kFloat)) * (strength * p.alpha / p.rank);
            lin->weight.add_(delta.to(lin->weight.device(), lin->weight.scalar_type()));
        } else {
            if (lin->has_lora()) {
                lin->unmerge_lora();
                lin->set_lora_alpha(p.alpha);
            } else {
                LoraConfig c;
                c.rank = p.rank;
                c.alpha = p.alpha;
                lin->add_lora(c);
            }
            lin->lora_A->weight.copy_(e.a);
            lin->lora_B->weight.copy_(e.b);
            lin->set_lora_scale(strength);
        }
        loaded.push_back(path_of[lin]);
    }
    std::sort(loaded.begin(), loaded.end());
    st::log::info(kComponent, "{} LoRA {} ({} modules, strength {})", merge ? "merged" : "attached", fname,
                  loaded.size(), strength);
    return loaded;
}

}  // namespace st::sdk
