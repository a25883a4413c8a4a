#include "run/data_setup.h"

#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "plugins/guard.h"
#include "st/error.h"
#include "st/files.h"
#include "st/json_file.h"
#include "st/log.h"

namespace st::host {
namespace fs = std::filesystem;

std::vector<OpenedBackend> open_data_backends(
    CommandContext& ctx, const RunSetup& setup, const std::vector<sdk::MediaKind>& model_media,
    const std::vector<std::shared_ptr<sdk::SampleFeatureEncoder>>& features) {
    auto path_opt = setup.config.opt_string("data_backend_config");
    if (!path_opt)
        fail("host.data", "open",
             "data_backend_config is not set: give the path of your multidatabackend.json in {} "
             "or with --data_backend_config",
             setup.config_path.string());
    fs::path path = *path_opt;
    if (path.is_relative() && !fs::exists(path)) path = setup.config_path.parent_path() / path;
    nlohmann::json entries;
    try {
        const std::string text = sdk::read_file(path);
        sdk::check_json_limits(text, path.string(), "host.data", "open");
        entries = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        fail("host.data", "open", "{}: invalid JSON: {}", path.string(), e.what());
    }
    if (!entries.is_array())
        fail("host.data", "open", "{}: expected a JSON list of dataset entries, found {}", path.string(),
             entries.type_name());
    std::map<std::string, nlohmann::json> by_type;
    for (size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        if (!e.is_object())
            fail("host.data", "open", "{}: entry {} is {} instead of an object", path.string(), i,
                 e.type_name());
        std::string type = "local";
        if (e.contains("type")) {
            if (!e["type"].is_string())
                fail("host.data", "open", "{}: entry {}: 'type' must be a string", path.string(), i);
            type = e["type"].get<std::string>();
        }
        by_type[type].push_back(e);
    }
    std::vector<OpenedBackend> out;
    for (auto& [type, list] : by_type) {
        const auto* comp = ctx.plugins().find_latest("data", type);
        if (!comp) {
            std::vector<std::string> known;
            for (const auto* c : ctx.plugins().of_kind("data")) known.push_back(c->name);
            fail("host.data", "open",
                 "{}: dataset type '{}' is not provided by any loaded plugin; available: {}", path.string(),
                 type, known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", ")));
        }
        OpenedBackend b;
        b.component = comp;
        b.entries = list.size();
        b.backend = call_plugin(*comp, "create", [&] { return comp->data_backend(); });
        sdk::DataOpenRequest req;
        req.entries = list;
        req.config_dir = fs::absolute(path).parent_path();
        req.output_dir = setup.output_dir;
        req.model_family = setup.model->name;
        req.model_media = model_media;
        req.sample_features = features;
        req.config = setup.config;
        req.seed = static_cast<uint64_t>(setup.config.opt_int("seed").value_or(0));
        call_plugin(*comp, "open", [&] { b.backend->open(req); });
        log::info("host.data", "{} dataset entr{} of type '{}' opened with {}", list.size(),
                  list.size() == 1 ? "y" : "ies", type, comp->id);
        out.push_back(std::move(b));
    }
    return out;
}

void prepare_data_backends(std::vector<OpenedBackend>& backends, sdk::Encoders* encoders) {
    for (auto& b : backends) {
        b.summary = call_plugin(*b.component, "prepare", [&] { return b.backend->prepare(encoders); });
        log::info("host.data", "{}: {} samples ready, {} skipped", b.component->id, b.summary.samples,
                  b.summary.skipped);
    }
}

std::vector<std::string> empty_datasets(const std::vector<OpenedBackend>& backends) {
    std::vector<std::string> out;
    int64_t media = 0, samples = 0;
    for (const auto& b : backends) {
        samples += b.summary.samples;
        const auto& d = b.summary.details;
        if (!d.contains("datasets") || !d["datasets"].is_object()) continue;
        for (const auto& [id, ds] : d["datasets"].items()) {
            const std::string type = ds.value("dataset_type", "");
            if ((type != "video" && type != "image") || ds.value("disabled", false)) continue;
            ++media;
            if (ds.value("samples", int64_t{1}) != 0) continue;
            std::string first;
            if (d.contains("skipped") && d["skipped"].is_array())
                for (const auto& r : d["skipped"])
                    if (r.value("dataset", "") == id && first.empty())
                        first = fmt::format("; first: {}: {}", r.value("file", "?"), r.value("reason", "?"));
            out.push_back(fmt::format(
                "dataset '{}' ({}{}) yields no usable sample: {} file(s) skipped{} "
                "(disable it, or fix its path, size limits or frame counts)",
                id, type, ds.value("eval", false) ? ", eval" : "", ds.value("skipped", int64_t{0}),
                first.empty() ? "; no media files were found in it" : first));
        }
    }
    // Every media dataset disabled (or none configured): nothing to train on either.
    if (media == 0 && samples == 0)
        out.push_back(
            "no enabled video or image dataset yields a sample: every one in data_backend_config is disabled "
            "or none is configured");
    return out;
}

std::string format_prepare_summary(const std::vector<OpenedBackend>& backends) {
    std::string s;
    for (const auto& b : backends) {
        s += fmt::format("{}: {} samples, {} skipped\n", b.component->id, b.summary.samples,
                         b.summary.skipped);
        const auto& d = b.summary.details;
        if (d.contains("datasets") && d["datasets"].is_object()) {
            for (const auto& [id, ds] : d["datasets"].items()) {
                s += fmt::format("  dataset {}:", id);
                for (const auto& [k, v] : ds.items())
                    if (!v.is_object() && !v.is_array()) s += fmt::format(" {}={}", k, v.dump());
                s += "\n";
                if (ds.contains("buckets") && ds["buckets"].is_object())
                    for (const auto& [bk, n] : ds["buckets"].items())
                        s += fmt::format("    bucket {}: {} samples\n", bk, n.dump());
                if (ds.contains("audio")) s += fmt::format("    audio: {}\n", ds["audio"].dump());
            }
        }
        if (d.contains("skipped") && d["skipped"].is_array() && !d["skipped"].empty()) {
            s += "  skipped files:\n";
            for (const auto& r : d["skipped"])
                s += fmt::format("    {} ({}): {}\n", r.value("file", "?"), r.value("dataset", "?"),
                                 r.value("reason", "?"));
        }
    }
    return s;
}

}  // namespace st::host
