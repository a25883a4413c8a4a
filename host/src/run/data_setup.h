// Opening the data backends of a run from its multidatabackend.json and preparing them (discovery,
// buckets, caches). Used by `st-host prepare` and by training, which runs the same step first.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "run/run_setup.h"
#include "st/data_backend.h"

namespace st::host {

struct OpenedBackend {
    const ComponentEntry* component = nullptr;
    std::unique_ptr<sdk::DataBackend> backend;
    size_t entries = 0;
    sdk::PrepareSummary summary;
};

/// Reads data_backend_config, groups its entries by `type` (default "local") and opens one
/// `data.<type>` component per group. Throws st::Error naming the file for a missing/invalid file
/// or a type no loaded plugin provides. `model_media`: the model's Encoders::sample_media();
/// `features`: the regularizers' per-sample features to cache with every clip.
std::vector<OpenedBackend> open_data_backends(
    CommandContext& ctx, const RunSetup& setup, const std::vector<sdk::MediaKind>& model_media,
    const std::vector<std::shared_ptr<sdk::SampleFeatureEncoder>>& features = {});

/// Runs prepare() on every backend with the model's encoders (null: discovery only) and logs the
/// summary lines.
void prepare_data_backends(std::vector<OpenedBackend>& backends, sdk::Encoders* encoders);

/// One line per enabled media dataset (video, image, eval) that yielded no usable sample, naming it
/// and its first skip reason, or one line when no such dataset is enabled at all; empty when every
/// such dataset has samples. (SimpleTuner stops on an
/// empty dataset too: it is almost always a wrong path, size limit or frame count.)
std::vector<std::string> empty_datasets(const std::vector<OpenedBackend>& backends);

/// Human-readable summary (what `st-host prepare` prints).
std::string format_prepare_summary(const std::vector<OpenedBackend>& backends);

}  // namespace st::host
