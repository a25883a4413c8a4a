// Where the sub-networks of a Wan-family pipeline live (transformer, VAE, UMT5 text encoder and
// tokenizer, extra components such as S2V's audio encoder), resolved from the model path and the
// SimpleTuner pretrained_* override keys. Shared by model.wan@1 and model.wan_s2v@1.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/kit_names.h"
#include "st/kit/diffusers_model.h"
#include "st/kit/vae.h"
#include "st/options.h"

namespace st::plugins::wan {

/// Paths are empty when the model has no such part (a bare transformer file).
struct WanModelPaths {
    std::string component;                             ///< "model.wan@1", ... (named in errors)
    std::filesystem::path root;                        ///< the model path as given
    std::filesystem::path transformer;                 ///< path handed to the transformer locator
    std::string transformer_subfolder;                 ///< "transformer", "transformer_2" or "" (none)
    std::string peer_subfolder;                        ///< other Wan 2.2 expert ("" when none)
    std::filesystem::path vae;                         ///< VAE folder (config.json + weights) or single file
    std::filesystem::path text_encoder;                ///< text_encoder folder or single file
    std::filesystem::path tokenizer;                   ///< tokenizer folder (spiece.model) or the file
    std::filesystem::path image_encoder;               ///< CLIP image_encoder folder (Wan 2.1 I2V) or {}
    std::optional<std::filesystem::path> model_index;  ///< the pipeline's model_index.json
};

/// The keys resolve_pipeline_paths() reads (pretrained_transformer_model_name_or_path,
/// pretrained_transformer_subfolder, pretrained_vae_model_name_or_path,
/// pretrained_t5_model_name_or_path) and gradient_checkpointing: declared identically by every
/// Wan-family plugin (the host merges equal declarations of model families).
std::vector<st::sdk::OptionSpec> pipeline_option_specs();

/// Resolves the paths without reading weights: pretrained_transformer_model_name_or_path /
/// pretrained_transformer_subfolder (default "transformer"; "none" = the path is the transformer),
/// pretrained_vae_model_name_or_path, pretrained_t5_model_name_or_path. An override that does not
/// exist is an st::Error (st never downloads). Logs one line per override used.
WanModelPaths resolve_pipeline_paths(const std::filesystem::path& model, const st::sdk::ConfigView& config,
                                     const std::string& component);

/// The VAE / text encoder / tokenizer paths, or st::Error saying what was expected where.
const std::filesystem::path& require_vae_path(const WanModelPaths& paths);
const std::filesystem::path& require_text_encoder_path(const WanModelPaths& paths);
const std::filesystem::path& require_tokenizer_path(const WanModelPaths& paths);

/// Whether `dir` is a diffusers pipeline folder (has model_index.json).
bool is_pipeline_folder(const std::filesystem::path& dir);
/// `path/sub` when that folder exists, {} when `path` is a pipeline without it, else `path`.
std::filesystem::path component_in(const std::filesystem::path& path, const std::string& sub);
/// An override path that does not exist is an st::Error naming `key` (hub ids get the download hint).
void require_path_exists(const std::filesystem::path& p, const std::string& key,
                         const std::string& component);

}  // namespace st::plugins::wan
