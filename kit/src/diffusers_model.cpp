// Locating, inspecting, loading and saving diffusers-style models (see diffusers_model.h).
#include "st/kit/diffusers_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/log.h"
#include "st/lora.h"
#include "st/model_path.h"
#include "st/text.h"
#include "st/weights.h"

namespace st::kit {

namespace fs = std::filesystem;

bool looks_like_hub_id(const std::string& s) {
    return st::sdk::looks_like_hub_id(s);
}

void missing_model_path(const fs::path& path, const std::string& key, const std::string& component) {
    st::sdk::missing_model_path(path, key, component, "load");
}

std::vector<std::string> list_dir(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        out.push_back(e.path().filename().string() + (e.is_directory() ? "/" : ""));
    std::sort(out.begin(), out.end());
    return out;
}

namespace {

// The weights inside a network folder: <base>.safetensors.index.json, <base>.safetensors, else the one
// *.safetensors(.index.json) there is.
fs::path pick_weights(const fs::path& dir, const ModelQuery& q) {
    const std::string base =
        q.variant.empty() ? "diffusion_pytorch_model" : "diffusion_pytorch_model." + q.variant;
    for (const auto& name : {base + ".safetensors.index.json", base + ".safetensors"})
        if (fs::exists(dir / name)) return dir / name;
    if (!q.variant.empty())
        fail(q.component, "load", "'{}' has no {}.safetensors[.index.json] (variant '{}'); it contains: {}",
             dir.string(), base, q.variant, fmt::join(list_dir(dir), ", "));
    std::vector<fs::path> candidates;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().ends_with(".safetensors.index.json")) candidates.push_back(e.path());
    if (candidates.empty())
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".safetensors") candidates.push_back(e.path());
    if (candidates.size() == 1) return candidates[0];
    if (candidates.empty())
        fail(q.component, "load",
             "'{}' is not a {} folder: no model_index.json, no diffusion_pytorch_model.safetensors and no "
             "*.safetensors weights (it contains: {})",
             dir.string(), q.what, fmt::join(list_dir(dir), ", "));
    fail(q.component, "load", "'{}' holds several checkpoints ({}); pass the file itself", dir.string(),
         fmt::join(list_dir(dir), ", "));
}

}  // namespace

ModelLocation locate_model(const fs::path& path, const ModelQuery& q) {
    const std::string subfolder = q.subfolder == "none" ? "" : q.subfolder;
    if (!fs::exists(path)) missing_model_path(path, "model path", q.component);
    ModelLocation loc;
    if (fs::is_regular_file(path)) {
        // A single file (ComfyUI/original or diffusers) or a sharded index.
        loc.weights = path;
        if (path.filename().string().rfind("diffusion_pytorch_model", 0) == 0 &&
            fs::exists(path.parent_path() / "config.json"))
            loc.config_json = path.parent_path() / "config.json";
        return loc;
    }
    fs::path dir = path;
    if (fs::exists(path / "model_index.json")) {
        loc.model_index = path / "model_index.json";
        const auto index = sdk::read_json_file(*loc.model_index, q.component, "load");
        const std::string cls = index.value("_class_name", "");
        if (!q.pipeline_prefix.empty() && cls.rfind(q.pipeline_prefix, 0) != 0)
            fail(q.component, "load",
                 "'{}' is not a {} pipeline folder: model_index.json has _class_name '{}'", path.string(),
                 q.pipeline_prefix, cls);
        const std::string sub = subfolder.empty() ? "transformer" : subfolder;
        if (!fs::is_directory(path / sub))
            fail(q.component, "load", "{} pipeline folder '{}' has no '{}/' subfolder (it contains: {}){}",
                 q.pipeline_prefix.empty() ? std::string("the") : q.pipeline_prefix, path.string(), sub,
                 fmt::join(list_dir(path), ", "),
                 index.contains(sub) ? "; model_index.json lists it, so the download is incomplete" : "");
        dir = path / sub;
        loc.subfolder = sub;
    } else if (!subfolder.empty() && fs::is_directory(path / subfolder)) {
        dir = path / subfolder;
        loc.subfolder = subfolder;
    } else if (!subfolder.empty() && !fs::exists(path / "config.json")) {
        fail(q.component, "load",
             "'{}' has neither model_index.json (a diffusers pipeline) nor a '{}/' subfolder nor a "
             "config.json "
             "(a {} folder); it contains: {}",
             path.string(), subfolder, q.what, fmt::join(list_dir(path), ", "));
    }
    if (fs::exists(dir / "config.json")) {
        const auto cfg = sdk::read_json_file(dir / "config.json", q.component, "load");
        const std::string cls = cfg.value("_class_name", q.config_class);
        if (!q.config_class.empty() && cls != q.config_class)
            fail(q.component, "load", "'{}' is not a {}: _class_name '{}' (expected {})",
                 (dir / "config.json").string(), q.what, cls, q.config_class);
        loc.config_json = dir / "config.json";
    }
    loc.weights = pick_weights(dir, q);
    return loc;
}

