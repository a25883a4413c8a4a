// Validation during a training run: the Validator (host/src/validate) plus what only a run has: the
// reference sample a model's image/audio sampling inputs fall back to (the first suitable training
// sample, or the first of eval_dataset_id; saved in checkpoints so a resumed run renders from the same
// one), the schedule, and the prompts Lua handlers may edit before each render.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "plugins/model_handle.h"
#include "st/data_backend.h"
#include "train/data_cursor.h"
#include "validate/validator.h"

namespace st::host::train {

class ValidationController {
  public:
    /// nullptr when validation is off (no prompt, or validation_step_interval 0), after logging why.
    /// Reads and checks every validation key (st::Error naming the key).
    static std::unique_ptr<ValidationController> create(const sdk::ConfigView& config,
                                                        const std::filesystem::path& config_dir,
                                                        const std::filesystem::path& output_dir,
                                                        ModelHandle& model, uint64_t seed);

    explicit ValidationController(std::unique_ptr<validate::Validator> validator);

    validate::Validator& validator() { return *validator_; }
    const validate::ValidationSettings& settings() const { return validator_->settings(); }

    /// Picks the reference sample before training: the checkpoint's (`saved`, null: none), else the
    /// first usable sample of eval_dataset_id (held-out datasets first, then the training order; st::Error
    /// when it has none). Nothing when no prompt needs one.
    void choose_reference(const nlohmann::json& saved, DataCursor& data);
    /// Offers a training batch: its first usable sample becomes the reference while none is chosen.
    void offer(const sdk::Batch& batch);
    /// The reference as training_state.json keeps it (null: none).
    nlohmann::json reference_json() const;

    /// A render is due after `step`: the schedule, or `requested` (st.validate_now()).
    bool due(int64_t step, bool skipped, bool requested) const;
    /// The prompts of a render at `step`, after `edit` (on_validation_start handlers: a list of texts;
    /// known texts keep their nicknames, new ones are named hook_<index>). `edit` may be empty.
    std::vector<validate::Prompt> prompts(
        const std::function<nlohmann::json(const nlohmann::json& texts)>& edit) const;

  private:
    /// A sample of `batch` the model's inputs can be fed from (with audio when it needs audio).
    bool take_reference(const sdk::Batch& batch, const std::string* only_dataset);
    void find_reference_in(const std::string& dataset, DataCursor& data);

    std::unique_ptr<validate::Validator> validator_;
    bool wants_reference_ = false;
};

}  // namespace st::host::train
