// The run's loss regularizers (reg.<name>@N components): which are enabled (`<name>_enabled` true,
// an option the component declares, e.g. crepa_enabled), built against the loaded model so a wrong
// tap or setting fails before any caching; their parameters (own optimizer group), per-sample
// features for the data backends, and their checkpoint contents.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "plugins/model_handle.h"
#include "plugins/registry.h"
#include "st/regularizer.h"

namespace st::host::train {

struct ActiveRegularizer {
    const ComponentEntry* entry = nullptr;
    std::unique_ptr<sdk::Regularizer> reg;
    std::vector<std::string> taps;
    std::shared_ptr<sdk::SampleFeatureEncoder> features;  ///< null: nothing cached
    /// Trainable tensors by name "<kind>.<name>.<module>.<parameter>" (e.g. reg.crepa.projector.1.weight).
    std::vector<std::pair<std::string, at::Tensor>> params;
};

/// Every regularizer component whose `<name>_enabled` option is true, created for `model` (loaded).
/// st::Error naming the component and tap when it asks for a tap the model does not offer.
std::vector<ActiveRegularizer> build_regularizers(PluginRegistry& registry, const sdk::ConfigView& config,
                                                  ModelHandle& model, at::Device device, uint64_t seed);

/// The per-sample feature encoders of `regs` (for DataOpenRequest::sample_features).
std::vector<std::shared_ptr<sdk::SampleFeatureEncoder>> sample_features(
    const std::vector<ActiveRegularizer>& regs);

/// Checkpoint contents: every module tensor (`<dir>/regularizers.safetensors`) and state() (returned,
/// for training_state.json) / the inverse, strict (a missing or extra tensor is an st::Error naming it).
nlohmann::json save_regularizers(const std::vector<ActiveRegularizer>& regs,
                                 const std::filesystem::path& dir);
void restore_regularizers(std::vector<ActiveRegularizer>& regs, const std::filesystem::path& dir,
                          const nlohmann::json& states);

}  // namespace st::host::train