std::shared_ptr<sdk::TensorSource> open_model_weights(const ModelLocation& location,
                                                      const std::string& what) {
    try {
        if (location.weights.string().ends_with(".index.json"))
            return sdk::ShardedSafetensors::open(location.weights);
        return sdk::SafetensorsFile::open(location.weights);
    } catch (const Error& e) {
        throw e.with_context(
            fmt::format("while opening the {} weights '{}'", what, location.weights.string()));
    }
}

std::string CheckpointFacts::summary(const std::string& config_line) const {
    std::vector<std::string> d;
    for (const auto& [name, n] : dtypes) d.push_back(fmt::format("{} x{}", name, n));
    return fmt::format("{} ({} layout{}, {} tensors, {}; {})", variant, key_layout_name(layout),
                       prefix.empty() ? "" : fmt::format(", prefix '{}'", prefix), tensor_count,
                       fmt::join(d, ", "), config_line);
}

void CheckpointFacts::count(const sdk::TensorSource& source) {
    for (const auto& ti : source.infos()) {
        ++dtypes[ti.dtype];
        ++tensor_count;
    }
}

std::string CheckpointFacts::to_ours(const std::string& file_key, const KeyMapTable& table) const {
    std::string name = file_key;
    if (!prefix.empty() && name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    if (layout == KeyLayout::original) return table.tensor(name, true).value_or(file_key);
    return name;
}

std::string CheckpointFacts::to_file(const std::string& ours, const KeyMapTable& table) const {
    const std::string name = layout == KeyLayout::original ? table.tensor(ours, false).value_or(ours) : ours;
    return prefix + name;
}

void detect_layout(const sdk::TensorSource& source, const std::vector<std::string>& prefixes,
                   const std::vector<std::string>& diffusers_markers,
                   const std::vector<std::string>& original_markers, const std::string& component,
                   const std::string& what, CheckpointFacts* facts) {
    std::vector<std::string> candidates{""};
    for (const auto& p : prefixes) candidates.push_back(p);
    for (const auto& p : candidates) {
        for (const auto& m : diffusers_markers)
            if (source.contains(p + m)) {
                facts->layout = KeyLayout::diffusers;
                facts->prefix = p;
                return;
            }
        for (const auto& m : original_markers)
            if (source.contains(p + m)) {
                facts->layout = KeyLayout::original;
                facts->prefix = p;
                return;
            }
    }
    const auto infos = source.infos();
    std::vector<std::string> first;
    for (size_t i = 0; i < infos.size() && i < 5; ++i) first.push_back(infos[i].name);
    fail(
        component, "detect",
        "{} is not a {} checkpoint: neither {} (diffusers) nor {} (original) found, with or without a prefix "
        "({}) ({} tensors; first: {})",
        source.describe(), what, fmt::join(diffusers_markers, " / "), fmt::join(original_markers, " / "),
        fmt::join(prefixes, ", "), infos.size(), fmt::join(first, ", "));
}

ShapeTable::ShapeTable(const sdk::TensorSource& source, const CheckpointFacts& facts,
                       const KeyMapTable& table, std::string component, std::string what,
                       std::string mismatch)
    : facts_(facts),
      table_(table),
      component_(std::move(component)),
      what_(std::move(what)),
      mismatch_(std::move(mismatch)),
      describe_(source.describe()) {
    for (const auto& ti : source.infos()) shapes_[facts_.to_ours(ti.name, table_)] = ti.shape;
}

const std::vector<int64_t>& ShapeTable::need(const std::string& name, size_t rank) const {
    auto it = shapes_.find(name);
    if (it == shapes_.end())
        fail(component_, "detect", "{}: {} tensor '{}' is missing ({} layout)", describe_, what_,
             facts_.to_file(name, table_), key_layout_name(facts_.layout));
    if (rank > 0 && it->second.size() != rank)
        fail(component_, "detect", "{}: '{}' has shape {}, expected {} dimensions", describe_, name,
             sdk::shape_str(it->second), rank);
    return it->second;
}

void ShapeTable::expect(const std::string& name, const std::vector<int64_t>& shape,
                        const std::string& why) const {
    const auto& s = need(name);
    if (s != shape)
        fail(component_, "detect", "{}: '{}' has shape {} but {} needs {}: {}", describe_, name,
             sdk::shape_str(s), why, sdk::shape_str(shape), mismatch_);
}

int64_t ShapeTable::count_indexed(const std::string& head) const {
    std::set<int64_t> idx;
    for (const auto& [name, shape] : shapes_) {
        if (name.rfind(head, 0) != 0) continue;
        const size_t end = name.find('.', head.size());
        try {
            idx.insert(std::stoll(name.substr(head.size(), end - head.size())));
        } catch (const std::exception&) {
        }
    }
    const int64_t n = static_cast<int64_t>(idx.size());
    if (n > 0 && *idx.rbegin() != n - 1)
        fail(component_, "detect", "{}: '{}N' indices are not contiguous ({} found, highest {})", describe_,
             head, n, *idx.rbegin());
    return n;
}

int64_t guess_head_dim(int64_t dim) {
    for (int64_t d : {128, 64, 32, 16, 12, 8})
        if (dim % d == 0) return d;
    return dim;
}

void load_weights(torch::nn::Module& module, const sdk::TensorSource& source, const CheckpointFacts& facts,
                  const KeyMapTable& table, const std::string& component, const std::string& what,
                  const sdk::BaseWeightPlan& base) {
    sdk::LoadOptions lo;
    lo.component = component;
    lo.key_map = [&facts, &table](const std::string& name) -> std::optional<std::string> {
        return facts.to_ours(name, table);
    };
    if (base.precision != sdk::BasePrecision::compute)
        lo.base_precision = [base](const std::string& path, int64_t in, int64_t out) {
            return sdk::base_precision_for(base, path, in, out);
        };
    try {
        sdk::load_strict(module, source, lo);
    } catch (const Error& e) {
        throw e.with_context(
            fmt::format("while loading the {} {} from {}", what, facts.variant, source.describe()));
    }
}

std::string describe_base_weights(torch::nn::Module& module, const sdk::BaseWeightPlan& base) {
    if (base.precision == sdk::BasePrecision::compute) return "";
    std::vector<std::string> parts;
    for (const auto& [form, n] : sdk::count_base_precisions(module))
        parts.push_back(fmt::format("{} {}", n, form));
    return fmt::format(", Linear base weights ({}{}): {}",
                       base.source_value.empty() ? "" : base.source_value + " -> ",
                       sdk::base_precision_name(base.precision), fmt::join(parts, ", "));
}

void save_model(const torch::nn::Module& module, const fs::path& dir, const nlohmann::json& config,
                at::ScalarType dtype, const std::function<bool(const std::string&)>& keep_fp32,
                const std::string& component) {
    fs::create_directories(dir);
    sdk::TensorMap tensors;
    torch::NoGradGuard no_grad;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
        const at::ScalarType t = keep_fp32 && keep_fp32(item.key()) ? at::kFloat : dtype;
        tensors[item.key()] = item.value().detach().to(at::kCPU).to(t).contiguous();
    }
    sdk::save_safetensors(dir / "diffusion_pytorch_model.safetensors", tensors, {{"format", "pt"}});
    try {
        sdk::write_file_atomic(dir / "config.json", config.dump(2) + "\n");
    } catch (const std::exception& e) {
        fail(component, "save", "cannot write '{}': {}", (dir / "config.json").string(), e.what());
    }
}

