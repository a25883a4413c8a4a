// Caption strategies (SimpleTuner's textfile / filename / instanceprompt) with their modifiers.
// Reference: SimpleTuner data_backend caption handling (`PromptHandler.prepare_instance_prompt_from_*`).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "config.h"

namespace st::plugins::data_local {

/// Caption variants for one media file (at least one), or throws st::Error with the reason the
/// sample cannot be used (textfile missing / empty / not UTF-8 text).
std::vector<std::string> captions_for(const std::filesystem::path& media, const DatasetConfig& ds);

/// SimpleTuner's filename caption (prepare_instance_prompt_from_filename): the stem with '_' -> ' '
/// (trimmed).
std::string caption_from_filename(const std::filesystem::path& media);

/// True when `text` is valid UTF-8 without control characters other than tab/newline/CR.
bool is_text(const std::string& text);

}  // namespace st::plugins::data_local
