// Strict weight loading, after llama.cpp's `llama_model_loader` (src/llama-model-loader.cpp): every
// target is found by canonical name with its shape checked, optional targets are declared, and nothing
// is left over. All problems are collected first and reported together, before any tensor is copied,
// so a failed load never leaves a module half-overwritten.
#include "st/weights.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <set>

#include "st/error.h"
#include "st/log.h"
#include "st/lora.h"

namespace st::sdk {

namespace {

std::string shape_str(at::IntArrayRef shape) {
    return fmt::format("[{}]", fmt::join(shape, ", "));
}

// "a, b, c ... and 7 more"
std::string first_offenders(const std::vector<std::string>& items, size_t max_listed) {
    std::string out;
    const size_t n = std::min(items.size(), std::max<size_t>(max_listed, 1));
    for (size_t k = 0; k < n; ++k) out += fmt::format("\n    {}", items[k]);
    if (items.size() > n) out += fmt::format("\n    ... and {} more", items.size() - n);
    return out;
}

}  // namespace

namespace {
struct Adopt {
    LinearImpl* linear;
    BasePrecision precision;
};

LoadReport load_impl(std::map<std::string, at::Tensor> targets, const TensorSource& source,
                     const LoadOptions& options, const std::map<std::string, Adopt>& adopt) {
    struct Planned {
        std::string source_name;
        std::string dtype;
    };
    std::map<std::string, Planned> plan;  // target name -> where it comes from
    std::vector<std::string> unexpected, wrong_shape, duplicates;
    std::set<std::string> wrong_targets;  // reported as wrong-shape, so not also as missing
    size_t ignored = 0;

    for (const TensorInfo& info : source.infos()) {
        std::optional<std::string> mapped = options.key_map ? options.key_map(info.name) : info.name;
        if (!mapped) {
            ++ignored;
            continue;
        }
        const std::string label =
            *mapped == info.name ? info.name : fmt::format("{} (-> {})", info.name, *mapped);
        const auto target = targets.find(*mapped);
        if (target == targets.end()) {
            unexpected.push_back(fmt::format("{} {} {}", label, info.dtype, shape_str(info.shape)));
            continue;
        }
        if (const auto seen = plan.find(*mapped); seen != plan.end()) {
            duplicates.push_back(
                fmt::format("{} and {} both map to {}", seen->second.source_name, info.name, *mapped));
            continue;
        }
        if (!target->second.defined()) {
            wrong_shape.push_back(fmt::format("{}: target tensor is undefined", label));
            wrong_targets.insert(*mapped);
            continue;
        }
        if (target->second.sizes() != at::IntArrayRef(info.shape)) {
            wrong_shape.push_back(fmt::format("{}: expected {} got {}", label,
                                              shape_str(target->second.sizes()), shape_str(info.shape)));
            wrong_targets.insert(*mapped);
            continue;
        }
        plan.emplace(*mapped, Planned{info.name, info.dtype});
    }
    std::vector<std::string> missing;
    for (const auto& [name, tensor] : targets) {
        if (plan.count(name) == 0 && wrong_targets.count(name) == 0 &&
            options.optional_targets.count(name) == 0) {
            missing.push_back(tensor.defined() ? fmt::format("{} {}", name, shape_str(tensor.sizes()))
                                               : name);
        }
    }

    if (!missing.empty() || !unexpected.empty() || !wrong_shape.empty() || !duplicates.empty()) {
        std::string message =
            fmt::format("'{}' does not match the model ({} targets, {} matched):", source.describe(),
                        targets.size(), plan.size());
        if (!missing.empty()) {
            message += fmt::format("\n  {} missing (expected by the model, absent from the file):{}",
                                   missing.size(), first_offenders(missing, options.max_listed));
        }
        if (!unexpected.empty()) {
            message += fmt::format("\n  {} unexpected (in the file, unknown to the model):{}",
                                   unexpected.size(), first_offenders(unexpected, options.max_listed));
        }
        if (!wrong_shape.empty()) {
            message += fmt::format("\n  {} wrong shape:{}", wrong_shape.size(),
                                   first_offenders(wrong_shape, options.max_listed));
        }
        if (!duplicates.empty()) {
            message += fmt::format("\n  {} duplicate (several file tensors map to one target):{}",
                                   duplicates.size(), first_offenders(duplicates, options.max_listed));
        }
        throw Error(options.component, "load", std::move(message));
    }

    LoadReport report;
    std::map<std::string, size_t> target_dtypes;
    {
        at::NoGradGuard no_grad;
        for (const auto& [target_name, planned] : plan) {
            at::Tensor& target = targets.at(target_name);
            if (const auto a = adopt.find(target_name); a != adopt.end()) {
                // A frozen base weight in stored form: the file's tensor itself (or its int8/bf16 form).
                a->second.linear->set_base_weight(source.view(planned.source_name), a->second.precision);
                source.release(planned.source_name);  // a mapped file's pages: read back when used
                ++report.loaded;
                ++report.source_dtypes[planned.dtype];
                ++target_dtypes[fmt::format("{} (stored)",
                                            a->second.linear->weight.scalar_type() == at::kChar
                                                ? "int8"
                                                : c10::toString(a->second.linear->weight.scalar_type()))];
                continue;
            }
            // copy_ converts dtype and moves to the target's device; the target keeps its storage, so
            // parameters and buffers of a module are overwritten in place.
            target.copy_(source.view(planned.source_name));
            source.release(planned.source_name);  // peak memory while loading ~ the final footprint
            ++report.loaded;
            ++report.source_dtypes[planned.dtype];
            ++target_dtypes[c10::toString(target.scalar_type())];
        }
    }
    std::vector<std::string> from, to;
    for (const auto& [dtype, count] : report.source_dtypes)
        from.push_back(fmt::format("{} x{}", dtype, count));
    for (const auto& [dtype, count] : target_dtypes) to.push_back(fmt::format("{} x{}", dtype, count));
    log::info(options.component, "loaded {} tensors from '{}' ({} -> {}){}", report.loaded, source.describe(),
              fmt::join(from, ", "), fmt::join(to, ", "),
              ignored > 0 ? fmt::format(", {} ignored by the key map", ignored) : std::string());
    return report;
}

}  // namespace

std::map<std::string, at::Tensor> named_tensors(const torch::nn::Module& module) {
    std::map<std::string, at::Tensor> out;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace(item.key(), item.value());
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
        if (item.value().defined()) out.emplace(item.key(), item.value());
    }
    return out;
}

LoadReport load_strict(std::map<std::string, at::Tensor> targets, const TensorSource& source,
                       const LoadOptions& options) {
    return load_impl(std::move(targets), source, options, {});
}

LoadReport load_strict(torch::nn::Module& module, const TensorSource& source, const LoadOptions& options) {
    std::map<std::string, Adopt> adopt;
    auto targets = named_tensors(module);
    if (options.base_precision) {
        for (const auto& [path, lin] : linear_modules(module)) {
            const BasePrecision p = options.base_precision(path, lin->options().in, lin->options().out);
            if (p == BasePrecision::compute) continue;
            adopt[path.empty() ? "weight" : path + ".weight"] = {lin, p};
        }
    }
    return load_impl(std::move(targets), source, options, adopt);
}

}  // namespace st::sdk