namespace {

uint64_t fnv1a(uint64_t h, const std::string& s) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

}  // namespace

std::string component_fingerprint(const fs::path& path) {
    if (path.empty()) return "none";
    uint64_t h = 1469598103934665603ull;
    std::vector<fs::path> files;
    if (fs::is_regular_file(path)) {
        files.push_back(path);
    } else if (fs::is_directory(path)) {
        for (const auto& e : fs::directory_iterator(path))
            if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        std::error_code ec;
        const auto size = fs::file_size(f, ec);
        const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
        h = fnv1a(h, fmt::format("{}|{}|{};", f.filename().string(), size, mtime));
        if (f.filename() == "config.json") h = fnv1a(h, sdk::read_file(f));
    }
    return fmt::format("{:016x}", h);
}

namespace {
// The golden fixtures' scheme for one parameter (see randomize_parameters), drawn in float32.
at::Tensor random_parameter(const std::string& name, at::IntArrayRef sizes, at::Generator& gen) {
    auto ends_with = [](const std::string& s, const std::string& suffix) {
        return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    at::Tensor r = at::randn(sizes, gen, at::TensorOptions().dtype(at::kFloat));
    const bool is_norm = name.find("norm") != std::string::npos || name.find("gamma") != std::string::npos;
    if (ends_with(name, "scale_shift_table") || ends_with(name, "pos_embed")) return r * 0.3;
    if (ends_with(name, "bias")) return r * 0.1;
    if (is_norm && sizes.size() <= 1) return 1.0 + r * 0.1;
    if (sizes.size() >= 2) return r / std::sqrt(static_cast<double>(r.numel() / sizes[0]));
    return r * 0.1;
}
}  // namespace

void randomize_parameters(torch::nn::Module& module, uint64_t seed) {
    torch::NoGradGuard no_grad;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (auto& item : module.named_parameters(/*recurse=*/true))
        item.value().copy_(
            random_parameter(item.key(), item.value().sizes(), gen).to(item.value().scalar_type()));
}

void write_random_model(const torch::nn::Module& module, const fs::path& dir, const nlohmann::json& config,
                        at::ScalarType dtype, const std::function<bool(const std::string&)>& keep_fp32,
                        uint64_t seed, uint64_t shard_bytes, const std::string& component) {
    torch::NoGradGuard no_grad;
    fs::create_directories(dir);
    struct Entry {
        std::string name;
        std::vector<int64_t> sizes;
        at::ScalarType type;
        uint64_t bytes;
    };
    std::vector<std::vector<Entry>> shards(1);
    uint64_t in_shard = 0, total = 0;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
        const at::ScalarType t = keep_fp32 && keep_fp32(item.key()) ? at::kFloat : dtype;
        const uint64_t bytes = static_cast<uint64_t>(item.value().numel()) * c10::elementSize(t);
        if (in_shard > 0 && in_shard + bytes > shard_bytes) {
            shards.emplace_back();
            in_shard = 0;
        }
        shards.back().push_back({item.key(), item.value().sizes().vec(), t, bytes});
        in_shard += bytes;
        total += bytes;
    }
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t k = 0; k < shards.size(); ++k) {
        const std::string file =
            shards.size() == 1
                ? std::string("diffusion_pytorch_model.safetensors")
                : fmt::format("diffusion_pytorch_model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
        sdk::TensorMap tensors;
        for (const Entry& e : shards[k]) {
            tensors[e.name] = random_parameter(e.name, e.sizes, gen).to(e.type);
            weight_map[e.name] = file;
        }
        sdk::save_safetensors(dir / file, tensors, {{"format", "pt"}});
        log::info(component, "make-model: wrote {} ({} tensors, shard {}/{})", (dir / file).string(),
                  tensors.size(), k + 1, shards.size());
    }
    if (shards.size() > 1)
        sdk::write_file_atomic(
            dir / "diffusion_pytorch_model.safetensors.index.json",
            nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n");
    try {
        sdk::write_file_atomic(dir / "config.json", config.dump(2) + "\n");
    } catch (const std::exception& e) {
        fail(component, "save", "cannot write '{}': {}", (dir / "config.json").string(), e.what());
    }
}

}  // namespace st::kit
